"""llama.cpp's fallback format for a row that the chosen format's block does not divide (llama-quantize's
``tensor_type_fallback`` in ``llama-quant.cpp``). Here, below recipes and model, so both use it without
importing each other."""

from __future__ import annotations

from ..errors import FormatError
from .registry import Format, get

__all__ = ["fallback"]

_FALLBACK = {
    **{n: "IQ4_NL" for n in ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_XS")},
    **{n: "Q4_0" for n in ("Q2_0", "Q2_K", "Q3_K", "TQ1_0", "TQ2_0")},
    "Q4_K": "Q5_0",
    "Q5_K": "Q5_1",
    "Q6_K": "Q8_0",
}


def fallback(ne0: int, fmt: Format | str) -> tuple[Format, str | None]:
    """llama.cpp's fallback when a row (``ne[0]``) is not a multiple of the chosen format's block:
    a 32-block cousin, and F16 when even 32 does not divide the row. Returns (format, reason or None)."""
    fmt = get(fmt)
    if ne0 % fmt.block_size == 0:
        return fmt, None
    why = f"ne[0]={ne0} is not a multiple of {fmt.block_size} ({fmt.name})"
    if fmt.name in _FALLBACK:
        new = get(_FALLBACK[fmt.name])
    elif fmt.block_size <= 32:
        new = fmt
    else:
        raise FormatError(f"llama.cpp defines no fallback for {fmt.name}, and {why}")
    if ne0 % new.block_size:
        return get("F16"), f"{why}; even {new.name} does not fit -> F16"
    return new, f"{why} -> fallback {new.name}"
