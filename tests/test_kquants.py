"""K-quants (Q2_K Q3_K Q4_K Q5_K Q6_K Q8_K) beyond the registry-driven parity suite.

* real weights: every 2-D weight tensor of all-MiniLM-L6-v2 (fp32) and of SmolLM2-135M (dequantized
  from its GGUF), flattened into rows of 1024 (256 for tiny tensors), sampled evenly so that the file
  stays fast; numba vs ggml bytes for every tensor, with and without an imatrix; the numpy reference on
  a smaller subsample of every tensor;
* Q8_K against ggml's own quantize_row_q8_K_ref / dequantize_row_q8_K (not reachable through
  ggml_quantize_chunk / type traits, so called directly);
* inspect_block: every decoded field re-assembled by hand gives ggml's dequantized values bit for bit;
* error cases: a row that is not a multiple of 256, a wrong-length imatrix.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

import quantlab
from quantlab.errors import ImatrixError, ShapeError
from quantlab.formats.registry import get

from .cases import float_cases
from .oracle import oracle

K_TYPES = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
FAST_ROWS = 4  # rows of 1024 per tensor checked with numba
REF_ROWS = 1  # rows of 1024 per tensor checked with the numpy reference


def _rows_of(flat: np.ndarray, nrows: int) -> tuple[np.ndarray, int]:
    """``nrows`` evenly spaced rows of 1024 (or 256 for tensors smaller than 4096 values)."""
    n = 1024 if flat.size >= 4096 else 256
    m = flat[: flat.size // n * n].reshape(-1, n)
    idx = np.unique(np.linspace(0, m.shape[0] - 1, min(nrows, m.shape[0])).round().astype(int))
    return np.ascontiguousarray(m[idx]), n


def _minilm_samples(nrows):
    from quantlab import data

    try:
        ts = data.tensors("minilm")
    except quantlab.errors.DataMissing as e:  # pragma: no cover - depends on the installation
        pytest.skip(str(e))
    out = {}
    for k in ts:
        if not k.endswith("weight"):
            continue
        a = ts[k]
        if a.ndim == 2 and a.size >= 256:
            out[k] = _rows_of(a.reshape(-1), nrows)
    return out


_SMOL_CACHE: dict = {}


def _smollm2_samples(nrows):
    """SmolLM2's 2-D tensors: only the raw rows needed are dequantized (gguf-py), then flattened."""
    import gguf

    from quantlab import data

    if "reader" not in _SMOL_CACHE:
        try:
            _SMOL_CACHE["reader"] = gguf.GGUFReader(str(data.path("smollm2")))
        except quantlab.errors.DataMissing as e:  # pragma: no cover
            pytest.skip(str(e))
    r = _SMOL_CACHE["reader"]
    out = {}
    for t in r.tensors:
        if len(t.shape) != 2 or int(t.shape[1]) < 2:
            continue
        ne0 = int(t.shape[0])
        need = -(-1024 * nrows // ne0)  # raw rows to cover nrows*1024 values
        pick = np.unique(np.linspace(0, t.data.shape[0] - 1, need).round().astype(int))
        raw = np.asarray(t.data[pick])
        vals = gguf.quants.dequantize(raw, t.tensor_type).astype(np.float32).reshape(-1)
        out[t.name] = _rows_of(vals, nrows)
    return out


def _stack(samples):
    """Group the samples by row length: {n: (x, [(name, first row, last row), ...])}."""
    groups: dict = {}
    for name, (x, n) in samples.items():
        rows, spans = groups.setdefault(n, ([], []))
        start = sum(len(r) for r in rows)
        rows.append(x)
        spans.append((name, start, start + len(x)))
    return {n: (np.concatenate(rows), spans) for n, (rows, spans) in groups.items()}


def _synthetic_imatrix(n):
    rng = np.random.default_rng(n)
    return (rng.gamma(0.7, 1.0, n) + 1e-3).astype(np.float32)  # positive, skewed like real ones


def _compare(got, want, spans, what):
    bad = [name for name, a, b in spans if not np.array_equal(got[a:b], want[a:b])]
    assert not bad, f"{what}: bytes differ from ggml for {len(bad)} tensors, e.g. {bad[:5]}"


@pytest.fixture(scope="module", params=["minilm", "smollm2"])
def model_samples(request):
    load = _minilm_samples if request.param == "minilm" else _smollm2_samples
    fast = _stack(load(FAST_ROWS))
    ref = _stack(load(REF_ROWS))
    ntensors = sum(len(s) for _, s in fast.values())
    assert ntensors >= (40 if request.param == "minilm" else 200)
    return request.param, fast, ref


@pytest.mark.parametrize("fmt", K_TYPES)
def test_real_weights_fast_and_reference_match_ggml(model_samples, fmt):
    model, fast, ref = model_samples
    g = oracle()
    f = get(fmt)
    for n, (x, spans) in fast.items():
        for im in (None, _synthetic_imatrix(n)):
            tag = f"{model} {fmt} n={n} {'imatrix' if im is not None else 'no imatrix'}"
            want = g.quantize(x, f.id, im)
            got = quantlab.quantize(x, f, imatrix=im, impl="fast")
            _compare(got, want, spans, tag + " (numba)")
            deq = quantlab.dequantize(want, f, impl="fast")
            _compare(
                deq.view(np.uint32), g.dequantize(want, f.id, n).view(np.uint32), spans, tag + " dequantize (numba)"
            )
    for n, (x, spans) in ref.items():
        for im in (None, _synthetic_imatrix(n)):
            tag = f"{model} {fmt} n={n} {'imatrix' if im is not None else 'no imatrix'}"
            want = g.quantize(x, f.id, im)
            _compare(quantlab.quantize(x, f, imatrix=im, impl="reference"), want, spans, tag + " (reference)")
            _compare(
                quantlab.dequantize(want, f, impl="reference").view(np.uint32),
                g.dequantize(want, f.id, n).view(np.uint32),
                spans,
                tag + " dequantize (reference)",
            )


# --------------------------------------------------------------------------------------------- Q8_K


def _q8_k_oracle():
    lib = oracle().lib
    lib.quantize_row_q8_K_ref.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    lib.quantize_row_q8_K_ref.restype = None
    lib.dequantize_row_q8_K.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    lib.dequantize_row_q8_K.restype = None

    def quant(x):
        x = np.ascontiguousarray(x, np.float32)
        out = np.zeros((x.shape[0], x.shape[1] // 256 * 292), np.uint8)  # bsums of zero blocks: 0
        lib.quantize_row_q8_K_ref(x.ctypes.data, out.ctypes.data, x.size)
        return out

    def deq(q, n):
        q = np.ascontiguousarray(q)
        y = np.empty((q.shape[0], n), np.float32)
        lib.dequantize_row_q8_K(q.ctypes.data, y.ctypes.data, y.size)
        return y

    return quant, deq


@pytest.mark.parametrize("impl", ["reference", "fast"])
def test_q8_k_matches_ggml(impl):
    quant, deq = _q8_k_oracle()
    cases = list(float_cases(512))
    real = _minilm_samples(2)
    cases += [(k, v[0]) for k, v in list(real.items())[:12] if v[1] == 1024]
    for name, x in cases:
        x2 = x.reshape(-1, x.shape[-1])
        want = quant(x2)
        got = quantlab.quantize(x2, "Q8_K", impl=impl)
        assert np.array_equal(got, want), f"Q8_K {impl} quantize [{name}]"
        y = quantlab.dequantize(want, "Q8_K", impl=impl)
        assert np.array_equal(y.view(np.uint32), deq(want, x2.shape[1]).view(np.uint32)), (
            f"Q8_K {impl} dequantize [{name}]"
        )
    raw = np.random.default_rng(9).integers(0, 256, size=(5, 2 * 292), dtype=np.uint8)
    raw[:, 0:4] = np.frombuffer(np.float32([0.5, -3e-3, 1e30, 7e-41, 0.0]).tobytes(), np.uint8).reshape(5, 4)
    assert np.array_equal(quantlab.dequantize(raw, "Q8_K", impl=impl).view(np.uint32), deq(raw, 512).view(np.uint32))


def test_q8_k_bsums_are_sums_of_codes():
    x = np.random.default_rng(1).standard_normal((3, 512)).astype(np.float32)
    q = quantlab.quantize(x, "Q8_K")
    for b in range(6):
        info = quantlab.inspect_block(q, "Q8_K", b)
        assert np.array_equal(info["bsums"], info["codes"].reshape(16, 16).sum(axis=1))


# ------------------------------------------------------------------------------------ inspect_block


def _f16_at(block, off):
    return np.float32(np.frombuffer(bytes(block[off : off + 2]), np.float16)[0])


def _rebuild(fmt, info, block):
    """Re-assemble the 256 values from the decoded fields with ggml's formula and operation order."""
    codes = np.asarray(info["codes"], np.int64).astype(np.float32)
    F = np.float32
    if fmt in ("Q2_K", "Q4_K", "Q5_K"):
        sub = 16 if fmt == "Q2_K" else 32
        dl = F(info["d"]) * np.asarray(info["scales"]).astype(np.float32)
        ml = F(info["dmin"]) * np.asarray(info["mins"]).astype(np.float32)
        assert np.array_equal(dl, info["scales_applied"]) and np.array_equal(ml, info["mins_applied"])
        return (np.repeat(dl, sub) * codes - np.repeat(ml, sub)).astype(np.float32)
    if fmt in ("Q3_K", "Q6_K"):
        dl = F(info["d"]) * np.asarray(info["scales"]).astype(np.float32)
        assert np.array_equal(dl, info["scales_applied"])
        return (np.repeat(dl, 16) * codes).astype(np.float32)
    return (F(info["d"]) * codes).astype(np.float32)


@pytest.mark.parametrize("fmt", K_TYPES)
def test_inspect_block_fields_rebuild_ggml_values(fmt):
    g = oracle()
    f = get(fmt)
    x = (np.random.default_rng(4).standard_t(4, size=(2, 512)) * 0.05).astype(np.float32)
    x[1, 300] = 2.0
    q = g.quantize(x, f.id, None)
    want = g.dequantize(q, f.id, 512).reshape(-1, 256)
    for b in range(4):
        info = quantlab.inspect_block(q, fmt, b)
        block = q.reshape(-1)[b * f.type_size : (b + 1) * f.type_size]
        assert np.array_equal(info["bytes"], block)
        assert np.array_equal(np.asarray(info["values"]).view(np.uint32), want[b].view(np.uint32))
        assert np.array_equal(_rebuild(fmt, info, block).view(np.uint32), want[b].view(np.uint32))
        d_off = {"Q2_K": 80, "Q3_K": 108, "Q4_K": 0, "Q5_K": 0, "Q6_K": 208}[fmt]
        assert np.float32(info["d"]) == _f16_at(block, d_off)
        codes = np.asarray(info["codes"])
        lo, hi = {"Q2_K": (0, 3), "Q3_K": (-4, 3), "Q4_K": (0, 15), "Q5_K": (0, 31), "Q6_K": (-32, 31)}[fmt]
        assert codes.shape == (256,) and codes.min() >= lo and codes.max() <= hi


def test_inspect_q4_k_scales_and_mins_six_bits():
    """Q4_K: the eight 6-bit scales/mins decoded by hand from the 12 scale bytes (spec 2.3)."""
    x = np.random.default_rng(11).standard_normal((1, 256)).astype(np.float32) * np.float32(0.1)
    x[0, 200:232] += np.float32(3.0)  # one sub-block with a large scale and offset
    q = quantlab.quantize(x, "Q4_K")
    info = quantlab.inspect_block(q, "Q4_K", 0)
    S = q[0, 4:16].astype(int)
    sc = [S[j] & 63 if j < 4 else (S[j + 4] & 15) | ((S[j - 4] >> 6) << 4) for j in range(8)]
    mn = [S[j + 4] & 63 if j < 4 else (S[j + 4] >> 4) | ((S[j] >> 6) << 4) for j in range(8)]
    assert list(info["scales"]) == sc and list(info["mins"]) == mn
    assert max(sc) == 63  # the largest sub-block scale maps to 63
    assert np.float32(info["dmin"]) == _f16_at(q[0], 2)
    lo = q[0, 16:144] & 15
    assert np.array_equal(info["codes"][0:32], lo[0:32])
    assert np.array_equal(info["codes"][32:64], q[0, 16:48] >> 4)


# ------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("fmt", K_TYPES + ["Q8_K"])
def test_row_not_multiple_of_256_is_a_shape_error(fmt):
    x = np.zeros((2, 300), np.float32)
    with pytest.raises(ShapeError) as e:
        quantlab.quantize(x, fmt)
    msg = str(e.value)
    assert "256" in msg and "300" in msg and "32-block" in msg and "Q4_0" in msg


def test_imatrix_of_wrong_length_is_an_imatrix_error():
    x = np.zeros((2, 512), np.float32)
    with pytest.raises(ImatrixError, match="512"):
        quantlab.quantize(x, "Q4_K", imatrix=np.ones(256, np.float32))
