"""Notebook 05: a GGUF file's bytes, annotated. Pick a region (or type an offset) and see each byte
coloured by the field it belongs to, with the decoded fields listed below (:mod:`quantlab.gguf.anatomy`).

    >>> app = quantlab.widgets.gguf_hex.app()                       # SmolLM2's GGUF
    >>> app.region.value = "header (magic, version, counts)"; app.result["fields"][0].name
    'magic'
"""
from __future__ import annotations

import html

import ipywidgets as W

from ..gguf.anatomy import Anatomy
from ._common import App, contained

CUSTOM = "(offset below)"


class GGUFHex(App):
    def __init__(self, source=None, region: str | None = None, length: int = 96):
        if source is None:
            from .. import data

            source = data.path("smollm2")
        self.anatomy = source if isinstance(source, Anatomy) else Anatomy(source)
        self.regions = self.anatomy.regions()
        names = list(self.regions)
        size = self.anatomy.file.file_size
        self.region = W.Dropdown(options=names + [CUSTOM], value=region or names[0], description="region",
                                 layout=W.Layout(width="460px"))
        self.offset = W.BoundedIntText(value=0, min=0, max=size - 1, step=16, description="offset")
        self.length = W.IntSlider(value=length, min=16, max=512, step=16, description="bytes",
                                  continuous_update=False)
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
            f"{', '.join(sec)}. Hover a byte for its field.</div>")
        self.view.value = a.html(start, n)


def app(source=None, region: str | None = None, length: int = 96) -> GGUFHex:
    return GGUFHex(source, region, length)
