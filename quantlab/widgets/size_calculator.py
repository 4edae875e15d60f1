"""Notebook 00: the model-size calculator. Parameters x format -> bytes, GB, GiB, with the block-scale
overhead that the name of a format hides.

    >>> app = quantlab.widgets.size_calculator.app()      # in a notebook: the last line shows it
    >>> app.params.value = 70; app.fmt.value = "Q4_K"; app.result["GB"]
"""
from __future__ import annotations

import ipywidgets as W

from .. import sizes
from ..formats import all_formats
from ._common import App, html_table

#: well-known parameter counts (billions)
PRESETS = {
    "SmolLM2-135M (134.5M)": 0.134515008,
    "Llama-2-7B (6.74B)": 6.738415616,
    "Llama-2-13B (13.0B)": 13.015864320,
    "Llama-2-70B (69.0B)": 68.976648192,
    "GPT-3 (175B)": 175.0,
    "Llama-3.1-405B (405.9B)": 405.853388800,
}


def storable_formats() -> list[str]:
    """Formats a model file can hold (no activation-only types, no integer types)."""
    return [f.name for f in all_formats(include_activation=False) if f.name not in ("I8", "I16", "I32", "I64")]


class SizeCalculator(App):
    def __init__(self, params_billion: float = 6.738415616, fmt: str = "Q4_0"):
        self.preset = W.Dropdown(options=["(custom)"] + list(PRESETS), value="(custom)", description="model")
        self.params = W.BoundedFloatText(value=params_billion, min=0.0, max=100000.0, step=0.1,
                                         description="params (B)")
        self.fmt = W.Dropdown(options=storable_formats(), value=fmt, description="format")
        self.summary = W.HTML()
        self.table = W.HTML()
        self.result: dict = {}
        self.preset.observe(self._on_preset, names="value")
        self.params.observe(self.update, names="value")
        self.fmt.observe(self.update, names="value")
        self.box = W.VBox([W.HBox([self.preset, self.params, self.fmt]), self.summary, self.table])
        self.update()

    def _on_preset(self, change=None):
        if self.preset.value in PRESETS:
            self.params.value = PRESETS[self.preset.value]

    def update(self, change=None):
        p = self.params.value * 1e9
        r = sizes.model_size(p, self.fmt.value)
        self.result = r
        self.summary.value = (
            f"<div class='ql-size-summary' style='font-size:14px'><b>{self.params.value:g} B parameters in "
            f"{r['format']}</b>: {r['bpw']:.4g} bits per weight "
            f"({r['nominal_bits']:.4g} in the name + {r['overhead_bpw']:.4g} of block scales) &rarr; "
            f"<b>{r['GB']:,.3f} GB</b> = {r['GiB']:,.3f} GiB ({r['bytes']:,.0f} bytes)</div>")
        rows = sorted(sizes.size_table(p), key=lambda d: -d["bpw"])
        self.table.value = html_table(
            rows, ["format", "bpw", "nominal_bits", "overhead_bpw", "GB", "GiB"],
            fmt={"bpw": "{:.4f}", "nominal_bits": "{:.3g}", "overhead_bpw": "{:.4f}", "GB": "{:,.3f}",
                 "GiB": "{:,.3f}"},
            highlight=lambda d: d["format"] == r["format"])


def app(params_billion: float = 6.738415616, fmt: str = "Q4_0") -> SizeCalculator:
    return SizeCalculator(params_billion, fmt)
