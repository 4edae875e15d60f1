"""Notebook 05: a GGUF file's bytes, annotated. Pick a region (or type an offset) and see each byte
coloured by the field it belongs to, with the decoded fields listed below. The fields come from
:mod:`quantlab.gguf.anatomy` (data only); the colours and the HTML are this widget's (:func:`hex_html`).

    >>> app = quantlab.widgets.gguf_hex.app()                       # SmolLM2's GGUF
    >>> app.region.value = "header (magic, version, counts)"; app.result["fields"][0].name
    'magic'
"""

from __future__ import annotations

import html

import ipywidgets as W

from .. import data
from ..gguf.anatomy import Anatomy
from ._common import App, contained

CUSTOM = "(offset below)"

# one colour per field, cycling; the header and the padding always in their own
_PALETTE = ("#fde2e2", "#dcefff", "#e3f7d9", "#fff3c4", "#efe0ff", "#d9f4f2", "#ffe4cc", "#e8e8e8")
_SECTION_COLOR = {"header": "#f7c6c6", "metadata": None, "tensor info": None, "padding": "#cccccc", "data": None}


def hex_html(anatomy: Anatomy, start, length: int | None = None, width: int = 16) -> str:
    """An HTML hex view of ``anatomy``'s bytes, each field in its own colour, with the field table below.
    ``start`` may be a (start, length) pair from :meth:`Anatomy.regions`."""
    if length is None:
        start, length = start
    start = max(0, int(start))
    fl = anatomy.fields_in(start, start + length)
    colors = [_SECTION_COLOR.get(x.section) or _PALETTE[i % len(_PALETTE)] for i, x in enumerate(fl)]
    lines = []
    for row in anatomy.rows(start, length, width):
        cells = []
        for b, o in zip(row["bytes"], row["owner"]):
            tip = html.escape(f"{fl[o].record}: {fl[o].name} = {fl[o].value}", quote=True)
            cells.append(f"<span style='background:{colors[o]}' title='{tip}'>{b:02x}</span>")
        asc = "".join(html.escape(chr(b)) if 32 <= b < 127 else "." for b in row["bytes"])
        pad = "&nbsp;" * (3 * (width - len(row["bytes"])))
        lines.append(
            f"<span style='color:#888'>{row['offset']:08x}</span>  {' '.join(cells)}{pad}  "
            f"<span style='color:#555'>{asc}</span>"
        )
    table = [
        "<table class='ql-gguf-fields' style='border-collapse:collapse;font-family:monospace;"
        "font-size:12px'><tr><th>offset</th><th>bytes</th><th>record</th><th>field</th>"
        "<th style='text-align:left'>value</th></tr>"
    ]
    for x, c in zip(fl, colors):
        table.append(
            f"<tr><td style='text-align:right;padding:0 6px'>{x.start:,}</td>"
            f"<td style='text-align:right;padding:0 6px'>{x.size:,}</td>"
            f"<td style='padding:0 6px'>{html.escape(x.record)}</td>"
            f"<td style='background:{c};padding:0 6px'>{html.escape(x.name)}</td>"
            f"<td style='padding:0 6px'>{html.escape(x.value)}</td></tr>"
        )
    table.append("</table>")
    return (
        "<pre class='ql-gguf-hex' style='font-size:12px;line-height:1.35'>"
        + "\n".join(lines)
        + "</pre>"
        + "".join(table)
    )


class GGUFHex(App):
    def __init__(self, source=None, region: str | None = None, length: int = 96):
        if source is None:
            source = data.path("smollm2")
        self.anatomy = source if isinstance(source, Anatomy) else Anatomy(source)
        self.regions = self.anatomy.regions()
        names = list(self.regions)
        size = self.anatomy.file.file_size
        self.region = W.Dropdown(
            options=names + [CUSTOM], value=region or names[0], description="region", layout=W.Layout(width="460px")
        )
        self.offset = W.BoundedIntText(value=0, min=0, max=size - 1, step=16, description="offset")
        self.length = W.IntSlider(value=length, min=16, max=512, step=16, description="bytes", continuous_update=False)
        self.header = W.HTML()
        self.view = W.HTML()
        self.result: dict = {}
        self._syncing = False
        self.region.observe(self._on_region, names="value")
        self.offset.observe(self._on_offset, names="value")
        self.length.observe(self.update, names="value")
        self.box = W.VBox([W.HBox([self.region, self.offset, self.length]), self.header, self.view])
        self._on_region()

    @contained
    def _on_region(self, change=None):
        if self.region.value in self.regions:
            start, n = self.regions[self.region.value]
            self._syncing = True
            try:
                self.offset.value = start
                self.length.value = max(self.length.min, min(self.length.max, -(-n // 16) * 16))
            finally:
                self._syncing = False
        self.update()

    @contained
    def _on_offset(self, change=None):
        if self._syncing:
            return
        if self.region.value != CUSTOM and self.regions.get(self.region.value, (None,))[0] != self.offset.value:
            self._syncing = True
            try:
                self.region.value = CUSTOM
            finally:
                self._syncing = False
        self.update()

    @contained
    def update(self, change=None):
        if self._syncing:
            return
        a = self.anatomy
        start, n = int(self.offset.value), int(self.length.value)
        fields = a.fields_in(start, start + n)
        sec = list(dict.fromkeys(x.section for x in fields))
        self.result = {"start": start, "length": n, "fields": fields, "sections": sec}
        f = a.file
        self.header.value = (
            f"<div class='ql-gguf-head' style='font-size:13px'><b>bytes {start:,} to {start + n - 1:,}</b> of "
            f"{html.escape(str(f.path).split('/')[-1])} ({f.file_size:,} bytes): {len(fields)} field(s) in "
            f"{', '.join(sec)}. Hover a byte for its field.</div>"
        )
        self.view.value = hex_html(a, start, n)


def app(source=None, region: str | None = None, length: int = 96) -> GGUFHex:
    return GGUFHex(source, region, length)
