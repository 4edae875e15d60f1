"""The row driver (quantlab.kernels._rows.run_rows): pieces, thread counts, errors, concurrent callers.

The format kernels are serial nogil numba functions over a row range; run_rows spreads the ranges over a
Python thread pool. Threads must never change a byte, an error must surface as it does on one thread,
and two Python threads calling the API with different thread counts must not see each other's count.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import quantlab
from quantlab.errors import QuantizationError
from quantlab.kernels import _rows


@pytest.fixture
def small_pieces(monkeypatch):
    """Every row may be a piece of its own, and up to 4 threads even on a 2-core machine (a fresh pool
    sized for them, shut down after)."""
    monkeypatch.setattr(_rows, "MIN_PIECE", {"quantize": 1, "dequantize": 1})
    monkeypatch.setattr(_rows, "_MAX_THREADS", 4)
    old_pool = _rows._POOL
    _rows._POOL = None
    yield
    if _rows._POOL is not None:
        _rows._POOL.shutdown(wait=True)
    _rows._POOL = old_pool


def _record(calls):
    def kernel(tag, r0, r1):
        calls.append((tag, r0, r1, threading.get_ident()))

    return kernel


@pytest.mark.parametrize("nrows,threads", [(1, 1), (7, 1), (7, 2), (7, 3), (2, 3), (1, 3), (101, 4)])
def test_pieces_cover_every_row_once_in_contiguous_ranges(small_pieces, nrows, threads):
    calls = []
    with _rows.use_threads(threads):
        _rows.run_rows(_record(calls), nrows, "x")
    spans = sorted((r0, r1) for _, r0, r1, _ in calls)
    assert all(tag == "x" for tag, *_ in calls)
    assert spans[0][0] == 0 and spans[-1][1] == nrows
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # no gap, no overlap
    assert all(r1 > r0 for r0, r1 in spans)
    if threads == 1 or nrows == 1:
        assert calls == [("x", 0, nrows, threading.get_ident())]  # one direct call, caller's thread
    else:
        assert len(calls) == min(nrows, threads * _rows.PIECES_PER_THREAD)
        assert len({t for *_, t in calls}) <= threads


def test_min_piece_keeps_small_inputs_in_one_call(monkeypatch):
    monkeypatch.setattr(_rows, "_MAX_THREADS", 4)
    calls = []
    with _rows.use_threads(4):
        _rows.run_rows(_record(calls), 8, "x", min_rows=8)
        assert len(calls) == 1 and calls[0][1:3] == (0, 8)
        _rows.run_rows(_record(calls), 16, "x", min_rows=8)
    assert [c[1:3] for c in calls[1:]] in ([(0, 8), (8, 16)], [(8, 16), (0, 8)])
    assert _rows.min_rows(256, "quantize") == _rows.MIN_PIECE["quantize"] // 256
    assert _rows.min_rows(1 << 20, "dequantize") == 1


def test_a_kernel_error_surfaces_in_the_caller(small_pieces):
    def kernel(bad, r0, r1):
        if r0 <= bad < r1:
            raise ZeroDivisionError(f"row {bad}")

    for threads in (1, 2, 3):
        with _rows.use_threads(threads), pytest.raises(ZeroDivisionError, match="row 5"):
            _rows.run_rows(kernel, 9, 5)
    # the pool is still usable after a failure
    calls = []
    with _rows.use_threads(3):
        _rows.run_rows(_record(calls), 9, "y")
    assert sum(r1 - r0 for _, r0, r1, _ in calls) == 9


def test_thread_count_is_per_python_thread():
    seen = {}
    inside = threading.Barrier(2)

    def body(n):
        with _rows.use_threads(n):
            inside.wait(timeout=30)  # both are inside their `with` at once
            seen[n] = _rows.get_threads()
            inside.wait(timeout=30)

    ts = [threading.Thread(target=body, args=(n,)) for n in (1, 2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert seen == {1: 1, 2: min(2, _rows.max_threads())}
    assert _rows.get_threads() == _rows.max_threads()  # nothing leaked into this thread


# formats from each family of kernels, with and without an imatrix (IQ3_XXS: a status array per row)
FORMATS = [
    ("Q4_0", False),
    ("Q4_1", True),
    ("Q4_K", True),
    ("Q6_K", False),
    ("IQ3_XXS", True),
    ("IQ4_NL", False),
    ("TQ2_0", False),
    ("BF16", False),
    ("MXFP4", False),
]


@pytest.mark.parametrize("name,use_im", FORMATS, ids=[f"{n}{'-im' if i else ''}" for n, i in FORMATS])
def test_thread_counts_give_identical_bytes(small_pieces, name, use_im):
    rng = np.random.default_rng(3)
    n = 512
    im = (rng.random(n) + 0.1).astype(np.float32) if use_im else None
    for rows in (7, 2, 1):  # odd, fewer rows than threads, one row
        x = rng.standard_t(4, size=(rows, n)).astype(np.float32)
        want = quantlab.quantize(x, name, imatrix=im, impl="reference")
        back = quantlab.dequantize(want, name, impl="reference")
        for threads in (1, 2, 3):
            got = quantlab.quantize(x, name, imatrix=im, threads=threads)
            assert np.array_equal(got, want), f"{name} rows={rows} threads={threads}"
            y = quantlab.dequantize(got, name, threads=threads)
            assert np.array_equal(y.view(np.uint32), back.view(np.uint32)), (
                f"{name} dequantize rows={rows} threads={threads}"
            )


def test_flat_decoder_chunks_over_threads(small_pieces):
    """BF16/F16 decode the flattened array in 65536-value chunks: a chunk count that is odd and not a
    multiple of the thread count, and a tail chunk."""
    bits = np.random.default_rng(4).integers(0, 1 << 16, size=(3, 65536 + 1000), dtype=np.uint16)
    for name in ("F16", "BF16"):
        data = bits.view(np.uint8)
        want = quantlab.dequantize(data, name, impl="reference")
        for threads in (1, 2, 3):
            got = quantlab.dequantize(data, name, threads=threads)
            assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), f"{name} threads={threads}"


def test_row_error_reports_the_same_row_on_any_thread_count(small_pieces):
    """IQ3_XXS aborts in ggml on 1e30-magnitude weights (tests/cases.GGML_ABORTS): rows 3 and 5 of 7
    fail, and whichever thread runs them, the message names the first failing row, as on one thread."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 256)).astype(np.float32)
    x[3] *= np.float32(1e30)
    x[5] *= np.float32(1e30)
    msgs = []
    for threads in (1, 2, 3):
        with pytest.raises(QuantizationError) as ei:
            quantlab.quantize(x, "IQ3_XXS", threads=threads)
        msgs.append(str(ei.value))
    assert msgs[1] == msgs[2] == msgs[0], msgs
    assert "row 3" in msgs[0] and "row 5" not in msgs[0], msgs[0]


def test_two_python_threads_with_different_counts(small_pieces, monkeypatch):
    """Two Python threads quantize at once, one with threads=1 and one with threads=3, many times: every
    result is the reference's, and every call ran with its own thread's count (seen by the driver)."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((9, 1024)).astype(np.float32)
    im = (rng.random(1024) + 0.1).astype(np.float32)
    names = ("Q4_K", "Q4_0")
    want = {name: quantlab.quantize(x, name, imatrix=im, impl="reference") for name in names}
    driver = _rows.run_rows
    mine: dict = {}  # Python thread id -> the count it asked for
    seen: dict = {}  # the count asked for -> counts the driver saw in that thread

    def spy(kernel, nrows, *args, **kw):
        seen.setdefault(mine[threading.get_ident()], set()).add(_rows.get_threads())
        return driver(kernel, nrows, *args, **kw)

    import quantlab.kernels.kquants as kq

    monkeypatch.setattr(kq, "run_rows", spy)  # Q4_K's wrapper calls it directly
    monkeypatch.setattr(_rows, "run_rows", spy)  # Q4_0's through quantize_rows
    errors = []
    start = threading.Barrier(2)

    def body(n):
        mine[threading.get_ident()] = n
        try:
            start.wait(timeout=60)
            for i in range(20):
                name = names[i % 2]
                if not np.array_equal(quantlab.quantize(x, name, imatrix=im, threads=n), want[name]):
                    errors.append(f"threads={n} {name} call {i}: wrong bytes")
        except Exception as e:  # noqa: BLE001
            errors.append(f"threads={n}: {e!r}")

    ts = [threading.Thread(target=body, args=(n,)) for n in (1, 3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in ts)
    assert not errors, errors
    assert seen == {1: {1}, 3: {3}}


def test_model_threads_sets_and_restores_numba_rows_and_blas():
    """quantlab.model.threads(n) puts numba's parallel kernels, the row-kernel pool and BLAS on n
    threads and gives each its previous count back (it used to reset BLAS to os.cpu_count())."""
    import numba
    from threadpoolctl import ThreadpoolController

    from quantlab.kernels import _rows
    from quantlab.model import threads

    blas = ThreadpoolController().select(user_api="blas")

    def counts():
        return numba.get_num_threads(), _rows.get_threads(), [i["num_threads"] for i in blas.info()]

    top = _rows.max_threads()
    with blas.limit(limits=1):  # BLAS below the core count before: must come back as 1
        before = counts()
        assert before[2], "numpy's BLAS is visible to threadpoolctl"
        with threads(top):
            assert counts() == (top, top, [top] * len(before[2]))
            with threads(1):
                assert counts() == (1, 1, [1] * len(before[2]))
            assert counts() == (top, top, [top] * len(before[2]))
        assert counts() == before
        with threads(None):
            assert counts() == before
