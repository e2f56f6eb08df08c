"""Tables a user brings, trained from a schema TOML alone and evaluated on a given test file:
MovieLens CSV tables joined by the schema, an Avazu-layout click log whose hour of day is derived
from a YYMMDDHH string, a libFM file with -1/1 labels, and Criteo with bucketized counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from plexrec.features.movielens_csv import write_movielens_csv
from plexrec.features.synth import write_criteo
from plexrec.features.synth_clicklog import write_clicklog
from plexrec.training.launch import LaunchOptions, run_train
from tests.conftest import CONFIGS


def _train(config: str, data: Path, test: Path, tmp: Path, *extra: str) -> dict:
    return run_train(LaunchOptions(
        config=CONFIGS / config, data=str(data), quiet=True,
        overrides=[f"data.test_path={test}", f"train.run_dir={tmp / 'run'}",
                   f"data.cache_dir={tmp / 'cache'}", "mlflow.enabled=false", *extra]))


@pytest.mark.slow
def test_movielens_csv_tables_joined_by_the_schema(ml_100k: Path, tmp_path: Path) -> None:
    tables = write_movielens_csv(ml_100k, tmp_path / "ml", test_fraction=0.2)
    result = _train("movielens_csv_dlrm.toml", tables.ratings, tables.test, tmp_path,
                    "train.epochs=1")
    assert result["rows"]["test"] == tables.test_rows == 20_000
    assert result["rows"]["train"] + result["rows"]["val"] == tables.train_rows
    assert result["test_auc"] > 0.6


def test_click_log_with_hour_of_day_from_yymmddhh(tmp_path: Path) -> None:
    write_clicklog(tmp_path / "clicks.csv", 20_000, seed=0)
    write_clicklog(tmp_path / "clicks_test.csv", 5_000, seed=1)
    result = _train("synthetic_dlrm.toml", tmp_path / "clicks.csv", tmp_path / "clicks_test.csv",
                    tmp_path, "data.schema=\"configs/clicklog.toml\"", "data.batch_size=256",
                    "train.max_steps=120")
    assert result["rows"] == {"train": 18_947, "val": 1_053, "test": 5_000}
    assert result["test_auc"] > 0.65


def _libfm_lines(criteo: Path) -> list[str]:
    """Criteo rows as libFFM: label -1/1, field:index:value (counts as values, ids as indices)."""
    lines = []
    for row in criteo.read_text().splitlines():
        cols = row.split("\t")
        tokens = [f"{j}:0:{v}" for j, v in enumerate(cols[1:14]) if v]
        tokens += [f"{13 + j}:{int(v, 16)}:1" for j, v in enumerate(cols[14:]) if v]
        lines.append(" ".join(["1" if cols[0] == "1" else "-1", *tokens]))
    return lines


def test_libfm_file_with_minus_one_labels(tmp_path: Path) -> None:
    write_criteo(tmp_path / "c.tsv", 3_000, seed=3, progress=False)
    lines = _libfm_lines(tmp_path / "c.tsv")
    (tmp_path / "train.ffm").write_text("\n".join(lines[:2_500]) + "\n")
    (tmp_path / "test.ffm").write_text("\n".join(lines[2_500:]) + "\n")
    dense = [f"I{i}" for i in range(1, 14)]
    cats = [f"C{i}" for i in range(1, 27)]
    schema = tmp_path / "ffm.toml"
    schema.write_text(
        '[dataset]\nname = "criteo-ffm"\nformat = "libfm"\ncolumns = '
        + str(["click", *dense, *cats]).replace("'", '"') + '\n[label]\ncolumn = "click"\n'
        + "".join(f'[[features]]\nname = "{d}"\nkind = "dense"\ntransform = "log1p"\n'
                  for d in dense)
        + "".join(f'[[features]]\nname = "{c}"\nkind = "categorical"\nmin_count = 2\n'
                  for c in cats))
    result = _train("synthetic_dlrm.toml", tmp_path / "train.ffm", tmp_path / "test.ffm",
                    tmp_path, f'data.schema="{schema}"', "data.batch_size=128",
                    "train.max_steps=40")
    assert result["rows"]["test"] == 500 and 0.0 < result["test_auc"] < 1.0


def test_criteo_with_bucketized_counts(criteo_10k: Path, tmp_path: Path) -> None:
    lines = criteo_10k.read_text().splitlines(keepends=True)
    (tmp_path / "train.txt").write_text("".join(lines[:8_000]))
    (tmp_path / "test.txt").write_text("".join(lines[8_000:]))
    result = _train("criteo_dlrm.toml", tmp_path / "train.txt", tmp_path / "test.txt", tmp_path,
                    'data.schema="configs/criteo_buckets.toml"', "data.batch_size=128",
                    "train.max_steps=60")
    assert result["rows"]["test"] == 2_000 and result["rows"]["train"] + result["rows"][
        "val"] == 8_000
    assert 0.0 < result["test_auc"] < 1.0
    assert sum(result["unseen_values"]["test"].values()) > 0
