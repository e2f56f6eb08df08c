"""Publishing against a real redis-server: read-back, idempotence, retention, crash recovery."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import redis

from plexrec.cli.main import main as cli_main
from plexrec.features.errors import ConfigError, PlexrecError
from plexrec.models.snapshot import Snapshot, SnapshotError
from plexrec.serving import redis_keys as rk
from plexrec.serving.publish import pack_hset, publish
from plexrec.serving.redis_process import free_port
from tests.serving.helpers import dump_state, make_snapshot


@pytest.fixture()
def client(redis_url: str):
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def read_back(client: redis.Redis, ns: str, snap: Snapshot) -> None:
    """Every vector of every entity, fetched the way the server does (HMGET per partition)."""
    version = rk.read_current(client, ns)
    manifest = rk.read_manifest(client, ns, version)
    assert version == snap.version and manifest["version"] == snap.version
    parts = manifest["partitions"]
    for entity in snap.entities:
        ids = np.asarray(snap.ids(entity))
        out = np.empty((ids.size, manifest["width"]), dtype=np.float32)
        pipe = client.pipeline(transaction=False)
        groups = rk.group_by_partition(ids, parts)
        for part, pos in groups:
            pipe.hmget(rk.partition_key(ns, version, part, entity), rk.encode_ids(ids[pos]))
        for (_, pos), blobs in zip(groups, pipe.execute(), strict=True):
            out[pos] = rk.decode_vectors(blobs, manifest["width"])
        assert out.tobytes() == np.asarray(snap.vectors(entity)).tobytes()


def version_keys(client: redis.Redis, ns: str, version: str) -> list[bytes]:
    return sorted(client.scan_iter(match=f"plexrec:{{{ns}:{version}*", count=1000))


def test_publish_reads_back_every_vector(tmp_path: Path, redis_url: str, client) -> None:
    path = make_snapshot(tmp_path)
    result = publish(path, redis_url, namespace="shop", partitions=8, batch_size=700,
                     progress=False)
    snap = Snapshot.open(path)
    assert result.version == snap.version and not result.skipped
    assert result.vectors_written == 3500 and result.seconds > 0
    read_back(client, "shop", snap)
    manifest = rk.read_manifest(client, "shop", snap.version)
    assert manifest["partitions"] == 8 and manifest["published_at"]
    assert manifest["files"] == snap.manifest["files"]
    keys = {k.decode() for k in client.keys("*")}
    expected = {rk.current_key("shop"), rk.versions_key("shop"),
                rk.manifest_key("shop", snap.version)}
    expected |= {rk.partition_key("shop", snap.version, p, e) for p in range(8)
                 for e in ("user", "item")}
    assert keys == expected
    assert client.zrange(rk.versions_key("shop"), 0, -1) == [snap.version.encode()]


def test_rerun_is_a_noop(tmp_path: Path, redis_url: str, client) -> None:
    path = make_snapshot(tmp_path)
    first = publish(path, redis_url, progress=False)
    before = dump_state(client)
    again = publish(path, redis_url, progress=False)
    assert again.skipped and again.version == first.version and again.vectors_written == 0
    assert dump_state(client) == before


def test_rerun_after_a_crash_between_commit_and_unlock(tmp_path: Path, redis_url: str,
                                                      client) -> None:
    path = make_snapshot(tmp_path)
    publish(path, redis_url, progress=False)
    before = dump_state(client)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    client.set(rk.lock_key("default", path.name),
               json.dumps({"host": socket.gethostname(), "pid": dead.pid, "id": "old"}))
    assert publish(path, redis_url, progress=False).skipped
    assert dump_state(client) == before


def test_a_live_publisher_of_the_same_version_is_not_disturbed(tmp_path: Path, redis_url: str,
                                                              client) -> None:
    path = make_snapshot(tmp_path, n_users=0, n_items=100)
    holder = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "id": "other"})
    client.set(rk.lock_key("default", path.name), holder, px=60_000)
    client.hset(rk.partition_key("default", path.name, 0, "item"), "1", b"partial")
    with pytest.raises(PlexrecError, match=f"{path.name} .* being published by another process"):
        publish(path, redis_url, progress=False)
    assert client.hget(rk.partition_key("default", path.name, 0, "item"), "1") == b"partial"
    assert rk.read_current(client, "default") is None


def test_pointer_move_is_announced(tmp_path: Path, redis_url: str, client) -> None:
    pubsub = client.pubsub()
    pubsub.subscribe(rk.updates_channel("default"))
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"
    result = publish(make_snapshot(tmp_path), redis_url, progress=False)
    msg = pubsub.get_message(timeout=2)
    assert msg["type"] == "message" and msg["data"] == result.version.encode()
    publish(make_snapshot(tmp_path), redis_url, progress=False)
    assert pubsub.get_message(timeout=0.2) is None
    pubsub.close()


def test_retention_deletes_old_versions_after_the_pointer_moves(tmp_path: Path, redis_url: str,
                                                                client) -> None:
    paths = [make_snapshot(tmp_path, seed=s, n_users=0, n_items=400) for s in range(4)]
    versions = [p.name for p in paths]
    for p in paths[:2]:
        publish(p, redis_url, keep=2, progress=False)
    client.config_set("notify-keyspace-events", "KA")
    events = client.pubsub()
    events.psubscribe("__keyspace@0__:plexrec:*")
    try:
        for p in paths[2:]:
            publish(p, redis_url, keep=2, progress=False)
        log: list[tuple[str, str]] = []
        while (msg := events.get_message(timeout=0.5)) is not None:
            if msg["type"] == "pmessage":
                log.append((msg["channel"].decode().split(":", 1)[1], msg["data"].decode()))
    finally:
        client.config_set("notify-keyspace-events", "")
        events.close()
    assert rk.read_current(client, "default") == versions[3]
    assert [m.decode() for m in client.zrevrange(rk.versions_key("default"), 0, -1)] == \
        versions[:1:-1]
    for old in versions[:2]:
        assert version_keys(client, "default", old) == []
    for new in versions[2:]:
        assert len(version_keys(client, "default", new)) == 17
    for moved_to, retired in ((2, 0), (3, 1)):
        pointer_set = log.index((rk.current_key("default"), "set"))
        first_delete = next(i for i, (key, ev) in enumerate(log)
                            if f":{versions[retired]}" in key and ev == "del")
        assert pointer_set < first_delete, (moved_to, log[:first_delete + 1])
        log = log[pointer_set + 1:]


def test_republishing_an_older_version_rolls_back_and_keeps_the_live_one(
        tmp_path: Path, redis_url: str, client) -> None:
    a = make_snapshot(tmp_path, seed=1, n_users=0, n_items=300)
    b = make_snapshot(tmp_path, seed=2, n_users=0, n_items=300)
    publish(a, redis_url, progress=False)
    publish(b, redis_url, progress=False)
    result = publish(a, redis_url, keep=1, progress=False)
    assert result.skipped and rk.read_current(client, "default") == a.name
    read_back(client, "default", Snapshot.open(a))
    assert rk.read_manifest(client, "default", b.name) is not None


def test_orphans_of_crashed_runs_are_swept(tmp_path: Path, redis_url: str, client) -> None:
    blob = b"\0" * 64
    client.hset(rk.partition_key("default", "vdead", 3, "item"), "1", blob)
    client.hset(rk.partition_key("default", "vdead", 40, "user"), "2", blob)
    client.set(rk.manifest_key("default", "vdead"), "{}")
    live_holder = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "id": "x"})
    client.set(rk.lock_key("default", "vbusy"), live_holder, px=60_000)
    client.hset(rk.partition_key("default", "vbusy", 1, "item"), "1", blob)
    client.hset(rk.partition_key("defaultx", "vdead", 1, "item"), "1", blob)
    client.hset(rk.partition_key("other", "vdead", 1, "item"), "1", blob)
    publish(make_snapshot(tmp_path, n_users=0, n_items=200), redis_url, progress=False)
    assert version_keys(client, "default", "vdead") == []
    assert len(version_keys(client, "default", "vbusy")) == 2
    assert client.exists(rk.partition_key("defaultx", "vdead", 1, "item"),
                         rk.partition_key("other", "vdead", 1, "item")) == 2


def test_partial_copy_with_other_partitioning_is_replaced(tmp_path: Path, redis_url: str,
                                                          client) -> None:
    path = make_snapshot(tmp_path, n_users=100, n_items=1000)
    publish(path, redis_url, partitions=4, progress=False)
    clean = dump_state(client, normalise=True)
    client.flushall()
    for p in range(32):
        client.hset(rk.partition_key("default", path.name, p, "item"), "12345", b"junk")
    client.set(rk.manifest_key("default", path.name), "{}")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    client.set(rk.lock_key("default", path.name),
               json.dumps({"host": socket.gethostname(), "pid": dead.pid, "id": "old"}))
    result = publish(path, redis_url, partitions=4, progress=False)
    assert not result.skipped and result.vectors_written == 1100
    assert dump_state(client, normalise=True) == clean


def test_tampered_snapshot_is_rejected_before_writing(tmp_path: Path, redis_url: str,
                                                      client) -> None:
    path = make_snapshot(tmp_path)
    target = path / "item_vectors.npy"
    data = bytearray(target.read_bytes())
    data[1000] ^= 0x40
    target.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="item_vectors.npy: sha256 mismatch"):
        publish(path, redis_url, progress=False)
    assert client.dbsize() == 0


def test_unreachable_redis_and_bad_arguments(tmp_path: Path) -> None:
    path = make_snapshot(tmp_path, n_users=0, n_items=10)
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(PlexrecError, match=f"cannot reach Redis at {url}"):
        publish(path, url, progress=False)
    with pytest.raises(ConfigError, match="invalid Redis namespace 'a:b'"):
        publish(path, url, namespace="a:b")
    with pytest.raises(ConfigError, match="keep must be >= 1"):
        publish(path, url, keep=0)


def test_cli_prints_one_json_line(tmp_path: Path, redis_url: str, client, capsys,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_snapshot(tmp_path / "snaps", n_users=0, n_items=500)
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert cli_main(["publish", "--snapshot", str(path)]) == 2
    assert "error: no Redis to publish to" in capsys.readouterr().err
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert cli_main(["publish", "--snapshot", str(tmp_path / "snaps"), "--namespace", "cli",
                     "--partitions", "4", "--quiet"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["version"] == path.name and line["vectors_written"] == 500
    assert line["skipped"] is False and line["seconds"] >= 0
    assert rk.read_current(client, "cli") == path.name
    assert cli_main(["publish", "--snapshot", str(path), "--redis", redis_url, "--namespace",
                     "cli", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped"] is True


class _Reader(threading.Thread):
    """Polls the pointer like a server would; records any moment it names an incomplete version."""

    def __init__(self, url: str, ns: str) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url)
        self.ns, self.stop, self.checks = ns, threading.Event(), 0
        self.seen: set[str] = set()
        self.problems: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            version = rk.read_current(self.client, self.ns)
            if version is None:
                continue
            manifest = rk.read_manifest(self.client, self.ns, version)
            if manifest is None:
                self.problems.append(f"{version}: manifest missing")
                continue
            pipe = self.client.pipeline(transaction=False)
            for entity in manifest["entities"]:
                for p in range(manifest["partitions"]):
                    pipe.hlen(rk.partition_key(self.ns, version, p, entity))
            want = sum(spec["count"] for spec in manifest["entities"].values())
            got = sum(pipe.execute())
            if got != want:
                self.problems.append(f"{version}: {got} of {want} vectors")
            self.seen.add(version)
            self.checks += 1
        self.client.close()


@pytest.mark.slow
def test_sigkill_midway_then_rerun_matches_a_clean_publish(tmp_path: Path, redis_url: str,
                                                           client) -> None:
    base = make_snapshot(tmp_path, seed=1, n_users=0, n_items=1000, width=32)
    big = make_snapshot(tmp_path, seed=2, n_users=20_000, n_items=200_000, width=32)
    publish(base, redis_url, progress=False)
    publish(big, redis_url, progress=False)
    clean = dump_state(client, normalise=True)
    client.flushall()

    publish(base, redis_url, progress=False)
    reader = _Reader(redis_url, "default")
    reader.start()
    code = ("import sys; from serving.publish import publish; "
            "publish(sys.argv[1], sys.argv[2], batch_size=1000, progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(big), redis_url])
    probes = [rk.partition_key("default", big.name, p, "item") for p in range(16)]
    deadline = time.monotonic() + 30
    while client.exists(*probes) == 0 and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.kill()
    proc.wait()
    assert proc.returncode == -9
    assert rk.read_current(client, "default") == base.name
    partial = sum(client.hlen(k) for k in probes)
    assert 0 < partial < 200_000

    result = publish(big, redis_url, progress=False)
    deadline = time.monotonic() + 10
    while big.name not in reader.seen and time.monotonic() < deadline:
        time.sleep(0.01)
    reader.stop.set()
    reader.join(5)
    assert not result.skipped and result.vectors_written == 220_000
    assert dump_state(client, normalise=True) == clean
    assert reader.problems == []
    assert reader.seen == {base.name, big.name} and reader.checks > 10


def test_packed_hset_is_byte_identical_to_redis_py() -> None:
    ids = np.array([0, -1, 7, 10**18, np.iinfo(np.int64).min, np.iinfo(np.int64).max, 99, -100])
    vecs = np.random.default_rng(3).standard_normal((ids.size, 3)).astype(np.float32)
    key = rk.partition_key("ns", "v1", 2, "item")
    args = [x for pair in zip(rk.encode_ids(ids), rk.encode_vectors(vecs), strict=True)
            for x in pair]
    expected = b"".join(redis.Connection().pack_command("HSET", key, *args))
    assert pack_hset(key, ids, vecs) == expected
