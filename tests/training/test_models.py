"""DLRM and DCN-v2 over real layouts on a small synthetic Criteo cache, and a short in-process
(single rank) run through the launcher: checkpoints kept, unsharded weights reloadable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from plexrec.features.batching import BatchLoader
from plexrec.features.cache import PreparedData
from plexrec.features.errors import ConfigError
from plexrec.features.prepare import prepare
from plexrec.features.schema import load_schema
from plexrec.features.synth import write_criteo
from plexrec.models.first_order import WIDTH
from plexrec.models.layouts import LayoutConfig, build_layout, specs_from_prepared
from plexrec.models.ranking import build_ranking_model
from plexrec.training.config import ModelConfig
from tests.conftest import CONFIGS

# The shipped synthetic config fits a first-order term first; these runs test the model without it
# (the term's own tests switch it on).
WITHOUT_TERM = ("model.first_order=false", "train.first_order_epochs=0")


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("synth")
    raw = root / "criteo.tsv"
    write_criteo(raw, rows=3000, seed=1, progress=False)
    prepared = prepare(load_schema(CONFIGS / "criteo.toml"), raw, root / "prepared",
                       progress=False).out_dir
    return raw, Path(prepared)


@pytest.mark.parametrize(("kind", "structure"), [("dlrm", "stacked"), ("dcn", "stacked"),
                                                ("dcn", "parallel"), ("autoint", "stacked")])
@pytest.mark.parametrize("layout_kind", ["per_feature", "mixed_dim"])
def test_ranking_models_give_one_logit_per_row(synth: tuple[Path, Path], kind: str,
                                               structure: str, layout_kind: str) -> None:
    data = PreparedData.open(synth[1])
    layout = build_layout(specs_from_prepared(data), LayoutConfig(kind=layout_kind, dim=8))
    model = build_ranking_model(kind, layout.module(), layout.feature_names, layout.dim,
                                len(data.dense_names),
                                ModelConfig(bottom_mlp=[16], top_mlp=[16], deep_mlp=[16],
                                            dcn_structure=structure))
    batch = next(iter(BatchLoader(data, None, 32)))
    logits = model(batch.dense_features, batch.sparse_features)
    assert logits.shape == (32,) and torch.isfinite(logits).all()
    torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.labels).backward()
    ebc_grad = next(model.layout.ebc.parameters()).grad
    assert ebc_grad is not None and ebc_grad.abs().sum() > 0


def test_dcn_parallel_head_reads_the_cross_and_the_deep_outputs(
        synth: tuple[Path, Path]) -> None:
    data = PreparedData.open(synth[1])
    layout = build_layout(specs_from_prepared(data), LayoutConfig(dim=4))
    width = len(data.dense_names) + 4 * len(layout.feature_names)
    models = {s: build_ranking_model("dcn", layout.module(), layout.feature_names, 4,
                                     len(data.dense_names),
                                     ModelConfig(deep_mlp=[8], dcn_structure=s))
              for s in ("stacked", "parallel")}
    assert models["stacked"].head.in_features == 8
    assert models["parallel"].head.in_features == 8 + width


def test_autoint_heads_must_divide_the_width(synth: tuple[Path, Path]) -> None:
    data = PreparedData.open(synth[1])
    layout = build_layout(specs_from_prepared(data), LayoutConfig(dim=6))
    with pytest.raises(ConfigError, match="attention_heads: 4 does not divide .* width 6"):
        build_ranking_model("autoint", layout.module(), layout.feature_names, 6, 13,
                            ModelConfig(attention_heads=4))


def test_unknown_ranking_model_is_a_config_error(synth: tuple[Path, Path]) -> None:
    data = PreparedData.open(synth[1])
    layout = build_layout(specs_from_prepared(data), LayoutConfig(dim=4))
    with pytest.raises(ConfigError, match="wide_deep"):
        build_ranking_model("wide_deep", layout.module(), layout.feature_names, 4, 13,
                            ModelConfig())


def test_ctr_single_process_run_keeps_last_checkpoints(synth: tuple[Path, Path],
                                                       tmp_path: Path) -> None:
    from plexrec.training.checkpoint import list_checkpoints, load_unsharded
    from plexrec.training.config import parse_config
    from plexrec.training.launch import LaunchOptions, run_train
    from plexrec.training.tasks.ctr import CtrTask
    from plexrec.training.trainer import RunSpec, training_view

    run_dir = tmp_path / "run"
    result = run_train(LaunchOptions(
        config=CONFIGS / "synthetic_dlrm.toml", data=str(synth[1]), layout="mixed_dim",
        embedding_budget="200000", quiet=True,
        overrides=[f"train.run_dir={run_dir}", "mlflow.enabled=false", "data.batch_size=128",
                   "train.max_steps=12", "train.checkpoint_every=4", "train.eval_every=6",
                   "model.kind=\"dcn\"", *WITHOUT_TERM]))
    assert result["steps"] == 12 and result["world_size"] == 1
    assert result["embedding_params"] <= 200_000
    assert 0.0 < result["test_auc"] < 1.0 and result["train_examples_per_sec"] > 0
    kept = [p.name for p in list_checkpoints(run_dir / "checkpoints")]
    assert kept == ["step-8", "step-12"]

    spec = RunSpec.load(run_dir / "spec.json")
    cfg = parse_config(spec.config, spec.source)
    task = CtrTask().configure(cfg, PreparedData.open(synth[1]))
    data, _ = training_view(cfg, task, PreparedData.open(synth[1]))
    fresh = task.build(cfg, data, "cpu").module
    key = next(k for k in fresh.state_dict() if k.startswith("layout.ebc."))
    before = fresh.state_dict()[key].clone()
    load_unsharded(run_dir / "checkpoints" / "step-12", fresh)
    assert not torch.equal(before, fresh.state_dict()[key])


def _train_and_load(synth: tuple[Path, Path], run_dir: Path, steps: int, *extra: str
                    ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A short seeded synthetic run and its unsharded weights after the last step."""
    from plexrec.training.checkpoint import load_unsharded
    from plexrec.training.config import parse_config
    from plexrec.training.launch import LaunchOptions, run_train
    from plexrec.training.tasks.ctr import CtrTask
    from plexrec.training.trainer import RunSpec, training_view

    result = run_train(LaunchOptions(
        config=CONFIGS / "synthetic_dlrm.toml", data=str(synth[1]), quiet=True,
        overrides=[f"train.run_dir={run_dir}", "mlflow.enabled=false", "data.batch_size=128",
                   f"train.max_steps={steps}", *WITHOUT_TERM, *extra]))
    spec = RunSpec.load(run_dir / "spec.json")
    cfg = parse_config(spec.config, spec.source)
    task = CtrTask().configure(cfg, PreparedData.open(synth[1]))
    data, _ = training_view(cfg, task, PreparedData.open(synth[1]))
    model = task.build(cfg, data, "cpu").module
    load_unsharded(run_dir / "checkpoints" / f"step-{steps}", model)
    return result, model.state_dict()


def _trained_embedding_norm(synth: tuple[Path, Path], run_dir: Path, *extra: str) -> float:
    """Frobenius norm of every embedding table after a short seeded run."""
    _, state = _train_and_load(synth, run_dir, 20, "optim.embedding_lr=0.5", *extra)
    return float(sum(v.float().norm() ** 2 for k, v in state.items()
                     if k.startswith("layout.ebc.")) ** 0.5)


def test_embedding_l2_shrinks_the_looked_up_rows(synth: tuple[Path, Path],
                                                           tmp_path: Path) -> None:
    plain = _trained_embedding_norm(synth, tmp_path / "plain")
    decayed = _trained_embedding_norm(synth, tmp_path / "decayed",
                                      "optim.embedding_l2=0.5")
    assert decayed < 0.97 * plain


def _first_order_weights(synth: tuple[Path, Path], run_dir: Path, *extra: str
                         ) -> dict[str, torch.Tensor]:
    """The unsharded weights of a short seeded run with the first-order term."""
    result, state = _train_and_load(synth, run_dir, 10, "model.first_order=true",
                                    "optim.decay=\"cosine\"", *extra)
    assert 0.5 < result["test_auc"] < 1.0
    return state


def test_first_order_tables_train_at_their_own_rate(synth: tuple[Path, Path],
                                                    tmp_path: Path) -> None:
    slow = _first_order_weights(synth, tmp_path / "slow", "optim.first_order_lr=1e-6")
    fast = _first_order_weights(synth, tmp_path / "fast", "optim.first_order_lr=0.1")

    def largest(state: dict[str, torch.Tensor], prefix: str) -> float:
        return max(float(v.abs().max()) for k, v in state.items() if k.startswith(prefix))

    # Row-wise Adagrad moves a row by about lr per step: 10 steps from zero.
    wide = "first_order.ebc."
    assert 0 < largest(slow, wide) < 1e-4 and largest(fast, wide) > 1e-2
    # The layout's tables keep the shared embedding rate either way.
    deep = "model.layout.ebc."
    assert largest(slow, deep) == pytest.approx(largest(fast, deep), rel=0.2)


def test_first_order_tables_are_planned_and_counted(synth: tuple[Path, Path]) -> None:
    from plexrec.training.config import parse_config
    from plexrec.training.tasks.ctr import CtrTask

    data = PreparedData.open(synth[1])
    cfg = parse_config({"model": {"first_order": True}, "layout": {"dim": 8}})
    built = CtrTask().configure(cfg, data).build(cfg, data, "cpu")
    wide = [n for n in built.table_names if n.startswith("w_")]
    assert wide == [f"w_{n}" for n in data.sparse_names]
    plain_cfg = parse_config({"layout": {"dim": 8}})
    plain = CtrTask().configure(plain_cfg, data).build(plain_cfg, data, "cpu")
    cards = sum(data.cardinality(n) for n in data.sparse_names)
    assert built.embedding_params - plain.embedding_params == WIDTH * cards


def test_first_order_fitted_alone_is_the_models_first_validation(synth: tuple[Path, Path],
                                                                 tmp_path: Path) -> None:
    """`train.first_order_epochs`: the term trains alone to its best validation AUC, then the
    whole model's validation at step 0 equals that fit (the deep output starts at zero), and the
    best checkpoint can only keep it or improve on it."""
    run_dir = tmp_path / "run"
    result, _ = _train_and_load(synth, run_dir, 4, "model.first_order=true",
                                "train.first_order_epochs=3", "optim.first_order_lr=0.05",
                                "optim.first_order_id_l2=0.01", "train.eval_every=2")
    assert 1 <= result["first_order_best_epoch"] <= result["first_order_epochs_run"] <= 3
    history = torch.load(run_dir / "checkpoints" / "step-4" / "extra-rank0.pt",
                         weights_only=False)["loop"]["history"]
    evals = [h for h in history if "val_auc" in h]
    assert [h["step"] for h in evals] == [0, 2, 4]
    assert evals[0]["val_auc"] == pytest.approx(result["first_order_val_auc"], abs=1e-6)
    assert result["best_val_auc"] >= result["first_order_val_auc"]
    assert not (run_dir / "checkpoints" / "first_order").exists()

