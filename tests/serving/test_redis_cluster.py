"""Publishing to a real 3-node Redis Cluster: slots spread, pipelines and Lua across nodes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from redis.cluster import RedisCluster

from plexrec.models.snapshot import Snapshot
from plexrec.serving import redis_keys as rk
from plexrec.serving.publish import connect, publish
from tests.serving.cluster import LocalCluster
from tests.serving.helpers import dump_state, make_snapshot
from tests.serving.test_publish import read_back

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(3) as c:
        yield c


@pytest.fixture()
def nodes(cluster: LocalCluster) -> Iterator[list[redis.Redis]]:
    clients = [redis.Redis(port=p) for p in cluster.ports]
    for c in clients:
        c.flushall()
    yield clients
    for c in clients:
        c.close()


def test_cluster_publish_spreads_reads_back_and_reruns_idempotently(
        tmp_path: Path, cluster: LocalCluster, nodes: list[redis.Redis]) -> None:
    path = make_snapshot(tmp_path, n_users=2000, n_items=20_000, width=24)
    result = publish(path, cluster.url, namespace="c", progress=False)
    assert not result.skipped and result.vectors_written == 22_000
    client = connect(cluster.url)
    assert isinstance(client, RedisCluster)
    read_back(client, "c", Snapshot.open(path))
    per_node = [sum(1 for k in n.scan_iter(match="plexrec:{c:*:p*", count=1000)) for n in nodes]
    assert sum(per_node) == 32 and all(count > 0 for count in per_node), per_node
    before = dump_state(nodes)
    again = publish(path, cluster.url, namespace="c", cluster=True, progress=False)
    assert again.skipped and dump_state(nodes) == before
    client.close()


def test_cluster_retention_and_orphans_cover_every_node(
        tmp_path: Path, cluster: LocalCluster, nodes: list[redis.Redis]) -> None:
    client = connect(cluster.url, cluster=True)
    for p in range(16):
        client.hset(rk.partition_key("c", "vdead", p, "item"), "1", b"\0" * 8)
    first = make_snapshot(tmp_path, seed=1, n_users=0, n_items=3000)
    second = make_snapshot(tmp_path, seed=2, n_users=0, n_items=3000)
    publish(first, cluster.url, namespace="c", keep=1, progress=False)
    assert rk.read_current(client, "c") == first.name
    assert not any(client.exists(rk.partition_key("c", "vdead", p, "item")) for p in range(16))
    assert [k for n in nodes for k in n.scan_iter(match="plexrec:{c:vdead*")] == []
    publish(second, cluster.url, namespace="c", keep=1, progress=False)
    assert rk.read_current(client, "c") == second.name
    assert rk.read_manifest(client, "c", first.name) is None
    leftover = [k for n in nodes for k in n.scan_iter(match=f"plexrec:{{c:{first.name}*")]
    assert leftover == []
    read_back(client, "c", Snapshot.open(second))
    ids = np.asarray(Snapshot.open(second).ids("item"))
    assert sum(client.hlen(rk.partition_key("c", second.name, p, "item"))
               for p in range(16)) == ids.size
    client.close()
