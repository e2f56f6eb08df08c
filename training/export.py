"""Export a trained two-tower model as a serving snapshot: vectors of every user and item under
their external (raw) ids, the TorchScript user tower and the contract that feeds it.

The user tower is rebuilt without TorchRec (see models.two_tower.PaddedUserTower), so serving
runs it with plain torch, no sharding and no KJT; its input contract is `user_features.json`:
{"sparse": [{"name", "column", "kind", "max_length", "separator", "vocab", "hash_size"}],
 "dense": [{"name", "column", "fill", "transform", "clamp_min", "clamp_max"}],
 "tower_input": "padded", "width"}. A request's features are encoded exactly as in preparation
(vocabulary look-up with unknown -> 0, or hash mod hash_size; missing -> 0; multi-hot split on
the separator and truncated to max_length), laid out one block of max_length slots per sparse
feature in the listed order and padded with -1; dense values are transformed as listed.

The vectors are stored as the run's `[export] vector_dtype` (training.export_config; `plexrec
export --vector-dtype` overrides it); a binary snapshot gets an ITQ rotation learned on the
user and item vectors together, so both sides' signs live in one rotated space."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plexrec.features.config import parse_section
from plexrec.features.errors import ConfigError, DataError
from plexrec.models.snapshot import write_snapshot
from plexrec.models.two_tower import PaddedUserTower, padded_user_tower
from plexrec.models.vector_codecs import CODECS, learn_itq_rotation
from plexrec.training.export_config import ExportConfig
from plexrec.training.item_catalog import catalog_vectors
from plexrec.training.two_tower import (
    TwoTowerParts,
    entity_rows,
    key_names,
    tower_vectors,
    user_vectors,
)

log = logging.getLogger(__name__)

TOWER_FILE = "user_tower.pt"
CONTRACT_FILE = "user_features.json"


@dataclass(frozen=True)
class ExportResult:
    snapshot: Path
    version: str
    users: int
    items: int
    width: int
    dtype: str = "float32"

    def to_json(self) -> dict[str, Any]:
        return {"snapshot": str(self.snapshot), "version": self.version, "users": self.users,
                "items": self.items, "width": self.width, "dtype": self.dtype,
                "bytes_per_vector": CODECS[self.dtype].bytes_per_vector(self.width)}


def external_ids(data: Any, key: str, ids: np.ndarray) -> np.ndarray:
    """Raw ids (int64) of cache ids, from the inverted vocabulary; the snapshot and the serving
    API speak raw ids, so a key feature must use a vocabulary of integer values."""
    vocab = data.vocab(key)
    if not vocab:
        raise ConfigError(f"{key}: the id feature of a snapshot needs a vocabulary (min_count), "
                          "not hashing, so vectors can be listed under their raw ids")
    raw = np.zeros(data.cardinality(key), dtype=np.int64)
    for value, i in vocab.items():
        try:
            raw[i] = int(value)
        except ValueError:
            raise DataError(f"{key} value {value!r} (id {i}) is not an integer; snapshots key "
                            "vectors by integer ids", path=str(data.path), field=key) from None
    return raw[ids]


def user_contract(data: Any, parts: TwoTowerParts) -> dict[str, Any]:
    """The input contract of the exported user tower (see the module docstring)."""
    schema = data.schema
    sparse = []
    for name in parts.user_sparse:
        f = schema.feature(name)
        if f.derive is not None and f.derive.kind == "cross":
            raise ConfigError(f"{schema.source}: user feature {name!r} is a cross of "
                              f"{', '.join(f.derive.columns)}; the exported user tower takes "
                              "one value per feature, so cross features belong to the item side")
        vocab = data.vocab(name) if f.uses_vocabulary else None
        sparse.append({"name": name, "column": f.column, "kind": f.kind,
                       "max_length": int(f.max_length), "separator": f.separator,
                       "vocab": dict(vocab) if vocab is not None else None,
                       "hash_size": f.hash_size, "cardinality": int(data.cardinality(name)),
                       "derive": f.derive.to_toml() if f.derive is not None else None})
    dense = []
    for index in parts.user_dense:
        f = schema.feature(data.dense_names[index])
        dense.append({"name": f.name, "column": f.column, "fill": f.fill,
                      "transform": f.transform, "clamp_min": f.clamp_min,
                      "clamp_max": f.clamp_max})
    return {"sparse": sparse, "dense": dense, "tower_input": "padded",
            "width": int(parts.model.dim)}


def serving_tower(parts: TwoTowerParts, data: Any) -> PaddedUserTower:
    """The TorchRec-free user tower (before scripting)."""
    contract_lengths = [int(data.schema.feature(n).max_length) for n in parts.user_sparse]
    embeddings = parts.model.user.embeddings
    mean = [n in getattr(embeddings, "mean_features", []) for n in parts.user_sparse]
    return padded_user_tower(parts.model.user, [data.cardinality(n) for n in parts.user_sparse],
                             contract_lengths, mean)


def script_tower(tower: PaddedUserTower, path: Path) -> Path:
    scripted = torch.jit.script(tower)
    scripted.save(str(path))
    return path


def binary_rotation(config: ExportConfig, *vectors: np.ndarray) -> np.ndarray | None:
    """The ITQ rotation of a binary export (None for other dtypes or `binary_rotation = none`),
    learned on all given vectors at once and seeded, so a re-export gives the same version."""
    if config.vector_dtype != "binary" or config.binary_rotation == "none":
        return None
    return learn_itq_rotation(np.concatenate(vectors), iterations=config.itq_iterations, seed=0)


def export_snapshot(parts: TwoTowerParts, data: Any, out_dir: str | Path, *, run_id: str,
                    metrics: dict[str, float] | None = None,
                    training: dict[str, Any] | None = None,
                    export: ExportConfig | None = None) -> ExportResult:
    """Vectors of all vocabulary users (each from their latest row, with their whole history when
    the model has one) and items (plus the catalogue's items no row mentions, with
    `export.item_catalog`), the scripted user tower and its contract, written as one snapshot
    version under `out_dir`, the vectors stored as `export.vector_dtype`."""
    export = export or ExportConfig()
    user_key, item_key = key_names(data)
    users, user_rows = entity_rows(data, user_key)
    items, item_rows = entity_rows(data, item_key)
    model = parts.model
    user_vecs = user_vectors(model, data, np.arange(data.num_rows), user_rows).numpy()
    item_vecs = tower_vectors(model.item, data, item_rows).numpy()
    item_ids = external_ids(data, item_key, items)
    cold = 0
    if export.item_catalog:
        catalog_ids, catalog_vecs = catalog_vectors(parts, data, export.item_catalog)
        unseen = ~np.isin(catalog_ids, item_ids)
        cold = int(unseen.sum())
        item_ids = np.concatenate([item_ids, catalog_ids[unseen]])
        item_vecs = np.concatenate([item_vecs, catalog_vecs[unseen]])
    with tempfile.TemporaryDirectory(prefix="plexrec-export-") as tmp:
        tower_path = script_tower(serving_tower(parts, data), Path(tmp) / TOWER_FILE)
        contract_path = Path(tmp) / CONTRACT_FILE
        contract_path.write_text(json.dumps(user_contract(data, parts), indent=1) + "\n")
        path = write_snapshot(out_dir, users=(external_ids(data, user_key, users), user_vecs),
                              items=(item_ids, item_vecs),
                              run_id=run_id, metrics=metrics or {},
                              training={**(training or {}),
                                        "matryoshka_widths": [int(w) for w in model.matryoshka],
                                        **({"catalog_only_items": cold}
                                           if export.item_catalog else {})},
                              extra_files={TOWER_FILE: tower_path, CONTRACT_FILE: contract_path},
                              dtype=export.vector_dtype,
                              rotation=binary_rotation(export, user_vecs, item_vecs))
    manifest = json.loads((path / "manifest.json").read_text())
    return ExportResult(snapshot=path, version=manifest["version"], users=len(users),
                        items=len(item_ids), width=int(user_vecs.shape[1]),
                        dtype=export.vector_dtype)


@dataclass
class TrainedRun:
    """A two-tower run loaded for export: unsharded model parts, its data and where it came
    from."""

    parts: TwoTowerParts
    data: Any
    run_dir: Path
    checkpoint: Path
    run_id: str
    metrics: dict[str, float]
    model: str = "best_validation"
    export: ExportConfig = ExportConfig()

    def provenance(self) -> dict[str, Any]:
        """What the snapshot manifest records of its source: run directory, checkpoint and which
        model it is: "final_fit" (retrained on every row for the best checkpoint's steps; the
        metrics are still the held-out run's) or "best_validation" (the held-out run's best
        checkpoint, whose test figures the metrics are)."""
        step = json.loads((self.checkpoint / "meta.json").read_text()).get("step")
        return {"run_dir": str(self.run_dir),
                "checkpoint": str(self.checkpoint.relative_to(self.run_dir)),
                "checkpoint_step": step, "model": self.model}


def run_dir_of(run_id: str) -> Path:
    """The run directory an MLflow run recorded (param `train.run_dir`)."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from plexrec.features.redact import redact, redact_url, url_secrets
    from plexrec.training.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    try:
        run = MlflowClient().get_run(run_id)
    except MlflowException as exc:
        uri = tracking_uri()
        raise ConfigError(f"MLflow run {run_id!r} not found at {redact_url(uri)}: "
                          f"{redact(str(exc).splitlines()[0], url_secrets(uri))}") from None
    run_dir = run.data.params.get("train.run_dir")
    if not run_dir:
        raise ConfigError(f"MLflow run {run_id} has no train.run_dir parameter; export it with "
                          "--checkpoint RUN_DIR")
    return Path(run_dir)


def _locate(path: Path) -> tuple[Path, Path]:
    """(run dir, checkpoint dir) from a run directory (its best validation checkpoint) or one of
    its checkpoints/step-N or checkpoints/best/step-N directories."""
    from plexrec.training.checkpoint import BEST, model_checkpoint

    path = Path(path)
    if (path / "meta.json").is_file() and path.parent.name == "checkpoints":
        return path.parent.parent, path
    if (path / "meta.json").is_file() and path.parent.name == BEST:
        return path.parent.parent.parent, path
    if not (path / "spec.json").is_file():
        raise ConfigError(f"{path}: not a training run directory (no spec.json) nor one of its "
                          "checkpoints/step-N directories")
    chosen = model_checkpoint(path / "checkpoints")
    if chosen is None:
        raise ConfigError(f"{path}: the run has no complete checkpoint under checkpoints/")
    return path, chosen


def load_trained(path: str | Path, run_id: str | None = None) -> TrainedRun:
    """Rebuilds the run's two-tower model on CPU (plain EmbeddingBagCollections, no DMP) and
    reads the sharded checkpoint's full weights into it."""
    from plexrec.features.cache import PreparedData
    from plexrec.training.checkpoint import load_unsharded
    from plexrec.training.config import parse_config
    from plexrec.training.final_fit import final_fit_dir
    from plexrec.training.tasks.retrieval import RetrievalTask
    from plexrec.training.trainer import RunSpec, training_view

    run_dir, checkpoint = _locate(Path(path))
    model_dir, model = run_dir, "best_validation"
    final = final_fit_dir(run_dir) if (Path(path) / "spec.json").is_file() else None
    if final is not None:  # a run directory with a finished final fit exports that model
        (model_dir, checkpoint), model = _locate(final), "final_fit"
    spec = RunSpec.load(model_dir / "spec.json")
    cfg = parse_config(spec.config, spec.source)
    if cfg.model.kind != "two_tower":
        raise ConfigError(f"{run_dir}: the run trained a {cfg.model.kind!r} model; export needs "
                          "a two_tower run")
    cache = PreparedData.open(spec.prepared_dir)
    task = RetrievalTask().configure(cfg, cache)
    data, _ = training_view(cfg, task, cache)
    parts = task.build_parts(cfg, data, "cpu")
    load_unsharded(checkpoint, parts.model)
    parts.model.eval()
    result_path = run_dir / "result.json"
    result = json.loads(result_path.read_text()) if result_path.is_file() else {}
    rid = run_id or result.get("run_id") or _read_text(run_dir / "mlflow_run_id") or ""
    metrics = {k: float(v) for k, v in result.items()
               if isinstance(v, int | float) and not isinstance(v, bool)
               and k.startswith(("test_", "embedding_"))}
    return TrainedRun(parts, data, run_dir, checkpoint, rid or run_dir.name, metrics, model,
                      cfg.export)


def _read_text(path: Path) -> str | None:
    return path.read_text().strip() if path.is_file() else None


def log_snapshot(run_id: str, snapshot: Path) -> bool:
    """Attaches the snapshot to its MLflow run (artifact path snapshot/<version>); False when
    the run is not in the tracking store (e.g. tracking was disabled)."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from plexrec.training.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    client = MlflowClient()
    try:
        client.get_run(run_id)
    except MlflowException:
        log.warning("MLflow run %s not found; snapshot not logged as an artifact", run_id)
        return False
    client.log_artifacts(run_id, str(snapshot), f"snapshot/{snapshot.name}")
    return True


def export_config(base: ExportConfig, vector_dtype: str | None,
                  item_catalog: str | Path | None = None) -> ExportConfig:
    """The run's `[export]` table with `--vector-dtype` and `--item-catalog` (when given) in
    place of its own."""
    flags = {k: str(v) for k, v in (("vector_dtype", vector_dtype),
                                    ("item_catalog", item_catalog)) if v is not None}
    if not flags:
        return base
    return parse_section(ExportConfig, {**base.model_dump(), **flags},
                         " and ".join(f"--{k.replace('_', '-')}" for k in flags))


def export_run(out_dir: str | Path, *, run_id: str | None = None,
               checkpoint: str | Path | None = None,
               vector_dtype: str | None = None,
               item_catalog: str | Path | None = None) -> ExportResult:
    """`plexrec export`: from an MLflow run id (its recorded run directory) or a run/checkpoint
    directory, write the snapshot and log it to the run. `vector_dtype` overrides the run
    config's `[export] vector_dtype`, `item_catalog` its `[export] item_catalog`."""
    if (run_id is None) == (checkpoint is None):
        raise ConfigError("give exactly one of --run RUN_ID or --checkpoint DIR")
    export_config(ExportConfig(), vector_dtype, item_catalog)
    path = Path(checkpoint) if checkpoint is not None else run_dir_of(run_id or "")
    trained = load_trained(path, run_id)
    result = export_snapshot(trained.parts, trained.data, out_dir, run_id=trained.run_id,
                             metrics=trained.metrics, training=trained.provenance(),
                             export=export_config(trained.export, vector_dtype,
                                                  item_catalog))
    if run_id is not None or _read_text(trained.run_dir / "mlflow_run_id"):
        log_snapshot(trained.run_id, result.snapshot)
    return result
