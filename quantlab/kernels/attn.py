"""Attention over the fp16 KV cache with the numerics of llama.cpp's default run: ggml-cpu's
``flash_attn_ext`` (llama.cpp 0.3.36 turns flash attention on for the CPU backend when it is "auto", the
default of llama-perplexity, llama-completion and llama-bench).

ggml-cpu (``ggml/src/ggml-cpu/ops.cpp``) has two ways through that op, chosen by the number of query
rows in the batch, and they round differently, so quantlab keeps both (:func:`attention` picks the same
way, ``T >= FA_TILE_Q``):

* **few rows** (generation, short prompts; ``ggml_compute_forward_flash_attn_ext_f16_one_chunk``): the
  query row is rounded to fp16; each score is ``ggml_vec_dot_f16`` of two fp16 rows (products summed in
  4 x 8 float lanes over steps of 32, then reduced in ggml's order, see :func:`_dot_f16`), times the
  scale; an online softmax (running max M, sum S, libm ``expf``) whose output accumulator is **fp16**:
  on a new maximum it is rescaled (``ggml_vec_scale_f16``) and every key adds ``v * exp(s - M)`` with
  one fused multiply-add rounded back to fp16 (``ggml_vec_mad_f16``); at the end it is divided by S.
* **64 rows or more** (prompt batches, perplexity; ``ggml_compute_forward_flash_attn_ext_tiled``):
  query tiles of 64 rows against key tiles of 64 cache cells (tiles start at cell 0), all in float32:
  scores as fused multiply-adds over the head dimension in order (``simd_gemm``), times the scale; per
  key tile its max, a rescale of the accumulator when the max grows, ``exp`` by ggml's vector
  ``ggml_v_expf`` (not libm's, see :func:`~quantlab.kernels.ggml_float.v_expf`) with the tile's sum added in double per 8 lanes
  (``ggml_vec_soft_max_f32``), and the values added with fused multiply-adds in key order.

For head dimensions that are a multiple of 64 the tiled path runs as :func:`attention_tiled_blocked`:
the same steps per query row, with the two products (scores, values) of 4 query rows of one head done
together in 16 vector registers (one key or value load feeds 4 rows), and the scale / mask / max and
ggml_v_expf steps of a row's 64 scores as 16-lane vector code (:func:`_scale_mask_max`, :func:`_exp_row`:
the same operations lane by lane, ggml_v_expf's branches as selects). Measured for 512 rows x 9 heads
(3 kv) x 64 dims, 1 thread, CPU time, load 4-4.5: attention_tiled 12.0 ms, blocked products 7.1 ms, with
the vector softmax steps 4.8 ms.

Only the order of keys matters, not how threads share the rows, so every query row here is computed on
its own (the blocked tiled path spreads passes of 4 rows over the row-kernel threads, _rows.run_rows, and
attention_tiled (head dims not a multiple of 64) rows over numba threads; the few-row path runs serially
from Python: a token's 9-32 rows cost ~10-100 us, and waking a thread on a loaded machine cost 52 ms per
call, measured at load 20; the decode path's compiled token, already on its threads, takes
:func:`attention_rows_par` from kernels.decode.ATTN_PAR_MIN (query row, key) pairs on). The few-row path
reads the fp16 cache in place (each value widened exactly where it is used).
Masked keys (the future; outside a sliding window) take no part, as in ggml (skipped, or exp(-inf) = 0 in a tile). ggml's fused multiply-adds are reproduced with
LLVM's ``llvm.fma`` (one rounding, like ``_mm256_fmadd_ps``): where ggml fuses, quantlab fuses, nowhere
else. Checked bit for bit against ggml's op in tests/test_forward_ops.py.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import _rows
from . import ggml_float as gf
from .ggml_float import fma32, round16, v_expf
from .llama import _half

F32 = np.float32
FA_TILE_Q = 64  # GGML_FA_TILE_Q: from this many query rows on, ggml takes the tiled path
FA_TILE_KV = 64  # GGML_FA_TILE_KV: key tile of the tiled path
QROWS = 4  # query rows (one head, consecutive positions) per pass of the tiled path's register-blocked products


@njit(cache=True, inline="always")
def _dot_f16(kc, j, kh, b, lanes):
    """ggml_vec_dot_f16 (AVX2 + F16C) of the fp16 cache row kc[j, kh, :] (uint16 bits, widened exactly)
    and b (fp16 values held as float32): products added into 4 accumulators of 8 lanes (element i of
    each step of 32 goes to lane i), the accumulators reduced as (s0 + s2) + (s1 + s3), then the 8
    lanes as ((l0+l4) + (l1+l5)) + ((l2+l6) + (l3+l7)); elements past the last full step of 32 added
    in double, one product at a time. The products of two fp16 values are exact in float32, so ggml's
    fused multiply-add and this multiply + add agree."""
    n = b.shape[0]
    npart = n - n % 32
    for i in range(32):
        lanes[i] = F32(0)
    for i0 in range(0, npart, 32):
        for i in range(32):
            lanes[i] += _half(kc[j, kh, i0 + i]) * b[i0 + i]
    for i in range(16):
        lanes[i] = lanes[i] + lanes[i + 16]
    for i in range(8):
        lanes[i] = lanes[i] + lanes[i + 8]
    t0 = lanes[0] + lanes[4]
    t1 = lanes[1] + lanes[5]
    t2 = lanes[2] + lanes[6]
    t3 = lanes[3] + lanes[7]
    s = np.float64((t0 + t1) + (t2 + t3))
    for i in range(npart, n):
        s += np.float64(_half(kc[j, kh, i]) * b[i])
    return F32(s)


@njit(cache=True, inline="always")
def _attention_row(q, kc, vc, n_swa, pos0, scale, out, t, h, qh, acc, lanes):
    """Query row (t, h) of ggml's one_chunk path (see :func:`attention_rows`); qh, acc, lanes: scratch
    of D, D and 32 float32."""
    H, D = q.shape[1], q.shape[2]
    kh = h // (H // kc.shape[1])
    for d in range(D):
        qh[d] = round16(q[t, h, d])  # Q converted to the vec_dot type of F16 K
        acc[d] = F32(0)  # VKQ16: values kept fp16-representable
    n = pos0 + t + 1
    j0 = max(0, n - n_swa) if n_swa > 0 else 0
    M = F32(-np.inf)
    S = F32(0)
    for j in range(j0, n):
        s = _dot_f16(kc, j, kh, qh, lanes) * scale
        ms = F32(1)
        vs = F32(1)
        if s > M:  # new maximum: rescale the fp16 accumulator by exp(Mold - M)
            ms = np.exp(M - s)
            M = s
            for d in range(D):
                acc[d] = round16(acc[d] * ms)
        else:
            vs = np.exp(s - M)
        for d in range(D):  # ggml_vec_mad_f16: fused, then rounded to fp16
            acc[d] = round16(fma32(_half(vc[j, kh, d]), vs, acc[d]))
        S = fma32(S, ms, vs)  # GCC contracts ggml's S = S*ms + vs (gnu++17: -ffp-contract=fast)
    inv = F32(1) / S if S != 0 else F32(0)
    for d in range(D):
        out[t, h, d] = acc[d] * inv


@njit(cache=True)
def _rows_span(q, kc, vc, n_swa, pos0, scale, out, r0, r1):
    D = q.shape[2]
    qh = np.empty(D, dtype=np.float32)
    acc = np.empty(D, dtype=np.float32)
    lanes = np.empty(32, dtype=np.float32)
    for th in range(r0, r1):
        _attention_row(q, kc, vc, n_swa, pos0, scale, out, th // q.shape[1], th % q.shape[1], qh, acc, lanes)


@njit(cache=True)
def attention_rows(q, kc, vc, n_swa, pos0, scale, out):
    """Few query rows (ggml's one_chunk path): q [T, H, D] float32 at positions pos0 + t over the cache
    kc/vc [n, Hkv, D] (fp16 bits) -> out [T, H, D]. GQA: head h reads kv head h // (H / Hkv). ``n_swa`` > 0:
    query p sees keys p - n_swa + 1 .. p. Serial: a token's few rows at a short context are less work
    than waking a thread (measured); :func:`attention_rows_par` spreads them over threads."""
    _rows_span(q, kc, vc, n_swa, pos0, scale, out, 0, q.shape[0] * q.shape[1])


@njit(cache=True, parallel=True)
def attention_rows_par(q, kc, vc, n_swa, pos0, scale, out, nthreads):
    """:func:`attention_rows` with the T * H query rows in ``nthreads`` contiguous spans, one a thread
    (each row is computed on its own, so the outputs are the same bytes)."""
    n = q.shape[0] * q.shape[1]
    m = min(n, nthreads)
    for j in prange(m):
        _rows_span(q, kc, vc, n_swa, pos0, scale, out, j * n // m, (j + 1) * n // m)


@njit(cache=True, parallel=True)
def attention_tiled(q, kc, vc, n_swa, pos0, scale, out):
    """64 query rows or more (ggml's tiled path); arguments as :func:`attention_rows`."""
    T, H, D = q.shape
    Hkv = kc.shape[1]
    g = H // Hkv
    N = pos0 + T
    TK = FA_TILE_KV
    kt, vf = _tiles(kc, vc, N, TK)  # key tiles transposed (K_f32[dk][kv]), values; zero-padded
    for th in prange(T * H):
        t = th // H
        h = th % H
        kh = h // g
        p = pos0 + t
        lo = max(0, p - n_swa + 1) if n_swa > 0 else 0  # first visible key
        kq = np.empty(TK, dtype=np.float32)
        acc = np.zeros(D, dtype=np.float32)  # VKQ32
        M = F32(-np.inf)
        S = F32(0)
        for c in range(lo // TK, p // TK + 1):  # key tiles holding a visible key
            c0 = c * TK
            for tk in range(TK):
                kq[tk] = F32(0)
            for dk in range(D):  # simd_gemm: KQ += Q K, one fused step per dimension
                qd = q[t, h, dk]
                for tk in range(TK):
                    kq[tk] = fma32(kt[kh, c, dk, tk], qd, kq[tk])
            for tk in range(TK):
                kq[tk] = kq[tk] * scale
                if c0 + tk < lo or c0 + tk > p:
                    kq[tk] = F32(-np.inf)
            mx = F32(-np.inf)
            for tk in range(TK):
                if kq[tk] > mx:
                    mx = kq[tk]
            Mnew = max(M, mx)
            if Mnew > M:
                ms = np.exp(M - Mnew)
                for d in range(D):
                    acc[d] = acc[d] * ms
                S = S * ms
            M = Mnew
            tot = 0.0  # ggml_vec_soft_max_f32: exp by ggml_v_expf, lanes of 8 summed, in double
            for i0 in range(0, TK, 8):
                for i in range(i0, i0 + 8):
                    kq[i] = v_expf(kq[i] - Mnew)
                s8 = ((kq[i0] + kq[i0 + 4]) + (kq[i0 + 2] + kq[i0 + 6])) + (
                    (kq[i0 + 1] + kq[i0 + 5]) + (kq[i0 + 3] + kq[i0 + 7])
                )
                tot += np.float64(s8)
            S = F32(np.float64(S) + tot)
            for tk in range(TK):  # simd_gemm: VKQ += P V, one fused step per key
                pk = kq[tk]
                for d in range(D):
                    acc[d] = fma32(vf[kh, c0 + tk, d], pk, acc[d])
        inv = F32(1) / S if S != 0 else F32(0)
        for d in range(D):
            out[t, h, d] = acc[d] * inv


# ---------------------------------------------------------------------------------------------
# the tiled path's two products, register-blocked: QROWS query rows x 64 lanes in 16 zmm accumulators
# ---------------------------------------------------------------------------------------------

_F = ir.FloatType()
_V16F = ir.VectorType(_F, 16)


def _vfma(builder, a, b, c):
    """a * b + c on <16 x float>, one rounding per lane (ggml's _mm256_fmadd_ps, 16 lanes at a time)."""
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V16F, [_V16F] * 3), "llvm.fma.v16f32")
    return builder.call(fn, [a, b, c])


def _vsplat(builder, x):
    v = builder.insert_element(ir.Constant(_V16F, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(
        v, ir.Constant(_V16F, ir.Undefined), ir.Constant(ir.VectorType(ir.IntType(32), 16), [0] * 16)
    )


def _vptr(builder, base, off):
    return builder.bitcast(builder.gep(base, [off]), _V16F.as_pointer())


@intrinsic
def _qk_tile(typingctx, kt, kbase, qg, kq):
    """kq[r, tk] = fma over dk = 0 .. D-1 in order (from 0) of kt.flat[kbase + dk * 64 + tk] * qg[r, dk], for
    the QROWS rows r of qg [QROWS, D] and the 64 keys tk of one transposed key tile (ggml's simd_gemm: one
    fused step per dimension): 4 x QROWS vectors of 16 keys in registers."""
    sig = types.void(kt, types.intp, qg, kq)

    def codegen(context, builder, signature, args):
        ktv, kb, qgv, kqv = args
        akt, _, aqg, akq = signature.args
        ktp = context.make_array(akt)(context, builder, ktv).data
        qa = context.make_array(aqg)(context, builder, qgv)
        qp = qa.data
        D = builder.extract_value(qa.shape, 1)
        kqp = context.make_array(akq)(context, builder, kqv).data
        c = lambda v: ir.Constant(D.type, v)  # noqa: E731
        accs = [cgutils.alloca_once_value(builder, ir.Constant(_V16F, [0.0] * 16)) for _ in range(QROWS * 4)]
        with cgutils.for_range(builder, D) as loop:
            dk = loop.index
            ko = builder.add(kb, builder.mul(dk, c(FA_TILE_KV)))
            kv = [builder.load(_vptr(builder, ktp, builder.add(ko, c(16 * j))), align=4) for j in range(4)]
            for r in range(QROWS):
                qv = _vsplat(builder, builder.load(builder.gep(qp, [builder.add(builder.mul(c(r), D), dk)])))
                for j in range(4):
                    a = accs[4 * r + j]
                    builder.store(_vfma(builder, kv[j], qv, builder.load(a)), a)
        for r in range(QROWS):
            for j in range(4):
                builder.store(builder.load(accs[4 * r + j]), _vptr(builder, kqp, c(FA_TILE_KV * r + 16 * j)), align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _pv_tile(typingctx, vf, vbase, kq, acc):
    """acc[r, d] = fma(vf.flat[vbase + tk * D + d], kq[r, tk], acc[r, d]) for tk = 0 .. 63 in order, for the
    QROWS rows of acc [QROWS, D] (D a multiple of 64; ggml's simd_gemm: one fused step per key): per 64
    dimensions, 4 x QROWS vectors in registers."""
    sig = types.void(vf, types.intp, kq, acc)

    def codegen(context, builder, signature, args):
        vfv, vb, kqv, accv = args
        avf, _, akq, aacc = signature.args
        vp = context.make_array(avf)(context, builder, vfv).data
        kqp = context.make_array(akq)(context, builder, kqv).data
        aa = context.make_array(aacc)(context, builder, accv)
        ap = aa.data
        D = builder.extract_value(aa.shape, 1)
        c = lambda v: ir.Constant(D.type, v)  # noqa: E731
        accs = [cgutils.alloca_once(builder, _V16F) for _ in range(QROWS * 4)]
        with cgutils.for_range(builder, builder.udiv(D, c(64))) as outer:
            d0 = builder.mul(outer.index, c(64))
            for r in range(QROWS):
                for j in range(4):
                    o = builder.add(builder.mul(c(r), D), builder.add(d0, c(16 * j)))
                    builder.store(builder.load(_vptr(builder, ap, o), align=4), accs[4 * r + j])
            with cgutils.for_range(builder, c(FA_TILE_KV)) as loop:
                tk = loop.index
                vo = builder.add(vb, builder.add(builder.mul(tk, D), d0))
                vv = [builder.load(_vptr(builder, vp, builder.add(vo, c(16 * j))), align=4) for j in range(4)]
                for r in range(QROWS):
                    pv = _vsplat(builder, builder.load(builder.gep(kqp, [builder.add(c(FA_TILE_KV * r), tk)])))
                    for j in range(4):
                        a = accs[4 * r + j]
                        builder.store(_vfma(builder, vv[j], pv, builder.load(a)), a)
            for r in range(QROWS):
                for j in range(4):
                    o = builder.add(builder.mul(c(r), D), builder.add(d0, c(16 * j)))
                    builder.store(builder.load(accs[4 * r + j]), _vptr(builder, ap, o), align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _exp_row(typingctx, kq, r, m):
    """kq[r, :64] = v_expf(kq[r, :64] - m): ggml_v_expf (:func:`~quantlab.kernels.ggml_float.v_expf`, the
    same operations lane by lane, its branches as selects: ggml_float.v_expf_ir) on 4 vectors of 16 lanes;
    returns ggml_vec_soft_max_f32's sum: per run of 8, ((e0 + e4) + (e2 + e6)) + ((e1 + e5) + (e3 + e7)) in
    float32 (as lane pairs of the vectors), the 8 run sums added in order in double from 0."""
    sig = types.float64(kq, types.intp, types.float32)

    def codegen(context, builder, signature, args):
        kqv, rv, mv = args
        kqp = context.make_array(signature.args[0])(context, builder, kqv).data
        mvec = _vsplat(builder, mv)
        base = builder.mul(rv, ir.Constant(rv.type, FA_TILE_KV))
        i32 = ir.IntType(32)

        def lanes(v, idx):
            return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(i32, len(idx)), idx))

        tot = ir.Constant(ir.DoubleType(), 0.0)
        for j in range(4):
            ptr = _vptr(builder, kqp, builder.add(base, ir.Constant(rv.type, 16 * j)))
            e = gf.v_expf_ir(builder, builder.fsub(builder.load(ptr, align=4), mvec))
            builder.store(e, ptr, align=4)
            # two runs of 8: (i, i + 4) pairs, then (0+4) + (2+6) and (1+5) + (3+7), then their sum
            p = builder.fadd(lanes(e, [0, 1, 2, 3, 8, 9, 10, 11]), lanes(e, [4, 5, 6, 7, 12, 13, 14, 15]))
            q = builder.fadd(lanes(p, [0, 1, 4, 5]), lanes(p, [2, 3, 6, 7]))
            s2 = builder.fadd(lanes(q, [0, 2]), lanes(q, [1, 3]))
            for k in range(2):
                s8 = builder.extract_element(s2, ir.Constant(i32, k))
                tot = builder.fadd(tot, builder.fpext(s8, ir.DoubleType()))
        return tot

    return sig, codegen


@intrinsic
def _scale_mask_max(typingctx, kq, r, scale, lo, hi):
    """kq[r, tk] = kq[r, tk] * scale, or -inf where tk < lo or tk > hi (keys outside the row's view); returns
    the largest (``mx = v if v > mx``, NaN never taken; ties of +0 / -0 do not matter downstream)."""
    sig = types.float32(kq, types.intp, types.float32, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        kqv, rv, sc, lov, hiv = args
        kqp = context.make_array(signature.args[0])(context, builder, kqv).data
        i64 = ir.IntType(64)
        vi = ir.VectorType(i64, 16)

        def splat_i(x):
            v = builder.insert_element(ir.Constant(vi, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
            return builder.shuffle_vector(
                v, ir.Constant(vi, ir.Undefined), ir.Constant(ir.VectorType(ir.IntType(32), 16), [0] * 16)
            )

        scv, lo_v, hi_v = _vsplat(builder, sc), splat_i(lov), splat_i(hiv)
        ninf = ir.Constant(_V16F, [float("-inf")] * 16)
        base = builder.mul(rv, ir.Constant(rv.type, FA_TILE_KV))
        mx = ninf
        for j in range(4):
            ptr = _vptr(builder, kqp, builder.add(base, ir.Constant(rv.type, 16 * j)))
            x = builder.fmul(builder.load(ptr, align=4), scv)
            tk = ir.Constant(vi, list(range(16 * j, 16 * j + 16)))
            hidden = builder.or_(builder.icmp_signed("<", tk, lo_v), builder.icmp_signed(">", tk, hi_v))
            x = builder.select(hidden, ninf, x)
            builder.store(x, ptr, align=4)
            mx = builder.select(builder.fcmp_ordered(">", x, mx), x, mx)
        m = ir.Constant(_F, float("-inf"))
        for i in range(16):
            e = builder.extract_element(mx, ir.Constant(ir.IntType(32), i))
            m = builder.select(builder.fcmp_ordered(">", e, m), e, m)
        return m

    return sig, codegen


@njit(cache=True, nogil=True)
def _tiles(kc, vc, N, TK):
    """The first N cache cells widened to float32: keys as transposed tiles kt [Hkv, tiles, D, TK] and
    values vf [Hkv, tiles * TK, D], zero-padded to whole tiles."""
    Hkv, D = kc.shape[1], kc.shape[2]
    n_tiles = (N + TK - 1) // TK
    kt = np.zeros((Hkv, n_tiles, D, TK), dtype=np.float32)
    vf = np.zeros((Hkv, n_tiles * TK, D), dtype=np.float32)
    for j in range(N):
        for kh in range(Hkv):
            for d in range(D):
                kt[kh, j // TK, d, j % TK] = _half(kc[j, kh, d])
                vf[kh, j, d] = _half(vc[j, kh, d])
    return kt, vf


def attention_tiled_blocked(q, kc, vc, n_swa, pos0, scale, out):
    """:func:`attention_tiled`'s very numbers (every step per query row in the same order), with the key
    and value products of QROWS query rows of one head done together in registers (:func:`_qk_tile`,
    :func:`_pv_tile`); needs T >= QROWS and D a multiple of 64. A tile that is outside a row's visible
    range (rows of one pass can straddle a tile boundary) leaves that row untouched, as in attention_tiled.
    The passes (head, 4 rows) are spread over the row-kernel threads (:func:`~quantlab.kernels._rows.run_rows`,
    like the products around it: no second thread pool spinning next to theirs)."""
    T, H = q.shape[0], q.shape[1]
    kt, vf = _tiles(kc, vc, pos0 + T, FA_TILE_KV)
    n = H * ((T + QROWS - 1) // QROWS)
    _rows.run_rows(_blocked_passes, n, q, kt, vf, kc.shape[1], n_swa, pos0, scale, out, min_rows=8)


@njit(cache=True, nogil=True)
def _blocked_passes(q, kt, vf, Hkv, n_swa, pos0, scale, out, w0, w1):
    """Passes w0 .. w1 - 1 of :func:`attention_tiled_blocked` (pass w: head w // groups, rows from 4 (w % groups))."""
    T, H, D = q.shape
    g = H // Hkv
    TK = FA_TILE_KV
    n_tiles = kt.shape[1]
    ngrp = (T + QROWS - 1) // QROWS
    for w in range(w0, w1):
        h = w // ngrp
        t0 = min((w % ngrp) * QROWS, T - QROWS)  # the last pass may overlap the one before: same numbers
        kh = h // g
        qg = np.empty((QROWS, D), dtype=np.float32)
        for r in range(QROWS):
            for d in range(D):
                qg[r, d] = q[t0 + r, h, d]
        kq = np.empty((QROWS, TK), dtype=np.float32)
        acc = np.zeros((QROWS, D), dtype=np.float32)  # VKQ32
        keep = np.empty((QROWS, D), dtype=np.float32)
        M = np.full(QROWS, -np.inf, dtype=np.float32)
        S = np.zeros(QROWS, dtype=np.float32)
        lo = np.empty(QROWS, dtype=np.int64)
        for r in range(QROWS):
            lo[r] = max(0, pos0 + t0 + r - n_swa + 1) if n_swa > 0 else 0
        for c in range(lo[0] // TK, (pos0 + t0 + QROWS - 1) // TK + 1):
            c0 = c * TK
            _qk_tile(kt, (kh * n_tiles + c) * D * TK, qg, kq)
            for r in range(QROWS):
                p = pos0 + t0 + r
                if c < lo[r] // TK or c > p // TK:  # no visible key in this tile for row r
                    for d in range(D):
                        keep[r, d] = acc[r, d]
                    for tk in range(TK):
                        kq[r, tk] = F32(0)
                    continue
                mx = _scale_mask_max(kq, r, scale, lo[r] - c0, p - c0)
                Mnew = max(M[r], mx)
                if Mnew > M[r]:
                    ms = np.exp(M[r] - Mnew)
                    for d in range(D):
                        acc[r, d] = acc[r, d] * ms
                    S[r] = S[r] * ms
                M[r] = Mnew
                tot = _exp_row(kq, r, Mnew)  # ggml_vec_soft_max_f32: ggml_v_expf, lanes of 8 summed, in double
                S[r] = F32(np.float64(S[r]) + tot)
            _pv_tile(vf, (kh * n_tiles * TK + c0) * D, kq, acc)
            for r in range(QROWS):
                p = pos0 + t0 + r
                if c < lo[r] // TK or c > p // TK:  # put back what the product added (zeros times values)
                    for d in range(D):
                        acc[r, d] = keep[r, d]
        for r in range(QROWS):
            inv = F32(1) / S[r] if S[r] != 0 else F32(0)
            for d in range(D):
                out[t0 + r, h, d] = acc[r, d] * inv


def attention(q, kc, vc, pos0: int, scale, n_swa: int = 0, out=None) -> np.ndarray:
    """Causal attention of T query rows q [T, H, D] (positions pos0 .. pos0+T-1) over the fp16 cache
    kc/vc [>= pos0+T, Hkv, D] (uint16 bits) -> [T, H, D] float32, as ggml-cpu's flash_attn_ext computes
    it for a batch of T rows (T >= 64: tiled path, else one row at a time; see the module doc)."""
    T, H, D = q.shape
    if out is None:
        out = np.empty((T, H, D), dtype=np.float32)
    q = np.ascontiguousarray(q, dtype=np.float32)
    if T < FA_TILE_Q:
        fn = attention_rows
    else:
        fn = attention_tiled_blocked if D % 64 == 0 else attention_tiled
    fn(q, kc, vc, int(n_swa), int(pos0), np.float32(scale), out)
    return out
