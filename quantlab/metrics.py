"""How far is the reconstruction from the original? The error measures every lesson uses.

All functions take the original ``x`` and the reconstruction ``y`` (any shapes that broadcast; usually
the same shape) and compute in float64, so the measure itself adds no rounding worth mentioning.

    >>> x = quantlab.data.tensors("minilm")["encoder.layer.0.output.dense.weight"]
    >>> y = quantlab.dequantize(quantlab.quantize(x, "Q4_0"), "Q4_0")
    >>> quantlab.metrics.report(x, y)          # {'rmse': ..., 'sqnr_db': ..., 'cosine': ..., ...}

Definitions (e = y - x, n = number of elements):

* ``rmse``            sqrt(mean(e**2))
* ``relative_error``  ||e|| / ||x||  (the RMSE measured in units of the RMS weight)
* ``sqnr_db``         10 log10(sum(x**2) / sum(e**2)): signal-to-quantization-noise ratio in dB;
                      each extra bit of a uniform quantizer adds about 6.02 dB
* ``cosine``          <x, y> / (||x|| ||y||)
* ``max_error``       max |e|
"""

from __future__ import annotations

import math

import numpy as np

from .errors import ShapeError

__all__ = [
    "rmse",
    "weighted_rmse",
    "relative_error",
    "sqnr_db",
    "cosine",
    "max_error",
    "mean_abs_error",
    "report",
    "histogram",
    "error_histogram",
    "uniform_noise_rmse",
    "DB_PER_BIT",
]

#: dB of SQNR gained per extra bit of a uniform quantizer: 20 log10(2)
DB_PER_BIT = 20.0 * math.log10(2.0)


def _pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    try:
        a, b = np.broadcast_arrays(a, b)
    except ValueError:
        raise ShapeError(
            f"cannot compare arrays of shapes {np.shape(x)} and {np.shape(y)}: "
            f"the reconstruction must have the original's shape"
        ) from None
    if a.size == 0:
        raise ShapeError("cannot measure an error on empty arrays")
    return a, b


def rmse(x, y) -> float:
    """Root-mean-square error sqrt(mean((y - x)**2))."""
    a, b = _pair(x, y)
    return float(np.sqrt(np.mean((b - a) ** 2)))


def weighted_rmse(x, y, weights) -> float:
    """sqrt(mean(weights * (y - x)**2)), ``weights`` broadcast along the last axis: with an importance
    matrix (one weight per column) this is the error an imatrix-aware quantizer minimises."""
    a, b = _pair(x, y)
    wt = np.asarray(weights, dtype=np.float64)
    if wt.ndim != 1 or wt.shape[0] != a.shape[-1]:
        raise ShapeError(f"weights must hold one value per column: expected ({a.shape[-1]},), got {wt.shape}")
    return float(np.sqrt(np.mean(wt * (b - a) ** 2)))


def mean_abs_error(x, y) -> float:
    a, b = _pair(x, y)
    return float(np.mean(np.abs(b - a)))


def max_error(x, y) -> float:
    """Largest absolute error max|y - x|."""
    a, b = _pair(x, y)
    return float(np.max(np.abs(b - a)))


def relative_error(x, y) -> float:
    """||y - x|| / ||x|| (0 = perfect; 1 = as large as the signal itself). inf if x is all zeros and y is not."""
    a, b = _pair(x, y)
    num = float(np.sqrt(np.sum((b - a) ** 2)))
    den = float(np.sqrt(np.sum(a**2)))
    if den == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return num / den


def sqnr_db(x, y) -> float:
    """Signal-to-quantization-noise ratio 10 log10(sum x² / sum (y-x)²) in dB (inf for a perfect copy)."""
    a, b = _pair(x, y)
    sig = float(np.sum(a**2))
    noise = float(np.sum((b - a) ** 2))
    if noise == 0.0:
        return math.inf
    if sig == 0.0:
        return -math.inf
    return 10.0 * math.log10(sig / noise)


def cosine(x, y) -> float:
    """Cosine similarity of the flattened arrays (1 = same direction). 1.0 if both are all zeros."""
    a, b = _pair(x, y)
    na = float(np.sqrt(np.sum(a**2)))
    nb = float(np.sqrt(np.sum(b**2)))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.sum(a * b)) / (na * nb)


def report(x, y) -> dict:
    """All measures at once: rmse, relative_error, sqnr_db, cosine, max_error, mean_abs_error."""
    return {
        "rmse": rmse(x, y),
        "relative_error": relative_error(x, y),
        "sqnr_db": sqnr_db(x, y),
        "cosine": cosine(x, y),
        "max_error": max_error(x, y),
        "mean_abs_error": mean_abs_error(x, y),
    }


def histogram(values, bins: int = 100, range=None, log: bool = False):
    """Histogram of the finite values as (counts, edges). ``log=True`` bins |values| on a log scale
    (zeros are left out), which is how float formats see numbers."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    v = v[np.isfinite(v)]
    if bins < 1:
        raise ShapeError(f"a histogram needs at least one bin, got bins={bins}")
    if log:
        v = np.abs(v)
        v = v[v > 0]
        if v.size == 0:
            return np.zeros(bins, dtype=np.int64), np.logspace(-1, 0, bins + 1)
        lo, hi = (np.log10(v.min()), np.log10(v.max())) if range is None else np.log10(range)
        if hi <= lo:
            hi = lo + 1e-6
        return np.histogram(v, bins=np.logspace(lo, hi, bins + 1))
    return np.histogram(v, bins=bins, range=range)


def error_histogram(x, y, bins: int = 100):
    """Histogram of the signed errors y - x, as (counts, edges), symmetric around 0."""
    a, b = _pair(x, y)
    e = (b - a).reshape(-1)
    m = float(np.max(np.abs(e)))
    if m == 0.0:
        m = 1e-12
    return np.histogram(e, bins=bins, range=(-m, m))


def uniform_noise_rmse(step) -> float:
    """The textbook prediction for the RMSE of rounding to a grid of spacing ``step``: Δ/√12.

    It assumes the error is spread evenly over [-Δ/2, Δ/2], which holds when many grid steps fall
    inside the spread of the weights and nothing is clipped."""
    return float(step) / math.sqrt(12.0)
