"""The integer (generation-path) kernels of quantlab.kernels.matmul against a float64 reference.

The reference is built independently of the kernels: weights from quantlab.dequantize (bit-exact with
ggml, tested elsewhere), activations from the activation quantizer's own codes and scales (``d * q``
per block), and for the Q8_1 pairings ggml's min term ``m * s`` with s the stored fp16 block sum. The
kernels sum exact integers per block and combine in float32, so the only allowed difference is float
summation order (this path is not claimed bit-exact with llama.cpp, whose AVX2 kernels use yet another
order).
"""

from __future__ import annotations

import numpy as np
import pytest

import quantlab
from quantlab.errors import FormatError
from quantlab.formats import get
from quantlab.formats.registry import FORMATS as REGISTRY
from quantlab.kernels import _rows, act, simd
from quantlab.kernels import matmul as mm
from quantlab.model.llama import Linear

FORMATS = sorted(mm.INT_KERNELS)


def _weights(rows, cols, seed):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols)) * rng.uniform(0.01, 2, (rows, 1))
    w[0, :] = 0  # an all-zero row (zero scales)
    w[1, :40] *= 30  # outliers in one block
    return w.astype(np.float32)


def _reference(q, fmt, act, T, K):
    """float64 sum_b [(dx q_w + m) . (dy q_a)] with ggml's s for the min term of Q8_1 pairings."""
    qs, d, extra = act
    vt = mm.VEC_DOT_TYPE[fmt]
    bs = 256 if vt == "Q8_K" else 32
    a = qs.astype(np.float64) * np.repeat(d.astype(np.float64), bs, axis=1)
    w = quantlab.dequantize(q, fmt).astype(np.float64)
    ref = a @ w.T
    if vt == "Q8_1":  # ggml uses m * s, s = fp16(d * sum q): add s - d * sum q
        sumq = qs.reshape(T, K // 32, 32).sum(axis=2, dtype=np.int64)
        e = extra.astype(np.float64) - d.astype(np.float64) * sumq
        ref += e @ mm.block_mins(q, fmt, 0, q.shape[0]).astype(np.float64).T
    return ref


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("T", [1, 3])
def test_integer_kernel_matches_float64_reference(fmt, T):
    f = get(fmt)
    K = 512 if f.block_size == 256 else 576  # 576: SmolLM2's width, 18 blocks of 32
    R = 37
    q = quantlab.quantize(_weights(R, K, 5), fmt)
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((T, K)) * 3).astype(np.float32)
    x[-1, 32:64] = 0  # an all-zero activation block
    act = mm.quantize_activations(x, mm.VEC_DOT_TYPE[fmt])
    y = mm.matmul_int(q, fmt, act, np.empty((T, R), np.float32), parallel=False)
    ref = _reference(q, fmt, act, T, K)
    np.testing.assert_allclose(y, ref, rtol=0, atol=2e-6 * np.abs(ref).max() + 1e-30)
    assert np.all(y[:, 0] == 0)
    # the threaded driver runs the same row function: same bytes
    yp = mm.matmul_int(q, fmt, act, np.empty((T, R), np.float32), parallel=True)
    assert np.array_equal(y.view(np.uint32), yp.view(np.uint32))
    # and the product is close to the float one (activation quantization error only)
    exact = x.astype(np.float64) @ quantlab.dequantize(q, fmt).astype(np.float64).T
    assert np.abs(y - exact).max() < 0.02 * np.abs(exact).max()


@pytest.mark.parametrize("fmt", FORMATS)
def test_row_groups_equal_single_rows(fmt):
    """Rows run in groups of multirow.NR (one activation load for the group) give each row the bytes
    the one-row kernel gives it: a 1-row matrix never forms a group, so row r alone is the reference."""
    K = 512 if get(fmt).block_size == 256 else 576
    R, T = 2 * mm._mr.NR + 3, 2
    q = quantlab.quantize(_weights(R, K, 11), fmt)
    x = (np.random.default_rng(12).standard_normal((T, K)) * 2).astype(np.float32)
    act = mm.quantize_activations(x, mm.VEC_DOT_TYPE[fmt])
    y = mm.matmul_int(q, fmt, act, np.empty((T, R), np.float32), parallel=False)
    for r in range(R):
        one = mm.matmul_int(q[r : r + 1], fmt, act, np.empty((T, 1), np.float32), parallel=False)
        assert np.array_equal(y[:, r : r + 1].view(np.uint32), one.view(np.uint32)), r


@pytest.mark.parametrize("fmt", ["Q5_0", "Q5_1", "Q5_K", "IQ4_NL", "IQ4_XS"])
def test_linear_uses_integer_path_and_agrees_with_tiles(fmt):
    """Linear picks the integer path for a few tokens and the tile path (dequantized rows + BLAS on
    fake-quantized activations) for a batch; both compute the same sum up to float32 order."""
    K = 512
    q = quantlab.quantize(_weights(24, K, 7), fmt)
    lin = Linear("w", get(fmt), q, 24, K)
    assert lin.fast
    x = np.random.default_rng(8).standard_normal((6, K)).astype(np.float32)
    small = np.concatenate([lin(x[i : i + 2]) for i in range(0, 6, 2)])  # 2 tokens: integer path
    batch = lin(x)  # 6 tokens: tile path
    np.testing.assert_allclose(small, batch, rtol=0, atol=2e-5 * np.abs(batch).max())


def test_thread_policy_follows_measured_speed():
    """ThreadPolicy's decisions from synthetic timings (no clock involved): it measures both modes,
    keeps the faster, re-tries the slower one with a growing interval, and switches when the
    measurements change."""
    p = mm.ThreadPolicy(explore=4, max_explore=16, alpha=1.0)
    key = p.key(mm.K_Q4_0, 1 << 20)
    secs = {False: 1.0, True: 0.5}  # threads twice as fast

    def step():
        par = p.choose(key)
        p.record(key, par, 1 << 20, secs[par])
        return par

    assert [step(), step()] == [False, True]  # serial measured first, then threaded
    picks = [step() for _ in range(40)]
    tries = [i for i, x in enumerate(picks) if not x]
    assert len(tries) >= 2 and picks.count(True) > 30
    assert tries[1] - tries[0] > 4  # the interval grew after a losing try
    secs = {False: 1.0, True: 50.0}  # a busy machine: threads stall
    picks = [step() for _ in range(60)]
    assert sum(picks[-32:]) <= 2  # one thread, threads re-tried at most every 16 calls
    other = p.key(mm.K_Q4_0, 1 << 24)  # another size class is measured on its own
    assert p.choose(other) is False


def _dot8_kernel(isa, signed):
    """An njit f(codes int8[32], acts int8[32], out int32[8]) running matmul._dot8 with ``isa``."""
    from llvmlite import ir
    from numba import njit, types
    from numba.extending import intrinsic

    @intrinsic
    def dot8(typingctx, w, a, out):
        def codegen(context, builder, sig, args):
            c = simd._load_bytes(context, builder, sig.args[0], args[0], ir.Constant(ir.IntType(64), 0), 32)
            x = simd._load_bytes(context, builder, sig.args[1], args[1], ir.Constant(ir.IntType(64), 0), 32)
            v = simd._dot8(builder, c, signed, x, isa=isa)
            arr = context.make_array(sig.args[2])(context, builder, args[2])
            builder.store(v, builder.bitcast(arr.data, v.type.as_pointer()), align=4)
            return context.get_dummy_value()

        return types.void(w, a, out), codegen

    @njit
    def run(w, a, out):
        dot8(w, a, out)

    return run


@pytest.mark.parametrize("signed", [True, False])
def test_block_dot_instruction_paths_agree(signed):
    """_dot8's three code paths (portable IR, AVX2 vpmaddubsw + vpmaddwd, AVX512-VNNI vpdpbusd; the
    last two only where the CPU has them) give lane j = sum of products 4j..4j+3, exactly, over the
    value ranges the formats use (signed codes -128..127 incl. Q8_0's -128; unsigned 0..31)."""
    import llvmlite.binding as llvm

    feats = llvm.get_host_cpu_features()
    isas = ["generic"] + [
        i for i, ok in (("avx2", feats.get("avx2")), ("vnni", feats.get("avx512vnni") and feats.get("avx512vl"))) if ok
    ]
    rng = np.random.default_rng(11)
    runs = [_dot8_kernel(isa, signed) for isa in isas]
    for trial in range(50):
        c = rng.integers(-128, 128, 32) if signed else rng.integers(0, 32, 32)
        a = rng.integers(-127, 128, 32)
        if trial < 2:  # extremes: pair sums of +-32512
            c[:] = -128 if signed else 31
            a[:] = 127 if trial == 0 else -127
        ref = (c.astype(np.int64) * a).reshape(8, 4).sum(axis=1)
        w = c.astype(np.int8) if signed else c.astype(np.uint8)
        for isa, run in zip(isas, runs):
            out = np.zeros(8, np.int32)
            run(w, a.astype(np.int8), out)
            assert np.array_equal(out, ref), (isa, trial)


@pytest.mark.parametrize("fmts", [("Q5_0", "Q5_0", "Q8_0"), ("Q4_1", "Q4_1"), ("Q6_K", "Q4_K")])
def test_stacked_matrices_equal_separate_products(fmts):
    """matmul_int on a tuple of matrices (Q, K, V of a layer in one pass) writes each matrix's rows
    into consecutive columns, with the same bytes as one call per matrix, on one thread or several."""
    K = 512
    rows = (40, 13, 13)[: len(fmts)]
    Ws = tuple(quantlab.quantize(_weights(r, K, 20 + i), f) for i, (r, f) in enumerate(zip(rows, fmts)))
    x = np.random.default_rng(21).standard_normal((2, K)).astype(np.float32)
    act = mm.quantize_activations(x, mm.VEC_DOT_TYPE[fmts[0]])
    sep = np.concatenate(
        [mm.matmul_int(w, f, act, np.empty((2, w.shape[0]), np.float32), parallel=False) for w, f in zip(Ws, fmts)],
        axis=1,
    )
    for par in (False, True):
        out = np.full((2, sum(rows)), np.nan, np.float32)
        mm.matmul_int(Ws, fmts, act, out, parallel=par)
        assert np.array_equal(out.view(np.uint32), sep.view(np.uint32))
    ro = Ws[0].view()
    ro.flags.writeable = False  # a read-only (memory-mapped) matrix next to writable ones
    out = np.empty((2, sum(rows)), np.float32)
    mm.matmul_int((ro,) + Ws[1:], fmts, act, out)
    assert np.array_equal(out.view(np.uint32), sep.view(np.uint32))


def test_stacked_matrices_bad_input():
    q32 = quantlab.quantize(_weights(4, 256, 1), "Q4_0")
    qk = quantlab.quantize(_weights(4, 256, 1), "Q4_K")
    act = mm.quantize_activations(np.ones((1, 256), np.float32), "Q8_0")
    with pytest.raises(quantlab.errors.FormatError, match="32-value or all 256-value"):
        mm.matmul_int((q32, qk), ("Q4_0", "Q4_K"), act, np.empty((1, 8), np.float32))
    with pytest.raises(quantlab.errors.ShapeError, match="1 to 3"):
        mm.matmul_int((q32,) * 4, ("Q4_0",) * 4, act, np.empty((1, 16), np.float32))


def _ggml_cpu_vec_dot_types() -> dict:
    """type -> vec_dot_type from ggml-cpu.c's type_traits_cpu table in the llama.cpp sources the oracle
    is built from (make oracle unpacks them; a missing file fails, it does not skip)."""
    import pathlib
    import re

    src = pathlib.Path(__file__).resolve().parent.parent / (
        ".cache/llama-cpp-python/llama_cpp_python-0.3.36/vendor/llama.cpp/ggml/src/ggml-cpu/ggml-cpu.c"
    )
    text = src.read_text()
    table = text[text.index("type_traits_cpu[GGML_TYPE_COUNT] = {") + 36 :]
    table = table[: table.index("\n};")]
    out = {}
    for name, body in re.findall(r"\[GGML_TYPE_(\w+)\]\s*=\s*\{(.*?)\n    \}", table, re.S):
        m = re.search(r"\.vec_dot_type\s*=\s*GGML_TYPE_(\w+)", body)
        out[name] = m.group(1) if m else None
    return out


def test_vec_dot_type_column_matches_ggml_cpu():
    """The registry's vec_dot_type of every type is ggml-cpu's (types ggml-cpu gives none have None,
    and asking for it is a FormatError, never a silent F32)."""
    want = _ggml_cpu_vec_dot_types()
    assert len(want) >= 30
    for f in REGISTRY:
        if f.removed:
            assert f.vec_dot_type is None
            continue
        assert f.vec_dot_type == want.get(f.name), f.name
        if f.vec_dot_type is None:
            with pytest.raises(FormatError, match="vec_dot_type"):
                f.vec_dot()
        else:
            assert f.vec_dot() == f.vec_dot_type


@pytest.mark.parametrize("vtype", ["Q8_0", "Q8_1", "Q8_K"])
def test_batch_activation_quantization_on_threads_is_the_serial_one(vtype):
    """Batches of act.PAR_ROWS rows or more are quantized in pieces on the row-kernel threads: the bytes of
    one serial pass (act_q8_0 / act_q8_1 / act_q8_k over all rows)."""
    T, K = act.PAR_ROWS + 37, 512
    x = (np.random.default_rng(31).standard_normal((T, K)) * 4).astype(np.float32)
    x[5] = 0
    with _rows.use_threads(2):
        got = act.quantize_activations(x, vtype)
    want = [np.empty_like(a) for a in got]
    {"Q8_0": act.act_q8_0, "Q8_1": act.act_q8_1, "Q8_K": act.act_q8_k}[vtype](x, *want)
    for g, w in zip(got, want):
        assert np.array_equal(g.view(np.uint8), w.view(np.uint8))


def test_q8_0_activations_follow_ggml_rules():
    """quantize_row_q8_0 (AVX2 flavour) in numpy float32: d = fp16(amax / 127), q = rint(x * (127 / amax)),
    s = sum q; the vector kernel (16-lane max and rounding) gives exactly these bytes."""
    x = (np.random.default_rng(33).standard_normal((70, 576)) * 5).astype(np.float32)
    x[2, 32:64] = 0  # an all-zero block
    x[3, 7] = -x[3, 7] * 40  # a negative maximum
    x[4, :32] = np.float32(0.5) * np.arange(32, dtype=np.float32)  # ties at .5 after scaling
    blk = x.reshape(70, -1, 32)
    amax = np.abs(blk).max(axis=2)
    d = (amax / np.float32(127)).astype(np.float16).astype(np.float32)
    with np.errstate(divide="ignore"):
        iscale = np.where(amax != 0, np.float32(127) / amax, np.float32(0)).astype(np.float32)
    q = np.rint(blk * iscale[:, :, None]).astype(np.int32)
    for T in (5, 70):  # one serial call, pieces on threads
        with _rows.use_threads(2):
            qs, dd, s = act.quantize_activations(x[:T], "Q8_0")
        assert np.array_equal(qs, q[:T].astype(np.int8).reshape(T, 576))
        assert np.array_equal(dd.view(np.uint32), d[:T].view(np.uint32))
        assert np.array_equal(s, q[:T].sum(axis=2).astype(np.float32))


def test_q8_k_activations_follow_ggml_rules():
    """quantize_row_q8_K in numpy float32: per 256 values mx = the first value of largest magnitude,
    iscale = -127 / mx, q = min(127, rint(iscale * x)), d = 1 / iscale, bsums of 16; the vector kernel
    (16-lane max, first index of it, rounding, sums) gives exactly these bytes."""
    rng = np.random.default_rng(35)
    x = (rng.standard_normal((70, 512)) * 5).astype(np.float32)
    x[2, 256:] = 0  # an all-zero super-block
    x[3, 10], x[3, 200] = -40, 40  # tie in magnitude: the first (negative) one sets the sign
    x[4, 300], x[4, 301] = 33, -33
    x[5, :256] = np.float32(0.5) * np.arange(-128, 128, dtype=np.float32)
    blk = x.reshape(70, 2, 256)
    idx = np.abs(blk).argmax(axis=2)
    mx = np.take_along_axis(blk, idx[:, :, None], axis=2)[:, :, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        iscale = np.where(mx != 0, np.float32(-127) / mx, np.float32(0)).astype(np.float32)
        q = np.minimum(127, np.rint(iscale[:, :, None] * blk)).astype(np.int32)
        d = np.where(mx != 0, np.float32(1) / iscale, np.float32(0)).astype(np.float32)
    q[mx == 0] = 0
    for T in (5, 70):
        with _rows.use_threads(2):
            qs, dd, bs = act.quantize_activations(x[:T], "Q8_K")
        assert np.array_equal(qs, q[:T].astype(np.int8).reshape(T, 512))
        assert np.array_equal(dd.view(np.uint32), d[:T].view(np.uint32))
        assert np.array_equal(bs, q[:T].reshape(T, 32, 16).sum(axis=2))
