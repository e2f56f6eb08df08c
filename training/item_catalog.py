"""Vectors for catalogue items the interactions never mention (cold items): the item tower run on
each item's own features, read from a catalogue side table, so every item of the catalogue can
be retrieved from the first snapshot on.

The catalogue is a CSV file with a header naming the schema's item columns (the item key's
column and each item feature's source column). Values are encoded exactly as in preparation,
with the run's vocabularies (features/encode.py): a cold item's own id is out of vocabulary, so
its id embedding is the shared OOV row and its vector comes from its content features."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torchrec import KeyedJaggedTensor

from plexrec.features.derive import derive_values
from plexrec.features.encode import encode_categorical, encode_multi_hot, transform_dense
from plexrec.features.errors import ConfigError, DataError
from plexrec.training.two_tower import TwoTowerParts, key_names


def read_catalog(path: str | Path, columns: list[str]) -> pd.DataFrame:
    """The catalogue's `columns` as strings ("" for an empty cell); a missing file or column is
    a ConfigError naming it."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise ConfigError(f"item catalogue {path}: no such file") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ConfigError(f"item catalogue {path}: not a readable CSV file: {exc}") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ConfigError(f"item catalogue {path}: no column {missing[0]!r} (the header must "
                          f"name the schema's item columns: {', '.join(columns)})")
    return frame[columns]


def catalog_ids(frame: pd.DataFrame, column: str, path: str | Path) -> np.ndarray:
    """The raw integer item ids; a bad or repeated id is a DataError naming its line."""
    ids = pd.to_numeric(frame[column], errors="coerce")
    bad = np.flatnonzero(ids.isna().to_numpy() | (ids % 1 != 0).to_numpy())
    if len(bad):
        line = int(bad[0]) + 2
        raise DataError(f"item id {frame[column].iloc[bad[0]]!r} is not an integer",
                        path=str(path), line=line, field=column)
    out = ids.to_numpy(dtype=np.int64)
    _, first, counts = np.unique(out, return_index=True, return_counts=True)
    if (counts > 1).any():
        again = np.flatnonzero(np.isin(out, out[first[counts > 1]]))[1]
        raise DataError(f"item id {out[again]} is listed twice", path=str(path),
                        line=int(again) + 2, field=column)
    return out


def _values(feature: Any, frame: pd.DataFrame, path: str | Path, first_line: int
            ) -> pd.Series:
    """A feature's raw (or derived) values, None where the cell is empty; a value that cannot
    be derived is a DataError naming its line."""
    if feature.derive is None:
        return frame[feature.column].replace("", None)
    columns = {c: frame[c].replace("", None) for c in feature.source_columns}
    values, bad = derive_values(feature.derive, columns, feature.column)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"cannot derive {feature.derive.kind} for {feature.name!r}",
                        path=str(path), line=first_line + row, field=feature.column)
    return values


@torch.no_grad()
def catalog_vectors(parts: TwoTowerParts, data: Any, path: str | Path, batch_size: int = 4096
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(raw item ids, item vectors) of every catalogue row, from the item tower on the features
    the catalogue lists, encoded with the run's vocabularies."""
    schema = data.schema
    _, item_key = key_names(data)
    sparse = [schema.feature(n) for n in parts.item_sparse]
    dense = [schema.feature(data.dense_names[i]) for i in parts.item_dense]
    key_column = schema.feature(item_key).column
    columns = list(dict.fromkeys([key_column, *(c for f in sparse + dense
                                                for c in f.source_columns)]))
    frame = read_catalog(path, columns)
    ids = catalog_ids(frame, key_column, path)
    tower = parts.model.item
    was_training = tower.training
    tower.eval()
    out = []
    for start in range(0, len(frame), batch_size):
        part = frame.iloc[start:start + batch_size].reset_index(drop=True)
        values, lengths = [], []
        for f in sparse:
            vocab = data.vocab(f.name) if f.uses_vocabulary else None
            if f.kind == "multi_hot":
                v, n = encode_multi_hot(f, _values(f, part, path, start + 2), vocab)
            else:
                v = encode_categorical(f, _values(f, part, path, start + 2), vocab)
                n = np.ones(len(part), dtype=np.int32)
            values.append(v)
            lengths.append(n.astype(np.int32))
        kjt = KeyedJaggedTensor(keys=[f.name for f in sparse],
                                values=torch.from_numpy(np.concatenate(values).astype(np.int64)),
                                lengths=torch.from_numpy(np.concatenate(lengths)),
                                stride=len(part))
        matrix = np.zeros((len(part), len(data.dense_names)), dtype=np.float32)
        for index, f in zip(parts.item_dense, dense, strict=True):
            matrix[:, index] = transform_dense(f, part[f.column].replace("", None))
        out.append(tower(kjt, torch.from_numpy(matrix)))
    tower.train(was_training)
    vectors = torch.cat(out).numpy() if out else np.zeros((0, tower.dim), np.float32)
    return ids, vectors
