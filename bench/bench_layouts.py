"""Embedding layouts under shrinking budgets: test AUC and log loss against embedding parameters
for per_feature, mixed_dim, unified and qr on Criteo-10k, MovieLens-100K (rating >= 4) and 1M
synthetic Criteo rows.

    python bench/bench_layouts.py [--quick] [--datasets criteo10k,movielens100k,synthetic1m]
        [--layouts ...] [--fractions 1,1/4,1/16,1/64] [--seeds 0,1,2] [--resume]

Every dataset runs its shipped config as users get it (DATASETS below fixes only what a benchmark
must: MLflow off, no checkpoints but the best, cache and run dirs, seeds, and Criteo-10k's
split), so the benchmark measures the shipped models, each layout with the options its config
gives it ([layout.unified], [layout.mixed_dim]); only the layout and budget change.
Budgets are fractions of the per-feature parameter count of each dataset (the size of a full
per_feature layout at the config's dim), passed to `--embedding-budget` as a parameter count.

Every run sets `model.first_order=false`: the first-order term (models/first_order.py, on in the
shipped Criteo DLRM) adds per-id tables `w_<feature>` of width 4 outside the layout's budget, so
with it the compared parameter counts would not be the layouts' alone. Where the shipped config
has the term, per_feature at full size also runs with it (layout `per_feature+first_order`, its
real parameter count, the w_ tables included) as one reference row.

Criteo-10k is cut by order as in bench/bench_ctr_peers.py (rows 1-6,400 train, 6,401-8,000
validation, 8,001-10,000 test, split files in the work dir read through `data.valid_path` and
`data.test_path`): the config's random 80/10/10 leaves 1,000 test rows, an AUC standard error
near 0.017, far above the 0.002 target. MovieLens and synthetic keep their configs' splits.
The seeds vary model init and data order (train.seed); every layout runs the same seeds, so each
run is also compared with per_feature at full size on its own seed (the paired difference, whose
std is what the target's 0.002 must be read against).

Each run goes through the trainer's public entry `training.launch.run_train` in this process (one
process, `--nproc 1`), so the imports are paid once. Results are written after every run to
bench/results/layouts.json (with `--resume`, runs already there are kept and skipped), then
aggregated (mean, std, median over seeds, paired difference to per_feature full), judged against
the target (at 1/16 of the per-feature count, unified or mixed_dim within 0.002 AUC of
full-size per_feature), plotted to bench/results/layouts_pareto.png and printed as markdown."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time
import tomllib
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
TARGET_LAYOUTS = ("unified", "mixed_dim")  # met when either is within TARGET_MAX_LOSS
TARGET_DATASETS = ("criteo10k", "synthetic1m")
FRACTIONS = (1.0, 0.25, 0.0625, 1 / 64)
SEEDS = (0, 1, 2)
QUICK_STEPS = 30


@dataclass(frozen=True)
class Dataset:
    """One benchmark dataset: its shipped run config and raw input. `by_order` cuts the input into
    train/valid/test files by row order (row counts); otherwise the config's own split holds."""

    name: str
    config: str
    data: str
    synth_rows: int = 0
    by_order: tuple[int, int, int] | None = None
    seeds: tuple[int, ...] = SEEDS
    notes: str = ""


DATASETS: dict[str, Dataset] = {
    "criteo10k": Dataset(
        "criteo10k", "configs/criteo_dlrm.toml", str(CRITEO_10K),
        by_order=(6_400, 1_600, 2_000), seeds=(0, 1, 2, 3, 4),
        notes="10,000 real Criteo rows by order: 6,400 train / 1,600 valid / 2,000 test "
              "(bench/bench_ctr_peers.py's split)"),
    "movielens100k": Dataset(
        "movielens100k", "configs/movielens_dlrm.toml", str(ML_100K), seeds=(0, 1, 2, 3, 4),
        notes="100,000 ratings, label rating >= 4, the config's random 80/10/10 split"),
    "synthetic1m": Dataset(
        "synthetic1m", "configs/synthetic_dlrm.toml", "synth_criteo_1m.tsv",
        synth_rows=1_000_000,
        notes="1M rows of features.synth.write_criteo (seed 0), the config's 90/5/5 split"),
}

# Benchmark plumbing only; the first-order term is off so budgets count the layouts alone.
COMMON_OVERRIDES = ("mlflow.enabled=false", "train.checkpoint_every=0", "model.first_order=false")
REFERENCE = "per_feature+first_order"


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


def split_by_order(ds: Dataset, work: Path) -> tuple[Path, Path, Path]:
    """Criteo-10k's fixed split, as bench/ctr_datasets.py cuts it: the first rows train, the
    next validate, the next test (files written once into the work dir)."""
    assert ds.by_order is not None
    folder = work / "split" / ds.name
    paths = (folder / "train.txt", folder / "valid.txt", folder / "test.txt")
    if all(p.is_file() for p in paths):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    lines = Path(ds.data).read_bytes().splitlines(keepends=True)
    if len(lines) < sum(ds.by_order):
        raise SystemExit(f"{ds.data}: need {sum(ds.by_order):,} rows, found {len(lines):,}")
    start = 0
    for path, rows in zip(paths, ds.by_order, strict=True):
        path.write_bytes(b"".join(lines[start:start + rows]))
        start += rows
    return paths


def prepare(ds: Dataset, work: Path, extra: list[str]) -> tuple[Path, Path, list[str]]:
    """Prepares the dataset once into the work dir (reused while input and schema are unchanged)
    and snapshots the run config there, so an edit of configs/ during the grid changes no run;
    returns (prepared directory, config snapshot, overrides) for every run of the dataset. The
    split files are baked into the prepared cache, so the runs' overrides do not name them."""
    from plexrec.training.launch import LaunchOptions, load_run_config, prepare_data

    split: list[str] = []
    if ds.by_order:
        train, valid, test = split_by_order(ds, work)
        raw = train
        split = [f'data.valid_path="{valid}"', f'data.test_path="{test}"']
    else:
        raw = synth_path(work, ds) if ds.synth_rows else Path(ds.data)
    overrides = [*COMMON_OVERRIDES, *extra,
                 f'data.cache_dir="{work / "prepared" / ds.name}"',
                 f'train.run_dir="{work / "runs" / ds.name}"']
    opts = LaunchOptions(config=REPO / ds.config, data=str(raw), overrides=[*overrides, *split],
                         quiet=True)
    cfg = load_run_config(opts)
    prepared = prepare_data(cfg, REPO / ds.config, quiet=True)
    snapshot = work / "configs" / f"{ds.name}.toml"
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    snapshot.write_text((REPO / ds.config).read_text())
    return prepared, snapshot, overrides


def ships_first_order(config: Path) -> bool:
    return bool(tomllib.loads(config.read_text()).get("model", {}).get("first_order", False))


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

    layout, extra = run.layout, []
    if layout == REFERENCE:
        layout, extra = "per_feature", ["model.first_order=true"]
    opts = LaunchOptions(config=config, nproc=1, data=str(prepared), layout=layout,
                         embedding_budget=str(run.budget),
                         overrides=[*overrides, *extra, f"train.seed={run.seed}"], quiet=True)
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
                                            "best_step", "early_stopped")}
    return run


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "std": None, "median": None}
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "median": statistics.median(values)}


def paired_deltas(runs: list[Run], group: list[Run]) -> list[float]:
    """AUC minus per_feature full-size AUC on the same seed (same data order and split): the
    seeds' shared noise cancels, which the 0.002 target needs."""
    base = {r.seed: r.auc for r in runs if r.error is None and r.layout == "per_feature"
            and r.fraction == 1.0 and r.auc is not None}
    return [r.auc - base[r.seed] for r in group
            if r.error is None and r.auc is not None and r.seed in base]


def aggregate(runs: list[Run]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, float], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.dataset, r.layout, round(r.fraction, 8)), []).append(r)
    rows: list[dict[str, Any]] = []
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
            "paired_delta": _stats(paired_deltas([r for r in runs if r.dataset == dataset], ok)),
            "logloss": _stats([r.logloss for r in ok if r.logloss is not None]),
            "seconds": _stats([r.seconds for r in ok]),
        })
    order = {name: i for i, name in enumerate([*LAYOUTS, REFERENCE])}
    rows.sort(key=lambda a: (a["dataset"], order.get(a["layout"], 99), -a["fraction"]))
    return rows


def pareto_front(aggs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Points no other point beats on both fewer parameters and higher mean AUC."""
    pts = [a for a in aggs if a["params"] is not None and a["auc"]["mean"] is not None
           and a["layout"] != REFERENCE]
    pts.sort(key=lambda a: (a["params"], -a["auc"]["mean"]))
    front, best = [], -math.inf
    for a in pts:
        if a["auc"]["mean"] > best:
            front.append({"layout": a["layout"], "fraction": a["fraction"],
                          "params": a["params"], "auc": a["auc"]["mean"]})
            best = a["auc"]["mean"]
    return front


def verdicts(aggs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per dataset: the baseline (per_feature, full size), and for each target layout at 1/16 its
    mean AUC loss and the paired per-seed difference; the target is met when either layout's mean
    loss is within TARGET_MAX_LOSS (judged on TARGET_DATASETS, reported on all)."""
    out: dict[str, Any] = {}
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
                                 "judged": dataset in TARGET_DATASETS, "layouts": {}}
        met_any = False
        for layout in TARGET_LAYOUTS:
            agg = next((a for a in aggs if a["dataset"] == dataset and a["layout"] == layout
                        and abs(a["fraction"] - TARGET_FRACTION) < 1e-9), None)
            if agg is None or agg["auc"]["mean"] is None:
                entry["layouts"][layout] = {"met": None, "reason": "not run"}
                continue
            loss = base["auc"]["mean"] - agg["auc"]["mean"]
            met = loss <= TARGET_MAX_LOSS
            met_any |= met
            entry["layouts"][layout] = {
                "auc": agg["auc"]["mean"], "auc_std": agg["auc"]["std"], "params": agg["params"],
                "auc_loss": loss, "paired_delta": agg["paired_delta"], "met": met}
        entry["met"] = met_any
        out[dataset] = entry
    return out


def _cell(a: dict[str, Any] | None) -> str:
    if a is None:
        return "not run"
    if a["auc"]["mean"] is None:
        return "does not fit" if any("too small" in e for e in a["errors"]) else "failed"
    d = a["paired_delta"]
    delta = f" / {d['mean']:+.4f} ± {d['std']:.4f}" if d["mean"] is not None else ""
    return f"{a['auc']['mean']:.4f} ± {a['auc']['std']:.4f}{delta}"


def markdown_table(aggs: list[dict[str, Any]], verdict: dict[str, Any],
                   datasets: dict[str, Any]) -> str:
    """Per dataset, layouts x budgets: test AUC mean ± std / paired Δ vs per_feature full ± std."""
    lines: list[str] = []
    for dataset in sorted({a["dataset"] for a in aggs}):
        rows = [a for a in aggs if a["dataset"] == dataset]
        fractions = sorted({a["fraction"] for a in rows if a["layout"] != REFERENCE},
                           reverse=True)
        full = datasets.get(dataset, {}).get("per_feature_params")
        seeds = datasets.get(dataset, {}).get("seeds")
        lines += [f"**{dataset}** (per-feature full: {full:,} params; seeds {seeds}; cell: test "
                  "AUC mean ± std / paired Δ vs per_feature full ± std)", "",
                  "| layout | " + " | ".join(
                      f"{fraction_label(f)} ({int(full * f):,})" if full else fraction_label(f)
                      for f in fractions) + " |",
                  "|---|" + "---:|" * len(fractions)]
        for layout in [*LAYOUTS, REFERENCE]:
            cells = {round(a["fraction"], 8): a for a in rows if a["layout"] == layout}
            if not cells:
                continue
            if layout == REFERENCE:
                ref = next(iter(cells.values()))
                lines.append(f"| per_feature full + first-order term ({ref['params']:,} params)"
                             f" | {_cell(ref)} |" + " |" * (len(fractions) - 1))
                continue
            lines.append(f"| {layout} | " + " | ".join(
                _cell(cells.get(round(f, 8))) for f in fractions) + " |")
        lines.append("")
    lines.append(f"Target: at {fraction_label(TARGET_FRACTION)} of the per-feature parameter "
                 f"count, {' or '.join(TARGET_LAYOUTS)} within {TARGET_MAX_LOSS} AUC of "
                 f"per_feature at full size (mean over seeds) on {', '.join(TARGET_DATASETS)}.")
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
            pdt = (f", paired Δ {pd['mean']:+.4f} ± {pd['std']:.4f}"
                   if pd["mean"] is not None else "")
            parts.append(f"{layout} {lv['auc']:.4f} (loss {lv['auc_loss']:+.4f}{pdt}) "
                         f"{'within' if lv['met'] else 'outside'}")
        verdict_text = ("target met" if v["met"] else "target missed") if v["judged"] \
            else "not judged"
        lines.append(f"- **{dataset}**: baseline {v['baseline_auc']:.4f} ± "
                     f"{v['baseline_auc_std']:.4f} ({v['baseline_params']:,} params); "
                     + "; ".join(parts) + f" -> {verdict_text}")
    return "\n".join(lines)


def load_previous(path: Path) -> list[Run]:
    if not path.is_file():
        return []
    raw = json.loads(path.read_text())
    names = set(Run.__dataclass_fields__)
    return [Run(**{k: v for k, v in r.items() if k in names}) for r in raw.get("runs", [])]


def write_results(path: Path, runs: list[Run], meta: dict[str, Any]) -> dict[str, Any]:
    aggs = aggregate(runs)
    verdict = verdicts(aggs)
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
    # --quick is a smoke check: its files go to the temp dir, not over the committed results.
    results = Path(tempfile.gettempdir()) if args.quick else RESULTS
    args.out = args.out or results / f"layouts{suffix}.json"
    args.png = args.png or results / f"layouts{suffix}_pareto.png"
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
    # Failed runs of the datasets run now are retried; other datasets' failures stay on record.
    runs = [r for r in runs if r.error is None or r.dataset not in datasets]
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
        reference = ships_first_order(config) and "per_feature" in layouts
        meta["datasets"][name] = {"config": ds.config, "config_text": config.read_text(),
                                  "data": ds.data, "notes": ds.notes, "seeds": ds_seeds,
                                  "split": list(ds.by_order) if ds.by_order else "config",
                                  "overrides": overrides, "prepared": str(prepared),
                                  "per_feature_params": full,
                                  "prepare_seconds": time.perf_counter() - t0}
        print(f"[{name}] per-feature parameter count {full:,} (prepared in "
              f"{time.perf_counter() - t0:.1f} s)", flush=True)
        for fraction in fractions:
            budget = max(1, int(full * fraction))
            grid = [*layouts, REFERENCE] if reference and fraction == 1.0 else layouts
            for layout in grid:
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
    print(markdown_table(doc["aggregates"], doc["target"], doc["datasets"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
