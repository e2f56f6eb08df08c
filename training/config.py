"""Run configuration: typed dataclasses read from TOML, with `--set a.b=value` overrides typed by the
dataclass field, so a typo or a wrong type stops the run before any process is started."""

from __future__ import annotations

import copy
import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plexrec.features.errors import ConfigError

DEVICES = ("cpu", "cuda")
DECAYS = ("none", "linear", "cosine", "exponential")
DENSE_OPTIMIZERS = ("adam", "adagrad", "sgd")
EMBEDDING_OPTIMIZERS = ("rowwise_adagrad",)


@dataclass
class DataConfig:
    schema: str = ""
    path: str = ""
    batch_size: int = 512
    eval_batch_size: int = 4096
    split: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    split_seed: int = 0
    by_time: bool = False
    features: list[str] = field(default_factory=list)
    on_bad_row: str = "error"
    cache_dir: str = ""


@dataclass
class ModelConfig:
    kind: str = "dlrm"
    bottom_mlp: list[int] = field(default_factory=lambda: [64])
    top_mlp: list[int] = field(default_factory=lambda: [64, 32])
    cross_layers: int = 3
    cross_rank: int = 16
    deep_mlp: list[int] = field(default_factory=lambda: [128, 64])


@dataclass
class OptimConfig:
    embedding_optimizer: str = "rowwise_adagrad"
    embedding_lr: float = 0.05
    embedding_eps: float = 1e-8
    dense_optimizer: str = "adam"
    dense_lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    decay: str = "none"
    decay_steps: int = 0
    decay_rate: float = 0.5
    min_lr_ratio: float = 0.0


@dataclass
class TrainConfig:
    epochs: int = 1
    max_steps: int = 0
    eval_every: int = 0
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    patience: int = 0
    seed: int = 0
    run_dir: str = "runs/default"
    device: str = "cpu"
    log_every: int = 20


@dataclass
class ShardingConfig:
    default: list[str] = field(default_factory=list)
    tables: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class MlflowConfig:
    enabled: bool = True
    experiment: str = "plexrec"
    registered_model: str = ""
    log_model: bool = True
    run_name: str = ""


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    layout: dict[str, Any] = field(default_factory=dict)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sharding: ShardingConfig = field(default_factory=ShardingConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    retrieval: dict[str, Any] = field(default_factory=dict)
    source: str = "<memory>"

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("source")
        return out


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Checks `value` against the annotation `tp` (ints widen to floats); raises naming `where`."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(tp):
            try:
                return _coerce(value, arm, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp) or (str, Any)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return {_coerce(k, key_tp, where): _coerce(v, val_tp, f"{where}.{k}")
                for k, v in value.items()}
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is type(None) and value is None:
        return None
    if isinstance(tp, type) and isinstance(value, tp) and not (
            isinstance(value, bool) and tp is not bool):
        return value
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def _build(cls: type, raw: dict[str, Any], where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in raw.items():
        tp = hints[name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, f"{where}.{name}")
        else:
            kwargs[name] = _coerce(value, tp, f"{where}.{name}")
    return cls(**kwargs)


def _parse_literal(text: str) -> Any:
    """A `--set` value is read as a TOML value (`3`, `0.1`, `true`, `[64, 32]`, `"x"`); anything
    that is not valid TOML is taken as a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Applies `dotted.key=value` overrides to the raw TOML table, checking each key exists."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        cls: Any = RunConfig
        table = raw
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if cls is not None:
                hints = typing.get_type_hints(cls)
                if part not in hints or part == "source":
                    raise ConfigError(f"--set {key}: unknown key {part!r}")
                tp = hints[part]
                if last:
                    value = _parse_literal(text)
                    if tp is str and not isinstance(value, str):
                        value = text
                    table[part] = _coerce(value, tp, f"--set {key}")
                    break
                cls = tp if dataclasses.is_dataclass(tp) else None
            elif last:
                table[part] = _parse_literal(text)
                break
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise ConfigError(f"--set {key}: {part!r} is not a table")
    return raw


def parse_config(raw: dict[str, Any], source: str = "<memory>") -> RunConfig:
    cfg = _build(RunConfig, {k: v for k, v in raw.items()}, source)
    cfg.source = source
    check_values(cfg)
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    raw = apply_overrides(raw, overrides or [])
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
    if d.on_bad_row not in ("error", "skip"):
        raise bad("data", "on_bad_row", f"must be error or skip, got {d.on_bad_row!r}")
    o = cfg.optim
    if o.decay not in DECAYS:
        raise bad("optim", "decay", f"{o.decay!r} is not one of {', '.join(DECAYS)}")
    if o.dense_optimizer not in DENSE_OPTIMIZERS:
        raise bad("optim", "dense_optimizer",
                  f"{o.dense_optimizer!r} is not one of {', '.join(DENSE_OPTIMIZERS)}")
    if o.embedding_optimizer not in EMBEDDING_OPTIMIZERS:
        raise bad("optim", "embedding_optimizer", f"{o.embedding_optimizer!r} is not one of "
                  f"{', '.join(EMBEDDING_OPTIMIZERS)}")
    if o.embedding_lr <= 0 or o.dense_lr <= 0:
        raise bad("optim", "lr", "learning rates must be > 0")
    t = cfg.train
    if t.device not in DEVICES:
        raise bad("train", "device", f"{t.device!r} is not one of {', '.join(DEVICES)}")
    if t.epochs < 1:
        raise bad("train", "epochs", "must be >= 1")
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
