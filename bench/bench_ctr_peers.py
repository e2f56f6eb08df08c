"""plexrec's CTR models beside the baselines a user would pick, on exactly the same split.

Three datasets (bench/ctr_datasets.py), each cut once into train, validation and test inputs that
every model reads: plexrec through `data.valid_path` / `data.test_path`, the baselines as frames
of the same rows.

- criteo10k: the shared Criteo sample, rows 1-6,400 train, 6,401-8,000 valid, 8,001-10,000 test;
- movielens: MovieLens-100K as CTR (rating >= 4 a click), ratings shuffled by seed 0 and cut
  80/10/10 (a random split, as configs/movielens_dlrm.toml's own);
- synthetic1m: 1,000,000 rows of `features.synth.write_criteo(seed=0)`, by order 800k/100k/100k.

Each falls back on the project's generator when the real sample is absent. The baselines:

- hashed logistic regression (scikit-learn, liblinear) on one-hot hashed ids, counts cut into
  the Criteo winners' log-square buckets (MovieLens: release year as an id), C on validation;
- LightGBM on the numbers, the ids as categories (vocabulary of the training rows) and
  multi-valued features as indicators, leaves on validation, early stopping on validation.

plexrec runs the configs of PLEXREC_MODELS from the best validation checkpoint. Settings are
chosen on validation only; the test figure is read once per seed; means and stds over seeds go to
bench/results/ctr_peers.json, one section per dataset (a run of some datasets keeps the others).

Refitted rows (criteo10k, movielens): once settings are chosen, every model trains again on the
training and validation rows and reads the test rows once: the baselines with the chosen C or
leaves (LightGBM for its best round count scaled by the rows), plexrec through `[train]
final_fit` (training/final_fit.py). Each refitted plexrec row is paired with the refitted
baselines, each held-out row with the held-out ones.

    pip install -e '.[bench]'   # lightgbm, scikit-learn (bench only)
    python -m bench.bench_ctr_peers [--datasets criteo10k,movielens,synthetic1m] [--seeds 3]
        [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.ctr_datasets import DATASETS, Dataset, Frame
from bench.paired_auc import paired_bootstrap, run_test_scores

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "ctr_peers.json"
QUICK_RESULTS = Path(tempfile.gettempdir()) / "ctr_peers_quick.json"
QUICK_OVERRIDES = ["train.max_steps=30"]
SCORES = "_test_scores"  # per-seed test predictions, paired with the baselines', never written
FINAL_FIT = "train.final_fit=true"  # the held-out run unchanged, then its refit
# synthetic_dlrm.toml before it shipped the term fitted first, count buckets and width 32.
PREVIOUS_SYNTHETIC = ['data.schema="configs/criteo.toml"', "layout.dim=16", "train.epochs=1",
                      "model.first_order=false", "train.first_order_epochs=0"]
PREVIOUS_DEFAULTS = ['data.schema="configs/criteo.toml"', "optim.embedding_lr=0.01",
                     "model.first_order=false"]

# (config under configs/, extra --set overrides, label): one line per plexrec variant.
PLEXREC_MODELS: dict[str, list[tuple[str, list[str], str]]] = {
    "criteo10k": [
        ("criteo_dlrm.toml", [FINAL_FIT], "plexrec DLRM + first-order term, shipped"),
        ("criteo_dlrm.toml", ["model.first_order=false"], "plexrec DLRM, no first-order term"),
        ("criteo_dlrm.toml", ["train.first_order_epochs=0", "optim.first_order_lr=0.002",
                              "optim.first_order_id_l2=0"],
         "plexrec DLRM + first-order term trained jointly (the previous shipped setting)"),
        ("criteo_dcn.toml", [], "plexrec DCN-v2, shipped"),
        ("criteo_dcn.toml", ['model.dcn_structure="parallel"'], "plexrec DCN-v2, parallel"),
        ("criteo_dcn.toml", ['model.dcn_structure="parallel"', "model.first_order=true",
                             "train.first_order_epochs=30", "optim.first_order_lr=0.005",
                             "optim.first_order_id_l2=0.02", FINAL_FIT],
         "plexrec DCN-v2, parallel + first-order term fitted first"),
        ("criteo_autoint.toml", [], "plexrec AutoInt, shipped"),
        ("criteo_dlrm.toml", PREVIOUS_DEFAULTS, "plexrec DLRM, previous defaults"),
        ("criteo_dcn.toml", PREVIOUS_DEFAULTS, "plexrec DCN-v2, previous defaults"),
    ],
    "movielens": [
        ("movielens_dlrm.toml", [FINAL_FIT], "plexrec DLRM, shipped"),
        ("movielens_dcn.toml", [], "plexrec DCN-v2 parallel, shipped (final fit on)"),
        ("movielens_dcn.toml", ["train.ema_decay=0"],
         "plexrec DCN-v2 parallel without the weight average (the previous shipped setting)"),
    ],
    "synthetic1m": [
        ("synthetic_dlrm.toml", [], "plexrec DLRM + first-order term fitted first, shipped"),
        ("synthetic_dlrm.toml", PREVIOUS_SYNTHETIC,
         "plexrec DLRM, previous shipped setting (trained jointly, no term, width 16)"),
    ],
}


@dataclass(frozen=True)
class Baselines:
    """A dataset's baseline search space: C for LR, leaves for LightGBM (both on validation)."""

    c_grid: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)
    leaves: tuple[int, ...] = (7, 15, 31)
    learning_rate: float = 0.05
    rounds: int = 2000
    min_data_in_leaf: int = 40
    refit: bool = True  # each baseline also refitted on training + validation rows


BASELINES = {
    "criteo10k": Baselines(),
    "movielens": Baselines(c_grid=(0.03, 0.1, 0.3, 1.0, 3.0), leaves=(63, 127, 255, 511)),
    "synthetic1m": Baselines(c_grid=(0.1, 0.3, 1.0), leaves=(31, 63, 127),
                             learning_rate=0.1, rounds=1000, min_data_in_leaf=100, refit=False),
}


def _metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import log_loss, roc_auc_score

    return {"auc": float(roc_auc_score(y, p)), "logloss": float(log_loss(y, p))}


def hashed(frame: Frame, ds: Dataset) -> Any:
    """One-hot hashed `name=value` tokens (2^20 columns); numbers through the dataset's buckets."""
    from sklearn.feature_extraction import FeatureHasher

    columns = ([f"{name}=" + ds.buckets(x) for name, x in frame.numbers.items()]
               + [f"{name}=" + v for name, v in frame.cats.items()])
    rows: Any = zip(*columns, strict=True)
    if frame.multi:
        extra = zip(*([[f"{name}={v}" for v in values] for values in lists]
                      for name, lists in frame.multi.items()), strict=True)
        rows = ([*row, *(t for tokens in more for t in tokens)]
                for row, more in zip(rows, extra, strict=True))
    return FeatureHasher(n_features=1 << 20, input_type="string",
                         alternate_sign=False).transform(rows)


def _refit_label(label: str) -> str:
    return f"{label}, refitted on training + validation rows"


def _refit_rows(parts: tuple[Any, Any], labels: tuple[np.ndarray, np.ndarray]
                ) -> tuple[Any, np.ndarray]:
    """Training and validation inputs stacked (sparse matrices or frames) with their labels."""
    import pandas as pd
    import scipy.sparse as sp

    x = (pd.concat(parts, ignore_index=True) if isinstance(parts[0], pd.DataFrame)
         else sp.vstack(parts).tocsr())
    return x, np.concatenate(labels)


def logistic_regression(ds: Dataset, space: Baselines, seeds: int) -> list[dict[str, Any]]:
    from sklearn.linear_model import LogisticRegression

    (ytr, yva, yte), (xtr, xva, xte) = ((f.y for f in ds.frames),
                                        (hashed(f, ds) for f in ds.frames))
    grid, fit_seconds = {}, {}
    for c in space.c_grid:
        t0 = time.perf_counter()
        model = LogisticRegression(C=c, max_iter=2000, solver="liblinear").fit(xtr, ytr)
        fit_seconds[c] = time.perf_counter() - t0
        grid[c] = (_metrics(yva, model.predict_proba(xva)[:, 1])["auc"], model)
    best = max(grid, key=lambda c: grid[c][0])
    scores = grid[best][1].predict_proba(xte)[:, 1]
    # Deterministic: the same figure for every seed.
    held_out: dict[str, Any] = {
        "label": "hashed logistic regression (C on validation)",
        "model": "hashed logistic regression (liblinear)", "selected": {"C": best},
        "val_auc_grid": {c: auc for c, (auc, _) in grid.items()},
        "fit_seconds": fit_seconds, "val": [grid[best][0]] * seeds,
        "test": [_metrics(yte, scores)] * seeds, SCORES: [scores]}
    if not space.refit:
        return [held_out]
    refit = LogisticRegression(C=best, max_iter=2000, solver="liblinear").fit(
        *_refit_rows((xtr, xva), (ytr, yva)))
    scores = refit.predict_proba(xte)[:, 1]
    return [held_out, {**held_out, "label": _refit_label(held_out["label"]), "refit": True,
                       "test": [_metrics(yte, scores)] * seeds, SCORES: [scores]}]


def _lgb_frame(frame: Frame, vocab: dict[str, list[str]]) -> Any:
    import pandas as pd

    columns: dict[str, Any] = dict(frame.numbers)
    for name, values in frame.cats.items():
        codes = pd.Index(vocab[name]).get_indexer(values)
        columns[name] = pd.Categorical.from_codes(codes, categories=vocab[name])
    for name, lists in frame.multi.items():
        for v in vocab[name]:
            columns[f"{name}={v}"] = np.array([v in values for values in lists], np.float64)
    return pd.DataFrame(columns)


def _vocabulary(frame: Frame) -> dict[str, list[str]]:
    import pandas as pd

    vocab = {name: sorted(set(pd.unique(values)) - {""}) for name, values in frame.cats.items()}
    for name, lists in frame.multi.items():
        vocab[name] = sorted({v for values in lists for v in values})
    return vocab


def lightgbm(ds: Dataset, space: Baselines, seeds: int) -> list[dict[str, Any]]:
    import lightgbm as lgb

    vocab = _vocabulary(ds.frames[0])
    (xtr, xva, xte), (ytr, yva, yte) = ((_lgb_frame(f, vocab) for f in ds.frames),
                                        (f.y for f in ds.frames))

    def params(leaves: int, seed: int) -> dict[str, Any]:
        return {"objective": "binary", "learning_rate": space.learning_rate,
                "num_leaves": leaves, "min_data_in_leaf": space.min_data_in_leaf,
                "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1,
                "cat_smooth": 10, "seed": seed, "verbose": -1, "num_threads": 2}

    def fit(leaves: int, seed: int) -> Any:
        return lgb.train(params(leaves, seed), lgb.Dataset(xtr, ytr), num_boost_round=space.rounds,
                         valid_sets=[lgb.Dataset(xva, yva)],
                         callbacks=[lgb.early_stopping(50, verbose=False)])

    models = {leaves: fit(leaves, 0) for leaves in space.leaves}
    grid = {leaves: _metrics(yva, m.predict(xva))["auc"] for leaves, m in models.items()}
    best = max(grid, key=lambda k: grid[k])
    vals, tests, rounds, scores = [], [], [], []
    for seed in range(seeds):
        model = models[best] if seed == 0 else fit(best, seed)
        vals.append(_metrics(yva, model.predict(xva))["auc"])
        scores.append(model.predict(xte))
        tests.append(_metrics(yte, scores[-1]))
        rounds.append(model.best_iteration)
    held_out: dict[str, Any] = {
        "label": "LightGBM (leaves on validation, early stopping)",
        "model": "LightGBM (numbers, ids as categories)",
        "selected": {"num_leaves": best, "learning_rate": space.learning_rate},
        "val_auc_grid": grid, "best_iterations": rounds, "val": vals, "test": tests,
        SCORES: scores}
    if not space.refit:
        return [held_out]
    # The refit's categories are those of its own rows, as plexrec's final fit's vocabulary.
    more = _vocabulary(ds.frames[1])
    vocab = {name: sorted({*ids, *more[name]}) for name, ids in vocab.items()}
    parts = [_lgb_frame(f, vocab) for f in ds.frames]
    x, y = _refit_rows((parts[0], parts[1]), (ytr, yva))
    scale = len(y) / len(ytr)
    refits = [lgb.train(params(best, seed), lgb.Dataset(x, y),
                        num_boost_round=max(1, round(r * scale)))
              for seed, r in enumerate(rounds)]
    scores = [m.predict(parts[2]) for m in refits]
    return [held_out, {**held_out, "label": _refit_label(held_out["label"]), "refit": True,
                       "refit_rounds": [m.current_iteration() for m in refits],
                       "test": [_metrics(yte, p) for p in scores], SCORES: scores}]


def plexrec_model(ds: Dataset, config: str, extra: list[str], label: str, seeds: int,
                  work: Path, quick: bool) -> list[dict[str, Any]]:
    """The held-out runs' entry, and the final fits' when the runs have one."""
    from plexrec.training.launch import LaunchOptions, run_train

    train, valid, test = ds.paths
    data_keys = sorted(o for o in extra if o.startswith("data."))
    cache = work / "cache" / hashlib.sha256(repr([config, data_keys]).encode()).hexdigest()[:12]
    tag = hashlib.sha256(repr([config, extra]).encode()).hexdigest()[:12]
    results, scores, final_scores = [], [], []
    for seed in range(seeds):
        run_dir = work / "runs" / tag / str(seed)
        result = run_train(LaunchOptions(
            config=REPO / "configs" / config, data=str(train), quiet=True,
            overrides=[f"data.valid_path={valid}", f"data.test_path={test}",
                       f"data.cache_dir={cache}", f"train.seed={seed}",
                       f"train.run_dir={run_dir}",
                       "mlflow.enabled=false", *extra,
                       *(QUICK_OVERRIDES if quick else [])]))
        results.append(result)
        scores.append(_test_scores(config, run_dir, ds))
        if "final_fit" in result:
            final_scores.append(_test_scores(config, run_dir / "final_fit", ds))
    held_out = {"label": label, "model": f"plexrec {config}",
                "selected": {"config": config, "overrides": extra},
                "runs": [{k: r[k] for k in ("best_val_auc", "best_step", "steps")}
                         for r in results],
                "val": [r["best_val_auc"] for r in results],
                "test": [{"auc": r["test_auc"], "logloss": r["test_logloss"]} for r in results],
                SCORES: scores}
    if len(final_scores) < seeds:
        return [held_out]
    fits = [r["final_fit"] for r in results]
    return [held_out, {**held_out, "label": f"{label}, final fit on training + validation rows",
                       "refit": True,
                       "runs": [{k: f[k] for k in ("steps", "rows", "first_order_epochs")}
                                for f in fits],
                       "test": [{"auc": f["test_auc"], "logloss": f["test_logloss"]}
                                for f in fits], SCORES: final_scores}]


def validation_run(config: str, data: str, valid: str | None, run_dir: Path, cache: Path,
                   overrides: list[str]) -> dict[str, Any]:
    """One plexrec run that reads no test rows: `valid`, when given, is both its validation and
    its test set (else the config's own split holds); no MLflow, no final fit."""
    from plexrec.training.launch import LaunchOptions, run_train

    split = [f"data.valid_path={valid}", f"data.test_path={valid}"] if valid else []
    return run_train(LaunchOptions(
        config=REPO / "configs" / config, data=data, quiet=True,
        overrides=[*split, f"data.cache_dir={cache}", f"train.run_dir={run_dir}",
                   "mlflow.enabled=false", "train.final_fit=false", *overrides]))


def _test_scores(config: str, run_dir: Path, ds: Dataset) -> np.ndarray:
    labels, logits = run_test_scores(run_dir)
    if not np.array_equal(labels, ds.frames[2].y):
        raise SystemExit(f"{config}: the run's test rows are not the split's test rows")
    return logits


def against_baselines(entries: list[dict[str, Any]], labels: np.ndarray) -> None:
    """Each plexrec entry's test-AUC gap to every baseline trained on the same rows (held-out
    or refitted), with its paired bootstrap interval over the test rows (bench/paired_auc.py);
    `best` marks the baseline a user would pick, the one with the best validation AUC."""
    for refit in (False, True):
        baselines = [e for e in entries if e["baseline"] and e.get("refit", False) == refit]
        if not baselines:
            continue
        best = max(baselines, key=lambda e: e["val_auc_mean"])["label"]
        for entry in entries:
            if entry["baseline"] or entry.get("refit", False) != refit:
                continue
            entry["vs_baselines"] = {b["label"]: {**paired_bootstrap(labels, entry[SCORES],
                                                                       b[SCORES]),
                                                  "best": b["label"] == best}
                                     for b in baselines}


def _mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def run_dataset(name: str, seeds: int, quick: bool, work: Path) -> dict[str, Any]:
    start = time.perf_counter()
    (work / name).mkdir()
    ds = DATASETS[name](work / name, quick)
    prepared = time.perf_counter() - start
    space = BASELINES[name]
    jobs: list[tuple[bool, Any]] = [(True, lambda: logistic_regression(ds, space, seeds)),
                                    (True, lambda: lightgbm(ds, space, seeds))]
    jobs += [(False, lambda c=config, e=extra, la=label:
              plexrec_model(ds, c, e, la, seeds, work, quick))
             for config, extra, label in PLEXREC_MODELS[name]]
    entries = []
    for baseline, job in jobs:
        t0 = time.perf_counter()
        produced = job()
        seconds = (time.perf_counter() - t0) / len(produced)
        for entry in produced:
            val_mean, val_std = _mean_std(entry["val"])
            test_mean, test_std = _mean_std([t["auc"] for t in entry["test"]])
            entry.update(baseline=baseline, val_auc_mean=val_mean, val_auc_std=val_std,
                         test_auc_mean=test_mean, test_auc_std=test_std,
                         test_logloss_mean=statistics.fmean(t["logloss"]
                                                            for t in entry["test"]),
                         seconds=seconds)
            print(f"[{name}] {entry['label']}: val {val_mean:.4f} test {test_mean:.4f} "
                  f"({seconds:.0f}s)", flush=True)
            entries.append(entry)
    against_baselines(entries, ds.frames[2].y)
    for entry in entries:
        del entry[SCORES]
    return {"data": ds.data, "split": ds.split, "baselines": asdict(space),
            "rows": {part: len(f.y) for part, f in zip(("train", "valid", "test"), ds.frames,
                                                       strict=True)},
            "positive_rate": {part: float(f.y.mean()) for part, f in
                              zip(("train", "valid", "test"), ds.frames, strict=True)},
            "seeds": seeds, "models": entries, "prepare_seconds": prepared,
            "seconds": time.perf_counter() - start}


def print_table(name: str, section: dict[str, Any]) -> None:
    print(f"\n### {name} ({section['data']}; {section['seeds']} seed(s); split {section['split']})")
    baselines = [e["label"] for e in section["models"] if e.get("baseline")]
    print("| model | val AUC | test AUC | test log loss | "
          + " | ".join(f"test AUC − {b} [95%]" for b in baselines) + " | selected | s |")
    print("|---|---:|---:|---:|" + "---:|" * len(baselines) + "---|---:|")
    for e in section["models"]:
        gaps = e.get("vs_baselines", {})
        gap_text = " | ".join(
            f"{g['diff']:+.4f} [{g['low']:+.4f}, {g['high']:+.4f}]" if (g := gaps.get(b))
            else "" for b in baselines)
        print(f"| {e['label']} | {e['val_auc_mean']:.4f} ± {e['val_auc_std']:.4f} | "
              f"{e['test_auc_mean']:.4f} ± {e['test_auc_std']:.4f} | "
              f"{e['test_logloss_mean']:.4f} | {gap_text} | {e['selected']} | "
              f"{e['seconds']:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS),
                        help=f"comma-separated, of {', '.join(DATASETS)}")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true",
                        help=f"one seed, short plexrec runs, 50k synthetic rows; writes "
                             f"{QUICK_RESULTS} unless --out")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        parser.error(f"unknown dataset {unknown[0]!r} (known: {', '.join(DATASETS)})")
    seeds = 1 if args.quick else args.seeds
    out = args.out or (QUICK_RESULTS if args.quick else RESULTS)
    result = json.loads(out.read_text()) if out.is_file() else {}
    result = {"benchmark": "ctr_peers", "datasets": result.get("datasets", {})}
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"bench_ctr_peers_{name}_") as tmp:
            section = run_dataset(name, seeds, args.quick, Path(tmp))
        section.update(machine=platform.processor() or platform.machine(), quick=args.quick,
                       measured=time.strftime("%Y-%m-%d"))
        result["datasets"][name] = section
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    for name in names:
        print_table(name, result["datasets"][name])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
