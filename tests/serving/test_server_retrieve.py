"""Retrieve: exact top-k on small corpora (by user id, by vector, with exclusions), the FAISS
path above the threshold, and unseen users encoded from raw features by the exported tower."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

from plexrec.features.hashing import hash_strings
from plexrec.serving.client import EmbeddingClient, ServingError
from plexrec.serving.index import IndexConfig
from tests.serving.server_helpers import ServerThread, config, exact_top_k, make_snapshot
from tests.serving.tower_helpers import tower_files

WIDTH = 8


def test_retrieval_equals_exact_top_k(tmp_path: Path) -> None:
    snap = make_snapshot(tmp_path, items=400, width=WIDTH, seed=10)
    users = np.asarray(snap.ids("user"))
    with ServerThread(config(snap.path)) as srv, EmbeddingClient(srv.target) as client:
        for row in (0, 7, 49):
            r = client.retrieve(user_id=int(users[row]), k=25)
            want = exact_top_k(snap, snap.vectors("user")[row], 25)
            assert r.item_ids.tolist() == want.tolist()
            items = np.asarray(snap.vectors("item"))[snap.row_of("item", r.item_ids)]
            np.testing.assert_allclose(r.scores, items @ snap.vectors("user")[row], rtol=1e-5)
        exclude = tuple(exact_top_k(snap, snap.vectors("user")[3], 5)[::2].tolist())
        r = client.retrieve(user_id=int(users[3]), k=10, exclude=exclude)
        assert r.item_ids.tolist() == exact_top_k(snap, snap.vectors("user")[3], 10,
                                                  exclude).tolist()
        assert not set(exclude) & set(r.item_ids.tolist())
        query = np.linspace(-1, 1, WIDTH).astype(np.float32)
        r = client.retrieve(vector=query, k=400)
        assert r.item_ids.tolist() == exact_top_k(snap, query, 400).tolist()


def test_faiss_path_recall_at_least_095(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(200, 32))
    items = centers[rng.integers(0, 200, 8000)] + 0.5 * rng.normal(size=(8000, 32))
    users = centers[rng.integers(0, 200, 60)] + 0.5 * rng.normal(size=(60, 32))
    from plexrec.models.snapshot import Snapshot, write_snapshot

    snap = Snapshot.open(write_snapshot(tmp_path, users=(np.arange(60), users),
                                        items=(np.arange(8000) + 10_000, items), run_id="f"))
    cfg = config(snap.path, index=IndexConfig(exact_threshold=1000))
    with ServerThread(cfg) as srv, EmbeddingClient(srv.target) as client:
        info = client.info()
        assert info["index_kind"] in ("faiss-ivf", "faiss-pq")  # what `auto` picks
        recalls = []
        for u in range(60):
            got = client.retrieve(user_id=u, k=100).item_ids
            want = exact_top_k(snap, snap.vectors("user")[u], 100)
            recalls.append(len(np.intersect1d(got, want)) / 100)
    assert np.mean(recalls) >= 0.95
    assert info["metrics"]["index_recall_at_100"] >= 0.95


def test_unseen_user_features_go_through_the_tower(tmp_path: Path) -> None:
    files = tower_files(tmp_path, WIDTH)
    snap = make_snapshot(tmp_path / "snap", width=WIDTH, seed=11, extra_files=files)
    tags = (hash_strings(["x", "y"]) % 50).tolist()
    sparse = torch.tensor([[2, tags[0], tags[1], -1]])
    dense = torch.tensor([[float(np.log1p(3.0))]])
    expected = torch.jit.load(str(files["user_tower.pt"]))(sparse, dense)[0].detach().numpy()
    with ServerThread(config(snap.path)) as srv, EmbeddingClient(srv.target) as client:
        assert client.info()["has_user_tower"]
        r = client.retrieve(user_features={"country": "de", "tags": "x|y", "age": "3"}, k=20)
        assert r.item_ids.tolist() == exact_top_k(snap, expected, 20).tolist()
        with pytest.raises(ServingError) as err:
            client.retrieve(user_features={"contry": "de"}, k=5)
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "contry" in err.value.details


def test_user_features_without_tower_is_invalid_argument(tmp_path: Path) -> None:
    snap = make_snapshot(tmp_path, width=WIDTH, seed=12)
    with (ServerThread(config(snap.path)) as srv, EmbeddingClient(srv.target) as client,
          pytest.raises(ServingError) as err):
        client.retrieve(user_features={"age": "3"}, k=5)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "no user tower" in err.value.details and snap.version in err.value.details
