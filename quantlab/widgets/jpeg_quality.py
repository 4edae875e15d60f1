"""Notebook 06: JPEG on a weight matrix seen as an image, next to ggml formats on one rate-distortion plot.

>>> app = quantlab.widgets.jpeg_quality.app()
>>> app.quality.value = 90; app.result["bpw"], app.result["sqnr_db"]
"""

from __future__ import annotations

import math

import ipywidgets as W
import numpy as np

from .. import analogy, metrics
from ._common import DEFAULT_TENSOR, App, contained, new_figure, real_tensor, show_figure

CLIPS = {"min/max (no clipping)": None, "99.99th percentile": 99.99, "99.9th percentile": 99.9}
_CLIP_SERIES = {None: "JPEG", 99.99: "JPEG clip 99.99%", 99.9: "JPEG clip 99.9%"}


def plot_rate_distortion(ax, points: list[dict], highlight: dict | None = None, ceiling: float | None = None):
    """SQNR vs bits per weight for the points of :func:`quantlab.analogy.rate_distortion`. Lossless points
    (infinite SQNR) are drawn on a ceiling line at the top."""
    ax.clear()
    fin = [p for p in points if p.get("kind") not in ("skipped",) and math.isfinite(p.get("sqnr_db", math.nan))]
    top = ceiling or (max(p["sqnr_db"] for p in fin) + 10 if fin else 60)
    style = {
        "float": ("s", "#8e44ad"),
        "quant": ("o", "#d9534f"),
        "quant+codec": ("x", "#d9534f"),
        "jpeg": ("^", "#2a7ab0"),
        "lossless": ("D", "#3c9a3c"),
    }
    seen = set()
    for p in points:
        if p.get("kind") in ("skipped", "jpeg"):
            continue
        y = p["sqnr_db"] if math.isfinite(p["sqnr_db"]) else top
        m, c = style[p["kind"]]
        lab = p["kind"] if p["kind"] not in seen else None
        seen.add(p["kind"])
        ax.plot([p["bpw"]], [y], m, color=c, ms=6, label=lab)
        if p["kind"] != "quant+codec":  # labels of the right-hand points go to their left: inside the axes
            right = p["bpw"] > 12
            ax.annotate(
                p["method"],
                (p["bpw"], y),
                fontsize=10,
                xytext=(-4 if right else 4, -12 if right else 3),
                textcoords="offset points",
                ha="right" if right else "left",
            )
    series = sorted({p.get("series", "JPEG") for p in points if p.get("kind") == "jpeg"})
    for k, name in enumerate(series):
        jp = sorted(
            (p for p in points if p.get("kind") == "jpeg" and p.get("series", "JPEG") == name), key=lambda p: p["bpw"]
        )
        ax.plot(
            [p["bpw"] for p in jp],
            [p["sqnr_db"] for p in jp],
            "^-" if k == 0 else "v--",
            mfc="none",
            color=("#2a7ab0", "#5bc0de", "#1f3a93")[k % 3],
            ms=5,
            lw=0.8,
            label=name,
        )
    ax.axhline(top, color="#3c9a3c", lw=0.6, ls=":")
    ax.text(
        0.98,
        top,
        "lossless (error 0)",
        fontsize=10,
        va="bottom",
        ha="right",
        color="#3c9a3c",
        transform=ax.get_yaxis_transform(),
    )
    if highlight is not None:
        ax.plot([highlight["bpw"]], [highlight["sqnr_db"]], "*", color="#f0ad4e", ms=14, label="this JPEG")
    ax.set_xscale("log", base=2)
    xs = [p["bpw"] for p in points if "bpw" in p]
    if xs:
        ax.set_xlim(min(xs) / 1.3, max(xs) * 1.3)
    ax.set_ylim(top=top + 6)
    ax.set_xlabel("bits per weight (log scale)", fontsize=10)
    ax.set_ylabel("SQNR (dB)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=10, loc="lower right")
    ax.tick_params(labelsize=10)


class JpegQuality(App):
    def __init__(
        self,
        tensor: str = DEFAULT_TENSOR[1],
        quality: int = 75,
        clip: str = "min/max (no clipping)",
        points: list[dict] | None = None,
        crop=(96, 256),
    ):
        self.w = real_tensor("minilm", tensor)
        self.crop = crop
        self.quality = W.IntSlider(value=quality, min=1, max=100, description="JPEG quality", continuous_update=False)
        self.clip = W.Dropdown(options=list(CLIPS), value=clip, description="grey range")
        self.summary = W.HTML()
        self.out = W.Output()
        self.fig, self.axes = new_figure(11.0, 3.4, ncols=3)
        self.points = points if points is not None else analogy.rate_distortion(self.w)
        self.result: dict = {}
        self.quality.observe(self.update, names="value")
        self.clip.observe(self.update, names="value")
        self.box = W.VBox([W.HBox([self.quality, self.clip]), self.summary, self.out])
        self.update()

    @contained
    def update(self, change=None):
        y, nb = analogy.jpeg_roundtrip(self.w, self.quality.value, clip=CLIPS[self.clip.value])
        bpw = 8.0 * nb / self.w.size
        r = {"quality": self.quality.value, "bytes": nb, "bpw": bpw, **metrics.report(self.w, y)}
        self.result = r
        quants = [p for p in self.points if p.get("kind") == "quant"]
        near = min(quants, key=lambda p: abs(p["bpw"] - bpw)) if quants else None
        cmp = f"; {near['method']} at {near['bpw']:.3g} bpw reaches {near['sqnr_db']:.1f} dB" if near else ""
        self.summary.value = (
            f"<div class='ql-summary' style='font-family:monospace'>JPEG quality {r['quality']}: {nb:,} bytes = "
            f"<b class='ql-bpw'>{bpw:.3f} bits per weight</b>, SQNR <b class='ql-sqnr'>{r['sqnr_db']:.2f} dB</b>, "
            f"RMSE {r['rmse']:.4g}{cmp}</div>"
        )
        h, wd = self.crop
        lim = float(np.percentile(np.abs(self.w), 99.9))
        for ax, img, title in (
            (self.axes[0], self.w[:h, :wd], "weights (crop)"),
            (self.axes[1], y[:h, :wd], f"after JPEG q={r['quality']}"),
        ):
            ax.clear()
            ax.imshow(img, cmap="gray", vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
            ax.set_title(title, fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
        plot_rate_distortion(self.axes[2], self.points, highlight=r)
        self.fig.tight_layout()
        show_figure(self.out, self.fig)


def app(**kw) -> JpegQuality:
    return JpegQuality(**kw)
