"""Candidate-index benchmark: every registered index kind on 1M x 64 clustered (trained-like)
and 1M x 64 isotropic Gaussian vectors, against exact float32 search measured in the same run.

Per kind and corpus: build seconds (FAISS build, then the build-time effort tuning that
`build_index` runs on its own recall queries), bytes per vector of the index (serialised FAISS
index / items; the re-ranking kinds also read the float32 matrix the server holds anyway),
recall@100 against exact search on held-out queries, QPS one query at a time (as the server
calls it) and with 2 threads, and the QPS ratio to exact search timed in alternating passes
(the median of `--repeats` per-pass ratios). Each index is built once.

    python bench/bench_index.py            # 1M items x 64 (several minutes on 2 cores)
    python bench/bench_index.py --quick    # 100k items
Writes bench/results/index.json. HNSW is left out by default (`--kinds hnsw` adds it): on 1M
isotropic vectors it took 2-8 min to build and stayed below recall 0.65 at efSearch 1024.
bench/bench_compression.py reuses `make_corpus` and `measure_index`."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from plexrec.serving.index import (  # noqa: E402
    ExactIndex,
    IndexConfig,
    build_index,
    recall_at_k,
    top_k_exact,
)
from plexrec.serving.index_registry import INDEXES  # noqa: E402

CORPORA = ("clustered", "isotropic")
K = 100


def make_corpus(kind: str, n: int, d: int, seed: int = 0, queries: int = 400
                ) -> tuple[np.ndarray, np.ndarray]:
    """(items [n, d], queries [queries, d]) float32. `clustered`: 2000 Gaussian centres plus
    noise of 0.5, queries drawn the same way (the shape of trained two-tower vectors, as in
    bench_serving); `isotropic`: standard normal items and queries, the hard case with no
    structure for IVF to exploit."""
    rng = np.random.default_rng(seed)
    if kind == "isotropic":
        return (rng.standard_normal((n, d), dtype=np.float32),
                rng.standard_normal((queries, d), dtype=np.float32))
    if kind != "clustered":
        raise ValueError(f"corpus kind: expected one of {', '.join(CORPORA)}, got {kind!r}")
    centers = rng.normal(size=(2000, d)).astype(np.float32)

    def draw(m: int) -> np.ndarray:
        out = np.empty((m, d), dtype=np.float32)
        for lo in range(0, m, 200_000):
            size = min(200_000, m - lo)
            out[lo:lo + size] = (centers[rng.integers(0, len(centers), size)]
                                 + 0.5 * rng.standard_normal((size, d), dtype=np.float32))
        return out

    return draw(n), draw(queries)


def qps(search: Callable[[np.ndarray], Any], queries: np.ndarray, threads: int) -> float:
    """Queries per second of one pass, one query per call, `threads` callers at once (FAISS
    and BLAS release the GIL while they search)."""
    rows = [queries[i:i + 1] for i in range(len(queries))]
    started = time.perf_counter()
    if threads == 1:
        for q in rows:
            search(q)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(search, rows))
    return len(rows) / (time.perf_counter() - started)


def paired_qps(search: Callable[[np.ndarray], Any], exact: Callable[[np.ndarray], Any],
               queries: np.ndarray, exact_queries: int, threads: int, repeats: int
               ) -> dict[str, float]:
    """Median QPS of the index and of exact search over `repeats` passes, each index pass right
    after an exact pass, and the median of the per-pass ratios: on a shared machine the load
    moves both alike, so the ratio is steadier than either figure."""
    pairs = [(qps(exact, queries[:exact_queries], threads), qps(search, queries, threads))
             for _ in range(repeats)]
    return {"qps": statistics.median(p[1] for p in pairs),
            "exact_qps": statistics.median(p[0] for p in pairs),
            "vs_exact": statistics.median(p[1] / p[0] for p in pairs)}


def measure_index(kind: str, items: np.ndarray, tune_queries: np.ndarray,
                  eval_queries: np.ndarray, exact_rows: np.ndarray, config: IndexConfig,
                  repeats: int = 3, exact_queries: int = 50) -> dict[str, Any]:
    """Builds `kind` as the server does (effort tuned on `tune_queries`) and measures it on
    `eval_queries`, whose exact top-k rows are `exact_rows`, against exact search over the same
    items timed alongside (`exact_queries` of them a pass: exact search is slow at 1M)."""
    config = config.model_copy(update={"kind": kind, "exact_threshold": 0})
    started = time.perf_counter()
    index = build_index(items, config, sample_queries=tune_queries)
    total = time.perf_counter() - started
    exact = ExactIndex(items)
    out: dict[str, Any] = {
        "index": index.kind,
        "build_s": round(index.metrics["index_build_seconds"], 2),
        "build_and_tune_s": round(total, 2),
        "bytes_per_vector": round(index.nbytes() / index.size, 2),
        "search_effort": int(index.effort),
        "recall_at_100": round(recall_at_k(index, items, eval_queries, K, exact_rows), 4),
        "tuning_recall_at_100": round(index.metrics[f"index_recall_at_{config.recall_k}"], 4),
    }
    for threads, name in ((1, "1_thread"), (2, "2_threads")):
        figures = paired_qps(lambda q: index.search(q, K), lambda q: exact.search(q, K),
                             eval_queries, exact_queries, threads, repeats)
        out[f"qps_{name}"] = round(figures["qps"], 1)
        out[f"exact_qps_{name}"] = round(figures["exact_qps"], 1)
        out[f"qps_{name}_vs_exact"] = round(figures["vs_exact"], 2)
    if "index_auto_ivf_scan" in index.metrics:
        out["auto_ivf_scan"] = round(index.metrics["index_auto_ivf_scan"], 4)
        out["auto_ivf_recall"] = round(index.metrics["index_auto_ivf_recall"], 4)
    return out


def run_corpus(corpus: str, args: argparse.Namespace, kinds: list[str]) -> dict[str, Any]:
    items, queries = make_corpus(corpus, args.items, args.width, seed=args.seed,
                                 queries=2 * args.queries)
    tune, evaluate = queries[:args.queries], queries[args.queries:]
    _, exact_rows = top_k_exact(items, evaluate, K)
    config = IndexConfig(recall_queries=args.queries, seed=args.seed)
    results: dict[str, Any] = {}
    for kind in kinds:
        row = measure_index(kind, items, tune, evaluate, exact_rows, config, args.repeats,
                            args.exact_queries)
        results[kind] = row
        print(f"{corpus:10s} {kind:9s} {row['index']:15s} build {row['build_s']:6.1f}s "
              f"(+tune {row['build_and_tune_s'] - row['build_s']:5.1f}s) "
              f"{row['bytes_per_vector']:6.1f} B/vec  recall@100 {row['recall_at_100']:.4f}  "
              f"QPS {row['qps_1_thread']:7.1f} ({row['qps_1_thread_vs_exact']:5.1f}x exact "
              f"{row['exact_qps_1_thread']:5.1f})  2 threads {row['qps_2_threads']:7.1f} "
              f"({row['qps_2_threads_vs_exact']:5.1f}x exact {row['exact_qps_2_threads']:5.1f})",
              flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--queries", type=int, default=200,
                        help="tuning queries, and as many held-out evaluation queries")
    parser.add_argument("--exact-queries", type=int, default=50,
                        help="queries timed for exact search (slow at 1M)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--corpora", nargs="+", choices=CORPORA, default=list(CORPORA))
    parser.add_argument("--kinds", nargs="+", choices=tuple(INDEXES),
                        default=[kind for kind in INDEXES if kind != "hnsw"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="100k items")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "index.json"))
    parser.add_argument("--update", action="store_true",
                        help="replace only the measured kinds' rows in an existing --out")
    args = parser.parse_args()
    if args.quick:
        args.items = 100_000
    load_before = os.getloadavg()
    results = {c: run_corpus(c, args, args.kinds) for c in args.corpora}
    out = Path(args.out)
    report: dict[str, Any] = {"results": results}
    if args.update and out.exists():
        report = json.loads(out.read_text())
        for corpus, rows in results.items():
            report["results"].setdefault(corpus, {}).update(rows)
        report.setdefault("updates", []).append(
            {"kinds": args.kinds, "load_average": [round(x, 2) for x in os.getloadavg()]})
        out.write_text(json.dumps(report, indent=2) + "\n")
        return 0
    report["config"] = {"items": args.items, "width": args.width, "k": K,
                        "queries": args.queries, "exact_queries": args.exact_queries,
                        "repeats": args.repeats, "quick": args.quick, "cpus": os.cpu_count(),
                        "load_average_before": [round(x, 2) for x in load_before],
                        "load_average_after": [round(x, 2) for x in os.getloadavg()],
                        "python": platform.python_version()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["config"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
