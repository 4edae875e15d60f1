"""The simple block formats beyond the registry-driven parity suite: Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q8_1 Q1_0
Q2_0 (legacy), TQ1_0 TQ2_0 (ternary), MXFP4 NVFP4 (fp4).

* inspect_block: every decoded field agrees with the raw bytes (the block is re-packed from the
  fields by an independent packer written here) and with dequantize (values recomputed from the fields
  by the format's formula, compared bit for bit);
* the all-zero block patterns of the spec (section 7.3), derived here from the quantizer rules and
  checked against ggml;
* Q8_1 (no ggml to_float, not in ggml_quantize_chunk) against ggml's quantize_row_q8_1_ref;
* numeric corner cases against ggml: subnormals, -0.0, values near FLT_MAX, exact ties, the MXFP4
  exponent where log2f rounds up to the next integer;
* real weights (all-MiniLM-L6-v2) with and without an importance matrix;
* bad input raises named quantlab errors.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

import quantlab
import quantlab.data
from quantlab import errors
from quantlab.formats import get

from .cases import float_cases
from .conftest import assert_same
from .oracle import oracle

LEGACY = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q1_0", "Q2_0"]
OTHERS = ["TQ1_0", "TQ2_0", "MXFP4", "NVFP4"]
ALL = LEGACY + OTHERS
WITH_GGML = [f for f in ALL if f != "Q8_1"]  # ggml_quantize_chunk + to_float exist
IMATRIX = ["Q4_0", "Q4_1", "Q5_0", "Q5_1"]
IMPLS = ["reference", "fast"]
KV = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], dtype=np.float32)


def _f16(bits) -> np.float32:
    return np.array([bits], dtype=np.uint16).view(np.float16).astype(np.float32)[0]


def _le16(v: int) -> list[int]:
    return [v & 0xFF, v >> 8]


# ----------------------------------------------------------------------------------------------------
# inspect_block: independent re-packing of the fields and the dequantization formula
# ----------------------------------------------------------------------------------------------------


def _nibbles(lo_hi_codes, half):
    c = np.asarray(lo_hi_codes, dtype=np.int64)
    return [int(c[j] & 15 | (c[j + half] & 15) << 4) for j in range(half)]


def _qh(codes):
    return int(sum(((int(c) >> 4) & 1) << j for j, c in enumerate(codes)))


def _base3(trits):
    q = 0
    for t in trits:
        q = q * 3 + int(t)
    return q


def _repack(name, f):
    """Bytes of the block rebuilt from the inspect fields alone."""
    c = np.asarray(f["codes"], dtype=np.int64)
    if name == "Q4_0":
        return _le16(f["d_bits"]) + _nibbles(c, 16)
    if name == "Q4_1":
        return _le16(f["d_bits"]) + _le16(f["m_bits"]) + _nibbles(c, 16)
    if name == "Q5_0":
        assert f["qh"] == _qh(c)
        return _le16(f["d_bits"]) + list(_qh(c).to_bytes(4, "little")) + _nibbles(c, 16)
    if name == "Q5_1":
        assert f["qh"] == _qh(c)
        return _le16(f["d_bits"]) + _le16(f["m_bits"]) + list(_qh(c).to_bytes(4, "little")) + _nibbles(c, 16)
    if name == "Q8_0":
        return _le16(f["d_bits"]) + [int(v) & 0xFF for v in c]
    if name == "Q8_1":
        return _le16(f["d_bits"]) + _le16(f["s_bits"]) + [int(v) & 0xFF for v in c]
    if name == "Q1_0":
        return _le16(f["d_bits"]) + [int(sum(int(c[8 * k + t]) << t for t in range(8))) for k in range(16)]
    if name == "Q2_0":
        return _le16(f["d_bits"]) + [int(sum(int(c[4 * k + t]) << (2 * t) for t in range(4))) for k in range(16)]
    if name == "TQ1_0":
        # inspect gives trits in element order; a byte stores ceil(base3 * 256 / 243) of its trits
        qs = [-(-_base3(c[m + 32 * n] for n in range(5)) * 256 // 243) for m in range(32)]
        qs += [-(-_base3(c[160 + m + 16 * n] for n in range(5)) * 256 // 243) for m in range(16)]
        # a byte written by ggml round-trips through this formula; bytes that are not (random input)
        # are compared through their decoded trits only
        qh = [-(-_base3([c[240 + j + 4 * n] for n in range(4)] + [0]) * 256 // 243) for j in range(4)]
        assert list(f["qs"]) == qs and list(f["qh"]) == qh
        return qs + qh + _le16(f["d_bits"])
    if name == "TQ2_0":
        return [
            int(sum(int(c[128 * (b // 32) + 32 * n + b % 32]) << (2 * n) for n in range(4))) for b in range(64)
        ] + _le16(f["d_bits"])
    if name == "MXFP4":
        return [f["e"]] + _nibbles(c, 16)
    if name == "NVFP4":
        out = [int(v) for v in f["scales_raw"]]
        for s in range(4):
            out += _nibbles(c[16 * s : 16 * s + 16], 8)
        return out
    raise AssertionError(name)


def _values(name, f):
    """The dequantized block recomputed from the fields with the format's formula (float32)."""
    lv = np.asarray(f["levels"]).astype(np.float32)
    if name in ("Q4_1", "Q5_1"):
        assert np.array_equal(f["d"].view(np.uint32), _f16(f["d_bits"]).view(np.uint32)) or np.isnan(f["d"])
        return (lv * np.float32(f["d"])).astype(np.float32) + np.float32(f["m"])
    if name == "Q1_0":
        d = np.float32(f["d"])
        return np.where(np.asarray(f["codes"]) == 1, d, -d).astype(np.float32)
    if name == "MXFP4":
        assert f["d"] == np.float32(2.0) ** (f["e"] - 128) or f["e"] < 2  # 2**-128, 2**-127 subnormal
        return (KV[np.asarray(f["codes"])] * np.float32(f["d"])).astype(np.float32)
    if name == "NVFP4":
        sc = np.repeat(np.asarray(f["scales"], dtype=np.float32), 16)
        return (KV[np.asarray(f["codes"])] * sc).astype(np.float32)
    return (lv * np.float32(f["d"])).astype(np.float32)


def _blocks_for(name, g):
    f = get(name)
    n = 1536
    x = np.random.default_rng(11).standard_t(4, size=(2, n)).astype(np.float32) * np.float32(0.05)
    q = quantlab.quantize(x, name)
    raw = np.random.default_rng(12).integers(0, 256, size=(1, f.row_bytes(n)), dtype=np.uint8)
    if name in ("Q8_0", "Q8_1", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q1_0", "Q2_0", "TQ1_0", "TQ2_0"):
        # keep the fp16 scale fields finite in the random bytes (NaN payloads are covered by parity)
        ts = f.type_size
        rb = raw.reshape(-1, ts)
        offs = {"TQ1_0": [52], "TQ2_0": [64], "Q4_1": [0, 2], "Q5_1": [0, 2], "Q8_1": [0, 2]}.get(name, [0])
        for o in offs:
            rb[:, o + 1] &= 0x3F
    return q, raw


@pytest.mark.parametrize("name", ALL)
def test_inspect_block_fields_match_bytes_and_dequantize(name):
    f = get(name)
    q, raw = _blocks_for(name, None)
    for data, what in ((q, "quantized"), (raw, "random bytes")):
        flat = data.reshape(-1)
        nblocks = flat.size // f.type_size
        for i in (0, 1, nblocks // 2, nblocks - 1):
            info = quantlab.inspect_block(data, name, i)
            block = flat[i * f.type_size : (i + 1) * f.type_size]
            assert info["format"] == name and info["index"] == i
            assert_same(info["bytes"], block, f"{name} {what} block {i}: bytes")
            assert len(info["codes"]) == f.block_size and len(info["levels"]) == f.block_size
            if name == "TQ1_0" and what == "random bytes":
                pass  # arbitrary bytes are not all of the form ceil(q*256/243): checked via values below
            else:
                assert_same(np.array(_repack(name, info), dtype=np.uint8), block, f"{name} {what} block {i}: re-packed")
            if "d_bits" in info:
                assert_same(np.float32(info["d"]), _f16(info["d_bits"]), f"{name} d vs d_bits")
            deq = quantlab.dequantize(block, name, impl="reference").reshape(-1)
            assert_same(info["values"], deq, f"{name} {what} block {i}: values vs dequantize")
            assert_same(_values(name, info), deq, f"{name} {what} block {i}: formula from the fields")
    # negative indices count from the end, like Python
    last = quantlab.inspect_block(q, name, -1)
    assert_same(last["bytes"], q.reshape(-1)[-f.type_size :], f"{name} block -1")


# ----------------------------------------------------------------------------------------------------
# all-zero blocks (spec section 7.3)
# ----------------------------------------------------------------------------------------------------


def _zero_block(name):
    """The bytes of an all-zero block, derived from each quantizer's rule."""
    fp16 = lambda v: _le16(int(np.array([v], np.float16).view(np.uint16)[0]))  # noqa: E731
    neg_zero = fp16(np.float32(0.0) / np.float32(-8.0))  # max stays +0, 0 / -8 = -0.0
    if name == "Q4_0":  # id = 0, q = trunc(0 + 8.5) = 8 in both nibbles
        return neg_zero + [8 | 8 << 4] * 16
    if name == "Q5_0":  # q = trunc(0 + 16.5) = 16: low nibbles 0, every fifth bit set
        return neg_zero + [0xFF] * 4 + [0] * 16
    if name in ("Q4_1", "Q5_1", "Q8_0", "MXFP4", "NVFP4"):
        return [0] * get(name).type_size
    if name == "Q8_1":
        return [0] * 36
    if name == "Q1_0":  # d = 0, every bit set because 0 >= 0
        return fp16(0.0) + [0xFF] * 16
    if name == "Q2_0":  # q = round(0) + 1 = 1 in every 2-bit field
        return fp16(0.0) + [0b01010101] * 16
    if name == "TQ1_0":  # trit 1 everywhere: 11111 (base 3) = 121 -> ceil(121*256/243); qh: 1111 then *3
        return [-(-121 * 256 // 243)] * 48 + [-(-(40 * 3) * 256 // 243)] * 4 + fp16(0.0)
    if name == "TQ2_0":
        return [0b01010101] * 64 + fp16(0.0)
    raise AssertionError(name)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", ALL)
def test_all_zero_blocks(name, impl):
    f = get(name)
    n = 512
    x = np.zeros((2, n), np.float32)
    want = np.tile(np.array(_zero_block(name), dtype=np.uint8), (2, n // f.block_size))
    got = quantlab.quantize(x, name, impl=impl)
    assert_same(got, want, f"{name} {impl} all-zero pattern")
    ggml_q = _q8_1_ggml if name == "Q8_1" else (lambda a: oracle().quantize(a, f.id))
    assert_same(ggml_q(x), want, f"{name}: ggml's all-zero pattern")
    # -0.0 is not +0.0 for some of them (Q4_1/Q5_1 store min = -0.0): same bytes as ggml
    x[1] = -0.0
    assert_same(quantlab.quantize(x, name, impl=impl), ggml_q(x), f"{name} {impl} all -0.0 block")
    # and the zero blocks decode to zeros
    assert not quantlab.dequantize(want, name, impl=impl).any()


# ----------------------------------------------------------------------------------------------------
# Q8_1: ggml's quantize_row_q8_1_ref through the type traits
# ----------------------------------------------------------------------------------------------------


def _q8_1_ggml(x2d):
    g = oracle()
    tr = g.lib.ggml_get_type_traits(9).contents
    assert tr.from_float_ref, "ggml has no from_float_ref for Q8_1"
    fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(tr.from_float_ref)
    x2d = np.ascontiguousarray(x2d, dtype=np.float32)
    out = np.zeros((x2d.shape[0], x2d.shape[1] // 32 * 36), dtype=np.uint8)
    fn(x2d.ctypes.data, out.ctypes.data, x2d.size)
    return out


@pytest.mark.parametrize("impl", IMPLS)
def test_q8_1_quantize_matches_ggml_ref(impl):
    n = 256
    for cname, x in float_cases(n, seeds=(0, 1)):
        want = _q8_1_ggml(x.reshape(-1, n)).reshape(*x.shape[:-1], -1)
        assert_same(quantlab.quantize(x, "Q8_1", impl=impl), want, f"Q8_1 {impl} [{cname}]")


@pytest.mark.parametrize("impl", IMPLS)
def test_q8_1_dequantize_and_sum_field(impl):
    x = np.random.default_rng(4).standard_normal((3, 256)).astype(np.float32)
    q = quantlab.quantize(x, "Q8_1", impl=impl)
    y = quantlab.dequantize(q, "Q8_1", impl=impl)
    b = q.reshape(-1, 36)
    d = b[:, 0:2].copy().view(np.float16).astype(np.float32)
    s = b[:, 2:4].copy().view(np.float16)
    codes = b[:, 4:].view(np.int8)
    assert_same(y.reshape(-1, 32), (codes.astype(np.float32) * d).astype(np.float32), "Q8_1 x = q * d")
    # s uses the float32 scale before its fp16 rounding: d32 = max|x| / 127 of the block
    d32 = (np.max(np.abs(x.reshape(-1, 32)), axis=1) / np.float32(127)).astype(np.float32)[:, None]
    want_s = (codes.astype(np.int64).sum(axis=1).astype(np.float32)[:, None] * d32).astype(np.float16)
    assert_same(s.view(np.uint16), want_s.view(np.uint16), "Q8_1 s = fp16(d * sum q)")
    # Q8_1's codes and d are exactly Q8_0's
    q80 = quantlab.quantize(x, "Q8_0", impl=impl).reshape(-1, 34)
    assert_same(b[:, 4:], q80[:, 2:], "Q8_1 codes == Q8_0 codes")
    assert_same(b[:, :2], q80[:, :2], "Q8_1 d == Q8_0 d")


# ----------------------------------------------------------------------------------------------------
# numeric corner cases against ggml
# ----------------------------------------------------------------------------------------------------


def _corner_cases(n):
    rng = np.random.default_rng(21)
    yield "subnormal", (rng.standard_normal((2, n)) * 1e-40).astype(np.float32)
    yield "1/d overflows", (rng.standard_normal((2, n)) * 1e-39).astype(np.float32)
    yield "3e-38", (rng.standard_normal((2, n)) * 3e-38).astype(np.float32)
    s = np.zeros((2, n), np.float32)
    s[:, ::37] = np.float32(1e-45)
    yield "lone subnormals", s
    big = (np.clip(rng.standard_normal((2, n)), -3, 3) * 1e38).astype(np.float32)
    big[0, 3], big[1, 5] = np.float32(3.4e38), np.float32(-3.4e38)
    yield "near FLT_MAX", big
    m = rng.standard_normal((2, n)).astype(np.float32)
    m[:, ::2] = 0.0
    m[1, ::3] = -0.0
    yield "zeros and -0.0", m
    yield "ties", (rng.integers(-16, 17, (3, n)) * 0.125).astype(np.float32)
    # blocks whose extreme is a zero of either sign: ggml's scans keep the FIRST zero they meet (the _1
    # formats store it as m, the _0 formats keep +0.0 for an all-zero block), and blocks of |x| ties
    z = np.zeros((6, n), np.float32)
    z[0] = -0.0  # all -0.0
    z[1, ::2] = -0.0  # -0.0 first, then +0.0
    z[2, 1::2] = -0.0  # +0.0 first, then -0.0
    pos = np.abs(rng.standard_normal(n)).astype(np.float32)
    z[3], z[4] = pos, -pos
    z[3, 3::32], z[3, 7::32] = -0.0, 0.0  # the minimum is a zero, -0.0 first
    z[4, 3::32], z[4, 7::32] = 0.0, -0.0  # the maximum is a zero, +0.0 first
    z[5] = np.where(np.arange(n) % 5 == 0, -2.0, 2.0)  # |x| ties of both signs
    yield "signed zeros as extremes", z


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", WITH_GGML)
def test_corner_cases_match_ggml(name, impl):
    f = get(name)
    g = oracle()
    n = 256
    ims = [None]
    if f.uses_imatrix:
        ims.append((np.random.default_rng(5).random(n) + 0.1).astype(np.float32))
    for cname, x in _corner_cases(n):
        for im in ims:
            want = g.quantize(x, f.id, im)
            tag = f"{name} {impl} [{cname}{', imatrix' if im is not None else ''}]"
            got = quantlab.quantize(x, name, imatrix=im, impl=impl)
            assert_same(got, want, tag)
            assert_same(quantlab.dequantize(want, name, impl=impl), g.dequantize(want, f.id, n), tag + " dequantize")


@pytest.mark.parametrize("impl", IMPLS)
def test_mxfp4_exponent_where_log2f_rounds_up(impl):
    """floor(log2f(amax)) is one more than the true exponent for the few largest mantissas of a binade
    (log2f rounds up to the integer): the largest 48 values of many binades, subnormals included."""
    g = oracle()
    vals = []
    for p in (
        -149,
        -140,
        -133,
        -131,
        -127,
        -126,
        -125,
        -100,
        -64,
        -33,
        -9,
        -3,
        -1,
        0,
        1,
        2,
        4,
        8,
        31,
        64,
        100,
        126,
        127,
    ):
        bot, top = ((p + 127) << 23, (p + 128) << 23) if p >= -126 else (1 << (p + 149), 1 << (p + 150))
        vals.append(np.arange(max(bot, top - 48), top, dtype=np.uint32))
        vals.append(np.array([bot], dtype=np.uint32))
    amax = np.concatenate(vals).view(np.float32)
    x = np.zeros((amax.size, 32), np.float32)
    x[:, 7] = amax
    x[1::2, 7] *= -1
    assert_same(quantlab.quantize(x, "MXFP4", impl=impl), g.quantize(x, 39), f"MXFP4 {impl} exponent byte")


# ----------------------------------------------------------------------------------------------------
# real weights
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    t = quantlab.data.tensors("minilm")
    w = t["encoder.layer.0.output.dense.weight"][:12]  # 12 rows of 1536 = 6 * 256
    emb = t["embeddings.word_embeddings.weight"]
    # a stand-in importance matrix with a real spread: mean square of the FFN's input-side weights
    im = np.mean(np.square(t["encoder.layer.0.intermediate.dense.weight"]), axis=0)  # (384,)
    im = np.tile(im, 4).astype(np.float32)
    return w, im, emb[:8, :]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", ALL)
def test_real_weights_match_ggml(name, impl, minilm):
    w, im, emb = minilm
    f = get(name)
    g = oracle()
    if name == "Q8_1":
        assert_same(quantlab.quantize(w, name, impl=impl), _q8_1_ggml(w), f"Q8_1 {impl} minilm")
        return
    for x, what in ((w, "ffn output"), (emb if f.block_size <= 128 else w, "word embeddings")):
        n = x.shape[1]
        q = quantlab.quantize(x, name, impl=impl)
        assert_same(q, g.quantize(x, f.id), f"{name} {impl} minilm {what}")
        assert_same(
            quantlab.dequantize(q, name, impl=impl), g.dequantize(q, f.id, n), f"{name} {impl} dequantize {what}"
        )
    if f.uses_imatrix:
        qi = quantlab.quantize(w, name, imatrix=im, impl=impl)
        assert_same(qi, g.quantize(w, f.id, im), f"{name} {impl} minilm with imatrix")
        assert not np.array_equal(qi, quantlab.quantize(w, name, impl=impl)), (
            f"{name}: the imatrix path should give different bytes from the reference path"
        )


@pytest.mark.parametrize("name", IMATRIX)
def test_imatrix_lowers_weighted_error(name, minilm):
    """The _impl search minimises the imatrix-weighted squared error; on real weights it should do
    better on that measure than the plain reference quantizer."""
    w, im, _ = minilm
    n = w.shape[1]
    sigma2 = np.mean(w * w, axis=1, keepdims=True)
    wt = im[None, :] * np.sqrt(sigma2 + w * w)
    err = {}
    for tag, imx in (("ref", None), ("impl", im)):
        y = quantlab.dequantize(quantlab.quantize(w, name, imatrix=imx), name)
        err[tag] = float(np.sum(wt * (y - w) ** 2))
    assert y.shape == (w.shape[0], n)
    assert err["impl"] < err["ref"], f"{name}: weighted error {err}"


@pytest.mark.parametrize("name", ["Q8_0", "Q1_0", "Q2_0", "TQ1_0", "TQ2_0", "MXFP4", "NVFP4"])
def test_imatrix_is_ignored_like_ggml(name, minilm):
    w, im, _ = minilm
    f = get(name)
    a = quantlab.quantize(w, name, imatrix=im)
    assert_same(a, quantlab.quantize(w, name), f"{name} with vs without imatrix")
    assert_same(a, oracle().quantize(w, f.id, im), f"{name} vs ggml given the imatrix")


# ----------------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_bad_input_raises_named_errors(name):
    f = get(name)
    n = max(256, f.block_size)
    with pytest.raises(errors.ShapeError, match=str(f.block_size)):
        quantlab.quantize(np.zeros((2, n + 16), np.float32), name)
    x = np.ones((2, n), np.float32)
    x[1, 3] = np.nan
    with pytest.raises(errors.NonFiniteError, match="NaN"):
        quantlab.quantize(x, name)
    x[1, 3] = np.inf
    with pytest.raises(errors.NonFiniteError):
        quantlab.quantize(x, name, impl="reference")
    with pytest.raises(errors.ImatrixError, match=str(n)):
        quantlab.quantize(np.ones((2, n), np.float32), name, imatrix=np.ones(n - 1, np.float32))
    with pytest.raises(errors.ShapeError, match=str(f.type_size)):
        quantlab.dequantize(np.zeros((2, f.type_size + 1), np.uint8), name)
    with pytest.raises(errors.ShapeError, match="out of range"):
        quantlab.inspect_block(np.zeros(2 * f.type_size, np.uint8), name, 2)
    with pytest.raises(errors.ShapeError):
        quantlab.dequantize(np.zeros((2, f.type_size), np.float32), name)
