"""`[retrieval] matryoshka`: the config, the task's nested loss, and validation, test and MLflow
figures at every trained prefix width."""

import json

import pytest
import torch
from mlflow.tracking import MlflowClient

from plexrec.features.errors import ConfigError
from plexrec.training.config import load_config
from plexrec.training.export import export_run
from plexrec.training.launch import LaunchOptions, run_train
from plexrec.training.tasks.retrieval import CorpusEvaluator, RetrievalTask, retrieval_config
from plexrec.training.two_tower import evaluate_prefixes
from tests.conftest import CONFIGS
from tests.training.retrieval_helpers import prepared_movielens

CONFIG = CONFIGS / "movielens_two_tower.toml"


@pytest.fixture(scope="module")
def ml(ml_100k, tmp_path_factory):
    return prepared_movielens(ml_100k, tmp_path_factory.mktemp("matryoshka"))


def _config(*overrides: str):
    return retrieval_config(load_config(CONFIG, ["model.deep_mlp=[128, 64]", *overrides]))


def test_widths_resolve_to_nested_prefixes_ending_at_the_vector_width():
    assert _config("retrieval.matryoshka=true").matryoshka == (8, 16, 32, 64)
    assert _config("retrieval.matryoshka=[8, 16, 32]").matryoshka == (8, 16, 32, 64)
    assert _config("retrieval.matryoshka=[16, 64]").prefix_widths == (16,)
    assert _config("retrieval.matryoshka=false").matryoshka == ()
    assert _config("retrieval.matryoshka=[]").matryoshka == ()
    rc = _config("retrieval.matryoshka=[32]", "retrieval.matryoshka_weights=[1, 2]")
    assert rc.matryoshka_weights == (1.0, 2.0)
    assert rc.to_dict()["matryoshka"] == [32, 64]


@pytest.mark.parametrize(("value", "message"), [
    ("[8, 24]", r"matryoshka = \[8, 24\]: 24 does not divide the vector width 64"),
    ("[8, 128]", r"matryoshka = \[8, 128\]: 128 is larger than the vector width 64"),
    ("[16, 8]", r"matryoshka = \[16, 8\]: widths must be strictly increasing"),
    ("[8, 8]", r"matryoshka = \[8, 8\]: widths must be strictly increasing"),
    ("[0, 8]", r"matryoshka = \[0, 8\]: each width must be >= 1"),
    ("[8.5]", r"matryoshka = \[8.5\]: widths must be integers"),
    ('"yes"', r"matryoshka = 'yes': give true, false or a list"),
])
def test_bad_widths_are_rejected_naming_key_and_value(value, message):
    with pytest.raises(ConfigError, match=r"movielens_two_tower.toml \[retrieval\]: " + message):
        _config(f"retrieval.matryoshka={value}")


def test_bad_true_and_weights_are_rejected_naming_key_and_value():
    with pytest.raises(ConfigError, match=r"matryoshka = True: .*vector width 20 is not a "
                                          "multiple of 8"):
        retrieval_config(load_config(CONFIG, ["model.deep_mlp=[20]",
                                              "retrieval.matryoshka=true"]))
    with pytest.raises(ConfigError, match=r"matryoshka_weights = \[1.0, 1.0\]: one weight per "
                                          r"matryoshka width \[8, 16, 32, 64\]"):
        _config("retrieval.matryoshka=true", "retrieval.matryoshka_weights=[1, 1]")
    with pytest.raises(ConfigError, match=r"matryoshka_weights\[1\] = 0"):
        _config("retrieval.matryoshka=[32]", "retrieval.matryoshka_weights=[1, 0]")


def test_task_loss_with_only_the_full_width_is_the_plain_loss(ml):
    plain_cfg = load_config(CONFIG, ["model.deep_mlp=[16]", "retrieval.matryoshka=false"])
    nested_cfg = load_config(CONFIG, ["model.deep_mlp=[16]", "retrieval.matryoshka=[16]"])
    plain = RetrievalTask().configure(plain_cfg, ml)
    nested = RetrievalTask().configure(nested_cfg, ml)
    model = plain.build(plain_cfg, ml, "cpu").module
    kw = {"batch_size": 64, "shuffle": True, "seed": 0, "rank": 0, "world_size": 1,
          "drop_last": True}
    train = plain.split(plain_cfg, ml).train
    batch = next(iter(plain.loader(ml, train, **kw)))
    nested.loader(ml, train, **kw)
    out = plain.forward(model, batch)
    assert torch.equal(nested.loss(batch, out), plain.loss(batch, out))
    assert nested.result_info() == {"matryoshka_widths": [16]}
    assert plain.result_info() == {"matryoshka_widths": []}


def test_corpus_evaluator_scores_each_width_as_the_offline_ranking(ml):
    cfg = load_config(CONFIG, ["model.deep_mlp=[16]", "retrieval.matryoshka=true"])
    task = RetrievalTask().configure(cfg, ml)
    model = task.build(cfg, ml, "cpu").module.eval()
    evaluator = task.evaluator()
    assert isinstance(evaluator, CorpusEvaluator) and evaluator.widths == (2, 4, 8)
    loader = task.loader(ml, task.leave_last_out(ml).val_rows, batch_size=512, shuffle=False,
                         seed=0, rank=0, world_size=1, drop_last=False)
    with torch.no_grad():
        for batch in loader:
            evaluator.update(batch, task.forward(model, batch))
    got = evaluator.compute()
    offline = evaluate_prefixes(model, ml, task.leave_last_out(ml), (2, 4, 8, 16),
                                phase="val")
    for width in (2, 4, 8):
        assert got[f"recall_at_50_w{width}"] == pytest.approx(offline[width]["recall@50"],
                                                              abs=1e-6)
        assert got[f"ndcg_at_10_w{width}"] == pytest.approx(offline[width]["ndcg@10"],
                                                            abs=1e-6)
    assert got["recall_at_50"] == pytest.approx(offline[16]["recall@50"], abs=1e-6)
    assert "recall_at_50_w16" not in got
    assert set(task.metric_names) >= {"recall_at_50", "recall_at_50_w2", "ndcg_at_100_w8"}


def test_a_matryoshka_run_reports_every_width_to_the_result_and_mlflow(ml, tmp_path,
                                                                        mlflow_uri):
    evals: list[dict[str, float]] = []

    def record(step: int, metrics: dict[str, float]) -> bool:
        evals.append(metrics)
        return False

    result = run_train(LaunchOptions(
        config=CONFIG, data=str(ml.path), quiet=True, on_eval=record,
        overrides=[f"train.runs_root={tmp_path}", "train.max_steps=20", "train.eval_every=10",
                   "data.batch_size=256", "model.deep_mlp=[16]", "layout.dim=8",
                   "retrieval.matryoshka=true", "retrieval.final_fit=false",
                   "mlflow.log_model=false"]))
    assert len(evals) == 2
    for metrics in evals:
        assert {"recall_at_50", "recall_at_50_w2", "recall_at_50_w4", "recall_at_50_w8",
                "ndcg_at_10_w8"} <= set(metrics)
    assert {"test_recall_at_50_w2", "test_recall_at_50_w8", "test_ndcg_at_100_w4"} \
        <= set(result)
    assert result["matryoshka_widths"] == [2, 4, 8, 16]
    snapshot = export_run(tmp_path / "snapshots", checkpoint=result["run_dir"]).snapshot
    manifest = json.loads((snapshot / "manifest.json").read_text())
    assert manifest["training"]["matryoshka_widths"] == [2, 4, 8, 16]
    client = MlflowClient(tracking_uri=mlflow_uri)
    history = client.get_metric_history(result["run_id"], "val_recall_at_50_w8")
    assert [m.step for m in history] == [10, 20]
    assert client.get_run(result["run_id"]).data.metrics["test_recall_at_50_w4"] == \
        pytest.approx(result["test_recall_at_50_w4"])
