"""The public quantize / dequantize / inspect_block API (mirrors ``gguf.quants``: works on the last axis).

All validation lives here, once, so reference functions and numba kernels receive clean inputs:
a C-contiguous float32 2-D array whose row length is a multiple of the block size, finite where the
format cannot hold NaN/Inf, and an imatrix of the right length.
"""
from __future__ import annotations

import contextlib
import math
import os

import numpy as np

from .errors import (FormatError, ImatrixError, ImatrixRequired, NonFiniteError, ShapeError)
from .formats.registry import Format, get
from .kernels import _rows

__all__ = ["quantize", "dequantize", "inspect_block", "row_bytes"]

_IMATRIX_HELP = (
    "An importance matrix (imatrix) says, for every input column of a weight matrix, how large the "
    "activations that multiply it are on real text (the mean of their squares). The {name} search needs "
    "it to decide which weights matter. Compute one with quantlab.model.imatrix(model, text) or "
    "`quantlab imatrix MODEL --text FILE -o OUT`, or load one written by llama-imatrix, then pass "
    "imatrix=... (one non-negative float per column, {n} here)."
)


def _as_float_rows(x, fmt: Format) -> tuple[np.ndarray, tuple]:
    a = np.asarray(x)
    if a.dtype.kind != "f":
        raise ShapeError(f"quantize expects floating-point weights (float32, float16 or float64), "
                         f"got an array of dtype {a.dtype}")
    if a.ndim == 0:
        raise ShapeError("quantize expects at least a 1-D array of weights, got a scalar")
    n = a.shape[-1]
    if n % fmt.block_size:
        hint = ""
        if fmt.block_size == 256:
            hint = (" K-quants and most IQ types use super-blocks of 256; for rows like this use a "
                    "32-block format such as Q4_0, Q5_0, Q8_0 or IQ4_NL (llama.cpp falls back the same way)")
        raise ShapeError(f"{fmt.name} quantizes rows in blocks of {fmt.block_size} weights, but the last "
                         f"axis has {n} values ({n} % {fmt.block_size} = {n % fmt.block_size}).{hint}")
    lead = a.shape[:-1]
    rows = np.ascontiguousarray(a.reshape(math.prod(lead), n), dtype=np.float32)
    return rows, lead


def _check_finite(rows: np.ndarray, fmt: Format) -> None:
    if fmt.family == "floats" and fmt.name in ("F32", "F16", "BF16", "F64"):
        return
    fin = np.isfinite(rows)
    if not fin.all():
        r, c = np.argwhere(~fin)[0]
        what = "NaN" if np.isnan(rows[r, c]) else "infinity"
        raise NonFiniteError(f"{fmt.name} cannot represent {what}: found {rows[r, c]} at row {r}, column {c} "
                             f"({int((~fin).sum())} non-finite values in all); clean the weights first")


def _check_imatrix(imatrix, fmt: Format, n: int) -> np.ndarray | None:
    if imatrix is None:
        if fmt.requires_imatrix:
            raise ImatrixRequired(f"{fmt.name} cannot be quantized without an importance matrix. "
                                  + _IMATRIX_HELP.format(name=fmt.name, n=n))
        return None
    im = np.asarray(imatrix)
    if im.dtype.kind not in "fiu":
        raise ImatrixError(f"the imatrix must be numeric (float32), got dtype {im.dtype}")
    im = np.ascontiguousarray(im, dtype=np.float32).reshape(-1) if im.ndim <= 1 else im
    if im.ndim != 1 or im.shape[0] != n:
        raise ImatrixError(f"the imatrix must hold one value per column: expected shape ({n},), "
                           f"got {tuple(np.shape(imatrix))}")
    if not np.isfinite(im).all() or (im < 0).any():
        bad = np.flatnonzero(~np.isfinite(im) | (im < 0))[0]
        raise ImatrixError(f"imatrix values are means of squared activations, so finite and >= 0; "
                           f"found {im[bad]} at column {bad}")
    return im


# Below these sizes a default (threads=None) call runs on one thread: waking a second thread costs
# more than it saves, and on a busy machine a parallel region can wait milliseconds for a descheduled
# worker (measured here: median 0.02 ms but 90th percentile 48 ms for a small dequantize on 2 threads
# at load 14). Explicit ``threads=`` is always honoured. Threads never change a byte.
_PARALLEL_MIN = {"quantize": 1 << 15, "dequantize": 1 << 20}


def _want_threads(n, work, op) -> int:
    if n is None and work is not None and work < _PARALLEL_MIN[op]:
        return 1
    top = _rows.max_threads()
    return top if n is None else max(1, min(int(n), top))


_thread_count_fns = _rows.numba_thread_fns   # numba's raw thread-count getter and setter


def _run_threaded(fn, args, n, work, op):
    """Call a format kernel wrapper with the requested thread count. The format kernels are serial
    nogil numba functions that :func:`quantlab.kernels._rows.run_rows` spreads over Python threads;
    the count is a context variable there, so concurrent callers (two Python threads) each keep their
    own and numba's own thread count is left alone."""
    return _rows.call_with_threads(_want_threads(n, work, op), fn, *args)


@contextlib.contextmanager
def _threads(n, work: int | None = None, op: str = "quantize"):
    """Use ``n`` threads (see :func:`_want_threads`) inside the ``with``: numba's own count, for its
    parallel kernels (matmul), and the format kernels' count of :mod:`quantlab.kernels._rows`."""
    want = _want_threads(n, work, op)
    get, put = _thread_count_fns()
    old = get()
    if want != old:
        put(want)
    try:
        with _rows.use_threads(want):
            yield
    finally:
        if want != old:
            put(old)


def quantize(x, fmt, imatrix=None, impl: str = "fast", threads: int | None = None) -> np.ndarray:
    """Quantize ``x`` along its last axis into ggml's block layout.

    Returns a uint8 array of shape ``(*x.shape[:-1], row_bytes)``, byte-identical to
    ``ggml_quantize_chunk`` (what llama-quantize calls) for the same input and importance matrix.
    ``fmt`` is a name (case-insensitive), a ggml id or a Format; ``impl`` is ``"fast"`` (numba) or
    ``"reference"`` (numpy); ``threads`` (default: all cores) never changes a byte.
    """
    f = get(fmt)
    f.check_usable()
    rows, lead = _as_float_rows(x, f)
    _check_finite(rows, f)
    im = _check_imatrix(imatrix, f, rows.shape[1])
    if not f.uses_imatrix:
        im = None  # ggml ignores it for these types; so do we (same bytes)
    fn = f.impl(impl, "quantize")
    if rows.size == 0:
        out = np.zeros((rows.shape[0], f.row_bytes(rows.shape[1])), dtype=np.uint8)
    elif impl == "fast":
        out = _run_threaded(fn, (rows, im), threads, rows.size, "quantize")
    else:
        out = fn(rows, im)
    return out.reshape(*lead, out.shape[-1])


def _as_byte_rows(data, f: Format) -> tuple[np.ndarray, tuple, int]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = np.frombuffer(data, dtype=np.uint8)
    a = np.asarray(data)
    if a.dtype != np.uint8:
        raise ShapeError(f"dequantize expects the raw bytes as a uint8 array, got dtype {a.dtype}")
    if a.ndim == 0:
        raise ShapeError("dequantize expects a uint8 array of blocks, got a scalar")
    rb = a.shape[-1]
    if rb % f.type_size:
        raise ShapeError(f"{f.name} blocks are {f.type_size} bytes ({f.block_size} weights each), but the "
                         f"last axis has {rb} bytes ({rb} % {f.type_size} = {rb % f.type_size}): "
                         f"this is not {f.name} data, or it is truncated")
    n = rb // f.type_size * f.block_size
    rows = a.reshape(math.prod(a.shape[:-1]), rb)
    if not rows.flags.c_contiguous:
        rows = np.ascontiguousarray(rows)
    return rows, a.shape[:-1], n


def dequantize(data, fmt, impl: str = "fast", threads: int | None = None) -> np.ndarray:
    """Decode ggml blocks (uint8, last axis = row bytes) to float32, identical to ggml's ``to_float``.
    Returns shape ``(*data.shape[:-1], n_per_row)``."""
    f = get(fmt)
    f.check_usable()
    rows, lead, n = _as_byte_rows(data, f)
    fn = f.impl(impl, "dequantize")
    if rows.size == 0:
        out = np.zeros((rows.shape[0], n), dtype=np.float32)
    elif impl == "fast":
        out = _run_threaded(fn, (rows, n), threads, rows.shape[0] * n, "dequantize")
    else:
        out = fn(rows, n)
    return out.reshape(*lead, n)


def row_bytes(fmt, n_per_row: int) -> int:
    return get(fmt).row_bytes(n_per_row)


def inspect_block(data, fmt, i: int = 0) -> dict:
    """Decode block ``i`` (counting blocks in the flattened data) into its fields, for teaching:
    the raw bytes, the scales as stored and as applied, the codes, and the reconstructed weights."""
    f = get(fmt)
    f.check_usable()
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = np.frombuffer(data, dtype=np.uint8)
    a = np.asarray(data)
    if a.dtype != np.uint8:
        raise ShapeError(f"inspect_block expects raw uint8 bytes, got dtype {a.dtype}")
    flat = a.reshape(-1)
    if flat.size % f.type_size:
        raise ShapeError(f"{flat.size} bytes is not a whole number of {f.name} blocks ({f.type_size} bytes each)")
    nblocks = flat.size // f.type_size
    if not -nblocks <= i < nblocks:
        raise ShapeError(f"block index {i} out of range: the data holds {nblocks} {f.name} blocks")
    i %= nblocks
    block = flat[i * f.type_size:(i + 1) * f.type_size]
    out = {"format": f.name, "index": i, "bytes": block.copy()}
    out.update(f.impl("reference", "inspect")(block))
    if "values" not in out:
        out["values"] = dequantize(block, f, impl="reference").reshape(-1)
    return out


def default_threads() -> int:
    return os.cpu_count() or 1
