"""Stable hashing: the numpy, torch and plain-Python versions are one function."""

from __future__ import annotations

import numpy as np
import torch

from plexrec.features.hashing import hash_id, hash_ids_np, hash_ids_torch

EDGE_IDS = [0, 1, -1, -5, 2**62, 2**63 - 1, -(2**63), 123456789]


def test_numpy_torch_and_scalar_hashes_agree() -> None:
    ids = np.concatenate([np.array(EDGE_IDS, dtype=np.int64),
                          np.random.default_rng(0).integers(-(2**63), 2**63 - 1, 1000)])
    for seed in (0, 3, 0x5EED):
        want = hash_ids_np(ids, seed)
        assert (want >= 0).all()
        assert np.array_equal(hash_ids_torch(torch.from_numpy(ids), seed).numpy(), want)
        assert [hash_id(i, seed) for i in ids.tolist()] == want.tolist()


def test_seed_changes_the_hash() -> None:
    ids = np.arange(1000, dtype=np.int64)
    assert (hash_ids_np(ids, 1) != hash_ids_np(ids, 2)).mean() > 0.99
