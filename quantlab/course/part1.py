"""Exercises of notebooks 00-04 ("predict, then run"). Each function computes its expected answer from
quantlab (the format registry, the size calculator, the lesson tensors), so an answer follows the library.

Keys: "NN.k" = notebook NN, exercise k. Registered on import (``quantlab.course.exercises()`` imports this).

Every exercise is one declaration (``@exercise`` with its texts and tolerance, then its solver): the
repeated shape is the registry's, kept on purpose: one exercise reads top to bottom in one place.
"""

from __future__ import annotations

import math

from . import exercise

# -- 00 · start here -----------------------------------------------------------------------------------


@exercise(
    "00.1",
    "How many GB (10^9 bytes) does a 175B-parameter model take in FP32?",
    hint="FP32 is 4 bytes per weight; GB here is 10^9 bytes.",
    explain="175e9 x 4 bytes = 700 GB; the often-quoted 350 GB is FP16 (2 bytes per weight).",
    rel=0.01,
    unit="GB",
)
def _00_1():
    from .. import sizes

    return sizes.model_size(175e9, "F32")["GB"]


@exercise(
    "00.2",
    "Bits per weight of Q4_0 (32 weights: 4-bit codes + one fp16 scale)?",
    hint="Count the bytes of a block: 32 codes x 4 bits, plus 2 bytes of scale, divided by 32 weights.",
    explain="(16 + 2) bytes x 8 / 32 weights = 4.5 bits per weight.",
    abs=1e-9,
    unit="bpw",
)
def _00_2():
    from ..formats import get

    return get("Q4_0").bpw


@exercise(
    "00.3",
    "How many GB is Llama-2-7B (6.74B parameters) in Q8_0? Two decimals.",
    hint="Q8_0 stores 32 weights in 34 bytes (32 int8 codes + one fp16 scale): 8.5 bits per weight, not 8.",
    explain="6.738e9 x 8.5 / 8 = 7.16 GB: the fp16 scale per 32 weights adds 6 %; '~8 GB' or '7 GB' are both off.",
    rel=0.005,
    unit="GB",
)
def _00_3():
    from .. import sizes
    from ..widgets.size_calculator import PRESETS

    return sizes.model_size(PRESETS["Llama-2-7B (6.74B)"] * 1e9, "Q8_0")["GB"]


# -- 01 · bits and floats ------------------------------------------------------------------------------


@exercise(
    "01.1",
    "What does 0.1 become in FP8 E4M3 (round to nearest)?",
    hint="0.1 = 1.6 x 2^-4; E4M3 keeps 3 mantissa bits, so the steps near 0.1 are 2^-4 / 8 = 0.0078125.",
    explain="1.101 (binary) x 2^-4 = 1.625/16 = 0.1015625.",
    abs=5e-5,
)
def _01_1():
    from ..widgets.float_explorer import encode

    return encode(0.1, "E4M3")["stored"]


@exercise(
    "01.2",
    "The largest finite value of FP8 E4M3 (OCP E4M3FN)?",
    hint="The top exponent code is still a number in E4M3FN; only S.1111.111 is NaN. "
    "So the largest is 1.110 (binary) x 2^(15-7).",
    explain="1.75 x 2^8 = 448: E4M3 has no infinity, it spends those codes on numbers.",
    abs=1e-9,
)
def _01_2():
    from ..widgets.float_explorer import max_finite

    return max_finite("E4M3")


@exercise(
    "01.3",
    "How many distinct non-negative values does FP4 E2M1 have?",
    hint="1 sign bit + 3 bits (2 exponent, 1 mantissa): list them, 0 and the subnormal 0.5 included.",
    explain="0, 0.5, 1, 1.5, 2, 3, 4, 6: eight values; the sign doubles them (with a -0).",
    abs=0,
)
def _01_3():
    from ..widgets.float_explorer import positive_grid

    return int(positive_grid("E2M1")[0].size)


# -- 02 · scales and zero points -----------------------------------------------------------------------


@exercise(
    "02.1",
    "How many distinct codes does a symmetric 4-bit grid (-qmax..qmax) use out of the 16?",
    hint="qmax = 2^(4-1) - 1 = 7; count -7..7.",
    explain="15: the code -8 is never used, so the symmetric grid wastes a little of its 4 bits.",
    abs=0,
)
def _02_1():
    import numpy as np

    from ..widgets import toyquant
    from ..widgets._common import real_tensor

    r = toyquant.quantize_uniform(real_tensor(rows=64), 4, "symmetric", 100.0, "channel")
    return int(np.unique(r["q"]).size)


@exercise(
    "02.2",
    "Textbook rule: how many dB of SQNR does one more bit buy (20 log10 2)? Two decimals.",
    hint="One more bit halves the step; the noise RMSE is step/sqrt(12), so it halves too: 20 log10(2).",
    explain="20 log10(2) = 6.02 dB per bit.",
    abs=0.01,
    unit="dB",
)
def _02_2():
    return 20 * math.log10(2)


@exercise(
    "02.3",
    "A symmetric b-bit grid uses codes -qmax..qmax with qmax = 2^(b-1) - 1. From 4 to 8 bits, "
    "by how many dB per bit does the step shrink on average? Two decimals.",
    hint="The step is max|x| / qmax. qmax is 7 at 4 bits and 127 at 8 bits: the step shrinks by 127/7 over "
    "4 bits. Convert that ratio to dB (20 log10) and divide by 4.",
    explain="20 log10(127/7) / 4 = 6.29 dB per bit, more than 6.02: going from b to b+1 bits, qmax grows "
    "from 2^(b-1)-1 to 2^b-1, a bit more than doubling (7 -> 15 is x2.14). That is the ≈6.3 dB "
    "the notebook measures.",
    abs=0.02,
    unit="dB",
)
def _02_3():
    qmax = {b: 2 ** (b - 1) - 1 for b in (4, 8)}
    return 20 * math.log10(qmax[8] / qmax[4]) / 4


# -- 03 · group size -----------------------------------------------------------------------------------


@exercise(
    "03.1",
    "Overhead of one fp16 scale per 64 weights, in bits per weight?",
    hint="16 bits shared by 64 weights.",
    explain="16 / 64 = 0.25 bits per weight.",
    abs=1e-9,
    unit="bpw",
)
def _03_1():
    from ..widgets import toyquant

    return toyquant.overhead_bpw("symmetric", 4, 64)


def _outlier_4bit_groups():
    from ..widgets import toyquant
    from ..widgets._common import OUTLIER_TENSOR, real_tensor

    w = real_tensor(*OUTLIER_TENSOR, rows=128)
    return {
        g: toyquant.quantize_uniform(w, 4, "symmetric", 100.0, g)["sqnr_db"] for g in (4096, 1024, 256, 64, 32, 16, 8)
    }


@exercise(
    "03.2",
    "4-bit symmetric codes on the outlier tensor (the widget's default, 128 rows): what is the "
    "LARGEST group (weights per scale, among 4096, 1024, 256, 64, 32, 16, 8) that reaches SQNR >= 20 dB?",
    hint="Set the widget to 4 bits, symmetric, and move 'scale per' from the big groups down: its summary "
    "line gives the SQNR of each (the opening picture plots them too).",
    explain="32 weights per scale (4.5 bpw) is the first to pass 20 dB; it is the group size of Q4_0.",
    abs=0,
)
def _03_2():
    sq = _outlier_4bit_groups()
    return max(g for g, s in sq.items() if s >= 20.0)


@exercise(
    "03.3",
    "A Q6_K super-block holds 256 weights. How many sub-block scales does it store?",
    hint="Q6_K's sub-blocks are 16 weights long.",
    explain="256 / 16 = 16 scales (int8 each) under one fp16 super-scale d; Q4_K has 8 sub-blocks of 32.",
    abs=0,
)
def _03_3():
    from ..api import inspect_block, quantize
    from ..widgets._common import real_tensor

    q = quantize(real_tensor(rows=1), "Q6_K", impl="reference")
    return len(inspect_block(q, "Q6_K", 0)["scales"])


# -- 04 · block formats --------------------------------------------------------------------------------


@exercise(
    "04.1",
    "Q5_1 block: 32 weights, an fp16 scale d, an fp16 minimum m, 32 fifth bits (qh) and 32 "
    "4-bit low parts. Bits per weight?",
    hint="Bytes: 2 (d) + 2 (m) + 4 (qh) + 16 (low nibbles); times 8, divided by 32 weights.",
    explain="24 bytes x 8 / 32 = 6.0 bits per weight.",
    abs=1e-9,
    unit="bpw",
)
def _04_1():
    from ..formats import get

    return get("Q5_1").bpw


@exercise(
    "04.2",
    "How many bytes is one Q4_K super-block (256 weights)?",
    hint="d and dmin (fp16 each), 12 bytes of packed 6-bit scales and mins (8 + 8 of them), and 256 4-bit codes.",
    explain="2 + 2 + 12 + 128 = 144 bytes: 4.5 bits per weight.",
    abs=0,
    unit="bytes",
)
def _04_2():
    from ..formats import get

    return get("Q4_K").type_size


@exercise(
    "04.3",
    "IQ4_NL's 16 code values (kvalues) are int8 from -127 to 113. What is the SMALLEST gap "
    "between two neighbouring values?",
    hint="Print quantlab.formats._iqgrid.kvalues_iq4nl() and take differences.",
    explain="11 (between -10 and 1), near zero; at the ends the gaps are 23-24: a non-uniform grid, "
    "dense where a bell-shaped block of weights has most of its values.",
    abs=0,
)
def _04_3():
    import numpy as np

    from ..formats._iqgrid import kvalues_iq4nl

    return int(np.diff(kvalues_iq4nl().astype(int)).min())


@exercise(
    "04.4",
    "IQ2_XXS stores 8 weights' magnitudes as ONE index into a grid of points. How many points does the grid have?",
    hint="The index is one byte.",
    explain="256 points (an 8-bit index) out of the 3^8 = 6561 patterns of three levels per weight.",
    abs=0,
)
def _04_4():
    from ..formats._iqgrid import lattice

    return int(lattice("iq2xxs").size)
