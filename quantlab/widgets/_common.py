"""Small helpers shared by the apps: figures in Output widgets, HTML tables, the lesson tensors."""

from __future__ import annotations

import functools
import html
import logging
import os

import numpy as np

from .. import data

log = logging.getLogger("quantlab.widgets")

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
    a = data.tensors(model)[name]
    if rows is not None:
        a = a[:rows]
    return np.ascontiguousarray(a, dtype=np.float32)


def minilm_matrices() -> list[str]:
    """Names of all-MiniLM-L6-v2's encoder weight matrices (for dropdowns)."""
    ts = data.tensors("minilm")
    return [
        k
        for k in ts
        if k.endswith(".weight") and "LayerNorm" not in k and "embeddings" not in k and k != "pooler.dense.weight"
    ]


def new_figure(w: float = 6.0, h: float = 3.0, ncols: int = 1):
    """A matplotlib figure that pyplot does not display by itself (shown through an Output widget)."""
    # matplotlib.pyplot (~0.7 s): the course imports this module for real_tensor without plotting
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(w, h))
    plt.close(fig)
    return fig, axes


def show_figure(out, fig) -> None:
    """Redraw ``fig`` inside the Output widget ``out`` (replacing what was there).

    The rendered figure is set as the widget's ``outputs`` from the kernel: one state update per redraw.
    Printing into the widget instead (``with out: clear_output(wait=True); display(fig)``) sends the figure
    as iopub output that the *front end* captures and syncs back to the kernel; headless front ends
    (nbclient, hence nbconvert and papermill) send that sync on the shell socket they are polling for the
    cell's reply, and the reply can then go unnoticed until the cell's timeout, or forever (nbclient#312;
    see tests/nbrun.py)."""
    # IPython (~0.1 s): only inside a kernel (see _common.py:52)
    from IPython import get_ipython

    ip = get_ipython()
    if ip is None:  # no kernel (unit tests): the figure object is updated, nothing to show
        return
    data, metadata = ip.display_formatter.format(fig)
    out.outputs = ({"output_type": "display_data", "data": data, "metadata": metadata},)


def html_table(rows: list[dict], columns: list[str] | None = None, fmt: dict | None = None, highlight=None) -> str:
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
                v = "–"  # a missing figure reads as a dash, not "None" or "nan"
            s = fmt[c].format(v) if c in fmt and isinstance(v, (int, float, np.floating, np.integer)) else str(v)
            cells.append(f"<td style='text-align:right;padding:0 8px'>{html.escape(s)}</td>")
        style = " style='font-weight:bold;background:#fff3c4'" if highlight and highlight(r) else ""
        body.append(f"<tr{style}>{''.join(cells)}</tr>")
    return (
        f"<table style='border-collapse:collapse;font-family:monospace;font-size:12px'>"
        f"<tr>{head}</tr>{''.join(body)}</table>"
    )


def contained(method):
    """Decorator for an app's widget callbacks (``update``, ``_on_...``): an exception does not escape into
    the notebook as a long traceback; the app shows it as one red line under its controls (``app.error``,
    added to ``app.box`` the first time) and keeps it in ``app.last_error``; the next call that succeeds
    hides the line. Nested decorated calls are handled by the outermost one, so an inner failure is not
    hidden by the outer call finishing. The full traceback goes to the ``quantlab.widgets`` logger."""

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        if getattr(self, "_contained_depth", 0):
            return method(self, *args, **kwargs)
        self._contained_depth = 1
        try:
            result = method(self, *args, **kwargs)
        except Exception as e:  # every failure of a callback is shown, none escapes
            self.last_error = e
            log.debug("%s.%s failed", type(self).__name__, method.__name__, exc_info=True)
            self._show_error(e)
            return None
        finally:
            self._contained_depth = 0
        self.last_error = None
        self._show_error(None)
        return result

    return call


def error_line(e: BaseException, width: int = 240) -> str:
    """``Type: message`` of an exception, on one line, at most ``width`` characters."""
    msg = " ".join(str(e).split()) or "(no message)"
    line = f"{type(e).__name__}: {msg}"
    return line if len(line) <= width else line[: width - 1] + "…"


class App:
    """Base of the apps: ``box`` is the widget tree; an App displays as its box in a notebook. Callbacks
    decorated with :func:`contained` report a failure on one line (``error``) instead of a traceback."""

    box = None
    error = None  # the error line (an HTML widget), created at the first failure
    last_error = None  # the exception behind it, None after a call that succeeded

    def _show_error(self, e) -> None:
        if e is None:
            if self.error is not None and self.error.value:
                self.error.value = ""
                self.error.layout.display = "none"
            return
        # ipywidgets (~0.2 s): only when an error is shown (see _common.py:52)
        import ipywidgets as W

        if self.error is None:
            self.error = W.HTML(layout=W.Layout(display="none"))
        self.error.value = f"<span style='color:#b00020;font-family:monospace'>{html.escape(error_line(e))}</span>"
        self.error.layout.display = None
        self._attach_error()

    def _attach_error(self) -> None:
        box = self.box
        if self.error is not None and box is not None and self.error not in box.children:
            box.children = (*box.children, self.error)

    def _repr_mimebundle_(self, **kw):
        self._attach_error()  # a failure during __init__ happened before the box existed
        return self.box._repr_mimebundle_(**kw)


class TensorApp(App):
    """An app over one of MiniLM's matrices: ``tensor`` (a dropdown) and ``w``, its first ``rows`` rows,
    loaded again (then ``update()``) when another matrix is chosen."""

    def _tensor_choice(self, tensor: str, rows: int | None) -> None:
        import ipywidgets as W  # (see new_figure: not on the course's import path)

        self.rows = rows
        self.tensor = W.Dropdown(
            options=minilm_matrices(), value=tensor, description="tensor", layout=W.Layout(width="480px")
        )
        self._load()
        self.tensor.observe(self._load_and_update, names="value")

    def _load(self) -> None:
        self.w = real_tensor("minilm", self.tensor.value, self.rows)

    @contained
    def _load_and_update(self, change=None):
        self._load()
        self.update()
