"""Where each field of a block sits: one layout record per block format, like ggml's ``block_*`` structs.

Each record lists the fields of one block in storage order (name, bytes, C type), as ``ggml-common.h``
declares them; offsets follow (no padding: every ggml block struct is packed, which ggml asserts with
``static_assert(sizeof(block_x) == ...)``; ``tests/test_layout.py`` makes the same check against the
registry's type size, and checks the byte tables drawn in the reference docstrings against these records).

Kernels name offsets instead of writing ``o + 108``::

    from ..formats.layout import offsets, size
    Q3K_HMASK, Q3K_QS, Q3K_SCALES, Q3K_D = offsets("Q3_K", "hmask", "qs", "scales", "d")
    Q3K_SIZE = size("Q3_K")

Module-level ints in a kernel module are constants for numba (globals are frozen at compile time), so the
generated code is the same as with the bare numbers.

Where ggml keeps two things in one array, the record splits them as our docstrings and kernels read them:
IQ2_S ``qs[64]`` = ``qs[32]`` (grid indices) + ``signs[32]``; IQ3_XXS ``qs[96]`` = ``qs[64]`` (grid
indices) + ``sas[32]`` (scales and signs, 8 uint32); TQ1_0 keeps ggml's ``qs[48]``.
"""

from __future__ import annotations

from typing import NamedTuple

from ..errors import FormatError

__all__ = ["Field", "LAYOUTS", "layout", "offsets", "size"]


class Field(NamedTuple):
    name: str
    offset: int
    length: int  # bytes
    ctype: str  # the C element type in ggml's struct (ggml_half = fp16)


# format   field:bytes:ctype ...   (in storage order, as ggml-common.h)
_TABLE = """
Q4_0     d:2:ggml_half  qs:16:uint8_t
Q4_1     d:2:ggml_half  m:2:ggml_half  qs:16:uint8_t
Q5_0     d:2:ggml_half  qh:4:uint8_t  qs:16:uint8_t
Q5_1     d:2:ggml_half  m:2:ggml_half  qh:4:uint8_t  qs:16:uint8_t
Q8_0     d:2:ggml_half  qs:32:int8_t
Q8_1     d:2:ggml_half  s:2:ggml_half  qs:32:int8_t
Q1_0     d:2:ggml_half  qs:16:uint8_t
Q2_0     d:2:ggml_half  qs:16:uint8_t
Q2_K     scales:16:uint8_t  qs:64:uint8_t  d:2:ggml_half  dmin:2:ggml_half
Q3_K     hmask:32:uint8_t  qs:64:uint8_t  scales:12:uint8_t  d:2:ggml_half
Q4_K     d:2:ggml_half  dmin:2:ggml_half  scales:12:uint8_t  qs:128:uint8_t
Q5_K     d:2:ggml_half  dmin:2:ggml_half  scales:12:uint8_t  qh:32:uint8_t  qs:128:uint8_t
Q6_K     ql:128:uint8_t  qh:64:uint8_t  scales:16:int8_t  d:2:ggml_half
Q8_K     d:4:float  qs:256:int8_t  bsums:32:int16_t
IQ2_XXS  d:2:ggml_half  qs:64:uint16_t
IQ2_XS   d:2:ggml_half  qs:64:uint16_t  scales:8:uint8_t
IQ2_S    d:2:ggml_half  qs:32:uint8_t  signs:32:uint8_t  qh:8:uint8_t  scales:8:uint8_t
IQ3_XXS  d:2:ggml_half  qs:64:uint8_t  sas:32:uint32_t
IQ3_S    d:2:ggml_half  qs:64:uint8_t  qh:8:uint8_t  signs:32:uint8_t  scales:4:uint8_t
IQ1_S    d:2:ggml_half  qs:32:uint8_t  qh:16:uint16_t
IQ1_M    qs:32:uint8_t  qh:16:uint8_t  scales:8:uint8_t
IQ4_NL   d:2:ggml_half  qs:16:uint8_t
IQ4_XS   d:2:ggml_half  scales_h:2:uint16_t  scales_l:4:uint8_t  qs:128:uint8_t
TQ1_0    qs:48:uint8_t  qh:4:uint8_t  d:2:ggml_half
TQ2_0    qs:64:uint8_t  d:2:ggml_half
MXFP4    e:1:uint8_t  qs:16:uint8_t
NVFP4    d:4:uint8_t  qs:32:uint8_t
"""


def _parse() -> dict[str, tuple[Field, ...]]:
    out = {}
    for line in _TABLE.strip().splitlines():
        name, *specs = line.split()
        fields, o = [], 0
        for spec in specs:
            fname, n, ctype = spec.split(":")
            fields.append(Field(fname, o, int(n), ctype))
            o += int(n)
        out[name] = tuple(fields)
    return out


LAYOUTS: dict[str, tuple[Field, ...]] = _parse()


def layout(fmt: str) -> tuple[Field, ...]:
    """The fields of one block of ``fmt`` (a format name), in storage order."""
    try:
        return LAYOUTS[fmt]
    except KeyError:
        raise FormatError(f"no block layout for {fmt!r}; block formats: {', '.join(LAYOUTS)}") from None


def offsets(fmt: str, *names: str) -> tuple[int, ...]:
    """The byte offsets of the named fields of ``fmt``'s block, in the order asked."""
    by_name = {f.name: f.offset for f in layout(fmt)}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise FormatError(f"{fmt} has no field {', '.join(missing)}; fields: {', '.join(by_name)}")
    return tuple(by_name[n] for n in names)


def size(fmt: str) -> int:
    """Bytes of one block of ``fmt``: the sum of its fields (== the registry's type_size, tested)."""
    return sum(f.length for f in layout(fmt))
