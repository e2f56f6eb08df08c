"""Budgets and [layout] configs: parsing, and rejection of bad values with messages naming them."""

from __future__ import annotations

import numpy as np
import pytest

from plexrec.features.errors import ConfigError
from plexrec.models.layouts import (
    Budget,
    LayoutConfig,
    SparseFeatureSpec,
    build_layout,
    parse_budget,
    specs_from_prepared,
)
from tests.models.layout_helpers import layout_config


def specs(cards: tuple[int, ...] = (3, 50, 1000)) -> list[SparseFeatureSpec]:
    return [SparseFeatureSpec(f"c{i}", c, np.arange(c, 0, -1, dtype=np.int64))
            for i, c in enumerate(cards)]


@pytest.mark.parametrize(("text", "expected"), [
    ("8MB", Budget(bytes=8 * 1024**2)),
    ("512KB", Budget(bytes=512 * 1024)),
    ("1.5GB", Budget(bytes=int(1.5 * 1024**3))),
    ("64 kib", Budget(bytes=64 * 1024)),
    ("2000000", Budget(params=2_000_000)),
    ("2_000_000", Budget(params=2_000_000)),
    (2_000_000, Budget(params=2_000_000)),
])
def test_parse_budget(text: str | int, expected: Budget) -> None:
    assert parse_budget(text) == expected


def test_budget_bytes_convert_at_four_per_float() -> None:
    assert parse_budget("8MB").to_params() == 2 * 1024**2
    assert parse_budget(1234).to_params() == 1234
    assert parse_budget(None) is None


@pytest.mark.parametrize("bad", ["8 parsecs", "MB", "lots", "-5MB", "1.5", "0", "", True, -3])
def test_bad_budget_names_the_value(bad: object) -> None:
    with pytest.raises(ConfigError) as err:
        parse_budget(bad, "layout.budget")
    assert repr(bad) in str(err.value)
    assert "layout.budget" in str(err.value)


def test_from_dict_reads_every_key() -> None:
    from plexrec.models.layouts import Budget
    from plexrec.models.layouts.mixed_dim import MixedDimOptions
    from plexrec.models.layouts.unified import UnifiedOptions

    cfg = LayoutConfig.from_dict({"kind": "unified", "dim": 32, "budget": "1MB", "seed": 7,
                                  "unified": {"probes": 4, "num_tables": 2},
                                  "mixed_dim": {"alpha": 0.25, "blocks": 3,
                                                "min_block_dim": 8}}, "run.toml [layout]")
    assert (cfg.kind, cfg.dim, cfg.budget, cfg.seed) == ("unified", 32, Budget(bytes=1 << 20), 7)
    assert cfg.options(UnifiedOptions) == UnifiedOptions(probes=4, rows=None, num_tables=2)
    mixed = cfg.model_copy(update={"kind": "mixed_dim"})
    assert mixed.options(MixedDimOptions) == MixedDimOptions(alpha=0.25, blocks=3,
                                                             min_block_dim=8)
    assert LayoutConfig.from_dict({"kind": "qr"}).options(UnifiedOptions) == UnifiedOptions()


@pytest.mark.parametrize(("table", "needle"), [
    ({"kind": "hashed"}, "'hashed'"),
    ({"kind": "unified", "probes": 3}, "unknown key 'probes'"),
    ({"budget": "8 parsecs"}, "'8 parsecs'"),
    ({"dimension": 16}, "'dimension'"),
    ({"dim": "16"}, "dim = '16'"),
    ({"mixed_dim": {"alpha": 5.0}}, "[layout.mixed_dim] alpha = 5.0"),
    ({"mixed_dim": {"blocks": 0}}, "[layout.mixed_dim] blocks = 0"),
    ({"unified": {"probes": 0}}, "[layout.unified] probes = 0"),
    ({"unified": {"rows": 0}}, "[layout.unified] rows = 0"),
    ({"unified": {"prob": 2}}, "[layout.unified] prob: unknown key"),
    ({"unified": 3}, "must be a table"),
])
def test_from_dict_rejects_bad_values(table: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        LayoutConfig.from_dict(table, "run.toml [layout]")
    assert needle in str(err.value)
    assert "run.toml [layout]" in str(err.value)


def test_other_kinds_settings_do_not_constrain_per_feature() -> None:
    layout = build_layout(specs(), LayoutConfig.from_dict({"dim": 5}, "run.toml [layout]"))
    assert layout.total_params == 5 * (3 + 50 + 1000)


def test_unknown_layout_lists_the_valid_names() -> None:
    with pytest.raises(ConfigError) as err:
        build_layout(specs(), LayoutConfig.from_dict({"kind": "hashed"}))
    message = str(err.value)
    assert "'hashed'" in message
    for name in ("per_feature", "mixed_dim", "unified"):
        assert name in message


def test_probes_must_divide_dim_at_build_time() -> None:
    with pytest.raises(ConfigError, match="probes = 3 does not divide dim = 16"):
        build_layout(specs(), layout_config("unified", dim=16, probes=3))
    with pytest.raises(ConfigError, match="min_block_dim = 32 must be <= dim = 16"):
        build_layout(specs(), layout_config("mixed_dim", dim=16, min_block_dim=32))


@pytest.mark.parametrize("kind", ["per_feature", "mixed_dim", "unified"])
def test_budget_too_small_names_the_budget(kind: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_layout(specs(), LayoutConfig(kind=kind, dim=16, budget=20))
    assert "layout.budget = 20" in str(err.value)
    assert "too small" in str(err.value)


def test_unified_rows_over_budget_names_rows() -> None:
    with pytest.raises(ConfigError, match="layout.unified.rows = 1000"):
        build_layout(specs(), layout_config("unified", rows=1000, budget=500))


def test_mixed_dim_needs_counts() -> None:
    bare = [SparseFeatureSpec("c0", 10)]
    with pytest.raises(ConfigError, match="counts for feature 'c0'"):
        build_layout(bare, LayoutConfig(kind="mixed_dim"))


def test_reserved_feature_names_rejected() -> None:
    with pytest.raises(ConfigError, match="'a__b'"):
        build_layout([SparseFeatureSpec("a__b", 4)], LayoutConfig())


class _Stats:
    """The part of features.cache.PreparedData that layouts read."""

    sparse_names = ["user", "item"]
    meta = {"sparse": [{"name": "item", "pooling": "mean"}]}

    def cardinality(self, name: str) -> int:
        return {"user": 4, "item": 6}[name]

    def counts(self, name: str) -> np.ndarray:
        return np.arange(self.cardinality(name), dtype=np.int64)


def test_specs_from_prepared() -> None:
    got = specs_from_prepared(_Stats())
    assert [(s.name, s.cardinality, s.pooling) for s in got] == [
        ("user", 4, "sum"), ("item", 6, "mean")]
    assert got[1].counts.tolist() == list(range(6))
    assert [s.name for s in specs_from_prepared(_Stats(), ["item"])] == ["item"]
