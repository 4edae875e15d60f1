"""Several weight rows per activation load: the vector code of the generation path's row groups.

A matrix-vector product of the integer path (:mod:`quantlab.kernels.matmul`) spends most of its time in
one loop: for every 32-value block of a row, decode the weight codes, take the int8 dot product with
the activation block (``_dot8``), convert to float, times ``d_w * d_a``, add to the row's 8-lane float
accumulator. One row at a time, each block waits for the previous block's add (a 4-cycle chain) and
reloads the activation block.

Here :data:`NR` rows run side by side: the activation block is loaded once for all of them (broadcast
to every row), the codes of all NR rows go through one wide dot product (64 bytes per vpdpbusd where
AVX-512 VNNI exists), the NR rows' float lanes sit in one ``<8*NR x float>`` accumulator (see the lane
layouts below) and the NR add chains are independent. Every row's arithmetic is the single-row
kernel's, operation for operation (same integer sums per lane, same float products and adds in the
same order: one fused multiply-add per lane and block where the one-row kernel has one): the outputs are bit-identical, only the instructions are shared.
Measured (one thread, SmolLM2's 1536 x 576 and 576 x 1536 matrices, fastest of 300 calls, load ~10):
Q4_0 17-21 -> 35-37 GMAC/s, Q4_1 20 -> 32-34, Q5_0 16-19 -> 28-29, Q8_0 19-24 -> 30-32, IQ4_NL 20 -> 27-29.

Signed codes (Q4_0 / Q5_0: q - 8 / q - 16; Q8_0's int8; IQ4_NL / IQ4_XS grid values) go into the wide
dot product unsigned, as u = code + off, with the accumulator started at -off times the sums of the 4
activations of each lane (one vpdpbusd of ones per activation block): the same int32 sums, one
instruction per 64 bytes instead of the sign trick's five (AVX-512 VNNI; measured, one thread, 3072 x 576,
load 5: Q4_0 1.37x, Q5_0 1.1x, IQ4_NL 1.1-1.15x, Q8_0 1.06x, IQ4_XS 3072 x 1536 1.18x).

* ``F32xN`` vectors: ``acc`` (NR rows x 8 lanes) and ``accm`` (one scalar per row: the min/offset
  term of Q4_0 / Q4_1 / Q5_0 / Q5_1, kept in a lane per row);
* :func:`fma_rows` builds, from a block decode, the intrinsic that adds one block of each of the NR
  rows; :func:`lane` reads one lane back for the final per-row sum.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic, models, register_model

from .simd import _I32, _byte_ptr, _check_bytes, _dot8, _load_bytes, _splat, _vec

NR = 8  # rows per group (measured: 8 beats 4 by 1.1-1.2x on SmolLM2's Q4_0 / Q4_1 / Q5_0 matrices)

_F = ir.FloatType()


class FVec(types.Type):
    """n float32 lanes held in a register (an LLVM <n x float> value) as a numba value."""

    def __init__(self, n):
        self.n = n
        super().__init__(name=f"F32x{n}")


@register_model(FVec)
class _FVecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(_F, fe_type.n))


f32_acc = FVec(8 * NR)  # NR rows x 8 lanes
f32_rows = FVec(NR)  # one lane per row


@intrinsic
def zeros_acc(typingctx):
    """The NR-row accumulator, zero."""

    def codegen(context, builder, signature, args):
        return ir.Constant(ir.VectorType(_F, 8 * NR), [0.0] * (8 * NR))

    return f32_acc(), codegen


@intrinsic
def zeros_rows(typingctx):
    """One zero per row."""

    def codegen(context, builder, signature, args):
        return ir.Constant(ir.VectorType(_F, NR), [0.0] * NR)

    return f32_rows(), codegen


@intrinsic
def lane(typingctx, v, i):
    """Lane i of an F32xN vector, as float32."""
    if not isinstance(v, FVec):
        return None

    def codegen(context, builder, signature, args):
        return builder.extract_element(args[0], builder.trunc(args[1], _I32))

    return types.float32(v, types.intp), codegen


def _fma(builder, a, b, c):
    """a * b + c lane by lane with one rounding (llvm.fma), as the one-row kernels accumulate a block
    (simd._vfma: ggml's AVX2 ``acc = _mm256_fmadd_ps(d, q, acc)``)."""
    from numba.core import cgutils

    t = a.type
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(t, [t] * 3), f"llvm.fma.v{t.count}f32")
    return builder.call(fn, [a, b, c])


def _halves(context, builder, aty, av, offs):
    """The fp16 values at the flat byte offsets ``offs`` as one <len x float> vector."""
    hv = ir.Constant(ir.VectorType(ir.HalfType(), len(offs)), ir.Undefined)
    for i, off in enumerate(offs):
        p = builder.bitcast(_byte_ptr(context, builder, aty, av, off), ir.HalfType().as_pointer())
        hv = builder.insert_element(hv, builder.load(p, typ=ir.HalfType(), align=1), ir.Constant(_I32, i))
    return builder.fpext(hv, ir.VectorType(_F, len(offs)))


def _concat(builder, parts):
    """Equal-length vectors -> one vector, in order."""
    while len(parts) > 1:
        n = parts[0].type.count
        parts = [
            builder.shuffle_vector(parts[k], parts[k + 1], ir.Constant(_vec(_I32, 2 * n), list(range(2 * n))))
            for k in range(0, len(parts), 2)
        ]
    return parts[0]


def _repeat(builder, v, times):
    """<n x T> -> <n*times x T>: v, v, v, ..."""
    n = v.type.count
    return builder.shuffle_vector(v, v, ir.Constant(_vec(_I32, n * times), list(range(n)) * times))


# ---------------------------------------------------------------------------------------------
# lane layouts. One row's block product is 8 int32 lanes, lane j = the 4 products 4j..4j+3 of the
# block's 32 values (what _dot8 gives and the one-row kernel accumulates). In the group accumulator a
# lane of a row sits at a position that depends on how the codes are laid out for the wide dot product:
#
#   "split" (4-bit codes: low nibbles are values 0-15, high nibbles values 16-31): the 16 low-nibble
#           bytes of the NR rows side by side times [a0..a15] repeated, then the high nibbles times
#           [a16..a31] repeated -> row i lane j at 4i + j (j < 4) and 4NR + 4i + j - 4 (j >= 4);
#   "whole" (Q8_0: 32 codes a row): the rows side by side times [a0..a31] repeated -> row i lane j at 8i + j.
#
# Lanes are independent sums, so where one sits changes nothing; the final per-row sum reads them back
# in the one-row order (_vsum's ((0+4)+(2+6)) + ((1+5)+(3+7))).
# ---------------------------------------------------------------------------------------------


def _pos(layout, i, j):
    if layout == "whole":
        return 8 * i + j
    return 4 * i + j if j < 4 else 4 * NR + 4 * i + (j - 4)


def _wide_isa():
    """True when 64-byte dot products can be one instruction (AVX-512 VNNI + BW)."""
    from . import simd

    if simd.ISA != "vnni":
        return False
    try:
        import llvmlite.binding as llvm

        f = llvm.get_host_cpu_features()
    except Exception:  # noqa: BLE001
        return False
    return bool(f.get("avx512vnni") and f.get("avx512bw"))


WIDE = _wide_isa()


def _pieces(builder, v, size):
    n = v.type.count
    return [
        builder.shuffle_vector(v, v, ir.Constant(_vec(_I32, size), list(range(k, k + size)))) if n > size else v
        for k in range(0, n, size)
    ]


def _dot64(builder, codes, signed, acts):
    """64 codes times 64 int8 activations -> <16 x i32> with one AVX-512 VNNI vpdpbusd (the u8 x s8
    sign trick of simd._dot8)."""
    from .simd import _x86

    if signed:
        zero = ir.Constant(_vec(ir.IntType(8), 64), [0] * 64)
        neg = builder.icmp_signed("<", codes, zero)
        acts = builder.select(neg, builder.sub(zero, acts), acts)
        codes = builder.select(neg, builder.sub(zero, codes), codes)
    v16 = _vec(_I32, 16)
    return _x86(
        builder,
        "llvm.x86.avx512.vpdpbusd.512",
        v16,
        [ir.Constant(v16, [0] * 16), builder.bitcast(codes, v16), builder.bitcast(acts, v16)],
    )


def _dot_n(builder, codes, signed, acts):
    """<32k x i8> codes times <32k x i8> int8 activations -> <8k x i32>, dword m = products 4m..4m+3:
    64-byte pieces on one vpdpbusd each where the CPU has AVX-512 VNNI, else 32-byte pieces through
    simd._dot8 (the same integer sums on every instruction set)."""
    size = 64 if WIDE and codes.type.count % 64 == 0 else 32
    dot = _dot64 if size == 64 else _dot8
    return _concat(
        builder,
        [dot(builder, c, signed, a) for c, a in zip(_pieces(builder, codes, size), _pieces(builder, acts, size))],
    )


def _asum_bias(builder, a32, off):
    """-off * (sum of the 4 activations 4j..4j+3) for j = 0..7 of a <32 x i8> activation block, as
    <8 x i32> (one vpdpbusd of a vector of ones)."""
    from .simd import _x86

    v8 = _vec(_I32, 8)
    ones = ir.Constant(_vec(ir.IntType(8), 32), [1] * 32)
    s = _x86(builder, "llvm.x86.avx512.vpdpbusd.256", v8, [ir.Constant(v8, [0] * 8), builder.bitcast(ones, v8),
                                                           builder.bitcast(a32, v8)])  # fmt: skip
    return builder.mul(s, ir.Constant(v8, [-off] * 8))


def _unsigned_table(table):
    """A signed 16-entry code table + 128 as bytes (IQ4_NL's grid -127..113 -> 1..241; as int8 constants)."""
    u = [int(v) + 128 for v in table]
    if not all(0 <= v < 256 for v in u):
        raise ValueError("table values must be in -128..127")
    return [v - 256 if v > 127 else v for v in u]


def _dot64_biased(builder, ucodes, acts, bias):
    """bias + 64 unsigned codes times 64 int8 activations -> <16 x i32> (one vpdpbusd)."""
    from .simd import _x86

    v16 = _vec(_I32, 16)
    return _x86(
        builder, "llvm.x86.avx512.vpdpbusd.512", v16, [bias, builder.bitcast(ucodes, v16), builder.bitcast(acts, v16)]
    )


def _dot_n_biased(builder, ucodes, acts, bias):
    """:func:`_dot_n` of codes given as ``ucodes - off`` (ucodes unsigned, 0..255) without forming the
    signed codes: each 64-byte piece is one vpdpbusd started from ``bias`` (<16 x i32>, per lane
    -off * the sum of its 4 activations), so lane m = sum (u - off) * a over products 4m..4m+3: the
    same integers as the signed dot product (exact int32 sums), in one instruction instead of the
    sign trick's five. AVX-512 VNNI only (WIDE)."""
    return _concat(
        builder,
        [_dot64_biased(builder, c, a, bias) for c, a in zip(_pieces(builder, ucodes, 64), _pieces(builder, acts, 64))],
    )


def _table_n(builder, q, table):
    """Codes 0..15 -> int8 table[code] on a <n x i8> vector (vpshufb on 64 bytes with AVX-512 BW)."""
    from .simd import _table16, _x86

    i8 = ir.IntType(8)
    if WIDE and q.type.count % 64 == 0:
        tab = ir.Constant(_vec(i8, 64), [int(table[i % 16]) for i in range(64)])
        parts = [_x86(builder, "llvm.x86.avx512.pshuf.b.512", _vec(i8, 64), [tab, c]) for c in _pieces(builder, q, 64)]
    else:
        parts = [_table16(builder, c, table) for c in _pieces(builder, q, 32)]
    return _concat(builder, parts)


def fma_rows(codes, minterm, doc, qs_off=0, qh_off=0, table=None, sub=0):
    """An intrinsic f(acc, accm, w, wo, rb, a, ao, da, sa) -> (acc', accm') adding one block of each
    of NR rows: row i's block starts at byte wo + i * rb of w (flat); its fp16 scale d at byte 0.
    ``codes``: "nib" (16 bytes of nibbles at qs_off: low = values 0-15, high = values 16-31), "q5"
    (nibbles + bit j of the uint32 at qh_off as bit 4 of value j), "q8" (32 int8 at qs_off);
    ``table``: map nibbles through this 16-entry int8 table (IQ4_NL), making the codes signed;
    ``sub``: subtract it from every code (Q4_0: 8, Q5_0: 16), making the codes signed. For
    each row, with dd = d_w * da, exactly the one-row kernel's operations::

        acc lanes of row i = fma(float(dot8(codes, a[ao:ao+32])), dd, acc)
        accm[i]            += dd * (off * sa)   minterm = ("off", off)   (Q4_0: -8, Q5_0: -16)
                            | m_w * sa          minterm = ("min", m offset)  (Q4_1, Q5_1: fp16 min)
                            (unchanged)         minterm = None
    """
    layout = "whole" if codes == "q8" else "split"
    i8 = ir.IntType(8)

    def impl(typingctx, acc, accm, w, wo, rb, a, ao, da, sa):
        _check_bytes(w, a)
        sig = types.Tuple((f32_acc, f32_rows))(
            f32_acc, f32_rows, w, types.intp, types.intp, a, types.intp, types.float32, types.float32
        )

        def codegen(context, builder, signature, args):
            accv, accmv, wv, wov, rbv, av, aov, dav, sav = args
            wty, aty = signature.args[2], signature.args[5]
            offs = [builder.add(wov, builder.mul(rbv, ir.Constant(rbv.type, i))) for i in range(NR)]

            def at(o, k):
                return builder.add(o, ir.Constant(o.type, k))

            if layout == "whole":  # rows side by side, 32 codes each, times a[0..32) repeated
                signed = True
                a32 = _load_bytes(context, builder, aty, av, aov, 32)
                acts = _repeat(builder, a32, 2)
                if WIDE:  # int8 codes q as u = q + 128 (a sign-bit flip), bias -128 * activation sums
                    c = _asum_bias(builder, a32, 128)
                    bias = builder.shuffle_vector(c, c, ir.Constant(_vec(_I32, 16), list(range(8)) * 2))
                    flip = ir.Constant(_vec(i8, 64), [-128] * 64)
                halves = []
                for g in range(0, NR, 2):
                    c = _concat(
                        builder, [_load_bytes(context, builder, wty, wv, at(offs[i], qs_off), 32) for i in (g, g + 1)]
                    )
                    if WIDE:
                        halves.append(_dot64_biased(builder, builder.xor(c, flip), acts, bias))
                    else:
                        halves.append(_dot_n(builder, c, signed, acts))
                dots = _concat(builder, halves)
            else:  # low nibbles of all rows times a[0..16) repeated, then high nibbles times a[16..32)
                raw = _concat(builder, [_load_bytes(context, builder, wty, wv, at(o, qs_off), 16) for o in offs])
                n = 16 * NR
                lo = builder.and_(raw, ir.Constant(_vec(i8, n), [15] * n))
                hi = builder.lshr(raw, ir.Constant(_vec(i8, n), [4] * n))
                if codes == "q5":  # bit j of row i's qh -> bit 4 of value j
                    i64 = ir.IntType(n)  # 16 bits a row
                    mlo = mhi = None
                    for i, o in enumerate(offs):
                        hp = builder.bitcast(_byte_ptr(context, builder, wty, wv, at(o, qh_off)), _I32.as_pointer())
                        qh = builder.zext(builder.load(hp, typ=_I32, align=1), i64)
                        l16 = builder.shl(builder.and_(qh, ir.Constant(i64, 0xFFFF)), ir.Constant(i64, 16 * i))
                        h16 = builder.shl(builder.lshr(qh, ir.Constant(i64, 16)), ir.Constant(i64, 16 * i))
                        mlo = l16 if mlo is None else builder.or_(mlo, l16)
                        mhi = h16 if mhi is None else builder.or_(mhi, h16)
                    for nm, m in (("lo", mlo), ("hi", mhi)):
                        bits = builder.bitcast(m, _vec(ir.IntType(1), n))
                        five = builder.shl(builder.zext(bits, _vec(i8, n)), ir.Constant(_vec(i8, n), [4] * n))
                        if nm == "lo":
                            lo = builder.or_(lo, five)
                        else:
                            hi = builder.or_(hi, five)
                signed = table is not None or sub != 0
                a32 = _load_bytes(context, builder, aty, av, aov, 32)
                a_lo = _repeat(builder, _load_bytes(context, builder, aty, av, aov, 16), NR)
                a_hi = _repeat(builder, _load_bytes(context, builder, aty, av, at(aov, 16), 16), NR)
                if WIDE and signed:  # the signed codes as unsigned u = code + off, bias -off * sums
                    off = 128 if table is not None else sub
                    if table is not None:
                        u_tab = _unsigned_table(table)
                        lo, hi = _table_n(builder, lo, u_tab), _table_n(builder, hi, u_tab)
                    c = _asum_bias(builder, a32, off)
                    v16 = _vec(_I32, 16)
                    b_lo = builder.shuffle_vector(c, c, ir.Constant(v16, [0, 1, 2, 3] * 4))
                    b_hi = builder.shuffle_vector(c, c, ir.Constant(v16, [4, 5, 6, 7] * 4))
                    dots = _concat(
                        builder, [_dot_n_biased(builder, lo, a_lo, b_lo), _dot_n_biased(builder, hi, a_hi, b_hi)]
                    )
                else:
                    if sub:  # signed codes q - sub (Q4_0: 8, Q5_0: 16), as the one-row kernel takes them
                        lo = builder.sub(lo, ir.Constant(_vec(i8, n), [sub] * n))
                        hi = builder.sub(hi, ir.Constant(_vec(i8, n), [sub] * n))
                    if table is not None:
                        lo, hi = _table_n(builder, lo, table), _table_n(builder, hi, table)
                    dots = _concat(builder, [_dot_n(builder, lo, signed, a_lo), _dot_n(builder, hi, signed, a_hi)])
            # the NR fp16 scales as one vector (one conversion), times da: each lane is the one-row
            # kernel's fpext(d_w) * da
            if minterm is not None and minterm[0] == "min" and minterm[1] == 2:  # d | m: one 32-bit load a row
                dm = ir.Constant(ir.VectorType(_I32, NR), ir.Undefined)
                for i, o in enumerate(offs):
                    p32 = builder.bitcast(_byte_ptr(context, builder, wty, wv, o), _I32.as_pointer())
                    dm = builder.insert_element(dm, builder.load(p32, typ=_I32, align=1), ir.Constant(_I32, i))
                hv = builder.fpext(builder.bitcast(dm, ir.VectorType(ir.HalfType(), 2 * NR)), ir.VectorType(_F, 2 * NR))
                d4 = builder.shuffle_vector(hv, hv, ir.Constant(_vec(_I32, NR), list(range(0, 2 * NR, 2))))
                m4 = builder.shuffle_vector(hv, hv, ir.Constant(_vec(_I32, NR), list(range(1, 2 * NR, 2))))
                dd4 = builder.fmul(d4, _splat(builder, dav, NR))
                mts = builder.fmul(m4, _splat(builder, sav, NR))
            else:
                dd4 = builder.fmul(_halves(context, builder, wty, wv, offs), _splat(builder, dav, NR))
            if minterm is not None and minterm[0] == "min" and minterm[1] != 2:
                m4 = _halves(context, builder, wty, wv, [at(o, minterm[1]) for o in offs])
                mts = builder.fmul(m4, _splat(builder, sav, NR))
            # each position's row scale: position p holds a lane of row rowof[p]
            rowof = [0] * (8 * NR)
            for i in range(NR):
                for j in range(8):
                    rowof[_pos(layout, i, j)] = i
            ddv = builder.shuffle_vector(dd4, dd4, ir.Constant(_vec(_I32, 8 * NR), rowof))
            p = builder.sitofp(dots, ir.VectorType(_F, 8 * NR))
            acc2 = _fma(builder, p, ddv, accv)
            if minterm is None:
                accm2 = accmv
            elif minterm[0] == "off":
                t = builder.fmul(ir.Constant(_F, float(minterm[1])), sav)
                accm2 = builder.fadd(accmv, builder.fmul(dd4, _splat(builder, t, NR)))
            else:
                accm2 = builder.fadd(accmv, mts)
            return context.make_tuple(builder, signature.return_type, [acc2, accm2])

        return sig, codegen

    impl.__doc__ = doc
    impl.layout = layout
    return intrinsic(impl)


def _table_block_step(context, builder, wty, wv, offs, aty, av, aov, ddv, accv, table):
    """acc + float(dot8(table[nibbles of 16 bytes at offs[i]], a[aov:aov+32])) * dd[i] per row i
    ("split" layout)."""
    raw = _concat(builder, [_load_bytes(context, builder, wty, wv, o, 16) for o in offs])
    n = 16 * NR
    i8 = ir.IntType(8)
    a_lo = _repeat(builder, _load_bytes(context, builder, aty, av, aov, 16), NR)
    a_hi = _repeat(builder, _load_bytes(context, builder, aty, av, builder.add(aov, ir.Constant(aov.type, 16)), 16), NR)
    lo_n = builder.and_(raw, ir.Constant(_vec(i8, n), [15] * n))
    hi_n = builder.lshr(raw, ir.Constant(_vec(i8, n), [4] * n))
    if WIDE:  # table + 128 as unsigned codes, bias -128 * activation sums (see fma_rows)
        u_tab = _unsigned_table(table)
        c = _asum_bias(builder, _load_bytes(context, builder, aty, av, aov, 32), 128)
        v16 = _vec(_I32, 16)
        b_lo = builder.shuffle_vector(c, c, ir.Constant(v16, [0, 1, 2, 3] * 4))
        b_hi = builder.shuffle_vector(c, c, ir.Constant(v16, [4, 5, 6, 7] * 4))
        dots = _concat(
            builder,
            [
                _dot_n_biased(builder, _table_n(builder, lo_n, u_tab), a_lo, b_lo),
                _dot_n_biased(builder, _table_n(builder, hi_n, u_tab), a_hi, b_hi),
            ],
        )
    else:
        lo, hi = _table_n(builder, lo_n, table), _table_n(builder, hi_n, table)
        dots = _concat(builder, [_dot_n(builder, lo, True, a_lo), _dot_n(builder, hi, True, a_hi)])
    rowof = [0] * (8 * NR)
    for i in range(NR):
        for j in range(8):
            rowof[_pos("split", i, j)] = i
    ddw = builder.shuffle_vector(ddv, ddv, ir.Constant(_vec(_I32, 8 * NR), rowof))
    p = builder.sitofp(dots, ir.VectorType(_F, 8 * NR))
    return _fma(builder, p, ddw, accv)


def iq4xs_superblock(doc, table, d_off, sh_off, sl_off, qs_off):
    """An intrinsic f(acc, w, o, rb, a, ao, da) -> acc' adding one IQ4_XS super-block of each of NR
    rows (row i's block at flat byte o + i * rb), as the one-row kernel does it: d4d8 = fp16 d * da;
    per 32-block ib, ls = 4 bits of scales_l | 2 bits of scales_h << 4 and acc += float(dot8(
    table[nibbles], a)) * (d4d8 * float(ls - 32)); the scales of all rows decoded as vectors."""

    def impl(typingctx, acc, w, o, rb, a, ao, da):
        _check_bytes(w, a)
        sig = f32_acc(f32_acc, w, types.intp, types.intp, a, types.intp, types.float32)

        def codegen(context, builder, signature, args):
            accv, wv, ov, rbv, av, aov, dav = args
            wty, aty = signature.args[1], signature.args[4]
            offs = [builder.add(ov, builder.mul(rbv, ir.Constant(rbv.type, i))) for i in range(NR)]

            def at(x, k):
                return builder.add(x, ir.Constant(x.type, k))

            d4d8 = builder.fmul(
                _halves(context, builder, wty, wv, [at(x, d_off) for x in offs]), _splat(builder, dav, NR)
            )
            vi = ir.VectorType(_I32, NR)
            sl = ir.Constant(vi, ir.Undefined)
            sh = ir.Constant(vi, ir.Undefined)
            for i, x in enumerate(offs):
                pl = builder.bitcast(_byte_ptr(context, builder, wty, wv, at(x, sl_off)), _I32.as_pointer())
                sl = builder.insert_element(sl, builder.load(pl, typ=_I32, align=1), ir.Constant(_I32, i))
                ph = builder.bitcast(_byte_ptr(context, builder, wty, wv, at(x, sh_off)), ir.IntType(16).as_pointer())
                hv = builder.zext(builder.load(ph, typ=ir.IntType(16), align=1), _I32)
                sh = builder.insert_element(sh, hv, ir.Constant(_I32, i))

            def c(v):
                return ir.Constant(vi, [v] * NR)

            for ib in range(8):
                low = builder.and_(builder.lshr(sl, c(8 * (ib // 2) + 4 * (ib % 2))), c(15))
                high = builder.shl(builder.and_(builder.lshr(sh, c(2 * ib)), c(3)), c(4))
                lsf = builder.sitofp(builder.sub(builder.or_(low, high), c(32)), ir.VectorType(_F, NR))
                dd = builder.fmul(d4d8, lsf)
                accv = _table_block_step(
                    context,
                    builder,
                    wty,
                    wv,
                    [at(x, qs_off + 16 * ib) for x in offs],
                    aty,
                    av,
                    at(aov, 32 * ib),
                    dd,
                    accv,
                    table,
                )
            return accv

        return sig, codegen

    impl.__doc__ = doc
    return intrinsic(impl)


def _totals(layout):
    def impl(typingctx, acc, accm):
        if not (isinstance(acc, FVec) and isinstance(accm, FVec)):
            return None

        def codegen(context, builder, signature, args):
            accv, accmv = args

            def col(j):  # lane j of every row -> <NR x float>
                return builder.shuffle_vector(
                    accv, accv, ir.Constant(_vec(_I32, NR), [_pos(layout, i, j) for i in range(NR)])
                )

            x = [col(j) for j in range(8)]
            y = [builder.fadd(x[j], x[j + 4]) for j in range(4)]  # (0+4), (1+5), (2+6), (3+7)
            z = [builder.fadd(y[j], y[j + 2]) for j in range(2)]  # (0+4)+(2+6), (1+5)+(3+7)
            return builder.fadd(builder.fadd(z[0], z[1]), accmv)

        return f32_rows(acc, accm), codegen

    return intrinsic(impl)


totals_split = _totals("split")
totals_whole = _totals("whole")
totals_split.__doc__ = totals_whole.__doc__ = (
    "Per row: its 8 lanes summed in _vsum's order ((0+4)+(2+6)) + ((1+5)+(3+7)), plus accm[i] (F32xNR)."
)
