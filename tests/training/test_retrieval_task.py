import json

import numpy as np
import pytest
import torch

from plexrec.features.errors import ConfigError
from plexrec.models.layouts import LayoutConfig
from plexrec.training.baselines import MFConfig, mf_scorer, popularity_scorer, train_mf
from plexrec.training.config import load_config
from plexrec.training.retrieval_metrics import evaluate_topk, seen_before_test
from plexrec.training.tasks.retrieval import (
    CorpusBatch,
    CorpusEvaluator,
    CorpusLoader,
    InBatchEvaluator,
    RetrievalTask,
    retrieval_config,
)
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
                                                "layout.dim=16", "train.patience=0",
                                                "retrieval.final_fit=false")
    parts = trained.parts
    assert parts.user_sparse == ["user_id", "age", "gender", "occupation", "zip", "history"]
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
    # Early stopping followed the full-corpus validation recall@50 of that checkpoint.
    val = evaluate_two_tower(parts.model, trained.data, split, ks=(50,), phase="val")
    assert result["best_val_recall_at_50"] == pytest.approx(val["recall@50"], abs=1e-6)
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
    cfg = load_config(CONFIGS / "movielens_two_tower.toml",
                      ["model.deep_mlp=[16]", 'retrieval.positives="threshold"'])
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


def _sharded_eval_by_hand(task, model, ml, phase, world_size):
    """The trainer's evaluation loop, one simulated rank at a time, merged as the gather does."""
    merged = CorpusEvaluator(task.config.dim)
    for rank in range(world_size):
        rows = {"val": task.leave_last_out(ml).val_rows, "test": task.leave_last_out(ml).test_rows}
        loader = task.loader(ml, rows[phase], batch_size=300, shuffle=False, seed=0, rank=rank,
                             world_size=world_size, drop_last=False)
        assert isinstance(loader, CorpusLoader)
        for batch in loader:
            assert isinstance(batch, CorpusBatch)
            merged.update(batch, task.forward(model, batch).detach())
    return merged.compute()


@pytest.mark.parametrize("history", [0, 10])
@pytest.mark.parametrize("phase", ["val", "test"])
def test_full_corpus_evaluator_equals_the_offline_ranking(ml, phase, history):
    """The evaluator that drives early stopping ranks every item for every user, exactly as the
    offline (and served) ranking does: same vectors, same mask, same figures, whatever the
    number of ranks the rows are spread over; with a user history too (each phase's own)."""
    cfg = load_config(CONFIGS / "movielens_two_tower.toml",
                      ["model.deep_mlp=[16]", f"retrieval.history={history}"])
    task = RetrievalTask().configure(cfg, ml)
    data = task.data_view(ml, task.split(cfg, ml))
    assert (data is ml) == (history == 0)
    model = task.build(cfg, data, "cpu").module.eval()
    offline = evaluate_two_tower(model, data, task.leave_last_out(data), ks=(10, 50, 100),
                                 phase=phase)
    for world_size in (1, 2):
        got = _sharded_eval_by_hand(task, model, data, phase, world_size)
        assert got["users"] == offline["users"] > 900
        for k in ("recall@10", "recall@50", "ndcg@10", "ndcg@100"):
            assert got[k.replace("@", "_at_")] == pytest.approx(offline[k], abs=1e-6)
    assert task.primary_metric == "recall_at_50"


def test_corpus_loader_gives_every_rank_the_same_batches(ml):
    cfg = load_config(CONFIGS / "movielens_two_tower.toml", ["model.deep_mlp=[16]"])
    task = RetrievalTask().configure(cfg, ml)
    phase = task.corpus_phase(ml, "val")
    loaders = [CorpusLoader(ml, phase, 256, rank, 2) for rank in range(2)]
    assert len(loaders[0]) == len(loaders[1]) > 0
    sizes = [[len(b.rows) for b in loader] for loader in loaders]
    assert sizes[0] == sizes[1]
    covered = np.union1d(loaders[0].rows, loaders[1].rows)
    assert np.array_equal(covered, phase.rows)
    # Users with validation targets and every item have their vector row.
    assert set(phase.user_of_row[phase.rows][phase.user_of_row[phase.rows] >= 0].tolist()) \
        == set(phase.targets)
    assert (phase.item_of_row >= 0).sum() == ml.cardinality("item_id") - 1


def test_positives_all_trains_on_every_interaction(ml):
    split_cfg = ["model.deep_mlp=[16]"]
    threshold = RetrievalTask().configure(load_config(
        CONFIGS / "movielens_two_tower.toml", [*split_cfg, 'retrieval.positives="threshold"']),
        ml)
    every = RetrievalTask().configure(load_config(
        CONFIGS / "movielens_two_tower.toml", [*split_cfg, 'retrieval.positives="all"']), ml)
    train = threshold.split(None, ml).train
    labels = np.asarray(ml.labels)
    kw = {"batch_size": 64, "shuffle": True, "seed": 0, "rank": 0, "world_size": 1,
          "drop_last": True}
    assert np.array_equal(np.sort(threshold.loader(ml, train, **kw).rows),
                          train[labels[train] > 0.5])
    all_rows = every.loader(ml, train, **kw).rows
    assert np.array_equal(np.sort(all_rows), train) and (labels[all_rows] < 0.5).any()
    # log-Q follows the rows trained on; the split (the targets) does not change.
    assert threshold.log_q is not None and every.log_q is not None
    assert not torch.equal(threshold.log_q, every.log_q)
    assert np.array_equal(every.split(None, ml).test, threshold.split(None, ml).test)
    half = RetrievalTask().configure(load_config(
        CONFIGS / "movielens_two_tower.toml",
        [*split_cfg, 'retrieval.positives="all"', "retrieval.log_q_weight=0.5"]), ml)
    half.loader(ml, train, **kw)
    assert half.log_q is not None and torch.allclose(half.log_q, every.log_q * 0.5)


def test_retrieval_options_are_validated_naming_key_and_value():
    path = CONFIGS / "movielens_two_tower.toml"
    with pytest.raises(ConfigError, match=r"movielens_two_tower.toml \[retrieval\].*positives"
                                          r".*'some'"):
        retrieval_config(load_config(path, ['retrieval.positives="some"']))
    with pytest.raises(ConfigError, match=r"\[retrieval\].*monitor.*'precision@10'"):
        retrieval_config(load_config(path, ['retrieval.monitor="precision@10"']))
    with pytest.raises(ConfigError, match="monitor 'recall@20': its K is not in ks"):
        retrieval_config(load_config(path, ['retrieval.monitor="recall@20"']))
    rc = retrieval_config(load_config(path, ['retrieval.monitor="ndcg@10"',
                                             'retrieval.positives="threshold"']))
    assert rc.monitor == "ndcg@10" and rc.positives == "threshold"


@pytest.mark.slow
def test_two_process_run_stops_on_the_full_corpus_validation(ml, tmp_path):
    """At world size 2 the evaluator's gather is a real collective; its figure is what the
    unsharded best checkpoint scores on the validation positives."""
    from plexrec.training.launch import LaunchOptions, run_train

    result = run_train(LaunchOptions(
        config=CONFIGS / "movielens_two_tower.toml", data=str(ml.path), quiet=True, nproc=2,
        overrides=["mlflow.enabled=false", f"train.runs_root={tmp_path}", "train.max_steps=40",
                   "train.eval_every=20", "data.batch_size=128", "model.deep_mlp=[32, 16]",
                   "layout.dim=8", "retrieval.final_fit=false"]))
    assert result["world_size"] == 2 and result["steps"] == 40
    from plexrec.training.export import load_trained

    trained = load_trained(result["run_dir"])
    split = make_split(ml, holdout=5, val_holdout=5)
    val = evaluate_two_tower(trained.parts.model, trained.data, split, ks=(50,), phase="val")
    assert result["best_val_recall_at_50"] == pytest.approx(val["recall@50"], abs=1e-6)
    test = evaluate_two_tower(trained.parts.model, trained.data, split, ks=(10,))
    assert result["test_recall_at_10"] == pytest.approx(test["recall@10"], abs=1e-6)


def test_final_fit_retrains_on_every_row_and_is_what_export_holds(ml, tmp_path):
    """The held-out run reports its test figures; the final fit then trains on every row for
    the best checkpoint's steps, and loading (exporting) the run gives that model, labelled as
    such in the manifest, with the held-out metrics."""
    from plexrec.models.snapshot import Snapshot
    from plexrec.training.checkpoint import model_checkpoint
    from plexrec.training.export import export_snapshot, load_trained
    from plexrec.training.final_fit import FINAL_DIR

    result, trained = train_movielens_two_tower(
        ml, tmp_path, "train.max_steps=30", "train.eval_every=10", "data.batch_size=256",
        "model.deep_mlp=[16]", "layout.dim=8")
    fit = result["final_fit"]
    assert fit["steps"] == result["best_step"] > 0
    assert fit["rows"] == ml.num_rows and fit["run_dir"] == str(trained.run_dir / FINAL_DIR)
    assert json.loads((trained.run_dir / "result.json").read_text())["final_fit"] == fit
    assert trained.model == "final_fit"
    assert trained.checkpoint.is_relative_to(trained.run_dir / FINAL_DIR)
    # The held-out figures are the best validation checkpoint's, not the final fit's.
    held_out = load_trained(model_checkpoint(trained.run_dir / "checkpoints"))
    assert held_out.model == "best_validation"
    split = make_split(ml, holdout=5, val_holdout=5)
    test = evaluate_two_tower(held_out.parts.model, held_out.data, split, ks=(100,))
    assert result["test_recall_at_100"] == pytest.approx(test["recall@100"], abs=1e-6)
    assert trained.metrics["test_recall_at_100"] == result["test_recall_at_100"]
    snap = Snapshot.open(export_snapshot(trained.parts, trained.data, tmp_path / "snap",
                                         run_id="r", metrics=trained.metrics,
                                         training=trained.provenance()).snapshot)
    assert snap.manifest["training"]["model"] == "final_fit"
    assert snap.manifest["training"]["checkpoint_step"] == fit["steps"]
    item = held_out.parts.model.item.mlp[0].weight
    assert not torch.allclose(trained.parts.model.item.mlp[0].weight, item)
