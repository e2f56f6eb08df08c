"""Encodes the raw feature values of an unseen user and runs the exported TorchScript user
tower, so a user without a stored vector still gets one. Value -> id encoding goes through
features/encode.py, the same functions data preparation used, so ids mean the same thing.

`user_features.json` (written by training/export):
    {"sparse": [{"name", "kind": "categorical"|"multi_hot", "max_length", "separator",
                 "vocab": {value: id} | null, "hash_size": int | null,
                 "derive": {"kind", ...} | null}, ...],
     "dense":  [{"name", "fill", "transform", "clamp_min", "clamp_max"}, ...],
     "tower_input": "padded"}
The tower's forward(sparse: int64 [B, sum(max_length)] padded with -1, each feature's slot block
in the listed order; dense: float32 [B, n_dense]) -> float32 [B, width]. A derived feature
(features/derive.py) takes its source column's raw value and is derived here as in
preparation."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from plexrec.features.derive import derive_values, parse_derive
from plexrec.features.encode import encode_categorical, encode_multi_hot, transform_dense
from plexrec.features.errors import ConfigError, PlexrecError
from plexrec.features.schema import Feature

PAD_ID = -1


class UserFeatureError(PlexrecError):
    """A request's user features that cannot be encoded (unknown name, bad value)."""


class UserEncoder:
    """Raw values (one string per feature) -> (sparse ids [S] int64, dense [D] float32)."""

    def __init__(self, spec: Mapping[str, Any], source: str = "user_features.json") -> None:
        if spec.get("tower_input", "padded") != "padded":
            raise ConfigError(f"{source}: tower_input {spec.get('tower_input')!r} is not "
                              "supported (expected 'padded')")
        self.sparse: list[tuple[Feature, dict[str, int] | None]] = []
        self.dense: list[Feature] = []
        try:
            for raw in spec.get("sparse", []):
                vocab = raw.get("vocab")
                derive = raw.get("derive")
                feature = Feature(name=raw["name"], kind=raw["kind"], side="user",
                                  max_length=int(raw.get("max_length") or 1),
                                  separator=raw.get("separator") or "|",
                                  hash_size=raw.get("hash_size"),
                                  min_count=None if raw.get("hash_size") else 1,
                                  derive=None if derive is None else parse_derive(
                                      derive, f"{source} ({raw['name']})"))
                if feature.kind not in ("categorical", "multi_hot"):
                    raise ConfigError(f"{source}: sparse feature {feature.name!r} has kind "
                                      f"{feature.kind!r}")
                if feature.hash_size is None and vocab is None:
                    raise ConfigError(f"{source}: sparse feature {feature.name!r} has neither "
                                      "vocab nor hash_size")
                self.sparse.append((feature, None if vocab is None else
                                    {str(k): int(v) for k, v in vocab.items()}))
            for raw in spec.get("dense", []):
                self.dense.append(Feature(
                    name=raw["name"], kind="dense", side="user",
                    fill=float(raw.get("fill") or 0.0), transform=raw.get("transform") or "none",
                    clamp_min=raw.get("clamp_min"), clamp_max=raw.get("clamp_max")))
        except KeyError as exc:
            raise ConfigError(f"{source}: a feature entry lacks {exc}") from exc
        self.names = {f.name for f, _ in self.sparse} | {f.name for f in self.dense}
        self.sparse_width = sum(f.max_length for f, _ in self.sparse)

    @classmethod
    def from_file(cls, path: str | Path) -> UserEncoder:
        try:
            spec = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: unreadable user feature spec: {exc}") from exc
        return cls(spec, str(path))

    def encode(self, values: Mapping[str, str]) -> tuple[np.ndarray, np.ndarray]:
        unknown = sorted(set(values) - self.names)
        if unknown:
            raise UserFeatureError(f"unknown user feature {unknown[0]!r} "
                                   f"(known: {sorted(self.names)})")
        sparse = np.full(self.sparse_width, PAD_ID, dtype=np.int64)
        slot = 0
        for feature, vocab in self.sparse:
            value = values.get(feature.name)
            if feature.derive is not None:
                value = _derived(feature, value)
            if feature.kind == "categorical":
                sparse[slot] = encode_categorical(feature, [value], vocab)[0]
            else:
                ids, lengths = encode_multi_hot(feature, [value], vocab)
                sparse[slot:slot + int(lengths[0])] = ids[: int(lengths[0])]
            slot += feature.max_length
        dense = np.zeros(len(self.dense), dtype=np.float32)
        for i, feature in enumerate(self.dense):
            value = values.get(feature.name)
            if value is not None and value != "":
                _check_number(feature.name, value)
            dense[i] = transform_dense(feature, [None if value == "" else value])[0]
            if not np.isfinite(dense[i]):
                raise UserFeatureError(f"user feature {feature.name!r}: {_shown(value or '')} "
                                       "overflows float32 after its transform")
        return sparse, dense


def _derived(feature: Feature, value: str | None) -> str | None:
    """A derived feature's request value is its source column's raw value, derived here as in
    preparation."""
    assert feature.derive is not None
    out, bad = derive_values(feature.derive, {"v": pd.Series([value], dtype=object)}, "v")
    if bad[0]:
        raise UserFeatureError(f"user feature {feature.name!r}: cannot derive "
                               f"{feature.derive.kind} from {_shown(str(value))}")
    return out.iloc[0]


def _shown(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:40] + "...")


def _check_number(name: str, value: str) -> None:
    """Only finite numbers: `inf`, `nan` and `1e400` would turn every score into NaN."""
    try:
        number = float(value)
    except ValueError:
        raise UserFeatureError(f"user feature {name!r}: {_shown(value)} is not a number") \
            from None
    if not np.isfinite(number):
        raise UserFeatureError(f"user feature {name!r}: {_shown(value)} is not a finite number")


class UserTower:
    """The TorchScript tower plus its encoder; torch is imported only when a snapshot has one."""

    def __init__(self, tower_path: str | Path, features_path: str | Path) -> None:
        import torch

        self._torch = torch
        self.encoder = UserEncoder.from_file(features_path)
        try:
            self.module = torch.jit.load(str(tower_path), map_location="cpu").eval()
        except (RuntimeError, OSError, ValueError) as exc:
            raise ConfigError(f"{tower_path}: not a loadable TorchScript user tower: {exc}") \
                from exc
        self._lock = threading.Lock()

    def __call__(self, values: Mapping[str, str]) -> np.ndarray:
        """float32 [width] for one user."""
        sparse, dense = self.encoder.encode(values)
        torch = self._torch
        with self._lock, torch.inference_mode():
            out = self.module(torch.from_numpy(sparse).reshape(1, -1),
                              torch.from_numpy(dense).reshape(1, -1))
        return out.detach().to(torch.float32).numpy().reshape(-1)
