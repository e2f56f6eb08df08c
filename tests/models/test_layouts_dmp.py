"""Every layout trains under torchrec DistributedModelParallel on 2 CPU gloo ranks, with its
tables sharded table-wise, column-wise and data-parallel (row-wise needs CUDA)."""

from __future__ import annotations

from typing import Any

import pytest

from plexrec.models.layout_registry import LAYOUTS
from tests.models.dmp_harness import DIM, STEPS, run_dmp

KINDS = tuple(LAYOUTS)
SHARDINGS = ("table_wise", "column_wise", "data_parallel")


@pytest.fixture(scope="module")
def results() -> dict[tuple[str, str], list[dict[str, Any]]]:
    jobs = [(kind, sharding) for kind in KINDS for sharding in SHARDINGS]
    per_rank = run_dmp(jobs, world_size=2)
    return {job: [ranks[i] for ranks in per_rank] for i, job in enumerate(jobs)}


@pytest.mark.slow
@pytest.mark.parametrize("sharding", SHARDINGS)
@pytest.mark.parametrize("kind", KINDS)
def test_layout_trains_under_dmp(results: dict, kind: str, sharding: str) -> None:
    ranks = results[(kind, sharding)]
    assert len(ranks) == 2
    for rank in ranks:
        assert rank["used"] == [sharding]
        assert rank["widths"] == [DIM] * 4
        assert len(rank["losses"]) == STEPS
    first = sum(r["losses"][0] for r in ranks) / 2
    last = sum(r["losses"][-1] for r in ranks) / 2
    assert last < 0.9 * first


@pytest.mark.slow
def test_column_wise_really_splits_columns(results: dict) -> None:
    assert results[("per_feature", "column_wise")][0]["max_shards"] == 2
    assert results[("mixed_dim", "column_wise")][0]["max_shards"] == 2
    assert results[("qr", "column_wise")][0]["max_shards"] == 2
    assert results[("per_feature", "table_wise")][0]["max_shards"] == 1
