"""Runs every benchmark in turn (`make bench`); each writes its own bench/results/<name>.json.
`--quick` is passed through for a smoke run of all of them."""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = ("bench.bench_batching", "bench.bench_prepare", "bench.bench_publish",
              "bench.bench_serving", "bench.bench_training", "bench.bench_retrieval_quality",
              "bench.bench_ctr_peers", "bench.bench_criteo_dense_shift",
              "bench.bench_weight_average", "bench.bench_layouts",
              "bench.bench_index", "bench.bench_compression")


def main(argv: list[str] | None = None) -> int:
    extra = list(sys.argv[1:] if argv is None else argv)
    failed = []
    for module in BENCHMARKS:
        print(f"==> {module} {' '.join(extra)}", flush=True)
        if subprocess.run([sys.executable, "-m", module, *extra]).returncode != 0:
            failed.append(module)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
