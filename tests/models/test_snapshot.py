"""The snapshot contract: round trip, determinism, and rejection of every kind of damage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from plexrec.features.errors import PlexrecError
from plexrec.models.snapshot import (
    FORMAT,
    Snapshot,
    SnapshotError,
    latest_snapshot,
    sha256_file,
    write_snapshot,
)


def _tables(n_users: int = 50, n_items: int = 80, width: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    users = (rng.permutation(10_000)[:n_users].astype(np.int64),
             rng.standard_normal((n_users, width)).astype(np.float32))
    items = (rng.permutation(10_000)[:n_items].astype(np.int64) + 7,
             rng.standard_normal((n_items, width)).astype(np.float32))
    return users, items


def _rewrite_manifest(path: Path, **changes) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(changes)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_round_trip_preserves_everything(tmp_path: Path) -> None:
    users, items = _tables()
    tower = tmp_path / "tower.pt"
    tower.write_bytes(b"torchscript bytes")
    feats = tmp_path / "feats.json"
    feats.write_text('{"inputs": []}')
    path = write_snapshot(tmp_path / "snaps", users=users, items=items, run_id="run-1",
                          metrics={"auc": 0.75},
                          extra_files={"user_tower.pt": tower, "user_features.json": feats})
    snap = Snapshot.open(path)
    m = snap.manifest
    assert m["format"] == FORMAT and m["dtype"] == "float32" and m["width"] == 8
    assert m["user_tower"] == "user_tower.pt" and m["user_features"] == "user_features.json"
    assert m["metrics"] == {"auc": 0.75} and m["run_id"] == "run-1" == snap.run_id
    assert path.name == snap.version and snap.version.startswith("v")
    assert snap.entities == ("user", "item")
    assert m["entities"]["item"] == {"count": 80, "ids": "item_ids.npy",
                                     "vectors": "item_vectors.npy"}
    for entity, (ids, vecs) in (("user", users), ("item", items)):
        assert np.array_equal(snap.ids(entity), ids)
        assert snap.vectors(entity).tobytes() == vecs.tobytes()
        assert isinstance(snap.vectors(entity), np.memmap)
        assert snap.vectors(entity).dtype == np.dtype("<f4")
    assert snap.file("user_tower.pt").read_bytes() == b"torchscript bytes"
    assert set(m["files"]) == {"user_ids.npy", "user_vectors.npy", "item_ids.npy",
                               "item_vectors.npy", "user_tower.pt", "user_features.json"}
    assert m["files"]["user_tower.pt"] == sha256_file(tower)
    with pytest.raises(SnapshotError, match="no file"):
        snap.file("nope.bin")
    assert not [p for p in (tmp_path / "snaps").iterdir() if p.name.startswith(".")]


def test_user_tower_path_shorthand(tmp_path: Path) -> None:
    users, items = _tables()
    tower = tmp_path / "t.pt"
    tower.write_bytes(b"tower")
    snap = Snapshot.open(write_snapshot(tmp_path / "s", users=users, items=items, run_id="r",
                                        user_tower_path=tower))
    assert snap.manifest["user_tower"] == "user_tower.pt" and snap.manifest["user_features"] is None
    assert snap.file("user_tower.pt").read_bytes() == b"tower"


def test_items_only_snapshot_and_converted_dtypes(tmp_path: Path) -> None:
    ids = np.arange(5, dtype=np.int32)
    vecs = np.asfortranarray(np.ones((5, 3), dtype=np.float64))
    snap = Snapshot.open(write_snapshot(tmp_path, users=None, items=(ids, vecs), run_id="r"))
    assert snap.entities == ("item",) and snap.manifest["user_tower"] is None
    assert snap.ids("item").dtype == np.int64 and snap.vectors("item").flags.c_contiguous
    with pytest.raises(SnapshotError, match="no entity 'user'"):
        snap.vectors("user")


def test_version_is_deterministic_and_rewrite_is_noop(tmp_path: Path) -> None:
    users, items = _tables()
    a = write_snapshot(tmp_path / "a", users=users, items=items, run_id="r")
    b = write_snapshot(tmp_path / "b", users=users, items=items, run_id="r")
    assert a.name == b.name
    created = json.loads((a / "manifest.json").read_text())["created_at"]
    again = write_snapshot(tmp_path / "a", users=users, items=items, run_id="r")
    assert again == a and json.loads((a / "manifest.json").read_text())["created_at"] == created
    assert write_snapshot(tmp_path / "a", users=users, items=items, run_id="other").name != a.name
    changed = (items[0], items[1].copy())
    changed[1][3, 2] += 1e-6
    assert write_snapshot(tmp_path / "a", users=users, items=changed, run_id="r").name != a.name


def test_version_is_deterministic_across_processes(tmp_path: Path) -> None:
    code = ("import numpy as np, sys; from models.snapshot import write_snapshot;"
            "ids = np.arange(10); v = np.arange(40, dtype=np.float32).reshape(10, 4);"
            "print(write_snapshot(sys.argv[1], users=None, items=(ids, v), run_id='x').name)")
    names = {subprocess.run([sys.executable, "-c", code, str(tmp_path / str(i))], check=True,
                            capture_output=True, text=True).stdout.strip() for i in range(2)}
    assert len(names) == 1


def test_explicit_version_and_conflict(tmp_path: Path) -> None:
    users, items = _tables()
    path = write_snapshot(tmp_path, users=users, items=items, run_id="r", version="2024-01-01")
    assert path.name == "2024-01-01" and Snapshot.open(path).version == "2024-01-01"
    with pytest.raises(SnapshotError, match="different snapshot"):
        write_snapshot(tmp_path, users=users, items=items, run_id="r2", version="2024-01-01")
    with pytest.raises(SnapshotError, match="invalid snapshot version"):
        write_snapshot(tmp_path, users=users, items=items, run_id="r", version="a:b")


def test_flipped_byte_names_the_file(tmp_path: Path) -> None:
    users, items = _tables()
    path = write_snapshot(tmp_path, users=users, items=items, run_id="r")
    target = path / "item_vectors.npy"
    data = bytearray(target.read_bytes())
    data[-5] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match=r"item_vectors\.npy: sha256 mismatch"):
        Snapshot.open(path)
    assert Snapshot.open(path, verify=False).vectors("item").shape == (80, 8)


def test_missing_file_is_named(tmp_path: Path) -> None:
    users, items = _tables()
    path = write_snapshot(tmp_path, users=users, items=items, run_id="r")
    (path / "user_ids.npy").unlink()
    with pytest.raises(SnapshotError, match=r"user_ids\.npy: missing"):
        Snapshot.open(path)


def _replace_file(path: Path, name: str, array: np.ndarray) -> None:
    """Writes a damaged array and fixes its checksum, so only the shape/dtype check can catch it."""
    np.save(path / name, array)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"][name] = sha256_file(path / name)
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(("name", "bad", "message"), [
    ("item_vectors.npy", np.zeros((80, 8), dtype=np.float64), "expected little-endian float32"),
    ("item_vectors.npy", np.zeros((80, 9), dtype=np.float32), r"shape \(80, 9\)"),
    ("item_vectors.npy", np.zeros(80 * 8, dtype=np.float32), "expected \\[n, 8\\]"),
    ("item_vectors.npy", np.zeros((79, 8), dtype=np.float32), "manifest count 80"),
    ("item_ids.npy", np.arange(80, dtype=np.int32), "expected little-endian int64"),
    ("item_ids.npy", np.zeros((80, 1), dtype=np.int64), "expected 1-D"),
    ("item_ids.npy", np.r_[np.arange(79), 5].astype(np.int64), "duplicate id 5"),
    ("item_vectors.npy", np.zeros((80, 8), dtype=">f4"), "expected little-endian float32"),
    ("item_vectors.npy", np.asfortranarray(np.zeros((80, 8), dtype=np.float32)),
     "not C-contiguous"),
])
def test_wrong_shape_dtype_or_duplicates_rejected(tmp_path: Path, name: str, bad: np.ndarray,
                                                  message: str) -> None:
    users, items = _tables()
    path = write_snapshot(tmp_path, users=users, items=items, run_id="r")
    _replace_file(path, name, bad)
    with pytest.raises(SnapshotError, match=message) as info:
        Snapshot.open(path)
    assert name in str(info.value)


def test_bad_manifest_rejected(tmp_path: Path) -> None:
    users, items = _tables()
    path = write_snapshot(tmp_path, users=users, items=items, run_id="r")
    _rewrite_manifest(path, format="other/9")
    with pytest.raises(SnapshotError, match="manifest.json: format 'other/9'"):
        Snapshot.open(path)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(SnapshotError, match="unreadable manifest"):
        Snapshot.open(path)
    with pytest.raises(SnapshotError, match="no manifest"):
        Snapshot.open(tmp_path / "nowhere")


@pytest.mark.parametrize(("users", "items", "message"), [
    (None, (np.array([1, 2, 2]), np.zeros((3, 4))), "duplicate id 2"),
    (None, (np.array([1, 2]), np.zeros((3, 4))), "2 ids but 3 vector rows"),
    (None, (np.array([1.0, 2.0]), np.zeros((2, 4))), "must be integers"),
    (None, (np.array([1, 2]), np.zeros(2)), "must be 2-D"),
    ((np.array([1]), np.zeros((1, 3))), (np.array([1]), np.zeros((1, 4))), "one width"),
    (None, (np.array([1, 2]), np.array([[0.0], [np.nan]])), "id 2 .row 1. is not finite"),
])
def test_writer_rejects_bad_input(tmp_path: Path, users, items, message: str) -> None:
    with pytest.raises(SnapshotError, match=message):
        write_snapshot(tmp_path, users=users, items=items, run_id="r")
    assert not list(tmp_path.iterdir())


def test_row_of_is_vectorised_lookup(tmp_path: Path) -> None:
    users, items = _tables()
    snap = Snapshot.open(write_snapshot(tmp_path, users=users, items=items, run_id="r"))
    ids = items[0]
    query = np.array([ids[3], -1, ids[0], 10**12, ids[79], ids[3]])
    assert snap.row_of("item", query).tolist() == [3, -1, 0, -1, 79, 3]
    rows = snap.row_of("item", ids[::-1])
    assert np.array_equal(rows, np.arange(80)[::-1]) and rows.dtype == np.int64
    unverified = Snapshot.open(snap.path, verify=False)
    assert unverified.row_of("item", query).tolist() == [3, -1, 0, -1, 79, 3]


def test_latest_snapshot_picks_newest(tmp_path: Path) -> None:
    users, items = _tables()
    first = write_snapshot(tmp_path, users=users, items=items, run_id="a")
    second = write_snapshot(tmp_path, users=users, items=items, run_id="b")
    _rewrite_manifest(first, created_at="2001-01-01T00:00:00+00:00")
    assert latest_snapshot(tmp_path) == second
    assert latest_snapshot(first) == first
    with pytest.raises(PlexrecError, match="no snapshot directories"):
        latest_snapshot(tmp_path / "empty")


def test_module_does_not_import_torch() -> None:
    code = "import sys, models.snapshot; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "False"
