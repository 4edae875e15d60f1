"""llama.cpp's *file types* ("Q4_K_M", "IQ2_XXS", ...): a name for a whole-model recipe.

A file type is not a tensor format. ``Q4_K_M`` means "mostly Q4_K": a *default* ggml type plus a set of
rules (:mod:`quantlab.recipes.select`) that give some tensors more bits (attention V, ffn_down on some
layers, the output matrix) and fall back to a 32-block type where a row is not a multiple of 256.

The numbers are ``enum llama_ftype`` (stored in a GGUF file as ``general.file_type``). Block sizes and
bytes come from the format registry; this table only names the recipes.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import FormatError
from ..formats.registry import Format
from ..formats.registry import get as get_format

__all__ = ["FileType", "FILE_TYPES", "file_type", "all_file_types", "ALIASES"]

# value  CLI name    default   printed name (llama_ftype_name, without the "(guessed) " prefix)
_TABLE = """
0   F32         F32       all F32
1   F16         F16       F16
2   Q4_0        Q4_0      Q4_0
3   Q4_1        Q4_1      Q4_1
7   Q8_0        Q8_0      Q8_0
8   Q5_0        Q5_0      Q5_0
9   Q5_1        Q5_1      Q5_1
10  Q2_K        Q2_K      Q2_K - Medium
11  Q3_K_S      Q3_K      Q3_K - Small
12  Q3_K_M      Q3_K      Q3_K - Medium
13  Q3_K_L      Q3_K      Q3_K - Large
14  Q4_K_S      Q4_K      Q4_K - Small
15  Q4_K_M      Q4_K      Q4_K - Medium
16  Q5_K_S      Q5_K      Q5_K - Small
17  Q5_K_M      Q5_K      Q5_K - Medium
18  Q6_K        Q6_K      Q6_K
19  IQ2_XXS     IQ2_XXS   IQ2_XXS - 2.0625 bpw
20  IQ2_XS      IQ2_XS    IQ2_XS - 2.3125 bpw
21  Q2_K_S      Q2_K      Q2_K - Small
22  IQ3_XS      IQ3_S     IQ3_XS - 3.3 bpw
23  IQ3_XXS     IQ3_XXS   IQ3_XXS - 3.0625 bpw
24  IQ1_S       IQ1_S     IQ1_S - 1.5625 bpw
25  IQ4_NL      IQ4_NL    IQ4_NL - 4.5 bpw
26  IQ3_S       IQ3_S     IQ3_S - 3.4375 bpw
27  IQ3_M       IQ3_S     IQ3_S mix - 3.66 bpw
28  IQ2_S       IQ2_XS    IQ2_S - 2.5 bpw
29  IQ2_M       IQ2_S     IQ2_M - 2.7 bpw
30  IQ4_XS      IQ4_XS    IQ4_XS - 4.25 bpw
31  IQ1_M       IQ1_M     IQ1_M - 1.75 bpw
32  BF16        BF16      BF16
36  TQ1_0       TQ1_0     TQ1_0 - 1.69 bpw ternary
37  TQ2_0       TQ2_0     TQ2_0 - 2.06 bpw ternary
38  MXFP4_MOE   MXFP4     MXFP4 MoE
40  Q1_0        Q1_0      Q1_0
41  Q2_0        Q2_0      Q2_0
"""

# llama-quantize accepts these short names too.
ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}


@dataclass(frozen=True)
class FileType:
    """One ``llama_ftype``: its number, its CLI name, the ggml type most tensors get."""

    value: int
    name: str
    default_name: str
    description: str

    @property
    def default(self) -> Format:
        """The ggml format most tensors get (from the registry)."""
        return get_format(self.default_name)

    @property
    def is_quantized(self) -> bool:
        """F32/F16/BF16 file types only convert; the mixing heuristics run for quantized ones only."""
        return self.default.is_quantized

    def __str__(self) -> str:
        return self.name


def _parse() -> tuple[FileType, ...]:
    out = []
    for line in _TABLE.strip().splitlines():
        v, name, default, desc = line.split(None, 3)
        get_format(default)  # every default is a registered format
        out.append(FileType(int(v), name, default, desc.strip()))
    return tuple(out)


FILE_TYPES: tuple[FileType, ...] = _parse()
_BY_NAME = {f.name: f for f in FILE_TYPES}
_BY_VALUE = {f.value: f for f in FILE_TYPES}

_NOT_FILE_TYPES = {
    4: "4 (MOSTLY_Q4_1_SOME_F16) was removed from llama.cpp",
    5: "5 (Q4_2) was removed from llama.cpp",
    6: "6 (Q4_3) was removed from llama.cpp",
    33: "33 (Q4_0_4_4) was removed: use Q4_0, repacked at load time",
    34: "34 (Q4_0_4_8) was removed: use Q4_0, repacked at load time",
    35: "35 (Q4_0_8_8) was removed: use Q4_0, repacked at load time",
    39: "39 (NVFP4) exists as a file type but llama-quantize cannot produce it",
}


def all_file_types() -> list[FileType]:
    """Every file type llama-quantize can produce, in ``llama_ftype`` order."""
    return list(FILE_TYPES)


def file_type(ft: str | int | FileType) -> FileType:
    """Look a file type up by CLI name (case-insensitive, aliases Q3_K/Q4_K/Q5_K accepted), by its
    ``llama_ftype`` number, or pass a FileType through."""
    if isinstance(ft, FileType):
        return ft
    if isinstance(ft, str):
        s = ft.strip().upper()
        s = ALIASES.get(s, s)
        if s in _BY_NAME:
            return _BY_NAME[s]
        if s.lstrip("-").isdigit():
            return file_type(int(s))
        raise FormatError(
            f"unknown file type {ft!r}. A file type names a whole-model recipe as llama-quantize does; "
            f"known: {', '.join(f.name for f in FILE_TYPES)} (and the aliases "
            f"{', '.join(f'{a}={b}' for a, b in ALIASES.items())})"
        )
    try:
        v = int(ft)
    except (TypeError, ValueError):
        raise FormatError(f"a file type is a name like 'Q4_K_M' or a llama_ftype number, got {ft!r}") from None
    if v in _BY_VALUE:
        return _BY_VALUE[v]
    why = _NOT_FILE_TYPES.get(v, f"{v} is not a llama_ftype")
    raise FormatError(f"file type {why}; valid numbers: {', '.join(str(f.value) for f in FILE_TYPES)}")
