"""The main job, smaller: the same stages as `make demo`, each stage's output checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import redis

from plexrec.cli.pipeline import DEMO_ALIAS, DEMO_MODELS
from plexrec.models.snapshot import Snapshot
from plexrec.serving import redis_keys
from tests.conftest import REPO


@pytest.mark.slow
def test_demo_smoke_runs_every_stage(tmp_path: Path, redis_url: str, mlflow_uri: str) -> None:
    work = tmp_path / "demo"
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_uri}
    proc = subprocess.run(
        [sys.executable, "-m", "plexrec.cli.main", "demo", "--smoke", "--quiet", "--workdir", str(work),
         "--redis", redis_url], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "CTR test AUC" in proc.stderr and "mlflow ui" in proc.stderr

    # data
    assert (work / "criteo-20000.tsv").stat().st_size > 0
    assert (work / "interactions-20000" / "interactions.csv").stat().st_size > 0
    # training: both runs tracked in MLflow with their figures
    ctr, tt = result["ctr"], result["two_tower"]
    assert 0.5 < ctr["test_auc"] <= 1.0
    assert 1 <= ctr["first_order_epochs_run"] <= 2  # the shipped term, capped by the smoke run
    assert ctr["embedding_params"] > 0 and ctr["embedding_bytes"] == 4 * ctr["embedding_params"]
    client = mlflow.MlflowClient(tracking_uri=mlflow_uri)
    run = client.get_run(ctr["run_id"])
    assert run.data.metrics["test_auc"] == pytest.approx(ctr["test_auc"])
    assert client.get_run(tt["run_id"]).info.status == "FINISHED"
    # both models registered, each run's version under the champion alias, loadable from it
    for name, trained in zip(DEMO_MODELS, (ctr, tt), strict=True):
        version = client.get_model_version_by_alias(name, DEMO_ALIAS)
        assert version.run_id == trained["run_id"]
    mlflow.set_tracking_uri(mlflow_uri)
    assert mlflow.pytorch.load_model(f"models:/{DEMO_MODELS[0]}@{DEMO_ALIAS}") is not None
    # the run carries its source; its experiment is filed as model training
    tags = run.data.tags
    assert tags["mlflow.source.name"] == "plexrec train" and "mlflow.source.git.commit" in tags
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    # every run in its own directory under the work folder
    assert Path(ctr["run_dir"]).parent.parent == work / "runs"
    assert Path(tt["run_dir"]).parent.parent == work / "runs"
    assert 0.0 < tt["test_recall_at_100"] <= 1.0
    # export
    snap = Snapshot.open(result["snapshot"]["snapshot"])
    assert snap.version == result["snapshot"]["version"]
    assert len(snap.ids("user")) == result["snapshot"]["users"] > 0
    # every item of the generator's catalogue, cold ones from the item tower on their features
    catalog = next(work.glob("interactions-*/catalog/items.csv"))
    assert len(snap.ids("item")) == result["snapshot"]["items"] \
        == len(catalog.read_text().splitlines()) - 1
    assert snap.manifest["training"]["catalog_only_items"] >= 0
    # publish: the pointer names the exported version and its vectors are all there
    r = redis.Redis.from_url(redis_url)
    assert redis_keys.read_current(r, "default") == snap.version
    manifest = redis_keys.read_manifest(r, "default", snap.version)
    for entity in ("user", "item"):
        stored = sum(r.hlen(redis_keys.partition_key("default", snap.version, p, entity))
                     for p in range(manifest["partitions"]))
        assert stored == len(snap.ids(entity))
    # serve + query
    q = result["queries"]
    assert q["server_version"] == snap.version
    assert len(q["sample_items"]) == 10
    user_vec = snap.vectors("user")[snap.row_of("user", np.array([q["sample_user"]]))[0]]
    exact = np.argsort(-(snap.vectors("item") @ user_vec), kind="stable")[:10]
    assert q["sample_items"] == np.asarray(snap.ids("item"))[exact].tolist()
    assert 0 < q["embeddings_p50_ms"] <= q["embeddings_p99_ms"]
