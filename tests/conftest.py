"""Helpers shared by the test files (pytest loads this first; import them as ``from .conftest import ...``)."""

from __future__ import annotations

import numpy as np


def assert_same(a, b, what: str, *, bits: bool = True) -> None:
    """``a`` and ``b`` have the same shape and the same values, else one line naming ``what``, how many
    elements differ and the first. ``bits=True`` compares floats by their bits (-0.0 is not 0.0, NaN
    payloads count: what "byte-exact" means); ``bits=False`` compares values (numpy's ==)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    if bits and a.dtype == b.dtype and a.dtype.kind == "f":
        as_int = np.dtype(f"u{a.dtype.itemsize}")
        a, b = a.view(as_int), b.view(as_int)
    if not np.array_equal(a, b):
        bad = np.argwhere(a != b)
        first = tuple(bad[0])
        raise AssertionError(f"{what}: {len(bad)} differ, first at {first}: {a[first]} != {b[first]}")


def default_signals() -> None:
    """preexec_fn for a child that is to be signalled: SIGHUP, SIGINT and SIGTERM back to their default
    action. A test run under nohup (SIGHUP ignored) or as a background job (SIGINT ignored) passes the
    ignore on to its children, and quantlab rightly keeps a signal its parent chose to ignore (the
    fresh-clone run under nohup saw `quantize` finish with exit 0 after its SIGHUP)."""
    import signal

    for s in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_DFL)
