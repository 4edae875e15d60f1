"""ggml itself, through ctypes: the oracle of the tests and a peer in the benchmarks.

The library is llama.cpp's ``libggml-base`` as vendored in llama-cpp-python 0.3.36 (built by
``make oracle`` into ``.cache/oracle/lib``), or any ``libggml-base.so`` named by the environment variable
``QUANTLAB_GGML_LIB``. As a last resort the copy that the ``ggml-python`` package builds is used (ggml
0.15.3: it lacks Q2_0 and differs from llama.cpp in one IQ1_M detail). ``GGML.source`` says which one.

A library is asked which types it has before anything is called: ggml checks a type id only with
``assert`` (compiled out in release builds), so an id past the library's ``GGML_TYPE_COUNT`` reads past
its traits table, and ``ggml_quantize_chunk`` on such a type aborts the process (``GGML_ASSERT(result ==
nrows * row_size)``: what killed notebook 10's kernel with ggml-python's older library). The probe runs
in a child process (:func:`probe`): for each id in turn it reads the traits — name, block size, type
size, to_float, from_float_ref — and the parent keeps the ids whose name and sizes match the registry,
up to the first that does not (a crash of the child only ends the list there). ``GGML.supports(t)``
answers from that; quantize/dequantize/size calls on any other id raise :class:`OracleMissing` instead
of calling into the library.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import pathlib
import subprocess
import sys
from functools import cache

import numpy as np

from .errors import OracleMissing
from .formats.registry import FORMATS, get

_ROOT = pathlib.Path(__file__).resolve().parent.parent


class _Traits(ctypes.Structure):
    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", ctypes.c_void_p),
        ("from_float_ref", ctypes.c_void_p),
    ]


_TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


def _candidates():
    env = os.environ.get("QUANTLAB_GGML_LIB")
    if env:
        yield env, "QUANTLAB_GGML_LIB"
    yield str(_ROOT / ".cache/oracle/lib/libggml-base.so"), "llama.cpp (llama-cpp-python 0.3.36)"
    try:
        spec = importlib.util.find_spec("ggml")
        if spec and spec.submodule_search_locations:
            for d in spec.submodule_search_locations:
                yield str(pathlib.Path(d) / "lib/libggml-base.so"), "ggml-python 0.0.45 (ggml 0.15.3)"
    except (ImportError, ValueError):
        pass


_PROBE = r"""
import ctypes, sys
class T(ctypes.Structure):
    _fields_ = [("type_name", ctypes.c_char_p), ("blck_size", ctypes.c_int64),
                ("blck_size_interleave", ctypes.c_int64), ("type_size", ctypes.c_size_t),
                ("is_quantized", ctypes.c_bool), ("to_float", ctypes.c_void_p), ("from_float_ref", ctypes.c_void_p)]
lib = ctypes.CDLL(sys.argv[1])
lib.ggml_get_type_traits.restype = ctypes.POINTER(T)
lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
for t, want in enumerate(sys.argv[2:]):
    tr = lib.ggml_get_type_traits(t).contents
    name = ctypes.string_at(tr.type_name, 64).split(b"\0")[0].decode("ascii", "replace") if tr.type_name else ""
    name = "_".join(name.replace("|", " ").split()) or "-"
    print(t, name, tr.blck_size, tr.type_size, int(bool(tr.to_float)), int(bool(tr.from_float_ref)), sep="|",
          flush=True)
    if (want != "-") and name.upper() != want or (want == "-" and tr.blck_size != 0):
        break
"""


@cache
def probe(path: str) -> dict:
    """The types a libggml-base has: ``{id: (name, block size, type size, has to_float, has
    from_float_ref)}`` for the ids 0, 1, ... whose name and sizes match quantlab's registry, read in a
    child process (so reading past an older library's traits table cannot take this process down)."""
    names = [f.name if not f.removed else "-" for f in FORMATS]  # removed ids: any name, block size 0
    try:
        p = subprocess.run([sys.executable, "-c", _PROBE, path, *names], capture_output=True, text=True, timeout=60)
        lines = p.stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        lines = []
    have = {}
    for line in lines:
        t, name, bs, ts, tf, ff = line.split("|")
        f = FORMATS[int(t)]
        if f.removed:
            if int(bs) != 0:
                break
        elif name.upper() != f.name or int(bs) != f.block_size or int(ts) != f.type_size:
            break
        have[int(t)] = (name, int(bs), int(ts), tf == "1", ff == "1")
    return have


class GGML:
    """A loaded libggml-base: quantize (ggml_quantize_chunk), dequantize (type traits' to_float),
    block/type sizes and the imatrix requirement — for the types it has (``supports``), and only those."""

    def __init__(self, path: str, source: str = ""):
        self.path, self.source = path, source
        self.types = probe(path)
        lib = ctypes.CDLL(path)
        lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        lib.ggml_quantize_chunk.argtypes = [
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_int64,
            ctypes.c_int64,
            ctypes.c_int64,
            ctypes.c_void_p,
        ]
        lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
        lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
        lib.ggml_blck_size.restype = ctypes.c_int64
        lib.ggml_blck_size.argtypes = [ctypes.c_int]
        lib.ggml_type_size.restype = ctypes.c_size_t
        lib.ggml_type_size.argtypes = [ctypes.c_int]
        lib.ggml_get_type_traits.restype = ctypes.POINTER(_Traits)
        lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
        self.lib = lib
        self.type_count = len(self.types)  # ids 0 .. type_count-1, as probed

    def supports(self, t: int) -> bool:
        """True when the library has type ``t`` with the registry's name and sizes."""
        return int(t) in self.types

    def _need(self, t: int) -> int:
        t = int(t)
        if t not in self.types:
            try:
                name = get(t).name
            except Exception:  # noqa: BLE001 - any id: say it as a number
                name = f"type id {t}"
            raise OracleMissing(
                f"the ggml library {self.path} ({self.source}) has no {name}: it knows "
                f"{self.type_count} types; calling it with this one would abort the process"
            )
        return t

    def blck_size(self, t: int) -> int:
        return int(self.lib.ggml_blck_size(self._need(t)))

    def type_size(self, t: int) -> int:
        return int(self.lib.ggml_type_size(self._need(t)))

    def type_name(self, t: int) -> str:
        return self.lib.ggml_get_type_traits(self._need(t)).contents.type_name.decode()

    def requires_imatrix(self, t: int) -> bool:
        return bool(self.lib.ggml_quantize_requires_imatrix(self._need(t)))

    def has_to_float(self, t: int) -> bool:
        return int(t) in self.types and self.types[int(t)][3]

    def quantize(self, x: np.ndarray, t: int, imatrix: np.ndarray | None = None) -> np.ndarray:
        """``ggml_quantize_chunk`` over all rows of a 2-D float32 array -> uint8 (nrows, row_bytes).
        Callers must not pass an imatrix-less request for a type that requires one (ggml aborts)."""
        self._need(t)

        if get(t).activation_only or get(t).removed:
            raise ValueError(f"ggml_quantize_chunk has no case for {get(t).name} (it aborts)")
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
        tr = self.lib.ggml_get_type_traits(self._need(t)).contents
        if not tr.to_float:
            raise ValueError(f"ggml has no to_float for type {t}")
        q = np.ascontiguousarray(q, dtype=np.uint8)
        nrows = q.size // (n_per_row // self.blck_size(t) * self.type_size(t))
        out = np.empty((nrows, n_per_row), dtype=np.float32)
        _TO_FLOAT(tr.to_float)(q.ctypes.data, out.ctypes.data, nrows * n_per_row)
        return out


@cache
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
        raise OracleMissing(
            "no libggml-base found; run `make oracle` (builds llama.cpp's ggml from the "
            "llama-cpp-python sdist) or set QUANTLAB_GGML_LIB. Tried:\n  " + "\n  ".join(tried)
        )
    return None
