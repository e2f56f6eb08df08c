import numpy as np
import pytest

from plexrec.features.batching import BatchLoader
from plexrec.features.errors import ConfigError
from plexrec.features.history import HistorySpec, HistoryView, build_histories, known_at
from plexrec.features.training_view import TrainingView, key_ids
from plexrec.models.layouts import specs_from_prepared
from tests.training.retrieval_helpers import prepared_movielens


def bags(values: np.ndarray, offsets: np.ndarray) -> list[list[int]]:
    return [values[offsets[i]:offsets[i + 1]].tolist() for i in range(len(offsets) - 1)]


# Two users; rows 1 and 5 of user 1 share a time rank with rows 3 and 5 of... see each case.
USERS = np.array([1, 1, 2, 1, 2, 1])
ITEMS = np.array([10, 11, 20, 12, 21, 13])
RANK = np.array([0, 1, 1, 2, 3, 2])


def test_per_row_history_is_strictly_earlier_newest_first_and_truncated():
    values, offsets = build_histories(USERS, ITEMS, RANK, np.arange(6), np.arange(6),
                                      before=None, max_length=2)
    # Row 5 has the time of row 3: neither sees the other; both see 11 then 10.
    assert bags(values, offsets) == [[], [10], [], [11, 10], [20], [11, 10]]


def test_history_holds_known_rows_only():
    values, offsets = build_histories(USERS, ITEMS, RANK, np.array([0, 3, 4]), np.arange(6),
                                      before=None, max_length=5)
    assert bags(values, offsets) == [[], [10], [], [10], [], [10]]


def test_history_of_asked_rows_holds_known_rows_up_to_their_bound():
    values, offsets = build_histories(USERS, ITEMS, RANK, np.array([0, 1, 3, 4]),
                                      np.array([5, 4]), before=np.array([-1, -1]), max_length=3)
    assert bags(values, offsets) == [[], [], [], [], [21], [12, 11, 10]]
    # Bounded by a row of rank 2: only the known rows before it.
    values, offsets = build_histories(USERS, ITEMS, RANK, np.array([0, 1, 3, 4]),
                                      np.array([5, 4]), before=np.array([2, 2]), max_length=3)
    assert bags(values, offsets) == [[], [], [], [], [], [11, 10]]


@pytest.fixture(scope="module")
def ml(ml_100k, tmp_path_factory):
    data = prepared_movielens(ml_100k, tmp_path_factory.mktemp("history"))
    return TrainingView(data, np.arange(data.num_rows), ("user_id", "item_id"))


def test_view_adds_a_mean_pooled_user_feature_over_the_item_ids(ml):
    view = HistoryView(ml, HistorySpec("history", "user_id", "item_id", 20), np.arange(1000))
    assert view.sparse_names[-1] == "history" and "history" not in ml.sparse_names
    feature = view.schema.feature("history")
    assert (feature.side, feature.kind, feature.max_length) == ("user", "multi_hot", 20)
    assert view.cardinality("history") == ml.cardinality("item_id")
    assert view.vocab("history") == ml.vocab("item_id")
    spec = {s.name: s for s in specs_from_prepared(view, view.sparse_names)}
    assert spec["history"].pooling == "mean" and spec["user_id"].pooling == "sum"
    batch = BatchLoader(view, np.arange(1000), 1000).batch(np.arange(1000))
    history = batch.sparse_features["history"]
    assert int(history.lengths().max()) <= 20
    # Every history item is an item the same user had in an earlier known row.
    users, items = key_ids(ml, "user_id"), key_ids(ml, "item_id")
    time_ = np.asarray(ml.time)
    for row in (10, 500, 999):
        got = history.values()[history.offsets()[row]:history.offsets()[row + 1]].tolist()
        earlier = [r for r in range(1000) if users[r] == users[row] and time_[r] < time_[row]]
        assert got == [int(items[r]) for r in sorted(earlier, key=lambda r: (time_[r], r))
                       ][::-1][:20]


def test_threshold_positives_keep_labelled_rows_only(ml):
    spec = HistorySpec("history", "user_id", "item_id", 50, positives="threshold")
    user_rows = np.arange(200)
    view = known_at(HistoryView(ml, spec, np.arange(ml.num_rows)), np.arange(ml.num_rows),
                    user_rows)
    labels = np.asarray(ml.labels)
    items, users = key_ids(ml, "item_id"), key_ids(ml, "user_id")
    positives = {(int(u), int(i)) for u, i, y in zip(users, items, labels, strict=True) if y > 0.5}
    values, offsets = view.values("history"), view.offsets("history")
    assert offsets[-1] > 0 and np.all(np.diff(offsets)[200:] == 0)
    for row in range(200):
        assert all((int(users[row]), int(i)) in positives
                   for i in values[offsets[row]:offsets[row + 1]])


def test_data_without_history_is_left_alone_and_a_clash_is_an_error(ml):
    assert known_at(ml, np.arange(3), np.arange(3)) is ml
    with pytest.raises(ConfigError, match="already has a feature"):
        HistoryView(ml, HistorySpec("genres", "user_id", "item_id", 5), np.arange(3))
    with pytest.raises(ConfigError, match="max_length"):
        HistoryView(ml, HistorySpec("history", "user_id", "item_id", 0), np.arange(3))
