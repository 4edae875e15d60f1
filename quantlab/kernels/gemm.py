"""Batched integer matrix products for prompt batches: weights repacked once into 16-row panels, each
weight block loaded once per tile of 2 activation rows, AVX-512 VNNI.

ggml's mat-vec kernels (and quantlab's :func:`~quantlab.kernels.matmul.matmul_int`) walk one weight
row against one activation row. A prompt of hundreds of tokens would decode every weight block
hundreds of times that way; a GEMM instead keeps a small panel of weights in cache and in registers
while many activation rows go past. llama.cpp's CPU "repack" (ggml-cpu/repack.cpp) interleaves the
rows of Q4_0/IQ4_NL/... matrices at load for the same reason. quantlab's own layout:

**Panel layout** (made once per matrix by :func:`pack`, kept on the ``Linear``). Rows are grouped 16 at
a time (the last group padded with zero rows); for each group, block by block, the codes are stored
*row-interleaved in runs of 4*::

    panel p, block b:   group g = 0 .. G-1:   [row 0: 4 bytes][row 1: 4 bytes] ... [row 15: 4 bytes]
                        = one 64-byte vector whose 32-bit lane r holds 4 codes of row 16p + r

    4-bit formats (Q4_0, Q4_1), G = 4: the stored bytes 4g..4g+3 of each row's block, so the
        low nibbles are values 4g..4g+3 and the high nibbles values 16+4g..16+4g+3 (ggml's order);
    byte formats (Q5_0, Q5_1 as their 5-bit codes, Q8_0 as code + 128, IQ4_NL and IQ4_XS's 32-value
        sub-blocks as kvalues_iq4nl[nibble] + 128), G = 8: values 4g..4g+3. (IQ4 as nibbles, decoded
        by a vpshufb per vector in the tile: 77 GMAC/s; as bytes: the Q8_0 tile's ~100, at twice the
        panel memory.)

plus the weight scales ``d`` (and Q4_1/Q5_1's mins ``m``; IQ4_XS: its super-block d per sub-block and the
sub-block's ``ls - 32``) as float32 [panel, block, 16].

**Kernel.** One ``vpdpbusd`` multiplies a 64-byte code vector (unsigned) by 4 activation bytes
broadcast to every lane (signed): lane r gets the integer sum of the 4 products of row 16p + r,
i.e. one of the 8 lane values ggml's AVX2 vec_dot forms per block (lane k = values 4k..4k+3). Codes are
stored unsigned (Q8_0 and IQ4_NL shifted by 128, Q4_0 and Q5_0 as stored, unsigned), and the shift is
taken out exactly per lane by starting the dot product from ``-off * (the lane's 4 activations summed)``
(precomputed per activation row, broadcast from memory) instead of 0: ``lane = sum(c a) - off * sum(a)``,
the lane sum of the signed codes the row kernels use. Per 64 multiply-adds the loop then issues one
``vpdpbusd`` (activations as an embedded broadcast), one ``vcvtdq2ps``, one ``vfmadd`` and nothing else.

**Tile of 2 activation rows.** Each (panel, activation row) keeps 8 float accumulators (one per ggml
lane), so a tile of T rows holds 8T accumulators plus the block's 8 code vectors in registers: T = 2
fits the 32 zmm registers (no spill in numba's ``inspect_asm``), T = 3 spills 16 and T = 4 43 vectors
per block (measured, 1536 x 576 weights x 512 rows, 1 thread, load 4.5: Q8_0 85 / 74 / 49 GMAC/s,
Q4_0 77 / 67 / 53). A panel's blocks stay in L1 while every activation row goes past.

**Numerics: the row kernels' (matmul._row_32 / _row_256 for IQ4_XS), i.e. ggml's AVX2 order.** Per
(weight row, activation row) 8 float accumulators, one per lane, and per block
``acc_k = fma(float(lane_k), dd, acc_k)`` with one rounding, ``dd = d_w * d_a`` (IQ4_XS x Q8_K:
``(d_w * d_a) * (ls - 32)`` per 32-value sub-block); Q4_1/Q5_1 add ``m_w * s_a`` into a separate
accumulator (multiply, then add). At the end ggml's horizontal sum
``((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))`` plus that min accumulator (0 for the others).
Each of the 16 vector lanes runs that for its own output, so the result is the row kernels' bytes
(tests/test_gemm.py, every format of FORMATS); they are ggml's AVX2 bytes for Q4_0/Q4_1/Q5_0/Q5_1/Q8_0
(tests/test_forward_ops.py).

**K-quants (Q4_K, Q5_K, Q6_K; activations Q8_K)** have their own tiles (end of this module), numerics of
matmul._row_256: per super-block 8 int32 lanes (lane k = values 4k..4k+3 of every 32-value run, each
times its sub-block scale, summed over the super-block: exact), then ``acc_k += float(lane_k) * dd``
(multiply, then add) and for Q4_K/Q5_K the min term ``accm -= (d_a * dmin) * float(sum m_j bsum_j)``.
The scaled lane sums come from ``vpmaddubsw`` (unsigned x signed bytes -> 16-bit pairs) and ``vpdpwssd``
with the scale as an int16 pair (sc, sc); the mins from ``vpdpwssd`` of (m, m') pairs with bsum pairs.
Q4_K keeps its nibbles, Q5_K and Q6_K are unpacked to bytes at pack; Q6_K's activations go in as
a + 128 (the unsigned side) and a start value -128 * sum(sc * codes) per lane, made at pack, takes that
back out exactly.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from ..formats._iqgrid import kvalues_iq4nl
from ..formats.layout import size
from . import _rows
from .matmul import (
    IQ4NL_QS,
    IQ4XS_D,
    IQ4XS_QS,
    IQ4XS_SCALES_H,
    IQ4XS_SCALES_L,
    Q4K_D,
    Q4K_DMIN,
    Q4K_QS,
    Q4K_SCALES,
    Q5K_QH,
    Q5K_QS,
    Q6K_D,
    Q6K_QH,
    Q6K_QL,
    Q6K_SCALES,
    Q40_QS,
    Q41_M,
    Q41_QS,
    Q50_QH,
    Q50_QS,
    Q51_M,
    Q51_QH,
    Q51_QS,
    Q80_QS,
)

assert Q41_M == Q51_M  # Q4_1 and Q5_1 keep m at the same offset (pack reads it once)

PANEL = 16  # weight rows per panel (the 16 int32 lanes of a 512-bit vector)
TILE = 2  # activation rows per pass over a panel block

# format -> (kind, code groups per block G, offset subtracted from the stored codes, float formula)
# formula: "A"/"B" lanes fma'd with d_w * d_a (ggml's _generic orders differ, its AVX2 ones do not), "C" the
# same plus the min term m_w * s_a, "D" IQ4_XS: d_w * d_a * (ls - 32) per sub-block
FORMATS = {
    "Q4_0": (0, 4, 8, "A"),
    "Q4_1": (1, 4, 0, "C"),
    "IQ4_NL": (2, 8, 128, "B"),  # values + 128 as bytes (pack)
    "Q5_0": (3, 8, 16, "B"),
    "Q5_1": (4, 8, 0, "C"),
    "Q8_0": (5, 8, 128, "B"),
    "IQ4_XS": (6, 8, 128, "D"),  # per 32-value sub-block: d1 = (d_w * d_a) * (ls - 32); sumf += d1 * sumi
}
K_Q4_0, K_Q4_1, K_IQ4_NL, K_Q5_0, K_Q5_1, K_Q8_0, K_IQ4_XS = range(7)
# formats whose GEMM gives the row kernels' (matmul.matmul_int) bytes, checked by tests/test_gemm.py: every one
# of FORMATS since the float side follows the row kernels' order (ggml's AVX2 lanes, see Numerics)
KQUANTS = ("Q4_K", "Q5_K", "Q6_K")  # super-block formats with their own tile (Q8_K activations), below
EXACT = frozenset(FORMATS) | frozenset(KQUANTS)
MIN_ROWS = 5  # batches of at least this many rows take the GEMM (fewer: the row kernels, see blocks.SMALL_BATCH)


def _host_has_avx512_vnni() -> bool:
    import numba

    if numba.config.CPU_NAME or numba.config.CPU_FEATURES:
        return False
    try:
        import llvmlite.binding as llvm

        f = llvm.get_host_cpu_features()
    except Exception:  # noqa: BLE001  (no feature map: no 512-bit VNNI kernel)
        return False
    return bool(f.get("avx512f") and f.get("avx512bw") and f.get("avx512vnni"))


AVAILABLE = _host_has_avx512_vnni()  # the kernel needs vpdpbusd on 512-bit vectors


# ---------------------------------------------------------------------------------------------
# packing (numpy, once per matrix)
# ---------------------------------------------------------------------------------------------


def _f16(blocks, o):
    return blocks[:, :, o : o + 2].copy().view(np.float16)[:, :, 0].astype(np.float32)


def _five_bit_codes(blocks, qh_o, qs_o):
    """Q5_0 / Q5_1 codes 0..31 as uint8 [R, nb, 32]: nibbles of qs, bit j of qh as bit 4 of value j."""
    qs = blocks[:, :, qs_o : qs_o + 16]
    qh = blocks[:, :, qh_o : qh_o + 4].copy().view("<u4")[:, :, 0]
    hi = ((qh[:, :, None] >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8) << 4
    return np.concatenate([qs & 15, qs >> 4], axis=2) | hi


def pack(W: np.ndarray, fmt: str):
    """The panel layout of a weight matrix W (uint8 [R, row_bytes] in ggml's layout, a format of
    :data:`FORMATS`): (codes uint8 [panels * blocks * G * 64], d float32, m float32, rows R)."""
    if fmt in ("Q4_K", "Q5_K"):
        return _pack_q4_k(W, fmt)
    if fmt == "Q6_K":
        return _pack_q6_k(W)
    G = FORMATS[fmt][1]
    if fmt == "IQ4_XS":
        return _pack_iq4_xs(W)
    R = W.shape[0]
    ts = size(fmt)
    nb = W.shape[1] // ts
    Rp = -(-R // PANEL) * PANEL
    blocks = np.zeros((Rp, nb, ts), dtype=np.uint8)
    blocks[:R] = W.reshape(R, nb, ts)
    d = _f16(blocks, 0)
    m = _f16(blocks, Q41_M) if fmt in ("Q4_1", "Q5_1") else np.zeros((Rp, nb), np.float32)
    if fmt == "Q4_0":
        codes = blocks[:, :, Q40_QS : Q40_QS + 16]
    elif fmt == "Q4_1":
        codes = blocks[:, :, Q41_QS : Q41_QS + 16]
    elif fmt == "IQ4_NL":
        codes = _iq4_bytes(blocks[:, :, IQ4NL_QS : IQ4NL_QS + 16])
    elif fmt == "Q5_0":
        codes = _five_bit_codes(blocks, Q50_QH, Q50_QS)
    elif fmt == "Q5_1":
        codes = _five_bit_codes(blocks, Q51_QH, Q51_QS)
    else:  # Q8_0: int8 code + 128 as uint8
        codes = blocks[:, :, Q80_QS : Q80_QS + 32] ^ np.uint8(0x80)
    return _panels(codes, d, m, R, G)


def _iq4_bytes(q):
    """IQ4_NL nibble bytes [..., 16] -> the 32 values + 128 as uint8 [..., 32] (value j: low nibble of byte j,
    j + 16: high nibble)."""
    return np.asarray(_IQ4_TABLE_U8, dtype=np.uint8)[np.concatenate([q & 15, q >> 4], axis=-1)]


def _panels(codes, d, m, R, G):
    """codes [Rp, nb, bytes per block], d and m [Rp, nb] -> the panel arrays."""
    Rp, nb = d.shape
    P = codes.reshape(Rp // PANEL, PANEL, nb, G, 4).transpose(0, 2, 3, 1, 4)
    panel = lambda a: np.ascontiguousarray(a.reshape(Rp // PANEL, PANEL, nb).transpose(0, 2, 1)).reshape(-1)  # noqa: E731
    return np.ascontiguousarray(P).reshape(-1), panel(d), panel(m), R


def _pack_iq4_xs(W):
    """IQ4_XS as 32-value sub-blocks: the IQ4_NL nibble codes of each, d = the super-block's d repeated,
    m = the sub-block's 6-bit scale ls - 32 as float (ggml: ls = low 4 bits from scales_l, high 2 from
    scales_h)."""
    R = W.shape[0]
    ts = size("IQ4_XS")
    nsb = W.shape[1] // ts
    Rp = -(-R // PANEL) * PANEL
    blocks = np.zeros((Rp, nsb, ts), dtype=np.uint8)
    blocks[:R] = W.reshape(R, nsb, ts)
    d = np.repeat(_f16(blocks, IQ4XS_D), 8, axis=1)
    sh = blocks[:, :, IQ4XS_SCALES_H].astype(np.int32) | (blocks[:, :, IQ4XS_SCALES_H + 1].astype(np.int32) << 8)
    ib = np.arange(8)
    lo = (blocks[:, :, IQ4XS_SCALES_L + ib // 2].astype(np.int32) >> (4 * (ib % 2))) & 15
    ls = lo | (((sh[:, :, None] >> (2 * ib)) & 3) << 4)
    m = (ls - 32).astype(np.float32).reshape(Rp, nsb * 8)
    codes = _iq4_bytes(blocks[:, :, IQ4XS_QS : IQ4XS_QS + 128].reshape(Rp, nsb * 8, 16))
    return _panels(codes, d, m, R, 8)


# ---------------------------------------------------------------------------------------------
# the panel x TILE-row tile, as LLVM vector code
# ---------------------------------------------------------------------------------------------

_I8, _I32 = ir.IntType(8), ir.IntType(32)
_F = ir.FloatType()
_V64I8 = ir.VectorType(_I8, 64)
_V16I32 = ir.VectorType(_I32, 16)
_V16F = ir.VectorType(_F, 16)
_IQ4_TABLE_U8 = [int(v) + 128 for v in kvalues_iq4nl()]  # IQ4_NL values + 128: 1 .. 241, unsigned


def _call(builder, name, ret, args):
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, [a.type for a in args]), name)
    return builder.call(fn, args)


def _splat(builder, val, vt):
    v = builder.insert_element(ir.Constant(vt, ir.Undefined), val, ir.Constant(_I32, 0))
    return builder.shuffle_vector(
        v, ir.Constant(vt, ir.Undefined), ir.Constant(ir.VectorType(_I32, vt.count), [0] * vt.count)
    )


def _ptr(context, builder, aty, aval, off, elt):
    arr = context.make_array(aty)(context, builder, aval)
    return builder.gep(arr.data, [off], source_etype=elt)


def _vload(context, builder, aty, val, off, vt, elt):
    """The vector vt at element ``off`` of array ``val`` (elements of type elt)."""
    return builder.load(builder.bitcast(_ptr(context, builder, aty, val, off, elt), vt.as_pointer()), align=4)


def _store_hsum(context, builder, accs, extra, aout, outv, off):
    """out[off .. off + 15] = ggml's hsum of the 8 lane accumulators, ((0+4)+(2+6)) + ((1+5)+(3+7)), + extra
    (the min term; 0 for the formats without one), as _row_32 / _row_256."""
    v = [builder.load(a) for a in accs]
    h = [builder.fadd(v[k], v[k + 4]) for k in range(4)]
    tot = builder.fadd(builder.fadd(builder.fadd(h[0], h[2]), builder.fadd(h[1], h[3])), extra)
    builder.store(tot, builder.bitcast(_ptr(context, builder, aout, outv, off, _F), _V16F.as_pointer()), align=4)


def _fma(builder, a, b, c):
    """a * b + c on <16 x float> with one rounding (vfmadd), as ggml's AVX2 kernels accumulate a block."""
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V16F, [_V16F] * 3), "llvm.fma.v16f32")
    return builder.call(fn, [a, b, c])


def _tile_intrinsic(kind):
    _k, G, off, formula = next(v for v in FORMATS.values() if v[0] == kind)
    nib = G == 4

    def impl(typingctx, P, D, M, p, qs, d, s, a4, out, t):
        sig = types.void(P, D, M, types.intp, qs, d, s, a4, out, types.intp)

        def codegen(context, builder, signature, args):
            Pv, Dv, Mv, pv, qsv, dv, sv, a4v, outv, tv = args
            aP, aD, aM, _, aqs, ad, as_, aa4, aout, _ = signature.args
            qs_arr = context.make_array(aqs)(context, builder, qsv)
            K = builder.extract_value(qs_arr.shape, 1)
            d_arr = context.make_array(ad)(context, builder, dv)
            nd = builder.extract_value(d_arr.shape, 1)  # activation scales per row (per 32, or per 256: Q8_K)
            nb = builder.udiv(K, ir.Constant(K.type, 32))  # 32-value (sub-)blocks per row
            out_arr = context.make_array(aout)(context, builder, outv)
            Rp = builder.extract_value(out_arr.shape, 1)
            intp = K.type
            c = lambda v: ir.Constant(intp, v)  # noqa: E731
            s_elt = context.get_data_type(as_.dtype)
            zero = ir.Constant(_V16F, [0.0] * 16)
            # per activation row of the tile: 8 float accumulators (ggml's AVX2 lanes: lane k = values
            # 4k..4k+3 of every block) and Q4_1/Q5_1's min term
            accs = [[cgutils.alloca_once_value(builder, zero) for _ in range(8)] for _ in range(TILE)]
            accm = [cgutils.alloca_once_value(builder, zero) for _ in range(TILE)]
            pbase = builder.mul(builder.mul(pv, nb), c(G * 64))
            sbase = builder.mul(builder.mul(pv, nb), c(PANEL))
            with cgutils.for_range(builder, nb) as loop:
                b = loop.index
                wo = builder.add(pbase, builder.mul(b, c(G * 64)))
                vecs = []  # (codes <64 x i8>, lane 0..7 = activation bytes 4 lane .. 4 lane + 3 of the block)
                for g in range(G):
                    w = builder.load(
                        builder.bitcast(
                            _ptr(context, builder, aP, Pv, builder.add(wo, c(64 * g)), _I8), _V64I8.as_pointer()
                        ),
                        align=1,
                    )
                    if nib:
                        lo = builder.and_(w, ir.Constant(_V64I8, [15] * 64))
                        hi = builder.lshr(w, ir.Constant(_V64I8, [4] * 64))
                        vecs += [(lo, g), (hi, 4 + g)]
                    else:
                        vecs.append((w, g))
                so = builder.add(sbase, builder.mul(b, c(PANEL)))
                dw = builder.load(builder.bitcast(_ptr(context, builder, aD, Dv, so, _F), _V16F.as_pointer()), align=4)
                mw = None
                if formula in ("C", "D"):
                    mw = builder.load(
                        builder.bitcast(_ptr(context, builder, aM, Mv, so, _F), _V16F.as_pointer()), align=4
                    )
                dds, aos, los, rbs = [], [], [], []
                for i in range(TILE):
                    row = builder.add(tv, c(i))
                    aos.append(builder.add(builder.mul(row, K), builder.mul(b, c(32))))
                    los.append(builder.add(builder.mul(row, builder.udiv(K, c(4))), builder.mul(b, c(8))))
                    if kind == K_IQ4_XS:  # Q8_K: d per 256 values
                        rb = builder.add(builder.mul(row, nd), builder.udiv(b, c(8)))
                    else:
                        rb = builder.add(builder.mul(row, nd), b)
                    rbs.append(rb)
                    da = _splat(builder, builder.load(_ptr(context, builder, ad, dv, rb, _F)), _V16F)
                    dd = builder.fmul(dw, da)  # d_w * d_a, rounded, as the row kernels' dd
                    if formula == "D":
                        dd = builder.fmul(dd, mw)  # d4d8 * (ls - 32)
                    dds.append(dd)
                for w, lane in vecs:
                    for i in range(TILE):
                        ap = builder.bitcast(
                            _ptr(context, builder, aqs, qsv, builder.add(aos[i], c(4 * lane)), _I8), _I32.as_pointer()
                        )
                        a = _splat(builder, builder.load(ap, align=1), _V16I32)
                        if off:  # start from -off * (the lane's 4 activations summed): the signed codes' sum, exact
                            init = _splat(
                                builder,
                                builder.load(_ptr(context, builder, aa4, a4v, builder.add(los[i], c(lane)), _I32)),
                                _V16I32,
                            )
                        else:
                            init = ir.Constant(_V16I32, [0] * 16)
                        isum = _call(
                            builder, "llvm.x86.avx512.vpdpbusd.512", _V16I32, [init, builder.bitcast(w, _V16I32), a]
                        )
                        acc = accs[i][lane]
                        builder.store(_fma(builder, builder.sitofp(isum, _V16F), dds[i], builder.load(acc)), acc)
                if formula == "C":  # accm += m_w * s_a (two roundings, as the row kernels' scalar)
                    for i in range(TILE):
                        sa = builder.load(_ptr(context, builder, as_, sv, rbs[i], s_elt))
                        if isinstance(s_elt, ir.IntType):  # (only in variants never run with Q8_K arrays)
                            sa = builder.sitofp(sa, _F)
                        mws = builder.fmul(mw, _splat(builder, sa, _V16F))
                        builder.store(builder.fadd(builder.load(accm[i]), mws), accm[i])
            for i in range(TILE):  # + the min term (0 for the others)
                oo = builder.add(builder.mul(builder.add(tv, c(i)), Rp), builder.mul(pv, c(PANEL)))
                _store_hsum(context, builder, accs[i], builder.load(accm[i]), aout, outv, oo)
            return context.get_dummy_value()

        return sig, codegen

    return intrinsic(impl)


_tile_q4_0 = _tile_intrinsic(K_Q4_0)
_tile_q4_1 = _tile_intrinsic(K_Q4_1)
_tile_iq4_nl = _tile_intrinsic(K_IQ4_NL)
_tile_q5_0 = _tile_intrinsic(K_Q5_0)
_tile_q5_1 = _tile_intrinsic(K_Q5_1)
_tile_q8_0 = _tile_intrinsic(K_Q8_0)
_tile_iq4_xs = _tile_intrinsic(K_IQ4_XS)


@njit(cache=True, nogil=True)
def _gemm_panels(kind, P, D, M, qs, d, s, a4, out, p0, p1):
    """out[:, 16p : 16p + 16] for panels p in [p0, p1), every activation row (T >= 4; the last tile
    starts at T - 4 and recomputes a few rows with the same result)."""
    T = qs.shape[0]
    for p in range(p0, p1):
        t = 0
        while t < T:
            t0 = min(t, T - TILE)
            if kind == K_Q4_0:
                _tile_q4_0(P, D, M, p, qs, d, s, a4, out, t0)
            elif kind == K_Q4_1:
                _tile_q4_1(P, D, M, p, qs, d, s, a4, out, t0)
            elif kind == K_IQ4_NL:
                _tile_iq4_nl(P, D, M, p, qs, d, s, a4, out, t0)
            elif kind == K_Q5_0:
                _tile_q5_0(P, D, M, p, qs, d, s, a4, out, t0)
            elif kind == K_Q5_1:
                _tile_q5_1(P, D, M, p, qs, d, s, a4, out, t0)
            elif kind == K_IQ4_XS:
                _tile_iq4_xs(P, D, M, p, qs, d, s, a4, out, t0)
            else:
                _tile_q8_0(P, D, M, p, qs, d, s, a4, out, t0)
            t += TILE


def _min_panels(T: int) -> int:
    """The fewest panels in a piece of work for a thread: one panel of 16 rows x K=576 x 512 activation rows is
    ~50 us; fewer rows need more panels per piece to pay a piece's dispatch. (It was 2048 // T, 4 panels at
    T = 512: a 192-row matrix, 12 panels, then ran as 3 pieces on 2 threads.)"""
    return max(1, 512 // max(1, T))


@njit(cache=True, nogil=True)
def _lane_starts(qs, neg_off):
    """Each lane's start value: -off * its 4 activations summed (the stored codes' offset taken out,
    exactly), int32 [T, K / 4] (numpy's reshape + sum took ~1 ms for 512 x 576, as long as a small product)."""
    T, K = qs.shape
    out = np.empty((T, K // 4), dtype=np.int32)
    for t in range(T):
        for j in range(K // 4):
            o = 4 * j
            out[t, j] = neg_off * (
                np.int32(qs[t, o]) + np.int32(qs[t, o + 1]) + np.int32(qs[t, o + 2]) + np.int32(qs[t, o + 3])
            )
    return out


def gemm(packed, fmt: str, act) -> np.ndarray:
    """``x @ W.T`` [T, R] from ``packed = pack(W, fmt)`` and ``act = quantize_activations(x, vtype)``
    (T >= TILE rows), panels spread over the row-kernel threads."""
    if fmt in ("Q4_K", "Q5_K"):
        return _gemm_q4_k(packed, act, fmt == "Q5_K")
    if fmt == "Q6_K":
        return _gemm_q6_k(packed, act)
    P, D, M, R = packed
    qs, d, s = act
    T = qs.shape[0]
    if T < TILE:
        raise ValueError(f"gemm needs at least {TILE} activation rows, got {T}")
    npan = D.shape[0] // (qs.shape[1] // 32 * PANEL)
    out = np.empty((T, npan * PANEL), dtype=np.float32)
    a4 = _lane_starts(qs, np.int32(-FORMATS[fmt][2]))
    _rows.run_rows(_gemm_panels, npan, FORMATS[fmt][0], P, D, M, qs, d, s, a4, out, min_rows=_min_panels(T))
    return out if out.shape[1] == R else out[:, :R]


# ---------------------------------------------------------------------------------------------
# K-quants (Q4_K), activations Q8_K: the row kernels' (matmul._row_256) numbers
# ---------------------------------------------------------------------------------------------

_V32I16 = ir.VectorType(ir.IntType(16), 32)


def _pack_q4_k(W, fmt="Q4_K"):
    """Q4_K (and Q5_K, see below) as panels: per super-block and 32-byte run jj (sub-blocks 2jj: low nibbles, 2jj + 1: high), 8 groups
    of [row 0: 4 bytes] .. [row 15: 4 bytes] like Q4_0's; the 6-bit scales as int16 pairs (sc, sc) per
    sub-block, the mins as pairs (m_2jj, m_2jj+1) per run (for vpdpwssd), d and dmin as float32; each
    [panel, super-block, ..., 16 rows]. Q5_K: its 5-bit codes as bytes, 8 groups per sub-block."""
    R = W.shape[0]
    ts = size(fmt)
    nsb = W.shape[1] // ts
    Rp = -(-R // PANEL) * PANEL
    blocks = np.zeros((Rp, nsb, ts), dtype=np.uint8)
    blocks[:R] = W.reshape(R, nsb, ts)
    d = _f16(blocks, Q4K_D)
    dmin = _f16(blocks, Q4K_DMIN)
    s = blocks[:, :, Q4K_SCALES : Q4K_SCALES + 12].astype(np.int32)
    sc = np.concatenate([s[:, :, 0:4] & 63, (s[:, :, 8:12] & 15) | ((s[:, :, 0:4] >> 6) << 4)], axis=2)
    mn = np.concatenate([s[:, :, 4:8] & 63, (s[:, :, 8:12] >> 4) | ((s[:, :, 4:8] >> 6) << 4)], axis=2)
    npan = Rp // PANEL
    if fmt == "Q4_K":
        codes = blocks[:, :, Q4K_QS : Q4K_QS + 128].reshape(npan, PANEL, nsb, 4, 8, 4).transpose(0, 2, 3, 4, 1, 5)
    else:  # Q5_K: 5-bit codes as bytes, sub-block j = 2jj + h: nibble h of qs[32jj + l], bit j of qh[l]
        ql = blocks[:, :, Q5K_QS : Q5K_QS + 128].reshape(Rp, nsb, 4, 1, 32)
        qh = blocks[:, :, Q5K_QH : Q5K_QH + 32].reshape(Rp, nsb, 1, 32)
        j = np.arange(8).reshape(1, 1, 8, 1)
        nib = np.concatenate([ql & 15, ql >> 4], axis=3).reshape(Rp, nsb, 8, 32)
        q5 = nib | (((qh >> j) & 1) << 4).astype(np.uint8)
        codes = q5.reshape(npan, PANEL, nsb, 8, 8, 4).transpose(0, 2, 3, 4, 1, 5)

    def per_panel(a):  # [Rp, nsb, n] -> [panel, nsb, n, 16]
        n = a.shape[2]
        return np.ascontiguousarray(a.reshape(npan, PANEL, nsb, n).transpose(0, 2, 3, 1)).reshape(-1)

    scp = per_panel(sc | (sc << 16))
    mnp = per_panel(mn[:, :, 0::2] | (mn[:, :, 1::2] << 16))
    return (
        np.ascontiguousarray(codes).reshape(-1),
        per_panel(d[:, :, None]),
        per_panel(dmin[:, :, None]),
        scp.view(np.int32),
        mnp.view(np.int32),
        R,
    )


def _tile_q45_k(five):
    """The Q4_K tile (``five``: Q5_K's, its codes stored as bytes by :func:`_pack_q4_k`)."""

    def impl(typingctx, P, D, DM, SC, MN, p, qs, d, bp, out, t):
        return _tile_q45_k_sig(five, P, D, DM, SC, MN, qs, d, bp, out)

    return intrinsic(impl)


def _tile_q45_k_sig(five, P, D, DM, SC, MN, qs, d, bp, out):
    """out[t .. t + TILE - 1, 16p .. 16p + 15] of a Q4_K panel: per (row, activation row) the row kernel's 8
    int32 lanes per super-block (lane k = values 4k..4k+3 of each sub-block, times its scale, summed over
    the 8 sub-blocks: vpmaddubsw pairs, then vpdpwssd with the (sc, sc) pairs; exact), then
    ``acc_k += float(lane_k) * (d_a * d_w)`` (multiply, then add: matmul._fma_ivec) and the min term
    ``accm -= (d_a * dmin_w) * float(sum_j m_j * bsum_j)``; out = ggml's hsum of acc + accm. ``five``: Q5_K,
    whose 5-bit codes (pack: nibble | qh bit << 4) are loaded as bytes, two vectors where Q4_K splits one."""
    sig = types.void(P, D, DM, SC, MN, types.intp, qs, d, bp, out, types.intp)

    def codegen(context, builder, signature, args):
        Pv, Dv, DMv, SCv, MNv, pv, qsv, dv, bpv, outv, tv = args
        aP, aD, aDM, aSC, aMN, _, aqs, ad, abp, aout, _ = signature.args
        qs_arr = context.make_array(aqs)(context, builder, qsv)
        K = builder.extract_value(qs_arr.shape, 1)
        intp = K.type
        c = lambda v: ir.Constant(intp, v)  # noqa: E731
        nsb = builder.udiv(K, c(256))
        out_arr = context.make_array(aout)(context, builder, outv)
        Rp = builder.extract_value(out_arr.shape, 1)
        zero = ir.Constant(_V16F, [0.0] * 16)
        izero = ir.Constant(_V16I32, [0] * 16)
        accs = [[cgutils.alloca_once_value(builder, zero) for _ in range(8)] for _ in range(TILE)]
        accm = [cgutils.alloca_once_value(builder, zero) for _ in range(TILE)]
        psb = builder.mul(pv, nsb)  # (panel, super-block) index base

        def vload(aty, val, off, vt, elt):
            return _vload(context, builder, aty, val, off, vt, elt)

        with cgutils.for_range(builder, nsb) as loop:
            b = loop.index
            sbi = builder.add(psb, b)
            dw = vload(aD, Dv, builder.mul(sbi, c(PANEL)), _V16F, _F)
            dmw = vload(aDM, DMv, builder.mul(sbi, c(PANEL)), _V16F, _F)
            scs = [
                vload(aSC, SCv, builder.mul(builder.add(builder.mul(sbi, c(8)), c(j)), c(PANEL)), _V16I32, _I32)
                for j in range(8)
            ]
            rows = [builder.add(tv, c(i)) for i in range(TILE)]
            das = []
            for i in range(TILE):
                das.append(
                    _splat(
                        builder,
                        builder.load(_ptr(context, builder, ad, dv, builder.add(builder.mul(rows[i], nsb), b), _F)),
                        _V16F,
                    )
                )
            aos = [builder.add(builder.mul(rows[i], K), builder.mul(b, c(256))) for i in range(TILE)]
            wbase = builder.mul(sbi, c((64 if five else 32) * 64))

            def wload(k):
                return builder.load(
                    builder.bitcast(
                        _ptr(context, builder, aP, Pv, builder.add(wbase, c(64 * k)), _I8), _V64I8.as_pointer()
                    ),
                    align=1,
                )

            for g in range(8):
                ivs = [izero] * TILE
                for jj in range(4):
                    if five:  # sub-blocks 2jj and 2jj + 1, bytes
                        lo, hi = wload(8 * (2 * jj) + g), wload(8 * (2 * jj + 1) + g)
                    else:  # one nibble vector: sub-block 2jj low, 2jj + 1 high
                        w = wload(8 * jj + g)
                        lo = builder.and_(w, ir.Constant(_V64I8, [15] * 64))
                        hi = builder.lshr(w, ir.Constant(_V64I8, [4] * 64))
                    for half, codes in ((0, lo), (1, hi)):
                        for i in range(TILE):
                            ap = builder.bitcast(
                                _ptr(
                                    context, builder, aqs, qsv, builder.add(aos[i], c(64 * jj + 32 * half + 4 * g)), _I8
                                ),
                                _I32.as_pointer(),
                            )
                            a = builder.bitcast(_splat(builder, builder.load(ap, align=1), _V16I32), _V64I8)
                            m = _call(builder, "llvm.x86.avx512.pmaddubs.w.512", _V32I16, [codes, a])
                            ivs[i] = _call(
                                builder,
                                "llvm.x86.avx512.vpdpwssd.512",
                                _V16I32,
                                [ivs[i], builder.bitcast(m, _V16I32), scs[2 * jj + half]],
                            )
                for i in range(TILE):
                    dd = builder.fmul(das[i], dw)  # d_a * d_w, as the row kernel's d[t, b] * d
                    acc = accs[i][g]
                    builder.store(builder.fadd(builder.load(acc), builder.fmul(builder.sitofp(ivs[i], _V16F), dd)), acc)
            for i in range(TILE):  # min term: sum_j m_j * bsum32_j (exact), then (d_a * dmin) * float(.)
                summs = izero
                for jj in range(4):
                    mn = vload(
                        aMN, MNv, builder.mul(builder.add(builder.mul(sbi, c(4)), c(jj)), c(PANEL)), _V16I32, _I32
                    )
                    bpair = builder.load(
                        _ptr(
                            context,
                            builder,
                            abp,
                            bpv,
                            builder.add(
                                builder.mul(rows[i], builder.mul(nsb, c(4))), builder.add(builder.mul(b, c(4)), c(jj))
                            ),
                            _I32,
                        )
                    )
                    summs = _call(
                        builder, "llvm.x86.avx512.vpdpwssd.512", _V16I32, [summs, mn, _splat(builder, bpair, _V16I32)]
                    )
                dm = builder.fmul(das[i], dmw)
                builder.store(
                    builder.fsub(builder.load(accm[i]), builder.fmul(dm, builder.sitofp(summs, _V16F))), accm[i]
                )
        for i in range(TILE):
            oo = builder.add(builder.mul(builder.add(tv, c(i)), Rp), builder.mul(pv, c(PANEL)))
            _store_hsum(context, builder, accs[i], builder.load(accm[i]), aout, outv, oo)
        return context.get_dummy_value()

    return sig, codegen


_tile_q4_k = _tile_q45_k(False)
_tile_q5_k = _tile_q45_k(True)


@njit(cache=True, nogil=True)
def _gemm_panels_q4_k(five, P, D, DM, SC, MN, qs, d, bp, out, p0, p1):
    T = qs.shape[0]
    for p in range(p0, p1):
        t = 0
        while t < T:
            if five:
                _tile_q5_k(P, D, DM, SC, MN, p, qs, d, bp, out, min(t, T - TILE))
            else:
                _tile_q4_k(P, D, DM, SC, MN, p, qs, d, bp, out, min(t, T - TILE))
            t += TILE


def _gemm_q4_k(packed, act, five=False):
    P, D, DM, SC, MN, R = packed
    qs, d, bsums = act
    T = qs.shape[0]
    npan = D.shape[0] // (qs.shape[1] // 256 * PANEL)
    out = np.empty((T, npan * PANEL), dtype=np.float32)
    b32 = bsums.reshape(T, -1, 2).sum(axis=2, dtype=np.int32)  # per 32-value sub-block
    bp = np.ascontiguousarray((b32[:, 0::2] & 0xFFFF) | (b32[:, 1::2] << 16), dtype=np.int32)  # (j even, j odd)
    _rows.run_rows(_gemm_panels_q4_k, npan, five, P, D, DM, SC, MN, qs, d, bp, out, min_rows=_min_panels(T))
    return out if out.shape[1] == R else out[:, :R]


def _pack_q6_k(W):
    """Q6_K as panels: the codes q - 32 as int8, per super-block run r (values 32r .. 32r + 31) and group g, [row 0:
    values 32r + 4g .. +3] .. [row 15: ...]; the int8 scales as int16 pairs (sc, sc) per 16-value sub-block; per
    group g the start value -128 * sum_r sc * (the 4 codes summed) (activations go in as a + 128, unsigned);
    d as float32; each [panel, super-block, ..., 16 rows]."""
    R = W.shape[0]
    ts = size("Q6_K")
    nsb = W.shape[1] // ts
    Rp = -(-R // PANEL) * PANEL
    blocks = np.zeros((Rp, nsb, ts), dtype=np.uint8)
    blocks[:R] = W.reshape(R, nsb, ts)
    d = _f16(blocks, Q6K_D)
    sc = blocks[:, :, Q6K_SCALES : Q6K_SCALES + 16].view(np.int8).astype(np.int32)
    ql = blocks[:, :, Q6K_QL : Q6K_QL + 128].astype(np.int32).reshape(Rp, nsb, 2, 2, 32)  # [half n, c % 2, l]
    qh = blocks[:, :, Q6K_QH : Q6K_QH + 64].astype(np.int32).reshape(Rp, nsb, 2, 1, 32)  # [half n, l]
    runs = []
    for c in range(4):  # run c of each half: nibble c // 2 of ql[32 (c % 2) + l], bits 2c of qh[l]
        lo = (ql[:, :, :, c % 2] >> (4 * (c // 2))) & 15
        hi = (qh[:, :, :, 0] >> (2 * c)) & 3
        runs.append(lo | (hi << 4))
    q = np.stack(runs, axis=3).reshape(Rp, nsb, 8, 8, 4) - 32  # [run r = 4n + c, group g, 4 values]
    npan = Rp // PANEL
    codes = q.astype(np.int8).reshape(npan, PANEL, nsb, 8, 8, 4).transpose(0, 2, 3, 4, 1, 5)
    scg = sc.reshape(Rp, nsb, 8, 2)[:, :, :, np.arange(8) // 4]  # the scale of run r, group g: [Rp, nsb, 8, 8]
    corr = -128 * (scg * q.sum(axis=4)).sum(axis=2)  # [Rp, nsb, 8 groups]

    def per_panel(a):  # [Rp, nsb, n] -> [panel, nsb, n, 16]
        n = a.shape[2]
        return np.ascontiguousarray(a.reshape(npan, PANEL, nsb, n).transpose(0, 2, 3, 1)).reshape(-1)

    return (
        np.ascontiguousarray(codes).reshape(-1).view(np.uint8),
        per_panel(d[:, :, None]),
        per_panel(((sc & 0xFFFF) | (sc << 16)).astype(np.int32)),
        per_panel(corr.astype(np.int32)),
        R,
    )


@intrinsic
def _tile_q6_k(typingctx, P, D, SC, C0, p, ua, d, out, t):
    """out[t .. t + TILE - 1, 16p .. 16p + 15] of a Q6_K panel: per (row, activation row) the row kernel's 8
    int32 lanes per super-block (lane k = values 4k..4k+3 of each 32-value run, times its sub-block scale,
    summed over the 8 runs; exact): from the start value C0 (the +128 of the activations taken out),
    vpmaddubsw of (a + 128) with the signed codes, vpdpwssd with the (sc, sc) pairs; then
    ``acc_k += float(lane_k) * (d_w * d_a)`` (matmul._fma_ivec) and out = ggml's hsum of acc + 0."""
    sig = types.void(P, D, SC, C0, types.intp, ua, d, out, types.intp)

    def codegen(context, builder, signature, args):
        Pv, Dv, SCv, C0v, pv, uav, dv, outv, tv = args
        aP, aD, aSC, aC0, _, aua, ad, aout, _ = signature.args
        ua_arr = context.make_array(aua)(context, builder, uav)
        K = builder.extract_value(ua_arr.shape, 1)
        intp = K.type
        c = lambda v: ir.Constant(intp, v)  # noqa: E731
        nsb = builder.udiv(K, c(256))
        out_arr = context.make_array(aout)(context, builder, outv)
        Rp = builder.extract_value(out_arr.shape, 1)
        zero = ir.Constant(_V16F, [0.0] * 16)
        accs = [[cgutils.alloca_once_value(builder, zero) for _ in range(8)] for _ in range(TILE)]
        psb = builder.mul(pv, nsb)

        def vload(aty, val, off, vt, elt):
            return _vload(context, builder, aty, val, off, vt, elt)

        with cgutils.for_range(builder, nsb) as loop:
            b = loop.index
            sbi = builder.add(psb, b)
            dw = vload(aD, Dv, builder.mul(sbi, c(PANEL)), _V16F, _F)
            rows = [builder.add(tv, c(i)) for i in range(TILE)]
            das = [
                _splat(
                    builder,
                    builder.load(_ptr(context, builder, ad, dv, builder.add(builder.mul(r, nsb), b), _F)),
                    _V16F,
                )
                for r in rows
            ]
            aos = [builder.add(builder.mul(r, K), builder.mul(b, c(256))) for r in rows]
            wbase = builder.mul(sbi, c(64 * 64))
            for g in range(8):
                c0 = vload(aC0, C0v, builder.mul(builder.add(builder.mul(sbi, c(8)), c(g)), c(PANEL)), _V16I32, _I32)
                ivs = [c0] * TILE
                for r in range(8):
                    w = builder.load(
                        builder.bitcast(
                            _ptr(context, builder, aP, Pv, builder.add(wbase, c(64 * (8 * r + g))), _I8),
                            _V64I8.as_pointer(),
                        ),
                        align=1,
                    )
                    sco = builder.mul(builder.add(builder.mul(sbi, c(16)), c(2 * r + g // 4)), c(PANEL))
                    scp = vload(aSC, SCv, sco, _V16I32, _I32)
                    for i in range(TILE):
                        ap = builder.bitcast(
                            _ptr(context, builder, aua, uav, builder.add(aos[i], c(32 * r + 4 * g)), _I8),
                            _I32.as_pointer(),
                        )
                        a = builder.bitcast(_splat(builder, builder.load(ap, align=1), _V16I32), _V64I8)
                        m = _call(builder, "llvm.x86.avx512.pmaddubs.w.512", _V32I16, [a, w])
                        ivs[i] = _call(
                            builder, "llvm.x86.avx512.vpdpwssd.512", _V16I32, [ivs[i], builder.bitcast(m, _V16I32), scp]
                        )
                for i in range(TILE):
                    dd = builder.fmul(dw, das[i])  # d_w * d_a, as the row kernel's
                    acc = accs[i][g]
                    builder.store(builder.fadd(builder.load(acc), builder.fmul(builder.sitofp(ivs[i], _V16F), dd)), acc)
        for i in range(TILE):  # + 0 (no min term)
            oo = builder.add(builder.mul(builder.add(tv, c(i)), Rp), builder.mul(pv, c(PANEL)))
            _store_hsum(context, builder, accs[i], zero, aout, outv, oo)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True)
def _gemm_panels_q6_k(P, D, SC, C0, ua, d, out, p0, p1):
    T = ua.shape[0]
    for p in range(p0, p1):
        t = 0
        while t < T:
            _tile_q6_k(P, D, SC, C0, p, ua, d, out, min(t, T - TILE))
            t += TILE


def _gemm_q6_k(packed, act):
    P, D, SC, C0, R = packed
    qs, d, _bsums = act
    T = qs.shape[0]
    npan = D.shape[0] // (qs.shape[1] // 256 * PANEL)
    out = np.empty((T, npan * PANEL), dtype=np.float32)
    ua = qs.view(np.uint8) ^ np.uint8(0x80)  # a + 128, unsigned
    _rows.run_rows(_gemm_panels_q6_k, npan, P, D, SC, C0, ua, d, out, min_rows=_min_panels(T))
    return out if out.shape[1] == R else out[:, :R]
