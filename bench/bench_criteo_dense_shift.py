"""Why Criteo-10k's validation and test rows rank its models differently: the log1p counts.

On bench/bench_ctr_peers.py's criteo10k split (rows 1-6,400 train, 6,401-8,000 validation,
8,001-10,000 test) the shipped plexrec DLRM leads the hashed logistic regression on validation
and trails it on test. The two differ in one input: plexrec reads each count I1-I13 twice, as a
log-square bucket id and as a dense log1p value, the logistic regression only as the bucket id.
This benchmark swaps that input on both sides, every setting still chosen on validation:

- the bench's logistic regression (ids and count buckets), and the same with the counts' log1p
  values added as standardised columns (as plexrec's dense inputs: missing and negatives 0);
- plexrec's shipped `criteo_dlrm.toml`, and the same on its schema without the dense counts
  (`configs/criteo_buckets.toml` less its `kind = "dense"` features, written to the work dir).

    python -m bench.bench_criteo_dense_shift [--seeds 3] [--quick]

Prints val and test AUC side by side; writes bench/results/criteo_dense_shift.json."""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_ctr_peers import BASELINES, hashed, plexrec_model
from bench.ctr_datasets import Dataset, Frame, criteo10k

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "criteo_dense_shift.json"
CONFIG = "criteo_dlrm.toml"
SCHEMA = REPO / "configs" / "criteo_buckets.toml"


def _log1p_counts(frame: Frame) -> np.ndarray:
    return np.column_stack([np.log1p(np.maximum(np.nan_to_num(x, nan=0.0), 0.0))
                            for x in frame.numbers.values()])


def logistic_regressions(ds: Dataset) -> list[dict[str, Any]]:
    """The bench's hashed LR without and with the log1p counts, C on validation for each."""
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    ids = [hashed(f, ds) for f in ds.frames]
    counts = [_log1p_counts(f) for f in ds.frames]
    mean, std = counts[0].mean(axis=0), counts[0].std(axis=0) + 1e-9
    with_counts = [sp.hstack([x, sp.csr_matrix((c - mean) / std)]).tocsr()
                   for x, c in zip(ids, counts, strict=True)]
    (ytr, yva, yte) = (f.y for f in ds.frames)
    out = []
    for label, (xtr, xva, xte) in (("hashed LR, ids + count buckets (bench_ctr_peers)", ids),
                                   ("hashed LR, ids + count buckets + log1p counts",
                                    with_counts)):
        grid = {}
        for c in BASELINES["criteo10k"].c_grid:
            model = LogisticRegression(C=c, max_iter=2000, solver="liblinear").fit(xtr, ytr)
            grid[c] = (float(roc_auc_score(yva, model.predict_proba(xva)[:, 1])),
                       float(roc_auc_score(yte, model.predict_proba(xte)[:, 1])))
        best = max(grid, key=lambda c: grid[c][0])
        out.append({"label": label, "selected": {"C": best}, "val": [grid[best][0]],
                    "test": [grid[best][1]], "val_test_grid": grid})
    return out


def schema_without_dense(out: Path) -> Path:
    from plexrec.features.schema import load_schema
    from plexrec.features.schema_toml import schema_to_toml

    schema = load_schema(SCHEMA)
    kept = tuple(f for f in schema.features if f.kind != "dense")
    out.write_text(schema_to_toml(dataclasses.replace(schema, features=kept)))
    return out


def plexrec_rows(ds: Dataset, seeds: int, work: Path, quick: bool) -> list[dict[str, Any]]:
    no_dense = schema_without_dense(work / "criteo_buckets_without_dense.toml")
    rows = []
    for label, extra in ((f"plexrec {CONFIG}, shipped (count buckets + log1p counts)", []),
                         (f"plexrec {CONFIG}, count buckets only", [f'data.schema="{no_dense}"'])):
        entry = plexrec_model(ds, CONFIG, extra, label, seeds, work, quick)[0]
        rows.append({"label": label, "selected": entry["selected"], "runs": entry["runs"],
                     "val": entry["val"], "test": [t["auc"] for t in entry["test"]]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one seed, 30-step plexrec runs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    seeds = 1 if args.quick else args.seeds
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_criteo_dense_shift_") as tmp:
        work = Path(tmp)
        ds = criteo10k(work, args.quick)
        rows = logistic_regressions(ds) + plexrec_rows(ds, seeds, work, args.quick)
    print(f"\n### Criteo-10k ({ds.data}), split {ds.split}, {seeds} seed(s)")
    print("| model | val AUC | test AUC | test − val |\n|---|---:|---:|---:|")
    for row in rows:
        row["val_auc_mean"] = statistics.fmean(row["val"])
        row["test_auc_mean"] = statistics.fmean(row["test"])
        print(f"| {row['label']} | {row['val_auc_mean']:.4f} | {row['test_auc_mean']:.4f} | "
              f"{row['test_auc_mean'] - row['val_auc_mean']:+.4f} |")
    result = {"benchmark": "criteo_dense_shift", "data": ds.data, "split": ds.split,
              "seeds": seeds, "quick": args.quick, "rows": rows,
              "machine": platform.processor() or platform.machine(),
              "measured": time.strftime("%Y-%m-%d"), "seconds": time.perf_counter() - start}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
