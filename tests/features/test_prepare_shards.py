"""Parallel preparation writes the same bytes as one process, and names the same bad row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plexrec.features.errors import DataError
from plexrec.features.prepare import Inputs, prepare
from plexrec.features.prepare_shards import line_start_at_or_after, plan_shards
from plexrec.features.schema import load_schema
from plexrec.features.synth import write_criteo
from tests.conftest import CONFIGS
from tests.features.helpers import csv_schema

SCHEMA = load_schema(CONFIGS / "criteo.toml")


def _files(cache: Path) -> dict[str, bytes]:
    return {str(p.relative_to(cache)): p.read_bytes() for p in sorted(cache.rglob("*"))
            if p.is_file() and p.name != "meta.json"}


def _meta(cache: Path) -> dict:
    meta = json.loads((cache / "meta.json").read_text())
    meta.pop("created_at")
    return meta


def test_two_and_three_workers_write_the_bytes_of_one(tmp_path: Path) -> None:
    train, test = tmp_path / "train.tsv", tmp_path / "test.tsv"
    write_criteo(train, 6_000, seed=4, progress=False)
    write_criteo(test, 1_000, seed=5, progress=False)
    inputs = Inputs(train, test=test)
    one = prepare(SCHEMA, inputs, tmp_path / "one", progress=False, chunk_rows=700).out_dir
    for workers in (2, 3):
        many = prepare(SCHEMA, inputs, tmp_path / f"w{workers}", progress=False,
                       chunk_rows=700, workers=workers).out_dir
        assert _files(many) == _files(one)
        assert _meta(many) == _meta(one)
    assert len(plan_shards(SCHEMA, inputs.sources, 3) or []) == 6


def test_first_bad_row_in_input_order_with_its_file_line(tmp_path: Path) -> None:
    path = tmp_path / "train.tsv"
    write_criteo(path, 3_000, seed=6, progress=False)
    lines = path.read_text().splitlines(keepends=True)
    lines[2_500] = "1\t2\n"
    lines[2_800] = "0\t3\n"
    path.write_text("".join(lines))
    with pytest.raises(DataError, match=r"train.tsv:2501: expected 40 fields, found 2"):
        prepare(SCHEMA, path, tmp_path / "c", progress=False, workers=2)
    skipped = prepare(SCHEMA, path, tmp_path / "c", progress=False, workers=2,
                      on_bad_row="skip")
    assert skipped.num_rows == 2_998 and skipped.skipped_by_reason == {"wrong field count": 2}


def test_formats_without_byte_ranges_prepare_in_one_process(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("user,tags,x,y\nu1,a|b,1,5\nu2,b,2,3\n")
    assert plan_shards(csv_schema(), [(0, path)], 2) is None
    result = prepare(csv_schema(), path, tmp_path / "c", progress=False, workers=2)
    assert result.num_rows == 2


def test_line_starts(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"ab\ncd\n\nef")
    assert [line_start_at_or_after(path, o) for o in (0, 1, 3, 4, 6, 7, 9)] == [0, 3, 3, 6, 6,
                                                                                7, 9]
