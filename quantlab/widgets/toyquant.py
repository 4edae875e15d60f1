"""Textbook integer quantizers for lessons 02 and 03 (not ggml formats: those live in quantlab.formats).

One function, :func:`quantize_uniform`, covers the whole design space the lessons move through:

* ``bits``       1..8 bits per code;
* ``scheme``     'symmetric' (absmax: codes -qmax..qmax times a scale d, qmax = 2^(b-1) - 1; zero is exact)
                 or 'asymmetric' (min/max: codes 0..2^b - 1, an integer zero point z so that
                 y = (q - z) * d; the range fits the data even when it is not centred on 0);
* ``clip``       percentile of the data the range must cover (100 = everything, min/max; 99.9 = let the
                 0.1 % most extreme values saturate so the other 99.9 % get a finer grid);
* ``group``      how many consecutive weights share one scale: 'tensor' (all of them), 'channel'
                 (one row = one output channel), or an integer group size (ggml: 32 or 256).

With 1 bit the symmetric grid above would hold only 0, so 1-bit symmetric means sign x mean|x|
(two levels ±d with d the mean absolute value, what ggml's Q1_0 does).

Cost in bits per weight: ``bits`` plus the per-group metadata spread over the group: a 16-bit (fp16)
scale, plus a ``bits``-bit zero point for the asymmetric scheme.
"""

from __future__ import annotations

import math

import numpy as np

from .. import metrics
from ..errors import ShapeError

SCALE_BITS = 16


def group_length(x: np.ndarray, group) -> int:
    """Number of consecutive weights (flattened row-major) sharing one scale."""
    a = np.asarray(x)
    if group == "tensor":
        return int(a.size)
    if group == "channel":
        return int(a.shape[-1])
    g = int(group)
    if g < 1 or a.size % g:
        raise ShapeError(f"a group size must divide the {a.size} weights of the tensor; {g} does not")
    return g


def overhead_bpw(scheme: str, bits: int, g: int) -> float:
    """Metadata bits per weight: an fp16 scale (and a ``bits``-bit zero point if asymmetric) per group of g."""
    extra = SCALE_BITS + (bits if scheme == "asymmetric" else 0)
    return extra / g


def quantize_uniform(x, bits: int = 4, scheme: str = "symmetric", clip: float = 100.0, group="tensor") -> dict:
    """Quantize ``x`` and return a dict: ``y`` (reconstruction, same shape), ``step`` (Δ of each group),
    ``q`` (codes), ``clipped`` (mask of saturated weights), ``bpw``, ``overhead_bpw``, ``group_length``,
    and the error measures of :mod:`quantlab.metrics` (rmse, sqnr_db, ...)."""
    a = np.asarray(x, dtype=np.float64)
    if a.size == 0:
        raise ShapeError("nothing to quantize: the tensor is empty")
    bits = int(bits)
    if not 1 <= bits <= 16:
        raise ShapeError(f"bits must be between 1 and 16, got {bits}")
    if scheme not in ("symmetric", "asymmetric"):
        raise ShapeError(f"scheme must be 'symmetric' or 'asymmetric', got {scheme!r}")
    if not 50.0 <= float(clip) <= 100.0:
        raise ShapeError(f"clip is the percentile of the data the range covers, 50..100; got {clip}")
    g = group_length(a, group)
    v = a.reshape(-1, g)
    if scheme == "symmetric":
        if bits == 1:
            d = np.mean(np.abs(v), axis=1, keepdims=True)
            q = np.where(v >= 0, 1, -1).astype(np.int64)
            y = q * d
            clipped = np.zeros(v.shape, dtype=bool)
            step = 2 * d[:, 0]
        else:
            qmax = 2 ** (bits - 1) - 1
            amax = (
                np.max(np.abs(v), axis=1, keepdims=True)
                if clip >= 100.0
                else np.percentile(np.abs(v), clip, axis=1, keepdims=True)
            )
            d = amax / qmax
            safe = np.where(d > 0, d, 1.0)
            r = np.rint(v / safe)
            clipped = np.abs(r) > qmax
            q = np.clip(r, -qmax, qmax).astype(np.int64)
            y = q * d
            step = d[:, 0]
    else:
        levels = 2**bits - 1
        if clip >= 100.0:
            lo, hi = np.min(v, axis=1, keepdims=True), np.max(v, axis=1, keepdims=True)
        else:
            lo = np.percentile(v, 100.0 - clip, axis=1, keepdims=True)
            hi = np.percentile(v, clip, axis=1, keepdims=True)
        lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)  # keep 0 inside the range: it must be exact
        d = (hi - lo) / levels
        safe = np.where(d > 0, d, 1.0)
        z = np.rint(-lo / safe)
        r = np.rint(v / safe) + z
        clipped = (r < 0) | (r > levels)
        q = np.clip(r, 0, levels).astype(np.int64)
        y = (q - z) * d
        step = d[:, 0]
    ov = overhead_bpw(scheme, bits, g)
    out = {
        "y": y.reshape(a.shape).astype(np.float32),
        "q": q.reshape(a.shape),
        "step": step,
        "clipped": clipped.reshape(a.shape),
        "group_length": g,
        "bits": bits,
        "scheme": scheme,
        "clip": float(clip),
        "overhead_bpw": ov,
        "bpw": bits + ov,
    }
    out.update(metrics.report(a, out["y"]))
    out.update(noise_law(a, out))
    return out


def noise_law(x, res: dict) -> dict:
    """Check the Δ/√12 law: on the weights that were not clipped, the measured RMSE against
    sqrt(mean(Δ²)/12) with each weight's own group step Δ."""
    a = np.asarray(x, dtype=np.float64).reshape(-1, res["group_length"])
    y = np.asarray(res["y"], dtype=np.float64).reshape(a.shape)
    keep = ~np.asarray(res["clipped"]).reshape(a.shape)
    steps = np.broadcast_to(np.asarray(res["step"], dtype=np.float64)[:, None], a.shape)
    if not keep.any():
        return {"predicted_rmse": math.nan, "measured_rmse_unclipped": math.nan, "law_ratio": math.nan}
    pred = float(np.sqrt(np.mean(steps[keep] ** 2) / 12.0))
    meas = float(np.sqrt(np.mean((y[keep] - a[keep]) ** 2)))
    return {
        "predicted_rmse": pred,
        "measured_rmse_unclipped": meas,
        "law_ratio": meas / pred if pred > 0 else math.nan,
        "clipped_fraction": float(1.0 - keep.mean()),
    }


GROUP_CHOICES = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


def frontier(
    x,
    scheme: str = "symmetric",
    bits_range=range(2, 9),
    groups=GROUP_CHOICES + ("channel", "tensor"),
    clip: float = 100.0,
) -> list[dict]:
    """Error vs bits per weight for every (bits, group) pair: dicts with bits, group, bpw, sqnr_db, rmse."""
    pts = []
    for b in bits_range:
        for gsz in groups:
            try:
                r = quantize_uniform(x, b, scheme, clip, gsz)
            except ShapeError:
                continue
            pts.append(
                {
                    "bits": b,
                    "group": gsz,
                    "group_length": r["group_length"],
                    "bpw": r["bpw"],
                    "sqnr_db": r["sqnr_db"],
                    "rmse": r["rmse"],
                }
            )
    return pts


def pareto(points: list[dict], x: str = "bpw", y: str = "sqnr_db") -> list[dict]:
    """The points no other point beats on both axes (fewer bits *and* higher SQNR), sorted by bits."""
    best = []
    for p in sorted(points, key=lambda p: (p[x], -p[y])):
        if not best or p[y] > best[-1][y]:
            best.append(p)
    return best
