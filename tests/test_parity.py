"""Bit-exactness against ggml, format by format, reference AND numba: bytes, not tolerances.

Driven by the registry: a new format is tested as soon as it is in the registry. A format without a
registered implementation FAILS here (and in tests/test_registry.py): it is never skipped, never passed.
"""

from __future__ import annotations

import numpy as np
import pytest

import quantlab
from quantlab.errors import QuantizationError
from quantlab.formats import all_formats

from .cases import GGML_ABORTS, float_cases, imatrix_cases
from .conftest import assert_same
from .oracle import oracle

# ggml's quantize_chunk covers every storage type; integer types have no ggml conversion to compare with.
QUANT_FORMATS = [f for f in all_formats() if f.name not in ("I8", "I16", "I32", "I64", "F64", "Q8_1", "Q8_K")]
# Types whose ggml dequantizer (type_traits.to_float) exists.
DEQUANT_FORMATS = [f for f in all_formats() if f.name not in ("F32", "I8", "I16", "I32", "I64", "F64", "Q8_1", "Q8_K")]


def _n_for(f):
    return max(f.block_size, 256) * 2 if f.block_size > 1 else 512


def _need(f, kind, op):
    f.impl(kind, op)  # FormatError (a failure) when the family module registers none


@pytest.mark.parametrize("impl", ["reference", "fast"])
@pytest.mark.parametrize("f", QUANT_FORMATS, ids=lambda f: f.name)
def test_quantize_matches_ggml(f, impl):
    _need(f, impl, "quantize")
    g = oracle()
    n = _n_for(f)
    for cname, x in float_cases(n):
        for iname, im in imatrix_cases(n):
            if im is None and f.requires_imatrix:
                continue
            if im is not None and not f.uses_imatrix and iname != "imatrix":
                continue
            if (f.name, cname) in GGML_ABORTS:  # ggml aborts here; quantlab must raise instead
                with pytest.raises(QuantizationError):
                    quantlab.quantize(x, f, imatrix=im, impl=impl)
                continue
            want = g.quantize(x.reshape(-1, n), f.id, im).reshape(*x.shape[:-1], -1)
            got = quantlab.quantize(x, f, imatrix=im, impl=impl)
            assert_same(got, want, f"{f.name} {impl} quantize [{cname}, {iname}]")


@pytest.mark.parametrize("impl", ["reference", "fast"])
@pytest.mark.parametrize("f", DEQUANT_FORMATS, ids=lambda f: f.name)
def test_dequantize_matches_ggml(f, impl):
    _need(f, impl, "dequantize")
    g = oracle()
    n = _n_for(f)
    rng = np.random.default_rng(3)
    # random bytes exercise every code and scale pattern (NaN/inf scales included)
    raw = rng.integers(0, 256, size=(6, f.row_bytes(n)), dtype=np.uint8)
    datasets = [("random bytes", raw)]
    if f.has_impl("reference", "quantize") and not f.requires_imatrix:
        x = rng.standard_normal((4, n)).astype(np.float32)
        datasets.append(("quantized gauss", g.quantize(x, f.id, None)))
    for dname, q in datasets:
        want = g.dequantize(q, f.id, n)
        got = quantlab.dequantize(q, f, impl=impl)
        assert_same(got, want, f"{f.name} {impl} dequantize [{dname}]")


@pytest.mark.parametrize("f", QUANT_FORMATS, ids=lambda f: f.name)
def test_threads_never_change_a_byte(f):
    _need(f, "fast", "quantize")
    n = _n_for(f)
    x = (np.random.default_rng(5).standard_t(4, size=(9, n))).astype(np.float32)
    im = np.linspace(0.1, 2.0, n, dtype=np.float32) if f.uses_imatrix else None
    one = quantlab.quantize(x, f, imatrix=im, threads=1)
    two = quantlab.quantize(x, f, imatrix=im, threads=2)
    assert_same(one, two, f"{f.name} threads=1 vs threads=2")
