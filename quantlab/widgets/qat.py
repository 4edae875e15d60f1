"""Notebook 09: PTQ vs QAT on a real dataset — pick bits and scale granularity, see both accuracies and
what the weights look like after rounding.

    >>> app = quantlab.widgets.qat.app()
    >>> app.bits.value = 2; app.result["ptq_acc"], app.result["qat_acc"]
"""

from __future__ import annotations

import ipywidgets as W
import numpy as np

from .. import qat
from ._common import App, contained, new_figure, show_figure

GRANULARITY = {"per-tensor": None, "per-group 16": 16, "per-group 8": 8}


class QATApp(App):
    def __init__(self, bits: int = 3, granularity: str = "per-tensor", qat_epochs: int = 30, seed: int = 0):
        self.seed, self.qat_epochs = seed, qat_epochs
        self.xtr, self.ytr, self.xte, self.yte = qat.load_digits(seed)
        self.base = qat.MLP.init(seed=seed)
        qat.train(self.base, self.xtr, self.ytr, epochs=60, seed=seed)
        self.float_acc = qat.accuracy(self.base, self.xte, self.yte)
        self._qat_models: dict = {}
        self.bits = W.IntSlider(value=bits, min=2, max=8, description="bits", continuous_update=False)
        self.gran = W.ToggleButtons(options=list(GRANULARITY), value=granularity, description="scales")
        self.summary = W.HTML()
        self.out = W.Output()
        self.fig, self.axes = new_figure(9.0, 3.0, ncols=2)
        self.result: dict = {}
        for wdg in (self.bits, self.gran):
            wdg.observe(self.update, names="value")
        self.box = W.VBox([W.HBox([self.bits, self.gran]), self.summary, self.out])
        self.update()

    def qat_model(self, bits: int, group):
        key = (bits, group)
        if key not in self._qat_models:
            m = self.base.copy()
            qat.train(
                m, self.xtr, self.ytr, epochs=self.qat_epochs, lr=0.02, seed=self.seed + 1, bits=bits, group=group
            )
            self._qat_models[key] = m
        return self._qat_models[key]

    @contained
    def update(self, change=None):
        bits, group = self.bits.value, GRANULARITY[self.gran.value]
        ptq_m = self.base.quantized(bits, group)
        qat_m = self.qat_model(bits, group).quantized(bits, group)
        self.result = {
            "bits": bits,
            "group": group,
            "float_acc": self.float_acc,
            "ptq_acc": qat.accuracy(ptq_m, self.xte, self.yte),
            "qat_acc": qat.accuracy(qat_m, self.xte, self.yte),
            "levels": int(np.unique(ptq_m.w1[0, :16]).size),
        }
        r = self.result
        self.summary.value = (
            f"<div class='ql-summary' style='font-family:monospace'>{bits}-bit weights, {self.gran.value} scales "
            f"({2 ** (bits - 1) - 1} positive levels): test accuracy float <b>{r['float_acc']:.1%}</b>, "
            f"PTQ <b class='ql-ptq'>{r['ptq_acc']:.1%}</b>, QAT <b class='ql-qat'>{r['qat_acc']:.1%}</b> "
            f"({len(self.yte)} test images)</div>"
        )
        a0, a1 = self.axes
        for ax in self.axes:
            ax.clear()
        w = self.base.w1.ravel()
        a0.hist(w, bins=120, color="0.6", label="float (trained)")
        a0.hist(ptq_m.w1.ravel(), bins=120, histtype="step", color="C3", label="PTQ: float rounded")
        a0.set_title("layer-1 weights", fontsize=10)
        a0.legend(fontsize=10)
        a1.hist(self.qat_model(bits, group).w1.ravel(), bins=120, color="0.6", label="QAT latent float")
        a1.hist(qat_m.w1.ravel(), bins=120, histtype="step", color="C0", label="QAT: rounded")
        a1.set_title("after quantization-aware training", fontsize=10)
        a1.legend(fontsize=10)
        for ax in self.axes:
            ax.tick_params(labelsize=10)
            ax.set_yscale("log")
        self.fig.tight_layout()
        show_figure(self.out, self.fig)


def app(**kw) -> QATApp:
    return QATApp(**kw)
