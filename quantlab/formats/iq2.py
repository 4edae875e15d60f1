"""IQ2_XXS, IQ2_XS and IQ2_S: 2-bit lattice ("grid") quantization — numpy reference.

These formats do not store one 2-bit integer per weight. For every group of 8 weights they store the
*index* of a point of a fixed 8-D code book, the grid (see :mod:`quantlab.formats._iqgrid`), plus the 8
signs, plus a 4-bit scale per block of 32 (IQ2_XXS) or 16 (IQ2_XS, IQ2_S) weights. A grid point has 8
coordinates from {8, 25, 43}; the grid holds 256 / 512 / 1024 of the 3**8 = 6561 possible points (the
ones real weights need most), so an 8-, 9- or 10-bit index replaces 8 separate codes.

The quantizer works on |x| in "odd integer" units: with a block scale s a weight becomes the nearest of
1, 3, 5 (level l = 0, 1, 2; the dequantizer's 8, 25, 43 are a tuned version of ~8.5*(2l+1)). Eight
levels form a code u; if u is not a grid point it is replaced by the best point of its neighbour list
(smallest sum of sqrt(w_i)*(s*q_i - |x_i|)**2, first one on ties). Several inverse scales
``id = (5 + 0.1*t)/m`` are tried and the one with the best weighted least-squares fit
``sumqx**2/sumq2`` wins (sumqx = sum w*|x|*q, sumq2 = sum w*q*q, q = 2l+1); groups that had to be
snapped are then re-snapped with the fitted scale and the scale refitted. Finally the block scales of a
super-block of 256 are stored as 4-bit codes s with scale ~ d*(2s+1), d = max_scale/31 in fp16.

Signs: IQ2_XXS and IQ2_XS store 7 sign bits per 8 weights; the 8th is implied (the number of minus
signs is even). A group with an odd number of negative weights has the sign of its least important
weight (smallest w*x*x) flipped first: that weight is then quantized against the wrong sign. IQ2_S stores
all 8 sign bits.

Weights (per super-block of 256, sigma2 = sum(x**2)/256 for IQ2_XXS/IQ2_XS, twice that for IQ2_S):
``w = imatrix_j * sqrt(sigma2 + x_j**2)``; IQ2_XXS and IQ2_XS require an importance matrix (ggml
asserts); IQ2_S without one uses ``w = 0.25*sigma2 + x_j**2``.

Where ggml's own quantizer aborts the process (no neighbour with a finite weighted error -- weights near
1e19 and beyond overflow float32 when squared and weighted -- or a NaN block scale), quantlab raises
:class:`quantlab.errors.QuantizationError` instead.

All arithmetic is float32 in the order of ``quantize_row_iq2_{xxs,xs,s}_impl`` (ggml-quants.c); sums
run left to right. Everything is vectorized over the blocks of all rows at once; only the scale
candidates are a Python loop.
"""

from __future__ import annotations

import numpy as np

from ..errors import ImatrixRequired
from . import _numerics as nm
from ._iqgrid import group_codes, ksigns, lattice, raise_search_failure, resnap, scale_search, sign_bits, split_signs
from ._numerics import nearest_int
from ._search import make_qp_quants
from .registry import get, register

F32 = np.float32

__all__ = [f"{op}_{k}" for k in ("iq2_xxs", "iq2_xs", "iq2_s") for op in ("quantize", "dequantize", "inspect")]


class _Variant:
    """What differs between the three types."""

    def __init__(self, name, grid, block, eps, tries, parity, sigma2_factor, fudge, resnap_all, qp_start):
        self.name, self.grid, self.block, self.eps, self.tries = name, grid, block, F32(eps), tries
        self.parity = parity  # 7 stored sign bits, the 8th implied by even parity
        self.sigma2_factor = F32(sigma2_factor)
        self.fudge = F32(fudge)  # stored d = fp16(d * fudge)
        self.resnap_all = resnap_all  # IQ2_XXS re-snaps all groups after the search
        self.qp_start = qp_start  # IQ2_XXS starts from make_qp_quants, the others from max/5


XXS = _Variant("IQ2_XXS", "iq2xxs", 32, 1e-15, range(-6, 7), True, 1, 1.0, True, True)
XS = _Variant("IQ2_XS", "iq2xs", 16, 1e-15, range(-9, 10), True, 1, 1.0, False, False)
S = _Variant("IQ2_S", "iq2s", 16, 1e-8, range(-9, 10), False, 2, 0.9875, False, False)


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------


def _raise(v, what, b, n_per_row, x_rows):
    raise_search_failure(v.name, v.block, what, b, n_per_row, x_rows)


# ----------------------------------------------------------------------------------------------------
# the shared quantizer
# ----------------------------------------------------------------------------------------------------


def _quantize_blocks(x: np.ndarray, imatrix, v: _Variant):
    """Run the IQ2 search on every scale block. Returns per block: grid indices (B, G), sign masks
    (B, G) (7-bit for IQ2_XXS/IQ2_XS), scale (B,), skipped (B,)."""
    lat = lattice(v.grid)
    bs = v.block
    G = bs // 8
    nrows, n = x.shape
    xs = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, 256)
    xb = xs.reshape(-1, bs)
    B = xb.shape[0]
    with np.errstate(over="ignore", invalid="ignore"):
        sumx2 = nm.csum(xs * xs)
        sigma2 = np.repeat((v.sigma2_factor * sumx2) / F32(256), 256 // bs).astype(np.float32)
        if imatrix is None:
            w = ((F32(0.25) * sigma2)[:, None] + xb * xb).astype(np.float32)  # IQ2_S only
        else:
            qw = np.tile(np.asarray(imatrix, np.float32).reshape(-1, bs), (nrows, 1))
            w = (qw * np.sqrt(sigma2[:, None] + xb * xb)).astype(np.float32)
        waux = np.sqrt(w).astype(np.float32)

    # signs: work on |x|, one bit per weight (bit j = weight j of a group of 8 is negative)
    xval, signs = split_signs(xb, w, v.parity)

    mx = xval.max(axis=1)
    skip = mx < v.eps
    with np.errstate(all="ignore"):
        if v.qp_start:
            # IQ2_XXS: a first least-squares scale for codes 0..4, then candidates around 5/(3*scale)
            scale, _ = make_qp_quants(xval, 4, w)
            scale = scale.astype(np.float32)
            denom = (scale * F32(3)).astype(np.float32)  # eff_max
            skip |= ~skip & (denom <= 0)
        else:
            scale = (mx / F32(5)).astype(np.float32)
            denom = mx
        live = ~skip
        invs = (((F32(5) + F32(t) * F32(0.1)) / denom).astype(np.float32) for t in v.tries)
    L, scale, on_grid, failed = scale_search(lat, xval, waux, w, live, invs, scale, np.ones((B, G), dtype=bool))

    # re-snap with the fitted scale (IQ2_XXS: every group; the others: the snapped ones), refit
    if v.resnap_all:
        need = live & (scale > 0)
        groups = need[:, None] & np.ones((1, G), dtype=bool)
    else:
        need = live & (~on_grid).any(axis=1) & (scale > 0)
        groups = need[:, None] & ~on_grid
    if need.any():
        L, scale, f = resnap(lat, L, xval, waux, w, scale, need, groups)
        failed |= f

    # a negative scale (not expected) is made positive by flipping all the signs
    neg_scale = live & (scale < 0)
    scale = np.where(neg_scale, -scale, scale).astype(np.float32)
    signs = np.where(neg_scale[:, None], ~signs & (127 if v.parity else 255), signs)
    if failed.any():
        _raise(v, "no candidate of a grid-neighbour search has a finite error", np.flatnonzero(failed)[0], n, x)
    bad = live & ~(scale >= 0)
    if bad.any():
        _raise(v, "the fitted block scale is NaN", np.flatnonzero(bad)[0], n, x)

    L = np.where(live[:, None], L, 0).astype(np.int8)
    gidx = lat.kmap[group_codes(lat, L)]
    if (gidx[live] < 0).any():  # ggml: "Oops: found point not on grid" + abort
        _raise(v, "a group ended off the grid", np.flatnonzero(live & (gidx < 0).any(axis=1))[0], n, x)
    scale = np.where(live, scale, F32(0)).astype(np.float32)
    return gidx.astype(np.int32), signs.astype(np.int32), scale, skip


def _super_scales(scale: np.ndarray, v: _Variant):
    """Per super-block: d = max_scale/31 (stored fp16(d*fudge)) and the 4-bit codes
    s = clamp(rint(0.5*(scale/d - 1)), 0, 15), computed with 1/d of the unrounded d.
    Returns (d bytes (S, 2), s (S, nblocks), zero (S,)); zero = every block scale is 0."""
    sc = scale.reshape(-1, 256 // v.block)
    max_scale = sc.max(axis=1)
    zero = ~(max_scale != 0)
    with np.errstate(all="ignore"):
        d = (max_scale / F32(31)).astype(np.float32)
        dh = np.where(zero, F32(0), (d * v.fudge).astype(np.float32)).astype(np.float32)
        idd = (F32(1) / d).astype(np.float32)
        s = np.clip(nearest_int(F32(0.5) * (idd[:, None] * sc - F32(1))), 0, 15)
        d16 = nm.f16(dh).view(np.uint8).reshape(-1, 2)
    s = np.where(zero[:, None], 0, s)
    return d16, s.astype(np.int32), zero


def _decode(d, s, gidx, masks, grid):
    """y = d*(0.5 + s)*0.25 * grid[index][i] * sign, float32 in ggml's order.
    d (S,), s (S, nb), gidx (S, nb, G), masks (S, nb, G) 8-bit."""
    with np.errstate(invalid="ignore", over="ignore"):
        db = ((d[:, None] * (F32(0.5) + s.astype(np.float32))) * F32(0.25)).astype(np.float32)
        g = lattice(grid).values[gidx].reshape(*gidx.shape[:2], -1)
        neg = sign_bits(masks)
        y = (db[:, :, None] * g) * np.where(neg, F32(-1), F32(1))
    return y.astype(np.float32)


def _d_of(b):
    return nm.from_f16_bits(b[:, 0:2].copy().view(np.uint16)[:, 0])


def _inspect(v, d_bits, d, s, gidx, masks, sidx=None):
    d = F32(d)
    with np.errstate(invalid="ignore", over="ignore"):
        db = ((d * (F32(0.5) + s.astype(np.float32))) * F32(0.25)).astype(np.float32)
    neg = sign_bits(masks).reshape(-1)
    out = {
        "d_bits": int(d_bits),
        "d": d,
        "scales": s.astype(np.int32),  # 4-bit block scales as stored
        "block_scales": db,  # as applied: d * (0.5 + s) * 0.25
        "grid_indices": gidx.astype(np.int32),  # (blocks, groups of 8)
        "grid_values": lattice(v.grid).values[gidx].astype(np.int32),  # (blocks, groups, 8)
        "sign_masks": masks.astype(np.int32),  # 8-bit masks, bit j = weight j negative
        "signs": np.where(neg, -1, 1).astype(np.int32),
        "formula": "x = d * (0.5 + s) * 0.25 * grid[index][i] * sign",
    }
    if sidx is not None:
        out["sign_indices"] = sidx.astype(np.int32)  # 7 stored bits; 8th = even parity
    return out


# ----------------------------------------------------------------------------------------------------
# IQ2_XXS
# ----------------------------------------------------------------------------------------------------


def _parts(v, b):
    """(d, s, grid indices, sign masks, 7-bit sign indices or None) of the blocks b of variant v."""
    if v is S:
        d, s, gidx, masks = _iq2_s_fields(b)
        return d, s, gidx, masks, None
    d, s, gidx, sidx = (_iq2_xxs_fields if v is XXS else _iq2_xs_fields)(b)
    return d, s, gidx, ksigns()[sidx], sidx


def _dequantize(v, q, n_per_row):
    d, s, gidx, masks, _ = _parts(v, np.ascontiguousarray(q).reshape(-1, get(v.name).type_size))
    return _decode(d, s, gidx, masks, v.grid).reshape(q.shape[0], n_per_row)


def _inspect_block(v, block):
    b = np.asarray(block, dtype=np.uint8).reshape(1, get(v.name).type_size)
    d, s, gidx, masks, sidx = _parts(v, b)
    return _inspect(
        v, int(b[0, 0]) | int(b[0, 1]) << 8, d[0], s[0], gidx[0], masks[0], None if sidx is None else sidx[0]
    )


def quantize_iq2_xxs(x, imatrix=None):
    """IQ2_XXS: 256 weights in 66 bytes (2.06 bits per weight), 8 blocks of 32, 4 groups of 8 each::

        byte 0 1    2 .. 65: two little-endian uint32 per block of 32 (block b at bytes 2+8b .. 9+8b)
            [d fp16][ w0 | w1 ][ w0 | w1 ] ...
            w0 = idx0 | idx1 << 8 | idx2 << 16 | idx3 << 24      grid index (256-grid) of group g
            w1 = sgn0 | sgn1 << 7 | sgn2 << 14 | sgn3 << 21 | s << 28
                 sgn_g: 7-bit sign index of group g, s: 4-bit block scale

        y = d * (0.5 + s) * 0.25 * grid[idx_g][j] * (-1 if bit j of ksigns[sgn_g] else +1)

    grid coordinates are 8, 25, 43; ksigns adds the 8th sign bit (even number of minus signs).
    Requires an importance matrix. Stored d = fp16(max_scale/31).
    """
    v = XXS
    if imatrix is None:
        raise ImatrixRequired("IQ2_XXS cannot be quantized without an importance matrix")
    nrows, _n = x.shape
    gidx, signs, scale, skip = _quantize_blocks(x, imatrix, v)
    S_ = gidx.shape[0] // 8
    d16, s, zero = _super_scales(scale, v)
    g = gidx.astype(np.uint32)
    w0 = g[:, 0] | (g[:, 1] << 8) | (g[:, 2] << 16) | (g[:, 3] << 24)
    sg = signs.astype(np.uint32)
    w1 = sg[:, 0] | (sg[:, 1] << 7) | (sg[:, 2] << 14) | (sg[:, 3] << 21)
    w0 = np.where(skip, np.uint32(0), w0).reshape(S_, 8)
    w1 = np.where(skip, np.uint32(0), w1).reshape(S_, 8) | (s.astype(np.uint32) << np.uint32(28))
    words = np.stack([w0, w1], axis=2).reshape(S_, 16).astype("<u4")
    words[zero] = 0
    return np.concatenate([d16, words.view(np.uint8).reshape(S_, 64)], axis=1).reshape(nrows, -1)


def _iq2_xxs_fields(b):
    d = _d_of(b)
    words = b[:, 2:66].copy().view("<u4").reshape(-1, 8, 2).astype(np.int64)
    gidx = ((words[:, :, 0:1] >> (8 * np.arange(4))) & 255).astype(np.int32)  # (S, 8, 4)
    sidx = ((words[:, :, 1:2] >> (7 * np.arange(4))) & 127).astype(np.int32)  # (S, 8, 4)
    s = (words[:, :, 1] >> 28).astype(np.int32)
    return d, s, gidx, sidx


def dequantize_iq2_xxs(q, n_per_row):
    return _dequantize(XXS, q, n_per_row)


def inspect_iq2_xxs(block):
    return _inspect_block(XXS, block)


# ----------------------------------------------------------------------------------------------------
# IQ2_XS
# ----------------------------------------------------------------------------------------------------


def quantize_iq2_xs(x, imatrix=None):
    """IQ2_XS: 256 weights in 74 bytes (2.31 bits per weight), 16 blocks of 16, 2 groups of 8 each::

        byte 0 1    2 .. 65                                  66 .. 73
            [d fp16][ 32 x uint16 (one per group of 8) ][ scales[8] ]
                      bits 0-8: grid index (512-grid)       byte p: low nibble = s of block 2p,
                      bits 9-15: 7-bit sign index            high nibble = s of block 2p+1

        y = d * (0.5 + s) * 0.25 * grid[idx][j] * (-1 if bit j of ksigns[sign index] else +1)

    Requires an importance matrix. Stored d = fp16(max_scale/31).
    """
    v = XS
    if imatrix is None:
        raise ImatrixRequired("IQ2_XS cannot be quantized without an importance matrix")
    nrows, _n = x.shape
    gidx, signs, scale, skip = _quantize_blocks(x, imatrix, v)
    S_ = gidx.shape[0] // 16
    d16, s, zero = _super_scales(scale, v)
    qs = (gidx | (signs << 9)).astype(np.uint16)
    qs = np.where(skip[:, None], np.uint16(0), qs).reshape(S_, 32).astype("<u2")
    qs[zero] = 0
    sc = (s[:, 0::2] | (s[:, 1::2] << 4)).astype(np.uint8)
    return np.concatenate([d16, qs.view(np.uint8).reshape(S_, 64), sc], axis=1).reshape(nrows, -1)


def _iq2_xs_fields(b):
    d = _d_of(b)
    qs = b[:, 2:66].copy().view("<u2").reshape(-1, 16, 2).astype(np.int32)
    sc = b[:, 66:74].astype(np.int32)
    s = np.stack([sc & 15, sc >> 4], axis=2).reshape(-1, 16)
    return d, s, qs & 511, qs >> 9


def dequantize_iq2_xs(q, n_per_row):
    return _dequantize(XS, q, n_per_row)


def inspect_iq2_xs(block):
    return _inspect_block(XS, block)


# ----------------------------------------------------------------------------------------------------
# IQ2_S
# ----------------------------------------------------------------------------------------------------


def quantize_iq2_s(x, imatrix=None):
    """IQ2_S: 256 weights in 82 bytes (2.56 bits per weight), 16 blocks of 16, 2 groups of 8 each::

        byte 0 1    2 .. 33       34 .. 65       66 .. 73     74 .. 81
            [d fp16][ qs[32] ][ signs[32] ][ qh[8] ][ scales[8] ]
            qs[g]     low 8 bits of the 10-bit grid index of group g (g = 0..31, 8 weights each)
            signs[g]  the 8 sign bits of group g (bit j: weight j negative)
            qh[p]     bits 2i..2i+1: index bits 8-9 of group 4p+i
            scales[p] low nibble = s of block 2p, high nibble = s of block 2p+1

        y = d * (0.5 + s) * 0.25 * grid[idx][j] * (-1 if bit j of signs[g] else +1)

    Stored d = fp16(0.9875 * max_scale/31) (an empirical fudge; the codes s use the unfudged d).
    Without an importance matrix the weights are 0.25*sigma2 + x**2.
    """
    v = S
    nrows, _n = x.shape
    gidx, signs, scale, skip = _quantize_blocks(x, imatrix, v)
    S_ = gidx.shape[0] // 16
    d16, s, _zero = _super_scales(scale, v)
    live = ~skip
    g = np.where(live[:, None], gidx, 0).reshape(S_, 32)
    qs = (g & 255).astype(np.uint8)
    sg = np.where(live[:, None], signs, 0).reshape(S_, 32).astype(np.uint8)
    qh = ((g >> 8).reshape(S_, 8, 4) << (2 * np.arange(4))).sum(axis=2).astype(np.uint8)
    sc = (s[:, 0::2] | (s[:, 1::2] << 4)).astype(np.uint8)
    # (a super-block whose block scales are all 0 keeps its qs/signs/qh bytes, with d = 0 and s = 0)
    return np.concatenate([d16, qs, sg, qh, sc], axis=1).reshape(nrows, -1)


def _iq2_s_fields(b):
    d = _d_of(b)
    qs = b[:, 2:34].astype(np.int32)
    sg = b[:, 34:66]
    qh = b[:, 66:74].astype(np.int32)
    hi = ((qh[:, :, None] >> (2 * np.arange(4))) & 3).reshape(-1, 32)
    gidx = (qs | (hi << 8)).reshape(-1, 16, 2)
    sc = b[:, 74:82].astype(np.int32)
    s = np.stack([sc & 15, sc >> 4], axis=2).reshape(-1, 16)
    return d, s, gidx, sg.reshape(-1, 16, 2)


def dequantize_iq2_s(q, n_per_row):
    return _dequantize(S, q, n_per_row)


def inspect_iq2_s(block):
    return _inspect_block(S, block)


# The implementations this module defines (quantlab.formats.registry.register; a format missing here
# fails tests/test_registry.py).
register("reference", "IQ2_XXS", quantize=quantize_iq2_xxs, dequantize=dequantize_iq2_xxs, inspect=inspect_iq2_xxs)
register("reference", "IQ2_XS", quantize=quantize_iq2_xs, dequantize=dequantize_iq2_xs, inspect=inspect_iq2_xs)
register("reference", "IQ2_S", quantize=quantize_iq2_s, dequantize=dequantize_iq2_s, inspect=inspect_iq2_s)
