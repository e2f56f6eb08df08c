"""Stable 64-bit hashing, bit-identical in numpy and torch, in every process, run and machine.

Python's hash() is salted per process, so it never appears here. Integer ids are mixed with
SplitMix64's finalizer (seeded), strings first go through xxh64."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import xxhash

if TYPE_CHECKING:
    import torch

_MASK63 = (1 << 63) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_U64 = (1 << 64) - 1
_PARTITION_SEED = 0x5EED


def _signed(x: int) -> int:
    return x - (1 << 64) if x >= 1 << 63 else x


def hash_strings(values: Iterable[str], seed: int = 0) -> np.ndarray:
    """xxh64 of each string as a non-negative int64 (top bit cleared)."""
    return np.fromiter((xxhash.xxh64_intdigest(v.encode(), seed) & _MASK63 for v in values),
                       dtype=np.int64)


def hash_ids_np(ids: np.ndarray, seed: int = 0) -> np.ndarray:
    """SplitMix64 of (id + seed * golden); non-negative int64. Vectorised, no Python loop."""
    x = ids.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x += np.uint64((seed * _GOLDEN + _GOLDEN) & ((1 << 64) - 1))
        x ^= x >> np.uint64(30)
        x *= np.uint64(_M1)
        x ^= x >> np.uint64(27)
        x *= np.uint64(_M2)
        x ^= x >> np.uint64(31)
    return (x & np.uint64(_MASK63)).astype(np.int64)


def hash_ids_torch(ids: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The same function as hash_ids_np on an int64 torch tensor (wrapping arithmetic, logical
    shifts emulated with masks), so training and serving agree bit for bit."""
    import torch

    def shr(x: torch.Tensor, s: int) -> torch.Tensor:
        return (x >> s) & ((1 << (64 - s)) - 1)

    x = ids.to(torch.int64) + _signed((seed * _GOLDEN + _GOLDEN) & ((1 << 64) - 1))
    x = x ^ shr(x, 30)
    x = x * _signed(_M1)
    x = x ^ shr(x, 27)
    x = x * _signed(_M2)
    x = x ^ shr(x, 31)
    return x & _MASK63


def hash_id(id_: int, seed: int = 0) -> int:
    """hash_ids_np for one Python int: a one-id look-up would spend ~15 us setting up arrays."""
    x = ((id_ & _U64) + ((seed * _GOLDEN + _GOLDEN) & _U64)) & _U64
    x ^= x >> 30
    x = (x * _M1) & _U64
    x ^= x >> 27
    x = (x * _M2) & _U64
    x ^= x >> 31
    return x & _MASK63


def partition_of(ids: np.ndarray, partitions: int) -> np.ndarray:
    """Which of `partitions` buckets an id falls in: the Redis key layout depends on this."""
    return hash_ids_np(ids, seed=_PARTITION_SEED) % partitions


def partition_of_one(id_: int, partitions: int) -> int:
    """partition_of for a single id, without numpy."""
    return hash_id(id_, seed=_PARTITION_SEED) % partitions
