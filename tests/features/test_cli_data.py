"""`plexrec data` end to end through cli.main (real files, real caches)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from plexrec.cli.main import main
from plexrec.features.cache import PreparedData
from tests.conftest import CONFIGS, criteo_label_rate
from tests.features.helpers import criteo_line, write_lines


def test_prepare_prints_summary_and_reuses(tmp_path: Path, criteo_10k: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    rate = criteo_label_rate(criteo_10k)
    argv = ["data", "prepare", "--schema", str(CONFIGS / "criteo.toml"), "--input",
            str(criteo_10k), "--out", str(tmp_path / "c"), "--quiet"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    err = captured.err
    assert "built in" in err and "rows: 10,000" in err and "skipped rows: 0" in err
    assert f"label rate: {rate:.4f}" in err and "C1 " in err and "distinct values" in err
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert result["rows"] == 10_000 and result["reused"] is False
    assert result["label_rate"] == pytest.approx(rate) and len(result["cardinality"]) == 26
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "reused existing cache" in captured.err
    assert json.loads(captured.out)["reused"] is True


def test_prepare_bad_row_exit_2_then_skip(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = write_lines(tmp_path / "t.txt", [criteo_line(), "0\t1", criteo_line()])
    argv = ["data", "prepare", "--schema", str(CONFIGS / "criteo.toml"), "--input", str(path),
            "--out", str(tmp_path / "c"), "--quiet", "--chunk-rows", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"{path}:2: expected 40 fields, found 2" in err
    assert "(field I2)" in err
    assert main([*argv, "--on-bad-row", "skip"]) == 0
    captured = capsys.readouterr()
    assert "skipped rows: 1" in captured.err and "skipped (wrong field count): 1" in captured.err
    result = json.loads(captured.out)
    assert (result["rows"], result["skipped_rows"]) == (2, 1)
    assert result["skipped_by_reason"] == {"wrong field count": 1}


def test_missing_schema_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "prepare", "--schema", str(tmp_path / "x.toml"), "--input", "y",
                 "--out", str(tmp_path / "c")]) == 2
    assert "schema file not found" in capsys.readouterr().err


def test_synth_criteo_then_prepare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "synth.txt"
    assert main(["data", "synth", "--kind", "criteo", "--rows", "3000", "--out", str(path),
                 "--seed", "1", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "wrote 3,000 synthetic criteo rows" in captured.err
    assert json.loads(captured.out)["rows"] == 3000
    assert main(["data", "prepare", "--schema", str(CONFIGS / "criteo.toml"), "--input",
                 str(path), "--out", str(tmp_path / "c"), "--quiet"]) == 0
    d = PreparedData.open(tmp_path / "c")
    assert d.num_rows == 3000 and 0 < d.meta["label_rate"] < 1
    assert all(d.cardinality(n) > 1 for n in d.sparse_names[:5])
    assert np.isfinite(d.dense).all()


def test_synth_interactions_dir(tmp_path: Path) -> None:
    out = tmp_path / "inter"
    assert main(["data", "synth", "--kind", "interactions", "--rows", "500", "--out", str(out),
                 "--quiet"]) == 0
    assert (out / "interactions.csv").read_text().count("\n") == 501


def test_synth_movielens_defaults_to_where_configs_look(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["data", "synth", "--kind", "movielens", "--rows", "20000", "--quiet"]) == 0
    out = tmp_path / "data" / "synth_ml-100k"
    assert (out / "u.data").read_text().count("\n") == 20_000
    assert main(["data", "prepare", "--schema", str(CONFIGS / "movielens.toml"), "--input",
                 str(out), "--out", str(tmp_path / "c"), "--quiet"]) == 0
    assert PreparedData.open(tmp_path / "c").num_rows == 20_000
