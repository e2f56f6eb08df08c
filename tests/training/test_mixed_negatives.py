"""Mixed negatives (`[retrieval] corpus_negatives`): corpus items drawn uniformly per batch as
extra negative columns, with the mixture's log-Q correction."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from plexrec.models.two_tower import sampled_softmax_loss
from plexrec.training.config import load_config
from plexrec.training.tasks.retrieval import NEGATIVE_LABEL, MixedNegativeLoader, RetrievalTask
from plexrec.training.two_tower import entity_rows, key_ids
from tests.conftest import CONFIGS
from tests.training.retrieval_helpers import prepared_movielens, train_movielens_two_tower


def test_drawn_negatives_are_extra_columns_and_never_the_rows_own_item():
    torch.manual_seed(0)
    user, item, extra = (F.normalize(torch.randn(n, 4), dim=1) for n in (3, 3, 2))
    ids, extra_ids = torch.tensor([5, 6, 7]), torch.tensor([6, 9])
    log_q = torch.log(torch.linspace(0.05, 0.5, 10))
    got = sampled_softmax_loss(user, item, ids, log_q, 0.1, (extra, extra_ids))
    candidates, candidate_ids = torch.cat([item, extra]), torch.cat([ids, extra_ids])
    total = 0.0
    for i in range(3):
        # Row 0's positive is item 5; row 1's is item 6, which was also drawn (column 3): masked.
        kept = [j for j in range(5) if j == i or int(candidate_ids[j]) != int(ids[i])]
        logits = {j: float(user[i] @ candidates[j]) / 0.1 - float(log_q[candidate_ids[j]])
                  for j in kept}
        total += math.log(sum(math.exp(v) for v in logits.values())) - logits[i]
    assert float(got) == pytest.approx(total / 3, rel=1e-5)
    # Without extra columns it is the in-batch loss.
    assert float(sampled_softmax_loss(user, item, ids, log_q, 0.1, (extra[:0], extra_ids[:0]))) \
        == pytest.approx(float(sampled_softmax_loss(user, item, ids, log_q, 0.1)), rel=1e-6)


@pytest.fixture(scope="module")
def ml(ml_100k, tmp_path_factory):
    return prepared_movielens(ml_100k, tmp_path_factory.mktemp("negatives"))


def _loader(ml, count=32):
    cfg = load_config(CONFIGS / "movielens_two_tower.toml",
                      ["model.deep_mlp=[16]", f"retrieval.corpus_negatives={count}"])
    task = RetrievalTask().configure(cfg, ml)
    split = task.split(cfg, ml)
    loader = task.loader(ml, split.train, batch_size=64, shuffle=True, seed=3, rank=0,
                         world_size=1, drop_last=True)
    return task, loader


def test_loader_appends_uniform_corpus_items_labelled_as_negatives(ml):
    task, loader = _loader(ml)
    assert isinstance(loader, MixedNegativeLoader)
    batches = list(zip(range(3), loader, strict=False))
    items = set(entity_rows(ml, "item_id")[0].tolist())
    for _, batch in batches:
        labels = batch.labels
        assert labels.shape[0] == 96 and int((labels == NEGATIVE_LABEL).sum()) == 32
        assert bool((labels[64:] == NEGATIVE_LABEL).all()) and bool((labels[:64] >= 0).all())
        assert task.batch_size(batch) == 64
        drawn = batch.sparse_features["item_id"].values()[64:].tolist()
        assert set(drawn) <= items
        assert batch.sparse_features.stride() == 96 and batch.dense_features.shape[0] == 96
    # A resumed run draws the same items for the same batch.
    loader.skip(2)
    again = next(iter(loader))
    assert torch.equal(again.sparse_features["item_id"].values(),
                       batches[2][1].sparse_features["item_id"].values())
    # The pairs part is exactly the plain loader's batch.
    pair_ids = key_ids(ml, "item_id")
    assert set(batches[0][1].sparse_features["item_id"].values()[:64].tolist()) \
        <= set(pair_ids.tolist())


def test_log_q_is_the_mixtures_expected_count(ml):
    task, _ = _loader(ml, count=32)
    plain, _ = _loader(ml, count=0)
    n_items = len(entity_rows(ml, "item_id")[0])
    expected = torch.log(64 * plain.log_q.exp() + 32 / n_items)
    assert torch.allclose(task.log_q, expected, atol=1e-6)


def test_training_with_corpus_negatives_runs(ml, tmp_path):
    result, trained = train_movielens_two_tower(
        ml, tmp_path, "retrieval.corpus_negatives=64", "train.max_steps=20",
        "data.batch_size=128", "model.deep_mlp=[16]", "layout.dim=8", "retrieval.final_fit=false")
    assert result["steps"] == 20 and 0 < result["test_recall_at_100"] <= 1
    assert np.isfinite(result["train_examples_per_sec"])
