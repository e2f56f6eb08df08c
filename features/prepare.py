"""`plexrec data prepare`: raw input -> the prepared cache (layout in docs/DESIGN.md), reused
while input content and schema are unchanged. The rows are collected by features/cache_writer.py,
in one process or, with `workers` > 1, by shards in parallel (features/prepare_shards.py) whose
parts merge into the same bytes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from plexrec.features.cache_writer import SPLITS, Collector
from plexrec.features.errors import ConfigError, DataError
from plexrec.features.locks import exclusive
from plexrec.features.progress import Progress
from plexrec.features.readers import input_files, read_chunks
from plexrec.features.schema import Schema
from plexrec.features.schema_toml import schema_to_toml

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
DEFAULT_CHUNK_ROWS = 100_000


@dataclass
class PrepareResult:
    out_dir: Path
    num_rows: int
    skipped_rows: int
    label_rate: float
    cardinality: dict[str, int]
    reused: bool
    input_hash: str
    seconds: float = 0.0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    rows_by_file: dict[str, int] = field(default_factory=dict)
    split_rows: dict[str, int] = field(default_factory=dict)
    join_unmatched: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Inputs:
    """What one cache is built from: the training input and optional fixed validation and test
    inputs (files or directories read with the same schema), or one input whose
    `split_column` names each row's split. Inputs are read train, then validation, then test."""

    train: Path
    valid: Path | None = None
    test: Path | None = None
    split_column: str | None = None

    def __post_init__(self) -> None:
        if self.split_column and (self.valid or self.test):
            raise ConfigError("give either a split column or valid/test inputs, not both")

    @property
    def sources(self) -> list[tuple[int, Path]]:
        return [(code, p) for code, p in enumerate((self.train, self.valid, self.test))
                if p is not None]

    def identity(self) -> list[str]:
        """What names this input set (for a default cache location)."""
        names = [str(p.resolve()) for _, p in self.sources]
        return names + ([f"split_column={self.split_column}"] if self.split_column else [])

    @property
    def fixed(self) -> bool:
        return len(self.sources) > 1 or bool(self.split_column)


def _as_inputs(input_path: str | Path | Inputs) -> Inputs:
    return input_path if isinstance(input_path, Inputs) else Inputs(Path(input_path))


HASH_BLOCK = 1 << 26


def block_digest(path: Path, offset: int) -> bytes:
    """sha256 of one HASH_BLOCK of a file."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        return hashlib.sha256(fh.read(HASH_BLOCK)).digest()


def hash_inputs(files: Iterable[Path], progress: bool = False,
                pool: Executor | None = None) -> str:
    """sha256 over the names, sizes and full contents of the input files (a touched but
    unchanged file keeps its hash, an edited one with the same size and mtime does not), as a
    hash of per-block hashes so that a pool of workers can hash the blocks in parallel; the
    value does not depend on the pool."""
    files = list(files)
    digest = hashlib.sha256()
    total = sum(f.stat().st_size for f in files)
    with Progress("hash input", total=total, unit="B", enabled=progress, unit_scale=True,
                  leave=False) as bar:
        for f in files:
            size = f.stat().st_size
            digest.update(f"{f.name}\0{size}\0".encode())
            offsets = range(0, size, HASH_BLOCK)
            blocks = (pool.map(block_digest, [f] * len(offsets), offsets) if pool is not None
                      else (block_digest(f, o) for o in offsets))
            for o, block in zip(offsets, blocks, strict=True):
                digest.update(block)
                bar.update(min(HASH_BLOCK, size - o))
    return digest.hexdigest()


def read_meta(out_dir: Path) -> dict | None:
    try:
        return json.loads((out_dir / "meta.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _result_from_meta(out_dir: Path, meta: dict, reused: bool, seconds: float) -> PrepareResult:
    return PrepareResult(out_dir=out_dir, num_rows=meta["num_rows"],
                         skipped_rows=meta["skipped_rows"], label_rate=meta["label_rate"],
                         cardinality={s["name"]: s["cardinality"] for s in meta["sparse"]},
                         reused=reused, input_hash=meta["input_hash"], seconds=seconds,
                         skipped_by_reason=meta.get("skipped_by_reason", {}),
                         rows_by_file=meta.get("rows_by_file", {}),
                         join_unmatched=meta.get("join_unmatched", {}),
                         split_rows=meta.get("split_rows", {}))


def _replace_dir(staging: Path, out_dir: Path) -> None:
    """Moves the finished cache into place; an existing directory must be a cache or empty, so
    a mistyped --out never deletes someone's files."""
    if out_dir.exists():
        if not out_dir.is_dir() or (any(out_dir.iterdir()) and read_meta(out_dir) is None):
            raise DataError("output exists and is not a prepared cache (refusing to replace it)",
                            path=str(out_dir))
        shutil.rmtree(out_dir)
    staging.rename(out_dir)


def prepare(schema: Schema, input_path: str | Path | Inputs, out_dir: str | Path, *,
            on_bad_row: str = "error", chunk_rows: int = DEFAULT_CHUNK_ROWS,
            progress: bool = True, force: bool = False, workers: int = 1) -> PrepareResult:
    """Builds the cache in `out_dir`, or reuses it when it was built from the same input content
    (sha256) and the same schema fingerprint. A cache that skipped bad rows is not reused when
    bad rows are to stop the run: the rebuild then reports the first bad row. `input_path` is
    one input, or `Inputs` with fixed validation/test inputs or a split column. `workers` > 1
    reads shards of the input in that many processes (formats that read byte ranges)."""
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # One writer per cache: concurrent runs of one config wait here, then reuse what the first
    # one built instead of replacing it under its feet.
    with exclusive(out_dir.parent / f".{out_dir.name}.lock"):
        return _prepare_locked(schema, input_path, out_dir, on_bad_row=on_bad_row,
                               chunk_rows=chunk_rows, progress=progress, force=force,
                               workers=workers)


def _input_hash(schema: Schema, inputs: Inputs, progress: bool, pool: Executor | None) -> str:
    hashes = [hash_inputs(input_files(schema, path), progress, pool)
              for _, path in inputs.sources]
    if len(hashes) == 1:
        return hashes[0]
    roles = [SPLITS[code] for code, _ in inputs.sources]
    return hashlib.sha256("\n".join(f"{r}:{h}" for r, h in zip(roles, hashes, strict=True))
                          .encode()).hexdigest()


def _prepare_locked(schema: Schema, input_path: str | Path | Inputs, out_dir: Path, *,
                    on_bad_row: str, chunk_rows: int, progress: bool, force: bool,
                    workers: int) -> PrepareResult:
    from plexrec.features.prepare_shards import worker_pool

    with worker_pool(workers) if workers > 1 else contextlib.nullcontext() as pool:
        return _prepare_with(schema, _as_inputs(input_path), out_dir, on_bad_row=on_bad_row,
                             chunk_rows=chunk_rows, progress=progress, force=force, pool=pool,
                             workers=workers)


def _prepare_with(schema: Schema, inputs: Inputs, out_dir: Path, *, on_bad_row: str,
                  chunk_rows: int, progress: bool, force: bool, pool: Executor | None,
                  workers: int) -> PrepareResult:
    start = time.perf_counter()
    if inputs.split_column:
        schema = replace(schema, split_column=inputs.split_column)
    input_hash = _input_hash(schema, inputs, progress, pool)
    fingerprint = schema.fingerprint()
    meta = read_meta(out_dir)
    if (not force and meta is not None and meta.get("format_version") == FORMAT_VERSION
            and meta.get("schema_fingerprint") == fingerprint
            and meta.get("input_hash") == input_hash
            and (on_bad_row == "skip" or meta.get("skipped_rows", 0) == 0)):
        log.info("reusing prepared cache %s (same input sha256 and schema)", out_dir)
        return _result_from_meta(out_dir, meta, True, time.perf_counter() - start)

    staging = out_dir.parent / f".{out_dir.name}.building-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    tmp = staging / "tmp"
    for sub in ("sparse", "stats", "vocab", "tmp"):
        (staging / sub).mkdir(parents=True)
    try:
        meta = _build(schema, inputs, staging, tmp, on_bad_row, chunk_rows, progress, pool,
                      workers)
        meta.update(schema_fingerprint=fingerprint, input_hash=input_hash)
        shutil.rmtree(tmp)
        (staging / "schema.toml").write_text(schema_to_toml(schema))
        (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        _replace_dir(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return _result_from_meta(out_dir, meta, False, time.perf_counter() - start)


def _collect(schema: Schema, inputs: Inputs, tmp: Path, on_bad_row: str, chunk_rows: int,
             progress: bool) -> Collector:
    collector = Collector(schema, tmp, inputs.fixed)
    with Progress("prepare", unit="rows", enabled=progress, unit_scale=True) as bar:
        for code, path in inputs.sources:
            for df in read_chunks(schema, path, chunk_rows, on_bad_row, collector.stats):
                bar.update(collector.consume(df, code, on_bad_row, path))
    return collector


def _build(schema: Schema, inputs: Inputs, out: Path, tmp: Path, on_bad_row: str,
           chunk_rows: int, progress: bool, pool: Any, workers: int) -> dict[str, Any]:
    from plexrec.features.prepare_shards import collect_parallel, plan_shards

    fixed = [SPLITS[code] for code, _ in inputs.sources if code]
    shards = plan_shards(schema, inputs.sources, workers) if pool is not None else None
    if pool is not None and shards is None:
        log.info("format %r reads whole files: preparing in one process", schema.format)
    if pool is not None and shards:
        log.info("preparing %d shards in %d processes", len(shards), workers)
        collector = Collector(schema, tmp, inputs.fixed)
        collector.absorb(collect_parallel(pool, schema, shards, tmp, inputs.fixed, on_bad_row,
                                          chunk_rows))
        meta = collector.finish(out, fixed, inputs.train, pool)
    else:
        collector = _collect(schema, inputs, tmp, on_bad_row, chunk_rows, progress)
        meta = collector.finish(out, fixed, inputs.train)
    return {"format_version": FORMAT_VERSION, **meta,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
