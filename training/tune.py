"""`plexrec tune`: hyperparameter search with Optuna over normal training runs. Each trial is one
`run_train` with the sampled values as `--set` overrides, an MLflow child of one parent run; a
seeded TPE sampler proposes, a median pruner stops trials whose validation primary metric falls
behind at the same step. Selection uses validation only; the winning config is written as a full
TOML file, trained once more and evaluated on test. The study lives in SQLite in the tune's
directory, so the same name continues it."""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from plexrec.features.config import apply_overrides, load_toml
from plexrec.features.errors import ConfigError, PlexrecError
from plexrec.features.locks import exclusive
from plexrec.features.progress import Progress
from plexrec.training.config import RunConfig, load_config
from plexrec.training.launch import LaunchOptions, check_static, load_run_config, run_train
from plexrec.training.run_dirs import experiment_dir, new_run_id
from plexrec.training.tasks import TASKS, check_model_kind
from plexrec.training.tracking import Tracker
from plexrec.training.tune_space import (
    ParamSpec,
    SearchSpace,
    check_keys,
    load_space,
    override,
    toml_text,
    toml_value,
)

log = logging.getLogger(__name__)

TUNE_PREFIX = "tune-"
ROLE_TAG, TRIAL_TAG, STATE_TAG = "plexrec.tune.role", "plexrec.tune.trial", "plexrec.tune.state"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_PATH_KEYS = ("schema", "path", "valid_path", "test_path")


@dataclass
class TuneOptions:
    config: Path
    space: Path
    trials: int
    name: str | None = None
    resume: bool = False
    nproc: int = 1
    data: str | None = None
    overrides: list[str] = field(default_factory=list)


def tune_dir_for(cfg: RunConfig, name: str | None, resume: bool) -> Path:
    """`<runs_root>/<experiment>/tune-<name>`; `resume` without a name is the newest tune."""
    root = experiment_dir(cfg)
    if name is None and resume:
        studies = sorted((p for p in root.glob(f"{TUNE_PREFIX}*") if (p / "optuna.db").is_file()),
                         key=lambda p: (p / "optuna.db").stat().st_mtime)
        if not studies:
            raise ConfigError(f"--resume: no tune under {root}")
        return studies[-1].resolve()
    name = name or new_run_id()
    if not _NAME.match(name):
        raise ConfigError(f"--name {name!r}: use letters, digits, '_', '-' and '.' only")
    path = root / f"{TUNE_PREFIX}{name}"
    if resume and not (path / "optuna.db").is_file():
        raise ConfigError(f"--resume: no tune named {name!r} under {root}")
    return path.resolve()


def _suggest(trial: Any, key: str, spec: ParamSpec) -> Any:
    if spec.kind == "categorical":
        return trial.suggest_categorical(key, list(spec.choices or []))
    assert spec.low is not None and spec.high is not None
    if spec.kind == "int":
        return trial.suggest_int(key, int(spec.low), int(spec.high),
                                 step=int(spec.step or 1), log=spec.log)
    return trial.suggest_float(key, spec.low, spec.high, step=spec.step, log=spec.log)


def _absolute_paths(raw: dict[str, Any], config: Path) -> None:
    """Data paths that the original config found beside itself, made absolute, so the winning
    TOML (written elsewhere) reads the same files."""
    data = raw.get("data")
    if not isinstance(data, dict):
        return
    for key in _PATH_KEYS:
        value = data.get(key)
        if not isinstance(value, str) or not value or "$" in value:
            continue
        path = Path(value).expanduser()
        for base in (Path.cwd(), config.parent, config.parent.parent):
            if (base / path).exists():
                data[key] = str((base / path).resolve())
                break


class _Study:
    """One tune: the Optuna study in the tune directory, its MLflow parent run and its trials."""

    def __init__(self, opts: TuneOptions, space: SearchSpace, cfg: RunConfig, path: Path,
                 base: LaunchOptions) -> None:
        import optuna

        self.opts, self.space, self.cfg, self.dir, self.base = opts, space, cfg, path, base
        self.name = path.name.removeprefix(TUNE_PREFIX)
        self.primary = TASKS[check_model_kind(cfg)].primary_metric
        self.metric = f"best_val_{self.primary}"
        self.storage = f"sqlite:///{path / 'optuna.db'}"
        s = self.space.study
        pruner: Any = (optuna.pruners.MedianPruner(
            n_startup_trials=s.pruner_startup_trials, n_warmup_steps=s.pruner_warmup_steps)
            if s.prune else optuna.pruners.NopPruner())
        self.study = optuna.create_study(storage=self.storage, study_name=self.name,
                                         direction="maximize", pruner=pruner,
                                         load_if_exists=True)
        # The sampler's seed moves on with the study, so a continued tune does not replay the
        # random start-up samples of its first session.
        self.study.sampler = optuna.samplers.TPESampler(
            seed=s.seed + len(self.study.trials), n_startup_trials=s.sampler_startup_trials)
        self.tracker = Tracker(cfg.mlflow.enabled)

    def check_same_study(self) -> None:
        """A continued study must search the same space from the same base config."""
        identity = {"config": self.cfg.to_dict(), "space": self.space.model_dump()}
        stored = self.dir / "tune.json"
        if stored.is_file():
            if json.loads(stored.read_text()) != json.loads(json.dumps(identity)):
                raise ConfigError(f"tune {self.name!r} ({self.dir}) was started with another "
                                  "config or space (kept in its tune.json); give a new --name")
        else:
            stored.write_text(json.dumps(identity, indent=2))

    def fail_stale(self) -> None:
        """Trials left RUNNING by a killed tune: this process holds the tune's lock, so none of
        them is still running."""
        from optuna.trial import TrialState

        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            log.info("trial %d was interrupted: marked FAIL", trial.number)
            self.study.tell(trial.number, state=TrialState.FAIL)

    def start_parent(self) -> str | None:
        from mlflow.utils.mlflow_tags import MLFLOW_SOURCE_NAME

        known = self.study.user_attrs.get("mlflow_parent_run_id")
        run_id = self.tracker.start(self.cfg.mlflow.experiment, f"{TUNE_PREFIX}{self.name}",
                                    known, tags={MLFLOW_SOURCE_NAME: "plexrec tune",
                                                 ROLE_TAG: "parent"})
        if run_id and run_id != known:
            self.study.set_user_attr("mlflow_parent_run_id", run_id)
        s = self.space.study
        self.tracker.log_params({
            "tune.name": self.name, "tune.dir": str(self.dir), "tune.config": str(
                self.opts.config), "tune.primary_metric": self.primary, "tune.seed": s.seed,
            "tune.prune": s.prune, "tune.storage": self.storage,
            **{f"space.{k}": json.dumps(v.model_dump(exclude_none=True))
               for k, v in self.space.params.items()}})
        self.tracker.log_file(Path(self.opts.space), "space")
        return run_id

    def finished(self) -> list[Any]:
        from optuna.trial import TrialState

        done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        return self.study.get_trials(deepcopy=False, states=done)

    def run_trial(self, parent: str | None) -> Any:
        """One trial: sample, train through `run_train` with the pruning hook, tell Optuna."""
        from optuna.trial import TrialState

        trial = self.study.ask()
        values = {key: _suggest(trial, key, spec) for key, spec in self.space.params.items()}
        n = trial.number

        def on_eval(step: int, metrics: dict[str, float]) -> bool:
            value = metrics.get(self.primary)
            if value is None or not math.isfinite(value):
                return False
            trial.report(value, step)
            return bool(trial.should_prune())

        opts = replace(self.base, overrides=[
            *self.base.overrides, *(override(k, v) for k, v in values.items()),
            f"train.run_dir={self.dir / f'trial-{n:04d}'}",
            f"mlflow.run_name={TUNE_PREFIX}{self.name}-trial-{n}",
            "mlflow.log_model=false", 'mlflow.registered_model=""'],
            quiet=True, on_eval=on_eval if self.space.study.prune else None,
            mlflow_parent=parent or "", mlflow_tags={ROLE_TAG: "trial", TRIAL_TAG: str(n)})
        try:
            result = run_train(opts)
        except PlexrecError as exc:
            trial.set_user_attr("error", str(exc))
            return self.study.tell(trial, state=TrialState.FAIL)
        except BaseException as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            self.study.tell(trial, state=TrialState.FAIL)
            raise
        for key in ("run_id", "run_dir", "steps", "best_step"):
            trial.set_user_attr(key, result.get(key))
        value = result.get(self.metric)
        if result.get("pruned"):
            state = TrialState.PRUNED
            frozen = self.study.tell(trial, state=state)
        elif value is None or not math.isfinite(value):
            state = TrialState.FAIL
            trial.set_user_attr("error", f"{self.metric} is {value}: nothing to select on")
            frozen = self.study.tell(trial, state=state)
        else:
            state = TrialState.COMPLETE
            frozen = self.study.tell(trial, float(value))
        if result.get("run_id"):
            self.tracker.set_tags({STATE_TAG: state.name}, result["run_id"])
        self.tracker.log_metrics({f"trial_val_{self.primary}": float(value)}
                                 if value is not None and math.isfinite(value) else {}, n)
        return frozen

    def write_best(self) -> tuple[Any, Path]:
        """The base config with the best trial's values, as a full TOML file (checked by
        loading it back)."""
        best = self.study.best_trial
        extra = [f"data.path={json.dumps(self.base.data)}"] if self.base.data else []
        items = [override(k, v) for k, v in best.params.items()]
        raw = apply_overrides(load_toml(self.opts.config), [*self.opts.overrides, *extra, *items],
                              RunConfig)
        _absolute_paths(raw, Path(self.opts.config))
        header = (f"# plexrec tune {self.name}: trial {best.number} of {self.opts.config}, "
                  f"val {self.primary} {best.value:.6f}\n# "
                  + ", ".join(f"{k} = {toml_value(v)}" for k, v in best.params.items()) + "\n\n")
        path = self.dir / f"{Path(self.opts.config).stem}-best.toml"
        path.write_text(toml_text(raw, header))
        load_config(path)
        return best, path

    def final_fit(self, best: Any, config: Path, parent: str | None) -> dict[str, Any]:
        """The winning config trained once more, its test metrics from the best checkpoint;
        reused when a continued tune kept the same winner."""
        record = self.dir / "final.json"
        if record.is_file():
            kept = json.loads(record.read_text())
            if kept.get("trial") == best.number:
                log.info("final training of trial %d already done: %s", best.number,
                         kept["result"].get("run_dir"))
                return dict(kept["result"])
        opts = LaunchOptions(
            config=config, nproc=self.opts.nproc, quiet=True,
            overrides=[f"train.run_dir={self.dir / 'final'}",
                       f"mlflow.run_name={TUNE_PREFIX}{self.name}-final"],
            mlflow_parent=parent or "", mlflow_tags={ROLE_TAG: "final",
                                                     TRIAL_TAG: str(best.number)})
        log.info("final training with the winning config %s", config)
        result = run_train(opts)
        record.write_text(json.dumps({"trial": best.number, "result": result}, default=str))
        return result


def summary_rows(trials: list[Any], primary: str) -> list[dict[str, Any]]:
    """One row per trial: number, state, validation value, parameters, and why it failed."""
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        value = t.value if t.value is not None else (
            t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None)
        rows.append({"trial": t.number, "state": t.state.name, f"val_{primary}": value,
                     "params": dict(t.params), "run_id": t.user_attrs.get("run_id"),
                     "error": t.user_attrs.get("error") or (
                         "interrupted" if t.state.name == "FAIL" else None)})
    return rows


def format_summary(rows: list[dict[str, Any]], primary: str) -> str:
    """The rows as an aligned text table (errors shortened to one line)."""
    metric = f"val_{primary}"
    table = [["trial", "state", metric, "params", "note"]]
    for r in rows:
        value = r[metric]
        table.append([str(r["trial"]), r["state"], "-" if value is None else f"{value:.5f}",
                      " ".join(f"{k}={toml_value(v)}" for k, v in r["params"].items()),
                      (r["error"] or "").splitlines()[0][:120] if r["error"] else ""])
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)),
                                row[4]]).rstrip() for row in table)


def run_tune(opts: TuneOptions) -> dict[str, Any]:
    """Runs (or continues) the study up to `opts.trials` finished trials, writes the winning
    TOML, trains it once more for test metrics and returns the summary."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if opts.trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {opts.trials}")
    space = load_space(opts.space)
    if space.study.prune and opts.nproc != 1:
        raise ConfigError(f"{opts.space}: [study] prune = true needs --nproc 1 (the pruner runs "
                          "inside the training process); set prune = false to tune with "
                          f"--nproc {opts.nproc}")
    base = LaunchOptions(config=Path(opts.config), nproc=opts.nproc, data=opts.data,
                         overrides=list(opts.overrides))
    cfg = load_run_config(base)
    check_static(cfg, base)
    check_keys(space, opts.space, base)
    path = tune_dir_for(cfg, opts.name, opts.resume)
    path.mkdir(parents=True, exist_ok=True)
    with exclusive(path / "tune.lock"):
        return _run_locked(opts, space, cfg, path, base)


def _run_locked(opts: TuneOptions, space: SearchSpace, cfg: RunConfig, path: Path,
                base: LaunchOptions) -> dict[str, Any]:
    st = _Study(opts, space, cfg, path, base)
    st.check_same_study()
    st.fail_stale()
    parent = st.start_parent()
    try:
        done = len(st.finished())
        if done:
            log.info("tune %s: continuing with %d finished trial(s) of %d", st.name, done,
                     opts.trials)
        progress = Progress(f"tune {st.name}", total=opts.trials, unit="trials", every_s=0.0,
                            initial=done)
        try:
            for _ in range(max(0, opts.trials - done)):
                frozen = st.run_trial(parent)
                row = summary_rows([frozen], st.primary)[0]
                value = row[f"val_{st.primary}"]
                best = _best_value(st)
                progress.set_postfix(
                    trial=str(frozen.number), state=frozen.state.name,
                    **{f"val_{st.primary}": "-" if value is None else f"{value:.5f}"},
                    best="-" if best is None else f"{best:.5f}")
                progress.update(1)
        finally:
            progress.close(completed=False)
        rows = summary_rows(st.finished(), st.primary)
        (path / "summary.json").write_text(json.dumps(rows, indent=2, default=str))
        log.info("tune %s: %d trial(s)\n%s", st.name, len(rows), format_summary(rows, st.primary))
        if _best_value(st) is None:
            failed = [r for r in rows if r["state"] == "FAIL"]
            first = f"; first failure: {failed[0]['error']}" if failed else ""
            raise PlexrecError(f"tune {st.name}: no trial completed ({len(failed)} failed, "
                               f"{sum(r['state'] == 'PRUNED' for r in rows)} pruned){first}")
        best, best_path = st.write_best()
        log.info("winning config (trial %d, val %s %.5f): %s", best.number, st.primary,
                 best.value, best_path)
        final = st.final_fit(best, best_path, parent)
        test = {k: v for k, v in final.items() if k.startswith("test_")}
        counts = {s: sum(r["state"] == s for r in rows) for s in ("COMPLETE", "PRUNED", "FAIL")}
        st.tracker.set_tags({f"best.{k}": toml_value(v) for k, v in best.params.items()}
                            | {"best.trial": str(best.number),
                               "final.run_id": str(final.get("run_id"))})
        st.tracker.log_metrics({f"best_val_{st.primary}": float(best.value),
                                "best_trial": float(best.number),
                                **{f"final_{k}": float(v) for k, v in test.items()
                                   if isinstance(v, int | float) and math.isfinite(v)},
                                **{f"trials_{s.lower()}": float(c) for s, c in counts.items()}},
                               len(rows))
        st.tracker.log_file(best_path)
        st.tracker.log_file(path / "summary.json")
    except BaseException:
        st.tracker.finish("FAILED")
        raise
    st.tracker.finish()
    return {"study": st.name, "tune_dir": str(path), "storage": st.storage,
            "parent_run_id": parent, "trials": len(rows), **{s.lower(): c for s, c in
                                                            counts.items()},
            "best_trial": best.number, "best_params": dict(best.params),
            f"best_val_{st.primary}": best.value, "best_config": str(best_path),
            "final_run_id": final.get("run_id"), "final_run_dir": final.get("run_dir"),
            **test, "summary": rows}


def _best_value(st: _Study) -> float | None:
    try:
        return float(st.study.best_value)
    except ValueError:
        return None
