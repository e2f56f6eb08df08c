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

Then it asks whether the validation rows are the odd ones: the same four models under K-fold
cross-validation over the 8,000 labelled rows (contiguous folds, each fold validating a model
trained on the other folds; the LR's C chosen on the folds' mean; plexrec seed 0). The test rows
are not read by this part.

    python -m bench.bench_criteo_dense_shift [--seeds 3] [--folds 5] [--quick]

Prints val and test AUC side by side; writes bench/results/criteo_dense_shift.json."""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_ctr_peers import BASELINES, hashed, plexrec_model
from bench.ctr_datasets import Dataset, Frame, criteo10k
from bench.result_file import write_result

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


def _fold_edges(rows: int, folds: int) -> np.ndarray:
    return np.linspace(0, rows, folds + 1).astype(int)


def cv_logistic_regressions(ds: Dataset, folds: int) -> list[dict[str, Any]]:
    """Both LRs under K-fold CV over training + validation rows; C chosen on the folds' mean."""
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    labelled = ds.frames[:2]
    ids = sp.vstack([hashed(f, ds) for f in labelled]).tocsr()
    counts = np.vstack([_log1p_counts(f) for f in labelled])
    y = np.concatenate([f.y for f in labelled])
    edges = _fold_edges(len(y), folds)
    out = []
    for label, with_counts in (("hashed LR, ids + count buckets", False),
                               ("hashed LR, ids + count buckets + log1p counts", True)):
        grid: dict[float, list[float]] = {}
        for c in BASELINES["criteo10k"].c_grid:
            grid[c] = []
            for k in range(folds):
                held = np.arange(edges[k], edges[k + 1])
                fit = np.setdiff1d(np.arange(len(y)), held)
                x = ids
                if with_counts:
                    mean, std = counts[fit].mean(axis=0), counts[fit].std(axis=0) + 1e-9
                    x = sp.hstack([ids, sp.csr_matrix((counts - mean) / std)]).tocsr()
                model = LogisticRegression(C=c, max_iter=2000, solver="liblinear")
                model.fit(x[fit], y[fit])
                grid[c].append(float(roc_auc_score(y[held], model.predict_proba(x[held])[:, 1])))
        best = max(grid, key=lambda c: statistics.fmean(grid[c]))
        out.append({"label": label, "selected": {"C": best}, "folds": grid[best],
                    "fold_grid": grid})
    return out


def _write_folds(ds: Dataset, folds: int, work: Path) -> list[tuple[Path, Path]]:
    lines = [line for path in ds.paths[:2] for line in path.read_bytes().splitlines(True)]
    edges = _fold_edges(len(lines), folds)
    out = []
    for k in range(folds):
        fit, held = work / f"fold{k}_train.txt", work / f"fold{k}_valid.txt"
        fit.write_bytes(b"".join(lines[:edges[k]] + lines[edges[k + 1]:]))
        held.write_bytes(b"".join(lines[edges[k]:edges[k + 1]]))
        out.append((fit, held))
    return out


def cv_plexrec(ds: Dataset, folds: int, work: Path, quick: bool) -> list[dict[str, Any]]:
    """plexrec with and without the dense counts, seed 0, each fold its validation set (and
    its own test set, so the split's test rows stay unread)."""
    from bench.bench_ctr_peers import QUICK_OVERRIDES, validation_run

    no_dense = schema_without_dense(work / "criteo_buckets_without_dense.toml")
    paths = _write_folds(ds, folds, work)
    rows = []
    for label, extra in ((f"plexrec {CONFIG}, count buckets + log1p counts", []),
                         (f"plexrec {CONFIG}, count buckets only", [f'data.schema="{no_dense}"'])):
        aucs, tag = [], "no_dense" if extra else "dense"
        for k, (fit, held) in enumerate(paths):
            result = validation_run(CONFIG, str(fit), str(held),
                                    work / "cv_runs" / tag / str(k),
                                    work / "cv_cache" / tag / str(k),
                                    ["train.seed=0", *extra, *(QUICK_OVERRIDES if quick else [])])
            aucs.append(float(result["best_val_auc"]))
        rows.append({"label": label, "selected": {"config": CONFIG, "overrides": extra},
                     "folds": aucs})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one seed, 30-step plexrec runs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    seeds = 1 if args.quick else args.seeds
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_criteo_dense_shift_") as tmp:
        work = Path(tmp)
        ds = criteo10k(work, args.quick)
        rows = logistic_regressions(ds) + plexrec_rows(ds, seeds, work, args.quick)
        cv = cv_logistic_regressions(ds, args.folds) + cv_plexrec(ds, args.folds, work,
                                                                   args.quick)
    print(f"\n### Criteo-10k ({ds.data}), split {ds.split}, {seeds} seed(s)")
    print("| model | val AUC | test AUC | test − val |\n|---|---:|---:|---:|")
    for row in rows:
        row["val_auc_mean"] = statistics.fmean(row["val"])
        row["test_auc_mean"] = statistics.fmean(row["test"])
        print(f"| {row['label']} | {row['val_auc_mean']:.4f} | {row['test_auc_mean']:.4f} | "
              f"{row['test_auc_mean'] - row['val_auc_mean']:+.4f} |")
    print(f"\n### {args.folds}-fold cross-validation over the labelled rows (test unread)")
    print("| model | mean fold AUC | folds |\n|---|---:|---|")
    for row in cv:
        row["fold_auc_mean"] = statistics.fmean(row["folds"])
        print(f"| {row['label']} | {row['fold_auc_mean']:.4f} | "
              + ", ".join(f"{a:.4f}" for a in row["folds"]) + " |")
    result = {"benchmark": "criteo_dense_shift", "data": ds.data, "split": ds.split,
              "seeds": seeds, "quick": args.quick, "rows": rows,
              "cross_validation": {"folds": args.folds, "rows": cv},
              "seconds": time.perf_counter() - start}
    write_result(args.out, result)


if __name__ == "__main__":
    main()
