"""Notebook 01: floating-point formats bit by bit — FP32, FP16, BF16, FP8 (E4M3, E5M2), FP4 (E2M1), E8M0.

Every format is described by a :class:`FloatSpec` (sign bit?, exponent bits, mantissa bits, bias, what
the all-ones exponent means). Values are decoded from their bit fields, and rounded to a format by
round-to-nearest, ties to the even code (the IEEE default):

    >>> enc = encode(0.1, "E4M3"); enc["bits"], enc["value"], enc["error"]
    ('0 0011 101', 0.1015625, 0.0015625...)
    >>> app = quantlab.widgets.float_explorer.app()       # type a number, see the fields

Overflow: formats with infinities (FP32, FP16, BF16, E5M2) round to ±inf past the largest value;
E4M3 and E2M1 have none and saturate to ±max (the conversion the OCP MX / NVFP4 scaled formats use).
E8M0 (the MXFP4 block scale) has no sign and no zero: it holds the powers of two 2^-127 .. 2^127.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import ipywidgets as W
import numpy as np

from .. import metrics
from ..errors import FormatError
from ..formats import _numerics as nm
from ._common import DEFAULT_TENSOR, App, contained, new_figure, real_tensor, show_figure


@dataclass(frozen=True)
class FloatSpec:
    name: str
    exp_bits: int
    man_bits: int
    bias: int
    signed: bool = True
    specials: str = "ieee"  # 'ieee': all-ones exponent = inf/NaN; 'fn': only S.1111.111 is NaN;
    # 'none': every code is a number; 'e8m0': 0xFF is NaN, no zero
    note: str = ""

    @property
    def bits(self) -> int:
        return int(self.signed) + self.exp_bits + self.man_bits


SPECS = {
    "FP32": FloatSpec("FP32", 8, 23, 127, note="IEEE binary32: training and the reference weights"),
    "FP16": FloatSpec("FP16", 5, 10, 15, note="IEEE binary16: precise, but only up to 65504"),
    "BF16": FloatSpec("BF16", 8, 7, 127, note="bfloat16: FP32's range, 8 bits of precision (top half of FP32)"),
    "E4M3": FloatSpec("E4M3", 4, 3, 7, specials="fn", note="FP8 (OCP E4M3FN): no infinity, max 448"),
    "E5M2": FloatSpec("E5M2", 5, 2, 15, note="FP8 (OCP E5M2): FP16's range, 3 bits of precision"),
    "E2M1": FloatSpec("E2M1", 2, 1, 1, specials="none", note="FP4: the 16 values of MXFP4 and NVFP4 codes"),
    "E8M0": FloatSpec(
        "E8M0", 8, 0, 127, signed=False, specials="e8m0", note="MXFP4's block scale: a bare power of two"
    ),
}


def spec(name) -> FloatSpec:
    if isinstance(name, FloatSpec):
        return name
    s = SPECS.get(str(name).upper())
    if s is None:
        raise FormatError(f"unknown float format {name!r}; known: {', '.join(SPECS)}")
    return s


def decode_code(code: int, fmt) -> float:
    """The value of one code (an integer holding the bits) of ``fmt``."""
    s = spec(fmt)
    code = int(code)
    if not 0 <= code < (1 << s.bits):
        raise FormatError(f"{s.name} codes are {s.bits}-bit integers (0..{(1 << s.bits) - 1}), got {code}")
    man = code & ((1 << s.man_bits) - 1)
    exp = (code >> s.man_bits) & ((1 << s.exp_bits) - 1)
    sign = (code >> (s.exp_bits + s.man_bits)) & 1 if s.signed else 0
    emax = (1 << s.exp_bits) - 1
    if s.specials == "e8m0":
        return math.nan if exp == emax else math.ldexp(1.0, exp - s.bias)
    if s.specials == "ieee" and exp == emax:
        return math.nan if man else (-math.inf if sign else math.inf)
    if s.specials == "fn" and exp == emax and man == (1 << s.man_bits) - 1:
        return math.nan
    if exp == 0:
        v = math.ldexp(man, 1 - s.bias - s.man_bits)  # subnormal: 0.m x 2^(1-bias)
    else:
        v = math.ldexp((1 << s.man_bits) + man, exp - s.bias - s.man_bits)  # normal: 1.m x 2^(e-bias)
    return -v if sign else v


@cache
def positive_grid(fmt) -> tuple[np.ndarray, np.ndarray]:
    """All finite non-negative values of a <= 16-bit format, sorted, with their codes (sign bit 0)."""
    s = spec(fmt)
    if s.bits > 16:
        raise FormatError(f"{s.name} has 2^{s.bits} codes; its grid is not enumerated")
    n = 1 << (s.exp_bits + s.man_bits)
    vals = np.array([decode_code(c, s) for c in range(n)], dtype=np.float64)
    codes = np.arange(n, dtype=np.int64)
    ok = np.isfinite(vals)
    vals, codes = vals[ok], codes[ok]
    order = np.argsort(vals, kind="stable")
    return vals[order], codes[order]


def max_finite(fmt) -> float:
    s = spec(fmt)
    if s.name == "FP32":
        return float(np.finfo(np.float32).max)
    return float(positive_grid(s)[0][-1])


def round_to(x, fmt) -> tuple[np.ndarray, np.ndarray]:
    """Round values to ``fmt``: (codes int64, values float64). Round to nearest, ties to the even code;
    overflow as described in the module docstring; NaN stays NaN."""
    s = spec(fmt)
    v = np.asarray(x, dtype=np.float64)
    if s.name == "FP32":
        with np.errstate(over="ignore"):
            f = v.astype(np.float32)
        return f.view(np.uint32).astype(np.int64), f.astype(np.float64)
    if s.name == "FP16":
        with np.errstate(over="ignore"):
            f = v.astype(np.float16)
        return f.view(np.uint16).astype(np.int64), f.astype(np.float64)
    if s.name == "BF16":
        with np.errstate(over="ignore"):
            b = nm.bf16_bits(v.astype(np.float32))
        return b.astype(np.int64), nm.from_bf16_bits(b).astype(np.float64)
    grid, gcodes = positive_grid(s)
    a = np.abs(v)
    neg = np.signbit(v) if s.signed else np.zeros(v.shape, dtype=bool)
    hi = np.clip(np.searchsorted(grid, a, side="left"), 0, len(grid) - 1)
    lo = np.clip(hi - 1, 0, len(grid) - 1)
    dlo, dhi = np.abs(a - grid[lo]), np.abs(grid[hi] - a)
    pick_hi = (dhi < dlo) | ((dhi == dlo) & (gcodes[hi] % 2 == 0))
    top = grid[-1]
    over = a > top
    idx = np.where(over, len(grid) - 1, np.where(pick_hi, hi, lo))  # saturate; 'ieee' may go to inf below
    codes, vals = gcodes[idx].copy(), grid[idx].copy()
    if s.specials == "ieee":
        ulp = grid[-1] - grid[-2]
        to_inf = a >= top + ulp / 2  # the tie goes to the (even) infinity code
        inf_code = ((1 << s.exp_bits) - 1) << s.man_bits
        codes = np.where(over & to_inf, inf_code, codes)
        vals = np.where(over & to_inf, np.inf, vals)
    sign_bit = 1 << (s.exp_bits + s.man_bits)
    if s.signed:
        codes = np.where(neg, codes | sign_bit, codes)
        vals = np.where(neg, -vals, vals)
    nan = np.isnan(v)
    if s.specials == "e8m0":
        nan = nan | (v <= 0)  # no sign, no zero: not representable
    if nan.any():
        if s.specials == "ieee":
            nan_code = (((1 << s.exp_bits) - 1) << s.man_bits) | (1 << (s.man_bits - 1))
        elif s.specials == "fn":
            nan_code = (1 << (s.exp_bits + s.man_bits)) - 1
        else:
            nan_code = 0xFF if s.specials == "e8m0" else 0
        codes = np.where(nan, nan_code, codes)
        vals = np.where(nan, np.nan if s.specials != "none" else 0.0, vals)
    return codes.astype(np.int64), vals.astype(np.float64)


def fields(code: int, fmt) -> dict:
    """Bit fields of one code: sign, exponent (biased and unbiased), mantissa, kind, formula."""
    s = spec(fmt)
    man = code & ((1 << s.man_bits) - 1)
    exp = (code >> s.man_bits) & ((1 << s.exp_bits) - 1)
    sign = (code >> (s.exp_bits + s.man_bits)) & 1 if s.signed else 0
    value = decode_code(code, s) if s.bits <= 16 else float(np.uint32(code).view(np.float32))
    emax = (1 << s.exp_bits) - 1
    if math.isnan(value):
        kind = "NaN"
    elif math.isinf(value):
        kind = "infinity"
    elif s.specials == "e8m0":
        kind = "power of two"
    elif exp == 0:
        kind = "zero" if man == 0 else "subnormal"
    else:
        kind = "normal"
    if kind == "normal":
        formula = f"(-1)^{sign} x 2^({exp}-{s.bias}) x (1 + {man}/{1 << s.man_bits})"
    elif kind in ("subnormal", "zero"):
        formula = f"(-1)^{sign} x 2^(1-{s.bias}) x ({man}/{1 << s.man_bits})"
    elif kind == "power of two":
        formula = f"2^({exp}-{s.bias})"
    else:
        formula = kind
    sb = str(sign) if s.signed else ""
    eb = format(exp, f"0{s.exp_bits}b")
    mb = format(man, f"0{s.man_bits}b") if s.man_bits else ""
    return {
        "sign": sign,
        "exponent": exp,
        "unbiased_exponent": (exp if exp else 1) - s.bias if kind != "power of two" else exp - s.bias,
        "mantissa": man,
        "kind": kind,
        "formula": formula,
        "bits": " ".join(p for p in (sb, eb, mb) if p),
        "sign_bits": sb,
        "exponent_bits": eb,
        "mantissa_bits": mb,
        "value": value,
        "emax": emax,
    }


def encode(x: float, fmt) -> dict:
    """Round one number to ``fmt``: its code, bit fields, the stored value and the rounding error."""
    s = spec(fmt)
    codes, vals = round_to(np.array([x], dtype=np.float64), s)
    code, stored = int(codes[0]), float(vals[0])
    out = fields(code, s)
    out.update(
        {"format": s.name, "input": float(x), "code": code, "hex": f"0x{code:0{(s.bits + 3) // 4}X}", "stored": stored}
    )
    if math.isfinite(stored) and math.isfinite(x):
        out["error"] = stored - float(x)
        out["relative_error"] = abs(stored - float(x)) / abs(float(x)) if x != 0 else 0.0
    else:
        out["error"] = math.nan
        out["relative_error"] = math.nan
    return out


def format_table() -> list[dict]:
    """One row per format: bits, exponent and mantissa bits, largest value, smallest normal, smallest
    positive value and decimal digits of precision ((mantissa bits + 1) x log10 2), from the bit layouts."""
    rows = []
    for name, s in SPECS.items():
        if s.bits <= 16:
            pos = positive_grid(s)[0]
            pos = pos[pos > 0]
            smallest = float(pos[0])
            normal = float(min(v for v in pos if encode(v, s)["kind"] in ("normal", "power of two")))
        else:
            smallest = float(np.nextafter(np.float32(0), np.float32(1)))
            normal = float(np.finfo(np.float32).tiny)
        rows.append(
            {
                "format": name,
                "bits": s.bits,
                "exp": s.exp_bits,
                "mant": s.man_bits,
                "max": max_finite(s),
                "min normal": normal,
                "min > 0": smallest,
                "decimal digits": (s.man_bits + 1) * math.log10(2),
            }
        )
    return rows


def cast_stats(w, fmt, scale: bool = False) -> dict:
    """Cast a whole tensor to ``fmt`` (optionally after a per-tensor scale that maps max|w| to the
    format's largest value, as FP8/FP4 are used in practice): rmse, sqnr, how many became 0 or saturated."""
    s = spec(fmt)
    a = np.asarray(w, dtype=np.float64).reshape(-1)
    k = 1.0
    if scale:
        amax = float(np.max(np.abs(a)))
        k = max_finite(s) / amax if amax > 0 else 1.0
        if s.specials == "e8m0":
            k = 1.0
    _, vals = round_to(a * k, s)
    y = vals / k
    fin = np.isfinite(y)
    y_f = np.where(fin, y, 0.0)
    return {
        "format": s.name,
        "scale": k,
        "flushed_to_zero": int(np.sum((y == 0) & (a != 0))),
        "non_finite": int(np.sum(~fin)),
        "saturated": int(np.sum(np.abs(a * k) > max_finite(s))),
        "rmse": metrics.rmse(a, y_f),
        "sqnr_db": metrics.sqnr_db(a, y_f),
        "n": int(a.size),
    }


# --------------------------------------------------------------------------------------------------
# the app
# --------------------------------------------------------------------------------------------------

_COLORS = {"sign": "#d9534f", "exp": "#2a7ab0", "man": "#3c9a3c"}


def _bits_html(f: dict) -> str:
    def cell(bits, color):
        return "".join(
            f"<span style='display:inline-block;width:14px;text-align:center;background:{color};"
            f"color:white;margin:1px;font-family:monospace'>{b}</span>"
            for b in bits
        )

    return (
        cell(f["sign_bits"], _COLORS["sign"])
        + "&nbsp;"
        + cell(f["exponent_bits"], _COLORS["exp"])
        + "&nbsp;"
        + cell(f["mantissa_bits"], _COLORS["man"])
    )


def _power_label(v, pos=None) -> str:
    """Tick label of a log axis as plain text, '1e-05' / '0.01' / '1' / '1e+38': no mathtext. (The default
    log formatter writes '$\\mathdefault{10^{-5}}$' strings that matplotlib parses with pyparsing at every
    redraw; one such parse in the widget raised a ParseException once in a live session, issue 19. Plain
    labels take that parser out of the widget's redraws.)"""
    if v <= 0:
        return ""
    e = math.log10(v)
    if abs(e - round(e)) > 1e-9:
        return ""  # label the decades only
    e = round(e)
    return f"{10.0**e:g}" if -3 <= e <= 3 else f"1e{e:+03d}"


def _plain_log_ticks(ax) -> None:
    # matplotlib: lazily, like _common.new_figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    span = math.log10(ax.get_xlim()[1]) - math.log10(max(ax.get_xlim()[0], 1e-300))
    step = max(1, math.ceil(span / 8))  # at most ~8 labelled decades: no overlapping labels
    ax.xaxis.set_major_locator(LogLocator(base=10.0**step, numticks=12))
    ax.xaxis.set_major_formatter(FuncFormatter(_power_label))
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_grids(ax, formats=("E2M1", "E4M3", "E5M2"), tensor=None) -> None:
    """The opening picture of notebook 01: every positive value of each small float format as a tick on a
    log axis (one row per format), over the histogram of a real tensor's |weights|."""
    ax.clear()
    colors = ["#d9534f", "#2a7ab0", "#3c9a3c", "#8e44ad"]
    for row, (name, c) in enumerate(zip(formats, colors)):
        g = positive_grid(name)[0]
        g = g[g > 0]
        ax.vlines(g, row + 0.1, row + 0.9, color=c, lw=1)
        ax.text(
            g.max() * 1.5,
            row + 0.5,
            f"{name}: {g.size} positive values, {g.min():.3g} .. {g.max():g}",
            va="center",
            fontsize=10,
            color=c,
        )
    if tensor is not None:
        a = np.abs(np.asarray(tensor, dtype=np.float64).reshape(-1))
        a = a[a > 0]
        h, edges = np.histogram(np.log10(a), bins=80)
        ax.fill_between(10 ** edges[:-1], -1.1, -1.1 + h / h.max(), step="post", color="#999999")
        ax.text(
            10 ** edges[0],
            -1.25,
            "|weights| of a real tensor (MiniLM), unscaled",
            fontsize=10,
            va="top",
            color="#555555",
        )
    ax.set_xscale("log")
    ax.set_xlim(1e-7, 1e8)
    ax.set_ylim(-1.6, len(formats) + 0.1)
    ax.set_yticks([])
    ax.set_xlabel("|value| (log scale)", fontsize=10)
    ax.tick_params(labelsize=10)
    _plain_log_ticks(ax)
    ax.set_title("Where the values of small float formats lie, and where real weights lie", fontsize=11)


class FloatExplorer(App):
    def __init__(self, value: float = 0.1, fmt: str = "E4M3", tensor=None):
        self.w = real_tensor(*DEFAULT_TENSOR) if tensor is None else np.asarray(tensor, dtype=np.float32)
        self.number = W.FloatText(value=value, description="number")
        self.fmt = W.ToggleButtons(options=list(SPECS), value=fmt, description="format")
        self.scaled = W.Checkbox(
            value=False,
            description="scale the tensor to the format's max first",
            indent=False,
            layout=W.Layout(width="auto"),
        )
        self.bits = W.HTML()
        self.table = W.HTML()
        self.grid_info = W.HTML()
        self.out = W.Output()
        self.fig, self.ax = new_figure(9.0, 3.6)
        self.result: dict = {}
        self.stats: dict = {}
        for wdg in (self.number, self.fmt, self.scaled):
            wdg.observe(self.update, names="value")
        self.box = W.VBox(
            [W.HBox([self.number]), self.fmt, self.bits, self.table, self.scaled, self.grid_info, self.out]
        )
        self.update()

    @contained
    def update(self, change=None):
        s = spec(self.fmt.value)
        r = encode(self.number.value, s)
        self.result = r
        self.bits.value = (
            f"<div class='ql-bits'><b>{s.name}</b> ({s.bits} bits: {int(s.signed)} sign, "
            f"{s.exp_bits} exponent, {s.man_bits} mantissa; bias {s.bias}) — {s.note}<br>"
            f"{_bits_html(r)} &nbsp; code {r['hex']}</div>"
        )
        self.table.value = (
            "<table class='ql-float' style='font-family:monospace'>"
            f"<tr><td>kind</td><td>{r['kind']}</td></tr>"
            f"<tr><td>formula</td><td>{r['formula']}</td></tr>"
            f"<tr><td>typed</td><td>{r['input']!r}</td></tr>"
            f"<tr><td>stored</td><td class='ql-stored'>{r['stored']!r}</td></tr>"
            f"<tr><td>error</td><td class='ql-error'>{r['error']:.6g} (relative {r['relative_error']:.3g})</td></tr>"
            "</table>"
        )
        self._plot(s)

    def _plot(self, s: FloatSpec):
        ax = self.ax
        ax.clear()
        a = np.abs(self.w.reshape(-1).astype(np.float64))
        st = cast_stats(self.w, s, scale=self.scaled.value)
        self.stats = st
        a = a * st["scale"]
        a = a[a > 0]
        lo = min(a.min(), 1e-3)
        hi = max(a.max(), 1.0)
        if s.bits <= 8:
            g = positive_grid(s)[0]
            g = g[g > 0]
            lo, hi = min(lo, g.min()), max(hi, g.max())
        bins = np.logspace(np.log10(lo) - 0.1, np.log10(hi) + 0.1, 120)
        ax.hist(a, bins=bins, color="#999999")
        ax.set_xscale("log")
        if s.bits <= 8:
            for v in g:
                ax.axvline(v, color=_COLORS["exp"], lw=0.6, alpha=0.7)
        else:
            mx = max_finite(s)
            tiny = math.ldexp(1.0, 1 - s.bias)
            for v, lab in ((tiny, "smallest normal"), (mx, "max")):
                if lo / 10 <= v <= hi * 10:
                    ax.axvline(v, color=_COLORS["sign"], lw=1.0)
                    ax.text(v, ax.get_ylim()[1] * 0.9, lab, fontsize=10, rotation=90, va="top")
        scaled = f" x {st['scale']:.3g}" if st["scale"] != 1 else ""
        ax.set_title(
            f"|weights| of the tensor{scaled} and the {s.name} "
            f"{'grid (blue lines)' if s.bits <= 8 else 'range (red lines)'}",
            fontsize=11,
        )
        ax.set_xlabel("|value| (log scale, no unit)", fontsize=10)
        ax.set_ylabel("weights per bin", fontsize=10)
        ax.tick_params(labelsize=10)
        _plain_log_ticks(ax)
        self.fig.tight_layout()
        self.grid_info.value = (
            f"<div class='ql-cast'>Casting all {st['n']:,} weights to {s.name}: SQNR "
            f"<b>{st['sqnr_db']:.1f} dB</b>, RMSE {st['rmse']:.3g}; {st['flushed_to_zero']:,} became 0, "
            f"{st['saturated']:,} past the largest value.</div>"
        )
        show_figure(self.out, self.fig)


def app(value: float = 0.1, fmt: str = "E4M3", tensor=None) -> FloatExplorer:
    return FloatExplorer(value, fmt, tensor)
