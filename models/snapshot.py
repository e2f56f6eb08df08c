"""The snapshot contract between training/export (writer) and serving (reader).

One directory per version holds `manifest.json`, `<entity>_ids.npy` (int64 [n], unique external
ids) and `<entity>_vectors.npy` (the stored codes, C order: little-endian float32 [n, width] for
the default `dtype`, see models.vector_codecs for float16, int8 and binary), for the scaled dtypes
`<entity>_scales.npy` (float32 [n]) and for a rotated binary snapshot `rotation.npy`, plus
optional extra files such as the TorchScript user tower. A float32 manifest has exactly the keys
it had before other dtypes existed, so its files and version are unchanged. Both sides validate with this module so a truncated copy,
a flipped byte or a wrong shape is caught where it is read, naming the file. The version is derived
from the content, so exporting the same vectors twice gives the same version and the publisher can
treat a rerun as a no-op. No torch import: serving reads snapshots without it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from plexrec.features.errors import PlexrecError
from plexrec.models.vector_codecs import CODECS, Codec, CodecError, check_rotation, get_codec

FORMAT = "plexrec-snapshot/1"
MANIFEST = "manifest.json"
ENTITIES = ("user", "item")
DTYPE = "float32"
ROTATION_FILE = "rotation.npy"
_IDS_DTYPE = np.dtype("<i8")
_VEC_DTYPE = np.dtype("<f4")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_CHUNK = 1 << 22


class SnapshotError(PlexrecError):
    """A snapshot directory that is missing, tampered with, or breaks the contract."""


def sha256_file(path: Path) -> str:
    """Streaming sha256, so multi-GB vector files never need to fit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """The sha256 a manifest lists for a file whose bytes are already in memory."""
    return hashlib.sha256(data).hexdigest()


def derive_version(files: dict[str, str], run_id: str) -> str:
    """"v" + 16 hex of sha256 over the sorted (name, sha256) pairs and the run id: identical content
    gives the identical version, whenever and wherever it is exported."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{files[name]}\n".encode())
    digest.update(f"run_id\0{run_id}".encode())
    return "v" + digest.hexdigest()[:16]


def check_version_name(version: str) -> str:
    """A version names a directory and a Redis hash tag, so it is restricted to a safe alphabet."""
    if not isinstance(version, str) or not _NAME_RE.match(version):
        raise SnapshotError(f"invalid snapshot version {version!r}: use letters, digits, '.', '_' "
                            "or '-' (no ':', '{', '}', '/' or spaces)")
    return version


def _entity_files(entity: str) -> tuple[str, str]:
    return f"{entity}_ids.npy", f"{entity}_vectors.npy"


def _scales_file(entity: str) -> str:
    return f"{entity}_scales.npy"


def _prepare(entity: str, pair: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    ids, vectors = np.asarray(pair[0]), np.asarray(pair[1])
    if ids.ndim != 1:
        raise SnapshotError(f"{entity} ids must be 1-D, got shape {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise SnapshotError(f"{entity} ids must be integers, got dtype {ids.dtype}")
    if vectors.ndim != 2:
        raise SnapshotError(f"{entity} vectors must be 2-D [n, width], got shape {vectors.shape}")
    if vectors.shape[0] != ids.shape[0]:
        raise SnapshotError(f"{entity}: {ids.shape[0]} ids but {vectors.shape[0]} vector rows")
    if not np.issubdtype(vectors.dtype, np.floating):
        raise SnapshotError(f"{entity} vectors must be floating point, got dtype {vectors.dtype}")
    ids = np.ascontiguousarray(ids, dtype=_IDS_DTYPE)
    _check_unique(ids, f"{entity} ids")
    vectors = np.ascontiguousarray(vectors, dtype=_VEC_DTYPE)
    if not np.isfinite(vectors).all():
        bad = int(np.argwhere(~np.isfinite(vectors))[0, 0])
        raise SnapshotError(f"{entity} vector of id {int(ids[bad])} (row {bad}) is not finite")
    return ids, vectors


def _check_unique(ids: np.ndarray, where: str) -> np.ndarray:
    """Returns the stable argsort of ids (reused as the look-up index) after checking uniqueness."""
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    dup = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
    if dup.size:
        raise SnapshotError(f"{where}: duplicate id {int(sorted_ids[dup[0]])}")
    return order


def write_snapshot(out_dir: str | Path, *, users: tuple[np.ndarray, np.ndarray] | None,
                   items: tuple[np.ndarray, np.ndarray], run_id: str,
                   metrics: dict | None = None, extra_files: dict[str, Path] | None = None,
                   version: str | None = None, user_tower_path: str | Path | None = None,
                   training: dict[str, Any] | None = None, dtype: str = DTYPE,
                   rotation: np.ndarray | None = None) -> Path:
    """Writes `out_dir/<version>/` atomically (temp dir + rename), so a reader never sees half a
    snapshot; rewriting an identical version is a no-op and returns the existing directory.
    `user_tower_path` is shorthand for extra_files={"user_tower.pt": path} (docs/DESIGN.md);
    `training` (run directory, checkpoint step) goes into the manifest as where the vectors
    came from. The float32 vectors are stored as `dtype` (models.vector_codecs); `rotation`
    (binary only, e.g. vector_codecs.learn_itq_rotation) is applied before the sign."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        codec = get_codec(dtype)
    except CodecError as exc:
        raise SnapshotError(f"vector dtype: {exc}") from None
    pairs = {"user": users, "item": items}
    prepared = {e: _prepare(e, p) for e, p in pairs.items() if p is not None}
    widths = {e: v.shape[1] for e, (_, v) in prepared.items()}
    if len(set(widths.values())) != 1:
        raise SnapshotError(f"user and item vectors must have one width, got {widths}")
    width = next(iter(widths.values()))
    if width < 1:
        raise SnapshotError("vectors have width 0")
    if rotation is not None:
        if not codec.rotates:
            raise SnapshotError(f"a rotation is only for binary vectors, not {dtype}")
        try:
            rotation = check_rotation(rotation, width)
        except CodecError as exc:
            raise SnapshotError(f"rotation {exc}") from None
    encoded = {e: _encode(codec, e, ids, v, rotation) for e, (ids, v) in prepared.items()}
    extra = {name: Path(p) for name, p in (extra_files or {}).items()}
    if user_tower_path is not None:
        extra["user_tower.pt"] = Path(user_tower_path)
    reserved = {MANIFEST, ROTATION_FILE,
                *(f for e in ENTITIES for f in (*_entity_files(e), _scales_file(e)))}
    for name, src in extra.items():
        if not _NAME_RE.match(name) or name in reserved:
            raise SnapshotError(f"extra file name {name!r} is not allowed in a snapshot")
        if not src.is_file():
            raise SnapshotError(f"extra file {name!r}: {src} does not exist")

    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out_dir))
    try:
        entities: dict[str, dict[str, Any]] = {}
        for entity, (ids, _) in prepared.items():
            ids_name, vec_name = _entity_files(entity)
            np.save(tmp / ids_name, ids)
            np.save(tmp / vec_name, encoded[entity].codes)
            entities[entity] = {"count": int(ids.shape[0]), "ids": ids_name, "vectors": vec_name}
            scales = encoded[entity].scales
            if scales is not None:
                np.save(tmp / _scales_file(entity), scales)
                entities[entity]["scales"] = _scales_file(entity)
        if rotation is not None:
            np.save(tmp / ROTATION_FILE, rotation)
        for name, src in extra.items():
            shutil.copyfile(src, tmp / name)
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
        version = check_version_name(version) if version else derive_version(files, run_id)
        manifest = {
            "format": FORMAT,
            "version": version,
            "run_id": run_id,
            "width": int(width),
            "dtype": codec.name,
            "entities": entities,
            "files": files,
            "metrics": dict(metrics or {}),
            "training": dict(training or {}),
            "user_tower": "user_tower.pt" if "user_tower.pt" in extra else None,
            "user_features": "user_features.json" if "user_features.json" in extra else None,
            "created_at": datetime.now(UTC).isoformat(),
        }
        if rotation is not None:
            manifest["rotation"] = ROTATION_FILE
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        final = out_dir / version
        if final.exists():
            existing = _read_manifest(final)
            if existing.get("files") != files or existing.get("run_id") != run_id:
                raise SnapshotError(f"{final} already holds a different snapshot with version "
                                    f"{version!r}")
            return final
        try:
            os.rename(tmp, final)
        except OSError:
            if final.exists() and _read_manifest(final).get("files") == files:
                return final
            raise
        _fsync_dir(out_dir)
        return final
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _encode(codec: Codec, entity: str, ids: np.ndarray, vectors: np.ndarray,
            rotation: np.ndarray | None) -> Any:
    try:
        return codec.encode(vectors, rotation)
    except CodecError as exc:
        row = exc.row if exc.row is not None else 0
        raise SnapshotError(f"{entity} vector of id {int(ids[row])} (row {row}) cannot be "
                            f"stored as {codec.name}: it {exc}") from None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_manifest(path: Path) -> dict:
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise SnapshotError(f"{mpath}: no manifest (not a snapshot directory)")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SnapshotError(f"{mpath}: unreadable manifest: {exc}") from exc
    if not isinstance(manifest, dict):
        raise SnapshotError(f"{mpath}: manifest is not a JSON object")
    return manifest


class Snapshot:
    """A validated, memory-mapped snapshot directory. Open with `Snapshot.open(path)`."""

    def __init__(self, path: Path, manifest: dict) -> None:
        self.path = path
        self.manifest = manifest
        self.codec: Codec = CODECS[manifest["dtype"]]
        self.rotation: np.ndarray | None = None
        self._ids: dict[str, np.ndarray] = {}
        self._codes: dict[str, np.ndarray] = {}
        self._scales: dict[str, np.ndarray | None] = {}
        self._decoded: dict[str, np.ndarray] = {}
        self._index: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def open(cls, path: str | Path, verify: bool = True) -> Snapshot:
        """Checks the manifest, every file's shape and dtype, and with verify=True also every
        sha256 and id uniqueness (reads all bytes once); raises SnapshotError naming the file."""
        path = Path(path)
        manifest = _read_manifest(path)
        mpath = path / MANIFEST
        missing = [k for k in ("format", "version", "run_id", "width", "dtype", "entities",
                               "files") if k not in manifest]
        if missing:
            raise SnapshotError(f"{mpath}: missing keys {missing}")
        if manifest["format"] != FORMAT:
            raise SnapshotError(f"{mpath}: format {manifest['format']!r}, expected {FORMAT!r}")
        if manifest["dtype"] not in CODECS:
            raise SnapshotError(f"{mpath}: dtype {manifest['dtype']!r} is not one of "
                                f"{', '.join(CODECS)}")
        codec = CODECS[manifest["dtype"]]
        check_version_name(manifest["version"])
        width = manifest["width"]
        if not isinstance(width, int) or width < 1:
            raise SnapshotError(f"{mpath}: bad width {width!r}")
        entities = manifest["entities"]
        if not isinstance(entities, dict) or "item" not in entities:
            raise SnapshotError(f"{mpath}: entities must include 'item'")
        files = manifest["files"]
        for entity, spec in entities.items():
            if entity not in ENTITIES:
                raise SnapshotError(f"{mpath}: unknown entity {entity!r}")
            if not isinstance(spec, dict):
                raise SnapshotError(f"{mpath}: entity {entity!r} is not an object")
            for key in ("ids", "vectors", *(("scales",) if codec.has_scale else ())):
                if spec.get(key) not in files:
                    raise SnapshotError(f"{mpath}: {entity} {key} file {spec.get(key)!r} is not "
                                        "listed in files")
        for name, digest in files.items():
            fpath = path / name
            if not fpath.is_file():
                raise SnapshotError(f"{fpath}: missing (listed in the manifest)")
            if verify and sha256_file(fpath) != digest:
                raise SnapshotError(f"{fpath}: sha256 mismatch (file corrupted or modified)")
        rotation = manifest.get("rotation")
        if rotation is not None and (not codec.rotates or rotation not in files):
            raise SnapshotError(f"{mpath}: rotation {rotation!r} needs dtype binary and a file "
                                "listed in files")
        snap = cls(path, manifest)
        if rotation is not None:
            try:
                snap.rotation = check_rotation(np.asarray(_mmap(path / rotation)), width)
            except CodecError as exc:
                raise SnapshotError(f"{path / rotation}: {exc}") from None
        for entity, spec in entities.items():
            snap._load(entity, spec, verify)
        return snap

    def _load(self, entity: str, spec: dict, verify: bool) -> None:
        ids_path, vec_path = self.path / spec["ids"], self.path / spec["vectors"]
        count, width = spec.get("count"), self.width
        ids = _mmap(ids_path)
        vectors = _mmap(vec_path)
        scales_path = self.path / spec["scales"] if self.codec.has_scale else None
        scales = _mmap(scales_path) if scales_path is not None else None
        if ids.dtype != _IDS_DTYPE:
            raise SnapshotError(f"{ids_path}: dtype {ids.dtype}, expected little-endian int64")
        if ids.ndim != 1:
            raise SnapshotError(f"{ids_path}: shape {ids.shape}, expected 1-D")
        try:
            self.codec.validate(vectors, scales, width, deep=False)
        except CodecError as exc:
            raise SnapshotError(self._culprit(exc, vec_path, scales_path, ids)) from None
        if ids.shape[0] != count or vectors.shape[0] != count:
            raise SnapshotError(f"{vec_path}: {vectors.shape[0]} rows and {ids.shape[0]} ids, "
                                f"manifest count {count}")
        if verify:
            order = _check_unique(np.asarray(ids), str(ids_path))
            self._index[entity] = (order, np.asarray(ids)[order])
            try:
                self.codec.validate(vectors, scales, width, deep=True)
            except CodecError as exc:
                raise SnapshotError(self._culprit(exc, vec_path, scales_path, ids)) from None
        self._ids[entity], self._codes[entity], self._scales[entity] = ids, vectors, scales

    def _culprit(self, exc: CodecError, vec_path: Path, scales_path: Path | None,
                 ids: np.ndarray) -> str:
        """The file and, for a bad row, the id a codec error is about."""
        where = scales_path if exc.part == "scales" and scales_path is not None else vec_path
        if exc.row is None:
            return f"{where}: {exc}"
        return (f"{where}: {self.codec.name} vector of id {int(ids[exc.row])} (row {exc.row}): "
                f"{exc}")

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def run_id(self) -> str:
        return self.manifest["run_id"]

    @property
    def width(self) -> int:
        return int(self.manifest["width"])

    @property
    def dtype(self) -> str:
        return self.codec.name

    @property
    def entities(self) -> tuple[str, ...]:
        return tuple(e for e in ENTITIES if e in self.manifest["entities"])

    def count(self, entity: str) -> int:
        return int(self.manifest["entities"][self._entity(entity)]["count"])

    def _entity(self, entity: str) -> str:
        if entity not in self._ids:
            raise SnapshotError(f"{self.path}: no entity {entity!r} (has {list(self.entities)})")
        return entity

    def ids(self, entity: str) -> np.ndarray:
        """Memory-mapped int64 ids, read-only."""
        return self._ids[self._entity(entity)]

    def vectors(self, entity: str) -> np.ndarray:
        """float32 [n, width]; row i belongs to ids(entity)[i]. Memory-mapped and read-only for
        a float32 snapshot; decoded once and kept for the other dtypes."""
        entity = self._entity(entity)
        if self.codec.name == DTYPE:
            return self._codes[entity]
        if entity not in self._decoded:
            self._decoded[entity] = self.codec.decode(self._codes[entity], self._scales[entity],
                                                      self.width, self.rotation)
        return self._decoded[entity]

    def codes(self, entity: str) -> np.ndarray:
        """The stored codes, memory-mapped (the float32 vectors themselves for float32)."""
        return self._codes[self._entity(entity)]

    def scales(self, entity: str) -> np.ndarray | None:
        """float32 [n] per-vector scales of the scaled dtypes (int8, binary), else None."""
        return self._scales[self._entity(entity)]

    def decode_rows(self, entity: str, rows: np.ndarray) -> np.ndarray:
        """float32 [len(rows), width] of the given rows, decoding only those."""
        entity = self._entity(entity)
        if self.codec.name == DTYPE or entity in self._decoded:
            return np.asarray(self.vectors(entity)[rows], dtype=_VEC_DTYPE)
        scales = self._scales[entity]
        return self.codec.decode(np.asarray(self._codes[entity][rows]),
                                 None if scales is None else np.asarray(scales[rows]),
                                 self.width, self.rotation)

    def stored_rows(self, entity: str, rows: np.ndarray | slice) -> np.ndarray:
        """uint8 [k, bytes_per_vector]: the rows as Redis and the stored wire encoding hold
        them (code bytes, then the float32 scale)."""
        entity = self._entity(entity)
        scales = self._scales[entity]
        return self.codec.pack(np.asarray(self._codes[entity][rows]),
                               None if scales is None else np.asarray(scales[rows]))

    def row_of(self, entity: str, ids: np.ndarray) -> np.ndarray:
        """Row of each id (-1 when absent): one searchsorted over an index sorted once."""
        entity = self._entity(entity)
        if entity not in self._index:
            all_ids = np.asarray(self._ids[entity])
            order = np.argsort(all_ids, kind="stable")
            self._index[entity] = (order, all_ids[order])
        order, sorted_ids = self._index[entity]
        query = np.asarray(ids, dtype=np.int64).reshape(-1)
        if sorted_ids.size == 0:
            return np.full(query.shape, -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(sorted_ids, query), sorted_ids.size - 1)
        return np.where(sorted_ids[pos] == query, order[pos], -1).astype(np.int64)

    def file(self, name: str) -> Path:
        """Path of a file listed in the manifest (e.g. the user tower)."""
        if name not in self.manifest["files"]:
            raise SnapshotError(f"{self.path}: no file {name!r} in the manifest")
        return self.path / name

    def __repr__(self) -> str:
        counts = {e: self.count(e) for e in self.entities}
        return f"Snapshot({str(self.path)!r}, version={self.version!r}, counts={counts})"


def _mmap(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SnapshotError(f"{path}: not a readable .npy file: {exc}") from exc


def latest_snapshot(root: str | Path) -> Path:
    """The newest version directory under root by manifest created_at (for `plexrec publish`)."""
    root = Path(root)
    if (root / MANIFEST).is_file():
        return root
    candidates: list[tuple[str, Path]] = []
    if root.is_dir():
        for child in root.iterdir():
            if child.name.startswith(".") or not (child / MANIFEST).is_file():
                continue
            try:
                candidates.append((str(_read_manifest(child).get("created_at", "")), child))
            except SnapshotError:
                continue
    if not candidates:
        raise SnapshotError(f"{root}: no snapshot directories (with {MANIFEST}) found")
    return max(candidates)[1]
