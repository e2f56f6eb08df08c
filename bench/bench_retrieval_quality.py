"""Retrieval quality on MovieLens-100K (or synthetic interactions): Recall@K and NDCG@K (K = 10, 50, 100) of the two-tower
model against popularity, implicit ALS, implicit BPR and an id-only MF, all on the same split.

Protocol: the retrieval task's own leave-last-out split (`make_split`, as `plexrec train` uses):
each user's last 5 positives (rating >= 4) by time are the test, the 5 before them validation;
every model is fitted on the remaining (training) rows only, chooses its settings on the
validation positives, and reports the test once. Every model ranks all 1,682 items minus what
the user interacted with before the held-out items (training rows of any rating, and for the
test the validation positives). Recall@K = hits / held-out count, NDCG@K with binary gains (see
training/retrieval_metrics.py).
Subject: configs/movielens_two_tower.toml as shipped, trained by `plexrec train`'s trainer (the
one training loop, in this process, full-corpus validation drives early stopping) and scored from
its checkpoint. Baselines: popularity (training interaction counts, the better of all
interactions or positives on validation), implicit's ALS and BPR on the training interactions
(every rating as implicit feedback, or positives only: part of the grid), each with a small
grid on validation, then 3 seeds at the chosen settings; "ALS refit" is the chosen ALS refitted
on training + validation rows (what a deployment would do; the two-tower rows never see the
validation positives as training pairs). Every trained model runs --repeats seeds; figures
are means, with the seed standard deviation in the JSON.

Prefix widths (issue 17, Matryoshka): every two-tower row is also scored with its vectors cut to
d/2, d/4 and d/8, both as served (re-normalised prefixes, models/two_tower.prefix_vectors) and
as plain inner products of the raw prefixes; the row "two_tower_matryoshka" (or
"two_tower_no_matryoshka" when the shipped config has it on) trains the other setting of
`[retrieval] matryoshka`, so the table shows what the nested losses cost at full width and keep
at half width.

User history (issue 14): the row "two_tower_no_history" (or "two_tower_history" when the
shipped config has none) trains the other setting of `[retrieval] history`. With a history, a
user's test vector is built from their interactions before their first test target, validation
rows included (the input a server would have; the model never trained on them), as ALS refit
sees them as training rows.

`--dataset synthetic` runs the same protocol on the generator's 200,000 interactions (seed 0,
what `make demo` trains on) with configs/synthetic_two_tower.toml, into
bench/results/retrieval_quality_synthetic.json, with one more row, "oracle": every item ranked
by the generator's own expected positives for the user (bench/synthetic_oracle.py), the ceiling
of any model trained on the rows (estimated from simulated rows, so slightly below the true
ceiling).

    python -m bench.bench_retrieval_quality [--dataset movielens|synthetic] [--repeats 3]
        [--quick] [--skip bpr als ...]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.samples import ML_100K  # noqa: E402
from plexrec.features.cache import PreparedData  # noqa: E402
from plexrec.features.prepare import prepare  # noqa: E402
from plexrec.features.schema import load_schema  # noqa: E402
from plexrec.training.baselines import (  # noqa: E402
    MFConfig,
    mf_scorer,
    popularity_scorer,
    train_mf,
)
from plexrec.training.config import load_config  # noqa: E402
from plexrec.training.export import load_trained  # noqa: E402
from plexrec.training.launch import LaunchOptions, run_train  # noqa: E402
from plexrec.training.retrieval_metrics import (  # noqa: E402
    LeaveLastOut,
    evaluate_topk,
    seen_before_test,
    seen_before_val,
)
from plexrec.training.tasks.retrieval import retrieval_config  # noqa: E402
from plexrec.training.two_tower import (  # noqa: E402
    evaluate_prefixes,
    evaluate_two_tower,
    key_ids,
    key_names,
    make_split,
    positive_rows,
)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SYNTHETIC_ROWS = 200_000  # what `make demo` trains on


@dataclass(frozen=True)
class Dataset:
    """A benchmark dataset: its schema, the shipped two-tower config and its results file."""

    title: str
    schema: Path
    config: Path
    results: Path


DATASETS = {
    "movielens": Dataset("MovieLens-100K (rating >= 4 is a positive)",
                         REPO / "configs" / "movielens.toml",
                         REPO / "configs" / "movielens_two_tower.toml",
                         RESULTS / "retrieval_quality.json"),
    "synthetic": Dataset(f"synthetic interactions ({SYNTHETIC_ROWS:,} rows, seed 0, as the demo)",
                         REPO / "configs" / "synthetic_interactions.toml",
                         REPO / "configs" / "synthetic_two_tower.toml",
                         RESULTS / "retrieval_quality_synthetic.json"),
}
CONFIG = DATASETS["movielens"].config
KS = (10, 50, 100)
HOLDOUT = 5


def _two_tower(config: Path, prepared: Path, runs: Path, data: Any, split: LeaveLastOut,
               overrides: list[str]) -> tuple[dict[str, float], dict[str, Any]]:
    """The shipped config through `plexrec train`'s own trainer (in this process), then its
    checkpoint scored on the benchmark's split, which is the task's split."""
    started = time.perf_counter()
    # The final fit (retraining on every row) would only cost time here: the figures are the
    # held-out run's best validation checkpoint either way.
    result = run_train(LaunchOptions(config=config, data=str(prepared), quiet=True, overrides=[
        "mlflow.enabled=false", f"train.runs_root={runs}", "retrieval.final_fit=false",
        *overrides]))
    trained = load_trained(result["run_dir"])
    # The run's own view of the cache (training-only vocabularies: `min_count` features have
    # run ids, not cache ids); the split's user and item ids are the same in both.
    model = trained.parts.model
    metrics = evaluate_two_tower(model, trained.data, split, KS)
    val = evaluate_two_tower(model, trained.data, split, KS, phase="val")
    widths = [model.dim // d for d in (1, 2, 4, 8) if model.dim % d == 0]
    return metrics, {"seconds": time.perf_counter() - started, "steps": result["steps"],
                     "best_step": result["best_step"], "early_stopped": result["early_stopped"],
                     "embedding_params": result["embedding_params"],
                     "run_test_recall@50": result["test_recall_at_50"],
                     "val": {k: val[k] for k in _names()},
                     "matryoshka": list(model.matryoshka),
                     **{rule: {str(w): {k: m[k] for k in _names()}
                               for w, m in evaluate_prefixes(model, trained.data, split, widths,
                                                             KS, renormalise=norm).items()}
                        for rule, norm in PREFIX_RULES.items()}}


# How a prefix is scored: as served (cut, then L2-normalised again) and as plain inner products
# of the raw cut vectors (what a server that forgot to re-normalise would rank by).
PREFIX_RULES = {"prefix": True, "plain_prefix": False}


def _width_summary(entry: dict[str, Any]) -> dict[str, Any]:
    """Per scoring rule and width: mean and seed std of each metric, and recall@50 at each width
    as a share of the full width's (the Matryoshka target: >= 0.95 at half width)."""
    out: dict[str, Any] = {}
    for rule in PREFIX_RULES:
        widths = entry["runs"][0][rule]
        full = max(widths, key=int)
        per: dict[str, Any] = {}
        for w in widths:
            values = {k: [r[rule][w][k] for r in entry["runs"]] for k in _names()}
            per[w] = {"mean": {k: statistics.mean(v) for k, v in values.items()},
                      "std": {k: statistics.stdev(v) if len(v) > 1 else 0.0
                              for k, v in values.items()}}
        for w in widths:
            per[w]["recall@50_share_of_full"] = (per[w]["mean"]["recall@50"]
                                                 / per[full]["mean"]["recall@50"])
        out[rule] = per
    return out


def _mf(data: Any, split: LeaveLastOut, config: MFConfig
        ) -> tuple[dict[str, float], dict[str, Any]]:
    started = time.perf_counter()
    user_key, item_key = key_names(data)
    pos = positive_rows(data, split.train_rows)
    model, history = train_mf(key_ids(data, user_key)[pos], key_ids(data, item_key)[pos],
                              data.cardinality(user_key), data.cardinality(item_key), config)
    candidates = np.arange(1, data.cardinality(item_key))
    metrics = evaluate_topk(mf_scorer(model, candidates), split.test_pos,
                            seen_before_test(split), candidates, KS)
    params = (data.cardinality(user_key) + data.cardinality(item_key)) * config.dim
    return metrics, {"seconds": time.perf_counter() - started, "final_loss": history[-1],
                     "embedding_params": params}


class Interactions:
    """User x item CSR matrices of the split's rows, for implicit (binary confidences)."""

    def __init__(self, data: Any, split: LeaveLastOut) -> None:
        user_key, item_key = key_names(data)
        self.users, self.items = key_ids(data, user_key), key_ids(data, item_key)
        self.labels = np.asarray(data.labels)
        self.shape = (data.cardinality(user_key), data.cardinality(item_key))
        self.split = split
        self.candidates = np.arange(1, self.shape[1])

    def matrix(self, rows: np.ndarray, positives: str) -> Any:
        from scipy.sparse import csr_matrix

        if positives == "threshold":
            rows = rows[self.labels[rows] > 0.5]
        m = csr_matrix((np.ones(len(rows), np.float32), (self.users[rows], self.items[rows])),
                       shape=self.shape)
        m.data[:] = 1.0  # a repeated pair is one interaction
        return m

    def evaluate(self, user_factors: np.ndarray, item_factors: np.ndarray, phase: str
                 ) -> dict[str, float]:
        users = torch.from_numpy(np.ascontiguousarray(user_factors, dtype=np.float32))
        items = torch.from_numpy(np.ascontiguousarray(item_factors[self.candidates],
                                                      dtype=np.float32))

        def score(batch: np.ndarray) -> torch.Tensor:
            return users[torch.from_numpy(batch)] @ items.T

        if phase == "val":
            return evaluate_topk(score, self.split.val_pos, seen_before_val(self.split),
                                 self.candidates, KS)
        return evaluate_topk(score, self.split.test_pos, seen_before_test(self.split),
                             self.candidates, KS)


def _implicit_model(kind: str, params: dict[str, Any], seed: int) -> Any:
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    p = {k: v for k, v in params.items() if k != "positives"}
    if kind == "als":
        return AlternatingLeastSquares(**p, num_threads=2, random_state=seed)
    return BayesianPersonalizedRanking(**p, num_threads=2, random_state=seed)


def _fit_implicit(kind: str, params: dict[str, Any], seed: int, m: Any) -> tuple[Any, float]:
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    model = _implicit_model(kind, params, seed)
    with threadpool_limits(1, "blas"):
        model.fit(m, show_progress=False)
    return model, time.perf_counter() - started


def _grid(space: dict[str, list[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(space, values, strict=True)) for values in itertools.product(*space.values())]


def _tune_implicit(kind: str, inter: Interactions, space: dict[str, list[Any]],
                   monitor: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every grid point fitted once (seed 0) on the training rows, scored on validation."""
    trials = []
    for params in _grid(space):
        model, seconds = _fit_implicit(kind, params, 0,
                                       inter.matrix(inter.split.train_rows, params["positives"]))
        val = inter.evaluate(model.user_factors, model.item_factors, "val")
        trials.append({"params": params, "val": {k: val[k] for k in _names()},
                       "seconds": seconds})
    best = max(trials, key=lambda t: t["val"][monitor])
    print(f"    {kind}: {len(trials)} settings on validation, best {best['params']} "
          f"val {monitor}={best['val'][monitor]:.4f}", flush=True)
    return best["params"], trials


def _implicit_runs(kind: str, inter: Interactions, params: dict[str, Any], seeds: list[int],
                   refit: bool = False) -> dict[str, Any]:
    rows = inter.split.train_rows
    if refit:
        rows = np.sort(np.concatenate([rows, inter.split.val_rows]))

    def one(seed: int) -> tuple[dict[str, float], dict[str, Any]]:
        model, seconds = _fit_implicit(kind, params, seed,
                                       inter.matrix(rows, params["positives"]))
        info: dict[str, Any] = {"seconds": seconds}
        if not refit:
            val = inter.evaluate(model.user_factors, model.item_factors, "val")
            info["val"] = {k: val[k] for k in _names()}
        return inter.evaluate(model.user_factors, model.item_factors, "test"), info

    out = _repeat(one, seeds)
    out["params"] = params
    out["embedding_params"] = (inter.shape[0] + inter.shape[1]) * int(params["factors"])
    return out


def _repeat(fn: Callable[[int], tuple[dict[str, float], dict[str, Any]]], seeds: list[int]
            ) -> dict[str, Any]:
    runs = []
    for seed in seeds:
        metrics, info = fn(seed)
        runs.append({"seed": seed, **{k: metrics[k] for k in _names()}, **info})
        print(f"    seed {seed}: " + " ".join(f"{k}={metrics[k]:.4f}" for k in _names())
              + f"  ({info['seconds']:.1f}s)", flush=True)
    mean = {k: statistics.mean(r[k] for r in runs) for k in _names()}
    std = {k: statistics.stdev(r[k] for r in runs) if len(runs) > 1 else 0.0 for k in _names()}
    return {"mean": mean, "std": std, "runs": runs,
            "embedding_params": runs[0].get("embedding_params")}


def _popularity(data: Any, split: LeaveLastOut, inter: Interactions, monitor: str
                ) -> dict[str, Any]:
    """Training interaction counts (all interactions or positives, chosen on validation)."""
    print("popularity (interaction counts on the training rows)", flush=True)
    candidates = inter.candidates
    trials = {}
    for positives in ("all", "threshold"):
        rows = (split.train_rows if positives == "all"
                else positive_rows(data, split.train_rows))
        scorer = popularity_scorer(inter.items[rows], candidates)
        trials[positives] = (scorer, evaluate_topk(scorer, split.val_pos,
                                                   seen_before_val(split), candidates, KS))
    chosen = max(trials, key=lambda k: trials[k][1][monitor])
    pop = evaluate_topk(trials[chosen][0], split.test_pos, seen_before_test(split), candidates,
                        KS)
    print(f"    positives={chosen}: " + " ".join(f"{k}={pop[k]:.4f}" for k in _names()),
          flush=True)
    return {"mean": {k: pop[k] for k in _names()}, "std": {k: 0.0 for k in _names()},
            "runs": [pop], "params": {"positives": chosen}, "embedding_params": 0}


def _oracle(data: Any, split: LeaveLastOut, inter: Interactions, samples: int
            ) -> dict[str, Any]:
    """The generator's own expected positives per item (bench/synthetic_oracle.py): the ceiling
    any model trained on these rows can reach, on the same split and masks."""
    from bench.synthetic_oracle import oracle_scorer
    from plexrec.features.synth import InteractionGenerator
    from plexrec.training.export import external_ids

    print(f"oracle: the generator's expected positives ({samples} simulated rows per user)",
          flush=True)
    started = time.perf_counter()
    user_key, item_key = key_names(data)
    gen = InteractionGenerator(0, max(10, SYNTHETIC_ROWS // 20), max(10, SYNTHETIC_ROWS // 50))
    users = np.array(sorted(split.test_pos), dtype=np.int64)
    score = oracle_scorer(gen, external_ids(data, user_key, users), users,
                          external_ids(data, item_key, inter.candidates), samples)
    metrics = evaluate_topk(score, split.test_pos, seen_before_test(split), inter.candidates,
                            KS)
    print("    " + " ".join(f"{k}={metrics[k]:.4f}" for k in _names())
          + f"  ({time.perf_counter() - started:.1f}s)", flush=True)
    return {"mean": {k: metrics[k] for k in _names()}, "std": {k: 0.0 for k in _names()},
            "runs": [metrics], "params": {"samples_per_user": samples}, "embedding_params": 0}


def _names() -> list[str]:
    return [f"recall@{k}" for k in KS] + [f"ndcg@{k}" for k in KS]


# A first grid put ALS's best at its smallest factors and largest regularization and BPR's at
# its lowest rate and most factors, with positives = "all" ahead everywhere for BPR, so the
# grids reach past those edges (BPR only on all interactions: its fits are the slow ones).
ALS_GRID = {"positives": ["all", "threshold"], "factors": [16, 32, 64, 128],
            "regularization": [0.1, 1.0, 10.0, 30.0], "iterations": [15, 30],
            "alpha": [1.0, 5.0]}
BPR_GRID = {"positives": ["all"], "factors": [64, 128], "learning_rate": [0.003, 0.01, 0.03],
            "regularization": [0.01], "iterations": [100, 300]}
QUICK_ALS = {"positives": ["all"], "factors": [32], "regularization": [0.1],
             "iterations": [15], "alpha": [1.0]}
QUICK_BPR = {"positives": ["all"], "factors": [32], "learning_rate": [0.05],
             "regularization": [0.01], "iterations": [50]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="movielens",
                        help="MovieLens-100K, or the generator's interactions as the demo "
                             "writes them")
    parser.add_argument("--data", type=Path, default=ML_100K,
                        help="the ml-100k directory (--dataset movielens)")
    parser.add_argument("--repeats", type=int, default=3, help="seeds per trained model")
    parser.add_argument("--quick", action="store_true", help="1 seed, 1 epoch: a smoke run")
    parser.add_argument("--monitor", default="recall@50",
                        help="the validation metric every baseline's grid is chosen on")
    parser.add_argument("--skip", nargs="*", default=[],
                        help="parts to leave out: popularity, bpr, als (and its refit), mf, "
                             "two_tower, two_tower_unified_25pct, matryoshka, history, oracle")
    parser.add_argument("--oracle-samples", type=int, default=2000,
                        help="simulated rows per user for the synthetic oracle")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="extra --set for the two-tower runs (tuning only)")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: bench/results/retrieval_quality[_synthetic].json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    repeats = 1 if args.quick else args.repeats
    epochs = 1 if args.quick else None
    seeds = list(range(repeats))

    dataset = DATASETS[args.dataset]
    config = dataset.config
    out_path = args.out or dataset.results
    with tempfile.TemporaryDirectory(prefix="plexrec-bench-") as tmp:
        source = args.data
        if args.dataset == "synthetic":
            from plexrec.features.synth import write_interactions

            source = Path(tmp) / "interactions"
            write_interactions(source, SYNTHETIC_ROWS, seed=0, progress=False)
        prepare(load_schema(dataset.schema), source, Path(tmp) / "ml", progress=False)
        data = PreparedData.open(Path(tmp) / "ml")
        # The retrieval task's split: each user's last HOLDOUT positives test, the HOLDOUT
        # before them validate; every model fits on the same training rows.
        split = make_split(data, HOLDOUT, val_holdout=HOLDOUT)
        user_key, item_key = key_names(data)
        inter = Interactions(data, split)
        candidates = inter.candidates
        n_test = sum(len(v) for v in split.test_pos.values())
        print(f"{dataset.title}: {len(split.test_pos)} users evaluated, {n_test} held-out "
              f"positives, {len(candidates)} candidate items", flush=True)

        mf_config = MFConfig(epochs=epochs) if epochs else MFConfig()
        common = ([f"train.epochs={epochs}"] if epochs else []) + list(args.overrides)
        runs = Path(tmp) / "runs"
        prepared = Path(tmp) / "ml"

        def two_tower(*overrides: str) -> Callable[[int], Any]:
            return lambda s: _two_tower(config, prepared, runs, data, split,
                                        [*common, f"train.seed={s}", *overrides])

        results: dict[str, Any] = {}
        if "popularity" not in args.skip:
            results["popularity"] = _popularity(data, split, inter, args.monitor)

        if args.dataset == "synthetic" and "oracle" not in args.skip:
            results["oracle"] = _oracle(data, split, inter, args.oracle_samples)

        tuning: dict[str, Any] = {}
        for kind, space, label in (("bpr", QUICK_BPR if args.quick else BPR_GRID, "BPR"),
                                   ("als", QUICK_ALS if args.quick else ALS_GRID, "ALS")):
            if kind in args.skip:
                continue
            print(f"implicit {label}: grid on validation", flush=True)
            params, trials = _tune_implicit(kind, inter, space, args.monitor)
            tuning[kind] = trials
            print(f"implicit {label}, chosen settings, test", flush=True)
            results[kind] = _implicit_runs(kind, inter, params, seeds)
        if "als" in results:
            print("implicit ALS refitted on training + validation rows, test", flush=True)
            results["als_refit"] = _implicit_runs("als", inter, results["als"]["params"],
                                                  seeds, refit=True)
        if "mf" not in args.skip:
            print("matrix factorisation (id embeddings, sampled softmax + log-Q)", flush=True)
            results["mf"] = _repeat(lambda s: _mf(data, split, MFConfig(**{
                **mf_config.__dict__, "seed": s})), seeds)
        if "two_tower" not in args.skip:
            print("two-tower, shipped config", flush=True)
            results["two_tower"] = _repeat(two_tower(), seeds)
        if "two_tower_unified_25pct" not in args.skip and "two_tower" in results:
            full_params = int(results["two_tower"]["runs"][0]["embedding_params"])
            print("two-tower, unified layouts with 1/4 of the embedding parameters", flush=True)
            results["two_tower_unified_25pct"] = _repeat(two_tower(
                "layout.kind=unified", f"layout.budget={full_params // 4}"), seeds)
        if "history" not in args.skip:
            shipped_history = retrieval_config(load_config(config)).history
            other = "two_tower_no_history" if shipped_history else "two_tower_history"
            toggle = f"retrieval.history={0 if shipped_history else 10}"
            print(f"two-tower, shipped config with {toggle}", flush=True)
            results[other] = _repeat(two_tower(toggle), seeds)
        if "matryoshka" not in args.skip:
            shipped = bool(retrieval_config(load_config(config)).matryoshka)
            other = "two_tower_no_matryoshka" if shipped else "two_tower_matryoshka"
            toggle = f"retrieval.matryoshka={str(not shipped).lower()}"
            print(f"two-tower, shipped config with {toggle}", flush=True)
            results[other] = _repeat(two_tower(toggle), seeds)
        for name, entry in results.items():
            if name.startswith("two_tower"):
                entry["widths"] = _width_summary(entry)

    header = f"{'model':<26}" + "".join(f"{k:>11}" for k in _names())
    print("\n" + header)
    for name, r in results.items():
        print(f"{name:<26}" + "".join(f"{r['mean'][k]:>11.4f}" for k in _names()))
    widths_table = {name: {w: at["mean"]["recall@50"]
                           for w, at in entry["widths"]["prefix"].items()}
                    for name, entry in results.items() if "widths" in entry}
    if widths_table:
        print("\nrecall@50 by prefix width (re-normalised prefixes, as served; "
              "share of full width)")
        for name, row in widths_table.items():
            full = row[max(row, key=int)]
            print(f"{name:<26}" + "".join(f"  w{w}: {v:.4f} ({v / full:.3f})"
                                          for w, v in row.items()))
    gaps = {}
    if "two_tower" in results and "als" in results:
        tt, als = results["two_tower"]["mean"], results["als"]["mean"]
        gaps = {f"two_tower_minus_als_{k}": tt[k] - als[k] for k in _names()}
        print(f"\ntwo-tower - ALS: recall@50 {gaps['two_tower_minus_als_recall@50']:+.4f} "
              f"(target >= +0.02), NDCG@10 {gaps['two_tower_minus_als_ndcg@10']:+.4f} "
              "(target >= 0)")
    if "two_tower" in results and args.dataset == "synthetic":
        recall = results["two_tower"]["mean"]["recall@100"]
        print(f"two-tower recall@100 {recall:.4f} (target >= 1.2 x 0.378 = 0.4536)")
    out = {
        "benchmark": "retrieval_quality",
        "dataset": dataset.title,
        "protocol": {"holdout": f"last min({HOLDOUT}, n_pos // 2) positives per user by time "
                                f"test, the min({HOLDOUT}, ...) before them validation",
                     "users_evaluated": len(split.test_pos), "held_out_positives": n_test,
                     "candidates": "all items minus the user's earlier interactions (training "
                                   "rows of any rating; for test also the validation positives)",
                     "selection": f"validation {args.monitor}; test reported once",
                     "ks": list(KS), "statistic": f"mean over {repeats} seed(s)"},
        "config": {"two_tower": {"config": str(config.relative_to(REPO)), "overrides": common},
                   "mf": mf_config.__dict__, "als_grid": ALS_GRID, "bpr_grid": BPR_GRID},
        "results": results,
        "tuning": tuning,
        "two_tower_minus_als": gaps,
        "recall_at_50_by_prefix_width": widths_table,
        "skipped": list(args.skip),
        "two_tower_run_test_recall_at_50": [r["run_test_recall@50"] for r in
                                            results.get("two_tower", {}).get("runs", [])],
        "quick": args.quick,
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "cpus": os.cpu_count()},
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
