"""quantlab.bench: how rows are chosen for slow operations, and what a formats table holds.

No timing is asserted: the row choice is checked with a fake clock, and the table for what it contains."""

from __future__ import annotations

import os

import numpy as np
import pytest

from quantlab import bench


def test_sample_rows_spread_and_contiguous():
    a = np.arange(64 * 8, dtype=np.float32).reshape(64, 8)
    assert bench._sample_rows(a, 64) is a and bench._sample_rows(a, 100) is a
    s = bench._sample_rows(a, 4)
    assert s.flags.c_contiguous and s.shape == (4, 8)
    assert np.array_equal(s[:, 0] // 8, [0, 21, 42, 63])  # first and last row, evenly between


class _FakeClock:
    """time.perf_counter for bench: advances only when the timed function 'works' per_row s a row."""

    def __init__(self, per_row):
        self.t, self.per_row, self.calls = 0.0, per_row, []

    def __call__(self):
        return self.t

    def work(self, a):
        self.calls.append(a.shape[0])
        self.t += self.per_row * a.shape[0]


@pytest.mark.parametrize(
    "per_row, call_time, least, expect",
    [
        (0.003, 0.0125, 4, 4),  # a search of 3 ms a row: 4 rows (4.2 fit; at least 4)
        (0.003, 0.0125, 1, 4),
        (0.0005, 0.0125, 4, 25),
        (0.05, 0.0125, 2, 2),  # slower than call_time per row: the least allowed
        (1e-6, 0.0125, 4, 64),  # fast: every row
    ],
)
def test_rows_for_with_a_fake_clock(monkeypatch, per_row, call_time, least, expect):
    clock = _FakeClock(per_row)
    monkeypatch.setattr(bench.time, "perf_counter", clock)
    a = np.zeros((64, 8), np.float32)
    k, t_row = bench._rows_for(clock.work, a, call_time, least)
    assert k == expect
    assert t_row == pytest.approx(per_row)
    assert clock.calls == [4, 4, 4]  # one untimed probe call, then the best of two, on 4 rows


def test_formats_table_contents():
    n_rows, n = 16, 256
    t = bench.formats(["Q4_0", "IQ4_XS"], size=n_rows * n, n_per_row=n, min_time=0.0, ref_rows=2)
    ops = [(r["format"], r["op"]) for r in t]
    assert ops == [
        ("Q4_0", "quantize"),
        ("Q4_0", "quantize+imatrix"),
        ("Q4_0", "dequantize"),
        ("IQ4_XS", "quantize"),
        ("IQ4_XS", "quantize+imatrix"),
        ("IQ4_XS", "dequantize"),
    ]
    least = min(n_rows, max(4, 2 * (os.cpu_count() or 1)))
    for r in t:
        assert least <= r["rows"] <= n_rows
        assert 1 <= r["reference rows"] <= 2
        assert r["numba-1t"] > 0 and r["reference"] > 0
        if r.get("ggml-1t"):
            assert r["numba-1t/ggml"] == r["numba-1t"] / r["ggml-1t"]
    assert all(r["rows"] == n_rows for r in t if r["op"] == "dequantize")  # dequantize: always every row
    assert "up to 16x256" in t.title


def test_matvec_cycles_through_a_working_set():
    """The roofline product reads copies of the matrix totalling at least the working set (so that a
    DRAM-sized working set cannot be served from the cache); l3_bytes reads the machine's cache size."""
    l3 = bench.l3_bytes()
    assert l3 is None or (isinstance(l3, int) and l3 > 0)
    assert bench.dram_working_set_mb() >= 256
    t = bench.matvec(["Q8_0", "Q4_0"], rows=64, cols=256, bandwidth=1.0, min_time=0.001, working_set_mb=1)
    for r in t:
        assert r["copies"] * r["weight MB"] >= 1.0 > (r["copies"] - 1) * r["weight MB"]
        assert r["weight MB"] == 64 * bench.get(r["format"]).row_bytes(256) / 1e6 and r["ms"] > 0


def test_formats_title_says_when_weights_are_synthetic(monkeypatch):
    """Without the MiniLM package the benchmark runs on synthetic weights and its title says so (it said
    'real weights' either way)."""
    from quantlab.errors import DataMissing

    def missing(name):
        raise DataMissing(f"{name} is not installed")

    monkeypatch.setattr(bench.data, "tensors", missing)
    t = bench.formats(["Q8_0"], size=4 * 256, n_per_row=256, min_time=0.0, ref_rows=1, peers=False, progress=False)
    assert "synthetic Student-t weights" in t.title and "real weights" not in t.title
