"""Training throughput: the TorchRec trainer (DMP, fused row-wise Adagrad in backward) against a
plain-PyTorch DLRM of the same shape (nn.EmbeddingBag per feature with sparse gradients and
Adagrad, Adam for the MLPs; DDP over gloo for two processes), on the same synthetic Criteo batches.

    python bench/bench_training.py [--rows 1000000] [--steps 100] [--quick] [--profile]

Writes bench/results/training.json. Each repeat of each variant is a fresh launch that warms up
and then times `--steps` steps (batch fetch included); the figure is the median over repeats."""

from __future__ import annotations

import argparse
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(prepared: Path, batch_size: int, run_dir: Path) -> dict[str, Any]:
    from plexrec.training.config import load_config

    cfg = load_config(REPO / "configs" / "synthetic_dlrm.toml", [
        f"data.batch_size={batch_size}", "mlflow.enabled=false", f"train.run_dir={run_dir}"])
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
                     out: dict, profile: bool) -> None:
    from plexrec.training.trainer import RunSpec, Trainer

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    trainer = Trainer(RunSpec(**spec))
    trainer._setup()
    batches = _forever(trainer.train_loader)
    batch_size = trainer.cfg.data.batch_size
    rates = _timed(trainer.train_step, batches, steps, repeats, batch_size * world)
    if profile and rank == 0:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as prof

        with prof(activities=[ProfilerActivity.CPU]) as p:
            for _ in range(20):
                trainer.train_step(next(batches))
        out["profile"] = p.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    out[rank] = rates
    dist.destroy_process_group()


def _plain_worker(rank: int, world: int, port: int, spec: dict, steps: int, repeats: int,
                  out: dict, profile: bool) -> None:
    import torch.nn.functional as F

    from plexrec.features.batching import BatchLoader
    from plexrec.features.cache import PreparedData
    from plexrec.models.dlrm import DLRM
    from plexrec.training.config import parse_config
    from plexrec.training.tasks import task_for
    from plexrec.training.trainer import training_view

    torch.set_num_threads(1)
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


def measure(kind: str, world: int, spec: dict, steps: int, repeats: int,
            profile: bool = False) -> dict[str, Any]:
    worker = _torchrec_worker if kind == "torchrec" else _plain_worker
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(worker, args=(world, _free_port(), spec, steps, repeats, out, profile),
                 nprocs=world, join=True)
        result = dict(out)
    rates = result[0]
    entry = {"examples_per_sec": statistics.median(rates), "windows": rates}
    if "profile" in result:
        entry["profile"] = result["profile"]
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
    parser.add_argument("--profile", action="store_true", help="torch.profiler of TorchRec")
    parser.add_argument("--variants", default="plain_1proc,torchrec_1proc,plain_2proc,"
                        "torchrec_2proc", help="comma-separated subset to run")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.steps = min(args.rows, 100_000), 10
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    start = time.perf_counter()
    prepared = prepare_data(args.rows, args.work)
    print(f"data: {args.rows} rows prepared in {prepared} "
          f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    spec = _config(prepared, args.batch_size, args.work / "run")
    wanted = [v for v in ("plain_1proc", "torchrec_1proc", "plain_2proc", "torchrec_2proc")
              if v in args.variants.split(",")]
    windows: dict[str, list[float]] = {v: [] for v in wanted}
    profile_text = ""
    # Repeats are separate launches, interleaved across variants, so a burst of load from other
    # processes on the machine hits all variants alike rather than one of them.
    for repeat in range(args.repeats):
        for variant in wanted:
            kind, world = variant.split("_")[0], int(variant.split("_")[1][0])
            entry = measure(kind, world, spec, args.steps, 1,
                            profile=args.profile and repeat == 0 and variant == "torchrec_1proc")
            windows[variant] += entry["windows"]
            profile_text = entry.get("profile", profile_text)
            print(f"repeat {repeat}: {variant:15s} {entry['examples_per_sec']:>10,.0f} "
                  "examples/s", file=sys.stderr)
    results: dict[str, Any] = {v: {"examples_per_sec": statistics.median(w), "windows": w}
                               for v, w in windows.items()}
    for variant, entry in results.items():
        print(f"{variant:15s} median {entry['examples_per_sec']:>10,.0f} examples/s",
              file=sys.stderr)
    if profile_text:
        print(profile_text, file=sys.stderr)
    speedup = {f"{w}proc": results[f"torchrec_{w}proc"]["examples_per_sec"]
               / results[f"plain_{w}proc"]["examples_per_sec"] for w in (1, 2)
               if f"torchrec_{w}proc" in results and f"plain_{w}proc" in results}
    report = {"rows": args.rows, "batch_size": args.batch_size, "steps": args.steps,
              "repeats": args.repeats, "model": "dlrm per_feature dim 16", "results": results,
              "speedup_torchrec_over_plain": speedup, "target_1proc": 1.5,
              "cpu_threads_per_process": 1, "load_average_at_end": os.getloadavg(),
              "torchrec_1proc_profile": profile_text.splitlines()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"speedup_torchrec_over_plain": speedup}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
