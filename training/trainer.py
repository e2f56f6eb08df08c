"""The training loop of one rank: shard the task's model with DMP, train with the embedding update
fused into backward and a separate dense optimizer, evaluate, stop early, checkpoint, and report.

Resume is exact: the data order is a function of (seed, epoch), the loader skips the batches
already seen, the learning rate is a pure function of the step, and RNG states are restored, so a
killed-and-resumed run ends with the metrics of an uninterrupted one."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from plexrec.features.errors import ConfigError
from plexrec.features.progress import Progress
from plexrec.training.checkpoint import (
    BEST,
    latest_checkpoint,
    load_checkpoint,
    load_unsharded,
    model_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from plexrec.training.config import RunConfig, parse_config
from plexrec.training.first_order_fit import (
    fit_first_order,
    remove_fit_checkpoints,
    with_first_order,
)
from plexrec.training.pipeline import Steps
from plexrec.training.sharding import check_constraints, plan_summary, shard_model
from plexrec.training.task import Task
from plexrec.training.tasks import task_for
from plexrec.training.tracking import Tracker
from plexrec.training.train_step import TrainStep, unwrap
from plexrec.training.weight_average import WeightAverage

log = logging.getLogger(__name__)

# Called on rank 0 after each validation with (step, metrics); True stops the run as pruned.
EvalHook = Callable[[int, dict[str, float]], bool]


@dataclass
class RunSpec:
    """Everything a worker needs, written by the launcher as JSON into the run directory."""

    config: dict[str, Any]
    source: str
    prepared_dir: str
    run_dir: str
    resume: bool = False
    quiet: bool = False
    config_text: str = ""
    mlflow_parent: str = ""
    mlflow_tags: dict[str, str] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> RunSpec:
        return cls(**json.loads(Path(path).read_text()))


@dataclass
class LoopState:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best: float = -math.inf
    best_step: int = 0
    bad_evals: int = 0
    stopped: bool = False
    pruned: bool = False
    examples: int = 0
    train_seconds: float = 0.0
    run_id: str | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    first_order_fit: dict[str, Any] = field(default_factory=dict)


def decay_span(cfg: RunConfig, total_steps: int) -> int:
    """Steps over which the rate decays: `decay_steps`, else the run's steps after warm-up."""
    return cfg.optim.decay_steps or max(1, total_steps - cfg.optim.warmup_steps)


def lr_factor(step: int, cfg: RunConfig, total_steps: int) -> float:
    """Linear warm-up over `warmup_steps`, then the configured decay towards `min_lr_ratio`."""
    o = cfg.optim
    if o.warmup_steps and step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    if o.decay == "none":
        return 1.0
    span = decay_span(cfg, total_steps)
    t = min(1.0, (step - o.warmup_steps) / span)
    if o.decay == "linear":
        return 1.0 - (1.0 - o.min_lr_ratio) * t
    if o.decay == "cosine":
        return o.min_lr_ratio + (1.0 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    return max(o.min_lr_ratio, o.decay_rate ** ((step - o.warmup_steps) / span))


def _dense_optimizer(cfg: RunConfig) -> Any:
    o = cfg.optim
    if o.dense_optimizer == "adam":
        return lambda params: torch.optim.Adam(params, lr=o.dense_lr, weight_decay=o.weight_decay)
    if o.dense_optimizer == "adagrad":
        return lambda params: torch.optim.Adagrad(params, lr=o.dense_lr,
                                                  weight_decay=o.weight_decay)
    return lambda params: torch.optim.SGD(params, lr=o.dense_lr, weight_decay=o.weight_decay)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _all_mean(value: float) -> float:
    t = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def training_view(cfg: RunConfig, task: Task, cache: Any) -> tuple[Any, Any]:
    """(the run's TrainingView of the cache, its Splits): the split first (the task's own, or
    [data] split; `train_rows = "with_validation"` trains on the validation rows too), then
    every statistic from the training rows alone; a task with a
    `data_view(view, splits)` hook adds what it derives from the rows (retrieval's history)."""
    from plexrec.features.batching import split_rows
    from plexrec.features.training_view import TrainingView

    custom_split = getattr(task, "split", None)
    splits = (custom_split(cfg, cache) if custom_split is not None else
              split_rows(cache, tuple(cfg.data.split), cfg.data.split_seed, cfg.data.by_time))
    if cfg.data.train_rows == "with_validation":
        splits = replace(splits, train=np.union1d(splits.train, splits.val))
    view = TrainingView(cache, splits.train, getattr(task, "catalogue", ()))
    data_view = getattr(task, "data_view", None)
    return (data_view(view, splits) if data_view is not None else view), splits


class Trainer:
    """One rank's run; `run()` returns the result dict on rank 0 and None elsewhere."""

    def __init__(self, spec: RunSpec, on_eval: EvalHook | None = None) -> None:
        self.spec = spec
        self.on_eval = on_eval
        self.cfg = parse_config(spec.config, spec.source)
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        if on_eval is not None and self.world > 1:
            raise ConfigError("an evaluation hook needs a single-process run")
        if self.cfg.train.device == "cuda":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            self.device = torch.device("cuda", local)
        else:
            self.device = torch.device("cpu")
        self.run_dir = Path(spec.run_dir)
        self.ckpt_root = self.run_dir / "checkpoints"
        self.state = LoopState()
        self.average: WeightAverage | None = None
        self._average_state: dict[str, torch.Tensor] | None = None
        self.tracker = Tracker(self.rank == 0 and self.cfg.mlflow.enabled)
        # A final fit trains on its validation rows: it selects nothing on them (its last step
        # and the term's last pass are the model).
        self.selects = self.cfg.data.train_rows == "split"

    def _setup(self) -> None:
        from plexrec.features.cache import PreparedData

        cfg = self.cfg
        cache = PreparedData.open(self.spec.prepared_dir)
        self.task: Task = task_for(cfg, cache)
        self.task.validate(cfg, cache)
        self.data, splits = training_view(cfg, self.task, cache)
        self.split_sizes = {name: len(getattr(splits, name)) for name in ("train", "val", "test")}
        self.train_rows = splits.train
        names = list(cfg.data.features) or None
        self.unseen = ({split: self.data.unseen(getattr(splits, split), names)
                        for split in ("val", "test")} if self.rank == 0 else {})
        seed_everything(cfg.train.seed)
        self.built = self.task.build(cfg, self.data, "meta")
        constraints = check_constraints(cfg, self.built.table_names)
        self.model, self.plan = shard_model(TrainStep(self.built.module, self.task), cfg,
                                            constraints, self.device)
        dense_params = dict(in_backward_optimizer_filter(self.model.named_parameters()))
        self.dense_opt = KeyedOptimizerWrapper(dense_params, _dense_optimizer(cfg))
        self.fused_opt = self.model.fused_optimizer
        # Each fused group keeps the rate it was built with (the first-order tables have their
        # own); the schedule scales every group's base rate by the same factor.
        self.fused_base_lr = [float(g["lr"]) for g in self.fused_opt.param_groups]
        self.optimizer = CombinedOptimizer([self.fused_opt, self.dense_opt])
        self.steps = Steps(self.model, self.dense_opt, self.device, self._set_lr, self.train_step,
                           cfg.train.pipelined(self.world, self.device.type))
        loader = self.task.loader
        common = {"rank": self.rank, "world_size": self.world}
        self.train_loader = loader(self.data, splits.train, batch_size=cfg.data.batch_size,
                                   shuffle=True, seed=cfg.train.seed, drop_last=True, **common)
        self.val_loader = loader(self.data, splits.val, batch_size=cfg.data.eval_batch_size,
                                 shuffle=False, seed=0, drop_last=False, **common)
        self.test_loader = loader(self.data, splits.test, batch_size=cfg.data.eval_batch_size,
                                  shuffle=False, seed=0, drop_last=False, **common)
        if len(self.train_loader) == 0:
            raise ConfigError(f"training split has fewer rows per rank than batch_size "
                              f"{cfg.data.batch_size}")
        per_epoch = len(self.train_loader)
        # max_steps > 0 is the exact number of optimisation steps (as many passes as it takes,
        # `epochs` is then ignored); 0 means `epochs` full passes. Early stopping may end sooner.
        if cfg.train.max_steps:
            self.total_steps = cfg.train.max_steps
            self.epochs = math.ceil(cfg.train.max_steps / per_epoch)
        else:
            self.total_steps = cfg.train.epochs * per_epoch
            self.epochs = cfg.train.epochs

    def _state_dicts(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optim": self.optimizer.state_dict()}

    def _resume(self) -> None:
        latest = latest_checkpoint(self.ckpt_root)
        if latest is None:
            log.warning("--resume: no checkpoint in %s, starting from scratch", self.ckpt_root)
            return
        # Optimizer state is created lazily on the first step; DCP loads in place, so the
        # tensors must exist first (a zero-gradient step; the weights are overwritten next).
        self.dense_opt.init_state()
        self.optimizer.zero_grad()
        state = self._state_dicts()
        extra = load_checkpoint(latest, state)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optim"])
        set_rng_state(extra["rng"])
        self.state = LoopState(**extra["loop"])
        self._average_state = extra.get("weight_average")
        if self.rank == 0:
            log.info("resumed from %s (step %d, epoch %d, batch %d)", latest, self.state.step,
                     self.state.epoch, self.state.batch_in_epoch)

    def _checkpoint(self) -> Path:
        extra = {"rng": rng_state(), "loop": asdict(self.state)}
        if self.average is not None:
            extra["weight_average"] = self.average.state()
        return save_checkpoint(self.ckpt_root, self.state.step, self._state_dicts(), extra,
                               keep=self.cfg.train.keep_checkpoints)

    def _set_lr(self) -> float:
        return self._apply_lr(lr_factor(self.state.step, self.cfg, self.total_steps))

    def _apply_lr(self, factor: float) -> float:
        for group in self.dense_opt.param_groups:
            group["lr"] = self.cfg.optim.dense_lr * factor
        for group, base in zip(self.fused_opt.param_groups, self.fused_base_lr, strict=True):
            group["lr"] = base * factor
        # The fused optimizer's step() only hands the learning rate to the kernels (the update
        # itself ran in backward); doing it before the forward pass makes step t use lr(t).
        self.fused_opt.step()
        return factor

    def evaluate(self, loader: Any) -> dict[str, float]:
        self.steps.pause()
        self.model.eval()
        evaluator = self.task.evaluator()
        model = unwrap(self.model)
        with torch.no_grad():
            for batch in loader:
                batch = self.task.to_device(batch, self.device)
                evaluator.update(batch, self.task.forward(model, batch))
        self.model.train()
        return evaluator.compute()

    def _validate(self) -> None:
        """Validation and best-checkpoint selection, on the weight average when there is one."""
        with self.average.applied() if self.average is not None else nullcontext():
            self._after_eval(self.evaluate(self.val_loader))

    def _after_eval(self, metrics: dict[str, float]) -> None:
        s, cfg = self.state, self.cfg
        primary = metrics[self.task.primary_metric]
        row = {"step": s.step, **{f"val_{k}": v for k, v in metrics.items()}}
        s.history.append(row)
        self.tracker.log_metrics({k: v for k, v in row.items() if k != "step"}, s.step)
        if self.rank == 0:
            log.info("step %d: val %s", s.step,
                     " ".join(f"{k}={v:.5f}" for k, v in metrics.items() if k != "examples"))
        if primary > s.best or not self.selects:
            s.best, s.best_step, s.bad_evals = primary, s.step, 0
            save_checkpoint(self.ckpt_root / BEST, s.step, {"model": self.model.state_dict()},
                            {}, keep=1)
        else:
            s.bad_evals += 1
            if cfg.train.patience and s.bad_evals >= cfg.train.patience:
                s.stopped = True
                if self.rank == 0:
                    log.info("early stop at step %d: val %s has not improved on %.5f for %d "
                             "evaluations", s.step, self.task.primary_metric, s.best, s.bad_evals)
        if self._stop_requested(s.step, metrics):
            s.stopped = s.pruned = True
            if self.rank == 0:
                log.info("stopped at step %d: pruned by the evaluation hook", s.step)

    def _stop_requested(self, step: int, metrics: dict[str, float]) -> bool:
        """The hook runs in the training process, so only single-process runs have one
        (`run_train` refuses it otherwise): no rank has to be told."""
        return self.on_eval is not None and bool(self.on_eval(step, metrics))

    def train_step(self, batch: Any) -> tuple[float, torch.Tensor]:
        """One optimisation step (the embedding update runs inside backward)."""
        batch = self.task.to_device(batch, self.device)
        factor = self._set_lr()
        loss, _ = self.model(batch)
        loss.backward()
        self.dense_opt.step()
        self.optimizer.zero_grad()
        return factor, loss

    def _train_epochs(self) -> None:
        cfg, s = self.cfg, self.state
        show_bar = self.rank == 0 and not self.spec.quiet
        last_saved = s.step if self.spec.resume else -1
        if cfg.train.ema_decay:
            self.average = WeightAverage(self.model, cfg.train.ema_decay, self._average_state)
        for epoch in range(s.epoch, self.epochs):
            if s.stopped or (cfg.train.max_steps and s.step >= cfg.train.max_steps):
                break
            self.train_loader.set_epoch(epoch)
            self.train_loader.skip(s.batch_in_epoch)
            bar = Progress(f"epoch {epoch}", total=len(self.train_loader), unit="batches",
                           enabled=show_bar, initial=s.batch_in_epoch, leave=False)
            tick = time.perf_counter()
            self.steps.start(iter(self.train_loader))
            while (done := self.steps.next()) is not None:
                factor, loss = done
                now = time.perf_counter()
                s.train_seconds += now - tick
                tick = now
                s.step += 1
                s.batch_in_epoch += 1
                if self.average is not None:
                    self.average.update()
                s.examples += self.cfg.data.batch_size * self.world
                if s.step % cfg.train.log_every == 0:
                    mean_loss = _all_mean(float(loss.detach()))
                    rate = s.examples / max(s.train_seconds, 1e-9)
                    s.history.append({"step": s.step, "loss": mean_loss})
                    self.tracker.log_metrics(
                        {"loss": mean_loss, "lr_dense": self.cfg.optim.dense_lr * factor,
                         "lr_embedding": self.cfg.optim.embedding_lr * factor,
                         "examples_per_sec": rate}, s.step)
                    bar.set_postfix(loss=f"{mean_loss:.4f}", ex_s=f"{rate:,.0f}")
                    if self.rank == 0 and self.spec.quiet:
                        log.info("epoch %d step %d loss %.5f lr x%.3f %.0f examples/s", epoch,
                                 s.step, mean_loss, factor, rate)
                bar.update(1)
                if cfg.train.eval_every and s.step % cfg.train.eval_every == 0:
                    self._validate()
                if cfg.train.checkpoint_every and s.step % cfg.train.checkpoint_every == 0:
                    self._checkpoint()
                    last_saved = s.step
                tick = time.perf_counter()
                if s.stopped or (cfg.train.max_steps and s.step >= cfg.train.max_steps):
                    break
            bar.close()
            if s.batch_in_epoch >= len(self.train_loader):
                s.epoch, s.batch_in_epoch = epoch + 1, 0
                if not cfg.train.eval_every:
                    self._validate()
        evaluated = any(h["step"] == s.step and any(k.startswith("val_") for k in h)
                        for h in s.history)
        if not evaluated and not s.stopped:
            self._validate()
            last_saved = -1
        if last_saved != s.step or not latest_checkpoint(self.ckpt_root):
            self._checkpoint()

    def _fit_first_order(self) -> None:
        """The first-order term alone at the configured base rates, then the whole model's
        validation at step 0 (the deep output starts at zero), the first best checkpoint."""
        self._apply_lr(1.0)
        combined = with_first_order(self.model)
        assert combined is not None
        combined.start_from_prior(float(np.mean(self.data.labels[self.train_rows])))
        where = self.ckpt_root / "first_order"

        def on_epoch(epoch: int, value: float) -> None:
            self.tracker.log_metrics({f"first_order_val_{self.task.primary_metric}": value}, epoch)

        fit = fit_first_order(self.model, self.task, (self.train_loader, self.val_loader),
                              self.device, self.evaluate, dense_lr=self.cfg.optim.dense_lr,
                              epochs=self.cfg.train.first_order_epochs,
                              patience=max(1, self.cfg.train.patience), checkpoint_dir=where,
                              on_epoch=on_epoch, select=self.selects)
        self.state.first_order_fit = fit.summary(self.task.primary_metric)
        dist.barrier()
        remove_fit_checkpoints(where, self.rank)
        self._after_eval(self.evaluate(self.val_loader))

    def _log_start(self) -> None:
        if not self.tracker.enabled:
            return
        cfg = self.cfg
        run_id = self.tracker.start(cfg.mlflow.experiment,
                                    cfg.mlflow.run_name or self.run_dir.name, self.state.run_id,
                                    self.spec.mlflow_parent or None, self.spec.mlflow_tags)
        self.state.run_id = run_id
        (self.run_dir / "mlflow_run_id").write_text(run_id or "")
        self.tracker.log_params({**cfg.to_dict(), "world_size": self.world,
                                 "embedding_params": self.built.embedding_params})
        self.tracker.log_text(self.spec.config_text, "config.toml")
        self.tracker.log_text(plan_summary(self.plan), "sharding_plan.json")
        self.tracker.log_text(str(self.plan), "sharding_plan.txt")
        self.tracker.log_report(self.built.report)

    def _finish(self, test: dict[str, float]) -> dict[str, Any]:
        s = self.state
        result = {
            "run_id": s.run_id,
            **{f"test_{name}": test.get(name) for name in self.task.metric_names},
            "embedding_params": self.built.embedding_params,
            "embedding_bytes": self.built.embedding_bytes,
            "train_examples_per_sec": s.examples / max(s.train_seconds, 1e-9),
            f"best_val_{self.task.primary_metric}": s.best if math.isfinite(s.best) else None,
            "steps": s.step,
            "best_step": s.best_step,
            "decay_span": decay_span(self.cfg, self.total_steps),
            "early_stopped": s.stopped,
            "pruned": s.pruned,
            "world_size": self.world,
            "pipelined_modules": self.steps.pipelined_modules,
            "run_dir": str(self.run_dir),
            "rows": self.split_sizes,
            "unseen_values": self.unseen,
        }
        result.update(s.first_order_fit)
        result.update(getattr(self.task, "result_info", dict)())
        final_metrics = getattr(self.task, "final_metrics", None)
        model = None
        if final_metrics is not None:
            model = self._unsharded_model()
            extra = final_metrics(model, self.data, self.cfg)
            result.update({f"test_{k}": float(v) for k, v in extra.items()})
        if self.tracker.enabled:
            self.tracker.log_metrics(
                {k: float(v) for k, v in result.items()
                 if (k.startswith("test_") or k in ("embedding_params", "embedding_bytes",
                                                    "train_examples_per_sec"))
                 and isinstance(v, int | float) and not isinstance(v, bool)}
                | {f"unseen_{split}_values": float(sum(counts.values()))
                   for split, counts in self.unseen.items()}, s.step)
            self.tracker.log_curve(s.history, self.run_dir / "learning_curve.png",
                                   f"val_{self.task.primary_metric}")
            if self.cfg.mlflow.log_model:
                self._log_vocabularies()
                signature = getattr(self.task, "signature", None)
                self.tracker.log_model(model if model is not None else self._unsharded_model(),
                                       self.cfg.mlflow.registered_model,
                                       self.cfg.mlflow.register_alias,
                                       signature(self.data) if signature else None)
            self.tracker.finish()
        return result

    def _log_vocabularies(self) -> None:
        """The run's training-only vocabularies beside the model (artifact `vocab/`): the
        logged model speaks these ids, not the cache's."""
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            for file in self.data.write_vocabularies(Path(tmp),
                                                     list(self.cfg.data.features) or None):
                self.tracker.log_file(file, "vocab")

    def _load_best(self) -> None:
        """Test metrics, the logged model and export all use the best validation weights."""
        best = latest_checkpoint(self.ckpt_root / BEST)
        if best is None or (self.state.best_step == self.state.step and self.average is None):
            return
        state = {"model": self.model.state_dict()}
        load_checkpoint(best, state)
        self.model.load_state_dict(state["model"])
        if self.rank == 0:
            log.info("test metrics from the best validation checkpoint (step %d of %d)",
                     self.state.best_step, self.state.step)

    def _unsharded_model(self) -> torch.nn.Module:
        chosen = model_checkpoint(self.ckpt_root)
        module = self.task.build(self.cfg, self.data, "cpu").module
        assert chosen is not None
        load_unsharded(chosen, module)
        return module.eval()

    def run(self) -> dict[str, Any] | None:
        self._setup()
        if self.spec.resume:
            self._resume()
        elif self.rank == 0 and self.ckpt_root.exists():
            shutil.rmtree(self.ckpt_root)
        dist.barrier()
        if self.rank == 0:
            log.info("%s\nsharding plan:\n%s", self.built.describe, self.plan)
            for split, counts in self.unseen.items():
                if any(counts.values()):
                    log.info("%s values unseen in training (mapped to the OOV row): %s", split,
                             ", ".join(f"{k} {v}" for k, v in counts.items() if v))
        self._log_start()
        try:
            if (self.cfg.train.first_order_epochs and self.state.step == 0
                    and with_first_order(self.model) is not None):
                self._fit_first_order()
            self._train_epochs()
            self._load_best()
            test = self.evaluate(self.test_loader)
            result = self._finish(test) if self.rank == 0 else None
        except BaseException:
            self.tracker.finish("FAILED")
            raise
        dist.barrier()
        if result is not None:
            (self.run_dir / "result.json").write_text(json.dumps(result))
        return result
