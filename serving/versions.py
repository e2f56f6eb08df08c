"""Which snapshot versions the server holds, and the hot swap between them.

A LoadedVersion is immutable: snapshot (memory-mapped), candidate index, optional user tower.
The registry holds one reference to the current one; a swap replaces that reference, so a
request that already holds the old object finishes on it, and the old version is freed when the
last such request drops it. Loading (sha256 verification, index build) runs in a worker thread,
never on the event loop."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plexrec.features.errors import PlexrecError
from plexrec.models.snapshot import (
    MANIFEST,
    Snapshot,
    SnapshotError,
    check_version_name,
    latest_snapshot,
    sha256_bytes,
)
from plexrec.models.vector_codecs import CODECS, Codec, CodecError, rotation_from_npy
from plexrec.serving import redis_keys as rk
from plexrec.serving.index import CandidateIndex, IndexConfig, build_index
from plexrec.serving.prefix_search import PrefixSearch
from plexrec.serving.stores.base import (
    OnlineStore,
    OnlineStoreError,
    StoreCorrupt,
    StoreUnavailable,
)
from plexrec.serving.user_encoder import UserTower

log = logging.getLogger(__name__)


class VersionNotFound(PlexrecError):
    """A version that is neither loaded, nor on local disk, nor published in Redis."""


class InvalidVersion(PlexrecError):
    """A requested version that cannot be a version name at all (a path, an overlong string):
    rejected before it touches the disk or Redis, so no answer tells what exists elsewhere."""


MAX_VERSION_CHARS = 128
CURRENT_STATE = ".plexrec-current"


def check_requested_version(version: str) -> str:
    """The version a client asked for, or InvalidVersion (the echo is cut to 40 characters)."""
    shown = version if len(version) <= 40 else version[:40] + "..."
    if len(version) > MAX_VERSION_CHARS:
        raise InvalidVersion(f"version {shown!r} has {len(version)} characters, more than "
                             f"{MAX_VERSION_CHARS}")
    try:
        check_version_name(version)
    except SnapshotError:
        raise InvalidVersion(f"version {shown!r} is not a version name: use letters, digits, "
                             "'.', '_' or '-'") from None
    return version


@dataclass(frozen=True)
class LoadedVersion:
    """Everything one version answers from. `snapshot`/`index` are None for a version known only
    from its Redis manifest (embeddings from Redis only, no retrieval)."""

    version: str
    width: int
    run_id: str
    counts: dict[str, int]
    partitions: int
    published: bool
    snapshot: Snapshot | None
    index: CandidateIndex | None
    item_ids: np.ndarray | None
    tower: UserTower | None
    metrics: dict[str, float]
    dtype: str = "float32"
    rotation: np.ndarray | None = None
    prefix: PrefixSearch | None = None

    @property
    def entities(self) -> tuple[str, ...]:
        return tuple(self.counts)

    @property
    def codec(self) -> Codec:
        return CODECS[self.dtype]

    @property
    def row_bytes(self) -> int:
        return self.codec.bytes_per_vector(self.width)


def load_version(path: Path, index_config: IndexConfig, redis_manifest: dict | None = None
                 ) -> LoadedVersion:
    """Opens (and verifies) a snapshot directory and builds its index on the decoded float32
    item vectors: seconds to minutes of CPU, so callers run it in a thread."""
    snap = Snapshot.open(path, verify=True)
    items = snap.vectors("item")
    users = _sample_users(snap, index_config) if "user" in snap.entities else None
    index = build_index(items, index_config, sample_queries=users)
    tower = None
    manifest = snap.manifest
    if manifest.get("user_tower") and manifest.get("user_features"):
        tower = UserTower(snap.file(manifest["user_tower"]), snap.file(manifest["user_features"]))
    metrics = {k: float(v) for k, v in (manifest.get("metrics") or {}).items()
               if isinstance(v, int | float) and not isinstance(v, bool)}
    metrics.update(index.metrics)
    return LoadedVersion(
        version=snap.version, width=snap.width, run_id=snap.run_id,
        counts={e: snap.count(e) for e in snap.entities},
        partitions=int((redis_manifest or {}).get("partitions", rk.DEFAULT_PARTITIONS)),
        published=redis_manifest is not None, snapshot=snap, index=index,
        item_ids=np.asarray(snap.ids("item")), tower=tower, metrics=metrics,
        dtype=snap.dtype, rotation=snap.rotation, prefix=PrefixSearch(items))


def _sample_users(snap: Snapshot, config: IndexConfig) -> np.ndarray:
    """User vectors to measure the index's recall with: the memory map of a float32 snapshot, a
    decoded sample of a compressed one (decoding every user would hold a float32 copy of the
    whole user table for the life of the version)."""
    if snap.dtype == "float32":
        return snap.vectors("user")
    n = snap.count("user")
    take = min(n, 4 * config.recall_queries)
    rows = np.sort(np.random.default_rng(config.seed).choice(n, take, replace=False))
    return snap.decode_rows("user", rows)


def redis_only_version(manifest: dict, version: str,
                       rotation: np.ndarray | None = None) -> LoadedVersion:
    """A version known from its published manifest alone (and, for a rotated binary version,
    its published rotation); a manifest that is not one (Redis contents are an input like any
    other) is StoreCorrupt naming the version."""
    try:
        width = int(manifest["width"])
        partitions = int(manifest.get("partitions", rk.DEFAULT_PARTITIONS))
        counts = {str(e): int(s.get("count", 0)) for e, s in manifest["entities"].items()}
        if manifest.get("version") != version or width < 1 or partitions < 1:
            raise ValueError("version, width or partitions out of range")
        dtype = manifest.get("dtype", "float32")
        if dtype not in CODECS:
            raise ValueError(f"dtype {dtype!r} is not one of {', '.join(CODECS)}")
        if bool(manifest.get("rotation")) != (rotation is not None):
            raise ValueError("the rotation named in the manifest is not given")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StoreCorrupt(f"the published manifest of version {version!r} is malformed "
                           f"({type(exc).__name__}: {exc})") from None
    return LoadedVersion(
        version=version, width=width, run_id=str(manifest.get("run_id", "")), counts=counts,
        partitions=partitions, published=True,
        snapshot=None, index=None, item_ids=None, tower=None,
        metrics={k: float(v) for k, v in (manifest.get("metrics") or {}).items()
                 if isinstance(v, int | float) and not isinstance(v, bool)},
        dtype=dtype, rotation=rotation)


def snapshot_root(path: Path) -> tuple[Path, Path | None]:
    """(root of version dirs, the given version dir or None): `path` may be either."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return path.parent, path
    if not path.is_dir():
        raise SnapshotError(f"{path}: snapshot directory does not exist")
    return path, None


class VersionRegistry:
    """Loaded versions (current + a few recent ones), loading on demand with one load per
    version at a time, and following the Redis `current` pointer."""

    def __init__(self, snapshot: Path | None, index_config: IndexConfig, *,
                 online: OnlineStore | None = None, namespace: str = "default",
                 keep: int = 3) -> None:
        self.root: Path | None = None
        self.initial_dir: Path | None = None
        if snapshot is not None:
            self.root, self.initial_dir = snapshot_root(snapshot)
        self.index_config = index_config
        self.online = online
        self.namespace = namespace
        self.keep = keep
        self.current: LoadedVersion | None = None
        self._loaded: OrderedDict[str, LoadedVersion] = OrderedDict()
        self._loading: dict[str, asyncio.Task] = {}
        self.redis_failed = False
        self._following = True
        self._corrupt: dict[str, str] = {}
        self._state_warned = False
        self._persisted: str | None = None

    def stop_following(self) -> None:
        self._following = False

    def loaded_versions(self) -> list[str]:
        return list(self._loaded)

    def loaded(self) -> list[LoadedVersion]:
        return list(self._loaded.values())

    def find_on_disk(self, version: str) -> Path | None:
        if self.root is None:
            return None
        try:
            rk.validate_version(version)
        except PlexrecError:
            return None
        if self.initial_dir is not None and self.initial_dir.name == version:
            return self.initial_dir
        path = self.root / version
        if (path / MANIFEST).is_file():
            return path
        if self.initial_dir is not None:
            try:
                if json.loads((self.initial_dir / MANIFEST).read_text()).get("version") == version:
                    return self.initial_dir
            except (OSError, json.JSONDecodeError):
                return None
        return None

    async def redis_manifest(self, version: str, strict: bool = False) -> dict | None:
        """The published manifest, or None. An unreachable online store also gives None,
        unless `strict`, where it raises StoreUnavailable (the version might exist, we cannot
        tell)."""
        if self.online is None:
            return None
        try:
            return await self.online.manifest(version)
        except StoreCorrupt as exc:
            if strict:
                raise
            log.warning("%s; treating version %s as unpublished", exc, version)
            return None
        except OnlineStoreError as exc:
            if strict:
                raise StoreUnavailable(f"version {version!r} is not on this server's disk and "
                                       f"Redis is unavailable to look it up ({exc})") from exc
            log.debug("reading manifest of %s failed: %s", version, exc)
            return None

    async def _published_rotation(self, manifest: dict, version: str) -> np.ndarray | None:
        """The rotation a binary version was published with, checked against the manifest's
        sha256 and as a rotation; StoreCorrupt naming the key when it is not one."""
        name = manifest.get("rotation")
        if not name or self.online is None:
            return None
        key = rk.version_file_key(self.namespace, version, str(name))
        try:
            data = await self.online.version_file(version, str(name))
        except OnlineStoreError as exc:
            raise StoreUnavailable(f"version {version!r}: cannot read its rotation from Redis "
                                   f"({exc})") from exc
        files = manifest.get("files")
        if data is None or not isinstance(files, dict) or files.get(name) != sha256_bytes(data):
            raise StoreCorrupt(f"Redis key {key} is missing or does not match the sha256 of "
                               f"{name} in the manifest of version {version!r}")
        try:
            return rotation_from_npy(data, int(manifest["width"]))
        except (CodecError, KeyError, TypeError, ValueError) as exc:
            raise StoreCorrupt(f"Redis key {key}: {exc}") from None

    async def redis_current(self) -> str | None:
        return None if self.online is None else await self.online.current()

    @property
    def state_file(self) -> Path | None:
        """Where the last version Redis named as current is kept, so a restart without Redis
        resumes it rather than the newest directory (which may have been rolled back)."""
        return None if self.root is None else self.root / CURRENT_STATE

    def _persist_current(self, version: str) -> None:
        path = self.state_file
        if path is None or self._persisted == version:
            return
        try:
            self._persisted = version
            if path.is_file() and path.read_text().strip() == version:
                return
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text(version + "\n")
            os.replace(tmp, path)
        except OSError as exc:
            if not self._state_warned:
                self._state_warned = True
                log.warning("cannot record the current version in %s (%s); a restart without "
                            "Redis will start on the newest version on disk", path, exc)

    def _persisted_current(self) -> Path | None:
        path = self.state_file
        try:
            version = path.read_text().strip() if path is not None and path.is_file() else ""
        except OSError:
            return None
        return self.find_on_disk(version) if version else None

    async def load_initial(self) -> LoadedVersion:
        """The version to start on: the given version dir, else Redis' current one if it is on
        disk, else the last current one recorded on disk, else the newest on disk."""
        path = self.initial_dir
        from_redis = False
        if path is None and self.online is not None:
            try:
                current = await self.redis_current()
            except OnlineStoreError as exc:
                log.warning("cannot read the current version from Redis (%s); starting on the "
                            "last recorded one", exc)
                current = None
            if current is not None:
                path = self.find_on_disk(current)
                from_redis = path is not None
        if path is None:
            if self.root is None:
                raise PlexrecError("no snapshot directory given: the server needs --snapshot")
            path = self._persisted_current() or latest_snapshot(self.root)
        version = json.loads((path / MANIFEST).read_text()).get("version", path.name)
        lv = await self._load(version, path)
        self._set_current(lv)
        if from_redis:
            self._persist_current(lv.version)
        return lv

    async def get(self, version: str) -> LoadedVersion:
        """The requested version ("" = current). Raises InvalidVersion or VersionNotFound."""
        if version:
            check_requested_version(version)
        current = self.current
        if not version or (current is not None and version == current.version):
            if current is None:
                raise VersionNotFound("no version loaded yet")
            return current
        lv = self._loaded.get(version)
        if lv is not None:
            return lv
        path = self.find_on_disk(version) if version not in self._corrupt else None
        if path is not None:
            try:
                return await self._load(version, path)
            except SnapshotError as exc:
                self._corrupt[version] = str(exc)
                log.error("local copy of version %s is unusable (%s); serving it from Redis "
                          "if it is published there", version, exc)
        manifest = await self.redis_manifest(version, strict=True)
        if manifest is not None:
            return redis_only_version(manifest, version,
                                      await self._published_rotation(manifest, version))
        if version in self._corrupt:
            raise StoreCorrupt(f"version {version!r}: the local copy is corrupt and Redis does "
                               "not hold it")
        raise VersionNotFound(f"version {version!r} not found (not loaded, not under "
                              f"{self.root}, not published in namespace {self.namespace!r})")

    async def _load(self, version: str, path: Path) -> LoadedVersion:
        task = self._loading.get(version)
        if task is None:
            task = asyncio.create_task(self._load_task(version, path))
            self._loading[version] = task
            task.add_done_callback(lambda _t: self._loading.pop(version, None))
        return await asyncio.shield(task)

    async def _load_task(self, version: str, path: Path) -> LoadedVersion:
        manifest = await self.redis_manifest(version)
        log.info("loading version %s from %s", version, path)
        lv = await asyncio.to_thread(load_version, path, self.index_config, manifest)
        if lv.version != version:
            raise SnapshotError(f"{path}: holds version {lv.version}, expected {version}")
        self._remember(lv)
        return lv

    def _remember(self, lv: LoadedVersion) -> None:
        self._loaded[lv.version] = lv
        self._loaded.move_to_end(lv.version)
        while len(self._loaded) > self.keep:
            oldest = next(iter(self._loaded))
            if self.current is not None and oldest == self.current.version:
                self._loaded.move_to_end(oldest)
                if len(self._loaded) == 1:
                    break
                oldest = next(iter(self._loaded))
            self._loaded.pop(oldest)

    def _set_current(self, lv: LoadedVersion) -> None:
        previous = self.current
        self.current = lv
        self._remember(lv)
        if previous is None or previous.version != lv.version:
            log.info("serving version %s (%s index, %d items)", lv.version,
                     lv.index.kind if lv.index else "none", lv.counts.get("item", 0))

    async def sync_to(self, version: str) -> bool:
        """Moves to `version` if it differs from the current one and is on disk; also refreshes
        the partition count once the current version appears published. True on a swap."""
        current = self.current
        if current is not None and version == current.version:
            self._persist_current(version)
            if not current.published:
                manifest = await self.redis_manifest(version)
                if manifest is not None:
                    self.current = dataclasses.replace(
                        current, published=True,
                        partitions=int(manifest.get("partitions", rk.DEFAULT_PARTITIONS)))
                    self._loaded[version] = self.current
            return False
        path = self.find_on_disk(version)
        if path is None:
            log.warning("Redis points to version %s, which is not under %s; staying on %s",
                        version, self.root, current.version if current else None)
            return False
        lv = await self._load(version, path)
        if not lv.published:
            manifest = await self.redis_manifest(version)
            if manifest is not None:
                lv = dataclasses.replace(lv, published=True, partitions=int(
                    manifest.get("partitions", rk.DEFAULT_PARTITIONS)))
        self._set_current(lv)
        self._persist_current(lv.version)
        return True

    async def follow(self, poll_interval_s: float) -> None:
        """Tracks the live-version pointer: the store's update messages for promptness, polling
        as the fallback (a missed message or a dropped subscription costs at most one poll
        interval)."""
        online = self.online
        if online is None:
            return
        try:
            while self._following:
                try:
                    await online.wait_for_update(poll_interval_s)
                    current = await online.current()
                    self.redis_failed = False
                    if current is not None:
                        await self.sync_to(current)
                except PlexrecError as exc:
                    log.error("cannot switch versions: %s", exc)
                    await asyncio.sleep(poll_interval_s)
                except Exception as exc:  # noqa: BLE001 - store down: retry at the poll interval
                    if not self._following:
                        break
                    if not self.redis_failed:
                        log.warning("following the live-version pointer failed (%s); retrying "
                                    "every %.1fs", exc, poll_interval_s)
                    self.redis_failed = True
                    await asyncio.sleep(poll_interval_s)
        finally:
            await online.close_updates()
