"""The lattices ("grids") of the IQ formats, and the neighbour maps their quantizers search.

The IQ2/IQ3/IQ1 formats do not store one small integer per weight. They store, for every group of
8 weights (IQ2_*, IQ1_*) or 4 weights (IQ3_*), the *index* of a point of a fixed codebook, the grid.
A grid is a hand-picked subset of a small integer lattice:

==========  ======  ===  =================  ==========================  ====================  =====
name        points  dim  coords per point   quantizer coordinate 2l+1   dequant value         nwant
==========  ======  ===  =================  ==========================  ====================  =====
iq2xxs      256     8    l in {0,1,2}       1, 3, 5                     8, 25, 43             2
iq2xs       512     8    l in {0,1,2}       1, 3, 5                     8, 25, 43             2
iq2s        1024    8    l in {0,1,2}       1, 3, 5                     8, 25, 43             1
iq1s        2048    8    l in {0,1,2}       1, 3, 5                     -1, 0, +1             3
iq3xxs      256     4    l in 0..7          1, 3, ..., 15               4, 12, ..., 52, 62    2
iq3s        512     4    l in 0..7          1, 3, ..., 15               1, 3, ..., 15         3
==========  ======  ===  =================  ==========================  ====================  =====

Each coordinate of a point is a small level ``l``. The *quantizer* (``ggml-quants.c``) reasons with the
odd integers ``2l+1`` (a uniform lattice scaled by the block scale); the *dequantizer* (``ggml-common.h``)
multiplies the scale with a tuned, slightly non-uniform alphabet instead (``values``). For ``iq1s`` the
quantizer also keeps the coordinates ``2l+1`` in {1, 3, 5} (that is how ggml builds the map), but it never
multiplies by them: it uses ``l = (point-1)/2`` in {0, 1, 2} to pick one of three levels {-1, 0, +1}
shifted by +-delta (see the IQ1 formats); ``levels`` gives those ``l`` directly.

A group of weights is quantized coordinate by coordinate to levels l_0..l_{dim-1}; the packed code
``u = sum_k l_k << (bits*k)`` (bits = 2 or 3) is looked up in ``kmap``:

* ``kmap[u] >= 0``  -- u is a grid point, ``kmap[u]`` is its index;
* ``kmap[u] < 0``   -- u is off the grid; ``-kmap[u]-1`` is the offset of its neighbour list in
  ``neighbours``: ``[count, idx_1, ..., idx_count]``. The list holds every grid point whose integer
  squared distance (in 2l+1 coordinates) to u is among the ``nwant`` smallest *distinct* distances,
  sorted by (distance, index). The quantizer then picks, among them, the one with the smallest weighted
  error. Lists are laid out in increasing u, exactly as ggml's ``iq2xs_init_impl``/``iq3xs_init_impl``
  lay them out (so ``kmap`` has the same numbers as ggml's map).

Nothing here is copied from C: the grids are decoded at run time from the ``gguf`` package
(``gguf.quants.<TYPE>.grid_hex``/``grid_map``; spec section 6.1), the maps are rebuilt with numpy the first
time a grid is asked for (well under a second each) and kept in memory. All arrays are plain contiguous
numpy arrays that numba kernels can take as arguments.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from ..errors import FormatError, QuantizationError
from ._numerics import c_argmin, csum, nearest_int

__all__ = [
    "Lattice",
    "lattice",
    "GRIDS",
    "ksigns",
    "kmask",
    "kvalues_iq4nl",
    "group_codes",
    "nearest_of",
    "snap",
    "assign",
    "fit",
    "sign_bits",
    "split_signs",
    "nearest_levels",
    "scale_search",
    "resnap",
    "raise_search_failure",
]

# name -> (gguf class name, number of points, dim, bits per coordinate, map size, nwant)
GRIDS = {
    "iq2xxs": ("IQ2_XXS", 256, 8, 2, 43692, 2),
    "iq2xs": ("IQ2_XS", 512, 8, 2, 43692, 2),
    "iq2s": ("IQ2_S", 1024, 8, 2, 43692, 1),
    "iq1s": ("IQ1_S", 2048, 8, 2, 43692, 3),
    "iq3xxs": ("IQ3_XXS", 256, 4, 3, 4096, 2),
    "iq3s": ("IQ3_S", 512, 4, 3, 4096, 3),
}


@dataclass(frozen=True, eq=False)
class Lattice:
    """One IQ grid with its quantizer map (see the module docstring)."""

    name: str
    points: np.ndarray  # int8 (N, dim): quantizer coordinates 2l+1
    levels: np.ndarray  # int8 (N, dim): the levels l (= (points-1)//2)
    values: np.ndarray  # float32 (N, dim): dequantization values (gguf grid_map applied)
    codes: np.ndarray  # int32 (N,): packed code u of every point
    kmap: np.ndarray  # int32 (map_size,): u -> index, or -(offset+1) into neighbours
    neighbours: np.ndarray  # int32 flat: [count, idx..., count, idx..., ...]
    nwant: int
    dim: int
    bits_per_coord: int
    build_seconds: float  # how long building the map took (for the curious)

    @property
    def size(self) -> int:
        return self.points.shape[0]

    def neighbours_of(self, u: int) -> np.ndarray:
        """The neighbour list (grid indices) of an off-grid code u; for a grid point, [its index]."""
        k = int(self.kmap[u])
        if k >= 0:
            return np.array([k], dtype=np.int32)
        off = -k - 1
        return self.neighbours[off + 1 : off + 1 + self.neighbours[off]].copy()

    def neighbour_table(self) -> np.ndarray:
        """int16 (map_size, max_count): row u = the candidate grid indices for code u (its neighbour
        list, or just its own index when u is on the grid), padded with -1. A rectangular form of
        ``kmap``/``neighbours`` for block-vectorized numpy code; built on first use and cached."""
        t = _TABLES.get(self.name)
        if t is None:
            off = np.flatnonzero(self.kmap < 0)
            starts = -self.kmap[off].astype(np.int64) - 1
            counts = self.neighbours[starts].astype(np.int64)
            t = np.full((self.kmap.size, int(counts.max())), -1, dtype=np.int16)
            on = np.flatnonzero(self.kmap >= 0)
            t[on, 0] = self.kmap[on]
            rows = np.repeat(off, counts)
            first = np.repeat(starts + 1, counts)
            rank = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
            t[rows, rank] = self.neighbours[first + rank]
            t.setflags(write=False)
            _TABLES[self.name] = t
        return t

    def code(self, levels) -> int:
        """Pack a sequence of ``dim`` levels into the map code u."""
        u = 0
        for k, l in enumerate(levels):
            u |= int(l) << (self.bits_per_coord * k)
        return u


def _gguf_class(cls_name: str):
    try:
        # gguf-py (~35 ms) is not imported by `import quantlab`
        import gguf.quants as gq
    except ImportError as e:  # pragma: no cover - gguf is a hard dependency
        raise FormatError("the IQ grids are read from the `gguf` package (pip install gguf)") from e
    return getattr(gq, cls_name)


def _decode_levels(cls_name: str, n: int, dim: int, bits: int) -> np.ndarray:
    """The levels l of every grid point, decoded from gguf's hex string.

    2-bit grids: the hex bytes are the compact uint16 codes, little-endian, coordinate k at bits 2k.
    3-bit grids: one coordinate per nibble, low nibble first (gguf's own convention)."""
    raw = np.frombuffer(bytes.fromhex(_gguf_class(cls_name).grid_hex.decode("ascii")), dtype=np.uint8)
    per_byte = 8 // bits if bits == 2 else 2
    step = 8 // per_byte
    shifts = np.arange(0, 8, step, dtype=np.uint8)
    lv = (raw[:, None] >> shifts[None, :]) & np.uint8((1 << bits) - 1)
    lv = lv.reshape(n, dim).astype(np.int8)
    return lv


def _neighbour_lists(levels: np.ndarray, kmap: np.ndarray, bits: int, nwant: int):
    """For every off-grid code u (increasing): the grid indices at the nwant smallest distinct distances,
    sorted by (distance, index). Returns (off codes, counts, flat indices).

    Distances are computed in level units, sum_k (l_k - g_k)^2 (a quarter of the distance in 2l+1
    coordinates: same order). The code splits into a low and a high half of the coordinates, so that
    dist(u, g) = A[u_lo, g] + B[u_hi, g] with two small tables; one high half at a time gives a block of
    (2**(bits*dim/2) codes x N points) small integers that stays in cache."""
    n, dim = levels.shape
    half = dim // 2
    nlo = 1 << (bits * half)
    lmax = (1 << bits) - 1
    maxd = dim * lmax * lmax
    dt = np.uint8 if 2 * maxd < 256 else np.uint16  # room for the wrap-around trick below
    sub = np.arange(nlo)
    sub_levels = ((sub[:, None] >> (bits * np.arange(half))[None, :]) & lmax).astype(np.int16)
    g = levels.astype(np.int16)
    A = ((sub_levels[:, None, :] - g[None, :, :half]) ** 2).sum(axis=2).astype(dt)  # (nlo, n)
    B = ((sub_levels[:, None, :] - g[None, :, half:]) ** 2).sum(axis=2).astype(dt)  # (nhi, n)
    map_size = kmap.size
    out_u, out_idx = [], []
    for hi in range((map_size + nlo - 1) // nlo):
        u0 = hi * nlo
        nr = min(nlo, map_size - u0)
        offrow = kmap[u0 : u0 + nr] < 0
        if not offrow.any():
            continue
        D = A[:nr] + B[hi][None, :]
        thr = D.min(axis=1)
        for _ in range(nwant - 1):
            # next distinct distance: min of D - (thr+1); entries <= thr wrap around to >= 2**bits - maxd
            m = (D - (thr + dt(1))[:, None]).min(axis=1).astype(np.int64)
            thr = np.where(m <= maxd, m + thr.astype(np.int64) + 1, thr).astype(dt)
        flat = np.flatnonzero((thr[:, None] >= D) & offrow[:, None])  # = r * n + c
        r = flat // n
        key = (r * (maxd + 1) + D.reshape(-1)[flat]) * n + (flat - r * n)
        key.sort()
        out_u.append(key // ((maxd + 1) * n) + u0)
        out_idx.append(key % n)
    rows = np.concatenate(out_u)
    idx = np.concatenate(out_idx).astype(np.int32)
    off = np.flatnonzero(kmap < 0)
    counts = np.bincount(rows, minlength=map_size)[off].astype(np.int32)
    return off, counts, idx


def _build(name: str) -> Lattice:
    t0 = time.perf_counter()
    cls_name, n, dim, bits, map_size, nwant = GRIDS[name]
    cls = _gguf_class(cls_name)
    levels = _decode_levels(cls_name, n, dim, bits)
    points = (2 * levels + 1).astype(np.int8)
    gmap = np.asarray(cls.grid_map, dtype=np.float32)
    values = gmap[levels.astype(np.intp)]

    shifts = (bits * np.arange(dim)).astype(np.int32)
    codes = (levels.astype(np.int32) << shifts).sum(axis=1).astype(np.int32)
    kmap = np.full(map_size, -1, dtype=np.int32)
    kmap[codes] = np.arange(n, dtype=np.int32)

    off, counts, idx = _neighbour_lists(levels, kmap, bits, nwant)
    # flat layout [count, idx...] per off-grid code, in increasing code order (as ggml lays it out)
    starts = np.zeros(off.size, dtype=np.int64)
    starts[1:] = np.cumsum(counts[:-1].astype(np.int64) + 1)
    neighbours = np.empty(int(starts[-1] + counts[-1] + 1), dtype=np.int32)
    neighbours[starts] = counts
    row_of = np.repeat(np.arange(off.size), counts)
    first = np.zeros(off.size, dtype=np.int64)
    first[1:] = np.cumsum(counts[:-1])
    rank = np.arange(idx.size, dtype=np.int64) - first[row_of]
    neighbours[starts[row_of] + 1 + rank] = idx
    kmap[off] = (-(starts + 1)).astype(np.int32)

    for a in (points, levels, values, codes, kmap, neighbours):
        a.setflags(write=False)
    return Lattice(
        name=name,
        points=points,
        levels=levels,
        values=values,
        codes=codes,
        kmap=kmap,
        neighbours=neighbours,
        nwant=nwant,
        dim=dim,
        bits_per_coord=bits,
        build_seconds=time.perf_counter() - t0,
    )


_CACHE: dict[str, Lattice] = {}
_TABLES: dict[str, np.ndarray] = {}
_LOCK = threading.Lock()


def lattice(name: str) -> Lattice:
    """The grid ``name`` (one of ``GRIDS``) with its map and neighbour lists; built once, then cached."""
    g = _CACHE.get(name)
    if g is not None:
        return g
    if name not in GRIDS:
        raise FormatError(f"unknown IQ grid {name!r}; known grids: {', '.join(GRIDS)}")
    with _LOCK:
        g = _CACHE.get(name)
        if g is None:
            g = _CACHE[name] = _build(name)
    return g


_SMALL: dict[str, np.ndarray] = {}


def ksigns() -> np.ndarray:
    """uint8 (128,): 7-bit sign index s -> 8-bit sign mask (bit 7 set iff s has odd popcount, so that
    every mask has an even number of minus signs). From ``gguf.quants.IQ2_XXS.ksigns``."""
    a = _SMALL.get("ksigns")
    if a is None:
        a = np.frombuffer(bytes(_gguf_class("IQ2_XXS").ksigns), dtype=np.uint8).copy()
        a.setflags(write=False)
        _SMALL["ksigns"] = a
    return a


def kmask() -> np.ndarray:
    """uint8 (8,): bit j of a sign mask <-> element j of a group of 8 (1, 2, 4, ..., 128)."""
    return (np.uint8(1) << np.arange(8, dtype=np.uint8)).astype(np.uint8)


def kvalues_iq4nl() -> np.ndarray:
    """int8 (16,): the non-linear IQ4_NL / IQ4_XS code book, from ``gguf.quants.IQ4_NL.kvalues``."""
    a = _SMALL.get("kvalues_iq4nl")
    if a is None:
        a = np.array(_gguf_class("IQ4_NL").kvalues, dtype=np.int8)
        a.setflags(write=False)
        _SMALL["kvalues_iq4nl"] = a
    return a


# ----------------------------------------------------------------------------------------------------
# quantizer steps shared by the IQ1 / IQ2 / IQ3 references (numpy, block-vectorized)
# ----------------------------------------------------------------------------------------------------

_FLT_MAX = np.finfo(np.float32).max


def group_codes(lat: Lattice, L: np.ndarray) -> np.ndarray:
    """(..., dim*k) levels -> (..., k) map codes ``u = l_0 | l_1 << bits | l_2 << 2*bits | ...``."""
    g = L.reshape(*L.shape[:-1], -1, lat.dim).astype(np.int32)
    shifts = lat.bits_per_coord * np.arange(lat.dim, dtype=np.int32)
    return (g << shifts).sum(axis=-1).astype(np.int32)


def nearest_of(cand: np.ndarray, q: np.ndarray, xv: np.ndarray, wa: np.ndarray, scale: np.ndarray):
    """The core of ggml's ``iq*_find_best_neighbour``: for G groups, among the candidates ``cand``
    (G, M) (grid indices, -1 padded) with coordinates ``q`` (G, M, dim), the one minimising
    ``sum_i wa_i * (scale*q_i - xv_i)**2`` (float32, summed in i order), the first on ties; only
    errors below FLT_MAX count. xv/wa (G, dim), scale (G,). Returns (grid index (G,), found (G,)):
    ``found`` is False where no candidate qualifies (ggml asserts or falls back there)."""
    valid = cand >= 0
    d2 = np.zeros(cand.shape, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        for i in range(q.shape[-1]):
            diff = scale[:, None] * q[:, :, i] - xv[:, None, i]
            d2 = d2 + (wa[:, None, i] * diff) * diff
        d2 = np.where(valid & (d2 < _FLT_MAX), d2, np.float32(np.inf))
    j = np.argmin(d2, axis=1)
    rows = np.arange(cand.shape[0])
    return cand[rows, j], d2[rows, j] < np.float32(np.inf)


def snap(lat: Lattice, u: np.ndarray, xv: np.ndarray, wa: np.ndarray, scale: np.ndarray):
    """``iq2_find_best_neighbour`` / ``iq3_find_best_neighbour`` for G off-grid codes ``u`` (G,):
    the best of u's neighbour list in the quantizer coordinates 2l+1 (see :func:`nearest_of`)."""
    cand = lat.neighbour_table()[u].astype(np.int32)  # (G, M), -1 padded
    q = lat.points[np.where(cand >= 0, cand, 0)].astype(np.float32)  # (G, M, dim)
    return nearest_of(cand, q, xv, wa, scale)


def assign(lat: Lattice, L: np.ndarray, xval: np.ndarray, waux: np.ndarray, scale: np.ndarray, groups: np.ndarray):
    """Snap the groups ``groups`` (mask (B, G)) of the levels L (B, dim*G) that are off the grid to
    their best neighbour, in place; the search uses ``scale`` (B,), |x| ``xval`` and sqrt(weights)
    ``waux`` (B, dim*G). Returns (off-grid mask (B, G), failed mask (B,))."""
    u = group_codes(lat, L)
    off = (lat.kmap[u] < 0) & groups
    failed = np.zeros(L.shape[0], dtype=bool)
    if off.any():
        b, k = np.nonzero(off)
        cols = lat.dim * k[:, None] + np.arange(lat.dim)
        gi, ok = snap(lat, u[b, k], xval[b[:, None], cols], waux[b[:, None], cols], scale[b])
        L[b[:, None], cols] = lat.levels[np.where(ok, gi, 0)]
        failed[b[~ok]] = True
    return off, failed


def fit(w: np.ndarray, xval: np.ndarray, L: np.ndarray):
    """The least-squares sums of a block: sumqx = sum (w*|x|)*q, sumq2 = sum (w*q)*q with q = 2l+1,
    left to right over the block (the best scale is sumqx/sumq2, its merit sumqx**2/sumq2)."""
    q = (2 * L.astype(np.float32) + np.float32(1)).astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        return csum((w * xval) * q), csum((w * q) * q)


def nearest_levels(lat: Lattice, inv: np.ndarray, xval: np.ndarray) -> np.ndarray:
    """Per block inverse scale ``inv`` (B,): the level l of each |x| whose odd integer 2l+1 is nearest
    to inv*|x|, ``clamp(nearest_int((inv*|x| - 1)/2), 0, lmax)`` (int8, (B, n))."""
    lmax = int(lat.levels.max())
    return np.clip(nearest_int(np.float32(0.5) * (inv[:, None] * xval - np.float32(1))), 0, lmax).astype(np.int8)


def scale_search(lat: Lattice, xval, waux, w, live, inverse_scales, scale, on_grid):
    """The candidate loop of the IQ2/IQ3 quantizers. For every candidate inverse scale inv (B,) of
    ``inverse_scales``: the nearest levels, snapped to the grid (neighbour search with 1/inv), the
    least-squares scale sumqx/sumq2 of the result; a block keeps the candidate with the largest
    sumqx**2/sumq2. ``scale`` (B,) and ``on_grid`` (B, G) are the values kept when no candidate
    wins. Returns (levels L (B, n), scale, on_grid, failed (B,): a neighbour search failed)."""
    B, G = on_grid.shape
    L = np.zeros(xval.shape, dtype=np.int8)
    best = np.zeros(B, dtype=np.float32)
    failed = np.zeros(B, dtype=bool)
    groups = live[:, None] & np.ones((1, G), dtype=bool)
    with np.errstate(all="ignore"):
        for inv in inverse_scales:
            Laux = nearest_levels(lat, inv, xval)
            off, f = assign(lat, Laux, xval, waux, (np.float32(1) / inv).astype(np.float32), groups)
            failed |= f & live
            sumqx, sumq2 = fit(w, xval, Laux)
            acc = live & (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
            scale = np.where(acc, sumqx / sumq2, scale).astype(np.float32)
            best = np.where(acc, scale * sumqx, best).astype(np.float32)
            L = np.where(acc[:, None], Laux, L)
            on_grid = np.where(acc[:, None], ~off, on_grid)
    return L, scale, on_grid, failed


def resnap(lat: Lattice, L, xval, waux, w, scale, need, groups):
    """After the search: re-snap the groups ``groups`` (B, G) of the blocks ``need`` (B,) with levels
    nearest to x/scale for the fitted scale, then refit that scale. Returns (L, scale, failed (B,))."""
    with np.errstate(all="ignore"):
        Lr = nearest_levels(lat, (np.float32(1) / scale).astype(np.float32), xval)
        L = np.where(np.repeat(groups, lat.dim, axis=1), Lr, L)
        _, f = assign(lat, L, xval, waux, scale, groups)
        sumqx, sumq2 = fit(w, xval, L)
        scale = np.where(need & (sumq2 > 0), sumqx / sumq2, scale).astype(np.float32)
    return L, scale, f & need


def sign_bits(masks: np.ndarray) -> np.ndarray:
    """(..., G) sign bytes -> (..., 8G) booleans (bit j of byte g: element 8g + j is negative)."""
    m = np.asarray(masks, dtype=np.uint8)
    return ((m[..., None] >> np.arange(8, dtype=np.uint8)) & 1).reshape(*m.shape[:-1], -1).astype(bool)


def split_signs(xb: np.ndarray, w: np.ndarray, parity: bool):
    """Blocks xb (B, 8G) -> (|x| (B, 8G) float32, sign bytes (B, G) int32: bit j set = weight j of the
    group negative). With ``parity`` (the 7-bit sign formats) a group with an odd number of minus signs
    has its least important weight (smallest w*x*x, first on ties) flipped: it is then quantized against
    the wrong sign, the 8th sign bit is implied, and only 7 bits are kept."""
    B, G = xb.shape[0], xb.shape[1] // 8
    neg = xb < 0
    xval = np.where(neg, -xb, xb).astype(np.float32)
    signs = (neg.reshape(B, G, 8) * (1 << np.arange(8)).astype(np.int32)).sum(axis=2).astype(np.int32)
    if parity:
        odd = neg.reshape(B, G, 8).sum(axis=2) % 2 == 1
        with np.errstate(over="ignore", invalid="ignore"):
            imin = c_argmin(((w * xb) * xb).reshape(B, G, 8))
        bb, kk = np.nonzero(odd)
        col = 8 * kk + imin[bb, kk]
        xval[bb, col] = -xval[bb, col]
        signs[bb, kk] ^= 1 << imin[bb, kk]
        signs &= 127
    return xval, signs


def raise_search_failure(
    name: str,
    block: int,
    what: str,
    b: int,
    n_per_row: int,
    x_rows: np.ndarray,
    ggml: str = "aborts the process on this input",
    overflow: str = "for large weights",
):
    """Raise the QuantizationError of a lattice search that fails where ggml's quantizer aborts: block
    ``b`` (counted over all rows, ``block`` weights each) of ``x_rows``; ``what`` went wrong there."""
    per_row = n_per_row // block
    r, blk = int(b) // per_row, int(b) % per_row
    amax = float(np.max(np.abs(x_rows[r])))
    raise QuantizationError(
        f"{name} cannot quantize row {r} (block of {block} #{blk}): {what}. ggml's quantizer {ggml}. "
        f"The largest |weight| in the row is {amax:.3g}: the search squares and multiplies weights in "
        f"float32 (max 3.4e38), which overflows {overflow}. Rescale the tensor (quantize x/s, multiply "
        f"the result by s), or use a format without a lattice search such as Q8_0 or IQ4_XS."
    )
