"""The adversarial input set every format is tested on (shared by all families).

``float_cases(n_per_row)`` yields (name, array) with arrays of 1, 2 or 3 dimensions whose last axis is
``n_per_row``; ``imatrix_cases(n_per_row)`` yields (name, imatrix or None).
"""

from __future__ import annotations

import numpy as np

# (format, float case) pairs on which ggml_quantize_chunk itself aborts the process (a GGML_ASSERT inside
# the quantizer: with 1e30-magnitude weights every weighted error of a grid-neighbour search overflows
# float32), whatever the imatrix. The parity test then expects quantlab.errors.QuantizationError instead
# of calling the oracle; tests/test_iq_b.py checks in a subprocess that ggml really aborts on them.
GGML_ABORTS = {
    ("IQ2_XS", "huge"),
    ("IQ2_S", "huge"),
    ("IQ3_XXS", "huge"),
    ("IQ3_S", "huge"),
}  # IQ3: tests/test_iq_a.py checks the aborts


def float_cases(n: int, seeds=(0, 1, 2)):
    for s in seeds:
        rng = np.random.default_rng(s)
        yield f"student-t seed{s}", (rng.standard_t(3, size=(5, n)) * 0.02).astype(np.float32)
        yield f"gauss seed{s}", rng.standard_normal((4, n)).astype(np.float32)
    rng = np.random.default_rng(42)
    x = (rng.standard_normal((3, n)) * 0.05).astype(np.float32)
    x[0, n // 3] = 40.0
    x[1, 7] = -1000.0
    x[2, n - 1] = 3.0e4
    yield "outliers", x
    yield "zeros", np.zeros((3, n), np.float32)
    yield "constant", np.full((2, n), 0.37, np.float32)
    yield "constant-neg", np.full((2, n), -2.5, np.float32)
    yield "positive", np.abs(rng.standard_normal((3, n))).astype(np.float32) + 0.01
    yield "negative", -np.abs(rng.standard_normal((3, n))).astype(np.float32) - 0.01
    yield "tiny", (rng.standard_normal((2, n)) * 1e-30).astype(np.float32)
    yield "huge", (rng.standard_normal((2, n)) * 1e30).astype(np.float32)
    mixed = rng.standard_normal((3, n)).astype(np.float32)
    mixed[:, : n // 2] = 0.0  # half-zero rows: zero blocks next to live ones
    mixed[2, ::5] *= 1e4
    yield "half-zero", mixed
    blocks = (rng.integers(-8, 8, size=(3, n)) * 0.25).astype(np.float32)  # exact ties, repeated values
    yield "grid-ties", blocks
    yield "1-D", rng.standard_normal(n).astype(np.float32)
    yield "3-D odd rows", rng.standard_normal((3, 1, n)).astype(np.float32)
    yield "7 rows", (rng.laplace(size=(7, n)) * 0.1).astype(np.float32)


def imatrix_cases(n: int):
    rng = np.random.default_rng(7)
    yield "no imatrix", None
    yield "imatrix", (rng.random(n) * 2 + 0.1).astype(np.float32)
    im = (rng.random(n) * 3).astype(np.float32)
    im[::3] = 0.0
    yield "imatrix zeros", im
    yield "imatrix huge range", (10.0 ** rng.uniform(-8, 8, n)).astype(np.float32)
