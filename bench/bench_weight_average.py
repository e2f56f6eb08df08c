"""The weight average (`[train] ema_decay`): its decay chosen on validation, and what it costs.

- MovieLens (bench_ctr_peers' split): shipped `movielens_dcn.toml` at each decay (0 is off),
  seeds 0..N-1, no final fit.
- Criteo-10k (bench_ctr_peers' split): DCN-v2 parallel with the term fitted first (the best
  Criteo model there), validating every 25 steps, at each decay.
- Cost: training examples/s with the average against without it, measured in the same run
  (median over the seeds), on 200,000 synthetic Criteo rows with `synthetic_dlrm.toml`'s
  tables, 200 steps. (The runs above are too short for a rate: they keep theirs in the JSON.)

Only validation is read: each run's test set is its validation set, so the split's test rows
stay unread (bench_ctr_peers reports test for the decay chosen here).

    python -m bench.bench_weight_average [--seeds 3] [--quick]

Prints a table per set; writes bench/results/weight_average.json."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_ctr_peers import validation_run
from bench.ctr_datasets import Dataset, criteo10k, movielens
from bench.result_file import write_result

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "weight_average.json"
CRITEO_BEST = ['model.dcn_structure="parallel"', "model.first_order=true",
               "train.first_order_epochs=30", "optim.first_order_lr=0.005",
               "optim.first_order_id_l2=0.02", "train.eval_every=25"]
# (config, extra overrides, decays) per set.
SETS: dict[str, tuple[str, list[str], tuple[float, ...]]] = {
    "movielens": ("movielens_dcn.toml", [], (0.0, 0.99, 0.995, 0.998)),
    "criteo10k": ("criteo_dcn.toml", CRITEO_BEST, (0.0, 0.9, 0.97, 0.99)),
}
LOADERS = {"movielens": movielens, "criteo10k": criteo10k}
COST_ROWS, COST_STEPS = 200_000, 200


def decays_on_validation(name: str, ds: Dataset, seeds: int, work: Path, quick: bool
                         ) -> dict[str, Any]:
    config, extra, decays = SETS[name]
    if quick:
        decays, extra = (0.0, decays[2]), [*extra, "train.max_steps=30"]
    rows = []
    for decay in decays:
        runs = []
        for seed in range(seeds):
            result = validation_run(config, str(ds.paths[0]), str(ds.paths[1]),
                                    work / name / f"{decay}-{seed}", work / name / "cache",
                                    [*extra, f"train.ema_decay={decay}", f"train.seed={seed}"])
            runs.append({k: result[k] for k in ("best_val_auc", "best_step", "steps",
                                                "train_examples_per_sec")})
        vals = [r["best_val_auc"] for r in runs]
        rows.append({"ema_decay": decay, "runs": runs, "val_auc_mean": statistics.fmean(vals),
                     "val_auc_std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                     "examples_per_sec_median": statistics.median(
                         r["train_examples_per_sec"] for r in runs)})
    best = max(rows, key=lambda r: r["val_auc_mean"])
    return {"config": config, "overrides": extra, "seeds": seeds, "rows": rows,
            "chosen_on_validation": best["ema_decay"]}


def cost_on_big_tables(seeds: int, work: Path, quick: bool) -> dict[str, Any]:
    """Examples/s of synthetic_dlrm.toml with and without the average, median over seeds."""
    from plexrec.features.synth import write_criteo

    rows, steps = (20_000, 30) if quick else (COST_ROWS, COST_STEPS)
    data = work / "synthetic" / "train.txt"
    data.parent.mkdir(parents=True)
    write_criteo(data, rows, seed=0, progress=False)
    rates: dict[float, list[float]] = {0.0: [], 0.995: []}
    params = 0
    for seed in range(seeds):
        for decay in rates:
            result = validation_run(
                "synthetic_dlrm.toml", str(data), None, work / "synthetic" / f"{decay}-{seed}",
                work / "synthetic" / "cache",
                ["train.first_order_epochs=0", f"train.max_steps={steps}",
                 f"train.eval_every={steps}", f"train.ema_decay={decay}", f"train.seed={seed}"])
            rates[decay].append(result["train_examples_per_sec"])
            params = result["embedding_params"]
    off, on = (statistics.median(rates[d]) for d in (0.0, 0.995))
    return {"config": "synthetic_dlrm.toml", "rows": rows, "steps": steps,
            "embedding_params": params, "examples_per_sec": {"off": off, "on": on},
            "ratio_on_to_off": on / off}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one seed, 30-step runs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    seeds = 1 if args.quick else args.seeds
    start = time.perf_counter()
    sets: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench_weight_average_") as tmp:
        work = Path(tmp)
        for name, load in LOADERS.items():
            (work / name).mkdir()
            ds = load(work / name, args.quick)
            sets[name] = {"data": ds.data, "split": ds.split,
                          **decays_on_validation(name, ds, seeds, work, args.quick)}
        cost = cost_on_big_tables(seeds, work, args.quick)
    for name, section in sets.items():
        print(f"\n### {name} ({section['data']}), {section['config']}, {seeds} seed(s), "
              f"validation only")
        print("| ema_decay | val AUC | best steps |\n|---:|---:|---|")
        for row in section["rows"]:
            print(f"| {row['ema_decay']} | {row['val_auc_mean']:.4f} ± {row['val_auc_std']:.4f}"
                  f" | {', '.join(str(r['best_step']) for r in row['runs'])} |")
        print(f"chosen on validation: {section['chosen_on_validation']}")
    print(f"\nsynthetic_dlrm.toml, {cost['embedding_params']:,} embedding parameters: "
          f"{cost['examples_per_sec']['on']:,.0f} examples/s with the average, "
          f"{cost['examples_per_sec']['off']:,.0f} without ({cost['ratio_on_to_off']:.2f}x)")
    result = {"benchmark": "weight_average", "seeds": seeds, "quick": args.quick,
              "sets": sets, "cost": cost,
              "seconds": time.perf_counter() - start}
    write_result(args.out, result)


if __name__ == "__main__":
    main()
