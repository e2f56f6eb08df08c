"""The search space of `plexrec tune`: a TOML file of `[params."<run-config key>"]` tables (float,
int or categorical) and an optional `[study]` table, parsed by the project's one typed config
mechanism, with every key checked against the run config (through the same override path as
`--set`) before any trial starts. Also the TOML text of a run config, for the winning config."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import model_validator

from plexrec.features.config import Section, load_toml, parse_section
from plexrec.features.errors import ConfigError

Choice = bool | int | float | str
# Keys a trial may not change: tune places each trial's run and its MLflow run itself.
RESERVED_KEYS = ("train.run_dir", "train.runs_root")
RESERVED_TABLES = ("mlflow.",)


class ParamSpec(Section):
    """One searched key: `float`/`int` between `low` and `high` (on a log scale with `log`, on a
    grid with `step`), or one of `choices`."""

    kind: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Choice] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ParamSpec:
        if self.kind == "categorical":
            if not self.choices:
                raise ValueError("kind = \"categorical\" needs a non-empty `choices` list")
            extra = [k for k in ("low", "high", "step") if getattr(self, k) is not None]
            if extra or self.log:
                raise ValueError(f"kind = \"categorical\" takes only `choices`, not "
                                 f"{', '.join(extra) or 'log'}")
            return self
        if self.choices is not None:
            raise ValueError(f"kind = \"{self.kind}\" takes `low` and `high`, not `choices`")
        if self.low is None or self.high is None:
            raise ValueError(f"kind = \"{self.kind}\" needs both `low` and `high`")
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log = true needs low > 0, got low = {self.low}")
        if self.log and self.step is not None:
            raise ValueError("log = true and step cannot be combined")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"step must be > 0, got {self.step}")
        if self.kind == "int":
            ints = [v for v in (self.low, self.high, self.step) if v is not None]
            if not all(float(v).is_integer() for v in ints):
                raise ValueError("kind = \"int\" needs whole numbers for low, high and step")
        return self

    def samples(self) -> list[Choice]:
        """The values the pre-check applies: both ends of a range, every choice."""
        if self.kind == "categorical":
            return list(self.choices or [])
        assert self.low is not None and self.high is not None
        if self.kind == "int":
            return [int(self.low), int(self.high)]
        return [self.low, self.high]


class StudyConfig(Section):
    """`[study]`: the sampler's seed and start-up, and the median pruner's settings. Pruning runs
    inside the training process, so it needs `--nproc 1`; `prune = false` tunes with any
    `--nproc`."""

    seed: int = 0
    sampler_startup_trials: int = 10
    prune: bool = True
    pruner_startup_trials: int = 5
    pruner_warmup_steps: int = 0

    @model_validator(mode="after")
    def _ranges(self) -> StudyConfig:
        for key in ("sampler_startup_trials", "pruner_startup_trials", "pruner_warmup_steps"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        return self


class SearchSpace(Section):
    params: dict[str, ParamSpec]
    study: StudyConfig = StudyConfig()

    @model_validator(mode="after")
    def _some(self) -> SearchSpace:
        if not self.params:
            raise ValueError("[params] is empty: name at least one key to search")
        return self


def load_space(path: str | Path) -> SearchSpace:
    """The space file, typed; errors name the file, the key and the value."""
    space = parse_section(SearchSpace, load_toml(path), str(path))
    for key in space.params:
        if key in RESERVED_KEYS or key.startswith(RESERVED_TABLES):
            raise ConfigError(f"{path}: [params.\"{key}\"]: tune sets this key for every trial "
                              "itself; it cannot be searched")
    return space


def override(key: str, value: Any) -> str:
    """A `--set` item for `key`, the value written as a TOML literal."""
    return f"{key}={toml_value(value)}"


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(name: str) -> str:
    return name if _BARE_KEY.match(name) else json.dumps(name)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Sequence):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise ConfigError(f"cannot write {value!r} as a TOML value")


def toml_text(table: Mapping[str, Any], header: str = "") -> str:
    """A run config (nested dicts) as TOML: plain keys first, then one `[a.b]` table per
    sub-table, so `load_toml` reads back the same dict."""
    lines: list[str] = []
    _write_table(table, (), lines)
    text = "\n".join(lines).lstrip("\n") + "\n"
    return f"{header}{text}" if header else text


def _write_table(table: Mapping[str, Any], path: tuple[str, ...], lines: list[str]) -> None:
    plain = {k: v for k, v in table.items() if not isinstance(v, Mapping)}
    tables = {k: v for k, v in table.items() if isinstance(v, Mapping)}
    if path and (plain or not tables):
        lines.append("")
        lines.append(f"[{'.'.join(_key(p) for p in path)}]")
    lines.extend(f"{_key(k)} = {toml_value(v)}" for k, v in plain.items())
    for name, sub in tables.items():
        _write_table(sub, (*path, name), lines)


def check_keys(space: SearchSpace, space_path: str | Path, base: Any) -> None:
    """Applies every range end and every choice to the run config through the `--set` path
    (`base` is the LaunchOptions of the base run), so a mistyped key or an impossible value
    stops the tune before its first trial, naming the space file, the key and the value."""
    from dataclasses import replace

    from plexrec.training.launch import check_static, load_run_config
    from plexrec.training.tasks import check_model_kind

    for key, spec in space.params.items():
        for value in spec.samples():
            opts = replace(base, overrides=[*base.overrides, override(key, value)])
            try:
                cfg = load_run_config(opts)
                check_static(cfg, opts)
                if check_model_kind(cfg) == "retrieval":
                    from plexrec.training.tasks.retrieval import retrieval_config

                    retrieval_config(cfg)
            except ConfigError as exc:
                raise ConfigError(f"{space_path}: [params.\"{key}\"] value {toml_value(value)} "
                                  f"does not apply to {base.config}: {exc}") from None
