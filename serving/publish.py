"""Publishes a snapshot's vectors to Redis as an immutable version, then moves the `current` pointer.

Crash safety comes from ordering, not from transactions over millions of fields:
1. the snapshot is verified (sha256, shapes) before anything is written;
2. a lock key marks the version as in progress, and leftovers of crashed runs (keys of versions
   that were never committed, including a partial copy of this very version) are swept;
3. vectors go into per-partition hashes as pipelined HSETs (RESP packed by one bytes-format call
   per command and written to the owning node's socket: redis-py's per-argument packing was the
   bottleneck), batch_size fields per round trip;
4. every partition's HLEN is checked against the snapshot and a sample of ids is read back and
   compared byte for byte; the files a reader needs to decode the rows (a binary snapshot's
   rotation) are written beside them and read back;
5. the manifest is written, and one Lua script adds the version to the committed set, moves the
   pointer and PUBLISHes the new version (the pointer can therefore only name a version whose
   manifest and vectors are complete);
6. only then are versions beyond `keep` retired (never the current one).
A rerun after a crash at any step ends in the same state as a clean run; a rerun after success is
a no-op that only re-asserts the pointer (re-publishing a retained older version is a rollback),
drops a stale lock, retires and sweeps. A lock held by a live process (or one on another host,
until its 60 s TTL lapses) makes a second publisher of the same version refuse rather than race.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import redis
from redis.cluster import RedisCluster

from plexrec.features.errors import ConfigError, PlexrecError
from plexrec.features.redact import redact, redact_url, url_secrets
from plexrec.models.snapshot import Snapshot
from plexrec.serving import redis_keys as rk

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 5000
VERIFY_SAMPLE = 4096
LOCK_TTL_MS = 60_000
_FIELDS_PER_COMMAND = 1000
_SCAN_COUNT = 1000
_SWEEP_REFRESH_KEYS = 10_000

# KEYS: current, versions. ARGV: version, score, channel. ZADD NX keeps the first commit time.
_COMMIT_LUA = """
redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[1])
local old = redis.call('GET', KEYS[1])
if old ~= ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('PUBLISH', ARGV[3], ARGV[1])
end
return old
"""

# KEYS: current, versions. ARGV: version. Refuses to retire the live version.
_RETIRE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

# KEYS: lock. ARGV: token. Deletes the lock only if this publisher still holds it.
_UNLOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: lock. ARGV: stale value, new token, ttl ms. Takes the lock over only if it still holds
# the stale value, so of two reruns that both saw the same dead holder exactly one wins.
_TAKEOVER_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return nil
"""


def take_over_lock(client: Any, key: str, stale: str | bytes, token: str,
                   ttl_ms: int = LOCK_TTL_MS) -> bool:
    """Replaces the lock value `stale` (a dead holder's) by `token`, atomically: a GET then SET
    would let two simultaneous reruns after a crash both believe they hold the lock."""
    script = client.register_script(_TAKEOVER_LUA)
    return script(keys=[key], args=[stale, token, ttl_ms]) is not None


@dataclass(frozen=True)
class PublishResult:
    version: str
    vectors_written: int
    seconds: float
    skipped: bool


def connect(redis_url: str, cluster: bool | None = None) -> redis.Redis | RedisCluster:
    """A client for a single server or a cluster; cluster=None asks the server (INFO cluster)."""
    try:
        if cluster is None:
            probe = redis.Redis.from_url(redis_url, socket_connect_timeout=5)
            try:
                cluster = bool(probe.info("cluster").get("cluster_enabled"))
            finally:
                probe.close()
        client = (RedisCluster.from_url(redis_url, socket_connect_timeout=5) if cluster
                  else redis.Redis.from_url(redis_url, socket_connect_timeout=5))
        client.ping()
        return client
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
            redis.exceptions.RedisClusterException) as exc:
        raise PlexrecError(f"cannot reach Redis at {redact_url(redis_url)}: "
                           f"{redact(str(exc), url_secrets(redis_url))}") from exc
    except ValueError as exc:
        raise ConfigError(f"bad Redis URL {redact_url(redis_url)!r}: "
                          f"{redact(str(exc), url_secrets(redis_url))}") from exc


def publish(snapshot_path: str | Path, redis_url: str, *, namespace: str = "default",
            keep: int = 3, partitions: int = rk.DEFAULT_PARTITIONS,
            batch_size: int = DEFAULT_BATCH_SIZE, cluster: bool | None = None,
            progress: bool = True) -> PublishResult:
    """Makes the snapshot the live version of `namespace` (see the module docstring)."""
    if keep < 1:
        raise ConfigError(f"keep must be >= 1, got {keep}")
    if partitions < 1:
        raise ConfigError(f"partitions must be >= 1, got {partitions}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    rk.validate_namespace(namespace)
    start = time.perf_counter()
    snap = Snapshot.open(snapshot_path, verify=True)
    version = rk.validate_version(snap.version)
    client = connect(redis_url, cluster)
    try:
        return _Publisher(client, snap, namespace, partitions, batch_size, progress).run(keep, start)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise PlexrecError(f"cannot reach Redis at {redact_url(redis_url)} (publishing "
                           f"{version}): {redact(str(exc), url_secrets(redis_url))}") from exc
    except redis.exceptions.RedisError as exc:
        raise PlexrecError(f"Redis at {redact_url(redis_url)} failed while publishing {version}: "
                           f"{redact(str(exc), url_secrets(redis_url))}; rerunning publish is "
                           "safe") from exc
    finally:
        client.close()


class _Publisher:
    def __init__(self, client: Any, snap: Snapshot, ns: str, partitions: int, batch_size: int,
                 progress: bool) -> None:
        self.client, self.snap, self.ns = client, snap, ns
        self.version = snap.version
        self.partitions, self.batch_size, self.progress = partitions, batch_size, progress
        self.is_cluster = isinstance(client, RedisCluster)
        self.commit_script = client.register_script(_COMMIT_LUA)
        self.retire_script = client.register_script(_RETIRE_LUA)
        self.unlock_script = client.register_script(_UNLOCK_LUA)
        self.ns_keys = [rk.current_key(ns), rk.versions_key(ns)]
        self._holds_lock = False

    def run(self, keep: int, start: float) -> PublishResult:
        if self._is_committed(self.version):
            self._drop_stale_lock()
            self._commit(manifest_written=True)
            self._retire(keep)
            self._sweep_orphans()
            log.info("version %s already published to namespace %s; pointer checked",
                     self.version, self.ns)
            return PublishResult(self.version, 0, time.perf_counter() - start, True)
        token = self._lock()
        self._holds_lock = True
        try:
            self._sweep_orphans()
            written = self._write_vectors()
            self._write_files()
            self._verify()
            self._commit(manifest_written=False)
        finally:
            self._holds_lock = False
            self.unlock_script(keys=[rk.lock_key(self.ns, self.version)], args=[token])
        self._retire(keep)
        seconds = time.perf_counter() - start
        log.info("published %s to namespace %s: %d vectors in %.1fs", self.version, self.ns,
                 written, seconds)
        return PublishResult(self.version, written, seconds, False)

    def _is_committed(self, version: str) -> bool:
        if self.client.zscore(rk.versions_key(self.ns), version) is None:
            return False
        return self.client.exists(rk.manifest_key(self.ns, version)) == 1

    def _lock(self) -> str:
        """Takes the version's lock; a lock left by a dead process on this host is taken over,
        a live one is refused so two publishers never sweep each other's writes."""
        key = rk.lock_key(self.ns, self.version)
        token = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                            "id": uuid.uuid4().hex})
        if self.client.set(key, token, nx=True, px=LOCK_TTL_MS):
            return token
        held = self.client.get(key)
        if held is None:
            if self.client.set(key, token, nx=True, px=LOCK_TTL_MS):
                return token
        elif _holder_is_dead(held) and take_over_lock(self.client, key, held, token):
            return token
        held = self.client.get(key) or held
        ttl = max(self.client.pttl(key), 0) / 1000
        raise PlexrecError(f"version {self.version} of namespace {self.ns!r} is being published "
                           f"by another process ({held!r}, lock {key} expires in {ttl:.0f}s)")

    def _drop_stale_lock(self) -> None:
        """A publisher killed between commit and unlock leaves its lock; the rerun removes it."""
        key = rk.lock_key(self.ns, self.version)
        held = self.client.get(key)
        if held is not None and _holder_is_dead(held):
            self.unlock_script(keys=[key], args=[held])

    def _write_vectors(self) -> int:
        lock = rk.lock_key(self.ns, self.version)
        writer = _RawWriter(self.client)
        try:
            self._feed(writer, lock)
        except BaseException:
            writer.abort()
            raise
        return writer.close() + self._written

    def _feed(self, writer: _RawWriter, lock: str) -> None:
        total = sum(self.snap.count(e) for e in self.snap.entities)
        self._written, next_report, last_refresh = 0, 0.1, time.monotonic()
        for entity in self.snap.entities:
            ids = self.snap.ids(entity)
            for part, positions in rk.group_by_partition(np.asarray(ids), self.partitions):
                key = rk.partition_key(self.ns, self.version, part, entity)
                for lo in range(0, positions.size, _FIELDS_PER_COMMAND):
                    sel = positions[lo:lo + _FIELDS_PER_COMMAND]
                    writer.hset(key, np.asarray(ids[sel]), self.snap.stored_rows(entity, sel))
                    if writer.fields >= self.batch_size:
                        self._written += writer.flush()
                        if time.monotonic() - last_refresh > LOCK_TTL_MS / 4000:
                            self.client.pexpire(lock, LOCK_TTL_MS)
                            last_refresh = time.monotonic()
                        if self.progress and self._written >= next_report * total:
                            log.info("%s: %d/%d vectors written", self.version, self._written,
                                     total)
                            next_report += 0.1

    def _files(self) -> list[str]:
        """Snapshot files the server needs beside the rows to decode them."""
        rotation = self.snap.manifest.get("rotation")
        return [rotation] if rotation else []

    def _write_files(self) -> None:
        for name in self._files():
            key = rk.version_file_key(self.ns, self.version, name)
            data = self.snap.file(name).read_bytes()
            self.client.set(key, data)
            if self.client.get(key) != data:
                raise PlexrecError(f"verification failed for {self.version}: {key} reads back "
                                   "different bytes; rerun publish")

    def _verify(self) -> None:
        """Exact per-partition field counts for every partition, plus a byte-for-byte read-back
        of up to VERIFY_SAMPLE ids per entity (a deterministic sample spread over partitions)."""
        for entity in self.snap.entities:
            ids = np.asarray(self.snap.ids(entity))
            expected = np.bincount(rk.partition_of_ids(ids, self.partitions),
                                   minlength=self.partitions)
            pipe = self.client.pipeline(transaction=False)
            for part in range(self.partitions):
                pipe.hlen(rk.partition_key(self.ns, self.version, part, entity))
            got = np.asarray(pipe.execute(), dtype=np.int64)
            bad = np.flatnonzero(got != expected)
            if bad.size:
                p = int(bad[0])
                raise PlexrecError(
                    f"verification failed for {self.version}: "
                    f"{rk.partition_key(self.ns, self.version, p, entity)} holds {got[p]} "
                    f"vectors, expected {expected[p]} (another writer or eviction?); rerun publish")
            n = ids.size
            sample = (np.arange(n) if n <= VERIFY_SAMPLE else
                      np.sort(np.random.default_rng(0).choice(n, VERIFY_SAMPLE, replace=False)))
            pipe = self.client.pipeline(transaction=False)
            groups = rk.group_by_partition(ids[sample], self.partitions)
            for part, pos in groups:
                pipe.hmget(rk.partition_key(self.ns, self.version, part, entity),
                           rk.encode_ids(ids[sample[pos]]))
            for (_, pos), blobs in zip(groups, pipe.execute(), strict=True):
                want = rk.encode_rows(self.snap.stored_rows(entity, sample[pos]))
                for row, (a, b) in enumerate(zip(blobs, want, strict=True)):
                    if a != b:
                        raise PlexrecError(
                            f"verification failed for {self.version}: {entity} id "
                            f"{int(ids[sample[pos[row]]])} reads back different bytes; rerun")

    def _commit(self, manifest_written: bool) -> None:
        if not manifest_written:
            manifest = dict(self.snap.manifest)
            manifest["partitions"] = self.partitions
            manifest["published_at"] = datetime.now(UTC).isoformat()
            self.client.set(rk.manifest_key(self.ns, self.version),
                            json.dumps(manifest, sort_keys=True))
        old = self.commit_script(keys=self.ns_keys,
                                 args=[self.version, time.time(), rk.updates_channel(self.ns)])
        old = old.decode() if isinstance(old, bytes) else old
        if old != self.version:
            log.info("namespace %s: current %s -> %s", self.ns, old, self.version)

    def _retire(self, keep: int) -> None:
        """Drops committed versions beyond the newest `keep` (never the live one): first from the
        committed set (atomically checked against the pointer), then their keys."""
        members = [m.decode() if isinstance(m, bytes) else m
                   for m in self.client.zrevrange(rk.versions_key(self.ns), 0, -1)]
        for victim in members[keep:]:
            if not self.retire_script(keys=self.ns_keys, args=[victim]):
                continue
            manifest = rk.read_manifest(self.client, self.ns, victim) or {}
            keys = [rk.manifest_key(self.ns, victim)]
            if manifest.get("rotation"):
                keys.append(rk.version_file_key(self.ns, victim, str(manifest["rotation"])))
            parts = int(manifest.get("partitions", self.partitions))
            for entity in manifest.get("entities", {"user": 0, "item": 0}):
                keys += [rk.partition_key(self.ns, victim, p, entity) for p in range(parts)]
            self._unlink(keys)
            log.info("namespace %s: retired version %s", self.ns, victim)

    def _sweep_orphans(self) -> None:
        """Deletes keys of versions that are neither committed nor live nor locked by a running
        publisher: the leftovers of a crash (SCAN over every primary, only at publish time)."""
        by_version: dict[str, list[bytes]] = defaultdict(list)
        pattern = rk.version_keys_pattern(self.ns)
        scan_kwargs: dict[str, Any] = {"match": pattern, "count": _SCAN_COUNT}
        if self.is_cluster:
            scan_kwargs["target_nodes"] = RedisCluster.PRIMARIES
        lock = rk.lock_key(self.ns, self.version)
        for scanned, key in enumerate(self.client.scan_iter(**scan_kwargs), 1):
            if self._holds_lock and scanned % _SWEEP_REFRESH_KEYS == 0:
                self.client.pexpire(lock, LOCK_TTL_MS)
            version = rk.version_of_key(self.ns, key)
            if version is not None:
                by_version[version].append(key)
        if not by_version:
            return
        committed = {m.decode() if isinstance(m, bytes) else m
                     for m in self.client.zrange(rk.versions_key(self.ns), 0, -1)}
        live = rk.read_current(self.client, self.ns)
        for version, keys in by_version.items():
            if version in committed or version == live:
                continue
            lock = rk.lock_key(self.ns, version)
            if version == self.version:
                keys = [k for k in keys if _text(k) != lock]
                if not keys:
                    continue
            elif self.client.exists(lock):
                log.info("namespace %s: version %s is being published elsewhere; left alone",
                         self.ns, version)
                continue
            self._unlink(keys)
            log.info("namespace %s: removed %d keys of uncommitted version %s", self.ns,
                     len(keys), version)

    def _unlink(self, keys: list) -> None:
        if not keys:
            return
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.unlink(key)
        pipe.execute()


_POW10 = np.array([10**i for i in range(20)], dtype=np.uint64)


def _decimal_lengths(ids: np.ndarray) -> np.ndarray:
    """len(str(id)) for every id, vectorised (the RESP length prefix of each hash field)."""
    neg = ids < 0
    raw = ids.astype(np.int64).view(np.uint64)
    magnitude = np.where(neg, ~raw + np.uint64(1), raw)
    return np.maximum(np.searchsorted(_POW10, magnitude, side="right"), 1) + neg


def pack_hset(key: str, ids: np.ndarray, vectors: np.ndarray) -> bytes:
    """One RESP-encoded `HSET key id1 row1 id2 row2 ...`, built by a single bytes-format call;
    a row is the raw bytes of one row of `vectors` (float32 vectors, or a snapshot's stored
    rows). The same bytes redis-py would send, without its per-argument Python loop."""
    k, row = int(ids.size), int(vectors.shape[1]) * vectors.itemsize
    key_b = key.encode()
    head = b"*%d\r\n$4\r\nHSET\r\n$%d\r\n%b\r\n" % (2 + 2 * k, len(key_b), key_b)
    flat: list[Any] = [None] * (3 * k)
    flat[0::3] = _decimal_lengths(ids).tolist()
    flat[1::3] = ids.tolist()
    flat[2::3] = rk.encode_rows(vectors)
    return head + (b"$%d\r\n%d\r\n$" + str(row).encode() + b"\r\n%b\r\n") * k % tuple(flat)


class _RawWriter:
    """Pipelines pre-packed HSETs straight onto the socket of the node owning each key (on a
    cluster, per slot owner). redis-py packs one argument at a time in Python, which costs more
    than Redis itself at millions of fields. Replies of one flush are read after the next flush
    is sent, so packing overlaps with Redis applying the previous batch. A MOVED/ASK reply
    (resharding during a publish) fails the publish; the rerun starts clean."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.is_cluster = isinstance(client, RedisCluster)
        self.conns: dict[int, tuple[Any, Any]] = {}
        self.queued: dict[int, list[bytes]] = {}
        self.unread: dict[int, int] = {}
        self.fields = self.in_flight = 0

    def _target(self, key: str) -> redis.Redis:
        if not self.is_cluster:
            return self.client
        return self.client.get_redis_connection(self.client.get_node_from_key(key))

    def hset(self, key: str, ids: np.ndarray, vectors: np.ndarray) -> None:
        target = self._target(key)
        if id(target) not in self.conns:
            pool = target.connection_pool
            self.conns[id(target)] = (pool, pool.get_connection())
        self.queued.setdefault(id(target), []).append(pack_hset(key, ids, vectors))
        self.fields += int(ids.size)

    def flush(self) -> int:
        """Sends what is queued, then confirms the previous flush; returns the fields confirmed."""
        try:
            for tid, commands in self.queued.items():
                self.conns[tid][1].send_packed_command(commands)
            self._read_replies()
        except BaseException:
            self.abort()
            raise
        self.unread = {tid: len(commands) for tid, commands in self.queued.items()}
        self.queued = {}
        confirmed, self.in_flight, self.fields = self.in_flight, self.fields, 0
        return confirmed

    def _read_replies(self) -> None:
        for tid, count in self.unread.items():
            conn = self.conns[tid][1]
            for _ in range(count):
                try:
                    conn.read_response()
                except redis.exceptions.ResponseError as exc:
                    raise PlexrecError(f"Redis refused a vector write ({exc}); rerun publish") \
                        from exc

    def close(self) -> int:
        """Sends the rest and waits for every reply; returns the fields confirmed."""
        confirmed = self.flush() + self.flush()
        for pool, conn in self.conns.values():
            pool.release(conn)
        self.conns.clear()
        return confirmed

    def abort(self) -> None:
        for pool, conn in self.conns.values():
            conn.disconnect()
            pool.release(conn)
        self.conns.clear()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _holder_is_dead(held: bytes | str) -> bool:
    try:
        holder = json.loads(held)
        host, pid = holder["host"], int(holder["pid"])
    except (ValueError, KeyError, TypeError):
        return True
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
