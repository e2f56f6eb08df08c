"""A local 3-node Redis Cluster built from redis-server processes, for cluster tests.

Slots are assigned through redis-py (CLUSTER ADDSLOTSRANGE + MEET), so only redis-server is
needed; no redis-cli and no replicas."""

from __future__ import annotations

import time

import redis

from plexrec.features.errors import PlexrecError
from plexrec.serving.redis_process import RedisProcess, free_port

SLOTS = 16384


class LocalCluster:
    """Start with `with LocalCluster(3) as c:`; `c.url` is a startup node for RedisCluster."""

    def __init__(self, nodes: int = 3) -> None:
        # The bus port defaults to port + 10000, which overflows for high free ports: pick it too.
        self.bus_ports = [free_port() for _ in range(nodes)]
        self.nodes = [RedisProcess(extra_args=("--cluster-enabled", "yes",
                                               "--cluster-config-file", "nodes.conf",
                                               "--cluster-node-timeout", "5000",
                                               "--cluster-port", str(bus)))
                      for bus in self.bus_ports]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    def start(self, timeout: float = 20.0) -> LocalCluster:
        try:
            for node in self.nodes:
                node.start()
            clients = [redis.Redis(port=n.port) for n in self.nodes]
            bounds = [round(i * SLOTS / len(clients)) for i in range(len(clients) + 1)]
            for client, lo, hi in zip(clients, bounds, bounds[1:], strict=False):
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi - 1)
            for client in clients[1:]:
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port,
                                       self.bus_ports[0])
            self._wait_ok(clients, timeout)
            for client in clients:
                client.close()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ok(self, clients: list[redis.Redis], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            infos = [c.cluster("info") for c in clients]
            if all(i["cluster_state"] == "ok" and int(i["cluster_known_nodes"]) == len(clients)
                   for i in infos):
                return
            time.sleep(0.05)
        raise PlexrecError(f"local Redis Cluster on ports {self.ports} not ok within {timeout}s")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
