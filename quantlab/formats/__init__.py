"""What each ggml type is: the registry plus one numpy reference module per family.

``floats`` (F32 F16 BF16 F64 I8..I64) · ``legacy`` (Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q8_1 Q1_0 Q2_0) ·
``kquants`` (Q2_K..Q8_K) · ``iq4`` (IQ4_NL IQ4_XS) · ``iq3`` (IQ3_XXS IQ3_S) ·
``iq2`` (IQ2_XXS IQ2_XS IQ2_S) · ``iq1`` (IQ1_S IQ1_M) · ``ternary`` (TQ1_0 TQ2_0) · ``fp4`` (MXFP4 NVFP4).
``layout``: where each field of a block sits; ``fallback``: llama.cpp's fallback format for rows a block does not divide.
"""

from . import layout
from .registry import FORMATS, QK_K, Format, all_formats, get

__all__ = ["FORMATS", "QK_K", "Format", "all_formats", "get", "layout"]
