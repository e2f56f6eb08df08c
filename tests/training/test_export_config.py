"""The `[export]` table and `plexrec export --vector-dtype`: a dtype is checked before any run
is loaded, and the error names the key or the flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from plexrec.cli.main import main as plexrec
from plexrec.features.errors import ConfigError
from plexrec.training.config import parse_config
from plexrec.training.export import export_config
from plexrec.training.export_config import ExportConfig


def test_run_config_export_table() -> None:
    assert parse_config({}).export == ExportConfig()
    cfg = parse_config({"export": {"vector_dtype": "int8"}}, "run.toml")
    assert cfg.export.vector_dtype == "int8" and cfg.export.binary_rotation == "itq"
    with pytest.raises(ConfigError, match=r"run.toml: \[export\] vector_dtype = 'int4': "
                                          "expected one of float32, float16, int8, binary"):
        parse_config({"export": {"vector_dtype": "int4"}}, "run.toml")
    with pytest.raises(ConfigError, match=r"binary_rotation = 'pca'.*itq, none"):
        parse_config({"export": {"binary_rotation": "pca"}}, "run.toml")
    with pytest.raises(ConfigError, match="unknown key"):
        parse_config({"export": {"dtype": "int8"}}, "run.toml")


def test_vector_dtype_flag_overrides_the_table() -> None:
    base = ExportConfig(vector_dtype="int8", binary_rotation="none")
    assert export_config(base, None) is base
    assert export_config(base, "binary") == ExportConfig(vector_dtype="binary",
                                                         binary_rotation="none")
    with pytest.raises(ConfigError, match="--vector-dtype"):
        export_config(base, "int4")


def test_cli_rejects_an_unknown_dtype_before_loading_the_run(tmp_path: Path, capsys) -> None:
    assert plexrec(["export", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "s"),
                    "--vector-dtype", "int4"]) == 2
    err = capsys.readouterr().err
    assert "--vector-dtype" in err and "int4" in err and "not a training run" not in err
