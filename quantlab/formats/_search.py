"""The scale searches of ggml's k-quants (spec section 3), in numpy, vectorized over blocks.

A quantizer has to pick, for every small group of weights, a scale (and sometimes an offset) plus one
integer code per weight. ggml does not simply take ``max/nmax``: it tries a handful of candidate scales
and keeps the one with the smallest weighted error. These helpers are those searches. They are shared
by the K-quants (Q2_K..Q6_K) and by the imatrix paths of the legacy formats (Q4_0, Q5_0, Q4_1, Q5_1).

Every function works on MANY groups at once: ``x`` has shape ``(nblocks, n)``, one group per row, and
everything per group (scale, min, codes) comes back with a leading ``nblocks`` axis. Internally the
loops run over the ``n`` positions of a group *in order* (vectorized across groups), because ggml
accumulates its float32 sums sequentially and a different summation order changes the last bit.

Signatures (x: float32 (nblocks, n); weights w / qw: float32 broadcastable to x, or None)::

    make_qx_quants(x, nmax, rmse_type=1, qw=None)           -> (scale[nb], L[nb, n] uint8)
        symmetric, signed codes: value ~ scale * (L - nmax), L in [0, 2*nmax-1]; scale may be < 0.
    make_q3_quants(x, nmax, do_rmse=True)                   -> (scale[nb], L[nb, n] uint8)
        symmetric with coordinate descent (Q3_K without imatrix); value ~ scale * (L - nmax).
    make_qkx2_quants(x, w, nmax, rmin, rdelta, nstep, use_mad) -> (scale[nb], the_min[nb], L uint8)
    make_qkx3_quants(x, w, nmax, rmin, rdelta, nstep, use_mad) -> (scale[nb], the_min[nb], L uint8)
        asymmetric: value ~ scale * L - the_min, L in [0, nmax], the_min >= 0. qkx3 accepts w=None
        (then w = x*x); qkx2 needs weights.
    make_qp_quants(x, nmax, qw)                             -> (scale[nb], L[nb, n] uint8)
        for non-negative inputs (the sub-block scales and mins of a super-block): value ~ scale * L.

A group whose values are all (nearly) zero gets scale 0 and codes 0 -- exactly like ggml, which does
*not* put such groups at the "zero code" (nmax): the bytes must match.

``nearest_int`` reproduces ggml's rounding trick bit for bit (round half to even for ordinary values;
for NaN, infinities and |v| > 4194303 it returns the same wrapped garbage as the C code, which matters
for extreme inputs because the result is clamped afterwards).
"""

from __future__ import annotations

import numpy as np

from ._numerics import nearest_int

F32 = np.float32
GROUP_MAX_EPS = F32(1e-15)

__all__ = [
    "make_qx_quants",
    "make_q3_quants",
    "make_qkx2_quants",
    "make_qkx3_quants",
    "make_qp_quants",
    "running_max",
    "signed_absmax",
]


def _f(v) -> np.ndarray:
    return np.asarray(v, dtype=np.float32)


def running_max(v: np.ndarray, start=0.0) -> np.ndarray:
    """C's ``m = start; for each v: if (v > m) m = v;`` along the last axis (NaNs are never taken)."""
    m = np.full(v.shape[:-1], start, dtype=np.float32)
    for i in range(v.shape[-1]):
        m = np.where(v[..., i] > m, v[..., i], m)
    return m


def signed_absmax(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """C's ``amax = 0; max = 0; for each v: if (|v| > amax) { amax = |v|; max = v; }``.
    Returns (max with its sign, amax): the first element of largest magnitude wins ties."""
    amax = np.zeros(v.shape[:-1], dtype=np.float32)
    mx = np.zeros(v.shape[:-1], dtype=np.float32)
    for i in range(v.shape[-1]):
        a = np.abs(v[..., i])
        take = a > amax
        amax = np.where(take, a, amax)
        mx = np.where(take, v[..., i], mx)
    return mx, amax


def _weights(x, w, rmse_type):
    if w is not None:
        return np.broadcast_to(_f(w), x.shape)
    if rmse_type == 1:
        return x * x
    if rmse_type == 2:
        return np.ones_like(x)
    if rmse_type == 3:
        return np.abs(x)
    return np.sqrt(np.abs(x))


def _sym_sums(x, w, l):
    """sumlx = sum (w*x)*l and suml2 = sum (w*l)*l, sequential over the group (C loop order)."""
    sumlx = np.zeros(x.shape[0], np.float32)
    suml2 = np.zeros(x.shape[0], np.float32)
    for i in range(x.shape[1]):
        li = l[:, i].astype(np.float32)
        sumlx = sumlx + (w[:, i] * x[:, i]) * li
        suml2 = suml2 + (w[:, i] * li) * li
    return sumlx, suml2


def make_qx_quants(x, nmax, rmse_type=1, qw=None):
    """Symmetric signed codes (spec 3.1). Used with rmse_type=1: Q6_K, Q3_K imatrix, Q4_0/Q5_0 imatrix.

    The extreme element (largest |x|, with its sign) is mapped to -nmax; then 18 slightly different
    scales ``-(nmax + 0.1*is)/max`` (is = -9..9) are tried and the one maximising
    ``sumlx**2/suml2`` (= minimising the weighted squared error with the optimal scale) is kept.
    Weights: qw if given, else x*x (rmse_type 1), 1 (2), |x| (3), sqrt|x| (4).
    Returns (scale, L) with value ~ scale * (L - nmax).
    """
    x = _f(x)
    _nb, _n = x.shape
    nmax_f = F32(nmax)
    with np.errstate(all="ignore"):
        mx, amax = signed_absmax(x)
        zero = amax < GROUP_MAX_EPS
        iscale = F32(-nmax) / mx
        if rmse_type == 0:
            l = np.clip(nearest_int(iscale[:, None] * x), -nmax, nmax - 1)
            L = np.where(zero[:, None], 0, l + nmax).astype(np.uint8)
            return np.where(zero, F32(0), F32(1) / iscale).astype(np.float32), L
        early = rmse_type < 0
        w = _weights(x, qw, abs(rmse_type))

        l = np.clip(nearest_int(iscale[:, None] * x), -nmax, nmax - 1)
        L = (l + nmax).astype(np.int32)
        sumlx, suml2 = _sym_sums(x, w, l)
        scale = np.where(suml2 != 0, sumlx / suml2, F32(0)).astype(np.float32)  # C: suml2 ? .. : 0
        if early:
            out = np.where(suml2 > 0, F32(0.5) * (scale + F32(1) / iscale), F32(1) / iscale)
            return np.where(zero, F32(0), out).astype(np.float32), np.where(zero[:, None], 0, L).astype(np.uint8)
        best = scale * sumlx
        for is_ in range(-9, 10):
            if is_ == 0:
                continue
            isc = -(nmax_f + F32(0.1) * F32(is_)) / mx
            l = np.clip(nearest_int(isc[:, None] * x), -nmax, nmax - 1)
            sumlx, suml2 = _sym_sums(x, w, l)
            take = (suml2 > 0) & (sumlx * sumlx > best * suml2)
            L = np.where(take[:, None], l + nmax, L)
            scale = np.where(take, sumlx / suml2, scale).astype(np.float32)
            best = np.where(take, scale * sumlx, best).astype(np.float32)
    L = np.where(zero[:, None], 0, L).astype(np.uint8)
    return np.where(zero, F32(0), scale).astype(np.float32), L


def make_q3_quants(x, nmax, do_rmse=True):
    """Symmetric codes refined by coordinate descent (spec 3.2; Q3_K without imatrix, weights x*x).

    Start from the "extreme element -> -nmax" codes; then, up to 5 passes, move each code in turn to
    the value that is optimal for the others' current least-squares scale, keeping the move only if it
    improves ``sumlx**2/suml2``. Returns (scale, L), value ~ scale * (L - nmax) (L = 0 for a zero group).
    """
    x = _f(x)
    nb, n = x.shape
    with np.errstate(all="ignore"):
        mx, amax = signed_absmax(x)
        zero = amax < GROUP_MAX_EPS
        iscale = F32(-nmax) / mx
        l = np.clip(nearest_int(iscale[:, None] * x), -nmax, nmax - 1).astype(np.int32)
        if not do_rmse:
            L = np.where(zero[:, None], 0, l + nmax).astype(np.uint8)
            return np.where(zero, F32(0), F32(1) / iscale).astype(np.float32), L
        w = x * x
        sumlx, suml2 = _sym_sums(x, w, l)
        for _ in range(5):
            changed = np.zeros(nb, dtype=bool)
            for i in range(n):
                wx = w[:, i] * x[:, i]
                li = l[:, i].astype(np.float32)
                slx = sumlx - wx * li
                sl2 = suml2 - (w[:, i] * li) * li
                new_l = np.clip(nearest_int((x[:, i] * sl2) / slx), -nmax, nmax - 1)
                nl = new_l.astype(np.float32)
                slx2 = slx + wx * nl
                sl22 = sl2 + (w[:, i] * nl) * nl
                take = (slx > 0) & (new_l != l[:, i]) & (sl22 > 0) & ((slx2 * slx2) * suml2 > (sumlx * sumlx) * sl22)
                l[:, i] = np.where(take, new_l, l[:, i])
                sumlx = np.where(take, slx2, sumlx)
                suml2 = np.where(take, sl22, suml2)
                changed |= take
            # A group whose pass changed nothing would change nothing in a further pass either (same
            # state, same computation), so running the remaining passes for every group is exact.
            if not changed.any():
                break
        scale = np.where(suml2 > 0, sumlx / suml2, F32(0)).astype(np.float32)
    L = np.where(zero[:, None], 0, l + nmax).astype(np.uint8)
    return np.where(zero, F32(0), scale).astype(np.float32), L


def _qkx(x, w, nmax, rmin, rdelta, nstep, use_mad, degenerate_le):
    x = _f(x)
    nb, n = x.shape
    nmax_f = F32(nmax)
    with np.errstate(all="ignore"):
        # running min/max from x[0] and sequential sums (exact C order; -0.0 vs 0.0 kept as C keeps it)
        mn = x[:, 0].copy()
        mx = x[:, 0].copy()
        sum_w = w[:, 0].copy()
        sum_x = sum_w * x[:, 0]
        for i in range(1, n):
            mn = np.where(x[:, i] < mn, x[:, i], mn)
            mx = np.where(x[:, i] > mx, x[:, i], mx)
            sum_w = sum_w + w[:, i]
            sum_x = sum_x + w[:, i] * x[:, i]
        mn = np.where(mn > 0, F32(0), mn).astype(np.float32)
        degenerate = (mx <= mn) if degenerate_le else (mx == mn)
        live = ~degenerate

        def error(scale, mn_, L):
            e = np.zeros(nb, np.float32)
            for i in range(n):
                d = (scale * L[:, i].astype(np.float32) + mn_) - x[:, i]
                d = np.abs(d) if use_mad else d * d
                e = e + w[:, i] * d
            return e

        iscale = nmax_f / (mx - mn)
        scale = F32(1) / iscale
        L = np.clip(nearest_int(iscale[:, None] * (x - mn[:, None])), 0, nmax)
        best = error(scale, mn, L)
        if nstep >= 1:
            for is_ in range(nstep + 1):
                # THE TRAP (spec 3.4): `mn` is the min of the best candidate so far, not the data
                # min. Once a candidate is accepted, its (fitted) min shifts both the range
                # (mx - mn) and the offset (x - mn) used to place the codes of the NEXT candidates.
                # Ports that keep the data min here match ggml on only ~1 block in 6.
                isc = ((F32(rmin) + F32(rdelta) * F32(is_)) + nmax_f) / (mx - mn)
                La = np.clip(nearest_int(isc[:, None] * (x - mn[:, None])), 0, nmax)
                sum_l = np.zeros(nb, np.float32)
                sum_l2 = np.zeros(nb, np.float32)
                sum_xl = np.zeros(nb, np.float32)
                for i in range(n):
                    wl = w[:, i] * La[:, i].astype(np.float32)
                    sum_l = sum_l + wl
                    sum_l2 = sum_l2 + wl * La[:, i].astype(np.float32)
                    sum_xl = sum_xl + wl * x[:, i]
                D = sum_w * sum_l2 - sum_l * sum_l
                this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
                this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
                pos = this_min > 0
                this_min = np.where(pos, F32(0), this_min).astype(np.float32)
                this_scale = np.where(pos, sum_xl / sum_l2, this_scale).astype(np.float32)
                cur = error(this_scale, this_min, La)
                take = live & (D > 0) & (cur < best)
                L = np.where(take[:, None], La, L)
                best = np.where(take, cur, best)
                scale = np.where(take, this_scale, scale).astype(np.float32)
                mn = np.where(take, this_min, mn).astype(np.float32)
        L = np.where(degenerate[:, None], 0, L).astype(np.uint8)
        scale = np.where(degenerate, F32(0), scale).astype(np.float32)
        return scale, (-mn).astype(np.float32), L


def make_qkx2_quants(x, w, nmax, rmin, rdelta, nstep, use_mad):
    """Asymmetric codes L in [0, nmax] with a fitted offset (spec 3.4; Q2_K, Q4_K, Q5_K without imatrix).

    1. Start from min(0, min x) .. max x mapped onto 0..nmax; error = sum w*|e| (use_mad) or w*e**2.
    2. For is = 0..nstep: codes from the candidate inverse scale ``(rmin + rdelta*is + nmax)/(max-min)``,
       then the weighted least-squares (scale, min) for those codes (min forced <= 0); keep the candidate
       if its error is strictly smaller. An accepted candidate's min becomes `min` for the next steps.
    Returns (scale, the_min, L): value ~ scale * L - the_min, the_min = -min >= 0.
    """
    x = _f(x)
    return _qkx(x, np.broadcast_to(_f(w), x.shape), nmax, rmin, rdelta, nstep, use_mad, False)


def make_qkx3_quants(x, w, nmax, rmin, rdelta, nstep, use_mad):
    """make_qkx2_quants as used by the imatrix paths (spec 3.5): same search; w=None means w = x*x;
    the degenerate test is ``max <= min``. Returns (scale, the_min, L)."""
    x = _f(x)
    w = x * x if w is None else np.broadcast_to(_f(w), x.shape)
    return _qkx(x, w, nmax, rmin, rdelta, nstep, use_mad, True)


def make_qp_quants(x, nmax, qw):
    """Codes L in [0, nmax] for non-negative values (spec 3.6): the super-block scale of the sub-block
    scales / mins in the imatrix paths of Q2_K, Q4_K, Q5_K. Weighted by qw (the sub-blocks' weight sums).

    Try inverse scales (nmax + 0.1*is)/max for is = -4..4, keep the best by weighted squared error,
    then refine the codes by coordinate descent (5 passes at most) and return the least-squares scale.
    ggml keeps the codes in a uint8 array: a negative code (only possible for negative inputs) wraps
    modulo 256 and the wrapped value is what the later steps see. Returns (scale, L uint8).
    """
    x = _f(x)
    nb, n = x.shape
    qw = np.broadcast_to(_f(qw), x.shape)
    nmax_f = F32(nmax)
    with np.errstate(all="ignore"):
        mx = np.zeros(nb, np.float32)
        for i in range(n):  # C: max = MAX(max, x[i]) = (max > x ? max : x)
            mx = np.where(mx > x[:, i], mx, x[:, i])
        zero = mx < GROUP_MAX_EPS
        iscale = nmax_f / mx
        L = nearest_int(iscale[:, None] * x) & 0xFF  # stored in uint8 (wraps), no clamp
        scale = F32(1) / iscale
        best = np.zeros(nb, np.float32)
        for i in range(n):
            d = x[:, i] - scale * L[:, i].astype(np.float32)
            best = best + (qw[:, i] * d) * d
        for is_ in range(-4, 5):
            if is_ == 0:
                continue
            isc = (F32(0.1) * F32(is_) + nmax_f) / mx
            sc = F32(1) / isc
            mse = np.zeros(nb, np.float32)
            for i in range(n):
                l = np.minimum(nmax, nearest_int(isc * x[:, i])).astype(np.float32)
                d = x[:, i] - sc * l
                mse = mse + (qw[:, i] * d) * d
            take = mse < best
            best = np.where(take, mse, best)
            iscale = np.where(take, isc, iscale).astype(np.float32)
        l = np.minimum(nmax, nearest_int(iscale[:, None] * x))
        L = l & 0xFF
        sumlx, suml2 = _sym_sums(x, qw, l)  # the sums use the int code, before the uint8 wrap
        for _ in range(5):
            changed = np.zeros(nb, dtype=bool)
            for i in range(n):
                w = qw[:, i]
                wx = w * x[:, i]
                li = L[:, i].astype(np.float32)
                slx = sumlx - wx * li
                sl2 = suml2 - (w * li) * li
                new_l = np.minimum(nmax, nearest_int((x[:, i] * sl2) / slx))
                nl = new_l.astype(np.float32)
                slx2 = slx + wx * nl
                sl22 = sl2 + (w * nl) * nl
                take = (slx > 0) & (sl2 > 0) & (new_l != L[:, i]) & ((slx2 * slx2) * suml2 > (sumlx * sumlx) * sl22)
                L[:, i] = np.where(take, new_l & 0xFF, L[:, i])
                sumlx = np.where(take, slx2, sumlx)
                suml2 = np.where(take, sl22, suml2)
                changed |= take
            if not changed.any():
                break
        scale = np.where(suml2 > 0, sumlx / suml2, F32(0)).astype(np.float32)
    L = np.where(zero[:, None], 0, L).astype(np.uint8)
    return np.where(zero, F32(0), scale).astype(np.float32), L
