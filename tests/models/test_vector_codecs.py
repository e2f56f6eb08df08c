"""The vector codecs: each dtype decodes within its stated error, stored rows round-trip, and a
malformed code or scale is caught."""

from __future__ import annotations

import numpy as np
import pytest

from plexrec.models.vector_codecs import (
    CODECS,
    CodecError,
    check_rotation,
    get_codec,
    learn_itq_rotation,
    rotation_from_npy,
)


def _vectors(n: int = 200, width: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, width)) * rng.uniform(0.01, 30, size=(n, 1))
    x[0] = 0.0
    return x.astype(np.float32)


@pytest.mark.parametrize("dtype", list(CODECS))
@pytest.mark.parametrize("width", [16, 13])
def test_decoded_vectors_are_within_the_stated_error(dtype: str, width: int) -> None:
    codec = CODECS[dtype]
    x = _vectors(width=width)
    rotation = learn_itq_rotation(x, iterations=10) if codec.rotates else None
    enc = codec.encode(x, rotation)
    codec.validate(enc.codes, enc.scales, width)
    decoded = codec.decode(enc.codes, enc.scales, width, rotation)
    assert decoded.dtype == np.float32 and decoded.shape == x.shape
    err = np.linalg.norm(decoded.astype(np.float64) - x, axis=1)
    assert (err <= codec.max_error(x)).all()
    assert np.abs(decoded[0]).max() < 1e-30
    rows = codec.pack(enc.codes, enc.scales)
    assert rows.dtype == np.uint8 and rows.shape == (len(x), codec.bytes_per_vector(width))
    np.testing.assert_array_equal(codec.decode_rows(rows, width, rotation), decoded)
    assert not codec.bad_rows(rows, width).any()


def test_per_value_bounds_of_float16_and_int8() -> None:
    x = _vectors()
    half = CODECS["float16"]
    enc = half.encode(x)
    err = np.abs(half.decode(enc.codes, None, 16) - x)
    assert (err <= np.maximum(np.abs(x) * 2.0 ** -11, 2.0 ** -25)).all()
    int8 = CODECS["int8"]
    enc = int8.encode(x)
    assert enc.scales is not None and (enc.scales > 0).all()
    err = np.abs(int8.decode(enc.codes, enc.scales, 16) - x)
    assert (err <= enc.scales[:, None] * (0.5 + 1e-5)).all()
    assert np.abs(enc.codes).max() == 127


def test_binary_error_is_exactly_the_norm_left_over_by_the_scale() -> None:
    x = _vectors(width=32)
    codec = CODECS["binary"]
    for rotation in (None, learn_itq_rotation(x, iterations=20)):
        enc = codec.encode(x, rotation)
        assert enc.scales is not None
        decoded = codec.decode(enc.codes, enc.scales, 32, rotation).astype(np.float64)
        err = np.linalg.norm(decoded - x, axis=1)
        exact = np.sqrt(np.maximum((x.astype(np.float64) ** 2).sum(1)
                                   - 32 * enc.scales.astype(np.float64) ** 2, 0))
        np.testing.assert_allclose(err, exact, atol=1e-3 * (1 + np.abs(x).max()))


def test_itq_rotation_is_orthogonal_deterministic_and_lowers_the_error() -> None:
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((2000, 16)) @ rng.standard_normal((16, 16))).astype(np.float32)
    r = learn_itq_rotation(x, iterations=30, seed=3)
    assert check_rotation(r, 16) is not None
    np.testing.assert_array_equal(r, learn_itq_rotation(x, iterations=30, seed=3))
    codec = CODECS["binary"]

    def mean_error(rotation: np.ndarray | None) -> float:
        enc = codec.encode(x, rotation)
        return float(np.linalg.norm(codec.decode(enc.codes, enc.scales, 16, rotation) - x,
                                    axis=1).mean())

    assert mean_error(r) < mean_error(None)


def test_bytes_per_vector_at_width_64() -> None:
    assert {name: c.bytes_per_vector(64) for name, c in CODECS.items()} == {
        "float32": 256, "float16": 128, "int8": 68, "binary": 12}
    assert CODECS["binary"].bytes_per_vector(13) == 2 + 4


def test_bit_layout_is_least_significant_first() -> None:
    codec = CODECS["binary"]
    x = np.array([[1, -1, -1, -1, -1, -1, -1, -1, -1, 2]], dtype=np.float32)
    enc = codec.encode(x)
    assert enc.codes.tolist() == [[0b00000001, 0b10]]
    assert enc.scales is not None and enc.scales[0] == pytest.approx(1.1)


def test_prefix_of_stored_codes_decodes_to_the_prefix() -> None:
    x = _vectors(width=13)
    for name in ("float32", "float16", "int8", "binary"):
        codec = CODECS[name]
        enc = codec.encode(x)
        codes, scales = codec.prefix(enc.codes, enc.scales, 13, 5)
        np.testing.assert_array_equal(codec.decode(codes, scales, 5),
                                      codec.decode(enc.codes, enc.scales, 13)[:, :5])


def test_malformed_codes_and_scales_are_caught() -> None:
    x = _vectors(width=12)
    int8, binary, half = CODECS["int8"], CODECS["binary"], CODECS["float16"]
    enc = int8.encode(x)
    assert enc.scales is not None
    for bad in (np.nan, 0.0, -1.0, np.inf):
        scales = enc.scales.copy()
        scales[7] = bad
        with pytest.raises(CodecError, match="not finite and > 0") as info:
            int8.validate(enc.codes, scales, 12)
        assert info.value.part == "scales" and info.value.row == 7
        assert int8.bad_rows(int8.pack(enc.codes, scales), 12).tolist() == [
            i == 7 for i in range(len(x))]
    with pytest.raises(CodecError, match="dtype int16, expected int8"):
        int8.validate(enc.codes.astype(np.int16), enc.scales, 12)
    with pytest.raises(CodecError, match=r"expected \[n, 12\]"):
        int8.validate(enc.codes[:, :11].copy(), enc.scales, 12)
    benc = binary.encode(x)
    codes = benc.codes.copy()
    codes[3, -1] |= 0x80
    with pytest.raises(CodecError, match="padding bits") as info:
        binary.validate(codes, benc.scales, 12)
    assert info.value.row == 3
    assert binary.bad_rows(binary.pack(codes, benc.scales), 12)[3]
    hcodes = half.encode(x).codes.copy()
    hcodes[5, 2] = np.nan
    with pytest.raises(CodecError, match="non-finite") as info:
        half.validate(hcodes, None, 12)
    assert info.value.row == 5
    with pytest.raises(CodecError, match="float16's range") as info:
        half.encode(np.full((2, 3), 1e6, dtype=np.float32))
    with pytest.raises(CodecError, match="takes no rotation"):
        int8.encode(x, np.eye(12, dtype=np.float32))
    with pytest.raises(CodecError, match="rows of width 12 have 16 bytes"):
        int8.unpack(np.zeros((2, 15), dtype=np.uint8), 12)
    with pytest.raises(CodecError, match="'int4' is not one of float32, float16, int8, binary"):
        get_codec("int4")


def test_rotation_checks() -> None:
    with pytest.raises(CodecError, match="not orthogonal"):
        check_rotation(np.full((4, 4), 0.5, dtype=np.float32), 4)
    with pytest.raises(CodecError, match=r"expected \[4, 4\]"):
        check_rotation(np.eye(3, dtype=np.float32), 4)
    with pytest.raises(CodecError, match="expected little-endian float32"):
        check_rotation(np.eye(4), 4)
    with pytest.raises(CodecError, match="not a readable .npy"):
        rotation_from_npy(b"garbage", 4)
