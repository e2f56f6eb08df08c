import numpy as np
import pytest
import torch

from plexrec.features.errors import ConfigError
from plexrec.models.layouts import LayoutConfig
from plexrec.training.baselines import MFConfig, mf_scorer, popularity_scorer, train_mf
from plexrec.training.config import load_config
from plexrec.training.retrieval_metrics import evaluate_topk, seen_before_test
from plexrec.training.tasks.retrieval import InBatchEvaluator, RetrievalTask, retrieval_config
from plexrec.training.two_tower import (
    RetrievalConfig,
    build_two_tower,
    entity_rows,
    evaluate_two_tower,
    key_ids,
    make_split,
    positive_rows,
)
from tests.conftest import CONFIGS
from tests.training.retrieval_helpers import prepared_movielens, train_movielens_two_tower


@pytest.fixture(scope="module")
def ml(ml_100k, tmp_path_factory):
    return prepared_movielens(ml_100k, tmp_path_factory.mktemp("retrieval"))


def test_two_tower_trains_under_the_trainer_and_beats_chance(ml, tmp_path):
    result, trained = train_movielens_two_tower(ml, tmp_path, "train.max_steps=80",
                                                "data.batch_size=256", "model.deep_mlp=[64, 32]",
                                                "layout.dim=16", "train.patience=0")
    parts = trained.parts
    assert parts.user_sparse == ["user_id", "age", "gender", "occupation", "zip"]
    assert parts.item_sparse == ["item_id", "genres", "release_year"]
    assert [ml.dense_names[i] for i in parts.user_dense] == ["age_years"]
    assert result["steps"] == 80
    assert trained.checkpoint == trained.run_dir / "checkpoints" / "best" / \
        f"step-{result['best_step']}"
    split = make_split(ml, holdout=5, val_holdout=5)
    metrics = evaluate_two_tower(parts.model, trained.data, split, ks=(10, 100))
    assert metrics["users"] == len(split.test_pos) > 900
    assert 0 <= metrics["recall@10"] <= metrics["recall@100"] <= 1
    # The run's own test figures are these, from the same checkpoint and split.
    assert result["test_recall_at_100"] == pytest.approx(metrics["recall@100"], abs=1e-6)
    # Chance level for recall@100 over ~1680 items is about 0.06.
    assert metrics["recall@100"] > 0.2


def test_held_out_rows_never_reach_training(ml):
    split = make_split(ml, holdout=3)
    users, items = key_ids(ml, "user_id"), key_ids(ml, "item_id")
    assert not set(split.train_rows) & set(split.test_rows)
    assert len(split.train_rows) + len(split.test_rows) == ml.num_rows
    held = set(zip(users[split.test_rows].tolist(), items[split.test_rows].tolist(), strict=True))
    trained = set(zip(users[positive_rows(ml, split.train_rows)].tolist(),
                      items[positive_rows(ml, split.train_rows)].tolist(), strict=True))
    assert not held & trained
    t = np.asarray(ml.time)
    for u in list(split.test_pos)[:50]:
        train_t = t[split.train_rows][(users[split.train_rows] == u)
                                      & (np.asarray(ml.labels)[split.train_rows] > 0.5)]
        assert train_t.max() <= t[split.test_rows][users[split.test_rows] == u].min()


def test_baselines_rank_with_the_same_protocol(ml):
    split = make_split(ml, holdout=5)
    pos = positive_rows(ml, split.train_rows)
    users, items = key_ids(ml, "user_id")[pos], key_ids(ml, "item_id")[pos]
    candidates = np.arange(1, ml.cardinality("item_id"))
    seen = seen_before_test(split)
    pop = evaluate_topk(popularity_scorer(items, candidates), split.test_pos, seen, candidates)
    model, history = train_mf(users, items, ml.cardinality("user_id"),
                              ml.cardinality("item_id"), MFConfig(dim=16, epochs=2))
    assert history[-1] < history[0]
    mf = evaluate_topk(mf_scorer(model, candidates), split.test_pos, seen, candidates)
    assert 0.1 < pop["recall@50"] < 0.5
    assert 0 <= mf["recall@50"] <= 1


def test_entity_rows_pick_each_ids_latest_row(ml):
    ids, rows = entity_rows(ml, "user_id")
    assert len(ids) == ml.cardinality("user_id") - 1 == 943
    users = key_ids(ml, "user_id")
    assert (users[rows] == ids).all()
    t = np.asarray(ml.time)
    u = int(ids[0])
    assert t[rows[0]] == t[users == u].max()
    assert len(set(rows.tolist())) == len(rows)


def test_run_config_maps_onto_retrieval_settings():
    cfg = load_config(CONFIGS / "movielens_two_tower.toml",
                      ["model.deep_mlp=[32, 16]", "train.max_steps=7",
                       "retrieval.temperature=0.2", "retrieval.holdout=2"])
    rc = retrieval_config(cfg)
    assert rc.dim == 16 and rc.hidden == (32,)
    assert rc.max_steps == 7 and rc.batch_size == cfg.data.batch_size
    assert rc.temperature == 0.2 and rc.holdout == 2 and rc.log_q
    with pytest.raises(ConfigError, match="tempreature"):
        retrieval_config(load_config(CONFIGS / "movielens_two_tower.toml",
                                     ["retrieval.tempreature=0.2"]))
    with pytest.raises(ConfigError, match="deep_mlp"):
        retrieval_config(load_config(CONFIGS / "movielens_two_tower.toml",
                                     ["model.deep_mlp=[]"]))
    with pytest.raises(ConfigError, match="temperature"):
        RetrievalConfig.from_dict({"temperature": 0})
    with pytest.raises(ConfigError, match="nope: unknown key"):
        RetrievalConfig.from_dict({"nope": 1})
    with pytest.raises(ConfigError, match=r"ks\[1\] = 0"):
        RetrievalConfig.from_dict({"ks": [10, 0]})
    with pytest.raises(ConfigError, match="temperature = '0.2'"):
        RetrievalConfig.from_dict({"temperature": "0.2"})


def test_task_protocol_forward_loss_and_in_batch_evaluator(ml):
    cfg = load_config(CONFIGS / "movielens_two_tower.toml", ["model.deep_mlp=[16]"])
    task = RetrievalTask().configure(cfg, ml)
    task.validate(cfg, ml)
    built = task.build(cfg, ml, "cpu")
    assert built.embedding_params == sum(r.params for r in built.report)
    assert any(r.name.startswith("user.") for r in built.report)
    splits = task.split(cfg, ml)
    loader = task.loader(ml, splits.train, batch_size=64, shuffle=True, seed=0, rank=0,
                         world_size=1, drop_last=True)
    batch = next(iter(loader))
    assert bool((batch.labels == 1).all())
    out = task.forward(built.module, batch)
    assert out.shape == (64, 32)
    loss = task.loss(batch, out)
    loss.backward()
    assert torch.isfinite(loss)
    ev = InBatchEvaluator(16, "item_id", ks=(1, 64))
    ev.update(batch, out.detach())
    got = ev.compute()
    assert got["examples"] == 64 and got["inbatch_recall_at_64"] == 1.0
    assert 0 <= got["inbatch_recall_at_1"] <= 1
    final = task.final_metrics(built.module, ml, cfg)
    assert set(final) >= {"recall_at_10", "ndcg_at_100"}


@pytest.mark.parametrize("budget", [25_000, "100KB"])
def test_an_embedding_budget_is_the_total_over_both_towers(ml, budget):
    parts = build_two_tower(ml, LayoutConfig(kind="unified", dim=16, budget=budget),
                            RetrievalConfig(dim=8, hidden=()))
    limit = 25_000 if isinstance(budget, int) else 100 * 1024 // 4
    assert limit * 0.9 < parts.embedding_params <= limit
    assert parts.user_layout.total_params < parts.item_layout.total_params
