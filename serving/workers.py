"""`plexrec serve --workers N`: N server processes on one port through SO_REUSEPORT, so the
kernel spreads connections over them and throughput grows with cores (one Python process is
bound to one core by the GIL). Each worker loads its own copy of the version and its own index;
they are stateless replicas that follow the same Redis pointer.

The parent only supervises: it reserves the port (a bound SO_REUSEPORT socket that never
listens), starts the workers with the spawn method, prints one ready line once all of them
serve, restarts a worker that dies, and on SIGTERM/SIGINT stops them all, each draining its
in-flight RPCs for `grace_s`."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import queue
import signal
import socket
import time
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from typing import Any

from plexrec.features.errors import PlexrecError
from plexrec.serving.server_config import ServerConfig

log = logging.getLogger(__name__)
START_TIMEOUT_S = 600.0


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound, non-listening SO_REUSEPORT socket: holds `port` (or a free one for 0) for the
    workers, which bind the same port with SO_REUSEPORT; it never receives connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PlexrecError(f"cannot bind {host}:{port}: {exc.strerror}") from None
    return sock


def _worker_config(config: ServerConfig, port: int, index: int) -> ServerConfig:
    metrics = config.metrics_port
    if metrics:
        metrics += index
    return config.model_copy(update={"port": port, "metrics_port": metrics})


def _worker_main(config: ServerConfig, index: int, events: Queue) -> None:
    import asyncio

    from plexrec.features.logs import configure_logging
    from plexrec.serving.server import serve_forever

    configure_logging(prefix=f"worker {index}: ")
    asyncio.run(serve_forever(config, lambda event: events.put({**event, "worker": index})))


class Supervisor:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.ctx = mp.get_context("spawn")
        self.events: Queue = self.ctx.Queue()
        self.workers: dict[int, BaseProcess] = {}

    def spawn(self, index: int, port: int) -> None:
        proc = self.ctx.Process(target=_worker_main, name=f"plexrec-serve-{index}",
                                args=(_worker_config(self.config, port, index), index,
                                      self.events))
        proc.start()
        self.workers[index] = proc

    def wait_ready(self, count: int) -> list[dict[str, Any]]:
        ready: list[dict[str, Any]] = []
        deadline = time.monotonic() + START_TIMEOUT_S
        while len(ready) < count:
            dead = [i for i, p in self.workers.items() if p.exitcode is not None]
            if dead:
                raise PlexrecError(f"server worker {dead[0]} exited with code "
                                   f"{self.workers[dead[0]].exitcode} while starting")
            if time.monotonic() > deadline:
                raise PlexrecError(f"server workers not ready within {START_TIMEOUT_S:.0f}s")
            try:
                ready.append(self.events.get(timeout=0.5))
            except queue.Empty:
                continue
        return ready

    def stop(self) -> None:
        for proc in self.workers.values():
            if proc.exitcode is None and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.config.grace_s + 10.0
        for proc in self.workers.values():
            proc.join(max(deadline - time.monotonic(), 0.1))
            if proc.exitcode is None:
                proc.kill()
                proc.join(5)


def run_workers(config: ServerConfig) -> int:
    """Blocks until SIGTERM/SIGINT; prints {"event": "serving", "port", "version", "workers",
    "metrics_ports"} once every worker is ready."""
    reserved = reserve_port(config.host, config.port)
    port = int(reserved.getsockname()[1])
    supervisor = Supervisor(config)
    stop = {"flag": False}

    def request_stop(signum: int, frame: object) -> None:
        stop["flag"] = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for index in range(config.workers):
            supervisor.spawn(index, port)
        ready = supervisor.wait_ready(config.workers)
        print(json.dumps({"event": "serving", "port": port, "version": ready[0]["version"],
                          "workers": config.workers,
                          "metrics_ports": [e["metrics_port"] for e in
                                            sorted(ready, key=lambda e: e["worker"])]}),
              flush=True)
        while not stop["flag"]:
            time.sleep(0.2)
            for index, proc in list(supervisor.workers.items()):
                if proc.exitcode is not None and not stop["flag"]:
                    log.error("server worker %d exited with code %s; restarting it", index,
                              proc.exitcode)
                    supervisor.spawn(index, port)
    finally:
        supervisor.stop()
        reserved.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
