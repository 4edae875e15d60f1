"""ggml itself, through ctypes: the oracle of the tests and a peer in the benchmarks.

The library is llama.cpp's ``libggml-base`` as vendored in llama-cpp-python 0.3.36 (built by
``make oracle`` into ``.cache/oracle/lib``), or any ``libggml-base.so`` named by the environment variable
``QUANTLAB_GGML_LIB``. As a last resort the copy that the ``ggml-python`` package builds is used (ggml
0.15.3: it lacks Q2_0 and differs from llama.cpp in one IQ1_M detail). ``GGML.source`` says which one.
"""
from __future__ import annotations

import ctypes
import os
import pathlib
from functools import lru_cache

import numpy as np

from .errors import OracleMissing

_ROOT = pathlib.Path(__file__).resolve().parent.parent


class _Traits(ctypes.Structure):
    _fields_ = [("type_name", ctypes.c_char_p), ("blck_size", ctypes.c_int64),
                ("blck_size_interleave", ctypes.c_int64), ("type_size", ctypes.c_size_t),
                ("is_quantized", ctypes.c_bool), ("to_float", ctypes.c_void_p),
                ("from_float_ref", ctypes.c_void_p)]


_TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


def _candidates():
    env = os.environ.get("QUANTLAB_GGML_LIB")
    if env:
        yield env, "QUANTLAB_GGML_LIB"
    yield str(_ROOT / ".cache/oracle/lib/libggml-base.so"), "llama.cpp (llama-cpp-python 0.3.36)"
    try:
        import importlib.util
        spec = importlib.util.find_spec("ggml")
        if spec and spec.submodule_search_locations:
            for d in spec.submodule_search_locations:
                yield str(pathlib.Path(d) / "lib/libggml-base.so"), "ggml-python 0.0.45 (ggml 0.15.3)"
    except (ImportError, ValueError):
        pass


class GGML:
    """A loaded libggml-base: quantize (ggml_quantize_chunk), dequantize (type traits' to_float),
    block/type sizes and the imatrix requirement."""

    def __init__(self, path: str, source: str = ""):
        self.path, self.source = path, source
        lib = ctypes.CDLL(path)
        lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                            ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
        lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
        lib.ggml_blck_size.restype = ctypes.c_int64
        lib.ggml_blck_size.argtypes = [ctypes.c_int]
        lib.ggml_type_size.restype = ctypes.c_size_t
        lib.ggml_type_size.argtypes = [ctypes.c_int]
        lib.ggml_get_type_traits.restype = ctypes.POINTER(_Traits)
        lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
        self.lib = lib
        self.type_count = 43 if self._has_q2_0() else 42

    def _has_q2_0(self) -> bool:
        try:
            t = self.lib.ggml_get_type_traits(42).contents
            return bool(t.type_name) and t.type_name.decode() == "q2_0"
        except (ValueError, OSError):
            return False

    def blck_size(self, t: int) -> int:
        return int(self.lib.ggml_blck_size(t))

    def type_size(self, t: int) -> int:
        return int(self.lib.ggml_type_size(t))

    def type_name(self, t: int) -> str:
        return self.lib.ggml_get_type_traits(t).contents.type_name.decode()

    def requires_imatrix(self, t: int) -> bool:
        return bool(self.lib.ggml_quantize_requires_imatrix(t))

    def has_to_float(self, t: int) -> bool:
        return bool(self.lib.ggml_get_type_traits(t).contents.to_float)

    def quantize(self, x: np.ndarray, t: int, imatrix: np.ndarray | None = None) -> np.ndarray:
        """``ggml_quantize_chunk`` over all rows of a 2-D float32 array -> uint8 (nrows, row_bytes).
        Callers must not pass an imatrix-less request for a type that requires one (ggml aborts)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim == 1:
            x = x[None]
        nrows, n = x.shape
        rb = n // self.blck_size(t) * self.type_size(t)
        out = np.zeros((nrows, rb), dtype=np.uint8)
        im = None
        if imatrix is not None:
            imatrix = np.ascontiguousarray(imatrix, dtype=np.float32)
            im = imatrix.ctypes.data
        if self.requires_imatrix(t) and im is None:
            raise ValueError(f"ggml aborts when type {t} is quantized without an imatrix")
        self.lib.ggml_quantize_chunk(t, x.ctypes.data, out.ctypes.data, 0, nrows, n, im)
        return out

    def dequantize(self, q: np.ndarray, t: int, n_per_row: int) -> np.ndarray:
        tr = self.lib.ggml_get_type_traits(t).contents
        if not tr.to_float:
            raise ValueError(f"ggml has no to_float for type {t}")
        q = np.ascontiguousarray(q, dtype=np.uint8)
        nrows = q.size // (n_per_row // self.blck_size(t) * self.type_size(t))
        out = np.empty((nrows, n_per_row), dtype=np.float32)
        _TO_FLOAT(tr.to_float)(q.ctypes.data, out.ctypes.data, nrows * n_per_row)
        return out


@lru_cache(maxsize=None)
def ggml(required: bool = False) -> GGML | None:
    """The first ggml library found (see module doc); None, or OracleMissing when ``required``."""
    tried = []
    for path, source in _candidates():
        if os.path.exists(path):
            try:
                return GGML(path, source)
            except OSError as e:  # pragma: no cover - broken library file
                tried.append(f"{path}: {e}")
        else:
            tried.append(f"{path}: not found")
    if required:
        raise OracleMissing("no libggml-base found; run `make oracle` (builds llama.cpp's ggml from the "
                            "llama-cpp-python sdist) or set QUANTLAB_GGML_LIB. Tried:\n  " + "\n  ".join(tried))
    return None
