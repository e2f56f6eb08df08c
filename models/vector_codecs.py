"""How a float32 vector is stored: the snapshot files, the Redis values and the wire share one
codec per `dtype`, so the writer, the server and the client can never disagree on a byte.

A codec turns a float32 matrix [n, width] into `codes` [n, code_width(width)] of `code_dtype`
plus, for the scaled kinds, one little-endian float32 `scale` per vector. A stored row (a Redis
hash value, a GetEmbeddings row in the stored encoding) is the row's code bytes followed by its
scale bytes. Decoding, and the error of a decoded vector x̂ against the float32 vector x:

- `float32`: the values themselves; exact. 4·width bytes.
- `float16`: IEEE half precision, round to nearest; |x̂_j − x_j| <= max(2^-11·|x_j|, 2^-25)
  (relative 2^-11 in the normal range, 2^-25 absolute among subnormals); values beyond ±65504
  are refused at encoding. 2·width bytes.
- `int8`: symmetric, one scale per vector s = max_j |x_j| / 127 (1.0 for a zero vector),
  code q_j = round(x_j / s) in [-127, 127]; x̂_j = q_j·s, |x̂_j − x_j| <= s/2 (plus float32
  rounding, < 1e-5·s). width + 4 bytes.
- `binary`: sign bits of y = R·x (R an orthogonal width x width rotation, e.g. learned by ITQ,
  Gong & Lazebnik 2011, so that y's coordinates are closer to ±s; the identity when there is
  none), packed 8 to a byte, bit j of the vector = bit j mod 8 (least significant first) of byte
  j div 8, 1 for y_j >= 0, padding bits 0; scale s = mean_j |y_j|, the least-squares scale for
  fixed signs (a zero vector gets the smallest normal float32, ~1.2e-38). Decoded
  x̂ = Rᵀ·(s·b) with b_j = ±1. Since R is orthogonal,
  ||x̂ − x||₂ = ||s·b − y||₂ = sqrt(||x||² − width·s²) <= ||x||₂·sqrt(1 − 1/width).
  ceil(width / 8) + 4 bytes.

No torch import: the serving tier and the client decode with numpy alone."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from plexrec.features.errors import PlexrecError

_F32 = np.dtype("<f4")
_SCALE_BYTES = 4
_ROTATION_TOLERANCE = 1e-3


class CodecError(PlexrecError):
    """Codes, scales or a rotation that break their dtype's contract. `part` ("codes", "scales"
    or "rotation") and `row` say where, so a caller can name the file and the id."""

    def __init__(self, message: str, *, part: str = "codes", row: int | None = None) -> None:
        super().__init__(message)
        self.part, self.row = part, row


@dataclass(frozen=True)
class Encoded:
    codes: np.ndarray
    scales: np.ndarray | None


class Codec:
    """One stored dtype. Subclasses set the class attributes and `_encode`/`_decode`."""

    name: ClassVar[str]
    code_dtype: ClassVar[np.dtype]
    has_scale: ClassVar[bool] = False
    rotates: ClassVar[bool] = False

    def code_width(self, width: int) -> int:
        """Code elements per vector."""
        return int(width)

    def bytes_per_vector(self, width: int) -> int:
        """Stored bytes of one vector (code + scale): a Redis value, a stored wire row."""
        return self.code_width(width) * self.code_dtype.itemsize + _SCALE_BYTES * self.has_scale

    def encode(self, vectors: np.ndarray, rotation: np.ndarray | None = None) -> Encoded:
        """float32 [n, width] -> codes (+ scales); CodecError(row=) for an unencodable row."""
        x = np.ascontiguousarray(vectors, dtype=_F32)
        if x.ndim != 2:
            raise CodecError(f"expected a [n, width] matrix, got shape {x.shape}")
        if rotation is not None and not self.rotates:
            raise CodecError(f"dtype {self.name} takes no rotation", part="rotation")
        return self._encode(x, rotation)

    def decode(self, codes: np.ndarray, scales: np.ndarray | None, width: int,
               rotation: np.ndarray | None = None) -> np.ndarray:
        """codes (+ scales) -> float32 [n, width] (see the module docstring)."""
        return self._decode(np.asarray(codes), scales, int(width), rotation)

    def max_error(self, vectors: np.ndarray) -> np.ndarray:
        """The stated bound on ||x̂ − x||₂ of each row of a float32 matrix."""
        return np.zeros(len(vectors), dtype=np.float64)

    def pack(self, codes: np.ndarray, scales: np.ndarray | None) -> np.ndarray:
        """Stored rows: uint8 [n, bytes_per_vector], code bytes then the scale's."""
        n, cb = codes.shape[0], codes.shape[1] * self.code_dtype.itemsize
        parts = [np.ascontiguousarray(codes, dtype=self.code_dtype).view(np.uint8).reshape(n, cb)]
        if self.has_scale:
            assert scales is not None
            parts.append(np.ascontiguousarray(scales, dtype=_F32).view(np.uint8).reshape(n, 4))
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)

    def unpack(self, rows: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Stored rows (uint8 [n, bytes_per_vector]) -> (codes, scales)."""
        rows = np.ascontiguousarray(rows, dtype=np.uint8)
        if rows.ndim != 2 or rows.shape[1] != self.bytes_per_vector(width):
            raise CodecError(f"{self.name} rows of width {width} have "
                             f"{self.bytes_per_vector(width)} bytes, got shape {rows.shape}")
        n, cw = rows.shape[0], self.code_width(width)
        cb = cw * self.code_dtype.itemsize
        codes = np.ascontiguousarray(rows[:, :cb]).view(self.code_dtype).reshape(n, cw)
        if not self.has_scale:
            return codes, None
        return codes, np.ascontiguousarray(rows[:, cb:]).view(_F32).reshape(n)

    def decode_rows(self, rows: np.ndarray, width: int,
                    rotation: np.ndarray | None = None) -> np.ndarray:
        codes, scales = self.unpack(rows, width)
        return self.decode(codes, scales, width, rotation)

    def bad_rows(self, rows: np.ndarray, width: int) -> np.ndarray:
        """Rows of the right length whose content breaks the contract (a scale that is not
        finite and > 0, a set padding bit, a non-finite half): what a store must not serve."""
        codes, scales = self.unpack(rows, width)
        bad = np.zeros(rows.shape[0], dtype=bool)
        if scales is not None:
            with np.errstate(invalid="ignore"):
                bad |= ~(np.isfinite(scales) & (scales > 0))
        return bad | self._bad_codes(codes, width)

    def _bad_codes(self, codes: np.ndarray, width: int) -> np.ndarray:
        return np.zeros(codes.shape[0], dtype=bool)

    def validate(self, codes: np.ndarray, scales: np.ndarray | None, width: int, *,
                 deep: bool = True) -> None:
        """Dtype, shape and order of the codes, and scales finite and > 0; `deep` also reads
        every code (non-finite halves, padding bits)."""
        if codes.dtype != self.code_dtype:
            raise CodecError(f"dtype {codes.dtype}, expected {_describe(self.code_dtype)}")
        want = self.code_width(width)
        if codes.ndim != 2 or codes.shape[1] != want:
            raise CodecError(f"shape {codes.shape}, expected [n, {want}]")
        if not codes.flags.c_contiguous:
            raise CodecError("not C-contiguous (Fortran order)")
        if not self.has_scale:
            if scales is not None:
                raise CodecError(f"dtype {self.name} has no scales", part="scales")
        else:
            if scales is None:
                raise CodecError(f"dtype {self.name} needs one scale per vector", part="scales")
            if scales.dtype != _F32:
                raise CodecError(f"dtype {scales.dtype}, expected little-endian float32",
                                 part="scales")
            if scales.shape != (codes.shape[0],):
                raise CodecError(f"shape {scales.shape}, expected [{codes.shape[0]}]",
                                 part="scales")
            with np.errstate(invalid="ignore"):
                bad = np.flatnonzero(~(np.isfinite(scales) & (scales > 0)))
            if bad.size:
                row = int(bad[0])
                raise CodecError(f"scale {float(scales[row])!r} is not finite and > 0",
                                 part="scales", row=row)
        if deep:
            bad = np.flatnonzero(self._bad_codes(codes, width))
            if bad.size:
                raise CodecError(f"code {self._why_bad()}", row=int(bad[0]))

    def _why_bad(self) -> str:
        return "is malformed"

    def prefix(self, codes: np.ndarray, scales: np.ndarray | None, width: int,
               new_width: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The stored form of the first `new_width` coordinates (same scale): valid because no
        codec without a rotation mixes coordinates."""
        return np.ascontiguousarray(codes[:, :new_width]), scales

    def _encode(self, x: np.ndarray, rotation: np.ndarray | None) -> Encoded:
        raise NotImplementedError

    def _decode(self, codes: np.ndarray, scales: np.ndarray | None, width: int,
                rotation: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError


class Float32Codec(Codec):
    name = "float32"
    code_dtype = _F32

    def _encode(self, x: np.ndarray, rotation: np.ndarray | None) -> Encoded:
        return Encoded(x, None)

    def _decode(self, codes: np.ndarray, scales: np.ndarray | None, width: int,
                rotation: np.ndarray | None) -> np.ndarray:
        return codes.astype(_F32, copy=False)

    def decode_rows(self, rows: np.ndarray, width: int,
                    rotation: np.ndarray | None = None) -> np.ndarray:
        """A view, no copy: the hot path of float32 versions stays a memcpy."""
        return np.ascontiguousarray(rows, dtype=np.uint8).view(_F32).reshape(-1, int(width))

    def bad_rows(self, rows: np.ndarray, width: int) -> np.ndarray:
        """Nothing beyond the length to check: float32 carries no redundancy."""
        return np.zeros(rows.shape[0], dtype=bool)


class Float16Codec(Codec):
    name = "float16"
    code_dtype = np.dtype("<f2")
    _MAX = float(np.finfo(np.float16).max)

    def _encode(self, x: np.ndarray, rotation: np.ndarray | None) -> Encoded:
        too_big = np.flatnonzero((np.abs(x) > self._MAX).any(axis=1))
        if too_big.size:
            raise CodecError(f"holds a value beyond float16's range ±{self._MAX:g}",
                             row=int(too_big[0]))
        return Encoded(x.astype(self.code_dtype), None)

    def _decode(self, codes: np.ndarray, scales: np.ndarray | None, width: int,
                rotation: np.ndarray | None) -> np.ndarray:
        return codes.astype(_F32)

    def max_error(self, vectors: np.ndarray) -> np.ndarray:
        per = np.maximum(np.abs(np.asarray(vectors, np.float64)) * 2.0 ** -11, 2.0 ** -25)
        return np.sqrt((per ** 2).sum(axis=1))

    def _bad_codes(self, codes: np.ndarray, width: int) -> np.ndarray:
        return ~np.isfinite(codes).all(axis=1)

    def _why_bad(self) -> str:
        return "holds a non-finite half"


class Int8Codec(Codec):
    name = "int8"
    code_dtype = np.dtype("i1")
    has_scale = True

    def _encode(self, x: np.ndarray, rotation: np.ndarray | None) -> Encoded:
        x64 = x.astype(np.float64)
        scales = (np.abs(x64).max(axis=1, initial=0.0) / 127.0).astype(_F32)
        scales[~(scales >= np.finfo(_F32).tiny)] = 1.0
        codes = np.clip(np.rint(x64 / scales[:, None].astype(np.float64)), -127, 127)
        return Encoded(codes.astype(self.code_dtype), scales)

    def _decode(self, codes: np.ndarray, scales: np.ndarray | None, width: int,
                rotation: np.ndarray | None) -> np.ndarray:
        assert scales is not None
        return codes.astype(_F32) * np.asarray(scales, dtype=_F32)[:, None]

    def max_error(self, vectors: np.ndarray) -> np.ndarray:
        x = np.asarray(vectors, np.float64)
        s = self.encode(x).scales
        assert s is not None
        return s.astype(np.float64) * (0.5 + 1e-5) * np.sqrt(x.shape[1])


class BinaryCodec(Codec):
    name = "binary"
    code_dtype = np.dtype("u1")
    has_scale = True
    rotates = True

    def code_width(self, width: int) -> int:
        return (int(width) + 7) // 8

    def _encode(self, x: np.ndarray, rotation: np.ndarray | None) -> Encoded:
        y = x.astype(np.float64)
        if rotation is not None:
            y = y @ np.asarray(rotation, np.float64).T
        scales = np.abs(y).mean(axis=1).astype(_F32)
        scales[~(scales >= np.finfo(_F32).tiny)] = np.finfo(_F32).tiny
        codes = np.packbits(y >= 0, axis=1, bitorder="little")
        return Encoded(codes, scales)

    def _decode(self, codes: np.ndarray, scales: np.ndarray | None, width: int,
                rotation: np.ndarray | None) -> np.ndarray:
        assert scales is not None
        bits = np.unpackbits(codes, axis=1, count=width, bitorder="little")
        y = (bits.astype(_F32) * 2.0 - 1.0) * np.asarray(scales, dtype=_F32)[:, None]
        if rotation is None:
            return y
        # float64 so that a row decodes to the same float32 whatever batch it comes in: BLAS
        # picks float32 kernels by batch size, and the server must match the snapshot bit for bit.
        return (y.astype(np.float64) @ np.asarray(rotation, np.float64)).astype(_F32)

    def max_error(self, vectors: np.ndarray) -> np.ndarray:
        x = np.asarray(vectors, np.float64)
        norms = np.linalg.norm(x, axis=1)
        floor = 2 * float(np.finfo(_F32).tiny) * np.sqrt(x.shape[1])
        return norms * np.sqrt(max(1.0 - 1.0 / max(x.shape[1], 1), 0.0)) + 1e-5 * norms + floor

    def _bad_codes(self, codes: np.ndarray, width: int) -> np.ndarray:
        spare = (-int(width)) % 8
        if spare == 0 or codes.shape[1] == 0:
            return np.zeros(codes.shape[0], dtype=bool)
        mask = np.uint8((0xFF << (8 - spare)) & 0xFF)
        return (codes[:, -1] & mask) != 0

    def _why_bad(self) -> str:
        return "has padding bits set beyond the width"

    def prefix(self, codes: np.ndarray, scales: np.ndarray | None, width: int,
               new_width: int) -> tuple[np.ndarray, np.ndarray | None]:
        bits = np.unpackbits(codes, axis=1, count=width, bitorder="little")[:, :new_width]
        return np.packbits(bits, axis=1, bitorder="little"), scales


CODECS: dict[str, Codec] = {
    "float32": Float32Codec(),
    "float16": Float16Codec(),
    "int8": Int8Codec(),
    "binary": BinaryCodec(),
}


def get_codec(dtype: str) -> Codec:
    """The codec of a dtype name, or CodecError listing the known ones."""
    codec = CODECS.get(dtype) if isinstance(dtype, str) else None
    if codec is None:
        raise CodecError(f"dtype {dtype!r} is not one of {', '.join(CODECS)}")
    return codec


def _describe(dtype: np.dtype) -> str:
    names = {"<f4": "little-endian float32", "<f2": "little-endian float16", "|i1": "int8",
             "|u1": "uint8"}
    return names.get(dtype.str, str(dtype))


def check_rotation(rotation: np.ndarray, width: int) -> np.ndarray:
    """A float32 [width, width] orthogonal matrix (R·Rᵀ = I within 1e-3), else CodecError."""
    r = np.asarray(rotation)
    if r.dtype != _F32:
        raise CodecError(f"dtype {r.dtype}, expected little-endian float32", part="rotation")
    if r.shape != (width, width):
        raise CodecError(f"shape {r.shape}, expected [{width}, {width}]", part="rotation")
    if not np.isfinite(r).all():
        raise CodecError("holds non-finite values", part="rotation")
    r64 = r.astype(np.float64)
    deviation = float(np.abs(r64 @ r64.T - np.eye(width)).max()) if width else 0.0
    if deviation > _ROTATION_TOLERANCE:
        raise CodecError(f"is not orthogonal (|R·Rᵀ − I| up to {deviation:.3g})",
                         part="rotation")
    return np.ascontiguousarray(r)


def rotation_from_npy(data: bytes, width: int) -> np.ndarray:
    """A rotation from the bytes of its .npy file (as published beside a version)."""
    try:
        r = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CodecError(f"not a readable .npy array: {exc}", part="rotation") from None
    return check_rotation(r, width)


def learn_itq_rotation(vectors: np.ndarray, *, iterations: int = 50, seed: int = 0,
                       max_rows: int = 100_000) -> np.ndarray:
    """ITQ (Gong & Lazebnik): the orthogonal R minimising ||B − V·Rᵀ||_F over signs B, by
    alternating B = sign(V·Rᵀ) and orthogonal Procrustes, on unit-normalised rows (so long
    vectors do not dominate). Returns R in the module's convention (y = R·x), float32."""
    v = np.asarray(vectors, dtype=np.float64)
    rng = np.random.default_rng(seed)
    if v.shape[0] > max_rows:
        v = v[np.sort(rng.choice(v.shape[0], max_rows, replace=False))]
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    v = v / np.where(norms > 0, norms, 1.0)
    r, _ = np.linalg.qr(rng.standard_normal((v.shape[1], v.shape[1])))
    for _ in range(int(iterations)):
        b = np.where(v @ r >= 0, 1.0, -1.0)
        u, _, vt = np.linalg.svd(v.T @ b)
        r = u @ vt
    return np.ascontiguousarray(r.T, dtype=_F32)
