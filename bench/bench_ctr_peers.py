"""plexrec's CTR models beside the baselines a user would pick, on exactly the same split.

Criteo-10k (the shared sample; the synthetic look-alike when it is absent): rows 1-8,000 are the
training input, split by order into train (1-6,400) and validation (6,401-8,000); rows
8,001-10,000 are the test set, seen only for the one reported figure. Each model's settings are
chosen on validation; test AUC and log loss are means over 3 seeds.

- hashed logistic regression (scikit-learn) on one-hot hashed ids plus the Criteo winners'
  log-square buckets of the counts, C chosen on validation;
- LightGBM on the counts and the ids as categories (vocabulary of the training rows), leaves
  chosen on validation, early stopping on validation;
- plexrec DLRM, DCN-v2 and AutoInt with the shipped configs (configs/criteo_dlrm.toml,
  criteo_dcn.toml, criteo_autoint.toml:
  log-square count buckets as ids, embedding_lr chosen on validation), evaluated on the test
  file through `data.test_path` from the best validation checkpoint; and the same models with
  the previous defaults (raw counts only, embedding_lr 0.01).

    pip install -e '.[bench]'   # lightgbm, scikit-learn (bench only)
    python -m bench.bench_ctr_peers [--seeds 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.samples import CRITEO_10K

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "ctr_peers.json"
TRAIN, VALID = 6_400, 8_000


def split_files(source: Path, work: Path) -> tuple[Path, Path, Path]:
    lines = source.read_text().splitlines(keepends=True)
    if len(lines) < 10_000:
        raise SystemExit(f"{source}: need 10,000 rows, found {len(lines)}")
    parts = (lines[:TRAIN], lines[TRAIN:VALID], lines[VALID:10_000])
    paths = (work / "train.txt", work / "valid.txt", work / "test.txt")
    for path, part in zip(paths, parts, strict=True):
        path.write_text("".join(part))
    return paths


def _rows(path: Path) -> tuple[np.ndarray, list[list[str]]]:
    labels, fields = [], []
    for line in path.read_text().splitlines():
        cols = line.split("\t")
        labels.append(int(cols[0]))
        fields.append(cols[1:])
    return np.array(labels), fields


def _log_square(value: str) -> str:
    if not value:
        return ""
    x = float(value)
    return f"L{int(np.floor(np.log(x) ** 2))}" if x > 2 else str(int(np.floor(x)))


def _hashed(fields: list[list[str]]) -> Any:
    from sklearn.feature_extraction import FeatureHasher

    tokens = [[f"I{j}={_log_square(v)}" for j, v in enumerate(r[:13])]
              + [f"C{j}={v}" for j, v in enumerate(r[13:])] for r in fields]
    return FeatureHasher(n_features=1 << 20, input_type="string",
                         alternate_sign=False).transform(tokens)


def _metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import log_loss, roc_auc_score

    return {"auc": float(roc_auc_score(y, p)), "logloss": float(log_loss(y, p))}


def logistic_regression(paths: tuple[Path, Path, Path], seeds: int) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression

    (ytr, ftr), (yva, fva), (yte, fte) = (_rows(p) for p in paths)
    xtr, xva, xte = _hashed(ftr), _hashed(fva), _hashed(fte)
    grid = {}
    for c in (0.01, 0.03, 0.1, 0.3, 1.0):
        model = LogisticRegression(C=c, max_iter=2000, solver="liblinear").fit(xtr, ytr)
        grid[c] = _metrics(yva, model.predict_proba(xva)[:, 1])["auc"]
    best = max(grid, key=lambda c: grid[c])
    model = LogisticRegression(C=best, max_iter=2000, solver="liblinear").fit(xtr, ytr)
    test = _metrics(yte, model.predict_proba(xte)[:, 1])
    # Deterministic: the same figure for every seed.
    return {"model": "hashed logistic regression + log-square count buckets",
            "selected": {"C": best}, "val_auc_grid": grid, "test": [test] * seeds}


def _lgb_frame(fields: list[list[str]], vocab: list[dict[str, int]] | None) -> tuple[Any, Any]:
    import pandas as pd

    dense = np.array([[float(v) if v else np.nan for v in r[:13]] for r in fields])
    cats = [[r[13 + j] for r in fields] for j in range(26)]
    if vocab is None:
        vocab = [{v: i for i, v in enumerate(sorted(set(c) - {""}))} for c in cats]
    frame = pd.DataFrame(dense, columns=[f"I{j}" for j in range(1, 14)])
    for j, col in enumerate(cats):
        codes = [vocab[j].get(v, -1) if v else -1 for v in col]
        frame[f"C{j + 1}"] = pd.Categorical(codes, categories=range(len(vocab[j])))
    return frame, vocab


def lightgbm(paths: tuple[Path, Path, Path], seeds: int) -> dict[str, Any]:
    import lightgbm as lgb

    (ytr, ftr), (yva, fva), (yte, fte) = (_rows(p) for p in paths)
    xtr, vocab = _lgb_frame(ftr, None)
    xva, _ = _lgb_frame(fva, vocab)
    xte, _ = _lgb_frame(fte, vocab)

    def fit(leaves: int, seed: int) -> Any:
        params = {"objective": "binary", "learning_rate": 0.05, "num_leaves": leaves,
                  "min_data_in_leaf": 40, "feature_fraction": 0.8, "bagging_fraction": 0.8,
                  "bagging_freq": 1, "cat_smooth": 10, "seed": seed, "verbose": -1,
                  "num_threads": 2}
        return lgb.train(params, lgb.Dataset(xtr, ytr), num_boost_round=2000,
                         valid_sets=[lgb.Dataset(xva, yva)],
                         callbacks=[lgb.early_stopping(50, verbose=False)])

    grid = {leaves: _metrics(yva, fit(leaves, 0).predict(xva))["auc"] for leaves in (7, 15, 31)}
    best = max(grid, key=lambda k: grid[k])
    tests = []
    for seed in range(seeds):
        model = fit(best, seed)
        tests.append(_metrics(yte, model.predict(xte, num_iteration=model.best_iteration)))
    return {"model": "LightGBM (counts + ids as categories)", "selected": {"num_leaves": best},
            "val_auc_grid": grid, "test": tests}


def plexrec_model(config: str, paths: tuple[Path, Path, Path], seeds: int, work: Path,
                  extra: list[str]) -> dict[str, Any]:
    from plexrec.training.launch import LaunchOptions, run_train

    train, valid, test = paths
    tests, results = [], []
    for seed in range(seeds):
        result = run_train(LaunchOptions(
            config=REPO / "configs" / config, data=str(train), quiet=True,
            overrides=[f"data.valid_path={valid}", f"data.test_path={test}",
                       f"data.cache_dir={work / 'cache' / str(len(extra))}",
                       f"train.seed={seed}",
                       f"train.run_dir={work / 'runs' / config / str(seed)}",
                       "mlflow.enabled=false", *extra]))
        tests.append({"auc": result["test_auc"], "logloss": result["test_logloss"]})

        results.append({k: result[k] for k in ("best_val_auc", "best_step", "steps")})
    return {"model": f"plexrec {config}", "selected": {"config": config, "overrides": extra},
            "runs": results, "test": tests}


def _summary(entry: dict[str, Any]) -> dict[str, float]:
    aucs = [t["auc"] for t in entry["test"]]
    return {"test_auc_mean": statistics.fmean(aucs),
            "test_auc_std": statistics.stdev(aucs) if len(aucs) > 1 else 0.0,
            "test_logloss_mean": statistics.fmean(t["logloss"] for t in entry["test"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one seed, short plexrec runs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    seeds = 1 if args.quick else args.seeds
    extra = ["train.max_steps=30"] if args.quick else []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_ctr_peers_") as tmp:
        work = Path(tmp)
        source = CRITEO_10K
        if not source.is_file():
            from plexrec.features.synth import write_criteo

            source = work / "look-alike.txt"
            write_criteo(source, 10_000, seed=0, progress=False)
        paths = split_files(source, work)
        previous = ['data.schema="configs/criteo.toml"', "optim.embedding_lr=0.01"]
        entries = [logistic_regression(paths, seeds), lightgbm(paths, seeds),
                   plexrec_model("criteo_dlrm.toml", paths, seeds, work, extra),
                   plexrec_model("criteo_dcn.toml", paths, seeds, work, extra),
                   plexrec_model("criteo_autoint.toml", paths, seeds, work, extra),
                   plexrec_model("criteo_dlrm.toml", paths, seeds, work, [*extra, *previous]),
                   plexrec_model("criteo_dcn.toml", paths, seeds, work, [*extra, *previous])]
    for e in entries:
        e.update(_summary(e))
        print(f"{e['model']:<58} test AUC {e['test_auc_mean']:.4f} ± {e['test_auc_std']:.4f}  "
              f"log loss {e['test_logloss_mean']:.4f}  ({e['selected']})")
    result = {"benchmark": "ctr_peers", "data": "real" if source == CRITEO_10K else "synthetic",
              "split": {"train": [1, TRAIN], "valid": [TRAIN + 1, VALID],
                        "test": [VALID + 1, 10_000]},
              "seeds": seeds, "models": entries, "seconds": time.perf_counter() - start,
              "machine": platform.processor() or platform.machine(), "quick": args.quick}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
