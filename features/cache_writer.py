"""The write side of the prepared cache (layout in docs/DESIGN.md): rows in, cache files out.

Vocabulary ids depend on global frequencies, which are only known at the end, so each chunk's
values are written as chunk-local codes and remapped once at the end with vectorised per-chunk
look-up tables. Every value gets an id here; which ones a model keeps (`min_count`) is decided
per run from its training rows (features/training_view.py). Every large array goes through
files, so memory stays bounded by the chunk size plus the vocabularies."""

from __future__ import annotations

import shutil
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from plexrec.features.derive import derive_values, derived_column
from plexrec.features.encode import split_multi_hot, transform_dense
from plexrec.features.errors import DataError
from plexrec.features.hashing import hash_strings
from plexrec.features.readers import LINE_COLUMN, ReadStats
from plexrec.features.schema import Feature, Schema
from plexrec.features.strings import as_strings

_COPY_ROWS = 1 << 22
# The splits a row can belong to, as stored in split.npy, and the split column's spellings.
SPLITS = ("train", "val", "test")
SPLIT_NAMES = {"train": 0, "training": 0, "val": 1, "valid": 1, "validation": 1, "test": 2}


class Spool:
    """An append-only raw binary file of one dtype; becomes a .npy (or a memmap) at the end."""

    def __init__(self, path: Path, dtype: np.dtype | type) -> None:
        self.path, self.dtype, self.count = path, np.dtype(dtype), 0
        self._fh: BinaryIO | None = open(path, "wb")  # noqa: SIM115

    def write(self, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr, dtype=self.dtype)
        assert self._fh is not None
        arr.tofile(self._fh)
        self.count += arr.size

    def append_file(self, other: Spool) -> None:
        """Appends another spool's contents (a worker's part) and deletes it."""
        other.close()
        assert self._fh is not None
        with open(other.path, "rb") as src:
            shutil.copyfileobj(src, self._fh, 1 << 24)
        self.count += other.count
        other.path.unlink()

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
        spools_to_npy([self], dest, shape)


def spools_to_npy(spools: list[Spool], dest: Path, shape: tuple[int, ...]) -> None:
    """One .npy of the spools' contents in order (the parts of one array), each deleted."""
    header = {"descr": np.lib.format.dtype_to_descr(spools[0].dtype), "fortran_order": False,
              "shape": shape}
    with open(dest, "wb") as out:
        np.lib.format.write_array_header_1_0(out, header)
        for spool in spools:
            spool.close()
            with open(spool.path, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 24)
            spool.path.unlink()


class ChunkVocab:
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

    @classmethod
    def merged(cls, parts: list[ChunkVocab]) -> ChunkVocab:
        """One vocabulary over parts collected in order: the parts' dictionaries are folded
        into one and each chunk's map is composed with its part's, so ids are the same as if one
        process had collected every chunk."""
        out = cls()
        for p in parts:
            p._fold()
        encoded = pc.dictionary_encode(pa.chunked_array([p.dictionary for p in parts],
                                                        type=pa.string()).combine_chunks())
        index = encoded.indices.to_numpy(zero_copy_only=False)
        out.dictionary = encoded.dictionary
        out.freq = np.bincount(index, weights=np.concatenate([p.freq for p in parts]),
                               minlength=len(encoded.dictionary)).astype(np.int64)
        start = 0
        for p in parts:
            own = index[start:start + len(p.dictionary)]
            start += len(p.dictionary)
            out.maps += [own[m].astype(np.int32) for m in p.maps]
            out.sizes += p.sizes
        return out

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
        table = pa.table({"neg": pa.array(-freq, type=pa.int64()), "value": self.dictionary})
        order = pc.sort_indices(table, sort_keys=[("neg", "ascending"), ("value", "ascending")])
        kept = order.to_numpy(zero_copy_only=False)
        final_of_global = np.zeros(len(freq), dtype=np.int64)
        final_of_global[kept] = np.arange(1, len(kept) + 1, dtype=np.int64)
        lookups = []
        for m in self.maps:
            lut = np.zeros(len(m) + 1, dtype=np.int64)
            lut[1:] = final_of_global[m]
            lookups.append(lut)
        values = self.dictionary.take(pa.array(kept, type=pa.int64()))
        return lookups, values, freq[kept]


class SparseWriter:
    """Collects one sparse feature: values (chunk-local codes or hashed ids) and, if multi-hot,
    lengths; `finish` remaps to final ids and writes values/offsets/counts/vocab."""

    def __init__(self, feature: Feature, tmp: Path) -> None:
        self.feature = feature
        self.values = Spool(tmp / f"{feature.name}.values.raw", np.int64)
        self.lengths = (Spool(tmp / f"{feature.name}.lengths.raw", np.int32)
                        if feature.kind == "multi_hot" else None)
        self.vocab: ChunkVocab | None = ChunkVocab() if feature.uses_vocabulary else None
        self.value_parts = [self.values]
        self.part_chunks: list[int] | None = None
        # Merged when finishing, so parallel preparation merges each feature in a worker.
        self.vocab_parts: list[ChunkVocab] = []
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

    def close(self) -> None:
        self.values.close()
        if self.lengths is not None:
            self.lengths.close()

    def size_hint(self) -> int:
        """Distinct values collected (over the parts): what finishing costs beyond the rows."""
        vocabs = self.vocab_parts or ([self.vocab] if self.vocab is not None else [])
        return sum(len(v.dictionary) + v._pending_len for v in vocabs)

    def absorb(self, parts: list[SparseWriter]) -> None:
        """Takes over the parts' values (kept as they are, in order: no copy) and lengths, and
        merges their vocabularies or hash counts."""
        self.values.close()
        self.values.path.unlink()
        self.value_parts = [p.values for p in parts]
        self.part_chunks = [len(p.vocab.sizes) if p.vocab is not None else 0 for p in parts]
        for p in parts:
            if self.lengths is not None:
                assert p.lengths is not None
                self.lengths.append_file(p.lengths)
        if self.vocab is not None:
            self.vocab_parts = [p.vocab for p in parts if p.vocab is not None]
        else:
            assert self.hash_counts is not None
            for p in parts:
                assert p.hash_counts is not None
                self.hash_counts += p.hash_counts

    def _remap(self, out: Path) -> tuple[int, np.ndarray]:
        """Chunk-local codes -> final ids, chunk by chunk; writes the vocabulary parquet."""
        if self.vocab_parts:
            self.vocab, self.vocab_parts = ChunkVocab.merged(self.vocab_parts), []
        assert self.vocab is not None
        total = sum(p.count for p in self.value_parts)
        lookups, values, freq = self.vocab.lookups()
        cardinality = len(values) + 1
        counts = np.zeros(cardinality, dtype=np.int64)
        counts[1:] = freq
        counts[0] = total - counts[1:].sum()
        final = np.lib.format.open_memmap(out / "sparse" / f"{self.feature.name}.values.npy",
                                          mode="w+", dtype=np.int64, shape=(total,))
        chunks = iter(zip(lookups, self.vocab.sizes, strict=True))
        per_part = self.part_chunks or [len(lookups)]
        done = 0
        for part, n_chunks in zip(self.value_parts, per_part, strict=True):
            raw = part.memmap()
            start = 0
            for _ in range(n_chunks):
                lut, size = next(chunks)
                for s in range(start, start + size, _COPY_ROWS):
                    e = min(s + _COPY_ROWS, start + size)
                    final[done + s:done + e] = lut[np.asarray(raw[s:e]) + 1]
                start += size
            done += len(raw)
            del raw
            part.path.unlink()
        final.flush()
        del final
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
            spools_to_npy(self.value_parts, out / "sparse" / f"{name}.values.npy",
                          (sum(p.count for p in self.value_parts),))
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


def split_codes(column: str, df: pd.DataFrame, on_bad_row: str, stats: ReadStats
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


def derive_rows(schema: Schema, df: pd.DataFrame, on_bad_row: str, stats: ReadStats
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


def labels_of(schema: Schema, df: pd.DataFrame) -> np.ndarray:
    y = df[schema.label.column].to_numpy(dtype=np.float64)
    if schema.label.kind == "threshold":
        return (y >= schema.label.threshold).astype(np.float32)
    bad = (y != 0) & (y != 1)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"binary label must be 0 or 1, got {float(y[i]):g}", path=df.attrs.get("path"),
                        line=int(df[LINE_COLUMN].iloc[i]), field=schema.label.column)
    return y.astype(np.float32)


class Collector:
    """Everything a prepare pass writes, row chunk by row chunk: labels, dense, time and split
    spools and one SparseWriter per sparse feature, with the read statistics. A pass over part
    of the input (a worker's shard) is a Collector too; `absorb` merges parts in input order,
    and `finish` writes the cache files, identical whichever way the rows were collected."""

    def __init__(self, schema: Schema, tmp: Path, fixed_splits: bool) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.schema = schema
        self.labels = Spool(tmp / "labels.raw", np.float32)
        self.dense = Spool(tmp / "dense.raw", np.float32)
        self.times = Spool(tmp / "time.raw", np.int64) if schema.time_column else None
        self.splits = Spool(tmp / "split.raw", np.int8) if fixed_splits else None
        self.sparse = [SparseWriter(f, tmp) for f in schema.sparse]
        self.stats = ReadStats()
        self.positives = 0.0
        self.rows_by_file: dict[str, int] = {}
        self.parts: list[Collector] = []

    def consume(self, df: pd.DataFrame, code: int, on_bad_row: str, source: Path) -> int:
        """Adds one chunk of rows read from an input of split `code`; returns the rows kept."""
        schema = self.schema
        if schema.split_column:
            df, codes = split_codes(schema.split_column, df, on_bad_row, self.stats)
        else:
            codes = np.full(len(df), code, dtype=np.int8)
        df, kept = derive_rows(schema, df, on_bad_row, self.stats)
        codes = codes[kept]
        if not len(df):
            return 0
        y = labels_of(schema, df)
        self.positives += float(y.sum())
        self.labels.write(y)
        if self.splits is not None:
            self.splits.write(codes)
        if schema.dense:
            self.dense.write(np.stack([transform_dense(f, df[f.column]) for f in schema.dense],
                                      axis=1))
        if self.times is not None:
            self.times.write(df[schema.time_column].to_numpy(dtype=np.float64).astype(np.int64))
        for w in self.sparse:
            w.add(df[derived_column(w.feature) if w.feature.derive else w.feature.column])
        file = str(df.attrs.get("path", source))
        self.rows_by_file[file] = self.rows_by_file.get(file, 0) + len(df)
        return len(df)

    def close(self) -> None:
        """Closes every spool, so the collector can be pickled back from a worker."""
        for spool in (self.labels, self.dense, self.times, self.splits):
            if spool is not None:
                spool.close()
        for w in self.sparse:
            w.close()

    def _row_spools(self, name: str) -> list[Spool]:
        """One row array's spools in order: this collector's own, or its parts'."""
        holders = self.parts or [self]
        return [getattr(h, name) for h in holders]

    def absorb(self, parts: list[Collector]) -> None:
        """Takes the parts (collected in input order) over: their row spools stay where they
        are until `finish` streams them into the cache."""
        self.close()
        for spool in (self.labels, self.dense, self.times, self.splits):
            if spool is not None:
                spool.path.unlink()
        self.parts = parts
        for p in parts:
            self.positives += p.positives
            for file, n in p.rows_by_file.items():
                self.rows_by_file[file] = self.rows_by_file.get(file, 0) + n
            s = p.stats
            self.stats.rows += s.rows
            self.stats.skipped += s.skipped
            for key, n in s.skipped_by_reason.items():
                self.stats.skipped_by_reason[key] = self.stats.skipped_by_reason.get(key, 0) + n
            for key, n in s.unmatched.items():
                self.stats.unmatched[key] = self.stats.unmatched.get(key, 0) + n
        for i, w in enumerate(self.sparse):
            w.absorb([p.sparse[i] for p in parts])

    def finish(self, out: Path, fixed: list[str], source: Path, pool: Executor | None = None
               ) -> dict[str, Any]:
        """Writes the cache's arrays into `out`; returns the meta.json fields they define. With
        a `pool`, the sparse features are remapped and written in its processes."""
        schema, stats = self.schema, self.stats
        n = sum(s.count for s in self._row_spools("labels"))
        if n == 0:
            raise DataError(f"no rows read ({stats.skipped} skipped)", path=str(source))
        futures = []
        if pool is not None:
            for w in self.sparse:
                w.close()
            # Largest vocabularies first, so the last feature to finish is a small one.
            order = sorted(range(len(self.sparse)), key=lambda i: -self.sparse[i].size_hint())
            submitted = {i: pool.submit(self.sparse[i].finish, out, n) for i in order}
            futures = [submitted[i] for i in range(len(self.sparse))]
        spools_to_npy(self._row_spools("labels"), out / "labels.npy", (n,))
        spools_to_npy(self._row_spools("dense"), out / "dense.npy", (n, len(schema.dense)))
        if self.times is not None:
            spools_to_npy(self._row_spools("times"), out / "time.npy", (n,))
        split_rows: dict[str, int] = {}
        if self.splits is not None:
            per_code = np.sum([np.bincount(s.memmap(), minlength=3)
                               for s in self._row_spools("splits")], axis=0)
            split_rows = {name: int(c) for name, c in zip(SPLITS, per_code, strict=True)}
            if schema.split_column:
                fixed = [name for name in SPLITS[1:] if split_rows[name]]
            spools_to_npy(self._row_spools("splits"), out / "split.npy", (n,))
        sparse_meta = ([f.result() for f in futures] if futures
                       else [w.finish(out, n) for w in self.sparse])
        return {"num_rows": int(n), "skipped_rows": int(stats.skipped),
                "skipped_by_reason": stats.skipped_by_reason, "rows_by_file": self.rows_by_file,
                "split_rows": split_rows, "fixed_splits": fixed if split_rows else [],
                "join_unmatched": stats.unmatched, "dense": [f.name for f in schema.dense],
                "sparse": sparse_meta, "label_rate": self.positives / n,
                "has_time": self.times is not None}
