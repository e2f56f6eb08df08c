"""`plexrec serve --workers 2`: two processes on one port (SO_REUSEPORT), connections spread
over both, a SIGTERM stops them all."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from plexrec.proto.plexrec.v1 import plexrec_pb2 as pb
from tests.serving.server_helpers import make_snapshot

REPO = Path(__file__).resolve().parents[2]


def _requests_served(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(v) for v in re.findall(
        r'^plexrec_requests_total\{code="OK",method="GetModelInfo"\} (\S+)$', text, re.M))


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@pytest.mark.slow
def test_two_workers_share_one_port_and_stop_together(tmp_path: Path) -> None:
    snap = make_snapshot(tmp_path / "snaps", seed=95)
    proc = subprocess.Popen(
        [sys.executable, "-m", "plexrec.cli.main", "serve", "--snapshot", str(snap.path),
         "--port", "0", "--workers", "2", "--metrics-port", "0"],
        cwd=REPO, stdout=subprocess.PIPE, text=True, env={**os.environ, "REDIS_URL": ""})
    try:
        assert proc.stdout is not None
        event = json.loads(proc.stdout.readline())
        assert event["event"] == "serving" and event["workers"] == 2
        assert event["version"] == snap.version and len(event["metrics_ports"]) == 2
        workers = _children(proc.pid)
        for _ in range(24):
            with grpc.insecure_channel(f"127.0.0.1:{event['port']}",
                                       options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
                info = ch.unary_unary("/plexrec.v1.EmbeddingService/GetModelInfo",
                                      request_serializer=pb.GetModelInfoRequest.SerializeToString,
                                      response_deserializer=pb.GetModelInfoResponse.FromString)
                assert info(pb.GetModelInfoRequest(), timeout=10).version == snap.version
        served = [_requests_served(p) for p in event["metrics_ports"]]
        assert sum(served) == 24 and min(served) > 0, served
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{w}").exists() for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(Path(f"/proc/{w}/status").exists() and "zombie" not in
                       Path(f"/proc/{w}/status").read_text() for w in workers)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
