"""Parallel preparation: each input file is cut into byte ranges at line starts, one per worker
process, and each range is collected on its own (features/cache_writer.Collector). The parts
come back in input order and merge into exactly the bytes one process writes: vocabularies
are unions of the parts' dictionaries, and ids are only assigned after the merge.

Only formats whose reader reads byte ranges can be sharded (Criteo's TSV); the others prepare
in one process."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from plexrec.features.cache_writer import Collector
from plexrec.features.errors import DataError, PlexrecError
from plexrec.features.reader_registry import reader_for
from plexrec.features.readers import read_chunks
from plexrec.features.readers.delimited import count_lines
from plexrec.features.schema import Schema


@dataclass(frozen=True)
class Shard:
    """Bytes [start, end) of one input file of split `code`; both ends are line starts."""

    code: int
    path: Path
    start: int
    end: int


def line_start_at_or_after(path: Path, offset: int) -> int:
    """The first line start at or after `offset` (the file size if none)."""
    if offset <= 0:
        return 0
    with open(path, "rb") as fh:
        fh.seek(offset - 1)
        while block := fh.read(1 << 16):
            cut = block.find(b"\n")
            if cut >= 0:
                return fh.tell() - len(block) + cut + 1
    return path.stat().st_size


def plan_shards(schema: Schema, sources: list[tuple[int, Path]], workers: int
                ) -> list[Shard] | None:
    """`workers` shards per input file, in input order; None when the format cannot read
    byte ranges."""
    reader = reader_for(schema.format, schema.source)
    if not reader.ranges:
        return None
    shards = []
    for code, path in sources:
        for file in reader.files(path):
            size = file.stat().st_size
            cuts = sorted({0, size, *(line_start_at_or_after(file, size * k // workers)
                                      for k in range(1, workers))})
            shards += [Shard(code, file, a, b) for a, b in zip(cuts, cuts[1:], strict=False)]
    return shards


def collect_shard(schema: Schema, shard: Shard, tmp: Path, fixed: bool, on_bad_row: str,
                  chunk_rows: int) -> Collector:
    """One worker's pass over its shard; the collector comes back with its spools closed."""
    collector = Collector(schema, tmp, fixed)
    for df in read_chunks(schema, shard.path, chunk_rows, on_bad_row, collector.stats,
                          byte_range=(shard.start, shard.end)):
        collector.consume(df, shard.code, on_bad_row, shard.path)
    collector.close()
    return collector


def _in_file_lines(exc: DataError, shard: Shard) -> DataError:
    """A shard's error with the file's own line number (a shard counts lines from its start,
    so the workers never scan the bytes before their range)."""
    if exc.line is None or shard.start == 0 or exc.path != str(shard.path):
        return exc
    return DataError(exc.message, path=exc.path, line=exc.line + count_lines(shard.path,
                                                                             shard.start),
                     field=exc.field)


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """Fresh interpreters (spawn): the parent may hold Arrow's threads, which fork would copy
    half-way."""
    return ProcessPoolExecutor(max_workers=workers,
                               mp_context=multiprocessing.get_context("spawn"))


def collect_parallel(pool: ProcessPoolExecutor, schema: Schema, shards: list[Shard], tmp: Path,
                     fixed: bool, on_bad_row: str, chunk_rows: int) -> list[Collector]:
    """The shards' collectors in input order. A bad row stops the run with the first one in
    input order, as in one process; a worker that dies is an error naming the shard."""
    futures = [pool.submit(collect_shard, schema, shard, tmp / f"part-{i}", fixed, on_bad_row,
                           chunk_rows) for i, shard in enumerate(shards)]
    parts: list[Collector] = []
    failure: PlexrecError | None = None
    for shard, future in zip(shards, futures, strict=True):
        try:
            parts.append(future.result())
        except DataError as exc:
            failure = failure or _in_file_lines(exc, shard)
        except PlexrecError as exc:
            failure = failure or exc
        except BrokenProcessPool as exc:
            failure = failure or PlexrecError(
                f"a preparation worker died reading bytes {shard.start}-{shard.end} of "
                f"{shard.path} ({exc}); prepare with --workers 1 to see the error")
    if failure is not None:
        raise failure
    return parts
