"""The user's history feature (`[retrieval] history`) through training, evaluation and export:
histories never hold held-out rows, and the served tower given a raw history list gives the
stored vector."""

import json

import numpy as np
import pytest

from plexrec.features.readers.movielens import read_users
from plexrec.models.snapshot import Snapshot
from plexrec.serving.client import EmbeddingClient
from plexrec.serving.user_encoder import UserTower
from plexrec.training.export import CONTRACT_FILE, TOWER_FILE, export_snapshot, external_ids
from plexrec.training.tasks.retrieval import CorpusLoader, RetrievalTask
from plexrec.training.two_tower import HISTORY_FEATURE, entity_rows, key_ids
from tests.serving.server_helpers import ServerThread, config, exact_top_k
from tests.training.retrieval_helpers import prepared_movielens, train_movielens_two_tower

HISTORY = 8


@pytest.fixture(scope="module")
def ml(ml_100k, tmp_path_factory):
    return prepared_movielens(ml_100k, tmp_path_factory.mktemp("history-run"))


@pytest.fixture(scope="module")
def trained(ml, tmp_path_factory):
    result, run = train_movielens_two_tower(
        ml, tmp_path_factory.mktemp("runs"), f"retrieval.history={HISTORY}",
        "retrieval.final_fit=false", "retrieval.matryoshka=false", "model.deep_mlp=[32, 16]",
        "layout.dim=8", "data.batch_size=256", "train.max_steps=30")
    return result, run


def test_history_feeds_the_user_tower_and_the_run_reports_its_metrics(trained):
    result, run = trained
    assert run.parts.user_sparse[-1] == HISTORY_FEATURE
    assert HISTORY_FEATURE in run.parts.model.user.embeddings.mean_features
    assert 0 < result["test_recall_at_100"] <= 1


def test_evaluation_histories_hold_no_held_out_row(trained):
    _, run = trained
    data = run.data
    task = RetrievalTask().configure(_cfg(run), data)
    split = task.leave_last_out(data)
    users, items = key_ids(data, "user_id"), key_ids(data, "item_id")
    for phase, allowed in (("val", split.train_rows),
                           ("test", np.concatenate([split.train_rows, split.val_rows]))):
        loader = CorpusLoader(data, task.corpus_phase(data, phase), 4096)
        view = loader.inner.data
        known = {(int(users[r]), int(items[r])) for r in allowed}
        values, offsets = view.values(HISTORY_FEATURE), view.offsets(HISTORY_FEATURE)
        filled = np.flatnonzero(np.diff(offsets))
        assert len(filled) > 900
        for row in filled[::50]:
            bag = values[offsets[row]:offsets[row + 1]]
            assert len(bag) <= HISTORY
            assert all((int(users[row]), int(i)) in known for i in bag)


def test_served_tower_with_a_raw_history_gives_the_stored_vector(ml_100k, trained, tmp_path):
    _, run = trained
    result = export_snapshot(run.parts, run.data, tmp_path, run_id="run-h")
    snap = Snapshot.open(result.snapshot, verify=True)
    contract = json.loads(snap.file(CONTRACT_FILE).read_text())
    spec = contract["sparse"][-1]
    assert (spec["name"], spec["kind"], spec["max_length"]) == (HISTORY_FEATURE, "multi_hot",
                                                                 HISTORY)
    assert spec["vocab"] == run.data.vocab("item_id")

    data = run.data
    users, rows = entity_rows(data, "user_id")
    user = int(users[0])
    raw_user = int(external_ids(data, "user_id", np.array([user]))[0])
    # Every row of the user, newest first: what a server would send as the history.
    mine = np.flatnonzero(key_ids(data, "user_id") == user)
    time_ = np.asarray(data.time)
    newest = mine[np.lexsort((mine, time_[mine]))][::-1][:HISTORY]
    history = external_ids(data, "item_id", key_ids(data, "item_id")[newest])
    info = read_users(ml_100k).loc[str(raw_user)]
    features = {"user_id": str(raw_user), "age": info["age_bucket"], "gender": info["gender"],
                "occupation": info["occupation"], "zip": info["zip3"],
                "age_years": str(info["age"])}
    tower = UserTower(snap.file(TOWER_FILE), snap.file(CONTRACT_FILE))
    stored = snap.vectors("user")[snap.row_of("user", np.array([raw_user]))[0]]
    served = tower({**features, HISTORY_FEATURE: "|".join(str(i) for i in history)})
    assert np.abs(served - stored).max() < 1e-5
    # The history matters: without it the same user gets another vector.
    assert np.abs(tower(features) - stored).max() > 1e-3

    # Served: Retrieve by those raw features ranks as Retrieve by the user id and as the
    # offline exact ranking of the stored vector.
    with ServerThread(config(snap.path)) as srv, EmbeddingClient(srv.target) as client:
        by_features = client.retrieve(
            user_features={**features, HISTORY_FEATURE: "|".join(str(i) for i in history)},
            k=50)
        by_id = client.retrieve(user_id=raw_user, k=50)
    assert by_features.item_ids.tolist() == by_id.item_ids.tolist() \
        == exact_top_k(snap, stored, 50).tolist()


def _cfg(run):
    from plexrec.training.config import parse_config
    from plexrec.training.trainer import RunSpec

    spec = RunSpec.load(run.run_dir / "spec.json")
    return parse_config(spec.config, spec.source)
