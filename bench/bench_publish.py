"""Publish throughput: serving.publish (pipelined HSET into partition hashes, with verification)
against a bare pipelined SET loop in redis-py (one key per vector), both on a private
redis-server, median of several repeats. Writes bench/results/publish.json.

    python -m bench.bench_publish [--rows 1000000] [--width 64] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import redis

from plexrec.models.snapshot import Snapshot, write_snapshot
from plexrec.serving.publish import publish
from plexrec.serving.redis_process import RedisProcess

RESULTS = Path(__file__).resolve().parent / "results" / "publish.json"


def baseline_set_loop(client: redis.Redis, ids: np.ndarray, vectors: np.ndarray,
                      batch: int = 10_000) -> float:
    """What one would write first: one SET per vector, a pipeline flushed every `batch`."""
    start = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for i, (id_, row) in enumerate(zip(ids.tolist(), vectors, strict=True), 1):
        pipe.set(f"bench:{id_}", row.tobytes())
        if i % batch == 0:
            pipe.execute()
    pipe.execute()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="50k rows, for a smoke run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rows = 50_000 if args.quick else args.rows
    logging.basicConfig(level=logging.WARNING)

    rng = np.random.default_rng(0)
    ids = rng.choice(rows * 10, rows, replace=False).astype(np.int64)
    vectors = rng.standard_normal((rows, args.width)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="plexrec-bench-") as tmp, RedisProcess() as server:
        path = write_snapshot(tmp, users=None, items=(ids, vectors), run_id="bench")
        del vectors
        t0 = time.perf_counter()
        snap = Snapshot.open(path, verify=True)
        open_s = time.perf_counter() - t0
        client = redis.Redis.from_url(server.url)
        pub_s, base_s, pub_mem, base_mem = [], [], 0, 0
        for _ in range(args.repeats):
            client.flushall()
            result = publish(path, server.url, progress=False)
            assert result.vectors_written == rows and not result.skipped
            pub_s.append(result.seconds)
            pub_mem = client.info("memory")["used_memory"]
            client.flushall()
            base_s.append(baseline_set_loop(client, np.asarray(snap.ids("item")),
                                            snap.vectors("item")))
            base_mem = client.info("memory")["used_memory"]
        client.flushall()
        client.close()
    pub, base = statistics.median(pub_s), statistics.median(base_s)
    report = {
        "rows": rows, "width": args.width, "repeats": args.repeats,
        "publish": {"median_s": round(pub, 3), "vectors_per_s": round(rows / pub),
                    "runs_s": [round(s, 3) for s in pub_s],
                    "includes": "snapshot sha256 verify + writes + HLEN/sample verify + commit",
                    "snapshot_verify_s": round(open_s, 3), "redis_used_memory": pub_mem},
        "baseline_set_loop": {"median_s": round(base, 3), "vectors_per_s": round(rows / base),
                              "runs_s": [round(s, 3) for s in base_s],
                              "redis_used_memory": base_mem},
        "speedup_vs_baseline": round(base / pub, 2),
    }
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
