"""GGUF constants: magic, versions, metadata value types, and the standard metadata keys.

Tensor types are NOT listed here: every ggml type id, block size and byte size comes from
:mod:`quantlab.formats.registry` (one table for the whole package).

A metadata value's GGUF type is described by a *type spec*:

* a :class:`ValueType` for a scalar (``ValueType.UINT32``, ``ValueType.STRING``, ...);
* an :class:`ArrayOf` for an array: ``ArrayOf(ValueType.STRING)`` is ``array[string]``. An array of
  arrays is ``ArrayOf(ValueType.ARRAY, items=(spec_0, spec_1, ...))``: every inner array carries its own
  element type and length in the file, so the spec keeps one per element.

The reader records the spec of every key (``f.metadata.type_of(key)``) and the writer uses it, so a file
read and written back keeps every key's type. :class:`Value` pins a type on a plain Python value.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

__all__ = [
    "GGUF_MAGIC",
    "GGUF_VERSION",
    "READ_VERSIONS",
    "DEFAULT_ALIGNMENT",
    "MAX_DIMS",
    "MAX_NAME",
    "ValueType",
    "ArrayOf",
    "TypeSpec",
    "Value",
    "Encoded",
    "type_name",
    "Keys",
]

GGUF_MAGIC = b"GGUF"  # bytes 0..3 of every GGUF file
GGUF_VERSION = 3  # what quantlab writes
READ_VERSIONS = (1, 2, 3)  # what quantlab reads (v1: 32-bit counts and lengths)
DEFAULT_ALIGNMENT = 32  # GGUF_DEFAULT_ALIGNMENT, used when general.alignment is absent
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NAME = 64  # GGML_MAX_NAME: llama.cpp needs tensor names shorter than this (NUL included)


class ValueType(enum.IntEnum):
    """The 13 metadata value types (``gguf_type`` in ggml's gguf.h), with their on-disk ids."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12

    @property
    def is_numeric(self) -> bool:
        return self not in (ValueType.STRING, ValueType.ARRAY)

    @property
    def size(self) -> int:
        """Bytes of one value (0 for STRING and ARRAY, whose size depends on the value)."""
        return _SIZE[self]

    @property
    def dtype_code(self) -> str:
        """numpy dtype code without byte order ('u4', 'f4', ...); BOOL is stored as one byte 0/1."""
        return _CODE[self]


_SIZE = {
    ValueType.UINT8: 1,
    ValueType.INT8: 1,
    ValueType.UINT16: 2,
    ValueType.INT16: 2,
    ValueType.UINT32: 4,
    ValueType.INT32: 4,
    ValueType.FLOAT32: 4,
    ValueType.BOOL: 1,
    ValueType.STRING: 0,
    ValueType.ARRAY: 0,
    ValueType.UINT64: 8,
    ValueType.INT64: 8,
    ValueType.FLOAT64: 8,
}
_CODE = {
    ValueType.UINT8: "u1",
    ValueType.INT8: "i1",
    ValueType.UINT16: "u2",
    ValueType.INT16: "i2",
    ValueType.UINT32: "u4",
    ValueType.INT32: "i4",
    ValueType.FLOAT32: "f4",
    ValueType.BOOL: "u1",
    ValueType.UINT64: "u8",
    ValueType.INT64: "i8",
    ValueType.FLOAT64: "f8",
}
# numpy dtype (kind, itemsize) -> value type, for inference from arrays and numpy scalars
DTYPE_TO_VALUE_TYPE = {
    ("u", 1): ValueType.UINT8,
    ("i", 1): ValueType.INT8,
    ("u", 2): ValueType.UINT16,
    ("i", 2): ValueType.INT16,
    ("u", 4): ValueType.UINT32,
    ("i", 4): ValueType.INT32,
    ("f", 4): ValueType.FLOAT32,
    ("b", 1): ValueType.BOOL,
    ("u", 8): ValueType.UINT64,
    ("i", 8): ValueType.INT64,
    ("f", 8): ValueType.FLOAT64,
}


@dataclass(frozen=True)
class ArrayOf:
    """Type spec of an array value: element type, and for arrays of arrays the spec of each element."""

    elem: ValueType
    items: tuple | None = None

    def __post_init__(self):
        object.__setattr__(self, "elem", ValueType(self.elem))
        if self.elem == ValueType.ARRAY:
            if self.items is None:
                raise ValueError("ArrayOf(ARRAY) needs items=(spec of each inner array, ...)")
            object.__setattr__(self, "items", tuple(self.items))
        elif self.items is not None:
            raise ValueError("items= is only meaningful for arrays of arrays")

    def __str__(self):
        return type_name(self)


TypeSpec = ValueType | ArrayOf


def type_name(spec) -> str:
    """A short readable name: 'uint32', 'string', 'array[string]', 'array[array]'."""
    if isinstance(spec, ArrayOf):
        if spec.elem == ValueType.ARRAY:
            inner = {type_name(s) for s in spec.items or ()}  # ARRAY: items is set (__post_init__)
            return f"array[{inner.pop()}]" if len(inner) == 1 else "array[array]"
        return f"array[{spec.elem.name.lower()}]"
    return ValueType(spec).name.lower()


@dataclass(frozen=True)
class Value:
    """A metadata value with an explicit GGUF type, e.g. ``Value(7, ValueType.UINT8)`` or
    ``Value([1, 2], ArrayOf(ValueType.INT64))``; plain values passed to the writer get an inferred type."""

    value: Any
    type: Any

    def __post_init__(self):
        t = self.type
        if not isinstance(t, ArrayOf):
            t = ValueType(int(t))
            if t == ValueType.ARRAY:
                raise ValueError("give an array's type as ArrayOf(element type), not ValueType.ARRAY")
        object.__setattr__(self, "type", t)


@dataclass(frozen=True)
class Encoded:
    """A metadata value kept as its GGUF bytes (v3, little-endian, without the type id) and its type.

    What :meth:`quantlab.gguf.Metadata.encoded` returns for a value copied unchanged from a file being
    read: the writer writes ``raw`` as it is, so a 49,152-string vocabulary is never decoded to Python
    strings and encoded back.
    """

    raw: bytes
    type: Any


class Keys:
    """Standard metadata keys (docs/gguf.md, gguf-py ``Keys``); ``{arch}`` is general.architecture."""

    ARCHITECTURE = "general.architecture"
    TYPE = "general.type"
    QUANTIZATION_VERSION = "general.quantization_version"
    ALIGNMENT = "general.alignment"
    FILE_TYPE = "general.file_type"
    NAME = "general.name"
    AUTHOR = "general.author"
    VERSION = "general.version"
    ORGANIZATION = "general.organization"
    BASENAME = "general.basename"
    FINETUNE = "general.finetune"
    DESCRIPTION = "general.description"
    QUANTIZED_BY = "general.quantized_by"
    SIZE_LABEL = "general.size_label"
    LICENSE = "general.license"
    URL = "general.url"
    TAGS = "general.tags"
    LANGUAGES = "general.languages"

    # hyper-parameters, prefixed with the architecture name
    CONTEXT_LENGTH = "{arch}.context_length"
    EMBEDDING_LENGTH = "{arch}.embedding_length"
    BLOCK_COUNT = "{arch}.block_count"
    FEED_FORWARD_LENGTH = "{arch}.feed_forward_length"
    HEAD_COUNT = "{arch}.attention.head_count"
    HEAD_COUNT_KV = "{arch}.attention.head_count_kv"
    LAYERNORM_RMS_EPS = "{arch}.attention.layer_norm_rms_epsilon"
    ROPE_DIMENSION_COUNT = "{arch}.rope.dimension_count"
    ROPE_FREQ_BASE = "{arch}.rope.freq_base"
    VOCAB_SIZE = "{arch}.vocab_size"
    EXPERT_COUNT = "{arch}.expert_count"
    EXPERT_USED_COUNT = "{arch}.expert_used_count"

    # tokenizer
    TOKENIZER_MODEL = "tokenizer.ggml.model"
    TOKENIZER_PRE = "tokenizer.ggml.pre"
    TOKENS = "tokenizer.ggml.tokens"
    TOKEN_TYPE = "tokenizer.ggml.token_type"
    SCORES = "tokenizer.ggml.scores"
    MERGES = "tokenizer.ggml.merges"
    BOS_ID = "tokenizer.ggml.bos_token_id"
    EOS_ID = "tokenizer.ggml.eos_token_id"
    EOT_ID = "tokenizer.ggml.eot_token_id"
    UNK_ID = "tokenizer.ggml.unknown_token_id"
    SEP_ID = "tokenizer.ggml.seperator_token_id"  # sic: llama.cpp spells it so
    PAD_ID = "tokenizer.ggml.padding_token_id"
    ADD_BOS = "tokenizer.ggml.add_bos_token"
    ADD_EOS = "tokenizer.ggml.add_eos_token"
    ADD_SPACE_PREFIX = "tokenizer.ggml.add_space_prefix"
    CHAT_TEMPLATE = "tokenizer.chat_template"

    # split files
    SPLIT_NO = "split.no"
    SPLIT_COUNT = "split.count"
    SPLIT_TENSORS_COUNT = "split.tensors.count"

    @staticmethod
    def arch(key: str, arch: str) -> str:
        """``Keys.arch(Keys.BLOCK_COUNT, "llama")`` -> ``"llama.block_count"``."""
        return key.format(arch=arch)
