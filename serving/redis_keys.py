"""The Redis key layout shared by the publisher and the server: one place decides every key name.

Hash tags (the part in braces) decide the Redis Cluster slot: `{ns}` keeps a namespace's pointer
and version list in one slot (so a Lua script can move them together), `{ns:version}` holds a
version's manifest, and `{ns:version:pN}` puts each vector partition in its own slot so a version
spreads over every node while a batch look-up stays one HMGET per partition.

    plexrec:{ns}:current                  -> the live version (string)
    plexrec:{ns}:versions                 -> sorted set of committed versions, score = commit time
    plexrec:{ns}:updates                  -> pub/sub channel; the new version after a pointer move
    plexrec:{ns:version}:manifest         -> manifest JSON + "partitions" + "published_at"
    plexrec:{ns:version}:lock             -> held by a publisher while it writes the version
    plexrec:{ns:version}:file:<name>      -> a snapshot file the stored rows need to be decoded
                                             (the binary dtype's rotation.npy), its bytes as is
    plexrec:{ns:version:pN}:<entity>      -> HASH: decimal id -> the stored row: code bytes then
                                             the float32 scale (models.vector_codecs; raw
                                             little-endian float32 for dtype float32)
    plexrec:{ns:version:pN}:<entity>:cache:<id> -> write-back cache of one id (SET EX ttl)
"""

from __future__ import annotations

import functools
import json
from typing import Any, cast

import numpy as np

from plexrec.features.errors import ConfigError
from plexrec.features.hashing import partition_of

PREFIX = "plexrec"
DEFAULT_PARTITIONS = 16
_FORBIDDEN = ("{", "}", ":")
_F32 = np.dtype("<f4")


def validate_namespace(ns: str) -> str:
    """Braces or colons would break the hash tags (and the parsing of scanned keys)."""
    return _validate("namespace", ns)


def validate_version(v: str) -> str:
    return _validate("version", v)


def _validate(kind: str, value: str) -> str:
    if not isinstance(value, str) or not value or any(c in value for c in _FORBIDDEN):
        raise ConfigError(f"invalid Redis {kind} {value!r}: must be a non-empty string without "
                          "'{', '}' or ':'")
    if any(c.isspace() for c in value):
        raise ConfigError(f"invalid Redis {kind} {value!r}: must not contain whitespace")
    return value


def current_key(ns: str) -> str:
    return f"{PREFIX}:{{{validate_namespace(ns)}}}:current"


def versions_key(ns: str) -> str:
    return f"{PREFIX}:{{{validate_namespace(ns)}}}:versions"


def updates_channel(ns: str) -> str:
    return f"{PREFIX}:{{{validate_namespace(ns)}}}:updates"


def manifest_key(ns: str, version: str) -> str:
    return f"{PREFIX}:{{{validate_namespace(ns)}:{validate_version(version)}}}:manifest"


def lock_key(ns: str, version: str) -> str:
    """Marks a version as being written, so another publisher's orphan sweep leaves it alone."""
    return f"{PREFIX}:{{{validate_namespace(ns)}:{validate_version(version)}}}:lock"


def version_file_key(ns: str, version: str, name: str) -> str:
    """A snapshot file published beside the manifest (the rotation of a binary version)."""
    return f"{PREFIX}:{{{validate_namespace(ns)}:{validate_version(version)}}}:file:{name}"


def partition_key(ns: str, version: str, partition: int, entity: str) -> str:
    return (f"{PREFIX}:{{{validate_namespace(ns)}:{validate_version(version)}:p{int(partition)}}}"
            f":{entity}")


def version_keys_pattern(ns: str) -> str:
    """SCAN MATCH pattern for every per-version key of a namespace (not current/versions)."""
    escaped = "".join("\\" + c if c in "*?[]\\" else c for c in validate_namespace(ns))
    return f"{PREFIX}:{{{escaped}:*"


def version_of_key(ns: str, key: str | bytes) -> str | None:
    """The version a per-version key belongs to (None if the key is not one)."""
    if isinstance(key, bytes):
        key = key.decode()
    head = f"{PREFIX}:{{{ns}:"
    if not key.startswith(head):
        return None
    rest = key[len(head):]
    end = min((i for i in (rest.find(":"), rest.find("}")) if i >= 0), default=-1)
    return rest[:end] if end > 0 else None


def partition_of_ids(ids: np.ndarray, partitions: int) -> np.ndarray:
    """Partition of each id; the same function as features.hashing.partition_of."""
    if int(partitions) < 1:
        raise ConfigError(f"partitions must be >= 1, got {partitions}")
    return partition_of(np.asarray(ids, dtype=np.int64), int(partitions))


@functools.lru_cache(maxsize=64)
def partition_keys(ns: str, version: str, partitions: int, entity: str) -> tuple[bytes, ...]:
    """Every partition key of a (version, entity), built, validated and encoded once, not per
    request (redis-py passes bytes arguments through without re-encoding)."""
    return tuple(partition_key(ns, version, p, entity).encode() for p in range(partitions))


def cache_key(ns: str, version: str, partition: int, entity: str, id_: int) -> str:
    """The write-back cache key of one id: its published partition's key (same hash tag, same
    cluster slot) + `:cache:<id>`."""
    return f"{partition_key(ns, version, partition, entity)}:cache:{id_}"


def cache_key_bytes(ns: str, version: str, partitions: int, entity: str, partition: int,
                    id_: int) -> bytes:
    """cache_key as bytes, from the cached partition keys (the hot path)."""
    return partition_keys(ns, version, partitions, entity)[partition] + b":cache:%d" % id_


def group_by_partition(ids: np.ndarray, partitions: int) -> list[tuple[int, np.ndarray]]:
    """(partition, positions into ids) for each non-empty partition, positions ascending, so a
    batch look-up becomes one HMGET per partition. Vectorised: one argsort, one split."""
    parts = partition_of_ids(ids, partitions)
    order = np.argsort(parts, kind="stable")
    counts = np.bincount(parts, minlength=int(partitions))
    chunks = np.split(order, np.cumsum(counts)[:-1])
    return [(p, chunks[p]) for p in np.flatnonzero(counts).tolist()]


def encode_ids(ids: np.ndarray) -> list[str]:
    """Hash field names: the ids as decimal ASCII."""
    return list(map(str, np.asarray(ids, dtype=np.int64).tolist()))


def encode_vectors(vectors: np.ndarray) -> list[bytes]:
    """One bytes object per row: the raw little-endian float32 values (width * 4 bytes)."""
    arr = np.ascontiguousarray(vectors, dtype=_F32)
    if arr.ndim != 2:
        raise ValueError(f"encode_vectors expects [n, width], got shape {arr.shape}")
    if arr.shape[0] == 0:
        return []
    return cast(list[bytes], arr.view(np.dtype((np.void, arr.shape[1] * 4))).reshape(-1).tolist())


def encode_rows(rows: np.ndarray) -> list[bytes]:
    """One bytes object per row of a 2-D array: the row's raw bytes (stored rows, any dtype)."""
    arr = np.ascontiguousarray(rows)
    if arr.ndim != 2:
        raise ValueError(f"encode_rows expects [n, bytes], got shape {arr.shape}")
    if arr.shape[0] == 0:
        return []
    row = arr.shape[1] * arr.itemsize
    return cast(list[bytes], arr.view(np.dtype((np.void, row))).reshape(-1).tolist())


def decode_vectors(blobs: list[bytes | None], width: int) -> np.ndarray:
    """float32 [len(blobs), width]; a None (an id Redis did not have) becomes a row of NaN, so
    `np.isnan(out[:, 0])` marks the misses. A blob of the wrong length raises ValueError."""
    row = int(width) * 4
    nan_row = np.full(int(width), np.nan, dtype=_F32).tobytes()
    parts: list[bytes] = []
    for i, b in enumerate(blobs):
        if b is None:
            parts.append(nan_row)
        elif len(b) != row:
            raise ValueError(f"vector blob {i} has {len(b)} bytes, expected {row} "
                             f"(width {width})")
        else:
            parts.append(b)
    out = np.frombuffer(b"".join(parts), dtype=_F32).reshape(len(parts), int(width))
    return out.astype(np.float32, copy=True)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def read_current(client: Any, ns: str) -> str | None:
    """The live version of a namespace, or None before the first publish."""
    return _text(client.get(current_key(ns)))


def read_manifest(client: Any, ns: str, version: str) -> dict | None:
    """The published manifest of a version (None if absent, e.g. already retired)."""
    raw = client.get(manifest_key(ns, version))
    return None if raw is None else json.loads(raw)
