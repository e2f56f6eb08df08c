"""The final fit of a two-tower run: after the held-out run has chosen its best checkpoint on the
validation positives and reported its test figures, train once more from scratch on every row
(training, validation and test interactions) for the best checkpoint's number of steps. A
deployed model should know each user's latest interactions; those are exactly the rows the
held-out run could not train on.

The final fit is a run of its own in `<run dir>/final_fit` (same config, `[retrieval]
train_rows = "all"`, exact steps, no early stopping, no MLflow run of its own). The held-out
run's `result.json` keeps its held-out metrics and gains a `final_fit` entry; `plexrec export` of
the run exports the final fit's vectors (`load_trained`), and the snapshot manifest's `training`
says which model it holds."""

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
    """True for a two-tower held-out run with `[retrieval] final_fit` on (the default)."""
    if config.get("model", {}).get("kind") != "two_tower":
        return False
    table = config.get("retrieval") or {}
    return bool(table.get("final_fit", True)) and table.get("train_rows", "split") == "split"


def final_fit_dir(run_dir: str | Path) -> Path | None:
    """The run's final fit, when it finished (its result.json is written last)."""
    path = Path(run_dir) / FINAL_DIR
    return path if (path / "result.json").is_file() else None


def final_fit_overrides(result: dict[str, Any], run_dir: Path) -> list[str]:
    """`--set` values of the final fit: every row, the best checkpoint's steps, one evaluation
    at the end (so the last step is the checkpoint export reads), no tracking."""
    steps = int(result["best_step"])
    return ['retrieval.train_rows="all"', f"train.max_steps={steps}",
            f"train.eval_every={steps + 1}", "train.patience=0", "train.checkpoint_every=0",
            f"train.run_dir={json.dumps(str(run_dir / FINAL_DIR))}", "mlflow.enabled=false"]


def maybe_final_fit(opts: Any, config: dict[str, Any], result: dict[str, Any],
                    train: Train) -> dict[str, Any]:
    """`run_train`'s last step (it passes itself as `train`, so this module never imports the
    launcher): the final fit when the run asks for one. Not for tuning trials (an evaluation
    hook is set, or the trial was pruned): they are judged on held-out figures only."""
    if (not wants_final_fit(config) or getattr(opts, "on_eval", None) is not None
            or result.get("pruned") or "best_step" not in result):
        return result
    return run_final_fit(opts, result, train)


def run_final_fit(opts: Any, result: dict[str, Any], train: Train) -> dict[str, Any]:
    """Runs the final fit of a finished held-out run (`opts`: its LaunchOptions) and returns the
    held-out result with a `final_fit` entry, also written to the run's result.json."""
    run_dir = Path(result["run_dir"])
    if opts.nnodes > 1:
        log.warning("final fit skipped: it runs on one node (nnodes = %d)", opts.nnodes)
        return result
    if int(result.get("best_step") or 0) < 1:
        log.warning("no best checkpoint step in %s: final fit skipped", run_dir)
        return result
    log.info("final fit: training on every row for %d steps (the best checkpoint's) in %s",
             result["best_step"], run_dir / FINAL_DIR)
    fit_opts = replace(opts, resume=None,
                       overrides=[*opts.overrides, *final_fit_overrides(result, run_dir)])
    if hasattr(fit_opts, "on_eval"):
        fit_opts = replace(fit_opts, on_eval=None)
    fit = train(fit_opts)
    out = {**result, "final_fit": {"run_dir": fit["run_dir"], "steps": fit["steps"],
                                   "rows": fit["rows"]["train"],
                                   "train_examples_per_sec": fit["train_examples_per_sec"]}}
    (run_dir / "result.json").write_text(json.dumps(out))
    return out
