"""TLS, mutual TLS and bearer tokens on real channels with certificates made in the test;
reflection switched off; the Prometheus endpoint scraped; secrets never printed."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from plexrec.features.errors import ConfigError
from plexrec.serving.client import EmbeddingClient, ServingError, channel_credentials
from plexrec.serving.server_config import load_server_config
from tests.serving.server_helpers import ServerThread, config, make_snapshot
from tests.serving.tls_helpers import make_pki

TOKEN = "tok-3f9a1c0e5b7d"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def snap(tmp_path_factory: pytest.TempPathFactory):
    return make_snapshot(tmp_path_factory.mktemp("snap"), width=8, seed=90)


def test_tls_server_answers_tls_clients_only(pki, snap) -> None:
    cfg = config(snap.path, tls_cert=pki.server_cert, tls_key=pki.server_key)
    with ServerThread(cfg) as srv:
        with EmbeddingClient(srv.target, tls=channel_credentials(pki.ca)) as client:
            assert client.info()["version"] == snap.version
        with EmbeddingClient(srv.target, timeout=2) as plain, \
                pytest.raises(ServingError) as err:
            plain.info()
        assert err.value.code == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_needs_a_client_certificate_signed_by_the_ca(pki, snap) -> None:
    cfg = config(snap.path, tls_cert=pki.server_cert, tls_key=pki.server_key,
                 tls_client_ca=pki.ca)
    with ServerThread(cfg) as srv:
        mutual = channel_credentials(pki.ca, pki.client_cert, pki.client_key)
        with EmbeddingClient(srv.target, tls=mutual) as client:
            got = client.embeddings("user", snap.ids("user")[:2])
            np.testing.assert_array_equal(got.vectors, np.asarray(snap.vectors("user"))[:2])
        with EmbeddingClient(srv.target, timeout=2, tls=channel_credentials(pki.ca)) as anon, \
                pytest.raises(ServingError) as err:
            anon.info()
        assert err.value.code == grpc.StatusCode.UNAVAILABLE


def test_bearer_tokens_guard_every_service_but_health(tmp_path: Path, snap) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text(f"\n{TOKEN}\nsecond-token\n")
    with ServerThread(config(snap.path, auth_tokens_file=token_file)) as srv:
        with EmbeddingClient(srv.target, token=TOKEN) as client:
            assert client.info()["version"] == snap.version
        with EmbeddingClient(srv.target, token="second-token") as client:
            assert client.info()["version"] == snap.version
        for token in (None, "wrong", TOKEN + "x"):
            with EmbeddingClient(srv.target, token=token) as client, \
                    pytest.raises(ServingError) as err:
                client.info()
            assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
            assert TOKEN not in err.value.details
        with grpc.insecure_channel(srv.target) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5)
            assert status.status == health_pb2.HealthCheckResponse.SERVING
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            with pytest.raises(grpc.RpcError) as rpc_err:
                list(stub.ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
            assert rpc_err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_query_cli_speaks_tls_with_a_token_file(tmp_path: Path, pki, snap) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    cfg = config(snap.path, tls_cert=pki.server_cert, tls_key=pki.server_key,
                 auth_tokens=[TOKEN])
    with ServerThread(cfg) as srv:
        base = [sys.executable, "-m", "plexrec.cli.main", "query", "--target",
                f"localhost:{srv.port}", "--tls-ca", str(pki.ca)]
        ok = subprocess.run([*base, "--token-file", str(token_file), "info"],
                            capture_output=True, text=True, timeout=60, cwd=REPO)
        denied = subprocess.run([*base, "info"], capture_output=True, text=True, timeout=60,
                                cwd=REPO)
    assert ok.returncode == 0, ok.stderr
    assert snap.version in ok.stdout
    assert denied.returncode == 2 and "UNAUTHENTICATED" in denied.stderr
    assert TOKEN not in denied.stderr + ok.stderr


def test_reflection_can_be_switched_off(snap) -> None:
    with ServerThread(config(snap.path, reflection=False)) as srv, \
            grpc.insecure_channel(srv.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            list(stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_metrics_endpoint_counts_requests_codes_and_store_reads(snap) -> None:
    with ServerThread(config(snap.path, metrics_port=0)) as srv, \
            EmbeddingClient(srv.target) as client:
        client.embeddings("user", snap.ids("user")[:3])
        client.embeddings("user", snap.ids("user")[:1])
        with pytest.raises(ServingError):
            client.embeddings("user", [])
        port = srv.server.metrics_port
        assert port
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    text = text.decode()
    assert 'plexrec_requests_total{code="OK",method="GetEmbeddings"} 2.0' in text
    assert 'plexrec_requests_total{code="INVALID_ARGUMENT",method="GetEmbeddings"} 1.0' in text
    assert 'plexrec_request_seconds_count{code="OK",method="GetEmbeddings"} 2.0' in text
    assert 'plexrec_store_reads_total{source="snapshot"} 4.0' in text
    assert "plexrec_breaker_open 0.0" in text
    assert f'plexrec_version_loaded{{current="1",version="{snap.version}"}} 1.0' in text


def test_a_failed_call_is_counted_before_its_client_has_the_status(snap) -> None:
    """A scrape right after each error sees it: the status is recorded before it is sent."""
    line = 'plexrec_requests_total{code="INVALID_ARGUMENT",method="GetEmbeddings"}'
    with ServerThread(config(snap.path, metrics_port=0)) as srv, \
            EmbeddingClient(srv.target) as client:
        url = f"http://127.0.0.1:{srv.server.metrics_port}/metrics"
        for n in range(1, 31):
            with pytest.raises(ServingError):
                client.embeddings("user", [])
            text = urllib.request.urlopen(url, timeout=5).read().decode()
            assert f"{line} {n}.0" in text, n


def test_secrets_stay_out_of_reprs_and_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text(f'[server]\nauth_tokens = "{TOKEN}"\n')
    with pytest.raises(ConfigError) as err:
        load_server_config(path)
    assert TOKEN not in str(err.value) and "auth_tokens" in str(err.value)
    cfg = config(tmp_path, "redis://:pw-9z@127.0.0.1:1/0", auth_tokens=[TOKEN])
    assert TOKEN not in repr(cfg) and "pw-9z" not in repr(cfg)
