"""quantlab: see, byte by byte, what llama.cpp's quantization formats do — and do it, bit-exactly.

    >>> import quantlab, numpy as np
    >>> q = quantlab.quantize(np.random.randn(4, 256).astype("float32"), "Q4_0")
    >>> x = quantlab.dequantize(q, "Q4_0")

Every subpackage and module is reachable from here (``quantlab.gguf.open(...)``, ``quantlab.model.load``):
they are imported on first use (PEP 562), so ``import quantlab`` stays cheap.
"""

# first: numba reads its cache directory when imported (quantlab/_cache.py: one for every entry point)
from . import _cache  # noqa: F401,I001
import importlib

from . import errors
from .api import dequantize, inspect_block, quantize, row_bytes
from .formats import Format, all_formats
from .formats import get as format

__version__ = "0.1.0"

__all__ = [
    "quantize",
    "dequantize",
    "inspect_block",
    "row_bytes",
    "format",
    "Format",
    "all_formats",
    "errors",
    "open_gguf",
    "write_gguf",
]

# imported on first attribute access (errors, api and formats are imported above)
_SUBMODULES = frozenset(
    {
        "analogy",
        "bench",
        "cli",
        "cli_formats",
        "course",
        "data",
        "gguf",
        "kernels",
        "metrics",
        "model",
        "peers",
        "qat",
        "recipes",
        "sizes",
        "widgets",
    }
)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")  # also binds it on this package
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _SUBMODULES)


def open_gguf(path, **kw):
    # lazy: quantlab.gguf is ~20 ms that `import quantlab` does not pay
    from .gguf import open as _open

    return _open(path, **kw)


def write_gguf(path, metadata, tensors, **kw):
    # lazy: see open_gguf
    from .gguf import write as _write

    return _write(path, metadata, tensors, **kw)
