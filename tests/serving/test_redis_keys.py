"""The key layout: exact names (the server depends on them), hash tags, grouping and encoding."""

from __future__ import annotations

import numpy as np
import pytest
from redis.crc import key_slot

from plexrec.features.errors import ConfigError
from plexrec.features.hashing import partition_of
from plexrec.serving import redis_keys as rk


def test_exact_key_names() -> None:
    assert rk.current_key("ns") == "plexrec:{ns}:current"
    assert rk.versions_key("ns") == "plexrec:{ns}:versions"
    assert rk.updates_channel("ns") == "plexrec:{ns}:updates"
    assert rk.manifest_key("ns", "v1") == "plexrec:{ns:v1}:manifest"
    assert rk.partition_key("ns", "v1", 7, "item") == "plexrec:{ns:v1:p7}:item"
    assert rk.PREFIX == "plexrec" and rk.DEFAULT_PARTITIONS == 16


def test_hash_tags_group_namespace_and_spread_partitions() -> None:
    assert key_slot(rk.current_key("ns").encode()) == key_slot(rk.versions_key("ns").encode())
    slots = {key_slot(rk.partition_key("ns", "v1", p, "item").encode()) for p in range(16)}
    assert len(slots) == 16
    assert key_slot(rk.partition_key("ns", "v1", 3, "item").encode()) == key_slot(
        rk.partition_key("ns", "v1", 3, "user").encode())


@pytest.mark.parametrize("bad", ["", "a:b", "a{b", "a}b", "a b", None])
def test_bad_namespace_and_version_rejected(bad) -> None:
    with pytest.raises(ConfigError, match="invalid Redis namespace"):
        rk.current_key(bad)
    with pytest.raises(ConfigError, match="invalid Redis version"):
        rk.manifest_key("ns", bad)


def test_version_of_key_and_scan_pattern() -> None:
    assert rk.version_of_key("ns", rk.partition_key("ns", "v-1.2", 3, "user")) == "v-1.2"
    assert rk.version_of_key("ns", rk.manifest_key("ns", "v9").encode()) == "v9"
    assert rk.version_of_key("ns", rk.current_key("ns")) is None
    assert rk.version_of_key("ns", rk.manifest_key("ns2", "v9")) is None
    assert rk.version_keys_pattern("a*[b]") == "plexrec:{a\\*\\[b\\]:*"


def test_group_by_partition_matches_partition_of() -> None:
    ids = np.random.default_rng(1).integers(-10**12, 10**12, 5000)
    groups = rk.group_by_partition(ids, 16)
    assert np.array_equal(rk.partition_of_ids(ids, 16), partition_of(ids, 16))
    seen = np.concatenate([pos for _, pos in groups])
    assert np.array_equal(np.sort(seen), np.arange(5000))
    for part, pos in groups:
        assert (partition_of(ids[pos], 16) == part).all() and (np.diff(pos) > 0).all()
    [(part, pos)] = rk.group_by_partition(np.array([5]), 16)
    assert part == int(partition_of(np.array([5]), 16)[0]) and pos.tolist() == [0]
    with pytest.raises(ConfigError, match="partitions must be >= 1"):
        rk.group_by_partition(ids, 0)


def test_encode_decode_round_trip_bit_for_bit() -> None:
    vecs = np.random.default_rng(2).standard_normal((100, 5)).astype(np.float32)
    vecs[0, 0] = -0.0
    blobs = rk.encode_vectors(vecs)
    assert len(blobs) == 100 and all(isinstance(b, bytes) and len(b) == 20 for b in blobs)
    assert blobs[7] == vecs[7].astype("<f4").tobytes()
    assert rk.decode_vectors(blobs, 5).tobytes() == vecs.tobytes()
    assert rk.encode_ids(np.array([3, -4])) == ["3", "-4"]


def test_decode_marks_misses_and_rejects_bad_lengths() -> None:
    blob = np.arange(3, dtype="<f4").tobytes()
    out = rk.decode_vectors([blob, None], 3)
    assert out[0].tolist() == [0.0, 1.0, 2.0] and np.isnan(out[1]).all()
    with pytest.raises(ValueError, match="blob 1 has 8 bytes, expected 12"):
        rk.decode_vectors([blob, blob[:8]], 3)
