"""IQ3_XXS and IQ3_S: 3-bit lattice ("grid") quantization — numpy reference.

Instead of one 3-bit integer per weight, these formats store, for every group of 4 weights, the index of
a point of a fixed 4-D code book (a "grid"; see :mod:`quantlab.formats._iqgrid`), plus one sign bit per
weight and a 4-bit scale per block of 32. The grid holds 256 (IQ3_XXS) or 512 (IQ3_S) of the 8**4 = 4096
points of the lattice {1, 3, ..., 15}**4 — the ones that occur most in real weights — so an 8-bit (9-bit)
index costs 2 (2.25) bits per weight, less than 4 separate 3-bit codes.

The quantizer works on |x| (signs are stored separately) in "odd integer" units: a block scale s maps a
weight to the nearest odd integer 2l+1 (l = 0..7), four levels form a code u; if u is not a grid point, it
is replaced by the best of its listed neighbours (smallest sum of sqrt(w)*(s*q - |x|)**2). Scale
candidates ``id = (15 + 0.2*t)/max|x|`` are tried (t = -15..15 for IQ3_XXS, -9..9 for IQ3_S) and the one
with the best weighted least-squares fit ``sumqx**2/sumq2`` wins; groups that had to be snapped to a
neighbour are then re-snapped with the fitted scale and the scale is refitted. Finally the 8 block scales
of a super-block of 256 are stored as 4-bit odd multiples of ``d = max_scale/31`` (d itself in fp16,
times an empirical fudge factor).

Weights: ``x**2`` without an importance matrix, ``imatrix_j * sqrt(sigma2 + x_j**2)`` with one
(sigma2 = 2*sum(x**2)/256 over the super-block).

Where ggml's own quantizer aborts the process (a neighbour search in which every candidate's weighted
squared error overflows float32: weights of magnitude about 1e13 and beyond without an imatrix, about
1e15 with one), quantlab raises :class:`quantlab.errors.QuantizationError` at the same point instead.

All arithmetic is float32 in the order of ``quantize_row_iq3_xxs_impl`` / ``quantize_row_iq3_s_impl``
(ggml-quants.c); sums run left to right.
"""

from __future__ import annotations

import numpy as np

from . import _numerics as nm
from ._iqgrid import group_codes, ksigns, lattice, raise_search_failure, resnap, scale_search, sign_bits, split_signs
from ._numerics import nearest_int
from .registry import register

F32 = np.float32

__all__ = [f"{op}_{k}" for k in ("iq3_xxs", "iq3_s") for op in ("quantize", "dequantize", "inspect")]


class _Variant:
    """What differs between the two types."""

    def __init__(self, name, grid, eps, tries, parity, resnap_all, fudge):
        self.name, self.grid, self.eps, self.tries = name, grid, eps, tries
        self.parity = parity  # IQ3_XXS: 7-bit sign index, 8th sign implied by even parity
        self.resnap_all = resnap_all  # IQ3_S re-snaps all 8 groups after the search
        self.fudge = F32(fudge)


XXS = _Variant("IQ3_XXS", "iq3xxs", F32(1e-8), range(-15, 16), True, False, 1.0125)
S = _Variant("IQ3_S", "iq3s", None, range(-9, 10), False, True, 1.033)


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------


def _raise(v, what, b, n_per_row, x_rows):
    raise_search_failure(
        v.name,
        32,
        what,
        b,
        n_per_row,
        x_rows,
        ggml="aborts the process on this input (GGML_ASSERT in its neighbour search)",
        overflow="from |weights| of about 1e13 without an imatrix (about 1e15 with one)",
    )


# ----------------------------------------------------------------------------------------------------
# the shared quantizer
# ----------------------------------------------------------------------------------------------------


def _quantize_blocks(x: np.ndarray, imatrix, v: _Variant):
    """Run the IQ3 search on every block of 32. Returns per block: levels L (B, 32), grid indices
    (B, 8), sign masks (B, 4) (7-bit for IQ3_XXS), scale (B,), skipped (B,)."""
    lat = lattice(v.grid)
    nrows, n = x.shape
    xs = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, 256)
    xb = xs.reshape(-1, 32)
    B = xb.shape[0]
    with np.errstate(over="ignore", invalid="ignore"):
        sigma2 = np.repeat((F32(2) * nm.csum(xs * xs)) / F32(256), 8).astype(np.float32)
        if imatrix is None:
            w = (xb * xb).astype(np.float32)
        else:
            qw = np.tile(np.asarray(imatrix, np.float32).reshape(-1, 32), (nrows, 1))
            w = (qw * np.sqrt(sigma2[:, None] + xb * xb)).astype(np.float32)
        waux = np.sqrt(w).astype(np.float32)

    # signs: work on |x|, remember the minus signs, one bit per weight, 8 weights per byte
    xval, signs = split_signs(xb, w, v.parity)

    mx = xval.max(axis=1)
    skip = (mx < v.eps) if v.eps is not None else (mx == 0)
    live = ~skip

    # the scale search (IQ3_XXS starts with every group "on the grid", IQ3_S with none)
    with np.errstate(all="ignore"):
        scale = (mx / F32(15)).astype(np.float32)
        invs = (((F32(15) + F32(t) * F32(0.2)) / mx).astype(np.float32) for t in v.tries)
    L, scale, on_grid, failed = scale_search(
        lat, xval, waux, w, live, invs, scale, np.full((B, 8), v.parity, dtype=bool)
    )

    # re-snap the groups that were off the grid (IQ3_S: all groups) with the fitted scale, refit
    need = live & (~on_grid).any(axis=1) & (scale > 0)
    if need.any():
        groups = need[:, None] & (np.ones((1, 8), bool) if v.resnap_all else ~on_grid)
        L, scale, f = resnap(lat, L, xval, waux, w, scale, need, groups)
        failed |= f

    neg_scale = live & (scale < 0)
    scale = np.where(neg_scale, -scale, scale).astype(np.float32)
    signs = np.where(neg_scale[:, None], ~signs & (127 if v.parity else 255), signs)
    failed_nan = live & ~(scale >= 0)
    if failed.any():
        _raise(v, "no finite candidate in a grid-neighbour search", np.flatnonzero(failed)[0], n, x)
    if failed_nan.any():
        _raise(v, "the fitted block scale is NaN", np.flatnonzero(failed_nan)[0], n, x)

    L = np.where(live[:, None], L, 0).astype(np.int8)
    gidx = lat.kmap[group_codes(lat, L)]
    assert (gidx >= 0).all()
    scale = np.where(live, scale, F32(0)).astype(np.float32)
    return L, gidx.astype(np.int32), signs.astype(np.int32), scale, skip


def _super_scales(scale: np.ndarray, fudge):
    """Per super-block: d = max_scale/31 (stored fp16(d*fudge)) and the 4-bit multipliers
    l = clamp(rint(0.5*(scale/d - 1)), 0, 15) computed with the unrounded d. Returns (d16 bytes, l, zero)."""
    sc = scale.reshape(-1, 8)
    max_scale = sc.max(axis=1)
    zero = ~(max_scale != 0)
    with np.errstate(all="ignore"):
        d = (max_scale / F32(31)).astype(np.float32)
        dh = np.where(zero, F32(0), (d * fudge).astype(np.float32)).astype(np.float32)
        idd = (F32(1) / d).astype(np.float32)
        l = np.clip(nearest_int(F32(0.5) * (idd[:, None] * sc - F32(1))), 0, 15)
    l = np.where(zero[:, None], 0, l)
    with np.errstate(over="ignore"):
        d16 = nm.f16(dh).view(np.uint8).reshape(-1, 2)
    return d16, l.astype(np.int32), zero


def _grid_values(name, idx):
    return lattice(name).values[idx]


def _sign_masks_xxs(sign_idx):
    return ksigns()[sign_idx]


# ----------------------------------------------------------------------------------------------------
# IQ3_XXS
# ----------------------------------------------------------------------------------------------------


def quantize_iq3_xxs(x, imatrix=None):
    """IQ3_XXS: 256 weights in 98 bytes (3.06 bits per weight), 8 blocks of 32, 8 groups of 4 each::

        byte 0  1    2 .. 65                         66 .. 97
            [ d fp16 ][ grid index, 1 byte per group ][ 8 x uint32, one per block of 32 ]
                       block b: bytes 2+8b .. 2+8b+7   bits 7g..7g+6: sign index of 8 weights g (g=0..3)
                                                       bits 28..31  : block scale s (4 bits)

        group of 4 weights k of block b:  |y| = d * (0.5 + s) * 0.5 * grid[index][0..3]
        sign byte = ksigns[sign index] (7 stored bits + an 8th making the number of minus signs even)
        weight j of an 8-group is negative when bit j of the sign byte is set

    Why these factors: the quantizer fits |x| ~ scale_b * (2l+1) per block, encodes
    scale_b ~ d * (2s+1) with d = max_scale/31, and the grid stores ~4*(2l+1), i.e. the values
    {4, 12, 20, 28, 36, 44, 52, 62} (the last one stretched from 60). So
    d * (0.5 + s) * 0.5 * 4*(2l+1) = d * (2s+1) * (2l+1). The stored d is fp16(1.0125 * d), an empirical
    fudge factor of ggml.
    """
    nrows, _n = x.shape
    _L, gidx, signs, scale, skip = _quantize_blocks(x, imatrix, XXS)
    S_ = gidx.shape[0] // 8
    d16, l, zero = _super_scales(scale, XXS.fudge)
    words = (signs[:, 0] | (signs[:, 1] << 7) | (signs[:, 2] << 14) | (signs[:, 3] << 21)).astype(np.uint32)
    words = np.where(skip, np.uint32(0), words).reshape(S_, 8) | (l.astype(np.uint32) << np.uint32(28))
    qs = np.where(skip[:, None], 0, gidx).astype(np.uint8).reshape(S_, 64)
    body = np.concatenate([qs, words.astype("<u4").view(np.uint8).reshape(S_, 32)], axis=1)
    body[zero] = 0
    return np.concatenate([d16, body], axis=1).reshape(nrows, -1)


def _iq3_xxs_fields(b):
    d = nm.from_f16_bits(b[:, 0:2].copy().view(np.uint16)[:, 0])
    gidx = b[:, 2:66].reshape(-1, 8, 8).astype(np.int32)
    words = b[:, 66:98].copy().view("<u4").reshape(-1, 8).astype(np.int64)
    s = (words >> 28).astype(np.int32)
    sidx = ((words[:, :, None] >> (7 * np.arange(4))) & 127).astype(np.int32)  # (S, 8, 4)
    return d, gidx, s, sidx


def dequantize_iq3_xxs(q, n_per_row):
    b = np.ascontiguousarray(q).reshape(-1, 98)
    d, gidx, s, sidx = _iq3_xxs_fields(b)
    with np.errstate(invalid="ignore", over="ignore"):
        db = ((d[:, None] * (F32(0.5) + s.astype(np.float32))) * F32(0.5)).astype(np.float32)  # (S, 8)
        g = _grid_values("iq3xxs", gidx).reshape(-1, 8, 32)  # (S, 8, 32)
        masks = _sign_masks_xxs(sidx)  # (S, 8, 4)
        neg = sign_bits(masks)
        y = (db[:, :, None] * g) * np.where(neg, F32(-1), F32(1))
    return y.astype(np.float32).reshape(q.shape[0], n_per_row)


def inspect_iq3_xxs(block):
    b = np.asarray(block, dtype=np.uint8).reshape(1, 98)
    d, gidx, s, sidx = _iq3_xxs_fields(b)
    d = F32(d[0])
    masks = _sign_masks_xxs(sidx[0])
    neg = sign_bits(masks)
    with np.errstate(invalid="ignore", over="ignore"):
        db = ((d * (F32(0.5) + s[0].astype(np.float32))) * F32(0.5)).astype(np.float32)
    return {
        "d_bits": int(b[0, 0]) | int(b[0, 1]) << 8,
        "d": d,
        "scales": s[0],  # 4-bit block scales as stored
        "block_scales": db,  # as applied: d * (0.5 + s) * 0.5
        "grid_indices": gidx[0],  # (8 blocks, 8 groups of 4)
        "grid_values": _grid_values("iq3xxs", gidx[0]).astype(np.int32),  # (8, 8, 4)
        "sign_indices": sidx[0],  # (8 blocks, 4) 7-bit
        "sign_masks": masks,  # (8, 4) 8-bit, even parity
        "signs": np.where(neg, -1, 1).reshape(256).astype(np.int32),
        "formula": "x = d * (0.5 + s) * 0.5 * grid[index][i] * sign",
    }


# ----------------------------------------------------------------------------------------------------
# IQ3_S
# ----------------------------------------------------------------------------------------------------


def quantize_iq3_s(x, imatrix=None):
    """IQ3_S: 256 weights in 110 bytes (3.44 bits per weight), 8 blocks of 32, 8 groups of 4 each::

        byte 0 1    2 .. 65      66 .. 73        74 .. 105              106 .. 109
            [d fp16][ qs[64] ][ qh[8] ][ signs[32] ][ scales[4] ]
            qs[8b + k]   low 8 bits of the 9-bit grid index of group k of block b
            qh[b] bit k  bit 8 of that index
            signs[4b+p]  one full sign byte for weights 8p..8p+7 of block b (bit j: weight j negative)
            scales[p]    low nibble: scale s of block 2p, high nibble: block 2p+1

        |y| = d * (1 + 2s) * grid[index][i],  grid values = odd integers 1, 3, ..., 15

    Stored d = fp16(1.033 * d). A quirk reproduced from ggml: a block of 32 exact zeros is skipped
    *without advancing* the qs/signs write positions, so the following blocks' qs and sign bytes move up
    by 8 and 4 bytes (qh and scales stay indexed by block); the zero block reads back as non-zero junk.
    """
    nrows, _n = x.shape
    _L, gidx, signs, scale, skip = _quantize_blocks(x, imatrix, S)
    S_ = gidx.shape[0] // 8
    d16, l, _zero = _super_scales(scale, S.fudge)
    live = ~skip.reshape(S_, 8)
    gidx = gidx.reshape(S_, 8, 8)
    signs = signs.reshape(S_, 8, 4)
    qs = np.zeros((S_, 64), dtype=np.uint8)
    sg = np.zeros((S_, 32), dtype=np.uint8)
    pos = np.cumsum(live, axis=1) - 1  # write slot of each live block
    sb, ib = np.nonzero(live)
    qs[sb[:, None], 8 * pos[sb, ib][:, None] + np.arange(8)] = (gidx[sb, ib] & 255).astype(np.uint8)
    sg[sb[:, None], 4 * pos[sb, ib][:, None] + np.arange(4)] = signs[sb, ib].astype(np.uint8)
    qh = np.where(live[:, :, None], (gidx >> 8) << np.arange(8), 0).sum(axis=2).astype(np.uint8)
    sc = (l[:, 0::2] | (l[:, 1::2] << 4)).astype(np.uint8)
    return np.concatenate([d16, qs, qh, sg, sc], axis=1).reshape(nrows, -1)


def _iq3_s_fields(b):
    d = nm.from_f16_bits(b[:, 0:2].copy().view(np.uint16)[:, 0])
    qs = b[:, 2:66].reshape(-1, 8, 8).astype(np.int32)
    qh = b[:, 66:74].astype(np.int32)
    gidx = qs | (((qh[:, :, None] >> np.arange(8)) & 1) << 8)
    sbytes = b[:, 74:106].reshape(-1, 8, 4)
    sc = b[:, 106:110].astype(np.int32)
    s = np.stack([sc & 15, sc >> 4], axis=2).reshape(-1, 8)
    return d, gidx, sbytes, s


def dequantize_iq3_s(q, n_per_row):
    b = np.ascontiguousarray(q).reshape(-1, 110)
    d, gidx, sbytes, s = _iq3_s_fields(b)
    with np.errstate(invalid="ignore", over="ignore"):
        db = (d[:, None] * (1 + 2 * s).astype(np.float32)).astype(np.float32)
        g = _grid_values("iq3s", gidx).reshape(-1, 8, 32)
        neg = sign_bits(sbytes)
        y = (db[:, :, None] * g) * np.where(neg, F32(-1), F32(1))
    return y.astype(np.float32).reshape(q.shape[0], n_per_row)


def inspect_iq3_s(block):
    b = np.asarray(block, dtype=np.uint8).reshape(1, 110)
    d, gidx, sbytes, s = _iq3_s_fields(b)
    d = F32(d[0])
    neg = sign_bits(sbytes[0])
    with np.errstate(invalid="ignore", over="ignore"):
        db = (d * (1 + 2 * s[0]).astype(np.float32)).astype(np.float32)
    return {
        "d_bits": int(b[0, 0]) | int(b[0, 1]) << 8,
        "d": d,
        "scales": s[0].astype(np.int32),  # 4-bit block scales as stored
        "block_scales": db,  # as applied: d * (1 + 2s)
        "grid_indices": gidx[0],  # (8 blocks, 8 groups of 4), 9 bits
        "grid_values": _grid_values("iq3s", gidx[0]).astype(np.int32),  # (8, 8, 4)
        "sign_bytes": sbytes[0].astype(np.int32),  # (8 blocks, 4)
        "signs": np.where(neg, -1, 1).reshape(256).astype(np.int32),
        "formula": "x = d * (1 + 2s) * grid[index][i] * sign",
    }


# The implementations this module defines (quantlab.formats.registry.register; a format missing here
# fails tests/test_registry.py).
register("reference", "IQ3_XXS", quantize=quantize_iq3_xxs, dequantize=dequantize_iq3_xxs, inspect=inspect_iq3_xxs)
register("reference", "IQ3_S", quantize=quantize_iq3_s, dequantize=dequantize_iq3_s, inspect=inspect_iq3_s)
