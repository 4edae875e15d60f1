"""Notebook 02: symmetric (absmax) vs asymmetric (min/max) integer quantization, and clipping.

>>> app = quantlab.widgets.scale_zero.app()
>>> app.bits.value = 3; app.result["sqnr_db"], app.result["law_ratio"]
"""

from __future__ import annotations

import ipywidgets as W
import numpy as np
from matplotlib.ticker import FuncFormatter, NullFormatter

from . import toyquant
from ._common import DEFAULT_TENSOR, TensorApp, contained, new_figure, show_figure


class ScaleZero(TensorApp):
    def __init__(
        self,
        tensor: str = DEFAULT_TENSOR[1],
        bits: int = 4,
        scheme: str = "symmetric",
        clip: float = 100.0,
        group="tensor",
        rows: int | None = 128,
    ):
        self._tensor_choice(tensor, rows)
        self.bits = W.IntSlider(value=bits, min=1, max=8, description="bits")
        self.scheme = W.ToggleButtons(options=["symmetric", "asymmetric"], value=scheme, description="scheme")
        self.clip = W.FloatSlider(
            value=clip, min=99.0, max=100.0, step=0.01, readout_format=".2f", description="clip pct"
        )
        self.group = W.Dropdown(options=["tensor", "channel"], value=group, description="scale per")
        self.summary = W.HTML()
        self.out = W.Output()
        self.fig, (self.ax_w, self.ax_e) = new_figure(11.0, 3.8, ncols=2)
        self.result: dict = {}
        for wdg in (self.bits, self.scheme, self.clip, self.group):
            wdg.observe(self.update, names="value")
        self.box = W.VBox(
            [self.tensor, W.HBox([self.bits, self.clip]), W.HBox([self.scheme, self.group]), self.summary, self.out]
        )
        self.update()

    @contained
    def update(self, change=None):
        r = toyquant.quantize_uniform(self.w, self.bits.value, self.scheme.value, self.clip.value, self.group.value)
        self.result = {k: v for k, v in r.items() if k not in ("y", "q", "clipped")}
        step = float(np.mean(r["step"]))
        self.summary.value = (
            f"<div class='ql-summary' style='font-family:monospace'>"
            f"{self.w.size:,} weights, {r['bits']}-bit {r['scheme']}, one scale per {self.group.value}, "
            f"clip at the {r['clip']:.2f} percentile<br>"
            f"RMSE <b class='ql-rmse'>{r['rmse']:.4g}</b> &nbsp; SQNR <b class='ql-sqnr'>{r['sqnr_db']:.2f} dB</b> "
            f"&nbsp; max error {r['max_error']:.3g} &nbsp; clipped {100 * r['clipped_fraction']:.3f} %<br>"
            f"step Δ = {step:.4g}: Δ/√12 predicts {r['predicted_rmse']:.4g}, measured on unclipped weights "
            f"{r['measured_rmse_unclipped']:.4g} (ratio <b class='ql-law'>{r['law_ratio']:.3f}</b>)</div>"
        )
        self._plot(r)

    def _plot(self, r):
        ax = self.ax_w
        ax.clear()
        v = self.w.reshape(-1)
        lim = float(np.percentile(np.abs(v), 99.99)) * 1.2
        ax.hist(v, bins=200, range=(-lim, lim), color="#999999")
        if self.group.value == "tensor":
            levels = np.unique(r["y"])
            for lv in levels[(levels >= -lim) & (levels <= lim)][:300]:
                ax.axvline(lv, color="#2a7ab0", lw=0.5, alpha=0.6)
        ax.set_title(f"weights (grey) and the {r['bits']}-bit grid (blue)", fontsize=11)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, pos=None: f"{v:g}"))  # 1, 10, 100: no mathtext
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("weight value", fontsize=10)
        ax.set_ylabel("weights per bin (log)", fontsize=10)
        ax.tick_params(labelsize=10)
        ax = self.ax_e
        ax.clear()
        e = (r["y"].astype(np.float64) - self.w).reshape(-1)
        keep = ~r["clipped"].reshape(-1)
        m = float(np.percentile(np.abs(e), 99.9)) * 1.5 or 1e-9
        ax.hist(e[keep], bins=100, range=(-m, m), color="#3c9a3c")
        ax.set_title("error y - x of the unclipped weights", fontsize=11)
        ax.set_xlabel("error (same unit as the weights)", fontsize=10)
        ax.set_ylabel("weights per bin", fontsize=10)
        ax.tick_params(labelsize=10)
        ax.xaxis.get_major_formatter().set_powerlimits((-3, 4))
        self.fig.tight_layout()
        show_figure(self.out, self.fig)


def app(**kw) -> ScaleZero:
    return ScaleZero(**kw)
