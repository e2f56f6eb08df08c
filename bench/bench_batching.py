"""Rows/s from the prepared cache to torchrec Batches (dense + KJT + labels), batch 4096.

Subject: features.batching.BatchLoader (vectorised numpy gathers per batch).
Baseline, measured in the same run: the textbook PyTorch pipeline, a map-style torch Dataset whose
__getitem__ reads one row from the same memory-mapped cache and a collate_fn that builds the same
KJT (torch.utils.data.DataLoader, num_workers=0), timed on a smaller sample of rows because it is
slow. Both produce identical batches (checked). Median of --repeats epochs each.

    python -m bench.bench_batching [--rows 1000000] [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402
from torchrec.datasets.utils import Batch  # noqa: E402
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor  # noqa: E402

from bench.result_file import write_result
from plexrec.features.batching import BatchLoader  # noqa: E402
from plexrec.features.cache import PreparedData  # noqa: E402
from plexrec.features.prepare import prepare  # noqa: E402
from plexrec.features.schema import load_schema  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "batching.json"


class RowDataset(Dataset):
    """One row at a time from the cache, as a per-row Dataset does (plain ndarray views of the
    memory maps, so the baseline does not pay np.memmap's per-index overhead)."""

    def __init__(self, data: PreparedData) -> None:
        self.data = data
        self.names = data.sparse_names
        self.values = [np.asarray(data.values(n)) for n in self.names]
        self.offsets = [np.asarray(data.offsets(n)) for n in self.names]
        self.dense = np.asarray(data.dense)
        self.labels = np.asarray(data.labels)

    def __len__(self) -> int:
        return self.data.num_rows

    def __getitem__(self, i: int) -> tuple[np.ndarray, list[np.ndarray], float]:
        sparse = [v[o[i]:o[i + 1]] for v, o in zip(self.values, self.offsets, strict=True)]
        return self.dense[i], sparse, float(self.labels[i])


def make_collate(names: list[str]):
    def collate(rows: list[tuple[np.ndarray, list[np.ndarray], float]]) -> Batch:
        values: list[int] = []
        lengths: list[int] = []
        for k in range(len(names)):
            for _, sparse, _ in rows:
                ids = sparse[k]
                values.extend(ids.tolist())
                lengths.append(len(ids))
        kjt = KeyedJaggedTensor(keys=names, values=torch.tensor(values, dtype=torch.int64),
                                lengths=torch.tensor(lengths, dtype=torch.int32))
        dense = torch.from_numpy(np.stack([r[0] for r in rows]))
        labels = torch.tensor([r[2] for r in rows], dtype=torch.float32)
        return Batch(dense_features=dense, sparse_features=kjt, labels=labels)
    return collate


def synth_cache(rows: int, workdir: Path) -> PreparedData:
    from plexrec.features.synth import write_criteo

    raw = workdir / "train.txt"
    t = time.perf_counter()
    write_criteo(raw, rows, seed=0, progress=False)
    print(f"synthetic criteo: {rows:,} rows in {time.perf_counter() - t:.1f}s")
    result = prepare(load_schema(REPO / "configs" / "criteo.toml"), raw, workdir / "cache",
                     progress=False)
    print(f"prepare: {result.seconds:.1f}s ({rows / result.seconds:,.0f} rows/s)")
    return PreparedData.open(result.out_dir)


def time_epoch(batches) -> tuple[float, int]:
    t = time.perf_counter()
    n = 0
    for b in batches:
        n += b.labels.numel()
    return time.perf_counter() - t, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--baseline-rows", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="20k rows, 3 repeats")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.rows, args.baseline_rows, args.repeats = 20_000, 8_192, 3
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench_batching_") as tmp:
        data = synth_cache(args.rows, Path(tmp))
        loader = BatchLoader(data, None, args.batch_size, shuffle=True, seed=0)
        base_rows = min(args.baseline_rows, data.num_rows)
        base_loader = DataLoader(RowDataset(data), batch_size=args.batch_size,
                                 sampler=np.random.default_rng(0).permutation(base_rows).tolist(),
                                 collate_fn=make_collate(data.sparse_names), num_workers=0)

        idx = np.arange(min(args.batch_size, data.num_rows))
        ours = loader.batch(idx)
        rows_ds = RowDataset(data)
        theirs = make_collate(data.sparse_names)([rows_ds[i] for i in idx])
        assert torch.equal(ours.sparse_features.values(), theirs.sparse_features.values())
        assert torch.equal(ours.sparse_features.lengths(), theirs.sparse_features.lengths())
        assert torch.equal(ours.dense_features, theirs.dense_features)

        from plexrec.features.training_view import TrainingView

        view = TrainingView(data, np.arange(int(data.num_rows * 0.9)))
        view_loader = BatchLoader(view, None, args.batch_size, shuffle=True, seed=0)
        time_epoch(loader)  # page cache warm-up
        ours_rps, base_rps, view_rps = [], [], []
        for r in range(args.repeats):
            loader.set_epoch(r)
            sec, n = time_epoch(loader)
            ours_rps.append(n / sec)
            view_loader.set_epoch(r)
            sec, n = time_epoch(view_loader)
            view_rps.append(n / sec)
            sec, n = time_epoch(base_loader)
            base_rps.append(n / sec)
        result = {
            "benchmark": "batching",
            "rows": data.num_rows,
            "batch_size": args.batch_size,
            "sparse_features": len(data.sparse_names),
            "dense_features": len(data.dense_names),
            "repeats": args.repeats,
            "batchloader_rows_per_sec": statistics.median(ours_rps),
            "baseline": "torch DataLoader over a per-row map-style Dataset + collate_fn building "
                        "the same KJT (num_workers=0)",
            "baseline_rows": base_rows,
            "baseline_rows_per_sec": statistics.median(base_rps),
            "speedup": statistics.median(ours_rps) / statistics.median(base_rps),
            "all_batchloader_rows_per_sec": ours_rps,
            "training_view_rows_per_sec": statistics.median(view_rps),
            "training_view": "the same loader over a TrainingView (training-only ids of 90% of "
                             "the rows, remapped per batch through each feature's id map)",
            "training_view_ratio": statistics.median(view_rps) / statistics.median(ours_rps),
            "all_training_view_rows_per_sec": view_rps,
            "all_baseline_rows_per_sec": base_rps,
            "threads": 1,
            "machine": platform.processor() or platform.machine(),
            "quick": args.quick,
        }
    print(f"BatchLoader: {result['batchloader_rows_per_sec']:,.0f} rows/s (median of "
          f"{args.repeats} epochs over {result['rows']:,} rows, batch {args.batch_size})")
    print(f"over a TrainingView (training-only ids): {result['training_view_rows_per_sec']:,.0f} "
          f"rows/s ({result['training_view_ratio']:.2f}x the cache's own ids)")
    print(f"baseline (DataLoader + per-row Dataset): {result['baseline_rows_per_sec']:,.0f} "
          f"rows/s on {base_rows:,} rows; speedup {result['speedup']:.1f}x")
    write_result(args.out, result)


if __name__ == "__main__":
    main()
