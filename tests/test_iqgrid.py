"""The IQ lattices and their neighbour maps (quantlab.formats._iqgrid), checked from first principles."""

from __future__ import annotations

import numpy as np
import pytest

from quantlab.errors import FormatError
from quantlab.formats import _iqgrid

NAMES = list(_iqgrid.GRIDS)


@pytest.fixture(scope="module", params=NAMES)
def g(request):
    return _iqgrid.lattice(request.param)


def _code_levels(g, u):
    u = np.asarray(u, dtype=np.int64)
    return (u[..., None] >> (g.bits_per_coord * np.arange(g.dim))) & ((1 << g.bits_per_coord) - 1)


def test_shapes_and_dtypes(g):
    _cls_name, n, dim, bits, map_size, nwant = _iqgrid.GRIDS[g.name]
    assert g.points.shape == (n, dim) and g.points.dtype == np.int8
    assert g.levels.shape == (n, dim) and g.values.dtype == np.float32
    assert g.kmap.shape == (map_size,) and g.kmap.dtype == np.int32
    assert g.neighbours.dtype == np.int32
    assert (g.dim, g.bits_per_coord, g.nwant) == (dim, bits, nwant)
    assert np.array_equal(g.points, 2 * g.levels + 1)
    # points are distinct and use the levels the formats allow (0..2 for the 2-bit and 1-bit grids)
    assert len({tuple(p) for p in g.points}) == n
    assert g.levels.min() >= 0 and g.levels.max() <= (2 if bits == 2 else 7)


def test_values_are_the_gguf_dequant_grid(g):
    import gguf.quants as gq

    cls = getattr(gq, _iqgrid.GRIDS[g.name][0])
    cls.init_grid()
    want = np.asarray(cls.grid, dtype=np.float32).reshape(g.values.shape)
    assert np.array_equal(g.values.view(np.uint32), want.view(np.uint32))


def test_every_grid_point_maps_to_itself(g):
    assert np.array_equal(g.kmap[g.codes], np.arange(g.size))
    assert np.array_equal(_code_levels(g, g.codes), g.levels)
    assert (g.kmap >= 0).sum() == g.size


def test_flat_layout_is_increasing_and_complete(g):
    off = np.flatnonzero(g.kmap < 0)
    starts = -g.kmap[off].astype(np.int64) - 1
    assert starts[0] == 0 and np.all(np.diff(starts) > 0)
    # each list is [count, idx...] and the next one starts right after it
    ends = starts + 1 + g.neighbours[starts]
    assert np.array_equal(ends[:-1], starts[1:])
    assert ends[-1] == g.neighbours.size
    assert g.neighbours[starts].min() >= 1


def test_neighbour_lists_brute_force(g):
    """For a sample of off-grid codes: the list is sorted by (distance, index) and holds exactly the
    points whose distance is among the nwant smallest distinct distances."""
    rng = np.random.default_rng(0)
    off = np.flatnonzero(g.kmap < 0)
    sample = np.unique(np.concatenate([off[:50], off[-50:], rng.choice(off, 300, replace=False)]))
    pts = g.points.astype(np.int64)
    for u in sample:
        pos = 2 * _code_levels(g, u) + 1
        d2 = ((pts - pos) ** 2).sum(axis=1)
        thr = np.unique(d2)[g.nwant - 1]
        want = np.lexsort((np.arange(g.size), d2))
        want = want[d2[want] <= thr]
        got = g.neighbours_of(int(u))
        assert np.array_equal(got, want), f"{g.name} u={u}"


def test_neighbour_table_matches_lists(g):
    t = g.neighbour_table()
    assert t.shape[0] == g.kmap.size and t.dtype == np.int16
    rng = np.random.default_rng(1)
    for u in rng.choice(g.kmap.size, 200, replace=False):
        row = t[u]
        assert np.array_equal(row[row >= 0], g.neighbours_of(int(u)))
        assert np.all(row[(row >= 0).sum() :] == -1)


def test_group_codes_pack_levels_like_the_map(g):
    """group_codes of every grid point's levels is its map code (kmap sends it back to the point)."""
    L = g.levels.reshape(1, -1)  # all points as one row of groups
    u = _iqgrid.group_codes(g, L)[0]
    assert np.array_equal(u, g.codes)
    assert np.array_equal(g.kmap[u], np.arange(g.size))
    assert np.array_equal(_code_levels(g, u), g.levels)


def test_snap_is_the_brute_force_weighted_nearest(g):
    """snap picks, among a code's neighbour list, the point with the smallest float32 weighted error
    accumulated coordinate by coordinate (first on ties), as a per-candidate loop computes it."""
    rng = np.random.default_rng(2)
    off = np.flatnonzero(g.kmap < 0)
    u = rng.choice(off, 64, replace=False)
    xv = np.abs(rng.standard_normal((64, g.dim))).astype(np.float32) * np.float32(3)
    wa = rng.random((64, g.dim)).astype(np.float32)
    scale = (rng.random(64) + 0.5).astype(np.float32)
    gi, ok = _iqgrid.snap(g, u, xv, wa, scale)
    assert ok.all()
    for k in range(64):
        best, best_i = np.float32(np.inf), -1
        for i in g.neighbours_of(int(u[k])):
            e = np.float32(0)
            for c in range(g.dim):
                diff = np.float32(scale[k] * np.float32(g.points[i, c]) - xv[k, c])
                e = np.float32(e + np.float32(wa[k, c] * diff) * diff)
            if e < best:
                best, best_i = e, i
        assert gi[k] == best_i, f"{g.name} u={u[k]}"


def test_cached_once():
    a = _iqgrid.lattice("iq3xxs")
    assert _iqgrid.lattice("iq3xxs") is a
    with pytest.raises(ValueError):
        a.kmap[0] = 5  # shared tables are read-only


def test_unknown_grid_name():
    with pytest.raises(FormatError, match="known grids"):
        _iqgrid.lattice("iq5xl")


def test_ksigns_parity_and_kmask():
    ks = _iqgrid.ksigns()
    assert ks.shape == (128,) and ks.dtype == np.uint8
    s = np.arange(128)
    assert np.array_equal(ks & 0x7F, s)
    popcount = np.unpackbits(ks[:, None], axis=1).sum(axis=1)
    assert np.all(popcount % 2 == 0)
    assert np.array_equal(_iqgrid.kmask(), 1 << np.arange(8))


def test_kvalues_iq4nl():
    kv = _iqgrid.kvalues_iq4nl()
    assert kv.dtype == np.int8 and kv.shape == (16,)
    assert np.all(np.diff(kv.astype(int)) > 0) and kv[0] == -127 and kv[-1] == 113
