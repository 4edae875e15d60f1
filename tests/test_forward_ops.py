"""The ops of quantlab's forward pass equal ggml-cpu's bit for bit (llama.cpp 0.3.36's AVX2 + FMA build, the
oracle's libggml-cpu, one thread): flash attention on both of ggml's paths, RoPE, RMSNorm, SwiGLU, GeGLU and
the integer matrix products of the formats whose AVX2 dot products quantlab follows. This is what makes a
whole forward equal llama.cpp's (tests/test_arch.py): SmolLM2's 8-bit activation roundings turn any one-ulp
difference into a different model output downstream.

Each case builds a one-op ggml graph through ctypes (tests/oracle.GgmlCpu) and compares the float32 bits.
"""

from __future__ import annotations

import ctypes as C
from types import SimpleNamespace

import numpy as np
import pytest
from numba import njit

from quantlab.api import quantize
from quantlab.formats.registry import get
from quantlab.kernels import _rows, attn
from quantlab.kernels import llama as lk
from quantlab.kernels.ggml_float import v_expf
from quantlab.model import blocks

from .oracle import GgmlCpu

VP = C.c_void_p
F32, F16, I32 = 0, 1, 26


@pytest.fixture(scope="module")
def ggml():
    g = GgmlCpu()
    lib = g.base
    for name, args in {
        "ggml_rms_norm": [VP, VP, C.c_float],
        "ggml_mul": [VP, VP, VP],
        "ggml_mul_mat": [VP, VP, VP],
        "ggml_swiglu_split": [VP, VP, VP],
        "ggml_geglu_split": [VP, VP, VP],
        "ggml_rope_ext": [VP, VP, VP, VP, C.c_int, C.c_int, C.c_int] + [C.c_float] * 6,
    }.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, VP
    return g


def _same_bits(ref, got):
    got = np.asarray(got, dtype=np.float32)
    bad = ref.view(np.uint32) != got.view(np.uint32)
    assert not bad.any(), f"{bad.sum()} of {bad.size} values differ (max |d| {np.abs(ref - got).max():.3g})"


@pytest.mark.parametrize(
    "T,pos0,D,n_swa",
    [
        (1, 40, 64, 0),
        (5, 300, 64, 0),
        (3, 0, 80, 0),
        (2, 200, 64, 64),
        (70, 0, 64, 0),
        (128, 64, 80, 0),
        (96, 0, 64, 50),
        (101, 30, 64, 0),
        (66, 3, 128, 40),
    ],
    ids=["gen-1", "gen-5", "gen-D80", "gen-swa", "tiled-70", "tiled-D80", "tiled-swa", "tiled-straddle", "tiled-D128"],
)
def test_attention_is_ggml_flash_attn_ext(ggml, T, pos0, D, n_swa):
    """Fewer than 64 query rows: ggml's one-row path (Q and the accumulator in fp16); 64 or more: its tiled
    path (float32, ggml's vector exp); GQA 4 query heads on 2 kv heads; the causal / sliding-window mask."""
    rng = np.random.default_rng(T * 1000 + pos0)
    H, Hkv, N = 4, 2, pos0 + T
    q = (rng.standard_normal((T, H, D)) * 3).astype(np.float32)
    kc = (rng.standard_normal((N, Hkv, D)) * 3).astype(np.float16).view(np.uint16)
    vc = rng.standard_normal((N, Hkv, D)).astype(np.float16).view(np.uint16)
    pos, kp = np.arange(pos0, N)[:, None], np.arange(N)[None, :]
    hidden = (kp > pos) | ((pos - kp >= n_swa) if n_swa else False)
    mask = np.where(hidden, -np.inf, 0).astype(np.float16)
    ref = ggml.flash_attn_ext(q.transpose(1, 0, 2), kc.transpose(1, 0, 2), vc.transpose(1, 0, 2), mask, 0.125)
    _same_bits(ref, attn.attention(q, kc, vc, pos0, np.float32(0.125), n_swa))


@njit
def _tile_softmax_steps(kq, m, scale, lo, hi):
    mx = attn._scale_mask_max(kq, 0, scale, lo, hi)
    tot = attn._exp_row(kq, 1, m)
    return mx, tot


@njit
def _scalar_exp(x, m, out):
    for i in range(x.shape[0]):
        out[i] = v_expf(x[i] - m)


def test_vector_softmax_steps_are_the_scalar_ones():
    """The tiled path's vector exp (ggml_v_expf as 16-lane selects) and scale/mask/max give the scalar
    kernel's bits on every branch of ggml_v_expf: |n| <= 126, 126 < |n| <= 192, beyond, -inf, NaN."""
    x = np.array(
        [0, -0.0, 1e-30, -1, 3.5, -20, -87.3, -88.9, -100, -130, -150, -190, -200, -1e30, -np.inf, np.nan, 88, 89]
        + list(np.random.default_rng(5).uniform(-160, 40, 46)),
        dtype=np.float32,
    )
    kq = np.stack([x, x]).astype(np.float32)
    want = np.empty(64, np.float32)
    _scalar_exp(x, np.float32(0.5), want)
    mx, tot = _tile_softmax_steps(kq, np.float32(0.5), np.float32(0.25), 3, 60)
    assert np.array_equal(kq[1].view(np.uint32), want.view(np.uint32))
    want_tot = 0.0  # ggml_vec_soft_max_f32's sum, as attention_tiled writes it
    with np.errstate(all="ignore"):  # the NaN input, large exps
        for i0 in range(0, 64, 8):
            k = want[i0 : i0 + 8]
            want_tot += np.float64(((k[0] + k[4]) + (k[2] + k[6])) + ((k[1] + k[5]) + (k[3] + k[7])))
    assert np.array_equal(np.float64(tot), np.float64(want_tot), equal_nan=True)
    kq2 = np.stack([x, np.minimum(np.nan_to_num(x, nan=-3.0), 60)]).astype(np.float32)  # a finite sum too
    _scalar_exp(kq2[1].copy(), np.float32(0.5), want)
    want_tot = 0.0
    with np.errstate(all="ignore"):
        for i0 in range(0, 64, 8):
            k = want[i0 : i0 + 8]
            want_tot += np.float64(((k[0] + k[4]) + (k[2] + k[6])) + ((k[1] + k[5]) + (k[3] + k[7])))
    _, tot = _tile_softmax_steps(kq2, np.float32(0.5), np.float32(0.25), 3, 60)
    assert np.isfinite(want_tot) and np.float64(tot) == want_tot
    ref = np.where((np.arange(64) < 3) | (np.arange(64) > 60), -np.inf, x * np.float32(0.25)).astype(np.float32)
    assert np.array_equal(kq[0].view(np.uint32), ref.view(np.uint32))
    assert mx == np.nanmax(ref)


@pytest.mark.parametrize(
    "D,base,neox,ff,mscale",
    [
        (64, 10000.0, False, None, 1.0),
        (64, 1e5, True, None, 1.0),
        (64, 1e5, False, "ramp", 1.0),
        (96, 1e4, True, "ramp", 1.19),
    ],
    ids=["normal", "neox", "freq-factors", "longrope"],
)
def test_rope_is_ggml_rope_ext(ggml, D, base, neox, ff, mscale):
    rng = np.random.default_rng(D)
    T, H, p0 = 6, 3, 250
    x = (rng.standard_normal((T, H, D)) * 4).astype(np.float32)
    pos = np.arange(p0, p0 + T, dtype=np.int32)
    ffv = np.linspace(1, 8, D // 2).astype(np.float32) if ff else None
    ins = [(x, F32), (pos, I32)] + ([(ffv, F32)] if ff else [])
    ref = ggml.compute(
        lambda lib, ctx, t: lib.ggml_rope_ext(
            ctx, t[0], t[1], t[2] if ff else None, D, 2 if neox else 0, 4096, base, 1.0, 0.0, mscale, 32.0, 1.0
        ),
        ins,
        (T, H, D),
    )
    q, k = x.copy(), x[:, :1].copy()
    kc = np.zeros((p0 + T, 1, D), np.uint16)
    ops = blocks.Ops(type("cfg", (), {"eps": 1e-5})(), pos.astype(np.int64))
    ops.rope_store(q, k, k.copy(), kc, kc.copy(), p0, blocks.Rope(D, base, 1.0, neox, ffv, mscale))
    _same_bits(ref, q)


def test_rms_norm_swiglu_geglu_are_ggml(ggml):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((5, 576)) * 5).astype(np.float32)
    x[:, 7] = 300.0  # SmolLM2-like outlier channel
    w = rng.standard_normal(576).astype(np.float32)
    ref = ggml.compute(
        lambda lib, c, t: lib.ggml_mul(c, lib.ggml_rms_norm(c, t[0], 1e-5), t[1]), [(x, F32), (w, F32)], x.shape
    )
    h = np.empty_like(x)
    lk.rms_norm(x, w, 1e-5, h)
    _same_bits(ref, h)
    g = (rng.standard_normal((3, 1541)) * 4).astype(np.float32)  # 1541: runs of 8 and a libm tail
    u = rng.standard_normal((3, 1541)).astype(np.float32)
    ref = ggml.compute(lambda lib, c, t: lib.ggml_swiglu_split(c, t[0], t[1]), [(g, F32), (u, F32)], g.shape)
    o = np.empty_like(g)
    lk.swiglu(g, u, o)
    _same_bits(ref, o)
    # GeGLU on every finite fp16 input: ggml's table of GELU values
    v = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)
    v = v[np.isfinite(v)][: 992 * 64].reshape(992, 64)
    ones = np.ones_like(v)
    ref = ggml.compute(lambda lib, c, t: lib.ggml_geglu_split(c, t[0], t[1]), [(v, F32), (ones, F32)], v.shape)
    o = np.empty_like(v)
    lk.geglu(v, ones, blocks.gelu_table(), o)
    _same_bits(ref, o)


@pytest.mark.parametrize("fmt", ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"])
@pytest.mark.parametrize("T", [1, 3, 64])
def test_integer_products_are_ggml_mul_mat(ggml, fmt, T):
    """One token, a few, a prompt batch: the same vec_dot sums (ggml_vec_dot_*_q8_* AVX2: blocks fused
    into 8 float lanes, one horizontal sum) for any number of rows."""
    f = get(fmt)
    rng = np.random.default_rng(T)
    E, R = 512, 96
    Wq = quantize(rng.standard_normal((R, E)).astype(np.float32), fmt)
    x = (rng.standard_normal((T, E)) * 3).astype(np.float32)
    ref = ggml.compute(lambda lib, c, t: lib.ggml_mul_mat(c, t[0], t[1]), [(Wq, f.id, (E, R)), (x, F32)], (T, R))
    _same_bits(ref, blocks.Linear("w", f, Wq, R, E)(x))


def test_prompt_glu_and_norm_on_threads_are_the_serial_kernels():
    """A prompt batch's SwiGLU and RMSNorm run in pieces of rows on the row-kernel threads: lk.swiglu's and
    lk.rms_norm's bytes."""
    g = (np.random.default_rng(41).standard_normal((150, 1539)) * 6).astype(np.float32)
    u = np.random.default_rng(42).standard_normal((150, 1539)).astype(np.float32)
    want = np.empty_like(g)
    lk.swiglu(g, u, want)
    with _rows.use_threads(2):
        got = blocks.Ops(SimpleNamespace(eps=1e-5), np.arange(150)).glu(g.copy(), u)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    w = np.random.default_rng(43).standard_normal(1539).astype(np.float32)
    lk.rms_norm(g, w, 1e-5, want)
    with _rows.use_threads(2):
        got = blocks.Ops(SimpleNamespace(eps=1e-5), np.arange(150)).norm(g, w)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
