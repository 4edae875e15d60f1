"""GGUF files: read (memory-mapped, lazy, strict) and write (streaming, atomic, llama.cpp's layout).

    >>> with quantlab.gguf.open(quantlab.data.path("smollm2")) as f:
    ...     f.metadata["general.architecture"], f.metadata.type_of("llama.block_count")
    ...     w = f.tensors["blk.0.attn_q.weight"].dequantize()
    ...     quantlab.gguf.write("copy.gguf", f.metadata, f.tensors)     # byte-identical copy

See :mod:`quantlab.gguf.reader`, :mod:`quantlab.gguf.writer`, :mod:`quantlab.gguf.values` (metadata values,
both directions), :mod:`quantlab.gguf.constants`, and
``quantlab inspect FILE`` on the command line.
"""

from ..errors import GGUFError
from .constants import DEFAULT_ALIGNMENT, GGUF_VERSION, ArrayOf, Encoded, Keys, Value, ValueType, type_name
from .reader import GGUFFile, GGUFTensor, Metadata, MetadataDict, open
from .values import infer_type
from .writer import GGUFWriter, TensorSource, write

__all__ = [
    "open",
    "write",
    "GGUFWriter",
    "GGUFError",
    "GGUFFile",
    "GGUFTensor",
    "Metadata",
    "MetadataDict",
    "TensorSource",
    "Value",
    "Encoded",
    "ValueType",
    "ArrayOf",
    "Keys",
    "type_name",
    "infer_type",
    "DEFAULT_ALIGNMENT",
    "GGUF_VERSION",
]
