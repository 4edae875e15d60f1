"""Notebook 03: per-tensor, per-channel and per-group scales; outliers; the error-vs-bpw frontier.

>>> app = quantlab.widgets.group_size.app()
>>> app.group.value = 32; app.result["bpw"], app.result["sqnr_db"]
"""

from __future__ import annotations

import ipywidgets as W

from . import toyquant
from ._common import OUTLIER_TENSOR, TensorApp, contained, new_figure, show_figure

GROUPS = ["tensor", "channel"] + [str(g) for g in reversed(toyquant.GROUP_CHOICES)]


class GroupSize(TensorApp):
    def __init__(
        self,
        tensor: str = OUTLIER_TENSOR[1],
        bits: int = 4,
        scheme: str = "symmetric",
        group: str = "channel",
        rows: int = 128,
    ):
        self._tensor_choice(tensor, rows)
        self.bits = W.IntSlider(value=bits, min=2, max=8, description="bits")
        self.scheme = W.ToggleButtons(options=["symmetric", "asymmetric"], value=scheme, description="scheme")
        # from the whole tensor down to 8 weights per scale, 'channel' (one row) at its place by size
        order = sorted(GROUPS, key=lambda g: -toyquant.group_length(self.w, self._group_value(g)))
        self.group = W.SelectionSlider(
            options=order,
            value=str(group),
            description="scale per",
            continuous_update=False,
            layout=W.Layout(width="480px"),
        )
        self.summary = W.HTML()
        self.out = W.Output()
        self.fig, self.ax = new_figure(9.0, 4.8)
        self.result: dict = {}
        self._frontiers: dict = {}
        for wdg in (self.bits, self.scheme, self.group):
            wdg.observe(self.update, names="value")
        self.box = W.VBox([self.tensor, W.HBox([self.bits, self.scheme]), self.group, self.summary, self.out])
        self.update()

    def frontier(self):
        key = (self.tensor.value, self.scheme.value)
        if key not in self._frontiers:
            self._frontiers[key] = toyquant.frontier(self.w, self.scheme.value)
        return self._frontiers[key]

    @staticmethod
    def _group_value(g: str):
        return g if g in ("tensor", "channel") else int(g)

    @contained
    def update(self, change=None):
        g = self._group_value(self.group.value)
        r = toyquant.quantize_uniform(self.w, self.bits.value, self.scheme.value, 100.0, g)
        self.result = {k: v for k, v in r.items() if k not in ("y", "q", "clipped", "step")}
        self.summary.value = (
            f"<div class='ql-summary' style='font-family:monospace'>{r['bits']}-bit {r['scheme']}, one scale per "
            f"{r['group_length']:,} weights: <b class='ql-bpw'>{r['bpw']:.4f} bits per weight</b> "
            f"({r['overhead_bpw']:.4f} of them scales{' and zero points' if r['scheme'] == 'asymmetric' else ''}), "
            f"SQNR <b class='ql-sqnr'>{r['sqnr_db']:.2f} dB</b>, RMSE {r['rmse']:.4g}, max error {r['max_error']:.3g}</div>"
        )
        self._plot(r)

    def _plot(self, r):
        ax = self.ax
        ax.clear()
        pts = self.frontier()
        for b in sorted({p["bits"] for p in pts}):
            ps = sorted((p for p in pts if p["bits"] == b), key=lambda p: p["bpw"])
            ax.plot([p["bpw"] for p in ps], [p["sqnr_db"] for p in ps], "o-", ms=3, lw=1, label=f"{b} bits")
        best = toyquant.pareto(pts)
        ax.plot([p["bpw"] for p in best], [p["sqnr_db"] for p in best], "k--", lw=0.8, label="frontier")
        ax.plot([r["bpw"]], [r["sqnr_db"]], "r*", ms=14, label="selected")
        ax.set_xlabel("bits per weight (codes + scales)", fontsize=10)
        ax.set_ylabel("SQNR (dB)", fontsize=10)
        ax.set_xlim(1.8, 10.5)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=10, ncol=3, loc="lower right")
        ax.tick_params(labelsize=10)
        ax.set_title("each line: one bit width, groups from the whole tensor (left) to 8 weights (right)", fontsize=11)
        self.fig.tight_layout()
        show_figure(self.out, self.fig)


def app(**kw) -> GroupSize:
    return GroupSize(**kw)
