"""The k-quant scale searches (spec section 3) as scalar numba functions, one group per call.

Same names and the same arithmetic as :mod:`quantlab.formats._search` (read that module for the
explanations); here each call handles ONE group given as 1-D float32 slices and writes its codes into a
caller-provided uint8 buffer, so kernels can loop over blocks without allocating. All are
``@njit(cache=True)`` and meant to be called from other numba code.

Signatures (x, w, qw: float32[n]; L, Laux: uint8[n] output/scratch buffers of at least n)::

    make_qx_quants(x, nmax, rmse_type, qw, L)                      -> scale      (qw may be None)
    make_q3_quants(x, nmax, do_rmse, L)                            -> scale
    make_qkx2_quants(x, w, nmax, rmin, rdelta, nstep, use_mad, L, Laux) -> (scale, the_min)
    make_qkx3_quants(x, w, nmax, rmin, rdelta, nstep, use_mad, L, Laux) -> (scale, the_min)  (w may be None)
    make_qp_quants(x, nmax, qw, L)                                 -> scale
    make_qkx_groups(x, w, ng, n, nmax, rmin, rdelta, nstep, use_mad, le, L, scales, mins, S, Laux)
        the qkx2/qkx3 search of ng groups of n at once (one super-block), one lane per group
    make_qx_groups(x, qw, has_w, ng, n, nmax, L, scales, S)
        make_qx_quants (rmse_type 1) of ng groups of n at once, the same way

Codes written to L are the offset codes of ggml: value ~ scale*(L - nmax) for qx/q3 (L = 0 for an
all-zero group), value ~ scale*L - the_min for qkx2/qkx3, value ~ scale*L for qp (uint8: wraps like C).
``nearest_int`` (:mod:`quantlab.kernels._c`) is ggml's rounding trick, bit-exact also for NaN/inf/huge
arguments.

Most of these functions are inlined into their callers in other modules; numba's on-disk cache would not
notice an edit here, which is why :mod:`quantlab._cache` names the cache after a hash of every numba
source file (an edit here starts a fresh cache).

make_qkx_groups / make_qx_groups repeat the arithmetic of _qkx_core / make_qx_quants on purpose: the
same steps with the groups as lanes (see their docstrings); the scalar functions stay the readable
reference and the fallback for degenerate groups.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._c import clampi, nearest_int

F32 = np.float32
_MAGIC = np.float32(12582912.0)
_EPS = np.float32(1e-15)
_U = np.uint64


@njit(cache=True, error_model="numpy", inline="always")
def _w_of(x, qw, rmse_type, i):
    if qw is not None:
        return qw[i]
    xi = x[i]
    if rmse_type == 1:
        return xi * xi
    if rmse_type == 2:
        return np.float32(1.0)
    if rmse_type == 3:
        return np.float32(abs(xi))
    return np.float32(np.sqrt(np.float32(abs(xi))))


@njit(cache=True, error_model="numpy", inline="always")
def _signed_absmax(x):
    """(the value of largest magnitude, with its sign; that magnitude): ggml's ``if (ax > amax)`` loop,
    the first such value wins ties."""
    mx = np.float32(0.0)
    amax = np.float32(0.0)
    for i in range(x.shape[0]):
        ax = np.float32(abs(x[i]))
        if ax > amax:
            amax = ax
            mx = x[i]
    return mx, amax


@njit(cache=True, error_model="numpy", inline="always")
def _plain_codes(x, nm, iscale, L):
    """L = nm + clamp(nearest_int(iscale * x), -nm, nm - 1): the codes of one scale, without a search."""
    for i in range(x.shape[0]):
        L[i] = np.uint8(nm + clampi(nearest_int(iscale * x[i]), -nm, nm - 1))


@njit(cache=True, error_model="numpy", inline="always")
def _weighted_code_sums(buf, off, w, x, n):
    """sum w*l, sum w*l*l, sum w*l*x over the codes l = buf[off:off+n] (float32, in element order)."""
    sl = np.float32(0.0)
    sl2 = np.float32(0.0)
    sxl = np.float32(0.0)
    for i in range(n):
        li = buf[off + i]
        wl = w[i] * li
        sl += wl
        sl2 += wl * li
        sxl += wl * x[i]
    return sl, sl2, sxl


@njit(cache=True, error_model="numpy", inline="always")
def _qx_candidate(k):
    """The k-th (0..17) value of `is` tried by make_qx_quants: -9..-1, 1..9."""
    return k - 9 if k < 9 else k - 8


@njit(cache=True, error_model="numpy", inline="always")
def _qx_accept(nm, lc, sumlx, suml2, best, scale, L):
    """ggml's acceptance test of one candidate; on success its codes (lc, signed, as floats) become L."""
    if suml2 > 0 and sumlx * sumlx > best * suml2:
        for i in range(lc.shape[0]):
            L[i] = np.uint8(np.int32(lc[i]) + nm)
        scale = np.float32(sumlx / suml2)
        best = np.float32(scale * sumlx)
    return best, scale


@njit(cache=True, error_model="numpy")
def make_qx_quants(x, nmax, rmse_type, qw, L):
    n = x.shape[0]
    mx, amax = _signed_absmax(x)
    if amax < _EPS:
        for i in range(n):
            L[i] = 0
        return np.float32(0.0)
    nm = np.int32(nmax)
    iscale = np.float32(np.float32(-nm) / mx)
    if rmse_type == 0:
        _plain_codes(x, nm, iscale, L)
        return np.float32(np.float32(1.0) / iscale)
    early = rmse_type < 0
    rt = -rmse_type if early else rmse_type
    # the weights and w*x are the same float32 products C computes inside every pass: compute once
    buf = np.empty(5 * n, np.float32)
    w = buf[0:n]
    wx = buf[n : 2 * n]
    la = buf[2 * n : 3 * n]
    lb = buf[3 * n : 4 * n]
    lc = buf[4 * n : 5 * n]
    for i in range(n):
        w[i] = _w_of(x, qw, rt, i)
        wx[i] = w[i] * x[i]
    sumlx = np.float32(0.0)
    suml2 = np.float32(0.0)
    for i in range(n):
        l = clampi(nearest_int(iscale * x[i]), -nm, nm - 1)
        L[i] = np.uint8(l + nm)
        fl = np.float32(l)
        sumlx += wx[i] * fl
        suml2 += (w[i] * fl) * fl
    scale = np.float32(sumlx / suml2) if suml2 != 0 else np.float32(0.0)
    if early:
        if suml2 > 0:
            return np.float32(np.float32(0.5) * (scale + np.float32(1.0) / iscale))
        return np.float32(np.float32(1.0) / iscale)
    best = np.float32(scale * sumlx)
    fnm = np.float32(nm)
    lo = np.float32(-nm)
    hi = np.float32(nm - 1)
    finite = True
    for i in range(n):
        finite = finite & (abs(x[i]) < np.float32(np.inf))
    # The 18 candidate scales are independent until the (ordered) acceptance test, so three are
    # evaluated together: codes first (a loop the compiler can vectorize), then the six sequential
    # float32 sums as independent chains -- same bits as ggml, more parallelism. Acceptance is then
    # applied in ggml's order.
    for k in range(0, 18, 3):
        ia = _qx_candidate(k)
        ib = _qx_candidate(k + 1)
        ic = _qx_candidate(k + 2)
        isa = np.float32(-(fnm + np.float32(0.1) * np.float32(ia)) / mx)
        isb = np.float32(-(fnm + np.float32(0.1) * np.float32(ib)) / mx)
        isc = np.float32(-(fnm + np.float32(0.1) * np.float32(ic)) / mx)
        if finite:
            # every |is*x| <= nmax + 1 here, so clamping first and rounding with the 1.5*2**23 trick
            # in float32 gives exactly clamp(nearest_int(.)) (rint is monotonic and fixes integers)
            for i in range(n):
                xi = x[i]
                la[i] = (min(max(isa * xi, lo), hi) + _MAGIC) - _MAGIC
                lb[i] = (min(max(isb * xi, lo), hi) + _MAGIC) - _MAGIC
                lc[i] = (min(max(isc * xi, lo), hi) + _MAGIC) - _MAGIC
        else:  # inf/NaN inputs (from overflowing callers): ggml's integer trick, garbage included
            for i in range(n):
                xi = x[i]
                la[i] = np.float32(clampi(nearest_int(isa * xi), -nm, nm - 1))
                lb[i] = np.float32(clampi(nearest_int(isb * xi), -nm, nm - 1))
                lc[i] = np.float32(clampi(nearest_int(isc * xi), -nm, nm - 1))
        alx = np.float32(0.0)
        al2 = np.float32(0.0)
        blx = np.float32(0.0)
        bl2 = np.float32(0.0)
        clx = np.float32(0.0)
        cl2 = np.float32(0.0)
        for i in range(n):
            wi = w[i]
            wxi = wx[i]
            alx += wxi * la[i]
            al2 += (wi * la[i]) * la[i]
            blx += wxi * lb[i]
            bl2 += (wi * lb[i]) * lb[i]
            clx += wxi * lc[i]
            cl2 += (wi * lc[i]) * lc[i]
        best, scale = _qx_accept(nm, la, alx, al2, best, scale, L)
        best, scale = _qx_accept(nm, lb, blx, bl2, best, scale, L)
        best, scale = _qx_accept(nm, lc, clx, cl2, best, scale, L)
    return scale


@njit(cache=True, error_model="numpy")
def make_q3_quants(x, nmax, do_rmse, L):
    n = x.shape[0]
    mx, amax = _signed_absmax(x)
    if amax < _EPS:
        for i in range(n):
            L[i] = 0
        return np.float32(0.0)
    nm = np.int32(nmax)
    iscale = np.float32(np.float32(-nm) / mx)
    if not do_rmse:
        _plain_codes(x, nm, iscale, L)
        return np.float32(np.float32(1.0) / iscale)
    # L holds l + nmax throughout (so a uint8 buffer works); the signed code is L[i] - nmax
    sumlx = np.float32(0.0)
    suml2 = np.float32(0.0)
    for i in range(n):
        l = clampi(nearest_int(iscale * x[i]), -nm, nm - 1)
        L[i] = np.uint8(l + nm)
        w = x[i] * x[i]
        fl = np.float32(l)
        sumlx += (w * x[i]) * fl
        suml2 += (w * fl) * fl
    for _itry in range(5):
        n_changed = 0
        for i in range(n):
            w = x[i] * x[i]
            li = np.int32(L[i]) - nm
            fli = np.float32(li)
            slx = sumlx - (w * x[i]) * fli
            if slx > 0:
                sl2 = suml2 - (w * fli) * fli
                new_l = clampi(nearest_int((x[i] * sl2) / slx), -nm, nm - 1)
                if new_l != li:
                    fn = np.float32(new_l)
                    slx += (w * x[i]) * fn
                    sl2 += (w * fn) * fn
                    if sl2 > 0 and (slx * slx) * suml2 > (sumlx * sumlx) * sl2:
                        L[i] = np.uint8(new_l + nm)
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if n_changed == 0:
            break
    return np.float32(sumlx / suml2) if suml2 > 0 else np.float32(0.0)


@njit(cache=True, error_model="numpy", inline="always")
def _codes_fast(isc, xm, n, nmax_f, cb, off):
    """cb[off+i] = clamp(nearest_int(isc*xm[i]), 0, nmax) in float32 without leaving the float domain:
    t = v + 1.5*2**23 holds rint(v) + 1.5*2**23 exactly when t lies in [2**23, 2**24), and then
    nearest_int(v) == t - 1.5*2**23. Returns False if some v was outside that range (NaN included);
    the caller then recomputes with the exact integer trick. (A loop the compiler can vectorize.)"""
    ok = True
    for i in range(n):
        t = isc * xm[i] + _MAGIC
        ok = ok & (t >= np.float32(8388608.0)) & (t < np.float32(16777216.0))
        r = t - _MAGIC
        cb[off + i] = min(max(r, np.float32(0.0)), nmax_f)
    return ok


@njit(cache=True, error_model="numpy", inline="always")
def _codes_exact(isc, xm, n, nm, cb, off):
    for i in range(n):
        cb[off + i] = np.float32(clampi(nearest_int(isc * xm[i]), 0, nm))


@njit(cache=True, error_model="numpy", inline="always")
def _codes(isc, xm, n, nmax_f, nm, cb, off):
    if not _codes_fast(isc, xm, n, nmax_f, cb, off):
        _codes_exact(isc, xm, n, nm, cb, off)


@njit(cache=True, error_model="numpy", inline="always")
def _qkx_core(x, w, nmax, rmin, rdelta, nstep, use_mad, L, Laux, le):
    n = x.shape[0]
    mn = x[0]
    mx = x[0]
    sum_w = w[0]
    sum_x = sum_w * x[0]
    for i in range(1, n):
        xi = x[i]
        if xi < mn:
            mn = xi
        if xi > mx:
            mx = xi
        wi = w[i]
        sum_w += wi
        sum_x += wi * xi
    if mn > 0:
        mn = np.float32(0.0)
    if (mx <= mn) if le else (mx == mn):
        for i in range(n):
            L[i] = 0
        return np.float32(0.0), np.float32(-mn)
    nm = np.int32(nmax)
    fnmax = np.float32(nm)
    iscale = np.float32(fnmax / (mx - mn))
    scale = np.float32(np.float32(1.0) / iscale)
    best = np.float32(0.0)
    for i in range(n):
        l = clampi(nearest_int(iscale * (x[i] - mn)), 0, nm)
        L[i] = np.uint8(l)
        diff = (scale * np.float32(l) + mn) - x[i]
        diff = np.float32(abs(diff)) if use_mad else diff * diff
        best += w[i] * diff
    if nstep < 1:
        return scale, np.float32(-mn)
    # one scratch buffer, indexed with offsets (no array views in the loop: each would cost
    # reference-count updates): xm = x - min for the current best min | e = per-element weighted
    # errors | codes of two candidates (as floats), at offsets a (being judged) and b (the next one)
    buf = np.empty(4 * n, np.float32)
    for i in range(n):
        buf[i] = x[i] - mn
    xm = buf
    E = n
    a = 2 * n
    b = 3 * n
    frmin = np.float32(rmin)
    frdelta = np.float32(rdelta)
    # Software pipelining, same bits as ggml's loop: the sums of candidate is+1 do not depend on the
    # error of candidate is unless that candidate is accepted AND changes `mn` (spec 3.4: the next
    # codes are placed relative to the best min so far). So the next candidate's sums are accumulated
    # in the same loop as this candidate's error (four independent sequential chains instead of two
    # dependent ones) and simply recomputed in the rare case where `mn` moved.
    isc = np.float32(((frmin + frdelta * np.float32(0)) + fnmax) / (mx - mn))
    _codes(isc, xm, n, fnmax, nm, buf, a)
    sum_l, sum_l2, sum_xl = _weighted_code_sums(buf, a, w, x, n)
    for is_ in range(nstep + 1):
        has_next = is_ < nstep
        if has_next:
            iscn = np.float32(((frmin + frdelta * np.float32(is_ + 1)) + fnmax) / (mx - mn))
            _codes(iscn, xm, n, fnmax, nm, buf, b)
        nl = np.float32(0.0)
        nl2 = np.float32(0.0)
        nxl = np.float32(0.0)
        D = sum_w * sum_l2 - sum_l * sum_l
        if D > 0:
            this_scale = np.float32((sum_w * sum_xl - sum_x * sum_l) / D)
            this_min = np.float32((sum_l2 * sum_x - sum_l * sum_xl) / D)
            if this_min > 0:
                this_min = np.float32(0.0)
                this_scale = np.float32(sum_xl / sum_l2)
            for i in range(n):
                diff = (this_scale * buf[a + i] + this_min) - x[i]
                diff = np.float32(abs(diff)) if use_mad else diff * diff
                buf[E + i] = w[i] * diff
            cur = np.float32(0.0)
            if has_next:
                for i in range(n):
                    cur += buf[E + i]
                    li = buf[b + i]
                    wl = w[i] * li
                    nl += wl
                    nl2 += wl * li
                    nxl += wl * x[i]
            else:
                for i in range(n):
                    cur += buf[E + i]
            if cur < best:
                for i in range(n):
                    L[i] = np.uint8(np.int32(buf[a + i]))
                best = cur
                scale = this_scale
                moved = this_min != mn
                mn = this_min  # (a zero of the other sign places every code identically)
                if moved:
                    for i in range(n):
                        buf[i] = x[i] - mn
                    if has_next:  # the speculative next candidate used the old min: redo it
                        iscn = np.float32(((frmin + frdelta * np.float32(is_ + 1)) + fnmax) / (mx - mn))
                        _codes(iscn, xm, n, fnmax, nm, buf, b)
                        nl, nl2, nxl = _weighted_code_sums(buf, b, w, x, n)
        elif has_next:
            nl, nl2, nxl = _weighted_code_sums(buf, b, w, x, n)
        a, b = b, a
        sum_l = nl
        sum_l2 = nl2
        sum_xl = nxl
    return scale, np.float32(-mn)


@njit(cache=True, error_model="numpy", inline="always")
def make_qkx2_quants(x, w, nmax, rmin, rdelta, nstep, use_mad, L, Laux):
    return _qkx_core(x, w, nmax, rmin, rdelta, nstep, use_mad, L, Laux, False)


@njit(cache=True, error_model="numpy", inline="always")
def make_qkx3_quants(x, w, nmax, rmin, rdelta, nstep, use_mad, L, Laux):
    if w is None:
        ww = x * x
        return _qkx_core(x, ww, nmax, rmin, rdelta, nstep, use_mad, L, Laux, True)
    return _qkx_core(x, w, nmax, rmin, rdelta, nstep, use_mad, L, Laux, True)


_LO23 = np.float32(8388608.0)  # 2**23
_HI24 = np.float32(16777216.0)  # 2**24


@njit(cache=True, error_model="numpy", inline="always")
def _lane_code(isc, xi, mn, nmax_f):
    """One code of _codes_fast: (clamp(rint(isc*(xi - mn)), 0, nmax) as float32, shortcut valid)."""
    t = isc * (xi - mn) + _MAGIC
    ok = (t >= _LO23) & (t < _HI24)
    return min(max(t - _MAGIC, np.float32(0.0)), nmax_f), ok


@njit(cache=True, error_model="numpy")
def _qkx_group(x, w, g, n, nmax, rmin, rdelta, nstep, use_mad, L, Laux, le):
    """The scalar search on group g of make_qkx_groups' arrays (its fallback: not inlined, rarely run)."""
    s = slice(g * n, (g + 1) * n)
    return _qkx_core(x[s], w[s], nmax, rmin, rdelta, nstep, use_mad, L[s], Laux, le)


@njit(cache=True, error_model="numpy")
def make_qkx_groups(x, w, ng, n, nmax, rmin, rdelta, nstep, use_mad, le, L, scales, mins, S, Laux):
    """make_qkx2_quants (le=False) / make_qkx3_quants (le=True, weights given) on the ``ng`` groups of
    ``n`` elements x[g*n:(g+1)*n] of one super-block at once; codes into L[g*n:(g+1)*n], results into
    scales[g], mins[g] (same bits as ng calls of the scalar search).

    Every float32 sum of the search is sequential over the elements of ONE group, so the scalar code
    is bound by the latency of those additions. Here the groups are lanes: the data is transposed
    (element-major, group-minor) and each loop over the groups applies the scalar step to all of
    them, every lane keeping its own state (min, best error, ...), so the CPU overlaps the 16
    independent chains (the compiler vectorizes some of these loops, not all: they read and write
    the same scratch array). Branches become per-lane selects. Codes use the float rounding shortcut of ``_codes_fast``; a lane where it does not apply
    (degenerate groups, where 0 * inf = NaN, and overflowing inputs) is redone by the scalar search.
    S: float32 scratch of at least (4*n + 15)*ng; Laux: uint8 scratch of n (for that fallback)."""
    G = ng
    if nstep < 1:
        for g in range(G):
            scales[g], mins[g] = _qkx_group(x, w, g, n, nmax, rmin, rdelta, nstep, use_mad, L, Laux, le)
        return
    # scratch layout (float32): xT, wT, lT (candidate codes), LT (best codes) [n*G each], then lane state
    xT = 0
    wT = n * G
    lT = 2 * n * G
    LT = 3 * n * G
    st = 4 * n * G
    MN = st
    MX = st + G
    SW = st + 2 * G
    SX = st + 3 * G
    BEST = st + 4 * G
    SC = st + 5 * G
    ISC = st + 6 * G
    SL = st + 7 * G
    SL2 = st + 8 * G
    SXL = st + 9 * G
    TS = st + 10 * G
    TM = st + 11 * G
    CUR = st + 12 * G
    OK = st + 13 * G
    ACC = st + 14 * G
    for g in range(G):
        for i in range(n):
            S[xT + i * G + g] = x[g * n + i]
            S[wT + i * G + g] = w[g * n + i]
    fnmax = np.float32(nmax)
    for g in range(G):
        x0 = S[xT + g]
        S[MN + g] = x0
        S[MX + g] = x0
        S[SW + g] = S[wT + g]
        S[SX + g] = S[wT + g] * x0
    for i in range(1, n):
        for g in range(G):
            xi = S[xT + i * G + g]
            wi = S[wT + i * G + g]
            mn = S[MN + g]
            mx = S[MX + g]
            S[MN + g] = xi if xi < mn else mn
            S[MX + g] = xi if xi > mx else mx
            S[SW + g] += wi
            S[SX + g] += wi * xi
    for g in range(G):
        mn = S[MN + g]
        mn = np.float32(0.0) if mn > 0 else mn
        S[MN + g] = mn
        iscale = np.float32(fnmax / (S[MX + g] - mn))
        S[ISC + g] = iscale
        S[SC + g] = np.float32(np.float32(1.0) / iscale)
        S[BEST + g] = np.float32(0.0)
        S[OK + g] = np.float32(1.0)
    for i in range(n):
        for g in range(G):
            xi = S[xT + i * G + g]
            mn = S[MN + g]
            l, ok = _lane_code(S[ISC + g], xi, mn, fnmax)
            S[OK + g] = S[OK + g] if ok else np.float32(0.0)
            S[LT + i * G + g] = l
            diff = (S[SC + g] * l + mn) - xi
            diff = np.float32(abs(diff)) if use_mad else diff * diff
            S[BEST + g] += S[wT + i * G + g] * diff
    frmin = np.float32(rmin)
    frdelta = np.float32(rdelta)
    for is_ in range(nstep + 1):
        fa = (frmin + frdelta * np.float32(is_)) + fnmax
        for g in range(G):
            S[ISC + g] = np.float32(fa / (S[MX + g] - S[MN + g]))
            S[SL + g] = np.float32(0.0)
            S[SL2 + g] = np.float32(0.0)
            S[SXL + g] = np.float32(0.0)
        for i in range(n):
            for g in range(G):
                xi = S[xT + i * G + g]
                l, ok = _lane_code(S[ISC + g], xi, S[MN + g], fnmax)
                S[OK + g] = S[OK + g] if ok else np.float32(0.0)
                S[lT + i * G + g] = l
                wl = S[wT + i * G + g] * l
                S[SL + g] += wl
                S[SL2 + g] += wl * l
                S[SXL + g] += wl * xi
        for g in range(G):
            sw = S[SW + g]
            sx = S[SX + g]
            sl = S[SL + g]
            sl2 = S[SL2 + g]
            sxl = S[SXL + g]
            D = sw * sl2 - sl * sl
            ts = np.float32((sw * sxl - sx * sl) / D)
            tm = np.float32((sl2 * sx - sl * sxl) / D)
            pos = tm > 0
            S[TM + g] = np.float32(0.0) if pos else tm
            S[TS + g] = np.float32(sxl / sl2) if pos else ts
            S[ACC + g] = np.float32(1.0) if D > 0 else np.float32(0.0)
            S[CUR + g] = np.float32(0.0)
        for i in range(n):
            for g in range(G):
                xi = S[xT + i * G + g]
                diff = (S[TS + g] * S[lT + i * G + g] + S[TM + g]) - xi
                diff = np.float32(abs(diff)) if use_mad else diff * diff
                S[CUR + g] += S[wT + i * G + g] * diff
        for g in range(G):
            acc = (S[ACC + g] != 0) & (S[CUR + g] < S[BEST + g])
            S[ACC + g] = np.float32(1.0) if acc else np.float32(0.0)
            S[BEST + g] = S[CUR + g] if acc else S[BEST + g]
            S[SC + g] = S[TS + g] if acc else S[SC + g]
            S[MN + g] = S[TM + g] if acc else S[MN + g]
        for i in range(n):
            for g in range(G):
                S[LT + i * G + g] = S[lT + i * G + g] if S[ACC + g] != 0 else S[LT + i * G + g]
    for g in range(G):
        # degenerate groups (then 0 * inf = NaN) and lanes where the float rounding shortcut did not
        # apply: the scalar search
        if S[OK + g] == 0:
            sc, m = _qkx_group(x, w, g, n, nmax, rmin, rdelta, nstep, use_mad, L, Laux, le)
            scales[g] = sc
            mins[g] = m
        else:
            scales[g] = S[SC + g]
            mins[g] = np.float32(-S[MN + g])
            for i in range(n):
                L[g * n + i] = np.uint8(np.int32(S[LT + i * G + g]))


@njit(cache=True, error_model="numpy")
def make_qx_groups(x, qw, has_w, ng, n, nmax, L, scales, S):
    """make_qx_quants(x_g, nmax, 1, qw_g or None, L_g) on the ``ng`` groups of ``n`` elements
    x[g*n:(g+1)*n] of one super-block at once (same bits); scales[g] gets each group's scale.

    As in :func:`make_qkx_groups` the groups are lanes: transposed data, every loop over the groups
    advances all of their sequential float32 sums by one element, so the sums of different groups
    overlap in the CPU instead of each waiting on its own previous addition. A group that is all
    (near) zero or holds a non-finite value is done by the scalar search.
    S: float32 scratch of at least (5*n + 9)*ng."""
    # unsigned offsets: numba then drops its negative-index wraparound
    G = _U(ng)
    N = _U(n)
    xT = _U(0)
    wT = N * G
    wxT = _U(2) * N * G
    lT = _U(3) * N * G
    LT = _U(4) * N * G
    st = _U(5) * N * G
    MXV = st
    AMAX = st + G
    ISC = st + _U(2) * G
    SLX = st + _U(3) * G
    SL2 = st + _U(4) * G
    SCALE = st + _U(5) * G
    BEST = st + _U(6) * G
    FIN = st + _U(7) * G
    ACC = st + _U(8) * G
    for g in range(G):
        for i in range(N):
            xi = x[g * N + i]
            wi = qw[g * N + i] if has_w else xi * xi
            S[xT + i * G + g] = xi
            S[wT + i * G + g] = wi
            S[wxT + i * G + g] = wi * xi
    for g in range(G):
        S[MXV + g] = np.float32(0.0)
        S[AMAX + g] = np.float32(0.0)
        S[FIN + g] = np.float32(1.0)
    for i in range(N):
        for g in range(G):
            xi = S[xT + i * G + g]
            ax = np.float32(abs(xi))
            gt = ax > S[AMAX + g]
            S[AMAX + g] = ax if gt else S[AMAX + g]
            S[MXV + g] = xi if gt else S[MXV + g]
            S[FIN + g] = S[FIN + g] if ax < np.float32(np.inf) else np.float32(0.0)
    nm = np.int32(nmax)
    fnm = np.float32(nm)
    lo = np.float32(-nm)
    hi = np.float32(nm - 1)
    for g in range(G):
        S[ISC + g] = np.float32(np.float32(-nm) / S[MXV + g])
        S[SLX + g] = np.float32(0.0)
        S[SL2 + g] = np.float32(0.0)
    for i in range(N):
        for g in range(G):
            l = (min(max(S[ISC + g] * S[xT + i * G + g], lo), hi) + _MAGIC) - _MAGIC
            S[LT + i * G + g] = l
            S[SLX + g] += S[wxT + i * G + g] * l
            S[SL2 + g] += (S[wT + i * G + g] * l) * l
    for g in range(G):
        slx = S[SLX + g]
        sl2 = S[SL2 + g]
        sc = np.float32(slx / sl2) if sl2 != 0 else np.float32(0.0)
        S[SCALE + g] = sc
        S[BEST + g] = np.float32(sc * slx)
    for k in range(18):
        fis = np.float32(_qx_candidate(k))
        num = -(fnm + np.float32(0.1) * fis)
        for g in range(G):
            S[ISC + g] = np.float32(num / S[MXV + g])
            S[SLX + g] = np.float32(0.0)
            S[SL2 + g] = np.float32(0.0)
        for i in range(N):
            for g in range(G):
                l = (min(max(S[ISC + g] * S[xT + i * G + g], lo), hi) + _MAGIC) - _MAGIC
                S[lT + i * G + g] = l
                S[SLX + g] += S[wxT + i * G + g] * l
                S[SL2 + g] += (S[wT + i * G + g] * l) * l
        for g in range(G):
            slx = S[SLX + g]
            sl2 = S[SL2 + g]
            acc = (sl2 > 0) & (slx * slx > S[BEST + g] * sl2)
            sc = np.float32(slx / sl2)
            S[SCALE + g] = sc if acc else S[SCALE + g]
            S[BEST + g] = np.float32(sc * slx) if acc else S[BEST + g]
            S[ACC + g] = np.float32(1.0) if acc else np.float32(0.0)
        for i in range(N):
            for g in range(G):
                S[LT + i * G + g] = S[lT + i * G + g] if S[ACC + g] != 0 else S[LT + i * G + g]
    for g in range(G):
        if S[FIN + g] == 0 or S[AMAX + g] < _EPS:
            if has_w:
                scales[g] = make_qx_quants(
                    x[g * N : (g + _U(1)) * N], nmax, 1, qw[g * N : (g + _U(1)) * N], L[g * N : (g + _U(1)) * N]
                )
            else:
                scales[g] = make_qx_quants(x[g * N : (g + _U(1)) * N], nmax, 1, None, L[g * N : (g + _U(1)) * N])
        else:
            scales[g] = S[SCALE + g]
            for i in range(N):
                L[g * N + i] = np.uint8(np.int32(S[LT + i * G + g]) + nm)


@njit(cache=True, error_model="numpy")
def make_qp_quants(x, nmax, qw, L):
    n = x.shape[0]
    mx = np.float32(0.0)
    for i in range(n):
        if not (mx > x[i]):
            mx = x[i]
    if mx < _EPS:
        for i in range(n):
            L[i] = 0
        return np.float32(0.0)
    nm = np.int32(nmax)
    fnmax = np.float32(nm)
    iscale = np.float32(fnmax / mx)
    for i in range(n):
        L[i] = np.uint8(nearest_int(iscale * x[i]) & 0xFF)
    scale = np.float32(np.float32(1.0) / iscale)
    best = np.float32(0.0)
    for i in range(n):
        diff = x[i] - scale * np.float32(L[i])
        best += (qw[i] * diff) * diff
    for is_ in range(-4, 5):
        if is_ == 0:
            continue
        isc = np.float32((np.float32(0.1) * np.float32(is_) + fnmax) / mx)
        sc = np.float32(np.float32(1.0) / isc)
        mse = np.float32(0.0)
        for i in range(n):
            l = nearest_int(isc * x[i])
            if l > nm:
                l = nm
            diff = x[i] - sc * np.float32(l)
            mse += (qw[i] * diff) * diff
        if mse < best:
            best = mse
            iscale = isc
    sumlx = np.float32(0.0)
    suml2 = np.float32(0.0)
    for i in range(n):
        l = nearest_int(iscale * x[i])
        if l > nm:
            l = nm
        L[i] = np.uint8(l & 0xFF)
        fl = np.float32(l)
        sumlx += (qw[i] * x[i]) * fl
        suml2 += (qw[i] * fl) * fl
    for _itry in range(5):
        n_changed = 0
        for i in range(n):
            w = qw[i]
            li = np.int32(L[i])
            fli = np.float32(li)
            slx = sumlx - (w * x[i]) * fli
            sl2 = suml2 - (w * fli) * fli
            if slx > 0 and sl2 > 0:
                new_l = nearest_int((x[i] * sl2) / slx)
                if new_l > nm:
                    new_l = nm
                if new_l != li:
                    fn = np.float32(new_l)
                    slx += (w * x[i]) * fn
                    sl2 += (w * fn) * fn
                    if (slx * slx) * suml2 > (sumlx * sumlx) * sl2:
                        L[i] = np.uint8(new_l & 0xFF)
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if n_changed == 0:
            break
    return np.float32(sumlx / suml2) if suml2 > 0 else np.float32(0.0)
