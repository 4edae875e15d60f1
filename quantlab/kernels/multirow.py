"""Several weight rows per activation load: the vector code of the generation path's row groups.

A matrix-vector product of the integer path (:mod:`quantlab.kernels.matmul`) spends most of its time in
one loop: for every 32-value block of a row, decode the weight codes, take the int8 dot product with
the activation block (``_dot8``), convert to float, times ``d_w * d_a``, add to the row's 8-lane float
accumulator. One row at a time, each block waits for the previous block's add (a 4-cycle chain) and
reloads the activation block.

Here :data:`NR` rows run side by side: the activation block is loaded once for all of them, their
accumulators sit in one ``<8*NR x float>`` vector (row i in lanes 8i..8i+7, so the float work of two
rows is one 512-bit instruction where AVX-512 exists) and the NR add chains are independent. Every
row's arithmetic is the single-row kernel's, operation for operation (same integer sums, same float
products and adds in the same order, no fused multiply-add): the outputs are bit-identical, only
the instructions are shared.

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

NR = 4  # rows per group

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


def _half_at(context, builder, aty, av, off):
    p = builder.bitcast(_byte_ptr(context, builder, aty, av, off), ir.HalfType().as_pointer())
    return builder.fpext(builder.load(p, typ=ir.HalfType(), align=1), _F)


def _gather_rows(builder, vals):
    """NR scalars -> <NR x float>."""
    v = ir.Constant(ir.VectorType(_F, NR), ir.Undefined)
    for i, x in enumerate(vals):
        v = builder.insert_element(v, x, ir.Constant(_I32, i))
    return v


def fma_rows(decode, minterm, doc, d_offset=0):
    """An intrinsic f(acc, accm, w, wo, rb, a, ao, da, sa) -> (acc', accm') adding block products of
    NR rows: row i's block starts at byte wo + i * rb of w (flat), its codes are ``decode(context,
    builder, w type, w, offset) -> (<32 x i8>, signed)``, its scale the fp16 at offset + ``d_offset``.
    For each row, with dd = d_w * da::

        acc[8i:8i+8] += float(dot8(codes, a[ao:ao+32])) * dd
        accm[i]      += dd * (off * sa)      minterm = ("off", off)   (Q4_0: -8, Q5_0: -16)
                      | m_w * sa             minterm = ("min", m offset)  (Q4_1, Q5_1: fp16 min)
                      (unchanged)            minterm = None
    exactly the single-row kernel's operations per row."""

    def impl(typingctx, acc, accm, w, wo, rb, a, ao, da, sa):
        _check_bytes(w, a)
        sig = types.Tuple((f32_acc, f32_rows))(
            f32_acc, f32_rows, w, types.intp, types.intp, a, types.intp, types.float32, types.float32
        )

        def codegen(context, builder, signature, args):
            accv, accmv, wv, wov, rbv, av, aov, dav, sav = args
            wty, aty = signature.args[2], signature.args[5]
            acts = _load_bytes(context, builder, aty, av, aov, 32)
            dots, dds, mts = [], [], []
            for i in range(NR):
                o = builder.add(wov, builder.mul(rbv, ir.Constant(rbv.type, i)))
                codes, signed = decode(context, builder, wty, wv, o)
                dots.append(_dot8(builder, codes, signed, acts))
                dd = builder.fmul(
                    _half_at(context, builder, wty, wv, builder.add(o, ir.Constant(o.type, d_offset))), dav
                )
                dds.append(dd)
                if minterm is not None and minterm[0] == "min":
                    mo = builder.add(o, ir.Constant(o.type, minterm[1]))
                    mts.append(builder.fmul(_half_at(context, builder, wty, wv, mo), sav))
            # <8 x i32> x NR -> <8NR x i32> (row i in lanes 8i..8i+7)
            parts = dots
            while len(parts) > 1:
                n = parts[0].type.count
                parts = [
                    builder.shuffle_vector(parts[k], parts[k + 1], ir.Constant(_vec(_I32, 2 * n), list(range(2 * n))))
                    for k in range(0, len(parts), 2)
                ]
            p = builder.sitofp(parts[0], ir.VectorType(_F, 8 * NR))
            dd4 = _gather_rows(builder, dds)
            ddv = builder.shuffle_vector(
                dd4, dd4, ir.Constant(_vec(_I32, 8 * NR), [i for i in range(NR) for _ in range(8)])
            )
            acc2 = builder.fadd(accv, builder.fmul(p, ddv))
            if minterm is None:
                accm2 = accmv
            elif minterm[0] == "off":
                t = builder.fmul(ir.Constant(_F, float(minterm[1])), sav)
                accm2 = builder.fadd(accmv, builder.fmul(dd4, _splat(builder, t, NR)))
            else:
                accm2 = builder.fadd(accmv, _gather_rows(builder, mts))
            return context.make_tuple(builder, signature.return_type, [acc2, accm2])

        return sig, codegen

    impl.__doc__ = doc
    return intrinsic(impl)
