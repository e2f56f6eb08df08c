"""`plexrec serve` as a process: announces its port as JSON, answers, stops cleanly on SIGTERM;
and the TOML config with CLI overrides."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from plexrec.features.errors import ConfigError
from plexrec.serving.client import EmbeddingClient
from plexrec.serving.server_config import load_server_config
from tests.serving.server_helpers import make_snapshot

REPO = Path(__file__).resolve().parents[2]


def test_serve_announces_port_and_stops_on_sigterm(tmp_path: Path) -> None:
    snap = make_snapshot(tmp_path / "snaps", seed=50)
    cfg = tmp_path / "server.toml"
    cfg.write_text('[server]\nmax_k = 7\n\n[server.index]\nexact_threshold = 100000\n')
    proc = subprocess.Popen([sys.executable, "-m", "plexrec.cli.main", "serve", "--snapshot",
                             str(tmp_path / "snaps"), "--port", "0", "--config", str(cfg)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = json.loads(proc.stdout.readline())
        assert line["event"] == "serving" and line["version"] == snap.version
        assert line["port"] > 0
        with EmbeddingClient(f"127.0.0.1:{line['port']}") as client:
            assert client.info()["item_count"] == 300
            assert len(client.retrieve(user_id=int(snap.ids("user")[0]), k=7).item_ids) == 7
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_config_toml_with_overrides(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text('port = 7000\nnamespace = "prod"\nmax_ids = 50\n[index]\nkind = "ivf"\n')
    cfg = load_server_config(path, port=7001, exact_threshold=10, redis_url=None)
    assert (cfg.port, cfg.namespace, cfg.max_ids) == (7001, "prod", 50)
    assert (cfg.index.kind, cfg.index.exact_threshold) == ("ivf", 10)
    path.write_text("max_idz = 3\n")
    with pytest.raises(ConfigError, match="max_idz"):
        load_server_config(path)
    path.write_text("max_k = 0\n")
    with pytest.raises(ConfigError, match="max_k"):
        load_server_config(path)
