"""Run configuration: typed sections (features.config.Section) read from TOML, with
`--set a.b=value` overrides typed by the field they land on, so a typo or a wrong type stops the
run before any process is started. `[layout]` and `[retrieval]` stay raw tables here: the layout
and the retrieval task own and parse them."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from plexrec.features.config import Section, apply_overrides, load_toml, parse_section
from plexrec.features.errors import ConfigError
from plexrec.training.export_config import ExportConfig

DEVICES = ("cpu", "cuda")
DECAYS = ("none", "linear", "cosine", "exponential")
DENSE_OPTIMIZERS = ("adam", "adagrad", "sgd")
EMBEDDING_OPTIMIZERS = ("rowwise_adagrad",)
DCN_STRUCTURES = ("stacked", "parallel")


# `schema` is the natural key name; it shadows pydantic's deprecated BaseModel.schema().
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "schema"', category=UserWarning)

    class DataConfig(Section):
        schema: str = ""  # type: ignore[assignment]
        path: str = ""
        valid_path: str = ""
        test_path: str = ""
        split_column: str = ""
        batch_size: int = 512
        eval_batch_size: int = 4096
        split: list[float] = [0.8, 0.1, 0.1]
        split_seed: int = 0
        by_time: bool = False
        features: list[str] = []
        on_bad_row: str = "error"
        cache_dir: str = ""
        prepare_workers: int = 1
        # "with_validation": the validation rows train too (a CTR final fit,
        # training/final_fit.py); nothing is then selected on them.
        train_rows: Literal["split", "with_validation"] = "split"


class ModelConfig(Section):
    kind: str = "dlrm"
    bottom_mlp: list[int] = [64]
    top_mlp: list[int] = [64, 32]
    cross_layers: int = 3
    cross_rank: int = 16
    deep_mlp: list[int] = [128, 64]
    dropout: float = 0.0
    attention_layers: int = 2
    attention_heads: int = 2
    dcn_structure: str = "stacked"
    first_order: bool = False


class OptimConfig(Section):
    embedding_optimizer: str = "rowwise_adagrad"
    embedding_lr: float = 0.05
    embedding_eps: float = 1e-8
    embedding_l2: float = 0.0
    first_order_lr: float = 0.01
    first_order_l2: float = 0.0
    # A logistic regression's L2 on the per-id weights, per id per pass (rare ids shrink more).
    first_order_id_l2: float = 0.0
    dense_optimizer: str = "adam"
    dense_lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    decay: str = "none"
    decay_steps: int = 0
    decay_rate: float = 0.5
    min_lr_ratio: float = 0.0


class TrainConfig(Section):
    epochs: int = 1
    max_steps: int = 0
    eval_every: int = 0
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    patience: int = 0
    seed: int = 0
    run_dir: str = ""
    runs_root: str = "runs"
    device: str = "cpu"
    log_every: int = 20
    # "auto": TorchRec's train pipeline with more than one process or on CUDA, where it has a
    # collective or a copy to overlap; one CPU process measured 0.91x the plain loop
    # (bench/bench_training.py).
    pipeline: bool | Literal["auto"] = "auto"
    threads: int = Field(0, ge=0)
    # Epochs of the first-order term alone, to its best validation AUC, before the deep part
    # trains (training/first_order_fit.py); 0 trains both together from the start. Without
    # [model] first_order there is no term to fit (a search may switch the term off).
    first_order_epochs: int = Field(0, ge=0)
    # CTR: after the held-out run, train again on training + validation rows for its best
    # checkpoint's epochs and report that model's test figures (training/final_fit.py).
    # Two-tower runs have their own [retrieval] final_fit (every row).
    final_fit: bool = False
    # The decay of an exponential moving average of the weights (training/weight_average.py):
    # validation, the best checkpoint, test and export read the average; 0 is off.
    ema_decay: float = Field(0.0, ge=0.0, lt=1.0)

    @field_validator("pipeline", mode="before")
    @classmethod
    def _pipeline_setting(cls, value: Any) -> Any:
        if value is True or value is False or value == "auto":
            return value
        raise ValueError('expected true, false or "auto"')

    def pipelined(self, world_size: int, device: str) -> bool:
        """Whether the trainer runs TorchRec's train pipeline for this launch."""
        if self.pipeline == "auto":
            return world_size > 1 or device.startswith("cuda")
        return bool(self.pipeline)


class ShardingConfig(Section):
    default: list[str] = []
    tables: dict[str, list[str]] = {}


class MlflowConfig(Section):
    enabled: bool = True
    experiment: str = "plexrec"
    registered_model: str = ""
    register_alias: str = ""
    log_model: bool = True
    run_name: str = ""


class RunConfig(Section):
    data: DataConfig = DataConfig()
    layout: dict[str, Any] = {}
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    sharding: ShardingConfig = ShardingConfig()
    mlflow: MlflowConfig = MlflowConfig()
    retrieval: dict[str, Any] = {}
    export: ExportConfig = ExportConfig()
    source: str = "<memory>"

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude={"source"})


def parse_config(raw: dict[str, Any], source: str = "<memory>") -> RunConfig:
    cfg = parse_section(RunConfig, {**raw, "source": source}, source)
    check_values(cfg)
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    raw = apply_overrides(load_toml(path), overrides or [], RunConfig)
    return parse_config(raw, source=str(path))


def check_values(cfg: RunConfig) -> None:
    """Value checks that need no data: ranges and closed vocabularies."""
    where = cfg.source

    def bad(section: str, key: str, msg: str) -> ConfigError:
        return ConfigError(f"{where} [{section}] {key}: {msg}")

    d = cfg.data
    if d.batch_size < 1 or d.eval_batch_size < 1:
        raise bad("data", "batch_size", "must be >= 1")
    if len(d.split) != 3 or any(f < 0 for f in d.split) or abs(sum(d.split) - 1.0) > 1e-6:
        raise bad("data", "split", f"must be three non-negative fractions summing to 1, "
                  f"got {d.split}")
    if d.prepare_workers < 1:
        raise bad("data", "prepare_workers", f"must be >= 1, got {d.prepare_workers}")
    if d.on_bad_row not in ("error", "skip"):
        raise bad("data", "on_bad_row", f"must be error or skip, got {d.on_bad_row!r}")
    if not 0.0 <= cfg.model.dropout < 1.0:
        raise bad("model", "dropout", f"must be in [0, 1), got {cfg.model.dropout}")
    o = cfg.optim
    if o.decay not in DECAYS:
        raise bad("optim", "decay", f"{o.decay!r} is not one of {', '.join(DECAYS)}")
    if o.dense_optimizer not in DENSE_OPTIMIZERS:
        raise bad("optim", "dense_optimizer",
                  f"{o.dense_optimizer!r} is not one of {', '.join(DENSE_OPTIMIZERS)}")
    if o.embedding_optimizer not in EMBEDDING_OPTIMIZERS:
        raise bad("optim", "embedding_optimizer", f"{o.embedding_optimizer!r} is not one of "
                  f"{', '.join(EMBEDDING_OPTIMIZERS)}")
    if cfg.model.dcn_structure not in DCN_STRUCTURES:
        raise bad("model", "dcn_structure", f"{cfg.model.dcn_structure!r} is not one of "
                  f"{', '.join(DCN_STRUCTURES)}")
    for key in ("embedding_l2", "weight_decay", "first_order_l2", "first_order_id_l2"):
        if getattr(o, key) < 0:
            raise bad("optim", key, f"must be >= 0, got {getattr(o, key)}")
    if o.embedding_lr <= 0 or o.dense_lr <= 0 or o.first_order_lr <= 0:
        raise bad("optim", "lr", "learning rates must be > 0")
    t = cfg.train
    if t.device not in DEVICES:
        raise bad("train", "device", f"{t.device!r} is not one of {', '.join(DEVICES)}")
    if t.epochs < 1 and not (t.epochs == 0 and t.first_order_epochs and cfg.model.first_order):
        raise bad("train", "epochs", "must be >= 1 (0 only with [model] first_order and "
                  "first_order_epochs: the first-order term alone)")
    if cfg.model.kind == "two_tower" and t.final_fit:
        raise bad("train", "final_fit", "is for CTR runs; a two-tower run has [retrieval] "
                  "final_fit")
    if cfg.model.kind == "two_tower" and d.train_rows != "split":
        raise bad("data", "train_rows", "is for CTR runs; a two-tower run has [retrieval] "
                  "train_rows")
    for key in ("max_steps", "eval_every", "checkpoint_every", "patience"):
        if getattr(t, key) < 0:
            raise bad("train", key, "must be >= 0")
    if t.keep_checkpoints < 1:
        raise bad("train", "keep_checkpoints", "must be >= 1")
    if t.log_every < 1:
        raise bad("train", "log_every", "must be >= 1")
    if o.warmup_steps < 0 or o.decay_steps < 0:
        raise bad("optim", "warmup_steps/decay_steps", "must be >= 0")
    if not 0.0 <= o.min_lr_ratio <= 1.0:
        raise bad("optim", "min_lr_ratio", f"must be in [0, 1], got {o.min_lr_ratio}")
