"""The main job, end to end: data -> train (CTR + two-tower) -> export -> publish -> serve -> query.

It drives the real `plexrec` subcommands in child processes, exactly as a user or a scheduler
would, and reads the one JSON line each prints. This module is the only place that knows both
training and serving, which is why it lives in the command layer and not in either package."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from plexrec.features.errors import PlexrecError
from plexrec.features.redact import redact_url
from plexrec.serving.redis_process import RedisProcess
from plexrec.training.tracking import tracking_uri

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
DEMO_ROOT = REPO / ".plexrec" / "demo"


# The demo registers its two models (registration is opt-in for `plexrec train`), each run's
# version taking the alias: models:/plexrec-demo-ctr@champion.
DEMO_MODELS = ("plexrec-demo-ctr", "plexrec-demo-two-tower")
DEMO_ALIAS = "champion"


def _register(name: str) -> list[str]:
    return ["--set", f"mlflow.registered_model={name}", "--set",
            f"mlflow.register_alias={DEMO_ALIAS}"]


def default_workdir(data: Path | None) -> Path:
    """One work folder per data source, so a demo on ml-100k never overwrites the synthetic
    one's runs: .plexrec/demo/synthetic, .plexrec/demo/ml-100k, .plexrec/demo/<dir>-train ..."""
    if data is None:
        return DEMO_ROOT / "synthetic"
    data = Path(data).resolve()
    return DEMO_ROOT / (data.name if data.is_dir() else f"{data.parent.name}-{data.stem}")


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo. The defaults finish in about 9 minutes on 2 cores; `smoke()` is the CI
    variant with the same stages on less data."""

    workdir: Path = DEMO_ROOT / "synthetic"
    data: Path | None = None
    ctr_rows: int = 1_000_000
    interaction_rows: int = 200_000
    ctr_epochs: int = 1
    ctr_batch_size: int = 2048
    ctr_term_passes: int | None = None  # at most, for the first-order term; None: the config's
    two_tower_epochs: int = 3
    nproc: int = 2
    layout: str = "unified"
    redis_url: str | None = None
    latency_requests: int = 300
    seed: int = 0
    quiet: bool = False

    @classmethod
    def smoke(cls, workdir: Path, **overrides: object) -> DemoConfig:
        base = dict(workdir=workdir, ctr_rows=20_000, interaction_rows=20_000, ctr_epochs=3,
                    ctr_batch_size=256, ctr_term_passes=2, two_tower_epochs=1,
                    latency_requests=50, quiet=True)
        base.update(overrides)
        return cls(**base)  # type: ignore[arg-type]


@dataclass
class DemoSummary:
    """What each stage produced; printed as a table and kept as JSON in the work directory."""

    ctr: dict = field(default_factory=dict)
    two_tower: dict = field(default_factory=dict)
    snapshot: dict = field(default_factory=dict)
    publish: dict = field(default_factory=dict)
    queries: dict = field(default_factory=dict)
    mlflow_uri: str = ""

    def table(self) -> str:
        rows = [
            ("CTR test AUC", f"{self.ctr.get('test_auc', float('nan')):.4f}"),
            ("CTR test log loss", f"{self.ctr.get('test_logloss', float('nan')):.4f}"),
            ("CTR embedding parameters", f"{self.ctr.get('embedding_params', 0):,}"),
            ("CTR embedding bytes", f"{self.ctr.get('embedding_bytes', 0):,}"),
            ("CTR training examples/s", f"{self.ctr.get('train_examples_per_sec', 0):,.0f}"),
            ("Two-tower recall@100", _fmt(self.two_tower.get("test_recall_at_100"))),
            ("Two-tower embedding parameters", f"{self.two_tower.get('embedding_params', 0):,}"),
            ("Snapshot version", str(self.snapshot.get("version", "?"))),
            ("Users / items published", f"{self.snapshot.get('users', 0):,} / "
                                        f"{self.snapshot.get('items', 0):,}"),
            ("GetEmbeddings p50 / p99 (ms)", f"{_fmt(self.queries.get('embeddings_p50_ms'))} / "
                                             f"{_fmt(self.queries.get('embeddings_p99_ms'))}"),
            ("Retrieve k=10 p50 / p99 (ms)", f"{_fmt(self.queries.get('retrieve_p50_ms'))} / "
                                             f"{_fmt(self.queries.get('retrieve_p99_ms'))}"),
        ]
        width = max(len(k) for k, _ in rows)
        lines = [f"{k:<{width}}  {v}" for k, v in rows]
        rule = "-" * (width + 2 + max(len(v) for _, v in rows))
        return "\n".join([rule, *lines, rule])


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "n/a"


class Stage:
    """Runs one `plexrec` subcommand, streams its stderr, and returns its last JSON line."""

    def __init__(self, workdir: Path, env: dict[str, str], quiet: bool) -> None:
        self.workdir, self.env, self.quiet = workdir, env, quiet

    def __call__(self, title: str, *args: str) -> dict:
        print(f"==> {title}", file=sys.stderr, flush=True)
        cmd = [sys.executable, "-m", "plexrec.cli.main", *args]
        started = time.monotonic()
        proc = subprocess.run(cmd, cwd=REPO, env=self.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE if self.quiet else None, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or "")[-4000:]
            raise PlexrecError(f"stage '{title}' failed (exit {proc.returncode}): "
                               f"{' '.join(args)}\n{tail}")
        result = _last_json_line(proc.stdout, title)
        print(f"    done in {time.monotonic() - started:.1f}s", file=sys.stderr, flush=True)
        return result


def _last_json_line(stdout: str, title: str) -> dict:
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise PlexrecError(f"stage '{title}' printed no JSON result line; stdout was:\n{stdout[-2000:]}")


def run_demo(config: DemoConfig) -> DemoSummary:
    """Runs every stage; raises PlexrecError naming the stage that failed."""
    work = config.workdir
    work.mkdir(parents=True, exist_ok=True)
    mlflow_uri = tracking_uri()
    summary = DemoSummary(mlflow_uri=redact_url(mlflow_uri))  # printed and written: no secrets
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_uri, "PYTHONUNBUFFERED": "1"}
    stage = Stage(work, env, config.quiet)
    signal.signal(signal.SIGTERM, _interrupt)
    quiet = ["--quiet"] if config.quiet else []

    ctr_data, tt_data, ctr_config, tt_config = _data_stage(config, stage)
    summary.ctr = stage(
        f"train the CTR model ({config.layout} layout, {config.nproc} processes)",
        "train", "--config", str(ctr_config), "--data", str(ctr_data), "--layout", config.layout,
        "--nproc", str(config.nproc), "--set", f"train.epochs={config.ctr_epochs}",
        "--set", f"data.batch_size={config.ctr_batch_size}", *_term_passes(config),
        "--set", f"train.runs_root={work / 'runs'}", *_register(DEMO_MODELS[0]), *quiet)
    summary.two_tower = stage(
        "train the two-tower retrieval model", "train", "--config", str(tt_config),
        "--data", str(tt_data), "--nproc", "1",
        "--set", f"train.epochs={config.two_tower_epochs}",
        "--set", f"train.runs_root={work / 'runs'}", "--set", "mlflow.log_model=true",
        *_register(DEMO_MODELS[1]), *quiet)
    catalog = tt_data / "catalog" / "items.csv"  # the generator's: every item, seen or not
    summary.snapshot = stage("export the vector snapshot", "export", "--run",
                             summary.two_tower["run_id"], "--out", str(work / "snapshots"),
                             *(["--item-catalog", str(catalog)] if catalog.is_file() else []))

    redis_proc = None
    redis_url = config.redis_url or os.environ.get("REDIS_URL")
    server = None
    try:
        if not redis_url:
            print("==> start a local redis-server (REDIS_URL is unset)", file=sys.stderr)
            redis_proc = RedisProcess(workdir=work / "redis").start()
            redis_url = redis_proc.url
        env["REDIS_URL"] = redis_url  # through the environment: argv is shown in errors and ps
        summary.publish = stage("publish to Redis", "publish", "--snapshot",
                                summary.snapshot["snapshot"], *quiet)
        server, port = _start_server(work / "snapshots", env)
        summary.queries = _query_stage(f"127.0.0.1:{port}", summary.snapshot["snapshot"],
                                       config.latency_requests)
    finally:
        if server is not None:
            _stop(server)
        if redis_proc is not None:
            redis_proc.stop()
    (work / "summary.json").write_text(json.dumps(summary.__dict__, indent=2, default=str))
    return summary


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so the server and redis-server are stopped on the way out."""
    raise KeyboardInterrupt


def _term_passes(config: DemoConfig) -> list[str]:
    if config.ctr_term_passes is None:
        return []
    return ["--set", f"train.first_order_epochs={config.ctr_term_passes}"]


def _data_stage(config: DemoConfig, stage: Stage) -> tuple[Path, Path, Path, Path]:
    """Synthetic data by default. DATA may point at a Criteo train.txt (the CTR model trains on
    it; the two-tower model on synthetic interactions) or at an ml-100k directory (both models
    train on MovieLens). File names carry the row count, so a smoke run's data is never reused
    by a full run."""
    work = config.workdir
    interactions = work / f"interactions-{config.interaction_rows}"
    if config.data is not None and not config.data.exists():
        raise PlexrecError(f"DATA={config.data} does not exist")
    if config.data is not None and config.data.is_dir() and (config.data / "u.data").exists():
        return (config.data, config.data, CONFIGS / "movielens_dlrm.toml",
                CONFIGS / "movielens_two_tower.toml")
    if not interactions.exists():
        stage("generate synthetic user-item interactions", "data", "synth", "--kind",
              "interactions", "--rows", str(config.interaction_rows), "--out",
              str(interactions), "--seed", str(config.seed))
    if config.data is not None:
        return (config.data, interactions, CONFIGS / "criteo_dlrm.toml",
                CONFIGS / "synthetic_two_tower.toml")
    ctr_data = work / f"criteo-{config.ctr_rows}.tsv"
    if not ctr_data.exists():
        stage("generate synthetic Criteo-like data", "data", "synth", "--kind", "criteo",
              "--rows", str(config.ctr_rows), "--out", str(ctr_data), "--seed", str(config.seed))
    return ctr_data, interactions, CONFIGS / "synthetic_dlrm.toml", \
        CONFIGS / "synthetic_two_tower.toml"


def _start_server(snapshots: Path, env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    print("==> start the gRPC server", file=sys.stderr, flush=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "plexrec.cli.main", "serve", "--snapshot", str(snapshots),
         "--port", "0"], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if not ready:
            if proc.poll() is not None:
                raise PlexrecError(f"the gRPC server exited with code {proc.returncode}")
            continue
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise PlexrecError(f"the gRPC server exited with code {proc.returncode}")
            continue
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == "serving":
                return proc, int(event["port"])
    _stop(proc)
    raise PlexrecError("the gRPC server did not report its port within 120 s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _query_stage(target: str, snapshot_dir: str, requests: int) -> dict:
    """Sample look-ups and retrievals with the Python client; checks vectors against the
    snapshot and measures client-side latency."""
    from plexrec.models.snapshot import Snapshot
    from plexrec.serving.client import EmbeddingClient

    print(f"==> query the server at {target}", file=sys.stderr, flush=True)
    snap = Snapshot.open(snapshot_dir)
    user_ids = np.asarray(snap.ids("user")[:5])
    client = EmbeddingClient(target)
    try:
        info = client.info()
        found, vectors, missing, _ = client.embeddings("user", user_ids.tolist())
        expected = snap.vectors("user")[snap.row_of("user", np.asarray(found))]
        if len(missing) or not np.array_equal(vectors, expected):
            raise PlexrecError("served user vectors differ from the snapshot")
        items, scores, _ = client.retrieve(user_id=int(user_ids[0]), k=10)
        emb_ms, ret_ms = [], []
        for i in range(requests):
            uid = int(user_ids[i % len(user_ids)])
            t0 = time.perf_counter()
            client.embeddings("item", [int(x) for x in snap.ids("item")[i % 50:i % 50 + 10]])
            t1 = time.perf_counter()
            client.retrieve(user_id=uid, k=10)
            t2 = time.perf_counter()
            emb_ms.append((t1 - t0) * 1e3)
            ret_ms.append((t2 - t1) * 1e3)
    finally:
        client.close()
    print(f"    user {int(user_ids[0])}: top items {[int(i) for i in items[:5]]} scores "
          f"{[round(float(s), 3) for s in scores[:5]]}", file=sys.stderr)
    return {
        "server_version": info["version"],
        "sample_user": int(user_ids[0]),
        "sample_items": [int(x) for x in items],
        "embeddings_p50_ms": float(np.percentile(emb_ms, 50)),
        "embeddings_p99_ms": float(np.percentile(emb_ms, 99)),
        "retrieve_p50_ms": float(np.percentile(ret_ms, 50)),
        "retrieve_p99_ms": float(np.percentile(ret_ms, 99)),
    }
