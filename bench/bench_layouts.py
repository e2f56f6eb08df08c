"""Embedding layouts under shrinking budgets: test AUC and log loss against embedding parameters
for per_feature, mixed_dim, unified and qr on Criteo-10k, MovieLens-100K (rating >= 4) and 1M
synthetic Criteo rows.

    python bench/bench_layouts.py [--quick] [--datasets criteo10k,movielens100k,synthetic1m]
        [--layouts ...] [--fractions 1,1/4,1/16,1/64] [--seeds 0,1,2] [--resume]

Budgets are fractions of the per-feature parameter count of each dataset (the size of a full
per_feature layout at the run config's dim), passed to `--embedding-budget` as a parameter count.
The baseline is per_feature at full size, measured in the same run with the same seeds; every
layout shares one dataset's hyperparameters (DATASETS below), only the layout and budget change.
The split is fixed (data.split_seed); the seeds vary model init and data order (train.seed).

Each run goes through the trainer's public entry `training.launch.run_train` in this process (one
process, `--nproc 1`), so the imports are paid once. Results are written after every run to
bench/results/layouts.json (with `--resume`, runs already there are kept and skipped), then
aggregated (mean, std, median over seeds), judged against the target (at 1/16 of the per-feature
count, unified and mixed_dim lose at most 0.002 AUC to full-size per_feature), plotted to
bench/results/layouts_pareto.png and printed as a markdown table."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from bench.samples import CRITEO_10K, ML_100K  # noqa: E402
from plexrec.models.layout_registry import LAYOUTS  # noqa: E402

RESULTS = REPO / "bench" / "results"
TARGET_FRACTION = 1 / 16
TARGET_MAX_LOSS = 0.002
TARGET_LAYOUTS = ("unified", "mixed_dim")
FRACTIONS = (1.0, 0.25, 0.0625, 1 / 64)
SEEDS = (0, 1, 2)
QUICK_STEPS = 30


@dataclass(frozen=True)
class Dataset:
    """One benchmark dataset: a run config, its raw input and the common hyperparameters."""

    name: str
    config: str
    data: str
    overrides: tuple[str, ...] = ()
    synth_rows: int = 0
    seeds: tuple[int, ...] = SEEDS
    notes: str = ""


DATASETS: dict[str, Dataset] = {
    "criteo10k": Dataset(
        "criteo10k", "configs/criteo_dlrm.toml",
        str(CRITEO_10K),
        ("data.batch_size=128", "train.epochs=3", "train.patience=0",
         "optim.embedding_lr=0.01", "optim.dense_lr=0.001"),
        seeds=(0, 1, 2, 3, 4),
        notes="10,000 real Criteo rows, 8k train / 1k val / 1k test"),
    "movielens100k": Dataset(
        "movielens100k", "configs/movielens_dlrm.toml", str(ML_100K),
        ("data.batch_size=512", "train.epochs=4", "train.patience=0",
         "optim.embedding_lr=0.05", "optim.dense_lr=0.001"),
        seeds=(0, 1, 2, 3, 4),
        notes="100,000 ratings, label rating >= 4, random 80/10/10 split"),
    "synthetic1m": Dataset(
        "synthetic1m", "configs/synthetic_dlrm.toml", "synth_criteo_1m.tsv",
        ("data.batch_size=2048", "train.epochs=1", "train.patience=0", "train.eval_every=0",
         "optim.embedding_lr=0.05", "optim.dense_lr=0.001"),
        synth_rows=1_000_000,
        notes="1M rows of features.synth.write_criteo (seed 0), 90/5/5 split"),
}

COMMON_OVERRIDES = ("mlflow.enabled=false", "train.checkpoint_every=0")


@dataclass
class Run:
    dataset: str
    layout: str
    fraction: float
    budget: int
    seed: int
    params: int | None = None
    bytes: int | None = None
    auc: float | None = None
    logloss: float | None = None
    seconds: float = 0.0
    steps: int | None = None
    examples_per_sec: float | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, float, int]:
        return (self.dataset, self.layout, round(self.fraction, 8), self.seed)


def fraction_label(fraction: float) -> str:
    if fraction >= 1:
        return "1"
    inv = 1 / fraction
    return f"1/{round(inv)}" if abs(inv - round(inv)) < 1e-6 else f"{fraction:g}"


def synth_path(work: Path, ds: Dataset) -> Path:
    """The synthetic TSV lives in the work dir and is written once (it depends on rows only)."""
    from plexrec.features.synth import write_criteo

    path = work / ds.data
    if not path.is_file():
        print(f"[{ds.name}] writing {ds.synth_rows:,} synthetic Criteo rows to {path}", flush=True)
        tmp = path.with_suffix(".partial")
        write_criteo(tmp, ds.synth_rows, seed=0, progress=False)
        tmp.rename(path)
    return path


def prepare(ds: Dataset, work: Path, extra: list[str]) -> tuple[Path, Path, list[str]]:
    """Prepares the dataset once into the work dir (reused while input and schema are unchanged)
    and snapshots the run config there, so an edit of configs/ during the grid changes no run;
    returns (prepared directory, config snapshot, overrides) for every run of the dataset."""
    from plexrec.training.launch import LaunchOptions, load_run_config, prepare_data

    raw = synth_path(work, ds) if ds.synth_rows else Path(ds.data)
    overrides = [*COMMON_OVERRIDES, *ds.overrides, *extra,
                 f'data.cache_dir="{work / "prepared" / ds.name}"',
                 f'train.run_dir="{work / "runs" / ds.name}"']
    opts = LaunchOptions(config=REPO / ds.config, data=str(raw), overrides=overrides, quiet=True)
    cfg = load_run_config(opts)
    prepared = prepare_data(cfg, REPO / ds.config, quiet=True)
    snapshot = work / "configs" / f"{ds.name}.toml"
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    snapshot.write_text((REPO / ds.config).read_text())
    return prepared, snapshot, overrides


def per_feature_params(config: Path, prepared: Path, overrides: list[str]) -> int:
    """The full per_feature parameter count at the run config's layout settings."""
    from plexrec.features.cache import PreparedData
    from plexrec.models.layouts import LayoutConfig, build_layout, specs_from_prepared
    from plexrec.training.launch import LaunchOptions, load_run_config
    from plexrec.training.tasks import task_for
    from plexrec.training.trainer import training_view

    cfg = load_run_config(LaunchOptions(config=config, data=str(prepared), overrides=overrides))
    layout = {**cfg.layout, "kind": "per_feature"}
    layout.pop("budget", None)
    cache = PreparedData.open(prepared)
    data, _ = training_view(cfg, task_for(cfg, cache), cache)
    names = cfg.data.features or None
    specs = specs_from_prepared(data, names)
    return int(build_layout(specs, LayoutConfig.from_dict(layout)).total_params)


def train_one(config: Path, prepared: Path, overrides: list[str], run: Run) -> Run:
    from plexrec.features.errors import PlexrecError
    from plexrec.training.launch import LaunchOptions, run_train

    opts = LaunchOptions(config=config, nproc=1, data=str(prepared), layout=run.layout,
                         embedding_budget=str(run.budget),
                         overrides=[*overrides, f"train.seed={run.seed}"], quiet=True)
    start = time.perf_counter()
    try:
        result = run_train(opts)
    except PlexrecError as exc:
        run.error = f"{type(exc).__name__}: {exc}"
        run.seconds = time.perf_counter() - start
        return run
    run.seconds = time.perf_counter() - start
    run.params = int(result["embedding_params"])
    run.bytes = int(result["embedding_bytes"])
    run.auc = float(result["test_auc"])
    run.logloss = float(result["test_logloss"])
    run.steps = result.get("steps")
    run.examples_per_sec = result.get("train_examples_per_sec")
    run.extra = {k: result.get(k) for k in ("test_calibration", "test_ne", "best_val_auc",
                                            "early_stopped")}
    return run


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "std": None, "median": None}
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "median": statistics.median(values)}


def aggregate(runs: list[Run]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, float], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.dataset, r.layout, round(r.fraction, 8)), []).append(r)
    rows = []
    for (dataset, layout, fraction), group in groups.items():
        ok = [r for r in group if r.error is None]
        rows.append({
            "dataset": dataset, "layout": layout, "fraction": fraction,
            "fraction_label": fraction_label(fraction), "budget": group[0].budget,
            "seeds": sorted(r.seed for r in ok), "failed": len(group) - len(ok),
            "errors": sorted({r.error for r in group if r.error}),
            "params": max((r.params for r in ok if r.params is not None), default=None),
            "bytes": max((r.bytes for r in ok if r.bytes is not None), default=None),
            "auc": _stats([r.auc for r in ok if r.auc is not None]),
            "logloss": _stats([r.logloss for r in ok if r.logloss is not None]),
            "seconds": _stats([r.seconds for r in ok]),
        })
    order = {name: i for i, name in enumerate(LAYOUTS)}
    rows.sort(key=lambda a: (a["dataset"], order.get(a["layout"], 99), -a["fraction"]))
    return rows


def pareto_front(aggs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Points no other point beats on both fewer parameters and higher mean AUC."""
    pts = [a for a in aggs if a["params"] is not None and a["auc"]["mean"] is not None]
    pts.sort(key=lambda a: (a["params"], -a["auc"]["mean"]))
    front, best = [], -math.inf
    for a in pts:
        if a["auc"]["mean"] > best:
            front.append({"layout": a["layout"], "fraction": a["fraction"],
                          "params": a["params"], "auc": a["auc"]["mean"]})
            best = a["auc"]["mean"]
    return front


def verdicts(runs: list[Run], aggs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per dataset: the baseline (per_feature, full size), and for each target layout at 1/16 its
    mean AUC loss, the paired per-seed losses (same seed = same init seed and data order) and
    whether the loss is within TARGET_MAX_LOSS."""
    out: dict[str, Any] = {}
    by_key = {r.key: r for r in runs if r.error is None}
    for dataset in sorted({a["dataset"] for a in aggs}):
        base = next((a for a in aggs if a["dataset"] == dataset and a["layout"] == "per_feature"
                     and a["fraction"] == 1.0), None)
        if base is None or base["auc"]["mean"] is None:
            out[dataset] = {"verdict": "no baseline (per_feature at full size did not run)"}
            continue
        entry: dict[str, Any] = {"baseline_auc": base["auc"]["mean"],
                                 "baseline_auc_std": base["auc"]["std"],
                                 "baseline_params": base["params"],
                                 "threshold_auc": base["auc"]["mean"] - TARGET_MAX_LOSS,
                                 "layouts": {}}
        met_all = True
        for layout in TARGET_LAYOUTS:
            agg = next((a for a in aggs if a["dataset"] == dataset and a["layout"] == layout
                        and abs(a["fraction"] - TARGET_FRACTION) < 1e-9), None)
            if agg is None or agg["auc"]["mean"] is None:
                entry["layouts"][layout] = {"met": None, "reason": "not run"}
                met_all = False
                continue
            paired = []
            for seed in agg["seeds"]:
                a = by_key.get((dataset, layout, round(TARGET_FRACTION, 8), seed))
                b = by_key.get((dataset, "per_feature", 1.0, seed))
                if a is not None and b is not None:
                    paired.append(a.auc - b.auc)
            loss = base["auc"]["mean"] - agg["auc"]["mean"]
            met = loss <= TARGET_MAX_LOSS
            met_all &= met
            entry["layouts"][layout] = {
                "auc": agg["auc"]["mean"], "auc_std": agg["auc"]["std"], "params": agg["params"],
                "auc_loss": loss, "paired_delta": _stats(paired), "met": met}
        entry["met"] = met_all
        out[dataset] = entry
    return out


def markdown_table(aggs: list[dict[str, Any]], verdict: dict[str, Any]) -> str:
    lines = ["| dataset | layout | budget | emb. params | test AUC (mean ± std) | "
             "Δ AUC vs per_feature full | test log loss (mean ± std) | s/run |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for a in aggs:
        base = verdict.get(a["dataset"], {}).get("baseline_auc")
        if a["auc"]["mean"] is None:
            lines.append(f"| {a['dataset']} | {a['layout']} | {a['fraction_label']} | - | "
                         f"failed: {'; '.join(a['errors'])[:80]} | | | |")
            continue
        delta = f"{a['auc']['mean'] - base:+.4f}" if base is not None else "-"
        lines.append(
            f"| {a['dataset']} | {a['layout']} | {a['fraction_label']} | {a['params']:,} | "
            f"{a['auc']['mean']:.4f} ± {a['auc']['std']:.4f} | {delta} | "
            f"{a['logloss']['mean']:.4f} ± {a['logloss']['std']:.4f} | "
            f"{a['seconds']['mean']:.1f} |")
    lines.append("")
    lines.append(f"Target: at {fraction_label(TARGET_FRACTION)} of the per-feature parameter "
                 f"count, {' and '.join(TARGET_LAYOUTS)} lose at most {TARGET_MAX_LOSS} AUC "
                 "against per_feature at full size (mean over seeds).")
    lines.append("")
    for dataset, v in verdict.items():
        if "layouts" not in v:
            lines.append(f"- **{dataset}**: {v['verdict']}")
            continue
        parts = []
        for layout, lv in v["layouts"].items():
            if lv.get("met") is None:
                parts.append(f"{layout} not run")
                continue
            pd = lv["paired_delta"]
            parts.append(f"{layout} {lv['auc']:.4f} (loss {lv['auc_loss']:+.4f}, paired "
                         f"Δ {pd['mean']:+.4f} ± {pd['std']:.4f}) "
                         f"{'met' if lv['met'] else 'MISSED'}")
        lines.append(f"- **{dataset}**: baseline {v['baseline_auc']:.4f} ± "
                     f"{v['baseline_auc_std']:.4f} ({v['baseline_params']:,} params); "
                     + "; ".join(parts) + f" -> target {'met' if v['met'] else 'missed'}")
    return "\n".join(lines)


def load_previous(path: Path) -> list[Run]:
    if not path.is_file():
        return []
    raw = json.loads(path.read_text())
    names = set(Run.__dataclass_fields__)
    return [Run(**{k: v for k, v in r.items() if k in names}) for r in raw.get("runs", [])]


def write_results(path: Path, runs: list[Run], meta: dict[str, Any]) -> dict[str, Any]:
    aggs = aggregate(runs)
    verdict = verdicts(runs, aggs)
    fronts = {d: pareto_front([a for a in aggs if a["dataset"] == d])
              for d in sorted({a["dataset"] for a in aggs})}
    doc = {**meta, "runs": [r.__dict__ for r in runs], "aggregates": aggs,
           "pareto_front": fronts, "target": verdict,
           "total_train_seconds": sum(r.seconds for r in runs)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=float))
    tmp.replace(path)
    return doc


def _csv(text: str, cast: Any) -> list[Any]:
    return [cast(x) for x in text.split(",") if x.strip()]


def _fraction(text: str) -> float:
    if "/" in text:
        num, den = text.split("/", 1)
        return float(num) / float(den)
    return float(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help=f"tiny grid: 1 seed, budgets 1 and 1/16, {QUICK_STEPS} steps")
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--layouts", default=",".join(LAYOUTS))
    p.add_argument("--fractions", default=None,
                   help="budgets as fractions of the per-feature count, e.g. 1,1/4,1/16")
    p.add_argument("--seeds", default=None,
                   help="train.seed values for every dataset, e.g. 0,1,2 (default: per dataset: "
                   "5 on the small real sets, whose 1k-10k-row test sets are noisy, 3 on synthetic)")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="extra key=value override for every run (e.g. to pick hyperparameters)")
    p.add_argument("--resume", action="store_true",
                   help="keep the runs already in the output JSON and skip them")
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/plexrec_bench_layouts"),
                   help="prepared caches, synthetic data and run dirs (reused across calls)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--png", type=Path, default=None)
    args = p.parse_args(argv)
    suffix = "_quick" if args.quick else ""
    args.out = args.out or RESULTS / f"layouts{suffix}.json"
    args.png = args.png or RESULTS / f"layouts{suffix}_pareto.png"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    import plexrec.training.launch  # noqa: F401  (its imports set up INFO logging; quiet it afterwards)

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s",
                        force=True)
    datasets = _csv(args.datasets, str)
    unknown = [d for d in datasets if d not in DATASETS]
    if unknown:
        print(f"error: unknown dataset(s) {unknown} (known: {', '.join(DATASETS)})")
        return 2
    layouts = _csv(args.layouts, str)
    fractions = (_csv(args.fractions, _fraction) if args.fractions
                 else [1.0, TARGET_FRACTION] if args.quick else list(FRACTIONS))
    seeds = _csv(args.seeds, int) if args.seeds else [0] if args.quick else None
    extra = list(args.overrides) + ([f"train.max_steps={QUICK_STEPS}"] if args.quick else [])
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)

    runs = load_previous(args.out) if args.resume else []
    previous = json.loads(args.out.read_text()) if args.resume and args.out.is_file() else {}
    done = {r.key for r in runs if r.error is None}
    runs = [r for r in runs if r.error is None]
    meta: dict[str, Any] = {
        "benchmark": "layouts", "quick": args.quick, "layouts": layouts,
        "fractions": fractions, "nproc": 1,
        "target_spec": {"fraction": TARGET_FRACTION, "max_auc_loss": TARGET_MAX_LOSS,
                   "layouts": list(TARGET_LAYOUTS)},
        "datasets": dict(previous.get("datasets", {})), "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    wall = time.perf_counter()
    for name in datasets:
        ds = DATASETS[name]
        t0 = time.perf_counter()
        prepared, config, overrides = prepare(ds, work, extra)
        full = per_feature_params(config, prepared, overrides)
        ds_seeds = list(seeds or ds.seeds)
        meta["datasets"][name] = {"config": ds.config, "config_text": config.read_text(),
                                  "data": ds.data, "notes": ds.notes, "seeds": ds_seeds,
                                  "overrides": overrides, "prepared": str(prepared),
                                  "per_feature_params": full,
                                  "prepare_seconds": time.perf_counter() - t0}
        print(f"[{name}] per-feature parameter count {full:,} (prepared in "
              f"{time.perf_counter() - t0:.1f} s)", flush=True)
        for fraction in fractions:
            budget = max(1, int(full * fraction))
            for layout in layouts:
                for seed in ds_seeds:
                    run = Run(name, layout, fraction, budget, seed)
                    if run.key in done:
                        continue
                    run = train_one(config, prepared, overrides, run)
                    runs.append(run)
                    status = (f"auc {run.auc:.4f} logloss {run.logloss:.4f} params "
                              f"{run.params:,}" if run.error is None else f"FAILED {run.error}")
                    print(f"[{name}] {layout:<11} budget {fraction_label(fraction):>5} "
                          f"({budget:,}) seed {seed}: {status} ({run.seconds:.1f} s)",
                          flush=True)
                    write_results(args.out, runs, meta)
    meta["wall_seconds"] = time.perf_counter() - wall
    doc = write_results(args.out, runs, meta)
    from bench.plot_layouts import plot

    plot(doc, args.png)
    print(f"\nwrote {args.out} and {args.png} ({meta['wall_seconds']:.0f} s wall)\n")
    print(markdown_table(doc["aggregates"], doc["target"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
