"""Retrieval quality on MovieLens-100K: Recall@K and NDCG@K (K = 10, 50, 100) of the two-tower
model against a popularity and a matrix-factorisation baseline, all on the same split.

Protocol: a rating >= 4 is a positive. The retrieval task's own leave-last-out split: each
user's last 5 positives by time are held out for test and the 5 before them for validation
(early stopping); every model trains on the rest. Every model ranks all 1,682 items, minus the
user's own training positives. Recall@K = hits / held-out count, NDCG@K with binary gains (see
training/retrieval_metrics.py).
Subject: configs/movielens_two_tower.toml as shipped, trained by `plexrec train`'s trainer (the
one training loop, in this process) and scored from its checkpoint; the same without log-Q
(ablation) and on a unified layout at ~25% of the embedding parameters. Baselines measured in
the same run on the same split: popularity (training positive counts) and MF (user/item id
embeddings only, the same sampled softmax and log-Q, plain torch). Every trained model is
repeated over --repeats seeds; figures are means.

    python -m bench.bench_retrieval_quality [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.samples import ML_100K  # noqa: E402
from plexrec.features.cache import PreparedData  # noqa: E402
from plexrec.features.prepare import prepare  # noqa: E402
from plexrec.features.schema import load_schema  # noqa: E402
from plexrec.training.baselines import MFConfig, mf_scorer, popularity_scorer, train_mf  # noqa: E402
from plexrec.training.export import load_trained  # noqa: E402
from plexrec.training.launch import LaunchOptions, run_train  # noqa: E402
from plexrec.training.retrieval_metrics import evaluate_topk, seen_before_test  # noqa: E402
from plexrec.training.two_tower import (  # noqa: E402
    evaluate_two_tower,
    key_ids,
    key_names,
    make_split,
    positive_rows,
)

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "movielens_two_tower.toml"
RESULTS = REPO / "bench" / "results" / "retrieval_quality.json"
KS = (10, 50, 100)
HOLDOUT = 5


def _two_tower(prepared: Path, runs: Path, data: Any, split: Any, overrides: list[str]
               ) -> tuple[dict[str, float], dict[str, Any]]:
    """The shipped config through `plexrec train`'s own trainer (in this process), then its
    checkpoint scored on the benchmark's split, which is the task's split."""
    started = time.perf_counter()
    result = run_train(LaunchOptions(config=CONFIG, data=str(prepared), quiet=True, overrides=[
        "mlflow.enabled=false", f"train.runs_root={runs}", *overrides]))
    trained = load_trained(result["run_dir"])
    metrics = evaluate_two_tower(trained.parts.model, data, split, KS)
    return metrics, {"seconds": time.perf_counter() - started, "steps": result["steps"],
                     "early_stopped": result["early_stopped"],
                     "embedding_params": result["embedding_params"]}


def _mf(data: Any, split: Any, config: MFConfig) -> tuple[dict[str, float], dict[str, Any]]:
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


def _repeat(fn: Callable[[int], tuple[dict[str, float], dict[str, Any]]], seeds: list[int]
            ) -> dict[str, Any]:
    runs = []
    for seed in seeds:
        metrics, info = fn(seed)
        runs.append({"seed": seed, **metrics, **info})
        print(f"    seed {seed}: " + " ".join(f"{k}={metrics[k]:.4f}" for k in _names())
              + f"  ({info['seconds']:.1f}s)", flush=True)
    mean = {k: statistics.mean(r[k] for r in runs) for k in _names()}
    return {"mean": mean, "runs": runs,
            "embedding_params": runs[0].get("embedding_params")}


def _names() -> list[str]:
    return [f"recall@{k}" for k in KS] + [f"ndcg@{k}" for k in KS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ML_100K, help="the ml-100k directory")
    parser.add_argument("--repeats", type=int, default=3, help="seeds per trained model")
    parser.add_argument("--quick", action="store_true", help="1 seed, 1 epoch: a smoke run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    repeats = 1 if args.quick else args.repeats
    epochs = 1 if args.quick else None
    seeds = list(range(repeats))

    with tempfile.TemporaryDirectory(prefix="plexrec-bench-") as tmp:
        prepare(load_schema(REPO / "configs" / "movielens.toml"), args.data, Path(tmp) / "ml",
                progress=False)
        data = PreparedData.open(Path(tmp) / "ml")
        # The retrieval task's split: each user's last HOLDOUT positives test, the HOLDOUT
        # before them validate (early stopping); the baselines train on the same train rows.
        split = make_split(data, HOLDOUT, val_holdout=HOLDOUT)
        user_key, item_key = key_names(data)
        candidates = np.arange(1, data.cardinality(item_key))
        n_test = sum(len(v) for v in split.test_pos.values())
        print(f"MovieLens-100K: {len(split.test_pos)} users evaluated, {n_test} held-out "
              f"positives, {len(candidates)} candidate items", flush=True)

        mf_config = MFConfig(epochs=epochs) if epochs else MFConfig()
        common = [f"train.epochs={epochs}"] if epochs else []
        runs = Path(tmp) / "runs"
        prepared = Path(tmp) / "ml"

        def two_tower(*overrides: str) -> Callable[[int], Any]:
            return lambda s: _two_tower(prepared, runs, data, split,
                                        [*common, f"train.seed={s}", *overrides])

        results: dict[str, Any] = {}
        print("popularity", flush=True)
        pos = positive_rows(data, split.train_rows)
        pop = evaluate_topk(popularity_scorer(key_ids(data, item_key)[pos], candidates),
                            split.test_pos, seen_before_test(split), candidates, KS)
        results["popularity"] = {"mean": {k: pop[k] for k in _names()}, "runs": [pop],
                                 "embedding_params": 0}
        print("    " + " ".join(f"{k}={pop[k]:.4f}" for k in _names()), flush=True)
        print("matrix factorisation (id embeddings, sampled softmax + log-Q)", flush=True)
        results["mf"] = _repeat(lambda s: _mf(data, split, MFConfig(**{
            **mf_config.__dict__, "seed": s})), seeds)
        print("two-tower, per_feature layout", flush=True)
        results["two_tower"] = _repeat(two_tower(), seeds)
        full_params = int(results["two_tower"]["runs"][0]["embedding_params"])
        print("two-tower without the log-Q correction (ablation)", flush=True)
        results["two_tower_no_log_q"] = _repeat(two_tower("retrieval.log_q=false"), seeds)
        print("two-tower, unified layouts with 1/4 of the embedding parameters", flush=True)
        results["two_tower_unified_25pct"] = _repeat(two_tower(
            "layout.kind=unified", f"layout.budget={full_params // 4}"), seeds)

    header = f"{'model':<26}" + "".join(f"{k:>11}" for k in _names())
    print("\n" + header)
    for name, r in results.items():
        print(f"{name:<26}" + "".join(f"{r['mean'][k]:>11.4f}" for k in _names()))
    tt, mf_r, pop_r = (results[k]["mean"] for k in ("two_tower", "mf", "popularity"))
    ratios = {f"two_tower_over_{b}": {k: tt[k] / r[k] for k in _names() if r[k] > 0}
              for b, r in (("popularity", pop_r), ("mf", mf_r))}
    print(f"\ntwo-tower / popularity recall@10: {ratios['two_tower_over_popularity']['recall@10']:.2f}x"
          f", / MF: {ratios['two_tower_over_mf']['recall@10']:.2f}x")
    out = {
        "benchmark": "retrieval_quality",
        "dataset": "MovieLens-100K (rating >= 4 is a positive)",
        "protocol": {"holdout": f"last min({HOLDOUT}, n_pos // 2) positives per user by time",
                     "users_evaluated": len(split.test_pos), "held_out_positives": n_test,
                     "candidates": "all items minus the user's training positives",
                     "ks": list(KS), "statistic": f"mean over {repeats} seed(s)"},
        "config": {"two_tower": {"config": str(CONFIG.relative_to(REPO)), "overrides": common,
                                 "unified_budget_params": full_params // 4},
                   "mf": mf_config.__dict__},
        "results": results,
        "ratios": ratios,
        "quick": args.quick,
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "cpus": os.cpu_count()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
