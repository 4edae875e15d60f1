"""quantlab: see, byte by byte, what llama.cpp's quantization formats do — and do it, bit-exactly.

    >>> import quantlab, numpy as np
    >>> q = quantlab.quantize(np.random.randn(4, 256).astype("float32"), "Q4_0")
    >>> x = quantlab.dequantize(q, "Q4_0")
"""
# first: numba reads its cache directory when imported (quantlab/_cache.py: one for every entry point)
from . import _cache  # noqa: F401,I001
from . import errors
from .api import dequantize, inspect_block, quantize, row_bytes
from .formats import Format, all_formats
from .formats import get as format

__version__ = "0.1.0"

__all__ = ["quantize", "dequantize", "inspect_block", "row_bytes", "format", "formats", "Format",
           "all_formats", "errors", "open_gguf", "write_gguf"]


def formats(**kw):
    """All usable formats of the registry (see quantlab.formats.all_formats)."""
    return all_formats(**kw)


def open_gguf(path, **kw):
    from .gguf import open as _open
    return _open(path, **kw)


def write_gguf(path, metadata, tensors, **kw):
    from .gguf import write as _write
    return _write(path, metadata, tensors, **kw)
