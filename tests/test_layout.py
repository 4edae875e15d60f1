"""Block layout records (quantlab.formats.layout) against the registry and the reference docstrings:
ggml's static_assert(sizeof(block_x) == ...) as a test."""

import importlib
import re

import pytest

from quantlab.errors import FormatError
from quantlab.formats import all_formats, layout
from quantlab.formats.layout import LAYOUTS

BLOCK_FORMATS = [f for f in all_formats() if f.is_quantized]


def test_every_block_format_has_a_layout_and_no_other():
    assert sorted(LAYOUTS) == sorted(f.name for f in BLOCK_FORMATS)


@pytest.mark.parametrize("fmt", BLOCK_FORMATS, ids=lambda f: f.name)
def test_layout_adds_up_to_the_type_size(fmt):
    fields = layout.layout(fmt.name)
    assert layout.size(fmt.name) == fmt.type_size
    o = 0
    for f in fields:  # packed, in order, no overlap, no gap
        assert f.offset == o and f.length > 0
        o += f.length
    assert len({f.name for f in fields}) == len(fields)


def _docstring_byte_lines(fmt):
    doc = getattr(importlib.import_module(f"quantlab.formats.{fmt.family}"), f"quantize_{fmt.key}").__doc__
    return [ln.strip() for ln in doc.splitlines() if re.match(r"\s*byte\s", ln)]


@pytest.mark.parametrize("fmt", BLOCK_FORMATS, ids=lambda f: f.name)
def test_docstring_byte_table_agrees_with_the_layout(fmt):
    """Every field's first and last byte appear in the docstring's byte ruler, the ruler ends at the last
    byte of the block; where a line reads ``byte A .. B  name`` (the K-quants) it is exactly that field."""
    lines = _docstring_byte_lines(fmt)
    assert lines, f"quantize_{fmt.key} draws no byte table"
    numbers = set()
    for ln in lines:
        ruler = ln.split(":")[0]  # 'byte 0 1  2 .. 65: two uint32 per block (bytes 2+8b ..)'
        numbers |= {int(n) for n in re.findall(r"(?<![\w+])\d+(?![\w+])", ruler)}
        m = re.fullmatch(r"byte\s+(\d+)\s*\.\.\s*(\d+)\s+([a-z_]+)\b.*", ln)
        if m:
            a, b, name = int(m[1]), int(m[2]), m[3]
            assert (name, a, b - a + 1) in {(f.name, f.offset, f.length) for f in layout.layout(fmt.name)}
    for f in layout.layout(fmt.name):
        assert {f.offset, f.offset + f.length - 1} <= numbers, (f, sorted(numbers))
    assert max(numbers) == fmt.type_size - 1


def test_offsets_names_fields_and_refuses_unknown_ones():
    assert layout.offsets("Q3_K", "hmask", "qs", "scales", "d") == (0, 32, 96, 108)
    assert layout.offsets("Q2_K", "d", "dmin") == (80, 82)
    with pytest.raises(FormatError, match="Q3_K has no field dmin"):
        layout.offsets("Q3_K", "dmin")
    with pytest.raises(FormatError, match="no block layout for 'F32'"):
        layout.layout("F32")
