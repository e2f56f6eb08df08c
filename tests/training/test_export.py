import json
import math
from typing import Any

import numpy as np
import pytest
import torch

from plexrec.cli.main import main as plexrec
from plexrec.features.readers.movielens import read_users
from plexrec.models.snapshot import Snapshot
from plexrec.training.export import (
    CONTRACT_FILE,
    TOWER_FILE,
    export_snapshot,
    external_ids,
)
from plexrec.training.two_tower import (
    entity_rows,
)
from tests.conftest import CONFIGS
from tests.training.retrieval_helpers import prepared_movielens, train_movielens_two_tower


def padded_inputs(data: Any, rows: np.ndarray, names: list[str], max_lengths: list[int],
                  dense_index: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The exported tower's inputs for prepared rows: what serving builds from raw features."""
    rows = np.asarray(rows, dtype=np.int64)
    blocks = []
    for name, width in zip(names, max_lengths, strict=True):
        offsets, values = data.offsets(name), np.asarray(data.values(name))
        block = np.full((len(rows), width), -1, dtype=np.int64)
        for i, r in enumerate(rows.tolist()):
            bag = values[offsets[r]:offsets[r + 1]][:width]
            block[i, :len(bag)] = bag
        blocks.append(block)
    sparse = torch.from_numpy(np.concatenate(blocks, axis=1))
    dense = torch.from_numpy(np.ascontiguousarray(
        np.asarray(data.dense)[rows][:, dense_index], dtype=np.float32))
    return sparse, dense


@pytest.fixture(scope="module")
def ml(ml_100k, tmp_path_factory):
    return prepared_movielens(ml_100k, tmp_path_factory.mktemp("export"))


@pytest.fixture(scope="module")
def exported(ml, tmp_path_factory):
    # The plain tower over the cache's own features (the history feature's export is
    # tests/training/test_history_retrieval.py's).
    _, trained = train_movielens_two_tower(
        ml, tmp_path_factory.mktemp("runs"), "retrieval.history=0",
        "model.deep_mlp=[32, 16]", "layout.kind=mixed_dim",
        "layout.dim=8", "layout.budget=6000", "data.batch_size=256", "train.max_steps=20")
    parts = trained.parts
    out = tmp_path_factory.mktemp("snapshots")
    result = export_snapshot(parts, ml, out, run_id="run-1", metrics={"recall_at_10": 0.1})
    return parts, result


def test_snapshot_round_trip_counts_ids_and_user_tower(ml, exported):
    parts, result = exported
    snap = Snapshot.open(result.snapshot, verify=True)
    assert snap.version == result.version and snap.run_id == "run-1"
    assert snap.count("user") == len(ml.vocab("user_id")) == result.users == 943
    assert snap.count("item") == len(ml.vocab("item_id")) == result.items == 1682
    assert snap.width == result.width == 16
    assert sorted(snap.ids("user").tolist()) == list(range(1, 944))
    assert snap.manifest["metrics"]["recall_at_10"] == 0.1
    assert np.allclose(np.linalg.norm(snap.vectors("item"), axis=1), 1, atol=1e-5)

    tower = torch.jit.load(str(snap.file(TOWER_FILE)))
    users, rows = entity_rows(ml, "user_id")
    lengths = [ml.schema.feature(n).max_length for n in parts.user_sparse]
    sparse, dense = padded_inputs(ml, rows, parts.user_sparse, lengths, parts.user_dense)
    got = tower(sparse, dense).detach().numpy()
    stored = snap.vectors("user")[snap.row_of("user", external_ids(ml, "user_id", users))]
    assert np.abs(got - stored).max() < 1e-5


def test_exporting_the_same_model_again_gives_the_same_version(ml, exported):
    parts, result = exported
    again = export_snapshot(parts, ml, result.snapshot.parent, run_id="run-1",
                            metrics={"recall_at_10": 0.1})
    assert again.version == result.version and again.snapshot == result.snapshot


def test_contract_encodes_raw_features_like_preparation(ml_100k, ml, exported):
    """Serving's view: raw u.user fields -> contract -> tower gives the snapshot's vector."""
    _, result = exported
    user = {"user_id": "1", **read_users(ml_100k).loc["1"]}
    snap = Snapshot.open(result.snapshot)
    contract = json.loads(snap.file(CONTRACT_FILE).read_text())
    assert contract["tower_input"] == "padded" and contract["width"] == 16
    assert [s["name"] for s in contract["sparse"]] == ["user_id", "age", "gender",
                                                        "occupation", "zip"]
    assert contract["dense"] == [{"name": "age_years", "column": "age", "fill": 0.0,
                                  "transform": "log1p", "clamp_min": None, "clamp_max": None}]
    raw = {key: user[key] for key in ("user_id", "age_bucket", "gender", "occupation", "zip3")}
    ids = []
    for spec in contract["sparse"]:
        assert spec["kind"] == "categorical" and spec["hash_size"] is None
        ids.append(spec["vocab"].get(raw[spec["column"]], 0))
    assert all(i > 0 for i in ids)
    tower = torch.jit.load(str(snap.file(TOWER_FILE)))
    vec = tower(torch.tensor([ids]), torch.tensor([[math.log1p(float(user["age"]))]])).detach().numpy()[0]
    stored = snap.vectors("user")[snap.row_of("user", np.array([1]))[0]]
    assert np.abs(vec - stored).max() < 1e-5
    # An unknown user id falls back to the shared OOV row and still gets a unit vector.
    ids[0] = 0
    other = tower(torch.tensor([ids]), torch.tensor([[math.log1p(float(user["age"]))]]))
    assert abs(float(other.detach().norm()) - 1) < 1e-5


def test_export_rejects_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert plexrec(["export", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "s")]) == 2
    assert "not a training run directory" in capsys.readouterr().err


@pytest.mark.slow
def test_train_then_export_by_mlflow_run_id(mlflow_uri, ml_100k, tmp_path, capsys):
    """The real path: `plexrec train` (DMP trainer with the retrieval task) then
    `plexrec export --run RUN_ID`, snapshot logged back to the MLflow run."""
    from mlflow.tracking import MlflowClient

    run_dir = tmp_path / "run"
    code = plexrec(["train", "--config", str(CONFIGS / "movielens_two_tower.toml"),
                    "--data", str(ml_100k), "--quiet", "--set", "train.max_steps=15",
                    "--set", f"train.run_dir={run_dir}", "--set", "model.deep_mlp=[16]",
                    "--set", f"data.cache_dir={tmp_path / 'prepared'}"])
    assert code == 0
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    run_id = trained["run_id"]
    assert 0 < trained["test_recall_at_100"] <= 1 and trained["test_users"] > 900
    code = plexrec(["export", "--run", run_id, "--out", str(tmp_path / "snapshots")])
    assert code == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["users"] == 943 and line["items"] == 1682 and line["width"] == 16
    snap = Snapshot.open(line["snapshot"], verify=True)
    assert snap.run_id == run_id and snap.version == line["version"]
    assert snap.manifest["metrics"]["test_recall_at_100"] == trained["test_recall_at_100"]
    logged = [f.path for f in MlflowClient(mlflow_uri).list_artifacts(
        run_id, f"snapshot/{snap.version}")]
    assert f"snapshot/{snap.version}/manifest.json" in logged
    assert f"snapshot/{snap.version}/{TOWER_FILE}" in logged


def test_serving_user_tower_reproduces_the_snapshot_vector(ml_100k, exported):
    """The contract as the serving tier reads it (serving.user_encoder), from raw request values
    keyed by feature name."""
    from plexrec.serving.user_encoder import UserTower

    _, result = exported
    snap = Snapshot.open(result.snapshot)
    tower = UserTower(snap.file(TOWER_FILE), snap.file(CONTRACT_FILE))
    user = read_users(ml_100k).loc["1"]
    vec = tower({"user_id": "1", "age": user["age_bucket"], "gender": user["gender"],
                 "occupation": user["occupation"], "zip": user["zip3"],
                 "age_years": str(user["age"])})
    stored = snap.vectors("user")[snap.row_of("user", np.array([1]))[0]]
    assert np.abs(vec - stored).max() < 1e-5


@pytest.mark.parametrize("dtype", ["float16", "int8", "binary"])
def test_export_stores_the_configured_vector_dtype(ml, exported, tmp_path, dtype):
    """The same model exported compressed: every vector within its dtype's error of the float32
    export; a binary export carries the ITQ rotation of both towers' vectors."""
    from plexrec.models.vector_codecs import CODECS
    from plexrec.training.export_config import ExportConfig

    parts, result = exported
    base = Snapshot.open(result.snapshot)
    compressed = export_snapshot(parts, ml, tmp_path, run_id="run-1",
                                 export=ExportConfig(vector_dtype=dtype, itq_iterations=5))
    assert compressed.to_json()["dtype"] == dtype and compressed.version != result.version
    assert compressed.to_json()["bytes_per_vector"] == CODECS[dtype].bytes_per_vector(16)
    snap = Snapshot.open(compressed.snapshot)
    assert snap.dtype == dtype and (snap.rotation is not None) == (dtype == "binary")
    codec = CODECS[dtype]
    for entity in ("user", "item"):
        x = np.asarray(base.vectors(entity))
        assert np.array_equal(snap.ids(entity), base.ids(entity))
        err = np.linalg.norm(snap.vectors(entity).astype(np.float64) - x, axis=1)
        assert (err <= codec.max_error(x)).all()
