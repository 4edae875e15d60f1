"""IQ1_S and IQ1_M: ~1.6-1.75 bit lattice quantization — numpy reference.

Every weight is one of three levels {-1, 0, +1}, shifted by a small delta (+-0.125) shared by a group,
times a block scale. Groups of 8 levels are not stored one by one: the 3**8 = 6561 possible groups are
restricted to the 2048 most useful ones (the ``iq1s`` grid, :mod:`quantlab.formats._iqgrid`), so a group
costs an 11-bit grid index, i.e. 1.375 bits per weight, plus the scales and delta signs.

The quantizer solves the weighted least-squares problem of each block *exactly* before snapping to the
grid: with three levels v0 < v1 < v2 the best assignment puts the smallest values on v0, the middle ones
on v1 and the largest on v2, so after sorting the block (stable sort) it tries every pair of split points
(i1, i2) -- 561 of them for 32 values -- and both level sets x_p = {-1, 0, 1} + 0.125 and
x_m = {-1, 0, 1} - 0.125. With prefix sums S_k = sum of w*x and W_k = sum of w over the k smallest
values, a split scores ``sumqx**2/sumq2`` with sumqx = sum(v*S-differences) and sumq2 = sum(v*v*W-
differences); the best split wins (first one on ties, accepted when ``sumqx**2 > best*sumq2``). Groups
whose levels are not a grid point are replaced by the neighbour with the smallest weighted error
``sum w*(scale*v - x)**2`` (raw weights, signed x) and the scale is refitted.

IQ1_M uses blocks of 16 and lets each group of 8 pick its own delta sign (4 combinations per split);
ggml (this version) computes the 4 candidates from per-half prefix sums, see ``_search_iq1m``.

Weights: ``imatrix_j * sqrt(sigma2 + x_j**2)``, sigma2 = 2*sum(x**2)/256 over the super-block; IQ1_S
requires an importance matrix, IQ1_M without one uses ``x_j**2``.

Where ggml's quantizer aborts or reads past its input (no grid point with a finite weighted error, a NaN
block scale), quantlab raises :class:`quantlab.errors.QuantizationError`.

All arithmetic is float32 in the order of ``quantize_row_iq1_s_impl`` / ``quantize_row_iq1_m_impl``
(ggml-quants.c, llama.cpp 0c1e57098); sums run left to right. Vectorized over blocks.
"""

from __future__ import annotations

import numpy as np

from ..errors import ImatrixRequired
from . import _numerics as nm
from ._iqgrid import group_codes, lattice, nearest_of, raise_search_failure
from ._numerics import nearest_int
from .registry import register

F32 = np.float32
FLT_MAX = np.finfo(np.float32).max
DELTA = F32(0.125)
X_P = np.array([-1 + 0.125, 0.125, 1 + 0.125], dtype=np.float32)  # levels with delta +0.125
X_M = np.array([-1 - 0.125, -0.125, 1 - 0.125], dtype=np.float32)  # levels with delta -0.125

__all__ = [f"{op}_{k}" for k in ("iq1_s", "iq1_m") for op in ("quantize", "dequantize", "inspect")]


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------


def _prefix(a: np.ndarray) -> np.ndarray:
    """(B, n) -> (B, n+1) running float32 sums [0, a0, a0+a1, ...], left to right."""
    z = np.zeros((a.shape[0], 1), dtype=np.float32)
    return np.add.accumulate(np.concatenate([z, a.astype(np.float32)], axis=1), axis=1, dtype=np.float32)


def _weights(xb, imatrix, sigma2, nrows):
    """Per-weight importance: imatrix_j*sqrt(sigma2 + x_j**2), or x_j**2 without an imatrix."""
    with np.errstate(over="ignore", invalid="ignore"):
        if imatrix is None:
            return (xb * xb).astype(np.float32)
        qw = np.tile(np.asarray(imatrix, np.float32).reshape(-1, xb.shape[1]), (nrows, 1))
        return (qw * np.sqrt(sigma2[:, None] + xb * xb)).astype(np.float32)


def _blocks_and_weights(x, imatrix, bs):
    """Super-blocks (S, 256), blocks (B, bs), their weights (sigma2 = 2*mean(x**2) over the super-block)
    and max |x| per block."""
    xs = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, 256)
    xb = xs.reshape(-1, bs)
    with np.errstate(over="ignore", invalid="ignore"):
        sigma2 = np.repeat((F32(2) * nm.csum(xs * xs)) / F32(256), 256 // bs).astype(np.float32)
    w = _weights(xb, imatrix, sigma2, x.shape[0])
    return xs, xb, w, np.abs(xb).max(axis=1)


def _split_levels(order, i1, i2, scale, live):
    """Levels of a block from the split search: in sorted order, 0 below i1, 1 below i2, else 2; where
    the fitted scale is negative the levels are mirrored (2 - l) and the scale made positive.
    Returns (L (B, n) int8, scale, flipped (B,))."""
    rank = _ranks(order)
    L = np.where(rank < i1[:, None], 0, np.where(rank < i2[:, None], 1, 2)).astype(np.int8)
    flip = live & (scale < 0)
    L = np.where(flip[:, None], 2 - L, L).astype(np.int8)
    return L, np.where(flip, -scale, scale).astype(np.float32), flip


def _check_fit(name, bs, failed, scale, live, n_per_row, x_rows) -> None:
    """Refuse, as ggml aborts, the first live block whose grid search found nothing finite or whose refitted
    scale is NaN."""
    if (failed & live).any():
        _raise(
            name, bs, "no grid point has a finite weighted error", np.flatnonzero(failed & live)[0], n_per_row, x_rows
        )
    bad = live & ~(scale >= 0)
    if bad.any():
        _raise(name, bs, "the fitted block scale is NaN", np.flatnonzero(bad)[0], n_per_row, x_rows)


def _raise(name, bs, what, b, n_per_row, x_rows):
    raise_search_failure(name, bs, what, b, n_per_row, x_rows, ggml="aborts the process (or reads past its input) here")


def _snap(lat, u, xv, w, scale, xx, gstart, xflat):
    """``iq1_find_best_neighbour2`` for G off-grid groups: the neighbour of u minimising
    sum_i w_i*(scale*xx[level_i] - x_i)**2 (first one on ties, only errors below FLT_MAX count).
    u (G,), xv/w (G, 8), scale (G,), xx (G, 3) the group's level set.

    When no neighbour qualifies ggml scans all 2048 points -- with a slip: it compares every coordinate
    of point i with x[i] (the i-th value after the group's start in the input buffer, not x_j). That scan
    is reproduced from ``xflat`` (the whole input, flattened; ``gstart`` = the group's offset in it); it
    is an error when it would read past the end. Returns (grid index (G,), ok (G,))."""
    cand = lat.neighbour_table()[u].astype(np.int32)
    lv = lat.levels[np.where(cand >= 0, cand, 0)].astype(np.intp)  # (G, M, 8)
    q = xx[np.arange(xx.shape[0])[:, None, None], lv]  # (G, M, 8) levels
    gi, ok = nearest_of(cand, q, xv, w, scale)
    for g in np.flatnonzero(~ok):  # the full-grid fallback (rare)
        n = lat.size
        if gstart[g] + n > xflat.size:
            continue  # ggml would read past its input: error
        xi = xflat[gstart[g] : gstart[g] + n]  # x[i] for grid point i (sic)
        qa = xx[g][lat.levels.astype(np.intp)]  # (2048, 8)
        dd = np.zeros(n, dtype=np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            for jj in range(8):
                diff = scale[g] * qa[:, jj] - xi
                dd = dd + (w[g, jj] * diff) * diff
        dd = np.where(dd < FLT_MAX, dd, F32(np.inf))
        k = int(np.argmin(dd))
        if dd[k] < np.inf:
            gi[g], ok[g] = k, True
    return gi, ok


def _ranks(order: np.ndarray) -> np.ndarray:
    """Inverse permutation: rank[b, order[b, j]] = j."""
    r = np.empty_like(order)
    np.put_along_axis(r, order, np.arange(order.shape[1])[None, :].repeat(order.shape[0], 0), axis=1)
    return r


def _grid_and_refit(lat, L, xb, w, scale, xx_g, live, x, bs):
    """Snap every group of the live blocks to the grid (neighbour search where needed) and refit the
    scale of blocks that had an off-grid group. xx_g (B, G, 3) is the level set of each group.
    Returns (grid index (B, G), scale (B,), failed (B,))."""
    B = L.shape[0]
    G = bs // 8
    u = group_codes(lat, L)
    gidx = lat.kmap[u].astype(np.int32)
    off = (gidx < 0) & live[:, None]
    failed = np.zeros(B, dtype=bool)
    if off.any():
        b, k = np.nonzero(off)
        cols = 8 * k[:, None] + np.arange(8)
        gstart = b * bs + 8 * k
        gi, ok = _snap(
            lat, u[b, k], xb[b[:, None], cols], w[b[:, None], cols], scale[b], xx_g[b, k], gstart, x.reshape(-1)
        )
        gidx[b, k] = np.where(ok, gi, 0)
        failed[b[~ok]] = True
        refit = off.any(axis=1)
        lv = lat.levels[np.where(gidx >= 0, gidx, 0)].astype(np.intp)  # (B, G, 8)
        q = xx_g[np.arange(B)[:, None, None], np.arange(G)[None, :, None], lv].reshape(B, bs)
        with np.errstate(over="ignore", invalid="ignore"):
            sumqx = nm.csum((w * q) * xb)
            sumq2 = nm.csum((w * q) * q)
            take = refit & (sumqx > 0) & (sumq2 > 0)
            scale = np.where(take, sumqx / sumq2, scale).astype(np.float32)
    return np.where(live[:, None], gidx, 0), scale, failed


# ----------------------------------------------------------------------------------------------------
# IQ1_S
# ----------------------------------------------------------------------------------------------------


def _search_iq1s(xs_sorted_S, W):
    """The exhaustive split search of IQ1_S over all blocks: S, W (B, 33) prefix sums of w*x and w in
    sorted order. Returns (scale, i1, i2, shift) per block (i1 = -1: nothing accepted)."""
    B = W.shape[0]
    n = W.shape[1] - 1
    S = xs_sorted_S
    best = np.full(B, -FLT_MAX, dtype=np.float32)
    scale = np.zeros(B, dtype=np.float32)
    bi1 = np.full(B, -1)
    bi2 = np.full(B, -1)
    bsh = np.zeros(B, dtype=np.int32)
    with np.errstate(over="ignore", invalid="ignore"):
        for i1 in range(n + 1):
            a, wa = S[:, i1] - S[:, 0], W[:, i1] - W[:, 0]
            for i2 in range(i1, n + 1):
                b, wb = S[:, i2] - S[:, i1], W[:, i2] - W[:, i1]
                c, wc = S[:, n] - S[:, i2], W[:, n] - W[:, i2]
                for v, sh in ((X_P, 1), (X_M, -1)):
                    sumqx = (a * v[0] + b * v[1]) + c * v[2]
                    sumq2 = ((wa * v[0]) * v[0] + (wb * v[1]) * v[1]) + (wc * v[2]) * v[2]
                    acc = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
                    if acc.any():
                        scale = np.where(acc, sumqx / sumq2, scale).astype(np.float32)
                        best = np.where(acc, scale * sumqx, best).astype(np.float32)
                        bi1 = np.where(acc, i1, bi1)
                        bi2 = np.where(acc, i2, bi2)
                        bsh = np.where(acc, sh, bsh)
    return scale, bi1, bi2, bsh


def quantize_iq1_s(x, imatrix=None):
    """IQ1_S: 256 weights in 50 bytes (1.56 bits per weight), 8 blocks of 32, 4 groups of 8 each::

        byte 0 1    2 .. 33                       34 .. 49
            [d fp16][ qs[32]: low 8 bits of the ][ qh[8] as uint16, one per block of 32 ]
                      11-bit grid index of        bits 3g..3g+2: index bits 8-10 of group g
                      group g = 4b + k            bits 12-14: block scale s, bit 15: delta sign

        y = d * (2s + 1) * (grid[idx][j] + delta),   grid values in {-1, 0, +1},
        delta = -0.125 if bit 15 else +0.125

    Requires an importance matrix. Stored d = fp16(1.125 * max_scale/15); s from the unfudged d.
    """
    if imatrix is None:
        raise ImatrixRequired("IQ1_S cannot be quantized without an importance matrix")
    lat = lattice("iq1s")
    bs, nb = 32, 8
    nrows, n = x.shape
    xs, xb, w, mx = _blocks_and_weights(x, imatrix, bs)
    S_ = xs.shape[0]
    live = ~(mx < F32(1e-12))

    # sort each block ascending (stable, like glibc's merge sort), prefix sums in that order
    order = np.argsort(xb, axis=1, kind="stable")
    with np.errstate(over="ignore", invalid="ignore"):
        Sx = _prefix(np.take_along_axis(w * xb, order, axis=1))
        Sw = _prefix(np.take_along_axis(w, order, axis=1))
    scale, i1, i2, shift = _search_iq1s(Sx, Sw)
    live &= i1 >= 0
    L, scale, flip = _split_levels(order, i1, i2, scale, live)  # a negative scale mirrors the delta too
    shift = np.where(flip, -shift, shift)
    xx = np.where((shift == 1)[:, None], X_P, X_M).astype(np.float32)
    xx_g = np.repeat(xx[:, None, :], 4, axis=1)
    gidx, scale, failed = _grid_and_refit(lat, L, xb, w, scale, xx_g, live, x, bs)
    _check_fit("IQ1_S", bs, failed, scale, live, n, x)
    scale = np.where(live, scale, F32(0)).astype(np.float32)
    shift = np.where(live, shift, 1)

    qs = (gidx & 255).astype(np.uint8).reshape(S_, 32)
    qh = ((gidx >> 8) << (3 * np.arange(4))).sum(axis=1).astype(np.uint16).reshape(S_, 8)
    sc = scale.reshape(S_, nb)
    max_scale = sc.max(axis=1)
    zero = ~(max_scale != 0)
    with np.errstate(all="ignore"):
        d = (max_scale / F32(15)).astype(np.float32)
        dh = np.where(zero, F32(0), (d * F32(1.125)).astype(np.float32))
        idd = (F32(1) / d).astype(np.float32)
        s = np.clip(nearest_int(F32(0.5) * (idd[:, None] * sc - F32(1))), 0, 7)
        d16 = nm.f16(dh).view(np.uint8).reshape(-1, 2)
    s = s | np.where(shift.reshape(S_, nb) == -1, 8, 0)
    qh = np.where(zero[:, None], qh, qh | (s << 12).astype(np.uint16)).astype("<u2")
    return np.concatenate([d16, qs, qh.view(np.uint8).reshape(S_, 16)], axis=1).reshape(nrows, -1)


def _iq1_s_fields(b):
    d = nm.from_f16_bits(b[:, 0:2].copy().view(np.uint16)[:, 0])
    qs = b[:, 2:34].astype(np.int32).reshape(-1, 8, 4)
    qh = b[:, 34:50].copy().view("<u2").astype(np.int32)  # (S, 8)
    gidx = qs | (((qh[:, :, None] >> (3 * np.arange(4))) & 7) << 8)
    s = (qh >> 12) & 7
    neg = (qh & 0x8000) != 0
    return d, s, gidx, neg


def dequantize_iq1_s(q, n_per_row):
    b = np.ascontiguousarray(q).reshape(-1, 50)
    d, s, gidx, neg = _iq1_s_fields(b)
    with np.errstate(invalid="ignore", over="ignore"):
        dl = (d[:, None] * (2 * s + 1).astype(np.float32)).astype(np.float32)  # (S, 8)
        delta = np.where(neg, -DELTA, DELTA).astype(np.float32)
        g = lattice("iq1s").values[gidx].reshape(-1, 8, 32)
        y = dl[:, :, None] * (g + delta[:, :, None])
    return y.astype(np.float32).reshape(q.shape[0], n_per_row)


def inspect_iq1_s(block):
    b = np.asarray(block, dtype=np.uint8).reshape(1, 50)
    d, s, gidx, neg = _iq1_s_fields(b)
    d = F32(d[0])
    with np.errstate(invalid="ignore", over="ignore"):
        dl = (d * (2 * s[0] + 1).astype(np.float32)).astype(np.float32)
    return {
        "d_bits": int(b[0, 0]) | int(b[0, 1]) << 8,
        "d": d,
        "scales": s[0].astype(np.int32),  # 3-bit block scales as stored
        "block_scales": dl,  # as applied: d * (2s + 1)
        "deltas": np.where(neg[0], -DELTA, DELTA).astype(np.float32),  # per block of 32
        "grid_indices": gidx[0].astype(np.int32),  # (8 blocks, 4 groups), 11 bits
        "grid_values": lattice("iq1s").values[gidx[0]].astype(np.int32),  # (8, 4, 8) in {-1,0,1}
        "formula": "x = d * (2s + 1) * (grid[index][i] + delta)",
    }


# ----------------------------------------------------------------------------------------------------
# IQ1_M
# ----------------------------------------------------------------------------------------------------

_MASKS = np.array([0x00, 0x80, 0x08, 0x88], dtype=np.int32)  # delta bits of the 4 set combinations


def _search_iq1m(order, wx, w):
    """IQ1_M's split search with per-half prefix sums (llama.cpp 0c1e57098).

    Sorted order; px[h][k] / pw[h][k] = sums of w*x / w over the first k sorted values that belong to half
    h (original position < 8 or >= 8). Because v0 - v1 = v1 - v2 = -1 for both level sets, a split's sums
    for half h are ``T_h*v2 - (px[h][i1] + px[h][i2])`` and ``(U_h*v2*v2 + pw[h][i1]*(v0^2 - v1^2))
    + pw[h][i2]*(v1^2 - v2^2)``; the four combinations k = (group 0 set, group 1 set) = (p,p), (p,m),
    (m,p), (m,m) add the two halves. Returns (scale, i1, i2, k) per block (i1 = -1: nothing accepted)."""
    B, n = w.shape
    half = np.take_along_axis(np.broadcast_to(np.arange(n) >= n // 2, (B, n)), order, axis=1)
    wx_s = np.take_along_axis(wx, order, axis=1)
    w_s = np.take_along_axis(w, order, axis=1)
    with np.errstate(over="ignore", invalid="ignore"):
        px = [_prefix(np.where(half == h, wx_s, F32(0))) for h in (0, 1)]
        pw = [_prefix(np.where(half == h, w_s, F32(0))) for h in (0, 1)]
    txs = [px[h][:, n] for h in (0, 1)]
    tws = [pw[h][:, n] for h in (0, 1)]
    p2, m2 = X_P[2], X_M[2]
    cp1 = X_P[0] * X_P[0] - X_P[1] * X_P[1]
    cp2 = X_P[1] * X_P[1] - X_P[2] * X_P[2]
    cm1 = X_M[0] * X_M[0] - X_M[1] * X_M[1]
    cm2 = X_M[1] * X_M[1] - X_M[2] * X_M[2]
    best = np.full(B, -FLT_MAX, dtype=np.float32)
    scale = np.zeros(B, dtype=np.float32)
    bi1 = np.full(B, -1)
    bi2 = np.full(B, -1)
    bk = np.full(B, -1)
    with np.errstate(over="ignore", invalid="ignore"):
        for i1 in range(n + 1):
            for i2 in range(i1, n + 1):
                qxp, qxm, q2p, q2m = [], [], [], []
                for h in (0, 1):
                    sx = px[h][:, i1] + px[h][:, i2]
                    qxp.append(txs[h] * p2 - sx)
                    qxm.append(txs[h] * m2 - sx)
                    q2p.append(((tws[h] * p2) * p2 + pw[h][:, i1] * cp1) + pw[h][:, i2] * cp2)
                    q2m.append(((tws[h] * m2) * m2 + pw[h][:, i1] * cm1) + pw[h][:, i2] * cm2)
                sumqx = (qxp[0] + qxp[1], qxp[0] + qxm[1], qxm[0] + qxp[1], qxm[0] + qxm[1])
                sumq2 = (q2p[0] + q2p[1], q2p[0] + q2m[1], q2m[0] + q2p[1], q2m[0] + q2m[1])
                for k in range(4):
                    acc = (sumq2[k] > 0) & (sumqx[k] * sumqx[k] > best * sumq2[k])
                    if acc.any():
                        scale = np.where(acc, sumqx[k] / sumq2[k], scale).astype(np.float32)
                        best = np.where(acc, scale * sumqx[k], best).astype(np.float32)
                        bi1 = np.where(acc, i1, bi1)
                        bi2 = np.where(acc, i2, bi2)
                        bk = np.where(acc, k, bk)
    return scale, bi1, bi2, bk


def _sets_of(k):
    """(B,) combination k -> (B, 2, 3) level sets of the two groups."""
    g0 = np.where((k < 2)[:, None], X_P, X_M)
    g1 = np.where((k % 2 == 0)[:, None], X_P, X_M)
    return np.stack([g0, g1], axis=1).astype(np.float32)


def quantize_iq1_m(x, imatrix=None):
    """IQ1_M: 256 weights in 56 bytes (1.75 bits per weight), 16 blocks of 16, 2 groups of 8 each::

        byte 0 .. 31                 32 .. 47                      48 .. 55
            [ qs[32]: low 8 bits  ][ qh[16], one per block of 16 ][ scales: 4 x uint16 w0..w3 ]
              of the 11-bit index    low nibble: group 0 (bits 0-2   w_k bits 3i..3i+2: 3-bit scale of
              of group g             = index bits 8-10, bit 3 =      block 4k+i; top nibbles of w0..w3
                                     delta sign), high nibble: g. 1  = the 4 nibbles of the fp16 d

        y = d * (2s + 1) * (grid[idx][j] + delta),  delta = -0.125 if the group's delta bit else +0.125

    The super-block scale d is refitted after the block scales are fixed (least squares over all 256
    weights) and stored as fp16(1.1125*d). Without an importance matrix the weights are x**2.
    """
    lat = lattice("iq1s")
    bs, nb = 16, 16
    nrows, n = x.shape
    xs, xb, w, mx = _blocks_and_weights(x, imatrix, bs)
    S_, B = xs.shape[0], xb.shape[0]
    with np.errstate(over="ignore", invalid="ignore"):
        wx = (w * xb).astype(np.float32)
    live = ~(mx < F32(1e-7))

    order = np.argsort(xb, axis=1, kind="stable")
    scale, i1, i2, k = _search_iq1m(order, wx, w)
    live &= i1 >= 0
    L, scale, flip = _split_levels(order, i1, i2, scale, live)
    k = np.where(flip, 3 - k, k)
    xx_g = _sets_of(np.where(live, k, 0))
    gidx, scale, failed = _grid_and_refit(lat, L, xb, w, scale, xx_g, live, x, bs)
    _check_fit("IQ1_M", bs, failed, scale, live, n, x)
    scale = np.where(live, scale, F32(0)).astype(np.float32)
    k = np.where(live, k, 0)

    qs = (gidx & 255).astype(np.uint8).reshape(S_, 32)
    qh = ((gidx[:, 0] >> 8) | ((gidx[:, 1] >> 8) << 4)).reshape(S_, nb)
    sc = scale.reshape(S_, nb)
    max_scale = sc.max(axis=1)
    zero = ~(max_scale != 0)
    with np.errstate(all="ignore"):
        d = (max_scale / F32(15)).astype(np.float32)
        idd = (F32(1) / d).astype(np.float32)
        l = np.clip(nearest_int(F32(0.5) * (idd[:, None] * sc - F32(1))), 0, 7)  # (S, 16)
        # refit d over the whole super-block: q = level * (2l + 1), sums left to right
        lv = lat.levels[gidx].astype(np.intp)  # (B, 2, 8)
        q = xx_g[np.arange(B)[:, None, None], np.arange(2)[None, :, None], lv].reshape(S_, nb, bs)
        q = (q * (2 * l + 1).astype(np.float32)[:, :, None]).reshape(S_, 256)
        wq = (w.reshape(S_, 256) * q).astype(np.float32)
        sumqx = nm.csum(wq * xs)
        sumq2 = nm.csum(wq * q)
        d = np.where(sumq2 > 0, sumqx / sumq2, d).astype(np.float32)
        dbits = nm.f16_bits((d * F32(1.1125)).astype(np.float32)).astype(np.int32)
    w16 = (l.reshape(S_, 4, 4) << (3 * np.arange(4))).sum(axis=2)  # (S, 4)
    w16 = w16 | (((dbits[:, None] >> (4 * np.arange(4))) & 15) << 12)
    w16 = np.where(zero[:, None], 0, w16).astype("<u2")
    qh = np.where(zero[:, None], qh, qh | _MASKS[k.reshape(S_, nb)]).astype(np.uint8)
    return np.concatenate([qs, qh, w16.view(np.uint8).reshape(S_, 8)], axis=1).reshape(nrows, -1)


def _iq1_m_fields(b):
    qs = b[:, 0:32].astype(np.int32).reshape(-1, 16, 2)
    qh = b[:, 32:48].astype(np.int32)
    w = b[:, 48:56].copy().view("<u2").astype(np.int32)  # (S, 4)
    dbits = (w[:, 0] >> 12) | ((w[:, 1] >> 8) & 0xF0) | ((w[:, 2] >> 4) & 0xF00) | (w[:, 3] & 0xF000)
    d = nm.from_f16_bits(dbits.astype(np.uint16))
    s = ((w[:, :, None] >> (3 * np.arange(4))) & 7).reshape(-1, 16)
    nib = np.stack([qh & 15, qh >> 4], axis=2)  # (S, 16, 2)
    gidx = qs | ((nib & 7) << 8)
    neg = (nib & 8) != 0
    return d, dbits, s, gidx, neg


def dequantize_iq1_m(q, n_per_row):
    b = np.ascontiguousarray(q).reshape(-1, 56)
    d, _, s, gidx, neg = _iq1_m_fields(b)
    with np.errstate(invalid="ignore", over="ignore"):
        dl = (d[:, None] * (2 * s + 1).astype(np.float32)).astype(np.float32)  # (S, 16)
        delta = np.where(neg, -DELTA, DELTA).astype(np.float32)  # (S, 16, 2)
        g = lattice("iq1s").values[gidx]  # (S, 16, 2, 8)
        y = dl[:, :, None, None] * (g + delta[..., None])
    return y.astype(np.float32).reshape(q.shape[0], n_per_row)


def inspect_iq1_m(block):
    b = np.asarray(block, dtype=np.uint8).reshape(1, 56)
    d, dbits, s, gidx, neg = _iq1_m_fields(b)
    d = F32(d[0])
    with np.errstate(invalid="ignore", over="ignore"):
        dl = (d * (2 * s[0] + 1).astype(np.float32)).astype(np.float32)
    return {
        "d_bits": int(dbits[0]),
        "d": d,
        "scales": s[0].astype(np.int32),  # 3-bit scales of the 16 blocks
        "block_scales": dl,  # as applied: d * (2s + 1)
        "deltas": np.where(neg[0], -DELTA, DELTA).astype(np.float32),  # (16 blocks, 2 groups)
        "grid_indices": gidx[0].astype(np.int32),  # (16, 2), 11 bits
        "grid_values": lattice("iq1s").values[gidx[0]].astype(np.int32),  # (16, 2, 8)
        "formula": "x = d * (2s + 1) * (grid[index][i] + delta)",
    }


# The implementations this module defines (quantlab.formats.registry.register; a format missing here
# fails tests/test_registry.py).
register("reference", "IQ1_S", quantize=quantize_iq1_s, dequantize=dequantize_iq1_s, inspect=inspect_iq1_s)
register("reference", "IQ1_M", quantize=quantize_iq1_m, dequantize=dequantize_iq1_m, inspect=inspect_iq1_m)
