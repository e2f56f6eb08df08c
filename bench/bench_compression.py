"""Vector compression: stored dtypes x candidate indexes on 1M x 64 unit vectors and MovieLens.

Dtypes float32, float16, int8 and binary; corpora 1M x 64 clustered and isotropic unit vectors
and the MovieLens-100K two-tower vectors.

Every figure is measured in one run against exact float32 search over the same items:
- per dtype: bytes of a stored vector (the snapshot's code + scale, one Redis hash value) and
  its ratio to float32; Redis `used_memory` added by publishing the snapshot (users and items)
  on a private redis-server, per vector; publish speed (serving.publish: sha256 verify, writes,
  read-back verify, commit); GetEmbeddings p50/p99 through a real `plexrec serve` process
  reading that Redis (1 and 100 ids decoded to float32 by the server, 100 ids in the stored
  encoding) beside redis-py's own HMGET of the same 100 ids (bench_serving's load generator);
  recall@100 of exact search over the decoded vectors (what a server holding that snapshot
  searches: items and user queries decoded) against exact float32 search;
- per dtype x index kind: the index built by `build_index` over the decoded items, as the
  server builds it (bench_index.measure_index: index bytes per vector, recall@100 against exact
  float32 on held-out queries, QPS one query at a time with 1 and 2 threads, and its ratio to
  exact search timed in alternating passes);
- MovieLens-100K: the shipped configs/movielens_two_tower.toml trained by `plexrec train`'s
  trainer (as bench_retrieval_quality does), its test-split vectors stored as each dtype and
  decoded: recall@50 / NDCG@10 on the held-out positives at every Matryoshka width (a prefix
  re-normalised as served; the full width as stored), plus the same Redis and index figures on
  the exported snapshot and its 1,682 items.
The synthetic corpora are bench_index.make_corpus, L2-normalised (the two-tower emits unit
vectors); a binary snapshot gets an ITQ rotation learned on its users and items together, as
`plexrec export` does. Timings are medians of `--repeats` runs. Targets (issue 17) are checked
and reported pass/fail in the JSON and the printout. Index kinds over a dtype whose exact search
already misses the index target recall (binary: every kind re-ranks on the decoded signs) are
skipped unless `--all-pairs`.

    python bench/bench_compression.py            # 1M x 64, 100k users: ~40-60 min, 2 cores
    python bench/bench_compression.py --quick    # 10k items, 1-epoch MovieLens: ~2-3 min
    python bench/bench_compression.py --dtypes float32 int8 --kinds exact auto binary
Writes bench/results/compression.json and bench/results/compression.png (recall@100 against
bytes per vector). HNSW is left out by default as in bench_index (`--kinds hnsw` adds it)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_index import K, make_corpus, measure_index, qps  # noqa: E402
from bench.bench_serving import (  # noqa: E402
    NAMESPACE,
    emb,
    id_batches,
    run_load,
    run_redis_load,
    run_scenarios,
    start_server,
)
from bench.samples import ML_100K  # noqa: E402
from plexrec.models.snapshot import Snapshot, write_snapshot  # noqa: E402
from plexrec.models.vector_codecs import CODECS, learn_itq_rotation  # noqa: E402
from plexrec.proto.plexrec.v1 import plexrec_pb2 as pb  # noqa: E402
from plexrec.proto.plexrec.v1 import plexrec_pb2_grpc as pb_grpc  # noqa: E402
from plexrec.serving.index import ExactIndex, IndexConfig, top_k_exact  # noqa: E402
from plexrec.serving.index_registry import INDEXES  # noqa: E402
from plexrec.serving.publish import publish  # noqa: E402
from plexrec.serving.redis_process import RedisProcess  # noqa: E402

RESULTS = REPO / "bench" / "results"
SYNTHETIC = ("clustered", "isotropic")
DATASETS = (*SYNTHETIC, "movielens")
DTYPES = tuple(CODECS)
KINDS = ("exact", *INDEXES)
ITQ_ITERATIONS = 50  # training.export_config.ExportConfig's default, as `plexrec export` uses
TARGETS = {
    "int8_bytes_vs_float32_max": 0.27, "int8_recall_at_100_min": 0.99,
    "binary_first_stage_bytes_vs_float32_max": 1 / 32, "binary_rerank_recall_at_100_min": 0.95,
    "matryoshka_half_width_recall_at_50_share_min": 0.95,
    "retrieval_items": 1_000_000, "retrieval_recall_at_100_min": 0.95,
    "retrieval_qps_vs_exact_min": 10.0,
}


def unit(x: np.ndarray) -> np.ndarray:
    """Rows L2-normalised (zero rows kept), float32: the two-tower's output."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def overlap(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean |approx row ∩ exact row| / k: recall@k of precomputed top-k rows."""
    k = exact.shape[1]
    return float(np.mean([len(np.intersect1d(a[a >= 0], e)) / k
                          for a, e in zip(approx, exact, strict=True)]))


def rotation_for(dtype: str, *vectors: np.ndarray) -> np.ndarray | None:
    """ITQ for binary, learned on users and items together (training.export.binary_rotation's
    recipe), so the benchmark stores what `plexrec export` would."""
    if dtype != "binary":
        return None
    return learn_itq_rotation(np.concatenate(vectors), iterations=ITQ_ITERATIONS, seed=0)


# --- Redis and gRPC ---------------------------------------------------------------------------

async def emb_stored(ids_list: list[np.ndarray], stub: Any, i: int) -> None:
    """bench_serving.emb in the stored encoding: codes + scales, no decode on the server."""
    ids = ids_list[i % len(ids_list)]
    r = await stub.GetEmbeddings(pb.GetEmbeddingsRequest(
        entity=pb.USER, ids=ids.tolist(), encoding=pb.ENCODING_STORED), timeout=10)
    assert len(r.found_ids) == len(ids)


def redis_figures(snap_path: Path, redis_proc: RedisProcess, args: argparse.Namespace,
                  label: str) -> dict[str, Any]:
    """Publishes `snap_path` `--repeats` times into an emptied Redis (time, memory added), then
    serves the last copy from a `plexrec serve` process (exact search only: no index is built
    for look-ups) and times GetEmbeddings on it."""
    snap = Snapshot.open(snap_path, verify=False)
    client = redis.Redis.from_url(redis_proc.url)
    seconds, added = [], []
    written = 0
    try:
        for _ in range(args.repeats):
            client.flushall()
            before = int(client.info("memory")["used_memory"])
            result = publish(snap_path, redis_proc.url, namespace=NAMESPACE, progress=False)
            assert not result.skipped
            written = result.vectors_written
            seconds.append(result.seconds)
            added.append(int(client.info("memory")["used_memory"]) - before)
        used_memory = int(client.info("memory")["used_memory"])
    finally:
        client.close()
    pub_s = statistics.median(seconds)
    out: dict[str, Any] = {
        "vectors": written, "publish_s": round(pub_s, 3),
        "publish_vectors_per_s": round(written / pub_s),
        "publish_runs_s": [round(s, 3) for s in seconds],
        "redis_used_memory": used_memory,
        "redis_used_memory_added": int(statistics.median(added)),
        "redis_bytes_per_vector": round(statistics.median(added) / written, 1),
    }
    threshold = sum(snap.count(e) for e in snap.entities) + 1
    server, announce = start_server(snap_path.parent, redis_proc.url, threshold)
    target = f"127.0.0.1:{announce['port']}"
    try:
        out.update(lookups(target, redis_proc.url, snap, args, label))
    finally:
        server.terminate()
        server.wait(30)
    return out


def lookups(target: str, redis_url: str, snap: Snapshot, args: argparse.Namespace,
            label: str) -> dict[str, Any]:
    """GetEmbeddings through the server (bench_serving's load generator and scenarios), after
    checking that the server's float32 answer is the snapshot's decoded vector."""
    import grpc

    user_ids = np.asarray(snap.ids("user"))
    rng = np.random.default_rng(1)
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.EmbeddingServiceStub(channel)
        info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=30)
        probe = rng.choice(user_ids, min(100, len(user_ids)), replace=False)
        got = stub.GetEmbeddings(pb.GetEmbeddingsRequest(entity=pb.USER, ids=probe.tolist()),
                                 timeout=30)
    served = np.frombuffer(got.vectors, dtype="<f4").reshape(len(probe), -1)
    expected = snap.decode_rows("user", snap.row_of("user", probe))
    if info.dtype != snap.dtype or not np.allclose(served, expected, rtol=0, atol=1e-6):
        raise RuntimeError(f"{label}: the server's {info.dtype} vectors differ from the "
                           f"snapshot's decoded {snap.dtype} vectors")
    batches1, batches100 = id_batches(rng, user_ids)
    n, c = args.requests, args.concurrency
    print(f"  {label}: GetEmbeddings through the server ({n} requests x {args.repeats}, "
          f"{c} client tasks)", flush=True)
    results = run_scenarios({
        "get_embeddings_1_id": lambda: run_load(target, lambda s, i: emb(batches1, s, i), n, c),
        "get_embeddings_100_ids": lambda: run_load(
            target, lambda s, i: emb(batches100, s, i), n, c),
        "get_embeddings_100_ids_stored": lambda: run_load(
            target, lambda s, i: emb_stored(batches100, s, i), n, c),
        "redis_hmget_100_ids": lambda: run_redis_load(redis_url, snap.version, batches100,
                                                      info.partitions, n, c),
    }, args.repeats)
    return {"server_dtype": info.dtype, "lookup_matches_snapshot": True, "lookups": results}


# --- retrieval --------------------------------------------------------------------------------

def exact_qps(items: np.ndarray, queries: np.ndarray, repeats: int) -> dict[str, float]:
    """Exact float32 search, one query at a time, 1 and 2 threads (median of passes): the
    reference every dtype's exact row is served at (the server decodes to float32 at load)."""
    index = ExactIndex(items)
    for q in queries[:5]:  # warm-up: BLAS threads and the first pass over the matrix
        index.search(q[None], K)
    return {f"qps_{name}": round(statistics.median(
        qps(lambda q: index.search(q, K), queries, threads) for _ in range(repeats)), 1)
        for threads, name in ((1, "1_thread"), (2, "2_threads"))}


def dtype_exact_row(dtype: str, width: int, items: np.ndarray, eval_f32: np.ndarray,
                    eval_dec: np.ndarray, exact_rows: np.ndarray, reference: dict[str, float]
                    ) -> dict[str, Any]:
    """Exact search over the decoded items: with decoded queries (Retrieve by user_id on that
    snapshot) and with float32 queries (Retrieve by user features: the tower's own output)."""
    k = exact_rows.shape[1]
    _, rows = top_k_exact(items, eval_dec, k)
    _, rows_f32 = top_k_exact(items, eval_f32, k)
    return {"index": "exact", "bytes_per_vector": CODECS[dtype].bytes_per_vector(width),
            "bytes_note": "stored bytes; searched as the float32 matrix decoded at load",
            f"recall_at_{K}": round(overlap(rows, exact_rows), 4),
            f"recall_at_{K}_float32_queries": round(overlap(rows_f32, exact_rows), 4),
            "qps_1_thread": reference["qps_1_thread"], "qps_1_thread_vs_exact": 1.0,
            "qps_2_threads": reference["qps_2_threads"], "qps_2_threads_vs_exact": 1.0}


def index_rows(dtype: str, width: int, items: np.ndarray, tune: np.ndarray,
               eval_f32: np.ndarray, eval_dec: np.ndarray, exact_rows: np.ndarray,
               reference: dict[str, float], args: argparse.Namespace, label: str
               ) -> dict[str, Any]:
    """Every kind over one dtype's decoded items (queries decoded too), recall against exact
    float32 (`exact_rows`). A kind that cannot be built on this corpus is reported, not fatal.
    Every index re-ranks on, or approximates, exact search over the decoded items, so when that
    search stays below the index target recall (binary: ~0.2-0.6) the kinds are skipped unless
    `--all-pairs`: each would only raise its effort to the cap, for minutes at 1M."""
    config = IndexConfig(recall_queries=len(tune), seed=args.seed)
    exact = dtype_exact_row(dtype, width, items, eval_f32, eval_dec, exact_rows, reference)
    cap = exact[f"recall_at_{K}"]
    out: dict[str, Any] = {}
    for kind in args.kinds:
        if kind == "exact":
            row = exact
        elif cap < config.target_recall and not args.all_pairs:
            out[kind] = {"skipped": f"exact search over the decoded {dtype} vectors reaches "
                                    f"recall@{K} {cap:.4f} < the index target "
                                    f"{config.target_recall}; an index over them is bounded "
                                    "by it (--all-pairs measures it anyway)"}
            print(f"  {label} {dtype:8s} {kind:9s} skipped (exact over decoded {cap:.4f})",
                  flush=True)
            continue
        else:
            try:
                row = measure_index(kind, items, tune, eval_dec, exact_rows, config,
                                    args.repeats, args.exact_queries)
            except (RuntimeError, ValueError) as exc:  # FAISS refuses, e.g., too few points
                out[kind] = {"error": str(exc)}
                print(f"  {label} {dtype:8s} {kind:9s} failed: {exc}", flush=True)
                continue
        out[kind] = row
        print(f"  {label} {dtype:8s} {kind:9s} {row['index']:15s} "
              f"{row['bytes_per_vector']:7.1f} B/vec  recall@{K} {row[f'recall_at_{K}']:.4f}  "
              f"QPS {row['qps_1_thread']:8.1f} ({row['qps_1_thread_vs_exact']:6.2f}x exact)  "
              f"2 threads {row['qps_2_threads']:8.1f} ({row['qps_2_threads_vs_exact']:6.2f}x)",
              flush=True)
    return out


def dtype_figures(dtype: str, snap_path: Path, width: int, users: int, encode_s: float
                  ) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """(stored-size figures, decoded items, the first `users` decoded users) as the server
    would hold them (Snapshot.vectors decodes as the server's loader does)."""
    snap = Snapshot.open(snap_path, verify=False)
    codec = CODECS[dtype]
    figures = {"bytes_per_vector": codec.bytes_per_vector(width),
               "bytes_vs_float32": round(codec.bytes_per_vector(width) / (4 * width), 4),
               "snapshot_vector_bytes": sum(
                   (snap_path / snap.manifest["entities"][e][f]).stat().st_size
                   for e in snap.entities for f in ("vectors", "scales")
                   if f in snap.manifest["entities"][e]),
               "write_snapshot_s": round(encode_s, 2)}
    return (figures, np.array(snap.vectors("item"), dtype=np.float32),
            np.array(snap.vectors("user")[:users], dtype=np.float32))


def run_synthetic(corpus: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    q = args.queries
    items, users = make_corpus(corpus, args.items, args.width, seed=args.seed,
                               queries=max(args.users, 2 * q))
    items, users = unit(items), unit(users)
    eval_f32 = users[q:2 * q]  # users[:q] tune the indexes (decoded, below)
    started = time.perf_counter()
    _, exact_rows = top_k_exact(items, eval_f32, K)
    reference = exact_qps(items, eval_f32[:args.exact_queries], args.repeats)
    print(f"{corpus}: {args.items:,} items x {args.width}, {len(users):,} users (unit vectors); "
          f"exact float32 QPS {reference['qps_1_thread']} (1 thread), "
          f"{reference['qps_2_threads']} (2 threads)", flush=True)
    item_ids = np.arange(args.items, dtype=np.int64) + 10_000_000
    user_ids = np.arange(len(users), dtype=np.int64) + 1
    out: dict[str, Any] = {"items": args.items, "users": len(users), "width": args.width,
                           "exact_float32": reference, "dtypes": {}, "indexes": {}}
    with RedisProcess() as redis_proc:
        for dtype in args.dtypes:
            t0 = time.perf_counter()
            path = write_snapshot(work / corpus / dtype, users=(user_ids, users),
                                  items=(item_ids, items), run_id=f"compression-{corpus}",
                                  dtype=dtype, rotation=rotation_for(dtype, users, items))
            figures, dec_items, dec_users = dtype_figures(
                dtype, path, args.width, 2 * q, time.perf_counter() - t0)
            if corpus in args.redis_datasets:
                figures.update(redis_figures(path, redis_proc, args, f"{corpus} {dtype}"))
            out["dtypes"][dtype] = figures
            out["indexes"][dtype] = index_rows(dtype, args.width, dec_items, dec_users[:q],
                                               eval_f32, dec_users[q:], exact_rows, reference,
                                               args, corpus)
            if "exact" in out["indexes"][dtype]:
                figures[f"exact_recall_at_{K}"] = out["indexes"][dtype]["exact"][f"recall_at_{K}"]
            del dec_items, dec_users
            shutil.rmtree(path, ignore_errors=True)
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


# --- MovieLens --------------------------------------------------------------------------------

def movielens_dir(args: argparse.Namespace, work: Path) -> tuple[Path, str]:
    """The real ml-100k when present, else the project's look-alike generator's."""
    if (args.data / "u.data").is_file():
        return args.data, "MovieLens-100K (GroupLens ml-100k)"
    from plexrec.features.synth_movielens import write_movielens

    out = work / "ml-100k-synth"
    write_movielens(out, seed=0, progress=False)
    return out, "MovieLens-100K look-alike (plexrec.features.synth_movielens, seed 0)"


def run_movielens(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Trains the shipped two-tower once per seed (bench_retrieval_quality's recipe), scores each
    dtype's decoded test vectors at every Matryoshka width; the first seed's run is also exported
    per dtype for the Redis and index figures."""
    import torch

    from bench.bench_retrieval_quality import CONFIG, HOLDOUT, KS
    from plexrec.features.cache import PreparedData
    from plexrec.features.prepare import prepare
    from plexrec.features.schema import load_schema
    from plexrec.models.two_tower import prefix_vectors
    from plexrec.training.export import export_snapshot, load_trained
    from plexrec.training.export_config import ExportConfig
    from plexrec.training.launch import LaunchOptions, run_train
    from plexrec.training.retrieval_metrics import evaluate_topk
    from plexrec.training.two_tower import (
        corpus_vectors,
        make_split,
        phase_of,
        vector_scorer,
    )

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as bench_retrieval_quality: training speed is not measured here
    started = time.perf_counter()
    source, dataset = movielens_dir(args, work)
    prepared = work / "ml-prepared"
    prepare(load_schema(REPO / "configs" / "movielens.toml"), source, prepared, progress=False)
    split = make_split(PreparedData.open(prepared), HOLDOUT, val_holdout=HOLDOUT)
    targets, seen, _ = phase_of(split, "test")
    overrides = ["mlflow.enabled=false", f"train.runs_root={work / 'runs'}",
                 "retrieval.final_fit=false", *([f"train.epochs={args.epochs}"]
                                                if args.epochs else [])]
    out: dict[str, Any] = {"dataset": dataset, "config": str(CONFIG.relative_to(REPO)),
                           "overrides": overrides, "seeds": args.seeds, "runs": []}
    try:
        for n, seed in enumerate(args.seeds):
            t0 = time.perf_counter()
            result = run_train(LaunchOptions(config=CONFIG, data=str(prepared), quiet=True,
                                             overrides=[*overrides, f"train.seed={seed}"]))
            trained = load_trained(result["run_dir"])
            model = trained.parts.model
            c, user_vecs, item_vecs = corpus_vectors(model, trained.data, split, "test")
            users, items = user_vecs.numpy(), item_vecs.numpy()
            width = items.shape[1]
            widths = sorted({w for w in (*model.matryoshka, width) if w <= width})
            run: dict[str, Any] = {"seed": seed, "train_s": round(time.perf_counter() - t0, 1),
                                   "steps": result["steps"], "width": width,
                                   "matryoshka": [int(w) for w in model.matryoshka],
                                   "users": len(users), "items": len(items), "dtypes": {}}
            for dtype in args.dtypes:
                codec, rotation = CODECS[dtype], rotation_for(dtype, users, items)
                du, di = (codec.decode(e.codes, e.scales, width, rotation) for e in
                          (codec.encode(users, rotation), codec.encode(items, rotation)))
                per: dict[str, Any] = {}
                for w in widths:
                    # The full width as stored (the index holds decoded items as they are); a
                    # prefix re-normalised, as the server's PrefixSearch scores it.
                    tu, ti = torch.from_numpy(du), torch.from_numpy(di)
                    if w < width:
                        tu, ti = prefix_vectors(tu, w), prefix_vectors(ti, w)
                    m = evaluate_topk(vector_scorer(c.users, tu, ti), targets, seen, c.items, KS)
                    per[str(w)] = {"recall@50": round(m["recall@50"], 4),
                                   "ndcg@10": round(m["ndcg@10"], 4)}
                _, exact_rows = top_k_exact(items, users, K)
                _, rows = top_k_exact(di, du, K)
                run["dtypes"][dtype] = {"widths": per,
                                        f"exact_recall_at_{K}": round(overlap(rows, exact_rows),
                                                                      4)}
                print(f"movielens seed {seed} {dtype:8s} recall@50 by width: "
                      + "  ".join(f"w{w} {v['recall@50']:.4f}" for w, v in per.items())
                      + f"  exact recall@{K} vs float32 "
                        f"{run['dtypes'][dtype][f'exact_recall_at_{K}']:.4f}", flush=True)
            out["runs"].append(run)
            if n == 0:
                out.update(movielens_serving(args, work, trained, users, items,
                                             export_snapshot, ExportConfig))
    finally:
        torch.set_num_threads(threads)
    out["recall_at_50"] = {d: {w: round(statistics.mean(r["dtypes"][d]["widths"][w]["recall@50"]
                                                         for r in out["runs"]), 4)
                               for w in out["runs"][0]["dtypes"][d]["widths"]}
                           for d in args.dtypes}
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def movielens_serving(args: argparse.Namespace, work: Path, trained: Any, users: np.ndarray,
                      items: np.ndarray, export_snapshot: Any, export_config: Any
                      ) -> dict[str, Any]:
    """Each dtype exported by `plexrec export`'s own function, published and served; indexes
    over the test-split item vectors (half the users tune, half evaluate)."""
    width = items.shape[1]
    half = len(users) // 2
    _, exact_rows = top_k_exact(items, users[half:], K)
    reference = exact_qps(items, users[half:][:args.exact_queries], args.repeats)
    out: dict[str, Any] = {"exact_float32": reference, "dtypes": {}, "indexes": {}}
    with RedisProcess() as redis_proc:
        for dtype in args.dtypes:
            t0 = time.perf_counter()
            exported = export_snapshot(trained.parts, trained.data, work / "ml-export" / dtype,
                                       run_id=f"compression-ml-{dtype}",
                                       export=export_config(vector_dtype=dtype))
            encode_s = time.perf_counter() - t0
            figures = {"bytes_per_vector": CODECS[dtype].bytes_per_vector(width),
                       "bytes_vs_float32": round(CODECS[dtype].bytes_per_vector(width)
                                                 / (4 * width), 4),
                       "export_s": round(encode_s, 2)}
            if "movielens" in args.redis_datasets:
                figures.update(redis_figures(exported.snapshot, redis_proc, args,
                                             f"movielens {dtype}"))
            out["dtypes"][dtype] = figures
            codec, rotation = CODECS[dtype], rotation_for(dtype, users, items)
            du, di = (codec.decode(e.codes, e.scales, width, rotation) for e in
                      (codec.encode(users, rotation), codec.encode(items, rotation)))
            out["indexes"][dtype] = index_rows(dtype, width, di, du[:half], users[half:],
                                               du[half:], exact_rows, reference, args,
                                               "movielens")
            if "exact" in out["indexes"][dtype]:
                figures[f"exact_recall_at_{K}"] = out["indexes"][dtype]["exact"][f"recall_at_{K}"]
    return out


# --- targets, table, plot ---------------------------------------------------------------------

def check_targets(report: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Pass/fail of each issue-17 target on the measured datasets (None: not measured)."""
    data = report["datasets"]
    width = args.width
    out: dict[str, Any] = {}

    def row(dataset: str, dtype: str, kind: str) -> dict[str, Any] | None:
        source = data.get(dataset, {})
        r = source.get("indexes", {}).get(dtype, {}).get(kind)
        return r if r and f"recall_at_{K}" in r else None

    if "int8" in args.dtypes and "exact" in args.kinds:
        ratio = CODECS["int8"].bytes_per_vector(width) / (4 * width)
        exact_int8 = {d: r for d in data if (r := row(d, "int8", "exact"))}
        recalls = {d: r[f"recall_at_{K}"] for d, r in exact_int8.items()}
        f32q = {d: r[f"recall_at_{K}_float32_queries"] for d, r in exact_int8.items()}
        small = ratio <= TARGETS["int8_bytes_vs_float32_max"]
        floor = TARGETS["int8_recall_at_100_min"]
        # Pass on decoded items and decoded queries (Retrieve by user_id on an int8 snapshot);
        # float32 queries (a query from the user tower) are reported beside it.
        out["int8"] = {"bytes_vs_float32": round(ratio, 4), f"recall_at_{K}": recalls,
                       f"recall_at_{K}_float32_queries": f32q,
                       "pass_float32_queries": small and bool(f32q)
                       and min(f32q.values()) >= floor,
                       "pass": small and bool(recalls) and min(recalls.values()) >= floor}
    if "float32" in args.dtypes and "binary" in args.kinds:
        per = {}
        for d in data:
            r = row(d, "float32", "binary")
            if r:
                share = r["bytes_per_vector"] / (4 * width)
                # the serialised index adds a header of a few dozen bytes to 1M codes
                per[d] = {"first_stage_bytes_per_vector": r["bytes_per_vector"],
                          "bytes_vs_float32": round(share, 4),
                          f"rerank_recall_at_{K}": r[f"recall_at_{K}"],
                          "rerank_depth": r["search_effort"],
                          "qps_1_thread_vs_exact": r["qps_1_thread_vs_exact"],
                          "pass": share <= TARGETS["binary_first_stage_bytes_vs_float32_max"]
                          * 1.01 and r[f"recall_at_{K}"] >= TARGETS[
                              "binary_rerank_recall_at_100_min"]}
        out["binary_first_stage"] = {"per_dataset": per,
                                     "pass": bool(per) and all(p["pass"] for p in per.values())}
    ml = data.get("movielens")
    if ml and "float32" in ml.get("recall_at_50", {}):
        r50 = ml["recall_at_50"]["float32"]
        full = max(r50, key=int)
        half = str(int(full) // 2)
        if half in r50:
            share = r50[half] / r50[full] if r50[full] else 0.0
            out["matryoshka_half_width"] = {
                "full_width": int(full), "recall_at_50_full": r50[full],
                "recall_at_50_half": r50[half], "share": round(share, 4),
                "per_dtype_share": {d: round(v[half] / v[full], 4) if v[full] else None
                                    for d, v in ml["recall_at_50"].items() if half in v},
                "pass": share >= TARGETS["matryoshka_half_width_recall_at_50_share_min"]}
    retrieval = {}
    for d in SYNTHETIC:
        if d not in data:
            continue
        r = row(d, "float32", "auto")
        passing = [f"{dt}/{k}" for dt, kinds in data[d]["indexes"].items()
                   for k, v in kinds.items() if k != "exact" and f"recall_at_{K}" in v
                   and v[f"recall_at_{K}"] >= TARGETS["retrieval_recall_at_100_min"]
                   and min(v["qps_1_thread_vs_exact"], v["qps_2_threads_vs_exact"])
                   >= TARGETS["retrieval_qps_vs_exact_min"]]
        entry: dict[str, Any] = {"items": data[d]["items"], "kinds_passing": passing}
        if r:
            entry.update({"auto_index": r["index"], f"recall_at_{K}": r[f"recall_at_{K}"],
                          "qps_1_thread_vs_exact": r["qps_1_thread_vs_exact"],
                          "qps_2_threads_vs_exact": r["qps_2_threads_vs_exact"],
                          "pass": r[f"recall_at_{K}"] >= TARGETS["retrieval_recall_at_100_min"]
                          and min(r["qps_1_thread_vs_exact"], r["qps_2_threads_vs_exact"])
                          >= TARGETS["retrieval_qps_vs_exact_min"]})
        retrieval[d] = entry
    if retrieval:
        at_size = all(e["items"] >= TARGETS["retrieval_items"] for e in retrieval.values())
        out["retrieval_1m"] = {
            "per_corpus": retrieval, "subject": "the default `auto` index over float32 vectors",
            "measured_at_full_size": at_size,
            "pass": (at_size and all(e.get("pass") for e in retrieval.values())) if at_size
            else None}
    return out


def print_tables(report: dict[str, Any]) -> None:
    for name, d in report["datasets"].items():
        print(f"\n{name}")
        print(f"{'dtype':9s}{'B/vec':>7s}{'x f32':>7s}{'redis B/vec':>12s}{'publish/s':>11s}"
              f"{'1 id p50/p99 ms':>18s}{'100 ids p50/p99':>18s}{'stored p50/p99':>18s}"
              f"{'redis p50/p99':>16s}")
        for dtype, f in d.get("dtypes", {}).items():
            look = f.get("lookups", {})

            def lat(key: str, look: dict[str, Any] = look) -> str:
                return (f"{look[key]['p50_ms']:.2f}/{look[key]['p99_ms']:.2f}" if key in look
                        else "-")
            redis_b = f.get("redis_bytes_per_vector", "-")
            pub = f.get("publish_vectors_per_s", "-")
            print(f"{dtype:9s}{f['bytes_per_vector']:>7d}{f['bytes_vs_float32']:>7.3f}"
                  f"{redis_b!s:>12s}{pub!s:>11s}{lat('get_embeddings_1_id'):>18s}"
                  f"{lat('get_embeddings_100_ids'):>18s}"
                  f"{lat('get_embeddings_100_ids_stored'):>18s}{lat('redis_hmget_100_ids'):>16s}")
        print(f"{'dtype':9s}{'index':10s}{'built':16s}{'B/vec':>8s}{'recall@100':>11s}"
              f"{'QPS 1t':>9s}{'x exact':>8s}{'QPS 2t':>9s}{'x exact':>8s}")
        for dtype, kinds in d.get("indexes", {}).items():
            for kind, r in kinds.items():
                if f"recall_at_{K}" not in r:
                    why = f"error: {r['error']}" if "error" in r else "skipped"
                    print(f"{dtype:9s}{kind:10s}{why}")
                    continue
                print(f"{dtype:9s}{kind:10s}{r['index']:16s}{r['bytes_per_vector']:>8.1f}"
                      f"{r[f'recall_at_{K}']:>11.4f}{r['qps_1_thread']:>9.1f}"
                      f"{r['qps_1_thread_vs_exact']:>8.2f}{r['qps_2_threads']:>9.1f}"
                      f"{r['qps_2_threads_vs_exact']:>8.2f}")
        if "recall_at_50" in d:
            print("recall@50 on held-out positives by width (mean over seeds)")
            for dtype, per in d["recall_at_50"].items():
                print(f"{dtype:9s}" + "".join(f"  w{w}: {v:.4f}" for w, v in per.items()))
    print("\ntargets")
    for name, t in report["targets"].items():
        verdict = {True: "PASS", False: "FAIL", None: "n/a (not at full size)"}[t["pass"]]
        detail = {k: v for k, v in t.items() if k != "pass"}
        print(f"  {name:24s} {verdict:6s} {json.dumps(detail)}")


def plot(report: dict[str, Any], out: Path) -> Path:
    """recall@100 against bytes per vector (log x): the index's bytes for an index, the stored
    bytes for exact search over a dtype; colour = kind, marker = dtype."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, d in report["datasets"].items() if d.get("indexes")]
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(5.6 * max(len(names), 1), 4.8),
                             squeeze=False)
    colours = dict(zip(KINDS, plt.get_cmap("tab10").colors, strict=False))
    markers = dict(zip(DTYPES, "osD^", strict=True))
    for ax, name in zip(axes[0], names, strict=False):
        for dtype, kinds in report["datasets"][name]["indexes"].items():
            for kind, r in kinds.items():
                if f"recall_at_{K}" not in r:
                    continue
                ax.scatter(r["bytes_per_vector"], r[f"recall_at_{K}"], color=colours[kind],
                           marker=markers[dtype], s=46, alpha=0.85, edgecolors="black",
                           linewidths=0.4)
        ax.axhline(0.95, color="grey", linestyle="--", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlabel("bytes per vector (index; exact: stored dtype)")
        ax.set_ylabel(f"recall@{K} vs exact float32")
        ax.set_title(name)
        ax.grid(True, which="both", alpha=0.3)
    measured = {(dtype, kind) for n in names
                for dtype, kinds in report["datasets"][n]["indexes"].items()
                for kind, r in kinds.items() if f"recall_at_{K}" in r}
    handles = ([plt.Line2D([], [], color=c, marker="o", linestyle="none", label=f"index {k}")
                for k, c in colours.items() if any(k == kind for _, kind in measured)]
               + [plt.Line2D([], [], color="black", marker=m, linestyle="none",
                             label=f"dtype {d}", markerfacecolor="none")
                  for d, m in markers.items() if any(d == dtype for dtype, _ in measured)])
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7)
    quick = " (quick run)" if report["config"]["quick"] else ""
    fig.suptitle(f"Vector dtypes x candidate indexes: recall@{K} vs bytes per vector{quick}")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def environment(load_before: tuple[float, ...]) -> dict[str, Any]:
    import faiss

    env: dict[str, Any] = {"python": platform.python_version(), "numpy": np.__version__,
                           "faiss": faiss.__version__, "redis_py": redis.__version__,
                           "cpus": os.cpu_count(), "platform": platform.platform(),
                           "load_average_before": [round(x, 2) for x in load_before],
                           "load_average_after": [round(x, 2) for x in os.getloadavg()]}
    torch = sys.modules.get("torch")
    if torch is not None:
        env["torch"] = torch.__version__
    server = shutil.which("redis-server")
    if server:
        import subprocess

        env["redis_server"] = subprocess.run([server, "--version"], capture_output=True,
                                             text=True, check=False).stdout.strip()
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000,
                        help="synthetic users published beside the items (look-ups, queries)")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--queries", type=int, default=200,
                        help="tuning queries, and as many held-out evaluation queries")
    parser.add_argument("--exact-queries", type=int, default=50,
                        help="queries timed for exact search (slow at 1M)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs, medians reported (default 3; --quick 1)")
    parser.add_argument("--requests", type=int, default=2000, help="look-ups per timed run")
    parser.add_argument("--concurrency", type=int, default=2, help="look-up client tasks")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES))
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=None,
                        help="index kinds per dtype (default: all but hnsw; --quick: exact, "
                             "auto, binary)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0],
                        help="MovieLens training seeds (one run each, ~1 min)")
    parser.add_argument("--epochs", type=int, default=0,
                        help="MovieLens epochs (0: the config's, with early stopping)")
    parser.add_argument("--data", type=Path, default=ML_100K, help="the ml-100k directory")
    parser.add_argument("--redis-datasets", nargs="*", choices=DATASETS, default=None,
                        help="datasets with publish / Redis memory / look-up figures (default: "
                             "all; --quick: movielens; none: skip them)")
    parser.add_argument("--all-pairs", action="store_true",
                        help="build every kind over every dtype, also where exact search over "
                             "the decoded vectors is below the index target recall")
    parser.add_argument("--faiss-threads", type=int, default=None,
                        help="FAISS OpenMP threads (default: FAISS's own, as the server runs; "
                             "--quick: 1, since on a loaded 2-core machine spinning OpenMP "
                             "threads made a 1.7k-vector PQ build take 12-19 s against 0.2 s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="10k items, 1k users, 50 queries, 1 repeat, 3 index kinds, "
                             "1 FAISS thread, Redis on MovieLens only, 1-epoch MovieLens: a "
                             "smoke run of every part")
    parser.add_argument("--out", type=Path, default=RESULTS / "compression.json")
    parser.add_argument("--plot", type=Path, default=None,
                        help="PNG path (default: --out with .png)")
    args = parser.parse_args()
    if args.quick:
        args.items, args.users, args.queries = 10_000, 1_000, 50
        args.exact_queries, args.requests = 50, 200
        args.epochs = args.epochs or 1
    args.repeats = args.repeats or (1 if args.quick else 3)
    if args.kinds is None:
        args.kinds = (["exact", "auto", "binary"] if args.quick
                      else [k for k in KINDS if k != "hnsw"])
    if args.redis_datasets is None:
        args.redis_datasets = ["movielens"] if args.quick else list(DATASETS)
    if args.faiss_threads is None:
        args.faiss_threads = 1 if args.quick else 0
    import faiss

    if args.faiss_threads:
        faiss.omp_set_num_threads(args.faiss_threads)
    logging.basicConfig(level=logging.WARNING)
    load_before = os.getloadavg()
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="plexrec-bench-compression-"))
    report: dict[str, Any] = {"benchmark": "compression", "datasets": {}}
    try:
        for name in args.datasets:
            report["datasets"][name] = (run_movielens(args, work) if name == "movielens"
                                        else run_synthetic(name, args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["config"] = {
        "items": args.items, "users": args.users, "width": args.width, "k": K,
        "queries": args.queries, "exact_queries": args.exact_queries, "repeats": args.repeats,
        "requests_per_run": args.requests, "concurrency": args.concurrency,
        "datasets": args.datasets, "dtypes": args.dtypes, "kinds": args.kinds,
        "seeds": args.seeds, "epochs": args.epochs or "config", "seed": args.seed,
        "quick": args.quick, "redis_datasets": args.redis_datasets, "all_pairs": args.all_pairs,
        "faiss_threads": args.faiss_threads or faiss.omp_get_max_threads(),
        "vectors": "bench_index.make_corpus, L2-normalised", "itq_iterations": ITQ_ITERATIONS,
        "queries_for_indexes": "decoded with the dtype (as a stored user vector is served)",
        "seconds": round(time.perf_counter() - started, 1)}
    report["environment"] = environment(load_before)
    report["target_spec"] = TARGETS
    report["targets"] = check_targets(report, args)
    print_tables(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    png = plot(report, args.plot or args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {png} in {report['config']['seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
