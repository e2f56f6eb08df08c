"""One pass over raw input -> the prepared cache (layout in docs/DESIGN.md).

Vocabulary ids depend on global frequencies, which are only known at the end, so each chunk's
values are written as chunk-local codes and remapped once at the end with vectorised per-chunk
look-up tables. Every value gets an id here; which ones a model keeps (`min_count`) is decided
per run from its training rows (features/training_view.py). Every large array goes through
files, so memory stays bounded by the chunk size plus the vocabularies."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from plexrec.features.derive import derive_values, derived_column
from plexrec.features.encode import split_multi_hot, transform_dense
from plexrec.features.errors import ConfigError, DataError
from plexrec.features.hashing import hash_strings
from plexrec.features.locks import exclusive
from plexrec.features.progress import Progress
from plexrec.features.readers import LINE_COLUMN, ReadStats, input_files, read_chunks
from plexrec.features.schema import Feature, Schema
from plexrec.features.schema_toml import schema_to_toml
from plexrec.features.strings import as_strings

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
DEFAULT_CHUNK_ROWS = 100_000
_COPY_ROWS = 1 << 22


# The splits a row can belong to, as stored in split.npy, and the split column's spellings.
SPLITS = ("train", "val", "test")
SPLIT_NAMES = {"train": 0, "training": 0, "val": 1, "valid": 1, "validation": 1, "test": 2}


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


def hash_inputs(files: Iterable[Path], progress: bool = False) -> str:
    """sha256 over the names, sizes and full contents (streamed) of the input files: a touched but
    unchanged file keeps its hash, an edited one with the same size and mtime does not."""
    files = list(files)
    digest = hashlib.sha256()
    total = sum(f.stat().st_size for f in files)
    with Progress("hash input", total=total, unit="B", enabled=progress, unit_scale=True,
                  leave=False) as bar:
        for f in files:
            digest.update(f"{f.name}\0{f.stat().st_size}\0".encode())
            with open(f, "rb") as fh:
                while block := fh.read(1 << 24):
                    digest.update(block)
                    bar.update(len(block))
    return digest.hexdigest()


class _Spool:
    """An append-only raw binary file of one dtype; becomes a .npy (or a memmap) at the end."""

    def __init__(self, path: Path, dtype: np.dtype | type) -> None:
        self.path, self.dtype, self.count = path, np.dtype(dtype), 0
        self._fh: BinaryIO | None = open(path, "wb")  # noqa: SIM115

    def write(self, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr, dtype=self.dtype)
        assert self._fh is not None
        arr.tofile(self._fh)
        self.count += arr.size

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def memmap(self) -> np.ndarray:
        self.close()
        if self.count == 0:
            return np.zeros(0, dtype=self.dtype)
        return np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.count,))

    def to_npy(self, dest: Path, shape: tuple[int, ...]) -> None:
        """Header + the raw bytes streamed after it: no copy of the array in memory."""
        self.close()
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": shape}
        with open(dest, "wb") as out, open(self.path, "rb") as src:
            np.lib.format.write_array_header_1_0(out, header)
            shutil.copyfileobj(src, out, 1 << 24)
        self.path.unlink()


class _ChunkVocab:
    """Vocabulary collection without a global Python dict. Each chunk is factorized on its own
    (its codes go to the spool); its unique values wait as a compact Arrow string array with
    their counts until enough are pending, then one Arrow hash pass folds them into the running
    dictionary, leaving per chunk only an int32 map local code -> dictionary index. Folding when
    the pending values outnumber the dictionary keeps the total hashing work linear."""

    _MIN_FOLD = 1 << 20

    def __init__(self) -> None:
        self.dictionary = pa.array([], type=pa.string())
        self.freq = np.zeros(0, dtype=np.int64)
        self.maps: list[np.ndarray] = []
        self.sizes: list[int] = []
        self._pending: list[tuple[pa.Array, np.ndarray]] = []
        self._pending_len = 0

    def codes(self, strings: pd.Series) -> np.ndarray:
        """Chunk-local code per value; missing and empty strings -> -1."""
        local, uniques = pd.factorize(strings, use_na_sentinel=True)
        local = local.astype(np.int64, copy=False)
        arrow = pa.array(uniques, type=pa.string())
        empty = np.flatnonzero(pc.equal(arrow, "").to_numpy(zero_copy_only=False))
        if len(empty):
            local[local == empty[0]] = -1
        counts = np.bincount(local[local >= 0], minlength=len(arrow)).astype(np.int64)
        self._pending.append((arrow, counts))
        self._pending_len += len(arrow)
        self.sizes.append(len(local))
        if self._pending_len >= max(len(self.dictionary), self._MIN_FOLD):
            self._fold()
        return local

    def _fold(self) -> None:
        if not self._pending:
            return
        parts = [self.dictionary] + [a for a, _ in self._pending]
        encoded = pc.dictionary_encode(pa.chunked_array(parts, type=pa.string())
                                       .combine_chunks())
        index = encoded.indices.to_numpy(zero_copy_only=False)
        weights = np.concatenate([self.freq] + [c for _, c in self._pending])
        self.freq = np.bincount(index, weights=weights,
                                minlength=len(encoded.dictionary)).astype(np.int64)
        start = len(self.dictionary)
        for arrow, _ in self._pending:
            self.maps.append(index[start:start + len(arrow)].astype(np.int32))
            start += len(arrow)
        self.dictionary = encoded.dictionary
        self._pending, self._pending_len = [], 0

    def lookups(self) -> tuple[list[np.ndarray], pa.Array, np.ndarray]:
        """Per chunk: local code + 1 -> final id (index 0 = missing -> 0); plus every value and
        its count in id order (descending count, then value). No value is dropped here:
        `min_count` is a training statistic, applied per run (features/training_view.py)."""
        self._fold()
        freq = self.freq
        keep = np.arange(len(freq))
        table = pa.table({"neg": pa.array(-freq[keep], type=pa.int64()),
                          "value": self.dictionary.take(pa.array(keep, type=pa.int64()))})
        order = pc.sort_indices(table, sort_keys=[("neg", "ascending"), ("value", "ascending")])
        kept = keep[order.to_numpy(zero_copy_only=False)]
        final_of_global = np.zeros(len(freq), dtype=np.int64)
        final_of_global[kept] = np.arange(1, len(kept) + 1, dtype=np.int64)
        lookups = []
        for m in self.maps:
            lut = np.zeros(len(m) + 1, dtype=np.int64)
            lut[1:] = final_of_global[m]
            lookups.append(lut)
        values = self.dictionary.take(pa.array(kept, type=pa.int64()))
        return lookups, values, freq[kept]


class _SparseWriter:
    """Collects one sparse feature: values (chunk-local codes or hashed ids) and, if multi-hot,
    lengths; `finish` remaps to final ids and writes values/offsets/counts/vocab."""

    def __init__(self, feature: Feature, tmp: Path) -> None:
        self.feature = feature
        self.values = _Spool(tmp / f"{feature.name}.values.raw", np.int64)
        self.lengths = (_Spool(tmp / f"{feature.name}.lengths.raw", np.int32)
                        if feature.kind == "multi_hot" else None)
        self.vocab = _ChunkVocab() if feature.uses_vocabulary else None
        self.hash_counts = (np.zeros(feature.hash_size, dtype=np.int64)
                            if feature.hash_size is not None else None)

    def _ids(self, strings: pd.Series) -> np.ndarray:
        if self.vocab is not None:
            return self.vocab.codes(strings)
        present = strings.notna().to_numpy()
        ids = np.zeros(len(strings), dtype=np.int64)
        if present.any():
            assert self.feature.hash_size is not None
            ids[present] = hash_strings(strings[present].tolist()) % self.feature.hash_size
        assert self.hash_counts is not None
        self.hash_counts += np.bincount(ids, minlength=len(self.hash_counts))
        return ids

    def add(self, raw: pd.Series) -> None:
        if self.lengths is None:
            direct = self.vocab is not None and pd.api.types.is_string_dtype(raw.dtype)
            self.values.write(self._ids(raw if direct else as_strings(raw)))
        else:
            tokens, lengths = split_multi_hot(self.feature, raw)
            self.values.write(self._ids(tokens))
            self.lengths.write(lengths)

    def _remap(self, out: Path) -> tuple[int, np.ndarray]:
        """Chunk-local codes -> final ids, chunk by chunk; writes the vocabulary parquet."""
        assert self.vocab is not None
        raw = self.values.memmap()
        total = len(raw)
        lookups, values, freq = self.vocab.lookups()
        cardinality = len(values) + 1
        counts = np.zeros(cardinality, dtype=np.int64)
        counts[1:] = freq
        counts[0] = total - counts[1:].sum()
        final = np.lib.format.open_memmap(out / "sparse" / f"{self.feature.name}.values.npy",
                                          mode="w+", dtype=np.int64, shape=(total,))
        start = 0
        for lut, size in zip(lookups, self.vocab.sizes, strict=True):
            for s in range(start, start + size, _COPY_ROWS):
                e = min(s + _COPY_ROWS, start + size)
                final[s:e] = lut[np.asarray(raw[s:e]) + 1]
            start += size
        final.flush()
        del final, raw
        self.values.path.unlink()
        pq.write_table(pa.table({"value": values,
                                 "id": pa.array(np.arange(1, cardinality), type=pa.int64())}),
                       out / "vocab" / f"{self.feature.name}.parquet")
        return cardinality, counts

    def finish(self, out: Path, num_rows: int) -> dict[str, object]:
        name, f = self.feature.name, self.feature
        if self.vocab is not None:
            cardinality, counts = self._remap(out)
        else:
            assert self.hash_counts is not None
            cardinality, counts = len(self.hash_counts), self.hash_counts
            self.values.to_npy(out / "sparse" / f"{name}.values.npy", (self.values.count,))
        np.save(out / "stats" / f"{name}.counts.npy", counts)
        offsets = np.lib.format.open_memmap(out / "sparse" / f"{name}.offsets.npy", mode="w+",
                                            dtype=np.int64, shape=(num_rows + 1,))
        offsets[0] = 0
        if self.lengths is None:
            for s in range(0, num_rows, _COPY_ROWS):
                e = min(s + _COPY_ROWS, num_rows)
                offsets[s + 1:e + 1] = np.arange(s + 1, e + 1, dtype=np.int64)
        else:
            lengths = self.lengths.memmap()
            running = 0
            for s in range(0, num_rows, _COPY_ROWS):
                part = np.cumsum(lengths[s:s + _COPY_ROWS], dtype=np.int64) + running
                offsets[s + 1:s + 1 + len(part)] = part
                running = int(part[-1]) if len(part) else running
            del lengths
            self.lengths.path.unlink()
        offsets.flush()
        return {"name": name, "kind": f.kind, "side": f.side, "cardinality": int(cardinality),
                "max_length": f.max_length}


def _split_codes(column: str, df: pd.DataFrame, on_bad_row: str, stats: ReadStats
                 ) -> tuple[pd.DataFrame, np.ndarray]:
    """Each row's split from its split-column value; any other value is a bad row."""
    names = df[column].astype("string").str.strip().str.lower()
    codes = names.map(SPLIT_NAMES)
    bad = codes.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        if on_bad_row == "error":
            raise DataError(f"split value {df[column].iloc[i]!r} is not one of "
                            f"{', '.join(sorted(SPLIT_NAMES))}", path=df.attrs.get("path"),
                            line=int(df[LINE_COLUMN].iloc[i]), field=column)
        stats.skip(f"{column}: not a split name", int(bad.sum()))
        attrs = df.attrs
        df = df.loc[~bad].reset_index(drop=True)
        df.attrs = attrs
        codes = codes[~bad]
    return df, codes.to_numpy(dtype=np.int8)


def _derive(schema: Schema, df: pd.DataFrame, on_bad_row: str, stats: ReadStats
            ) -> tuple[pd.DataFrame, np.ndarray]:
    """Adds each derived feature's values as a column (`derived_column`); a row whose source
    value cannot be derived from (a malformed timestamp, a non-number to bucketize) is a bad
    row. Returns the frame and the mask of the input rows it kept."""
    keep = np.ones(len(df), dtype=bool)
    derived = {}
    for f in schema.sparse:
        if f.derive is None:
            continue
        values, bad = derive_values(f.derive, df, f.column)
        if bad.any():
            i = int(np.argmax(bad))
            if on_bad_row == "error":
                raise DataError(f"cannot derive {f.derive.kind} of feature {f.name!r} from "
                                f"{df[f.column].iloc[i]!r}", path=df.attrs.get("path"),
                                line=int(df[LINE_COLUMN].iloc[i]), field=f.column)
            stats.skip(f"{f.name}: cannot derive {f.derive.kind}", int((bad & keep).sum()))
            keep &= ~bad
        derived[derived_column(f)] = values.to_numpy()
    if not derived:
        return df, keep
    attrs = df.attrs
    df = df.assign(**derived)
    if not keep.all():
        df = df.loc[keep].reset_index(drop=True)
    df.attrs = attrs
    return df, keep


def _labels(schema: Schema, df: pd.DataFrame) -> np.ndarray:
    y = df[schema.label.column].to_numpy(dtype=np.float64)
    if schema.label.kind == "threshold":
        return (y >= schema.label.threshold).astype(np.float32)
    bad = (y != 0) & (y != 1)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"binary label must be 0 or 1, got {float(y[i]):g}", path=df.attrs.get("path"),
                        line=int(df[LINE_COLUMN].iloc[i]), field=schema.label.column)
    return y.astype(np.float32)


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
            progress: bool = True, force: bool = False) -> PrepareResult:
    """Builds the cache in `out_dir`, or reuses it when it was built from the same input content
    (sha256) and the same schema fingerprint. A cache that skipped bad rows is not reused when
    bad rows are to stop the run: the rebuild then reports the first bad row. `input_path` is
    one input, or `Inputs` with fixed validation/test inputs or a split column."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # One writer per cache: concurrent runs of one config wait here, then reuse what the first
    # one built instead of replacing it under its feet.
    with exclusive(out_dir.parent / f".{out_dir.name}.lock"):
        return _prepare_locked(schema, input_path, out_dir, on_bad_row=on_bad_row,
                               chunk_rows=chunk_rows, progress=progress, force=force)


def _input_hash(schema: Schema, inputs: Inputs, progress: bool) -> str:
    hashes = [hash_inputs(input_files(schema, path), progress) for _, path in inputs.sources]
    if len(hashes) == 1:
        return hashes[0]
    roles = [SPLITS[code] for code, _ in inputs.sources]
    return hashlib.sha256("\n".join(f"{r}:{h}" for r, h in zip(roles, hashes, strict=True))
                          .encode()).hexdigest()


def _prepare_locked(schema: Schema, input_path: str | Path | Inputs, out_dir: Path, *,
                    on_bad_row: str, chunk_rows: int, progress: bool, force: bool
                    ) -> PrepareResult:
    start = time.perf_counter()
    inputs = _as_inputs(input_path)
    if inputs.split_column:
        schema = replace(schema, split_column=inputs.split_column)
    input_hash = _input_hash(schema, inputs, progress)
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
        meta = _build(schema, inputs, staging, tmp, on_bad_row, chunk_rows, progress)
        meta.update(schema_fingerprint=fingerprint, input_hash=input_hash)
        shutil.rmtree(tmp)
        (staging / "schema.toml").write_text(schema_to_toml(schema))
        (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        _replace_dir(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return _result_from_meta(out_dir, meta, False, time.perf_counter() - start)


def _build(schema: Schema, inputs: Inputs, out: Path, tmp: Path, on_bad_row: str,
           chunk_rows: int, progress: bool) -> dict:
    labels = _Spool(tmp / "labels.raw", np.float32)
    dense = _Spool(tmp / "dense.raw", np.float32)
    times = _Spool(tmp / "time.raw", np.int64) if schema.time_column else None
    splits = _Spool(tmp / "split.raw", np.int8) if inputs.fixed else None
    sparse = [_SparseWriter(f, tmp) for f in schema.sparse]
    stats = ReadStats()
    positives = 0.0
    rows_by_file: dict[str, int] = {}
    with Progress("prepare", unit="rows", enabled=progress, unit_scale=True) as bar:
        for code, path in inputs.sources:
            for df in read_chunks(schema, path, chunk_rows, on_bad_row, stats):
                if schema.split_column:
                    df, codes = _split_codes(schema.split_column, df, on_bad_row, stats)
                else:
                    codes = np.full(len(df), code, dtype=np.int8)
                df, kept = _derive(schema, df, on_bad_row, stats)
                codes = codes[kept]
                if not len(df):
                    continue
                y = _labels(schema, df)
                positives += float(y.sum())
                labels.write(y)
                if splits is not None:
                    splits.write(codes)
                if schema.dense:
                    dense.write(np.stack([transform_dense(f, df[f.column])
                                          for f in schema.dense], axis=1))
                if times is not None:
                    times.write(df[schema.time_column].to_numpy(dtype=np.float64)
                                .astype(np.int64))
                for w in sparse:
                    w.add(df[derived_column(w.feature) if w.feature.derive else w.feature.column])
                file = str(df.attrs.get("path", path))
                rows_by_file[file] = rows_by_file.get(file, 0) + len(df)
                bar.update(len(df))
    n = labels.count
    if n == 0:
        raise DataError(f"no rows read ({stats.skipped} skipped)", path=str(inputs.train))
    labels.to_npy(out / "labels.npy", (n,))
    dense.to_npy(out / "dense.npy", (n, len(schema.dense)))
    if times is not None:
        times.to_npy(out / "time.npy", (n,))
    split_rows: dict[str, int] = {}
    fixed: list[str] = []
    if splits is not None:
        per_code = np.bincount(splits.memmap(), minlength=3)
        split_rows = {name: int(c) for name, c in zip(SPLITS, per_code, strict=True)}
        fixed = ([name for name in SPLITS[1:] if split_rows[name]] if schema.split_column
                 else [SPLITS[code] for code, _ in inputs.sources if code])
        splits.to_npy(out / "split.npy", (n,))
    sparse_meta = [w.finish(out, n) for w in sparse]
    return {"format_version": FORMAT_VERSION, "num_rows": int(n),
            "skipped_rows": int(stats.skipped), "skipped_by_reason": stats.skipped_by_reason,
            "rows_by_file": rows_by_file, "split_rows": split_rows, "fixed_splits": fixed,
            "join_unmatched": stats.unmatched,
            "dense": [f.name for f in schema.dense], "sparse": sparse_meta,
            "label_rate": positives / n, "has_time": times is not None,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
