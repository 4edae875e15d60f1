"""The public quantize / dequantize / inspect_block API (mirrors ``gguf.quants``: works on the last axis).

All validation lives here, once, so reference functions and numba kernels receive clean inputs:
a C-contiguous float32 2-D array whose row length is a multiple of the block size, finite where the
format cannot hold NaN/Inf, and an imatrix of the right length.
"""

from __future__ import annotations

import contextlib
import math
import warnings

import numpy as np

from .errors import (
    ArgumentError,
    FormatError,
    ImatrixError,
    ImatrixRequired,
    NonFiniteError,
    QuantizationWarning,
    ShapeError,
)
from .formats.registry import Format, get
from .kernels import _rows

__all__ = ["quantize", "dequantize", "inspect_block", "row_bytes"]

_IMATRIX_HELP = (
    "An importance matrix (imatrix) says, for every input column of a weight matrix, how large the "
    "activations that multiply it are on real text (the mean of their squares). The {name} search needs "
    "it to decide which weights matter. Compute one with quantlab.model.compute_imatrix(model, text) or "
    "`quantlab imatrix MODEL --text FILE -o OUT`, or load one written by llama-imatrix, then pass "
    "imatrix=... (one non-negative float per column, {n} here)."
)


def _format(fmt) -> Format:
    """The format argument: a name, a ggml type id (int), a :class:`Format` or a ``gguf`` enum member
    (an ``IntEnum``). Floats and bools are refused: ``2.9`` or ``True`` meaning Q4_0 / F16 is a bug."""
    if isinstance(fmt, (bool, np.bool_)) or not isinstance(fmt, (str, int, np.integer, Format)):
        raise FormatError(
            f"a format is a name like 'Q4_K', a ggml type id (int), a quantlab Format or a "
            f"gguf.GGMLQuantizationType; got {fmt!r} ({type(fmt).__name__})"
        )
    return get(fmt)


def _thread_count(threads) -> int | None:
    """``threads``: None (all cores) or a positive integer."""
    if threads is None:
        return None
    if isinstance(threads, (bool, np.bool_)) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ArgumentError(f"threads must be a positive integer (or None for all cores), got {threads!r}")
    return int(threads)


def _impl(impl) -> str:
    if not isinstance(impl, str) or impl not in ("fast", "reference"):
        raise FormatError(f"impl must be 'fast' (numba) or 'reference' (numpy), got {impl!r}")
    return impl


def _array(x, what: str) -> np.ndarray:
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as e:  # ragged nested lists and the like
        raise ShapeError(f"{what} must be an array (or something numpy turns into one): {e}") from None


def _as_float_rows(x, fmt: Format) -> tuple[np.ndarray, tuple]:
    a = _array(x, "the weights")
    if a.dtype.kind != "f":
        raise ShapeError(
            f"quantize expects floating-point weights (float32, float16 or float64), got an array of dtype {a.dtype}"
        )
    if a.ndim == 0:
        raise ShapeError("quantize expects at least a 1-D array of weights, got a scalar")
    n = a.shape[-1]
    if n % fmt.block_size:
        hint = ""
        if fmt.block_size == 256:
            hint = (
                " K-quants and most IQ types use super-blocks of 256; for rows like this use a "
                "32-block format such as Q4_0, Q5_0, Q8_0 or IQ4_NL (llama.cpp falls back the same way)"
            )
        raise ShapeError(
            f"{fmt.name} quantizes rows in blocks of {fmt.block_size} weights, but the last "
            f"axis has {n} values ({n} % {fmt.block_size} = {n % fmt.block_size}).{hint}"
        )
    lead = a.shape[:-1]
    rows = np.ascontiguousarray(a.reshape(math.prod(lead), n), dtype=np.float32)
    return rows, lead


def _value_range(rows: np.ndarray, fmt: Format) -> tuple[float, float]:
    """(min, max) of the weights, in two passes without a temporary; NaN/inf where the format cannot
    hold them raise NonFiniteError (the float formats keep them)."""
    if rows.size == 0:
        return 0.0, 0.0
    lo, hi = float(rows.min()), float(rows.max())
    if (math.isfinite(lo) and math.isfinite(hi)) or fmt.name in ("F32", "F16", "BF16", "F64"):
        return lo, hi
    fin = np.isfinite(rows)
    r, c = np.argwhere(~fin)[0]
    what = "NaN" if np.isnan(rows[r, c]) else "infinity"
    raise NonFiniteError(
        f"{fmt.name} cannot represent {what}: found {rows[r, c]} at row {r}, column {c} "
        f"({int((~fin).sum())} non-finite values in all); clean the weights first"
    )


def _warn_overflow(rows: np.ndarray, out: np.ndarray, fmt: Format, lo: float, hi: float, impl: str) -> None:
    """QuantizationWarning for the rows whose blocks came out as inf/NaN or all zeros because their
    weights are beyond what the format's scale can hold (``fmt.max_abs``). Cheap when nothing is near the
    limit (the caller's min/max); otherwise the rows beyond the limit are decoded and looked at."""
    limit = fmt.max_abs
    if not (max(-lo, hi) > limit or math.isnan(lo) or math.isnan(hi)):
        return
    a = np.abs(rows)
    a[~np.isfinite(a)] = 0.0  # NaN/inf kept by float formats are not overflows
    amax = a.max(axis=1)
    cand = np.flatnonzero(amax > limit)
    if cand.size == 0:
        return
    impl = impl if fmt.has_impl(impl, "dequantize") else "reference"
    with np.errstate(all="ignore"):
        y = fmt.impl(impl, "dequantize")(np.ascontiguousarray(out[cand]), rows.shape[1])
    x = rows[cand]
    bad = (~np.isfinite(y) & np.isfinite(x)).any(axis=1)
    bs = fmt.block_size
    if bs > 1:
        zero = (y.reshape(len(cand), -1, bs) == 0).all(axis=2) & (x.reshape(len(cand), -1, bs) != 0).any(axis=2)
        bad |= zero.any(axis=1)
    if not bad.any():
        return
    rows_bad = cand[bad]
    r = int(rows_bad[0])
    more = f" (and {rows_bad.size - 1} more rows)" if rows_bad.size > 1 else ""
    what = (
        f"beyond the {limit:.4g} that is its largest finite value: they became inf"
        if fmt.family == "floats"
        else f"beyond the {limit:.4g} its scales can hold: its blocks decode to inf/NaN or zeros (ggml writes the "
        "same bytes)"
    )
    warnings.warn(
        QuantizationWarning(
            f"{fmt.name}: row {r}{more} has weights up to {amax[r]:.4g} in magnitude, {what}. Scale the weights "
            "down, or use a format with a wider range (F32, BF16, Q8_K)"
        ),
        stacklevel=3,
    )


def _check_imatrix(imatrix, fmt: Format, n: int) -> np.ndarray | None:
    if imatrix is None:
        if fmt.requires_imatrix:
            raise ImatrixRequired(
                f"{fmt.name} cannot be quantized without an importance matrix. "
                + _IMATRIX_HELP.format(name=fmt.name, n=n)
            )
        return None
    im = np.asarray(imatrix)
    if im.dtype.kind not in "fiu":
        raise ImatrixError(f"the imatrix must be numeric (float32), got dtype {im.dtype}")
    im = np.ascontiguousarray(im, dtype=np.float32).reshape(-1) if im.ndim <= 1 else im
    if im.ndim != 1 or im.shape[0] != n:
        raise ImatrixError(
            f"the imatrix must hold one value per column: expected shape ({n},), got {tuple(np.shape(imatrix))}"
        )
    if not np.isfinite(im).all() or (im < 0).any():
        bad = np.flatnonzero(~np.isfinite(im) | (im < 0))[0]
        raise ImatrixError(
            f"imatrix values are means of squared activations, so finite and >= 0; found {im[bad]} at column {bad}"
        )
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


_thread_count_fns = _rows.numba_thread_fns  # numba's raw thread-count getter and setter


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
    f = _format(fmt)
    f.check_usable()
    impl, threads = _impl(impl), _thread_count(threads)
    rows, lead = _as_float_rows(x, f)
    lo, hi = _value_range(rows, f)
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
    _warn_overflow(rows, out, f, lo, hi, impl)
    return out.reshape(*lead, out.shape[-1])


def _as_byte_rows(data, f: Format) -> tuple[np.ndarray, tuple, int]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = np.frombuffer(data, dtype=np.uint8)
    a = _array(data, "the quantized data")
    if a.dtype != np.uint8:
        raise ShapeError(f"dequantize expects the raw bytes as a uint8 array, got dtype {a.dtype}")
    if a.ndim == 0:
        raise ShapeError("dequantize expects a uint8 array of blocks, got a scalar")
    rb = a.shape[-1]
    if rb % f.type_size:
        raise ShapeError(
            f"{f.name} blocks are {f.type_size} bytes ({f.block_size} weights each), but the "
            f"last axis has {rb} bytes ({rb} % {f.type_size} = {rb % f.type_size}): "
            f"this is not {f.name} data, or it is truncated"
        )
    n = rb // f.type_size * f.block_size
    rows = a.reshape(math.prod(a.shape[:-1]), rb)
    if not rows.flags.c_contiguous:
        rows = np.ascontiguousarray(rows)
    return rows, a.shape[:-1], n


def dequantize(data, fmt, impl: str = "fast", threads: int | None = None) -> np.ndarray:
    """Decode ggml blocks (uint8, last axis = row bytes) to float32, identical to ggml's ``to_float``.
    Returns shape ``(*data.shape[:-1], n_per_row)``."""
    f = _format(fmt)
    f.check_usable()
    impl, threads = _impl(impl), _thread_count(threads)
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
    """Bytes of one row of ``n_per_row`` weights in ``fmt``."""
    if isinstance(n_per_row, (bool, np.bool_)) or not isinstance(n_per_row, (int, np.integer)) or n_per_row < 0:
        raise ArgumentError(f"n_per_row must be a non-negative integer, got {n_per_row!r}")
    return _format(fmt).row_bytes(int(n_per_row))


def inspect_block(data, fmt, i: int = 0) -> dict:
    """Decode block ``i`` (counting blocks in the flattened data) into its fields, for teaching:
    the raw bytes, the scales as stored and as applied, the codes, and the reconstructed weights."""
    f = _format(fmt)
    f.check_usable()
    if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
        raise ArgumentError(f"the block index must be an integer, got {i!r}")
    i = int(i)
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = np.frombuffer(data, dtype=np.uint8)
    a = _array(data, "the quantized data")
    if a.dtype != np.uint8:
        raise ShapeError(f"inspect_block expects raw uint8 bytes, got dtype {a.dtype}")
    flat = a.reshape(-1)
    if flat.size % f.type_size:
        raise ShapeError(f"{flat.size} bytes is not a whole number of {f.name} blocks ({f.type_size} bytes each)")
    nblocks = flat.size // f.type_size
    if not -nblocks <= i < nblocks:
        raise ShapeError(f"block index {i} out of range: the data holds {nblocks} {f.name} blocks")
    i %= nblocks
    block = flat[i * f.type_size : (i + 1) * f.type_size]
    out = {"format": f.name, "index": i, "bytes": block.copy()}
    out.update(f.impl("reference", "inspect")(block))
    if "values" not in out:
        out["values"] = dequantize(block, f, impl="reference").reshape(-1)
    return out
