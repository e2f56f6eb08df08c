"""The one typed config mechanism. Every TOML table the project reads (run, layout, model,
retrieval, tuning, server) is a pydantic model derived from `Section`, owned by the code it
configures; `parse_section` turns pydantic's errors into one `ConfigError` that names the file,
the table, the key and the value, and `apply_overrides` types `--set table.key=value` by the field
it lands on."""

from __future__ import annotations

import copy
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from plexrec.features.errors import ConfigError


class Section(BaseModel):
    """A config table: unknown keys and wrong types are errors, ints do not pass as strings nor
    floats as ints, and a parsed section never changes afterwards."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, validate_default=True)


S = TypeVar("S", bound=BaseModel)


def parse_section(cls: type[S], raw: Any, where: str) -> S:
    """`raw` (a TOML table) as `cls`; `where` names its source, e.g. `run.toml` or `--set`."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a table, got {raw!r}")
    try:
        return cls.model_validate(dict(raw))
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, where, cls)) from None


def describe_errors(exc: ValidationError, where: str, cls: type[BaseModel] | None = None,
                    table: Sequence[str] = ()) -> str:
    """One line per problem: `file: [table] key = value: what is wrong`. `table` is where `cls`
    sits in the file (("layout", "qr") for a [layout.qr] parsed on its own)."""
    lines = []
    head = f"{where}: " if where else ""
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        place = _place((*table, *loc))
        msg = str(err["msg"]).removeprefix("Value error, ")
        if not loc and not table:
            lines.append(f"{head}{msg}")
        elif err["type"] == "extra_forbidden":
            known = _known_keys(cls, loc[:-1])
            hint = f" (known: {', '.join(known)})" if known else ""
            lines.append(f"{head}{place}: unknown key{hint}")
        elif err["type"] == "missing":
            lines.append(f"{head}{place}: required key is missing")
        elif loc and str(loc[0]) in getattr(cls, "secret_fields", ()):
            lines.append(f"{head}{place}: {msg} (value hidden: it is a secret)")
        elif "input" in err and not isinstance(err["input"], Mapping):
            lines.append(f"{head}{place} = {err['input']!r}: {msg}")
        else:
            lines.append(f"{head}{place}: {msg}")
    return "; ".join(lines)


def _place(loc: Sequence[Any]) -> str:
    """('server', 'index', 'kind') -> '[server.index] kind'; list positions become `key[i]`."""
    names: list[str] = []
    for part in loc:
        if isinstance(part, int) and names:
            names[-1] += f"[{part}]"
        else:
            names.append(str(part))
    if not names:
        return "(top level)"
    if len(names) == 1:
        return names[0]
    return f"[{'.'.join(names[:-1])}] {names[-1]}"


def _field_model(cls: Any, name: str) -> Any:
    fields = getattr(cls, "model_fields", None)
    if not fields or name not in fields:
        return None
    tp = fields[name].annotation
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _known_keys(cls: Any, loc: Sequence[Any]) -> list[str]:
    for part in loc:
        cls = _field_model(cls, str(part)) if cls is not None else None
    return sorted(cls.model_fields) if cls is not None else []


def load_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file as a dict; a missing or malformed file is a ConfigError naming it."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a TOML file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def parse_literal(text: str) -> Any:
    """A `--set` value read as a TOML value (`3`, `0.1`, `true`, `[64, 32]`, `"x"`); anything
    that is not valid TOML is taken as a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _wants_str(cls: Any, name: str) -> bool:
    fields = getattr(cls, "model_fields", None)
    if not fields or name not in fields:
        return False
    tp = fields[name].annotation
    if tp is str:
        return True
    union = typing.get_origin(tp) in (typing.Union, types.UnionType)
    return union and str in typing.get_args(tp) and int not in typing.get_args(tp)


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str],
                    root: type[BaseModel] | None = None) -> dict[str, Any]:
    """`dotted.key=value` overrides applied to a raw TOML table. Keys are checked against `root`
    as far as its sections are fixed models; the types are checked when the result is parsed.
    A string field takes a quoted TOML string or else the literal text
    (`--set mlflow.run_name=2024` is the string "2024")."""
    out = copy.deepcopy(dict(raw))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, text = (s.strip() for s in item.split("=", 1))
        parts = key.split(".")
        if not all(parts):
            raise ConfigError(f"--set {item!r}: empty key")
        table: dict[str, Any] = out
        cls: Any = root
        for depth, part in enumerate(parts):
            fields = getattr(cls, "model_fields", None)
            if fields is not None and part not in fields:
                raise ConfigError(f"--set {key}: unknown key {part!r} "
                                  f"(known: {', '.join(sorted(fields))})")
            if depth == len(parts) - 1:
                value = parse_literal(text)
                table[part] = (value if isinstance(value, str) else text) if _wants_str(
                    cls, part) else value
                break
            nxt = table.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {key}: {part!r} is not a table")
            table = nxt
            cls = _field_model(cls, part) if cls is not None else None
    return out
