"""`plexrec tune`: argument parsing only; the work is done by training.tune."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from plexrec.cli.train import _finite


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune", help="search hyperparameters with Optuna (each trial a normal training run)",
        description="Search a space of run-config keys with a seeded TPE sampler and a median\n"
        "pruner on the validation primary metric. Trials are MLflow child runs of one parent;\n"
        "the study (SQLite), the trials' runs, the winning TOML and a final training of it\n"
        "(test metrics) go to <train.runs_root>/<experiment>/tune-<name>. Prints one JSON line.")
    p.add_argument("--config", required=True, type=Path, help="base run config TOML")
    p.add_argument("--space", required=True, type=Path,
                   help='search space TOML: [params."optim.embedding_lr"] kind = "float" | '
                   '"int" | "categorical", low/high/log/step or choices; optional [study] '
                   "seed, sampler_startup_trials, prune, pruner_startup_trials, "
                   "pruner_warmup_steps")
    p.add_argument("--trials", required=True, type=int,
                   help="finished trials wanted (COMPLETE, PRUNED or FAIL, earlier sessions "
                   "of the study included)")
    p.add_argument("--name", help="the study's name (default: a new time-stamped one); an "
                   "existing name continues that study")
    p.add_argument("--resume", action="store_true",
                   help="continue a study: --name's, else the experiment's newest")
    p.add_argument("--nproc", type=int, default=1,
                   help="processes per trial; pruning needs 1, so N > 1 is refused unless the "
                   "space sets [study] prune = false (then trials run without the pruner)")
    p.add_argument("--data", help="raw input file/dir or a prepared cache (as for train)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a base config field for every trial, e.g. train.epochs=2")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from plexrec.training.tune import TuneOptions, run_tune

    result = run_tune(TuneOptions(
        config=args.config, space=args.space, trials=args.trials, name=args.name,
        resume=args.resume, nproc=args.nproc, data=args.data, overrides=args.overrides))
    print(json.dumps(_finite(result), allow_nan=False, default=str), flush=True)
    return 0
