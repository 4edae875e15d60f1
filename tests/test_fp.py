"""The numba fp16/bf16 helpers against numpy over every fp16 value and a dense sample of float32."""

import numpy as np
from numba import njit

from quantlab.formats import _numerics as nm
from quantlab.kernels._fp import bf16_to_f32, f16_to_f32, f16_to_f32_bits, f32_to_bf16, f32_to_f16


def _elementwise(fn):
    """A compiled loop o[i] = fn(a[i]): each helper is called as the kernels call it, from numba code."""

    @njit
    def run(a, o):
        for i in range(a.size):
            o[i] = fn(a[i])

    return run


_enc, _dec, _dec_bits = _elementwise(f32_to_f16), _elementwise(f16_to_f32), _elementwise(f16_to_f32_bits)
_enc_bf, _dec_bf = _elementwise(f32_to_bf16), _elementwise(bf16_to_f32)


def _dense_f32(n=3_000_000):
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32)
    # plus every float around the fp16 rounding boundaries and subnormal range
    edges = np.arange(0x33000000 - 4096, 0x33000000 + 4096, dtype=np.uint32)
    sub = np.arange(0x38800000 - 65536, 0x38800000 + 65536, dtype=np.uint32)
    top = np.arange(0x477FE000, 0x47800100, dtype=np.uint32)
    allb = np.concatenate([bits, edges, sub, top])
    allb = np.concatenate([allb, allb | np.uint32(0x80000000)])
    return allb.view(np.float32)


def test_fp16_decode_every_value():
    h = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    got = np.empty(65536, np.float32)
    _dec(h, got)
    assert np.array_equal(got.view(np.uint32), nm.from_f16_bits(h).view(np.uint32))


def test_fp16_branchless_decode_equals_scalar_decode():
    """The vectorizable helper gives the bits of f16_to_f32 for every fp16 value (NaNs quieted)."""
    h = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    got = np.empty(65536, np.uint32)
    _dec_bits(h, got)
    want = np.empty(65536, np.float32)
    _dec(h, want)
    assert np.array_equal(got, want.view(np.uint32))
    nan = ((h & 0x7C00) == 0x7C00) & ((h & 0x3FF) != 0)
    assert np.all(got[nan] & np.uint32(0x400000))


def test_fp16_encode_matches_numpy():
    x = _dense_f32()
    got = np.empty(x.size, np.uint16)
    _enc(x, got)
    with np.errstate(over="ignore"):
        want = x.astype(np.float16).view(np.uint16)
    nan = np.isnan(x)
    assert np.array_equal(got[~nan], want[~nan])
    assert np.all((got[nan] & 0x7E00) == 0x7E00)  # NaN stays NaN, sign kept
    assert np.array_equal(got[nan] >> 15, (x[nan].view(np.uint32) >> 31).astype(np.uint16))


def test_bf16_matches_reference_rule():
    x = _dense_f32()
    got = np.empty(x.size, np.uint16)
    _enc_bf(x, got)
    assert np.array_equal(got, nm.bf16_bits(x))
    back = np.empty(x.size, np.float32)
    _dec_bf(got, back)
    assert np.array_equal(back.view(np.uint32), nm.from_bf16_bits(got).view(np.uint32))


def test_plain_float_kernels_decode_every_value_like_the_reference():
    """The flattened, chunked F16/BF16 decoders over every 16-bit pattern, in shapes whose size is and
    is not a multiple of the kernel's chunk."""
    from quantlab.formats import floats as ref
    from quantlab.kernels import floats as fast

    allbits = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    for shape in ((16, 4096), (1, 65536), (5, 3)):
        h = allbits[: shape[0] * shape[1]].reshape(shape).view(np.uint8)
        for key in ("f16", "bf16"):
            got = getattr(fast, "dequantize_" + key)(h, shape[1])
            want = getattr(ref, "dequantize_" + key)(h, shape[1])
            assert got.shape == want.shape == shape
            assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


def test_c_helpers_numba_and_numpy_twins_agree_with_ggml():
    """kernels._c (numba) and formats._numerics (numpy): ggml's nearest_int (round half to even below
    2**22; NaN -> 0 and +-inf -> -2**22 as the C code gives, where np.rint differs), d ? 1/d : 0, clamp."""
    from quantlab.kernels import _c

    v = np.array(
        [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.4999998, 4194303.0, -4194303.0, 1e10, -1e10, np.inf, -np.inf, np.nan],
        np.float32,
    )
    got = np.array([_c.nearest_int(x) for x in v], np.int32)
    assert np.array_equal(got, nm.nearest_int(v))
    assert got[:9].tolist() == [0, 2, 2, 0, -2, -2, 3, 4194303, -4194303]
    assert got[-3:].tolist() == [-(1 << 22), -(1 << 22), 0]
    d = np.array([0.0, -0.0, 4.0, -3.0, 1e-45], np.float32)
    assert np.array_equal(np.array([_c.inv(x) for x in d], np.float32).view(np.uint32), nm.inv(d).view(np.uint32))
    assert nm.inv(d)[:2].tolist() == [0.0, 0.0] and nm.inv(d)[2] == np.float32(0.25)
    assert [_c.clampi(x, -4, 3) for x in (-9, -4, 0, 3, 9)] == [-4, -4, 0, 3, 3]
    assert nm.f16_bytes(np.array([1.0, 65520.0], np.float32)).tolist() == [[0x00, 0x3C], [0x00, 0x7C]]
