"""The store interface of the serving tier. `VectorStore.lookup(version, entity, ids)` is what
the gRPC service calls; an `OnlineStore` (Redis...) is a shared store of published versions with
a write-back cache, composed with the local snapshot by `stores.fallback.FallbackStore`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from plexrec.features.errors import PlexrecError
from plexrec.models.snapshot import Snapshot
from plexrec.models.vector_codecs import Codec


class StoreUnavailable(PlexrecError):
    """No store can answer (the online store failed and the version is not on local disk)."""


class StoreCorrupt(PlexrecError):
    """A stored value or copy that fails its check (a Redis value of the wrong length, a local
    snapshot whose checksum differs) and nothing intact to answer from: DATA_LOSS, never a
    silent miss."""


class OnlineStoreError(Exception):
    """An online store failed (connection, timeout): the fallback store trips its breaker."""


class VersionView(Protocol):
    """What a store needs to know about a version (serving.versions.LoadedVersion)."""

    @property
    def version(self) -> str: ...
    @property
    def width(self) -> int: ...
    @property
    def partitions(self) -> int: ...
    @property
    def published(self) -> bool: ...
    @property
    def snapshot(self) -> Snapshot | None: ...
    @property
    def codec(self) -> Codec:
        """How the version's rows are stored (models.vector_codecs)."""
        ...
    @property
    def rotation(self) -> np.ndarray | None: ...
    @property
    def row_bytes(self) -> int:
        """Bytes of one stored row (a Redis value)."""
        ...


@dataclass(frozen=True)
class StoreStats:
    redis_hits: int
    cache_hits: int
    snapshot_reads: int
    redis_errors: int
    redis_malformed: int
    breaker_open: bool


class VectorStore(Protocol):
    async def lookup(self, view: VersionView, entity: str, ids: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
        """(found bool [n], vectors float32 [found.sum(), width]) in request order."""
        ...

    async def lookup_stored(self, view: VersionView, entity: str, ids: np.ndarray
                            ) -> tuple[np.ndarray, np.ndarray]:
        """(found bool [n], stored rows uint8 [found.sum(), row_bytes]) in request order."""
        ...

    def stats(self) -> StoreStats: ...

    async def close(self) -> None: ...


class OnlineStore(Protocol):
    """A shared store of published versions. Every method raises OnlineStoreError on failure;
    values are stored rows, code bytes then scale (models.vector_codecs; None: absent)."""

    async def read_published(self, view: VersionView, entity: str, ids: np.ndarray
                             ) -> tuple[np.ndarray | None, list[bytes | None]]:
        """(order, values): values[j] belongs to ids[order[j]] (order None: request order)."""
        ...

    async def read_cache(self, view: VersionView, entity: str, ids: np.ndarray
                         ) -> list[bytes | None]:
        """Rows written back earlier, as stored (the caller checks their length)."""
        ...

    async def write_cache(self, view: VersionView, entity: str,
                          writes: list[tuple[int, bytes]]) -> None: ...

    async def manifest(self, version: str) -> dict[str, Any] | None:
        """The published manifest of a version (None: not published, or retired)."""
        ...

    async def version_file(self, version: str, name: str) -> bytes | None:
        """A snapshot file published beside the version's rows (None: absent)."""
        ...

    async def current(self) -> str | None:
        """The live version of the namespace (None before the first publish)."""
        ...

    async def wait_for_update(self, timeout_s: float) -> None:
        """Returns when the live version may have moved, or after `timeout_s`."""
        ...

    async def close_updates(self) -> None: ...

    async def close(self) -> None: ...
