"""Notebook 10: browse a benchmark table — pick the operation and the peers, see throughput per format —
and compare this machine's figures with the snapshot in ``quantlab/assets/bench_snapshot.json``.

    >>> app = quantlab.widgets.bench_view.app(quantlab.bench.formats(["Q4_0", "Q8_0"], size=1 << 16))
    >>> app.op.value = "dequantize"; app.result["rows"]
    >>> snap = load_snapshot(); print(snapshot_source(snap)); compare(table.rows, snap["formats"]["rows"])

The snapshot is written by ``tools/make_bench_snapshot.py`` (see ``quantlab/assets/README.md``).
"""

from __future__ import annotations

import json
import pathlib

import ipywidgets as W

from .. import bench
from ..data import DATA_DIR
from ._common import App, contained, html_table, new_figure, show_figure


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

    @contained
    def update(self, change=None):
        rows = [r for r in self.table.rows if r["op"] == self.op.value]
        ratio = next((c for c in self.table.columns if c.startswith("numba-1t/ggml")), None)
        ratios = [r[ratio] for r in rows if ratio and r.get(ratio)]
        self.result = {
            "op": self.op.value,
            "rows": len(rows),
            "peers": list(self.peers.value),
            "min_ratio": min(ratios) if ratios else None,
        }
        sub = bench.Table(
            rows,
            self.table.title,
            ("format", "op", *self.peers.value) + tuple(c for c in self.table.columns if "/" in c),
        )
        self.summary.value = html_table(
            sub.rows, list(sub.columns), fmt={c: "{:.3g}" for c in sub.columns if c not in ("format", "op")}
        )
        self.ax.clear()
        bench.plot(
            bench.Table(rows, "", ("format", "op", *self.peers.value)), op=self.op.value, ax=self.ax, log=self.log.value
        )
        self.fig.tight_layout()
        show_figure(self.out, self.fig)


def app(table, **kw) -> BenchView:
    return BenchView(table, **kw)


# ------------------------------------------------------------------------------ the benchmark snapshot

#: where ``tools/make_bench_snapshot.py`` writes its snapshot
SNAPSHOT = DATA_DIR / "bench_snapshot.json"


def load_snapshot(path=None) -> dict | None:
    """The benchmark snapshot (``quantlab/assets/bench_snapshot.json`` by default) as a dict with ``machine``,
    ``formats`` and ``gguf_open`` (each table: ``title``, ``columns``, ``rows``); None when there is none."""
    p = pathlib.Path(path) if path is not None else SNAPSHOT
    if not p.is_file():
        return None
    with open(p) as fh:
        return json.load(fh)


def snapshot_source(snap: dict) -> str:
    """One sentence: which machine the snapshot was measured on, when, with which code, under which load."""
    m = snap["machine"]
    load = lambda v: f"{v[0]:.2f}" if v else "unknown"  # noqa: E731
    return (
        f"measured on {m['cpu']} ({m['cores']} logical cores, {m['system']}) on {m['date']} with quantlab "
        f"{m['quantlab_commit'][:12]}, numpy {m['numpy']}, numba {m['numba']} ({m['numba_threads']} threads); "
        f"1-minute load average {load(m.get('load_start'))} at the start and {load(m.get('load_end'))} at the end"
    )


def compare(live_rows, snap_rows, keys=("format", "op"), columns=("numba-1t", "ggml-1t")) -> list[dict]:
    """Rows found in both tables (matched on ``keys``): for each of ``columns`` present in both, the live
    figure, the snapshot's and their ratio ``live/snapshot`` (> 1: this machine measured more of it)."""
    snap = {tuple(r.get(k) for k in keys): r for r in snap_rows}
    out = []
    for r in live_rows:
        s = snap.get(tuple(r.get(k) for k in keys))
        if s is None:
            continue
        row = {k: r.get(k) for k in keys}
        for c in columns:
            a, b = r.get(c), s.get(c)
            row[f"{c} here"], row[f"{c} snapshot"] = a, b
            row[f"{c} here/snapshot"] = a / b if a and b else None
        out.append(row)
    return out
