"""Training throughput: the TorchRec trainer (DMP, fused row-wise Adagrad in backward, TorchRec's
train pipeline) against a plain-PyTorch DLRM of the same shape (nn.EmbeddingBag per feature with
sparse gradients and Adagrad, Adam for the MLPs; DDP over gloo for two processes), on the same
synthetic Criteo batches; plus thread, loop and sharding variants of the TorchRec run and a
profile of one and two processes by where the time goes.

    python bench/bench_training.py [--rows 1000000] [--steps 100] [--quick] [--profile]

Writes bench/results/training.json (and training_profile.json with --profile). Each repeat of
each variant is a fresh launch that warms up and then times `--steps` steps (batch fetch
included); the figure is the median over repeats, interleaved across variants."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from torch import nn  # noqa: E402

WARMUP = 10
# The model the figures and the plain-PyTorch copy measure: synthetic_dlrm.toml's DLRM at width
# 16 on Criteo's schema without the first-order term (the config's setting until it shipped the
# term fitted first and width 32), so that results stay comparable across runs.
MODEL = ['data.schema="configs/criteo.toml"', "layout.dim=16", "model.first_order=false",
         "train.first_order_epochs=0"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# name -> (kind, processes, threads per process, TorchRec train pipeline, sharding)
VARIANTS: dict[str, tuple[str, int, int, bool, str]] = {
    "plain_1proc": ("plain", 1, 1, False, ""),
    "torchrec_1proc": ("torchrec", 1, 1, True, ""),
    "torchrec_1proc_plainloop": ("torchrec", 1, 1, False, ""),
    "plain_1proc_2threads": ("plain", 1, 2, False, ""),
    "torchrec_1proc_2threads": ("torchrec", 1, 2, True, ""),
    "plain_2proc": ("plain", 2, 1, False, ""),
    "torchrec_2proc": ("torchrec", 2, 1, True, ""),
    "torchrec_2proc_plainloop": ("torchrec", 2, 1, False, ""),
    "torchrec_2proc_table_wise": ("torchrec", 2, 1, True, "table_wise"),
    "torchrec_2proc_column_wise": ("torchrec", 2, 1, True, "column_wise"),
    "torchrec_2proc_small_data_parallel": ("torchrec", 2, 1, True, "small_data_parallel"),
}
SMALL_TABLE_ROWS = 10_000
RATIOS = (
    ("torchrec_over_plain_1proc", "torchrec_1proc", "plain_1proc"),
    ("torchrec_over_plain_1proc_2threads", "torchrec_1proc_2threads", "plain_1proc_2threads"),
    ("torchrec_over_plain_2proc", "torchrec_2proc", "plain_2proc"),
    ("pipeline_over_plainloop_1proc", "torchrec_1proc", "torchrec_1proc_plainloop"),
    ("pipeline_over_plainloop_2proc", "torchrec_2proc", "torchrec_2proc_plainloop"),
    ("torchrec_2threads_over_1thread", "torchrec_1proc_2threads", "torchrec_1proc"),
    ("torchrec_2proc_over_1proc", "torchrec_2proc", "torchrec_1proc"),
)


def _sharding_overrides(sharding: str, prepared: Path) -> list[str]:
    """`small_data_parallel`: tables under SMALL_TABLE_ROWS rows replicated on every rank (no
    all-to-all for them), the rest table-wise; otherwise one sharding type for every table."""
    if not sharding:
        return []
    if sharding != "small_data_parallel":
        return [f'sharding.default=["{sharding}"]']
    from plexrec.features.cache import PreparedData

    data = PreparedData.open(prepared)
    small = [n for n in data.sparse_names if data.cardinality(n) < SMALL_TABLE_ROWS]
    return ['sharding.default=["table_wise"]',
            *(f'sharding.tables.t_{n}=["data_parallel"]' for n in small)]


def _config(prepared: Path, batch_size: int, run_dir: Path, pipeline: bool = True,
            sharding: str = "") -> dict[str, Any]:
    from plexrec.training.config import load_config

    loop = "true" if pipeline else "false"
    cfg = load_config(REPO / "configs" / "synthetic_dlrm.toml", [
        *MODEL, f"data.batch_size={batch_size}", "mlflow.enabled=false", f"train.run_dir={run_dir}",
        f"train.pipeline={loop}", *_sharding_overrides(sharding, prepared)])
    raw = cfg.to_dict()
    return {"config": raw, "source": cfg.source, "prepared_dir": str(prepared),
            "run_dir": str(run_dir)}


class PlainLayout(nn.Module):
    """One nn.EmbeddingBag (sparse gradients) per feature; forward(kjt) -> {feature: [B, dim]}."""

    def __init__(self, names: list[str], cards: list[int], dim: int) -> None:
        super().__init__()
        self.names = names
        self.bags = nn.ModuleList(nn.EmbeddingBag(c, dim, mode="sum", sparse=True)
                                  for c in cards)
        for bag, c in zip(self.bags, cards, strict=True):
            nn.init.uniform_(bag.weight, -(1 / c) ** 0.5, (1 / c) ** 0.5)

    def forward(self, kjt: Any) -> dict[str, torch.Tensor]:
        values, lengths = kjt.values(), kjt.lengths()
        batch = kjt.stride()
        bounds = kjt.offset_per_key()
        out = {}
        for j, (name, bag) in enumerate(zip(self.names, self.bags, strict=True)):
            lens = lengths[j * batch:(j + 1) * batch]
            offsets = torch.zeros(batch, dtype=torch.long)
            offsets[1:] = torch.cumsum(lens, 0)[:-1]
            out[name] = bag(values[bounds[j]:bounds[j + 1]], offsets)
        return out


def _timed(step: Any, batches: Any, steps: int, repeats: int, examples: int) -> list[float]:
    it = iter(batches)
    for _ in range(WARMUP):
        step(next(it))
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step(next(it))
        rates.append(steps * examples / (time.perf_counter() - start))
    return rates


def _forever(loader: Any) -> Any:
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def _torchrec_worker(rank: int, world: int, port: int, spec: dict, steps: int, repeats: int,
                     out: dict, profile: bool, threads: int) -> None:
    """The trainer's own steps: TorchRec's train pipeline, or the plain loop, as configured."""
    from plexrec.training.trainer import RunSpec, Trainer

    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    trainer = Trainer(RunSpec(**spec))
    trainer._setup()
    trainer.steps.start(_forever(trainer.train_loader))

    def step(_batch: Any = None) -> None:
        trainer.steps.next()

    batch_size = trainer.cfg.data.batch_size
    out[rank] = _timed(step, itertools.repeat(None), steps, repeats, batch_size * world)
    if rank == 0:
        out["pipelined"] = trainer.steps.pipelined_modules
        out["plan"] = plan_types(trainer.plan)
    if profile:
        out[f"profile_{rank}"] = _profile(step, trainer.train_loader, 20)
    dist.destroy_process_group()


def plan_types(plan: Any) -> dict[str, str]:
    """table -> the sharding type the planner (or the config's constraint) chose."""
    from plexrec.training.sharding import plan_to_json

    return {table: str(entry["sharding_type"]) for tables in plan_to_json(plan).values()
            for table, entry in tables.items()}


# Where a profiled op's self time goes, by its name (first match wins).
CATEGORIES = (
    ("communication", ("all_to_all", "alltoall", "allreduce", "all_reduce", "gloo", "c10d",
                       "_dist]", "wait", "barrier", "broadcast", "allgather")),
    ("embedding look-up and update", ("fbgemm", "[lookup]", "embedding", "bounds_check",
                                      "segment", "jagged", "permute", "sparse")),
    ("interaction", ("bmm", "Bmm", "index_select", "aten::cat", "stack", "transpose",
                     "flatten")),
    ("MLPs and dense optimizer", ("addmm", "aten::mm", "relu", "threshold", "Adam", "linear",
                                  "sigmoid", "binary_cross_entropy", "aten::t")),
)


def _profile(step: Any, loader: Any, n: int) -> dict[str, Any]:
    """Self CPU time of `n` steps by category, and the batch fetch timed alone (the loader builds
    the batches the steps consume; in the steps it is part of "other")."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    with prof(activities=[ProfilerActivity.CPU]) as p:
        start = time.perf_counter()
        for _ in range(n):
            step()
        wall = time.perf_counter() - start
    totals: dict[str, float] = {}
    for event in p.key_averages():
        category = next((c for c, keys in CATEGORIES if any(k in event.key for k in keys)),
                        "other")
        totals[category] = totals.get(category, 0.0) + event.self_cpu_time_total / 1e6
    batches = _forever(loader)
    start = time.perf_counter()
    for _ in range(n):
        next(batches)
    return {"steps": n, "wall_seconds_per_step": wall / n,
            "data_loading_seconds_per_step": (time.perf_counter() - start) / n,
            "self_seconds_per_step": {k: v / n for k, v in sorted(totals.items(),
                                                                 key=lambda kv: -kv[1])},
            "top_ops": p.key_averages().table(sort_by="self_cpu_time_total",
                                              row_limit=15).splitlines()}


def _plain_worker(rank: int, world: int, port: int, spec: dict, steps: int, repeats: int,
                  out: dict, profile: bool, threads: int) -> None:
    import torch.nn.functional as F

    from plexrec.features.batching import BatchLoader
    from plexrec.features.cache import PreparedData
    from plexrec.models.dlrm import DLRM
    from plexrec.training.config import parse_config
    from plexrec.training.tasks import task_for
    from plexrec.training.trainer import training_view

    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    cfg = parse_config(spec["config"], spec["source"])
    cache = PreparedData.open(spec["prepared_dir"])
    data, splits = training_view(cfg, task_for(cfg, cache), cache)
    names = list(data.sparse_names)
    dim = int(cfg.layout.get("dim", 16))
    torch.manual_seed(0)
    model: nn.Module = DLRM(PlainLayout(names, [data.cardinality(n) for n in names], dim), names,
                            dim, len(data.dense_names), cfg.model.bottom_mlp, cfg.model.top_mlp)
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model)
    sparse = [p for n, p in model.named_parameters() if ".bags." in n]
    dense = [p for n, p in model.named_parameters() if ".bags." not in n]
    emb_opt = torch.optim.Adagrad(sparse, lr=cfg.optim.embedding_lr)
    dense_opt = torch.optim.Adam(dense, lr=cfg.optim.dense_lr)
    loader = BatchLoader(data, splits.train, cfg.data.batch_size, shuffle=True,
                         seed=cfg.train.seed, rank=rank, world_size=world, drop_last=True)

    def step(batch: Any) -> None:
        loss = F.binary_cross_entropy_with_logits(
            model(batch.dense_features, batch.sparse_features), batch.labels)
        loss.backward()
        emb_opt.step()
        dense_opt.step()
        emb_opt.zero_grad()
        dense_opt.zero_grad()

    out[rank] = _timed(step, _forever(loader), steps, repeats, cfg.data.batch_size * world)
    dist.destroy_process_group()


def measure(variant: str, work: Path, prepared: Path, batch_size: int, steps: int,
            profile: bool = False) -> dict[str, Any]:
    """One fresh launch of `variant`: its timed window (rank 0) and what it ran with."""
    kind, world, threads, pipeline, sharding = VARIANTS[variant]
    spec = _config(prepared, batch_size, work / "run", pipeline, sharding)
    worker = _torchrec_worker if kind == "torchrec" else _plain_worker
    os.environ["OMP_NUM_THREADS"] = str(threads)
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(worker, args=(world, _free_port(), spec, steps, 1, out, profile, threads),
                 nprocs=world, join=True)
        result = dict(out)
    entry: dict[str, Any] = {"windows": result[0]}
    for key in ("pipelined", "plan"):
        if key in result:
            entry[key] = result[key]
    profiles = {f"rank{r}": result[f"profile_{r}"] for r in range(world)
                if f"profile_{r}" in result}
    if profiles:
        entry["profile"] = profiles
    return entry


def prepare_data(rows: int, work: Path) -> Path:
    from plexrec.features.prepare import prepare
    from plexrec.features.schema import load_schema
    from plexrec.features.synth import write_criteo

    work.mkdir(parents=True, exist_ok=True)
    raw = work / f"synth_criteo_{rows}.tsv"
    if not raw.exists():
        write_criteo(raw, rows=rows, seed=0, progress=False)
    result = prepare(load_schema(REPO / "configs" / "criteo.toml"), raw,
                     work / f"prepared_{rows}", progress=False)
    return Path(result.out_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--steps", type=int, default=100, help="steps per timed window")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--work", type=Path,
                        default=Path(tempfile.gettempdir()) / "plexrec-bench-training")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "training.json")
    parser.add_argument("--quick", action="store_true", help="100k rows, 10-step windows")
    parser.add_argument("--profile", action="store_true",
                        help="profile torchrec_1proc and torchrec_2proc by category")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated subset of " + ", ".join(VARIANTS))
    args = parser.parse_args(argv)
    unknown = sorted(set(args.variants.split(",")) - set(VARIANTS))
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)}")
    if args.quick:
        args.rows, args.steps = min(args.rows, 100_000), 10
    start = time.perf_counter()
    prepared = prepare_data(args.rows, args.work)
    print(f"data: {args.rows} rows prepared in {prepared} "
          f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    wanted = [v for v in VARIANTS if v in args.variants.split(",")]
    windows: dict[str, list[float]] = {v: [] for v in wanted}
    details: dict[str, dict[str, Any]] = {}
    profiles: dict[str, Any] = {}
    # Repeats are separate launches, interleaved across variants, so a burst of load from other
    # processes on the machine hits all variants alike rather than one of them.
    for repeat in range(args.repeats):
        for variant in wanted:
            entry = measure(variant, args.work, prepared, args.batch_size, args.steps,
                            profile=args.profile and repeat == 0
                            and variant in ("torchrec_1proc", "torchrec_2proc"))
            windows[variant] += entry.pop("windows")
            if "profile" in entry:
                profiles[variant] = entry.pop("profile")
            details[variant] = entry
            print(f"repeat {repeat}: {variant:36s} {windows[variant][-1]:>10,.0f} examples/s",
                  file=sys.stderr)
    results = {v: {"examples_per_sec": statistics.median(w), "windows": w, **details[v]}
               for v, w in windows.items()}
    rate = {v: float(r["examples_per_sec"]) for v, r in results.items()}
    for variant, value in rate.items():
        print(f"{variant:36s} median {value:>10,.0f} examples/s", file=sys.stderr)
    ratios: dict[str, Any] = {name: rate[a] / rate[b] for name, a, b in RATIOS
                              if a in rate and b in rate}
    two_cores = [v for v in rate if VARIANTS[v][0] == "torchrec"
                 and VARIANTS[v][1] * VARIANTS[v][2] == 2]
    if two_cores and "torchrec_1proc" in rate:
        best = max(two_cores, key=rate.__getitem__)
        ratios["best_two_core_variant"] = best
        ratios["best_two_core_over_1proc_1thread"] = rate[best] / rate["torchrec_1proc"]
    planner = results.get("torchrec_2proc", {}).get("plan")
    report = {"rows": args.rows, "batch_size": args.batch_size, "steps": args.steps,
              "repeats": args.repeats, "model": "dlrm per_feature dim 16",
              "variants": {v: dict(zip(("kind", "processes", "threads_per_process",
                                        "train_pipeline", "sharding"), VARIANTS[v], strict=True))
                           for v in wanted},
              "results": results, "ratios": ratios,
              "planner_2proc_sharding_types": sorted(set(planner.values())) if planner else None,
              "targets": {"torchrec_over_plain_1proc": 2.0, "torchrec_2proc_over_1proc": 1.7,
                          "best_two_core_over_1proc_1thread": 1.6},
              "cpu_count": os.cpu_count(), "load_average_at_end": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    if profiles:
        args.out.with_name(args.out.stem + "_profile.json").write_text(
            json.dumps(profiles, indent=2) + "\n")
        for variant, ranks in profiles.items():
            p0 = ranks["rank0"]
            print(f"{variant} rank 0: {p0['wall_seconds_per_step'] * 1e3:.1f} ms/step; batch "
                  f"fetch alone {p0['data_loading_seconds_per_step'] * 1e3:.1f} ms; " + ", ".join(
                      f"{k} {v * 1e3:.1f} ms" for k, v in p0["self_seconds_per_step"].items()),
                  file=sys.stderr)
    print(json.dumps({"ratios": ratios}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
