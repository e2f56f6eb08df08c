"""The final fit: after a held-out run has chosen its best checkpoint on validation and reported
its test figures, train once more from scratch on more rows for the best checkpoint's length.

- Two-tower (`[retrieval] final_fit`, on by default): every row (training, validation and test
  interactions) for the best checkpoint's number of steps. A deployed model should know each
  user's latest interactions; those are exactly the rows the held-out run could not train on.
  `plexrec export` of the run exports the final fit's vectors (`load_trained`), and the snapshot
  manifest's `training` says which model it holds.
- CTR (`[train] final_fit`, off by default): training and validation rows (`[data] train_rows =
  "with_validation"`) for the same number of epochs as the best checkpoint (its steps scaled by
  the rows, the decay's span too) and the first-order term's best number of passes, then the
  test rows once: the refit a user of scikit-learn's searches expects. Its model is an MLflow
  child run of the held-out run (registered too when `[mlflow] registered_model` is set).

The final fit is a run of its own in `<run dir>/final_fit` (same config, exact steps, no early
stopping, nothing selected). The held-out run's `result.json` keeps its held-out metrics and
gains a `final_fit` entry (with the CTR fit's test metrics)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

Train = Callable[[Any], dict[str, Any]]

log = logging.getLogger(__name__)

FINAL_DIR = "final_fit"


def wants_final_fit(config: dict[str, Any]) -> bool:
    """True for a held-out run that asks for a final fit: two-tower with `[retrieval]
    final_fit` on (the default), any other model with `[train] final_fit`."""
    if config.get("model", {}).get("kind") != "two_tower":
        return (bool(config.get("train", {}).get("final_fit", False))
                and config.get("data", {}).get("train_rows", "split") == "split")
    table = config.get("retrieval") or {}
    return bool(table.get("final_fit", True)) and table.get("train_rows", "split") == "split"


def final_fit_dir(run_dir: str | Path) -> Path | None:
    """The run's final fit, when it finished (its result.json is written last)."""
    path = Path(run_dir) / FINAL_DIR
    return path if (path / "result.json").is_file() else None


def final_fit_overrides(result: dict[str, Any], run_dir: Path) -> list[str]:
    """`--set` values of the two-tower final fit: every row, the best checkpoint's steps, one
    evaluation at the end (so the last step is the checkpoint export reads), no tracking."""
    steps = int(result["best_step"])
    return ['retrieval.train_rows="all"', f"train.max_steps={steps}",
            f"train.eval_every={steps + 1}", "train.patience=0", "train.checkpoint_every=0",
            f"train.run_dir={json.dumps(str(run_dir / FINAL_DIR))}", "mlflow.enabled=false"]


def ctr_final_fit_overrides(result: dict[str, Any], run_dir: Path) -> list[str]:
    """`--set` values of the CTR final fit: training + validation rows; the best checkpoint's
    steps and the decay's span scaled by the rows (the same epochs); the term's best passes;
    one evaluation at the end; an MLflow child run named final_fit."""
    rows = result["rows"]
    scale = (rows["train"] + rows["val"]) / rows["train"]
    steps = round(int(result["best_step"]) * scale)
    span = round(int(result["decay_span"]) * scale)
    length = ([f"train.max_steps={steps}", f"train.eval_every={steps + 1}"] if steps else
              ["train.epochs=0"])  # the term alone was the best model
    return ['data.train_rows="with_validation"', *length, f"optim.decay_steps={max(1, span)}",
            f"train.first_order_epochs={int(result.get('first_order_best_epoch') or 0)}",
            "train.patience=0", "train.checkpoint_every=0", 'mlflow.run_name="final_fit"',
            f"train.run_dir={json.dumps(str(run_dir / FINAL_DIR))}"]


def maybe_final_fit(opts: Any, config: dict[str, Any], result: dict[str, Any],
                    train: Train) -> dict[str, Any]:
    """`run_train`'s last step (it passes itself as `train`, so this module never imports the
    launcher): the final fit when the run asks for one. Not for tuning trials (an evaluation
    hook is set, or the trial was pruned): they are judged on held-out figures only."""
    if (not wants_final_fit(config) or getattr(opts, "on_eval", None) is not None
            or result.get("pruned") or "best_step" not in result):
        return result
    return run_final_fit(opts, result, train,
                         ctr=config.get("model", {}).get("kind") != "two_tower")


def run_final_fit(opts: Any, result: dict[str, Any], train: Train, ctr: bool = False
                  ) -> dict[str, Any]:
    """Runs the final fit of a finished held-out run (`opts`: its LaunchOptions; `ctr`: a CTR
    run's) and returns the held-out result with a `final_fit` entry, also written to the run's
    result.json."""
    run_dir = Path(result["run_dir"])
    if opts.nnodes > 1:
        log.warning("final fit skipped: it runs on one node (nnodes = %d)", opts.nnodes)
        return result
    best_step = int(result.get("best_step") or 0)
    if best_step < 1 and not (ctr and result.get("first_order_best_epoch")):
        log.warning("no best checkpoint step in %s: final fit skipped", run_dir)
        return result
    overrides = (ctr_final_fit_overrides(result, run_dir) if ctr
                 else final_fit_overrides(result, run_dir))
    log.info("final fit: training on %s in %s", "training and validation rows" if ctr else
             f"every row for {best_step} steps (the best checkpoint's)", run_dir / FINAL_DIR)
    fit_opts = replace(opts, resume=None, overrides=[*opts.overrides, *overrides])
    if hasattr(fit_opts, "on_eval"):
        fit_opts = replace(fit_opts, on_eval=None)
    if ctr and hasattr(fit_opts, "mlflow_parent"):
        fit_opts = replace(fit_opts, mlflow_parent=result.get("run_id") or "")
    fit = train(fit_opts)
    entry = {"run_dir": fit["run_dir"], "steps": fit["steps"], "rows": fit["rows"]["train"],
             "train_examples_per_sec": fit["train_examples_per_sec"]}
    if ctr:
        entry.update({k: v for k, v in fit.items() if k.startswith("test_")},
                     run_id=fit.get("run_id"),
                     first_order_epochs=fit.get("first_order_epochs_run", 0))
    out = {**result, "final_fit": entry}
    (run_dir / "result.json").write_text(json.dumps(out))
    return out
