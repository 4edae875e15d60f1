"""The Python side of every row kernel: split the rows over threads, allocate the output from the registry.

Every format kernel is a serial ``@njit(cache=True, nogil=True)`` function whose last two arguments are
the range of rows it works on, ``kernel(*args, r0, r1)`` doing ``for r in range(r0, r1)``. Serial
kernels compile much faster than ``parallel=True`` ones (numba's parfor pass is slow: compiling every
format kernel took 481 s of CPU with prange, 261 s without; 140 s once the big searches were called
rather than inlined), and since they release the GIL, plain Python threads run them in parallel:
:func:`run_rows` cuts the rows into contiguous pieces and works through them with a module-level
thread pool, the calling thread taking pieces too. One thread (the default for small inputs, see
:mod:`quantlab.api`) is a direct call. On a busy machine a call waits at most for the piece a
descheduled helper is in, where numba's parallel region could stall the whole call.

The thread count is a context variable (:func:`use_threads`), so two Python threads calling the API at
once, each with its own ``threads=``, do not see each other's setting. Threads never change a byte:
every row is computed by the same code whichever thread runs it.

:func:`quantize_rows` / :func:`dequantize_rows` are what each ``quantize_<key>`` / ``dequantize_<key>``
of a kernel module does around its kernel, so block and type sizes come from
:mod:`quantlab.formats.registry` and nowhere else.

So every row kernel opens with the same loop header (``for r in range(r0, r1): qr = q[r] ... for each
block``): a repetition kept on purpose, one kernel per format written out as ggml writes its
``quantize_row_*`` / ``dequantize_row_*``, so numba compiles each block body with its own constants
instead of calling a block function through a generic driver.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..formats.registry import get

# Pieces per thread: rows are not all equally expensive (IQ searches, all-zero blocks), so each thread
# takes a few pieces in turn instead of one fixed share. A piece holds at least this many weights: a
# call through numba's dispatcher costs microseconds, which a smaller piece would not pay back.
PIECES_PER_THREAD = 4
MIN_PIECE = {"quantize": 1 << 12, "dequantize": 1 << 15}

_THREADS: contextvars.ContextVar = contextvars.ContextVar("quantlab_row_threads", default=None)
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


_MAX_THREADS: int | None = None


def max_threads() -> int:
    """The most threads a kernel call may use: numba's NUMBA_NUM_THREADS (the environment variable of
    that name, else the number of cores), read once."""
    global _MAX_THREADS
    if _MAX_THREADS is None:
        # lazy: `import quantlab` does not start numba (~0.2 s) until a kernel runs
        import numba

        _MAX_THREADS = max(1, int(numba.config.NUMBA_NUM_THREADS))
    return _MAX_THREADS


@functools.cache
def numba_thread_fns():
    """numba's per-thread thread-count getter and setter, for its ``parallel=True`` kernels (matmul).
    The public numba.get/set_num_threads re-check the worker pool on every call (3-4 us each, measured:
    a tenth of a 1M-weight BF16 dequantize); once the pool is up, the raw functions behind them take
    0.1-0.3 us. Callers clamp the count to 1..NUMBA_NUM_THREADS, the check the public setter adds."""
    # lazy: see max_threads
    import numba

    numba.get_num_threads()  # launches the pool (once)
    try:
        from numba.np.ufunc import parallel as _p

        get, put = _p._get_num_threads, _p._set_num_threads
        if get() == numba.get_num_threads():
            return get, put
    except (ImportError, AttributeError, TypeError):  # another numba: the public functions
        pass
    return numba.get_num_threads, numba.set_num_threads


def get_threads() -> int:
    """Threads the row kernels use in this context (default :func:`max_threads`)."""
    n = _THREADS.get()
    return max_threads() if n is None else n


def call_with_threads(n: int, fn, *args):
    """``fn(*args)`` with the row kernels inside on ``n`` threads (clamped to 1..max_threads()), in
    this thread (or asyncio task) only; the previous count is back after."""
    token = _THREADS.set(max(1, min(int(n), max_threads())))
    try:
        return fn(*args)
    finally:
        _THREADS.reset(token)


@contextlib.contextmanager
def use_threads(n: int):
    """The ``with`` form of :func:`call_with_threads`."""
    token = _THREADS.set(max(1, min(int(n), max_threads())))
    try:
        yield
    finally:
        _THREADS.reset(token)


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        with _POOL_LOCK:
            if _POOL is None:
                _POOL = ThreadPoolExecutor(max_workers=max(1, max_threads() - 1), thread_name_prefix="quantlab-rows")
    return _POOL


def _forget_pool() -> None:
    """After fork the child has none of the parent's pool threads: start a new pool on first use."""
    global _POOL, _POOL_LOCK
    _POOL = None
    _POOL_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def min_rows(n_per_row: int, op: str) -> int:
    """The fewest rows of ``n_per_row`` weights worth a piece of their own for ``op``."""
    return max(1, -(-MIN_PIECE[op] // max(1, int(n_per_row))))


def _work(kernel, args, bounds, claim, failed):
    """Take the next unclaimed piece until none is left (or one has failed)."""
    npieces = len(bounds) - 1
    while not failed:
        i = next(claim)
        if i >= npieces:
            return
        try:
            kernel(*args, bounds[i], bounds[i + 1])
        except BaseException as e:  # noqa: BLE001  (re-raised in the caller's thread)
            failed.append((i, e))
            return


def run_rows(kernel, nrows: int, *args, min_rows: int = 1) -> None:
    """``kernel(*args, r0, r1)`` over the rows [0, nrows), on :func:`get_threads` threads.

    One thread, or too few rows for two pieces of ``min_rows``: one direct call. Otherwise contiguous
    pieces, ``PIECES_PER_THREAD`` per thread, claimed in order by the calling thread and by helpers
    from the pool; the call returns when every piece is done. A helper that has not started by the
    time the caller runs out of pieces is cancelled (the pool may be busy with another caller), so a
    call never waits for someone else's work. An exception raised by the kernel stops the claiming of
    further pieces and is re-raised here (the one of the lowest piece, if several failed)."""
    nrows = int(nrows)
    if nrows <= 0:
        return
    threads = get_threads()
    npieces = min(threads * PIECES_PER_THREAD, nrows // max(1, int(min_rows)))
    if threads <= 1 or npieces < 2:
        kernel(*args, 0, nrows)
        return
    bounds = [nrows * i // npieces for i in range(npieces + 1)]
    claim = itertools.count()  # next() on it is atomic under the GIL
    failed: list = []
    pool = _pool()
    helpers = [pool.submit(_work, kernel, args, bounds, claim, failed) for _ in range(min(threads, npieces) - 1)]
    _work(kernel, args, bounds, claim, failed)
    for h in helpers:
        if not h.cancel():
            h.result()
    if failed:
        raise min(failed, key=lambda f: f[0])[1]


def quantize_rows(kernel, x, fmt, *args) -> np.ndarray:
    """``kernel(x, out, *args, r0, r1)`` over the rows of ``x``, into a fresh uint8 array of ``fmt``'s
    row size per row."""
    out = np.empty((x.shape[0], get(fmt).row_bytes(x.shape[1])), dtype=np.uint8)
    run_rows(kernel, x.shape[0], x, out, *args, min_rows=min_rows(x.shape[1], "quantize"))
    return out


def dequantize_rows(kernel, q, n_per_row, *args) -> np.ndarray:
    """``kernel(q, y, *args, r0, r1)`` over the rows of ``q``, into a fresh float32 array of
    ``n_per_row`` values per row."""
    y = np.empty((q.shape[0], n_per_row), dtype=np.float32)
    run_rows(kernel, q.shape[0], np.ascontiguousarray(q), y, *args, min_rows=min_rows(n_per_row, "dequantize"))
    return y
