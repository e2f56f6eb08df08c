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


@pytest.mark.parametrize(("toml", "needle"), [
    ("max_ids = 2.5\n", "max_ids = 2.5"),
    ('port = "80x"\n', "port = '80x'"),
    ("port = 70000\n", "port = 70000"),
    ('[index]\nkind = "annoy"\n', r"\[index\] kind = 'annoy'"),
    ("redis_timeout_s = 0\n", "redis_timeout_s = 0"),
    ("[index]\nexact_threshold = true\n", r"\[index\] exact_threshold = True"),
])
def test_config_errors_name_file_key_and_value(tmp_path: Path, toml: str, needle: str) -> None:
    path = tmp_path / "server.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=needle) as exc:
        load_server_config(path)
    assert str(exc.value).startswith(str(path))


def test_config_repr_hides_the_redis_password() -> None:
    cfg = load_server_config(None, redis_url="redis://:hunter2@127.0.0.1:6379/0")
    assert "hunter2" not in repr(cfg) and "hunter2" not in str(cfg)
