"""Snapshots of every vector dtype: written, validated and decoded by the one contract module; a
float32 snapshot keeps the manifest and the version it had before dtypes existed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from plexrec.models.snapshot import Snapshot, SnapshotError, sha256_file, write_snapshot
from plexrec.models.vector_codecs import CODECS, learn_itq_rotation


def _tables(width: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    users = (np.arange(30, dtype=np.int64) + 1000, rng.standard_normal((30, width)))
    items = (np.arange(50, dtype=np.int64) * 3, rng.standard_normal((50, width)))
    return users, items


def _write(root: Path, dtype: str, width: int = 12, rotate: bool = True) -> Path:
    users, items = _tables(width)
    rotation = (learn_itq_rotation(np.concatenate([users[1], items[1]]), iterations=10)
                if dtype == "binary" and rotate else None)
    return write_snapshot(root, users=users, items=items, run_id="r", dtype=dtype,
                          rotation=rotation)


def _damage(path: Path, name: str, array: np.ndarray) -> None:
    """Rewrites one file and its checksum, so only the content checks can catch it."""
    np.save(path / name, array)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"][name] = sha256_file(path / name)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_float32_manifest_and_version_are_unchanged(tmp_path: Path) -> None:
    ids = np.arange(6, dtype=np.int64) * 3
    vecs = (np.arange(24, dtype=np.float32).reshape(6, 4) - 11.5) / 7
    path = write_snapshot(tmp_path, users=(ids + 1, vecs[::-1].copy()), items=(ids, vecs),
                          run_id="golden")
    # The version the writer gave this content before dtypes existed.
    assert path.name == "vb2ce8062bd099e3c"
    manifest = json.loads((path / "manifest.json").read_text())
    assert set(manifest) == {"format", "version", "run_id", "width", "dtype", "entities", "files",
                             "metrics", "training", "user_tower", "user_features", "created_at"}
    assert manifest["entities"]["item"] == {"count": 6, "ids": "item_ids.npy",
                                            "vectors": "item_vectors.npy"}
    assert write_snapshot(tmp_path, users=(ids + 1, vecs[::-1].copy()), items=(ids, vecs),
                          run_id="golden", dtype="float32") == path


@pytest.mark.parametrize("dtype", list(CODECS))
def test_every_dtype_round_trips_within_its_error(tmp_path: Path, dtype: str) -> None:
    path = _write(tmp_path, dtype)
    snap = Snapshot.open(path)
    codec = CODECS[dtype]
    assert snap.dtype == dtype == snap.manifest["dtype"]
    assert (snap.rotation is not None) == (dtype == "binary")
    assert snap.manifest.get("rotation") == ("rotation.npy" if dtype == "binary" else None)
    users, items = _tables()
    for entity, (_, vecs) in (("user", users), ("item", items)):
        x = vecs.astype(np.float32)
        decoded = snap.vectors(entity)
        assert decoded.dtype == np.float32 and decoded.shape == x.shape
        err = np.linalg.norm(decoded.astype(np.float64) - x, axis=1)
        assert (err <= codec.max_error(x)).all()
        rows = np.array([4, 0, 9])
        np.testing.assert_array_equal(snap.decode_rows(entity, rows), decoded[rows])
        stored = snap.stored_rows(entity, rows)
        assert stored.shape == (3, codec.bytes_per_vector(12))
        np.testing.assert_array_equal(codec.decode_rows(stored, 12, snap.rotation),
                                      decoded[rows])
        assert snap.codes(entity).dtype == codec.code_dtype
        assert (snap.scales(entity) is not None) == codec.has_scale


def test_rewriting_a_compressed_snapshot_is_a_noop(tmp_path: Path) -> None:
    first = _write(tmp_path, "int8")
    assert _write(tmp_path, "int8") == first
    assert _write(tmp_path, "float16") != first


@pytest.mark.parametrize(("dtype", "name", "bad", "message"), [
    ("int8", "item_scales.npy", "nan", r"int8 vector of id 12 \(row 4\): scale nan"),
    ("int8", "item_scales.npy", "zero", r"int8 vector of id 12 \(row 4\): scale 0.0"),
    ("binary", "user_scales.npy", "zero", r"binary vector of id 1004 \(row 4\): scale 0.0"),
    ("int8", "item_vectors.npy", "int16", "dtype int16, expected int8"),
    ("float16", "item_vectors.npy", "float32", "expected little-endian float16"),
    ("binary", "item_vectors.npy", "padding", r"id 12 \(row 4\): code has padding bits"),
    ("float16", "item_vectors.npy", "nan", r"id 12 \(row 4\): code holds a non-finite half"),
    ("int8", "item_scales.npy", "short", r"shape \(49,\), expected \[50\]"),
    ("binary", "rotation.npy", "skew", "is not orthogonal"),
])
def test_malformed_codes_scales_and_rotations_are_named(tmp_path: Path, dtype: str, name: str,
                                                        bad: str, message: str) -> None:
    path = _write(tmp_path, dtype)
    array = np.load(path / name)
    if bad == "nan":
        array[4] = np.nan
    elif bad == "zero":
        array[4] = 0
    elif bad == "int16":
        array = array.astype(np.int16)
    elif bad == "float32":
        array = array.astype(np.float32)
    elif bad == "padding":
        array[4, -1] |= 0x80
    elif bad == "short":
        array = array[:-1]
    elif bad == "skew":
        array = array * np.float32(1.5)
    _damage(path, name, array)
    with pytest.raises(SnapshotError, match=message) as info:
        Snapshot.open(path)
    assert name in str(info.value)


def test_manifest_of_an_unknown_dtype_or_without_scales_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "int8")
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**manifest, "rotation": "rotation.npy"}))
    with pytest.raises(SnapshotError, match="rotation 'rotation.npy' needs dtype binary"):
        Snapshot.open(path)
    (path / "manifest.json").write_text(json.dumps({**manifest, "dtype": "int4"}))
    with pytest.raises(SnapshotError, match="dtype 'int4' is not one of float32, float16"):
        Snapshot.open(path)
    del manifest["entities"]["item"]["scales"]
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SnapshotError, match="item scales file None is not listed"):
        Snapshot.open(path)


def test_writer_refuses_bad_dtypes_rotations_and_unencodable_vectors(tmp_path: Path) -> None:
    users, items = _tables()
    with pytest.raises(SnapshotError, match="vector dtype: dtype 'int4' is not one of"):
        write_snapshot(tmp_path, users=users, items=items, run_id="r", dtype="int4")
    with pytest.raises(SnapshotError, match="only for binary vectors, not int8"):
        write_snapshot(tmp_path, users=users, items=items, run_id="r", dtype="int8",
                       rotation=np.eye(12, dtype=np.float32))
    with pytest.raises(SnapshotError, match="rotation is not orthogonal"):
        write_snapshot(tmp_path, users=users, items=items, run_id="r", dtype="binary",
                       rotation=np.ones((12, 12), dtype=np.float32))
    big = items[1].copy()
    big[7, 3] = 1e6
    with pytest.raises(SnapshotError, match=r"item vector of id 21 \(row 7\) cannot be stored "
                                            "as float16: it holds a value beyond"):
        write_snapshot(tmp_path, users=users, items=(items[0], big), run_id="r",
                       dtype="float16")
    assert not list(tmp_path.iterdir())


def test_binary_without_rotation_stores_plain_signs(tmp_path: Path) -> None:
    snap = Snapshot.open(_write(tmp_path, "binary", rotate=False))
    assert snap.rotation is None and "rotation" not in snap.manifest
    _, items = _tables()
    assert (np.sign(snap.vectors("item")) == np.where(items[1] >= 0, 1, -1)).all()
