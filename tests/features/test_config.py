"""The shared config mechanism: every error names the file, table, key and value."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import field_validator

from plexrec.features.config import Section, apply_overrides, load_toml, parse_section
from plexrec.features.errors import ConfigError


class Inner(Section):
    kind: str = "ivf"
    nprobe: int = 8


class Outer(Section):
    port: int = 50051
    ratio: float = 0.5
    name: str = ""
    sizes: list[int] = [64, 32]
    index: Inner = Inner()

    @field_validator("port")
    @classmethod
    def _port_range(cls, v: int) -> int:
        if not 0 <= v <= 65535:
            raise ValueError("must be in [0, 65535]")
        return v


class Root(Section):
    server: Outer = Outer()


def _err(raw: dict, where: str = "s.toml") -> str:
    with pytest.raises(ConfigError) as exc:
        parse_section(Root, raw, where)
    return str(exc.value)


def test_defaults_and_int_widens_to_float() -> None:
    cfg = parse_section(Root, {"server": {"ratio": 1}}, "s.toml")
    assert cfg.server.ratio == 1.0 and isinstance(cfg.server.ratio, float)
    assert cfg.server.index.nprobe == 8


@pytest.mark.parametrize(("raw", "needle"), [
    ({"server": {"port": "80x"}}, "s.toml: [server] port = '80x': Input should be a valid integer"),
    ({"server": {"port": 2.5}}, "[server] port = 2.5"),
    ({"server": {"port": 70000}}, "[server] port = 70000: must be in [0, 65535]"),
    ({"server": {"sizes": [1, "a"]}}, "[server] sizes[1] = 'a'"),
    ({"server": {"index": {"nprobe": True}}}, "[server.index] nprobe = True"),
    ({"server": {"prot": 1}}, "[server] prot: unknown key (known: index, name, port"),
    ({"server": {"index": {"kindd": "x"}}}, "[server.index] kindd: unknown key (known: kind, nprobe)"),
])
def test_errors_name_table_key_and_value(raw: dict, needle: str) -> None:
    assert needle in _err(raw)


def test_sections_are_frozen() -> None:
    cfg = parse_section(Root, {}, "s.toml")
    with pytest.raises(ValueError, match="frozen"):
        cfg.server.port = 1  # type: ignore[misc]


def test_overrides_are_typed_by_the_field() -> None:
    raw = apply_overrides({"server": {"port": 1}}, ["server.name=2024", "server.sizes=[8, 4]",
                                                   "server.index.nprobe=16"], Root)
    cfg = parse_section(Root, raw, "--set")
    assert cfg.server.name == "2024" and cfg.server.sizes == [8, 4]
    assert cfg.server.index.nprobe == 16 and cfg.server.port == 1


@pytest.mark.parametrize(("item", "needle"), [
    ("server.nope=1", "--set server.nope: unknown key 'nope'"),
    ("server", "expected key=value"),
    ("server..port=1", "empty key"),
])
def test_bad_overrides(item: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.").replace("'", "'")):
        apply_overrides({}, [item], Root)


def test_load_toml_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_toml(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\nport = 1\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: invalid TOML"):
        load_toml(bad)
