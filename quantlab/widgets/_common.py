"""Small helpers shared by the apps: figures in Output widgets, HTML tables, the lesson tensors."""
from __future__ import annotations

import html
import os

import numpy as np

#: the real tensor most lessons use: all-MiniLM-L6-v2, last encoder layer, FFN output projection.
#: fp32 (a true full-precision base), shape (384, 1536): rows of 1536 = 6 super-blocks of 256, so every
#: ggml format, K and IQ included, can quantize it.
DEFAULT_TENSOR = ("minilm", "encoder.layer.5.output.dense.weight")
#: the same projection in the first layer: it has a few real outliers (|w| up to 7.9 while 99.9 % of the
#: weights are below 0.19), the lesson of notebooks 02 and 03.
OUTLIER_TENSOR = ("minilm", "encoder.layer.0.output.dense.weight")


def quick_default() -> bool:
    """QUICK mode (the notebooks' short path, used by the test suite): on when QUANTLAB_QUICK=1 (or
    true/yes) or CI=true."""
    yes = ("1", "true", "yes")
    return (os.environ.get("QUANTLAB_QUICK", "").lower() in yes) or (os.environ.get("CI", "").lower() in yes)


def real_tensor(model: str = DEFAULT_TENSOR[0], name: str = DEFAULT_TENSOR[1], rows: int | None = None) -> np.ndarray:
    """A real weight matrix (float32, C-contiguous), optionally only its first ``rows`` rows."""
    from .. import data

    a = data.tensors(model)[name]
    if rows is not None:
        a = a[:rows]
    return np.ascontiguousarray(a, dtype=np.float32)


def minilm_matrices() -> list[str]:
    """Names of all-MiniLM-L6-v2's encoder weight matrices (for dropdowns)."""
    from .. import data

    ts = data.tensors("minilm")
    return [k for k in ts if k.endswith(".weight") and "LayerNorm" not in k and "embeddings" not in k
            and k != "pooler.dense.weight"]


def new_figure(w: float = 6.0, h: float = 3.0, ncols: int = 1):
    """A matplotlib figure that pyplot does not display by itself (shown through an Output widget)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(w, h))
    plt.close(fig)
    return fig, axes


def show_figure(out, fig) -> None:
    """Redraw ``fig`` inside the Output widget ``out`` (replacing what was there)."""
    from IPython import get_ipython
    from IPython.display import display

    if get_ipython() is None:      # no kernel (unit tests): the figure object is updated, nothing to show
        return
    with out:
        out.clear_output(wait=True)
        display(fig)


def html_table(rows: list[dict], columns: list[str] | None = None, fmt: dict | None = None,
               highlight=None) -> str:
    """A small HTML table from a list of dicts; ``fmt`` maps column -> format string,
    ``highlight(row) -> bool`` marks rows in bold."""
    if not rows:
        return "<i>(nothing)</i>"
    cols = columns or list(rows[0])
    fmt = fmt or {}
    head = "".join(f"<th style='text-align:right;padding:0 8px'>{html.escape(str(c))}</th>" for c in cols)
    body = []
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            if v is None or (isinstance(v, (float, np.floating)) and np.isnan(v)):
                v = "–"                             # a missing figure reads as a dash, not "None" or "nan"
            s = fmt[c].format(v) if c in fmt and isinstance(v, (int, float, np.floating, np.integer)) else str(v)
            cells.append(f"<td style='text-align:right;padding:0 8px'>{html.escape(s)}</td>")
        style = " style='font-weight:bold;background:#fff3c4'" if highlight and highlight(r) else ""
        body.append(f"<tr{style}>{''.join(cells)}</tr>")
    return (f"<table style='border-collapse:collapse;font-family:monospace;font-size:12px'>"
            f"<tr>{head}</tr>{''.join(body)}</table>")


class App:
    """Base of the apps: ``box`` is the widget tree; an App displays as its box in a notebook."""

    box = None

    def _repr_mimebundle_(self, **kw):
        return self.box._repr_mimebundle_(**kw)
