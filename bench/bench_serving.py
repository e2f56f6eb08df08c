"""Serving benchmark: a bounded load generator (grpc.aio client tasks, fixed request counts)
against a real `plexrec serve` process on loopback, with a private redis-server.

Scenarios: GetEmbeddings with 1 id and with 100 ids, Retrieve with k=100, plus two baselines
measured in the same run: raw Redis from Python (HMGET of the same ids, pipelined per partition,
as the server does it) and GetModelInfo (the gRPC floor: no Redis, no compute). Each scenario
runs `--repeats` times (default 3) and the medians are reported. Retrieval recall@100 of the
server (FAISS above the threshold) against exact search is measured end to end.

    python bench/bench_serving.py            # 1M items x 64, 100k users
    python bench/bench_serving.py --quick    # 50k items, smoke run
Writes bench/results/serving.json. The machine's load average before and after is recorded: on
a shared 2-core machine, other processes move p99 far more than the server does.

Reading the figures: get_embeddings_* minus grpc_floor_get_model_info is the server's own cost;
redis_hmget_* is redis-py's own pipeline doing the same HMGETs (the server bypasses redis-py's
pool and pipeline for this hot path: serving.resp.RedisLane, so it can beat this
baseline); *_snapshot_first is the same look-up served from the local memory map. The load
generator runs in this process, the server in its own (no shared GIL or event loop)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from plexrec.models.snapshot import Snapshot, write_snapshot  # noqa: E402
from plexrec.proto.plexrec.v1 import plexrec_pb2 as pb  # noqa: E402
from plexrec.proto.plexrec.v1 import plexrec_pb2_grpc as pb_grpc  # noqa: E402
from plexrec.serving import redis_keys as rk  # noqa: E402
from plexrec.serving.index import top_k_exact  # noqa: E402
from plexrec.serving.publish import publish  # noqa: E402
from plexrec.serving.redis_process import RedisProcess  # noqa: E402

NAMESPACE = "bench"


def synthetic(items: int, users: int, width: int, seed: int = 0
              ) -> tuple[np.ndarray, np.ndarray]:
    """Clustered vectors (many clusters + noise), the shape of trained embeddings; uniform
    random vectors would have no structure for an ANN index."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(2000, width)).astype(np.float32)
    item_vecs = np.empty((items, width), dtype=np.float32)
    for lo in range(0, items, 200_000):
        n = min(200_000, items - lo)
        item_vecs[lo:lo + n] = (centers[rng.integers(0, len(centers), n)]
                                + 0.5 * rng.normal(size=(n, width)).astype(np.float32))
    user_vecs = (centers[rng.integers(0, len(centers), users)]
                 + 0.5 * rng.normal(size=(users, width)).astype(np.float32))
    return item_vecs, user_vecs


def summarize(latencies_s: list[float], wall_s: float) -> dict[str, float]:
    lat = np.asarray(latencies_s) * 1000
    return {"qps": len(lat) / wall_s, "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "requests": int(len(lat))}


async def run_load(target: str, make_request, requests: int, concurrency: int, *,
                   channels: int = 1, tls_ca: Path | None = None) -> dict:
    """`concurrency` client tasks share a fixed number of requests; latency per request. With
    `channels` > 1 the tasks spread over that many connections (each its own subchannel), which
    SO_REUSEPORT spreads over the server's workers."""
    import grpc

    options = [("grpc.use_local_subchannel_pool", 1)] if channels > 1 else []
    if tls_ca is not None:
        creds = grpc.ssl_channel_credentials(tls_ca.read_bytes())
        chans = [grpc.aio.secure_channel(target, creds, options=[
            *options, ("grpc.ssl_target_name_override", "localhost")]) for _ in range(channels)]
    else:
        chans = [grpc.aio.insecure_channel(target, options=options) for _ in range(channels)]
    try:
        stubs = [pb_grpc.EmbeddingServiceStub(c) for c in chans]
        for i in range(min(50, requests)):
            await make_request(stubs[i % channels], i)
        latencies: list[float] = []
        counter = iter(range(requests))

        async def worker(stub) -> None:
            for i in counter:
                t0 = time.perf_counter()
                await make_request(stub, i)
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(worker(stubs[j % channels]) for j in range(concurrency)))
        return summarize(latencies, time.perf_counter() - start)
    finally:
        for c in chans:
            await c.close()


async def run_redis_load(url: str, version: str, batches: list[np.ndarray], partitions: int,
                         requests: int, concurrency: int) -> dict:
    """The baseline: the same HMGETs the server issues, from redis.asyncio with the same
    concurrency, without gRPC or the server around them."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)

    async def one(ids: np.ndarray) -> None:
        if ids.size == 1:
            part = int(rk.partition_of_ids(ids, partitions)[0])
            await client.hmget(rk.partition_key(NAMESPACE, version, part, "user"),
                               [str(int(ids[0]))])
            return
        async with client.pipeline(transaction=False) as pipe:
            for part, pos in rk.group_by_partition(ids, partitions):
                pipe.hmget(rk.partition_key(NAMESPACE, version, part, "user"),
                           rk.encode_ids(ids[pos]))
            await pipe.execute()

    for i in range(min(50, requests)):
        await one(batches[i % len(batches)])
    latencies: list[float] = []
    counter = iter(range(requests))

    async def worker() -> None:
        for i in counter:
            t0 = time.perf_counter()
            await one(batches[i % len(batches)])
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    await client.aclose()
    return summarize(latencies, wall)


def median_runs(runs: list[dict]) -> dict:
    keys = ("qps", "p50_ms", "p99_ms")
    out = {k: round(statistics.median(r[k] for r in runs), 4) for k in keys}
    out["requests_per_run"] = runs[0]["requests"]
    out["runs"] = [{k: round(r[k], 4) for k in keys} for r in runs]
    return out


def start_server(root: Path, redis_url: str, exact_threshold: int,
                 config: Path | None = None, workers: int = 1) -> tuple[subprocess.Popen, dict]:
    extra = ["--config", str(config)] if config else []
    extra += ["--workers", str(workers)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "plexrec.cli.main", "serve", "--snapshot", str(root), "--redis",
         redis_url, "--namespace", NAMESPACE, "--port", "0", "--exact-threshold",
         str(exact_threshold), *extra], cwd=REPO, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError("server exited before announcing its port")
    return proc, json.loads(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--requests", type=int, default=4000, help="requests per run")
    parser.add_argument("--concurrency", type=int, default=2,
                        help="client tasks for the latency runs (moderate load)")
    parser.add_argument("--throughput-concurrency", type=int, default=16,
                        help="client tasks for the throughput runs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--recall-queries", type=int, default=200)
    parser.add_argument("--exact-threshold", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "serving.json"))
    args = parser.parse_args()
    if args.quick:
        args.items, args.users, args.requests = 50_000, 10_000, 500
        args.recall_queries, args.exact_threshold = 50, 20_000

    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="plexrec-bench-serving-"))
    try:
        return run_all(args, work, load_before)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_all(args: argparse.Namespace, work: Path, load_before: tuple[float, ...]) -> int:
    t0 = time.perf_counter()
    item_vecs, user_vecs = synthetic(args.items, args.users, args.width)
    snap_path = write_snapshot(work / "snapshots", users=(np.arange(args.users) + 1, user_vecs),
                               items=(np.arange(args.items) + 10_000_000, item_vecs),
                               run_id="bench")
    del item_vecs, user_vecs
    setup = {"write_snapshot_s": round(time.perf_counter() - t0, 2)}
    snap = Snapshot.open(snap_path, verify=False)
    user_ids = np.asarray(snap.ids("user"))
    rng = np.random.default_rng(1)

    with RedisProcess() as redis_proc:
        t0 = time.perf_counter()
        result = publish(snap_path, redis_proc.url, namespace=NAMESPACE, progress=False)
        setup["publish_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        server, announce = start_server(work / "snapshots", redis_proc.url, args.exact_threshold)
        setup["server_start_s"] = round(time.perf_counter() - t0, 2)
        target = f"127.0.0.1:{announce['port']}"
        try:
            report = bench(args, target, redis_proc.url, result.version, snap, user_ids, rng)
        finally:
            server.terminate()
            server.wait(30)
        # The same look-ups on a server that reads local snapshots first (prefer_snapshot):
        # shows what the Redis round trip costs inside the server.
        toml = work / "snapshot_first.toml"
        toml.write_text("prefer_snapshot = true\n")
        server, announce = start_server(work / "snapshots", redis_proc.url, args.items + 1, toml)
        try:
            report["results"].update(embedding_scenarios(
                args, f"127.0.0.1:{announce['port']}", np.random.default_rng(1), user_ids,
                suffix="_snapshot_first"))
        finally:
            server.terminate()
            server.wait(30)
        report["results"].update(tls_metrics_scenarios(args, work, redis_proc.url, user_ids))
        report["results"].update(workers_scenarios(args, work, redis_proc.url, user_ids,
                                                   redis_proc.proc.pid))
    report["ratios"] = ratios(report["results"], args.throughput_concurrency)
    print(json.dumps({"ratios": report["ratios"]}), flush=True)
    report["setup"] = setup
    report["config"] = {"items": args.items, "users": args.users, "width": args.width,
                        "requests_per_run": args.requests, "concurrency": args.concurrency,
                        "throughput_concurrency": args.throughput_concurrency,
                        "repeats": args.repeats, "exact_threshold": args.exact_threshold,
                        "quick": args.quick, "cpus": os.cpu_count(),
                        "load_average_before": [round(x, 2) for x in load_before],
                        "load_average_after": [round(x, 2) for x in os.getloadavg()],
                        "python": platform.python_version()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


def bench(args: argparse.Namespace, target: str, redis_url: str, version: str, snap: Snapshot,
          user_ids: np.ndarray, rng: np.random.Generator) -> dict:
    import grpc

    channel = grpc.insecure_channel(target)
    info = pb_grpc.EmbeddingServiceStub(channel).GetModelInfo(pb.GetModelInfoRequest(),
                                                              timeout=30)
    channel.close()
    batches1, batches100 = id_batches(rng, user_ids)
    queries = rng.choice(user_ids, 1000)

    async def ret(stub, i: int) -> None:
        r = await stub.Retrieve(pb.RetrieveRequest(user_id=int(queries[i % len(queries)]),
                                                   k=100), timeout=10)
        assert len(r.item_ids) == 100

    async def floor(stub, i: int) -> None:
        await stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)

    scenarios = {
        "grpc_floor_get_model_info_c1": lambda: run_load(target, floor, args.requests, 1),
        "get_embeddings_1_id_c1": lambda: run_load(target, lambda s, i: emb(batches1, s, i),
                                                   args.requests, 1),
        "grpc_floor_get_model_info": lambda: run_load(target, floor, args.requests,
                                                      args.concurrency),
        "redis_hmget_1_id": lambda: run_redis_load(redis_url, version, batches1, info.partitions,
                                                   args.requests, args.concurrency),
        "get_embeddings_1_id": lambda: run_load(target, lambda s, i: emb(batches1, s, i),
                                                args.requests, args.concurrency),
        "redis_hmget_100_ids": lambda: run_redis_load(redis_url, version, batches100,
                                                      info.partitions, args.requests,
                                                      args.concurrency),
        "get_embeddings_100_ids": lambda: run_load(target, lambda s, i: emb(batches100, s, i),
                                                   args.requests, args.concurrency),
        "retrieve_k100": lambda: run_load(target, ret, max(args.requests // 2, 100),
                                          args.concurrency),
    }
    tc = args.throughput_concurrency
    scenarios.update({
        f"get_embeddings_1_id_c{tc}": lambda: run_load(target, lambda s, i: emb(batches1, s, i),
                                                       args.requests, tc),
        f"get_embeddings_100_ids_c{tc}": lambda: run_load(
            target, lambda s, i: emb(batches100, s, i), args.requests, tc),
        f"retrieve_k100_c{tc}": lambda: run_load(target, ret, max(args.requests // 2, 100), tc),
    })
    results = run_scenarios(scenarios, args.repeats)
    results["retrieval_recall_at_100"] = end_to_end_recall(target, snap, user_ids, rng,
                                                           args.recall_queries)
    return {"server": {"version": info.version, "index_kind": info.index_kind,
                       "partitions": info.partitions,
                       "index_metrics": {k: round(v, 4) for k, v in info.metrics.items()}},
            "results": results,
            "targets": {"get_embeddings_1_id_c1_p99_over_floor_p99": 1.5,
                        "get_embeddings_100_ids_p99_over_redis_hmget_p99": 1.0,
                        "workers_2_over_workers_1_qps_c16": 1.7,
                        "tls_metrics_p50_over_plain_p50": 1.2, "recall_at_100": 0.95}}


def id_batches(rng: np.random.Generator, user_ids: np.ndarray
               ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    return ([rng.choice(user_ids, 1) for _ in range(1000)],
            [rng.choice(user_ids, 100, replace=False) for _ in range(1000)])


def _client_process(target: str, user_ids: np.ndarray, requests: int, concurrency: int,
                    seed: int) -> dict:
    batches1, _ = id_batches(np.random.default_rng(seed), user_ids)
    cpu = time.process_time()
    out = asyncio.run(run_load(target, lambda s, i: emb(batches1, s, i), requests, concurrency,
                               channels=concurrency))
    return {**out, "cpu_s": time.process_time() - cpu}


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its live children (from /proc)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    pending = [pid]
    while pending:
        p = pending.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        pending += [int(c) for c in children]
    return total


def multi_client_qps(target: str, user_ids: np.ndarray, requests: int, concurrency: int,
                     processes: int = 2) -> dict:
    """1-id look-ups from `processes` load-generator processes (one Python process cannot drive
    two server processes), `concurrency` tasks on as many connections in all."""
    from concurrent.futures import ProcessPoolExecutor

    per = max(concurrency // processes, 1)
    with ProcessPoolExecutor(processes) as pool:
        runs = list(pool.map(_client_process, [target] * processes, [user_ids] * processes,
                             [requests // processes] * processes, [per] * processes,
                             range(processes)))
    wall = max(r["requests"] / r["qps"] for r in runs)
    return {"qps": sum(r["qps"] for r in runs), "p50_ms": max(r["p50_ms"] for r in runs),
            "p99_ms": max(r["p99_ms"] for r in runs), "requests": sum(r["requests"] for r in runs),
            "client_cores": sum(r["cpu_s"] for r in runs) / wall, "wall_s": wall}


def workers_scenarios(args: argparse.Namespace, work: Path, redis_url: str,
                      user_ids: np.ndarray, redis_pid: int) -> dict:
    """Throughput of `--workers 1` against `--workers 2`, same load, same run."""
    results = {}
    tc = args.throughput_concurrency
    for workers in (1, 2):
        server, announce = start_server(work / "snapshots", redis_url, args.exact_threshold,
                                        workers=workers)
        target = f"127.0.0.1:{announce['port']}"
        runs = []
        try:
            for _ in range(args.repeats):
                cpu, redis_cpu = tree_cpu_s(server.pid), tree_cpu_s(redis_pid)
                run = multi_client_qps(target, user_ids, args.requests * 2, tc)
                run["server_cores"] = (tree_cpu_s(server.pid) - cpu) / run["wall_s"]
                run["redis_cores"] = (tree_cpu_s(redis_pid) - redis_cpu) / run["wall_s"]
                runs.append(run)
        finally:
            server.terminate()
            server.wait(60)
        name = f"get_embeddings_1_id_c{tc}_workers_{workers}"
        results[name] = median_runs(runs)
        for key in ("server_cores", "client_cores", "redis_cores"):
            results[name][key] = round(statistics.median(r[key] for r in runs), 2)
        print(f"{name:36s} qps {results[name]['qps']:9.1f}  server cores "
              f"{results[name]['server_cores']:.2f}  load-generator cores "
              f"{results[name]['client_cores']:.2f}  redis cores "
              f"{results[name]['redis_cores']:.2f}", flush=True)
    return results


def tls_metrics_scenarios(args: argparse.Namespace, work: Path, redis_url: str,
                          user_ids: np.ndarray) -> dict:
    """The same 1-id look-ups on a server with TLS and the metrics endpoint on."""
    sys.path.insert(0, str(REPO))
    from tests.serving.tls_helpers import make_pki

    pki = make_pki(work / "pki")
    toml = work / "tls_metrics.toml"
    toml.write_text(f'tls_cert = "{pki.server_cert}"\ntls_key = "{pki.server_key}"\n'
                    "metrics_port = 0\n")
    server, announce = start_server(work / "snapshots", redis_url, args.exact_threshold, toml)
    batches1, _ = id_batches(np.random.default_rng(1), user_ids)
    try:
        return run_scenarios({"get_embeddings_1_id_tls_metrics": lambda: run_load(
            f"127.0.0.1:{announce['port']}", lambda s, i: emb(batches1, s, i), args.requests,
            args.concurrency, tls_ca=pki.ca)}, args.repeats)
    finally:
        server.terminate()
        server.wait(30)


def ratios(results: dict, tc: int) -> dict:
    def r(a: str, b: str, key: str) -> float | None:
        if a in results and b in results and results[b][key]:
            return round(results[a][key] / results[b][key], 3)
        return None
    return {
        "get_embeddings_1_id_c1_p99_over_floor_p99": r(
            "get_embeddings_1_id_c1", "grpc_floor_get_model_info_c1", "p99_ms"),
        "get_embeddings_100_ids_p99_over_redis_hmget_p99": r(
            "get_embeddings_100_ids", "redis_hmget_100_ids", "p99_ms"),
        "workers_2_over_workers_1_qps_c16": r(
            f"get_embeddings_1_id_c{tc}_workers_2", f"get_embeddings_1_id_c{tc}_workers_1", "qps"),
        "tls_metrics_p50_over_plain_p50": r(
            "get_embeddings_1_id_tls_metrics", "get_embeddings_1_id", "p50_ms"),
    }


async def emb(ids_list: list[np.ndarray], stub, i: int) -> None:
    ids = ids_list[i % len(ids_list)]
    r = await stub.GetEmbeddings(pb.GetEmbeddingsRequest(entity=pb.USER, ids=ids.tolist()),
                                 timeout=10)
    assert len(r.found_ids) == len(ids)


def run_scenarios(scenarios: dict, repeats: int) -> dict:
    results = {}
    for name, make in scenarios.items():
        runs = [asyncio.run(make()) for _ in range(repeats)]
        results[name] = median_runs(runs)
        print(f"{name:36s} qps {results[name]['qps']:9.1f}  p50 {results[name]['p50_ms']:7.3f} ms"
              f"  p99 {results[name]['p99_ms']:7.3f} ms", flush=True)
    return results


def embedding_scenarios(args: argparse.Namespace, target: str, rng: np.random.Generator,
                        user_ids: np.ndarray, suffix: str) -> dict:
    batches1, batches100 = id_batches(rng, user_ids)
    return run_scenarios({
        f"get_embeddings_1_id{suffix}": lambda: run_load(
            target, lambda s, i: emb(batches1, s, i), args.requests, args.concurrency),
        f"get_embeddings_100_ids{suffix}": lambda: run_load(
            target, lambda s, i: emb(batches100, s, i), args.requests, args.concurrency),
    }, args.repeats)


def end_to_end_recall(target: str, snap: Snapshot, user_ids: np.ndarray,
                      rng: np.random.Generator, n: int) -> float:
    """Server answers (FAISS or exact, whatever it built) against exact numpy top-100."""
    from plexrec.serving.client import EmbeddingClient

    users = rng.choice(user_ids, n, replace=False)
    queries = np.asarray(snap.vectors("user"))[snap.row_of("user", users)]
    _, exact_rows = top_k_exact(snap.vectors("item"), queries, 100)
    item_ids = np.asarray(snap.ids("item"))
    hits = []
    with EmbeddingClient(target, timeout=30) as client:
        for u, rows in zip(users.tolist(), exact_rows, strict=True):
            got = client.retrieve(user_id=u, k=100).item_ids
            hits.append(len(np.intersect1d(got, item_ids[rows])) / 100)
    recall = float(np.mean(hits))
    print(f"retrieval recall@100 (server vs exact, {n} users): {recall:.4f}", flush=True)
    return round(recall, 4)


if __name__ == "__main__":
    sys.exit(main())
