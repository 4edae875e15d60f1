"""Notebook 10: browse a benchmark table — pick the operation and the peers, see throughput per format.

    >>> app = quantlab.widgets.bench_view.app(quantlab.bench.formats(["Q4_0", "Q8_0"], size=1 << 16))
    >>> app.op.value = "dequantize"; app.result["rows"]
"""
from __future__ import annotations

import ipywidgets as W

from .. import bench
from ._common import App, html_table, new_figure, show_figure


class BenchView(App):
    def __init__(self, table: bench.Table, op: str | None = None):
        self.table = table
        ops = list(dict.fromkeys(r["op"] for r in table.rows))
        self.impls = [c for c in table.columns if c not in ("format", "op") and "/" not in c]
        self.op = W.Dropdown(options=ops, value=op or ops[0], description="operation")
        self.peers = W.SelectMultiple(options=self.impls, value=tuple(self.impls), description="peers", rows=5)
        self.log = W.Checkbox(value=True, description="log scale")
        self.summary = W.HTML()
        self.out = W.Output()
        self.fig, self.ax = new_figure(8.0, 3.4)
        self.result: dict = {}
        for wdg in (self.op, self.peers, self.log):
            wdg.observe(self.update, names="value")
        self.box = W.VBox([W.HBox([self.op, self.peers, self.log]), self.summary, self.out])
        self.update()

    def update(self, change=None):
        rows = [r for r in self.table.rows if r["op"] == self.op.value]
        ratio = next((c for c in self.table.columns if c.startswith("numba-1t/ggml")), None)
        ratios = [r[ratio] for r in rows if ratio and r.get(ratio)]
        self.result = {"op": self.op.value, "rows": len(rows), "peers": list(self.peers.value),
                       "min_ratio": min(ratios) if ratios else None}
        sub = bench.Table(rows, self.table.title, ("format", "op", *self.peers.value)
                          + tuple(c for c in self.table.columns if "/" in c))
        self.summary.value = html_table(sub.rows, list(sub.columns),
                                        fmt={c: "{:.3g}" for c in sub.columns if c not in ("format", "op")})
        self.ax.clear()
        bench.plot(bench.Table(rows, "", ("format", "op", *self.peers.value)), op=self.op.value, ax=self.ax,
                   log=self.log.value)
        self.fig.tight_layout()
        show_figure(self.out, self.fig)


def app(table, **kw) -> BenchView:
    return BenchView(table, **kw)
