"""The anatomy of a GGUF file: what every byte of the header, the metadata and the tensor table means.

:class:`Anatomy` walks the file's records with its own small ``struct`` parser and cuts them into
:class:`Field` s — contiguous, non-overlapping byte ranges that together cover the file from byte 0 to the
end of the data section — each with a name and its decoded value::

    offset 0    magic          4 bytes   b"GGUF"
           4    version        u32       3
           8    tensor_count   u64       272
          16    kv_count       u64       33
          24    key/value pair 0: key length u64, key bytes, value type u32, value
                ...           (an array value: element type u32, count u64, then the elements)
                tensor info 0: name length u64, name bytes, n_dims u32, ne[0..n_dims) u64, ggml type u32,
                               data offset u64 (relative to the data section)
                ...
                zero padding up to a multiple of the alignment (general.alignment, default 32)
    data_start  tensor 0's bytes, zero padding, tensor 1's bytes, ...

Where each record *starts* is taken from :mod:`quantlab.gguf`'s reader (``Metadata.offset_of``,
``GGUFTensor.info_offset``, ``GGUFFile.data_offset``), so the two parsers check each other: a field list
that does not end exactly where the next record starts raises :class:`~quantlab.errors.GGUFError`.

Long arrays (the 49,152 tokenizer strings) are cut into their first few elements and one field for the
rest; tensor data into its first blocks and one field for the rest.

    >>> a = Anatomy(quantlab.data.path("smollm2"))
    >>> a.sections()                      # header / metadata / tensor infos / padding / data
    >>> print(a.text(0, 64))              # annotated hex dump
    >>> a.rows(*a.regions()["tensor info 0"])    # the same as data: offsets, bytes, owning field

The coloured HTML view of these rows is the notebook widget's (:func:`quantlab.widgets.gguf_hex.hex_html`).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np

from ..errors import GGUFError
from .constants import ArrayOf, ValueType, type_name
from .reader import GGUFFile
from .reader import open as open_gguf

__all__ = ["Field", "Anatomy", "summarize_value", "TOKEN_TYPES"]

#: llama.cpp's ``llama_token_type`` values stored in ``tokenizer.ggml.token_type``
TOKEN_TYPES = {0: "undefined", 1: "normal", 2: "unknown", 3: "control", 4: "user-defined", 5: "unused", 6: "byte"}


@dataclass(frozen=True)
class Field:
    """One named byte range of the file."""

    start: int
    size: int
    section: str  # "header" | "metadata" | "tensor info" | "padding" | "data"
    record: str  # the record it belongs to: "header", "kv 3 general.name", "tensor 0 token_embd.weight"
    name: str  # what the bytes are: "key length", "value type", "ne[0]", ...
    value: str  # decoded value, short

    @property
    def end(self) -> int:
        return self.start + self.size


def summarize_value(value, spec=None, n: int = 3, width: int = 60) -> str:
    """A short human summary of a metadata value: scalars as they are, arrays as count + first items."""
    if isinstance(value, str):
        s = value if len(value) <= width else value[: width - 3] + "..."
        return repr(s)
    if isinstance(value, (tuple, list, np.ndarray)):
        k = len(value)
        kind = type_name(spec).replace("array[", "").rstrip("]") if spec is not None else "items"
        head = ", ".join(repr(v if not isinstance(v, np.generic) else v.item()) for v in list(value[:n]))
        more = ", ..." if k > n else ""
        return f"{k:,} x {kind}: [{head}{more}]"
    return repr(value)


class Anatomy:
    """A GGUF file cut into named fields. ``source``: a path or an open :class:`quantlab.gguf.GGUFFile`.

    ``items``: how many elements of each array (and blocks of each tensor) get a field of their own.
    """

    def __init__(self, source, items: int = 3):
        self.file = source if isinstance(source, GGUFFile) else open_gguf(source)
        self.path = self.file.path
        self.items = int(items)
        f = self.file
        self.P = 4 if f.version == 1 else 8  # v1: 32-bit counts and lengths
        self.order = "<" if f.byte_order == "little" else ">"
        with open(self.path, "rb") as fh:
            self._head = fh.read(f.data_offset)  # header + metadata + tensor table + padding
        self.fields: list[Field] = []
        self._build()
        self._starts = np.array([x.start for x in self.fields], dtype=np.int64)

    # ---------------------------------------------------------------- reading
    def read(self, start: int, n: int) -> bytes:
        """``n`` bytes of the file from ``start`` (clipped to the file)."""
        start = max(0, int(start))
        end = min(self.file.file_size, start + max(0, int(n)))
        if end <= start:
            return b""
        if end <= len(self._head):
            return self._head[start:end]
        with open(self.path, "rb") as fh:
            fh.seek(start)
            return fh.read(end - start)

    def _u(self, pos: int, size: int) -> int:
        return struct.unpack_from(self.order + {4: "I", 8: "Q"}[size], self._head, pos)[0]

    # ---------------------------------------------------------------- the walk
    def _add(self, start, size, section, record, name, value):
        if size > 0:
            self.fields.append(Field(int(start), int(size), section, record, name, value))
        return start + size

    def _string(self, pos, section, record, what):
        n = self._u(pos, self.P)
        pos = self._add(pos, self.P, section, record, f"{what} length", f"{n} bytes")
        raw = self._head[pos : pos + n]
        return self._add(pos, n, section, record, what, repr(raw.decode("utf-8", "replace"))), raw

    def _build(self):
        f, P = self.file, self.P
        pos = self._add(0, 4, "header", "header", "magic", repr(self._head[:4]))
        pos = self._add(pos, 4, "header", "header", "version", f"u32 = {f.version}")
        pos = self._add(pos, P, "header", "header", "tensor count", f"u{8 * P} = {f.tensor_count}")
        pos = self._add(pos, P, "header", "header", "key/value count", f"u{8 * P} = {f.kv_count}")
        md = f.metadata
        keys = list(md)
        tnames = list(f.tensors)
        starts = [md.offset_of(k) for k in keys] + [f.tensors[t].info_offset for t in tnames] + [f.info_end]
        if starts[0] != pos:
            raise GGUFError(f"the first key/value pair should start at byte {pos}, the reader says {starts[0]}")
        for i, key in enumerate(keys):
            rec = f"kv {i} {key}"
            pos = self._kv(starts[i], starts[i + 1], rec, key)
        for j, name in enumerate(tnames):
            i = len(keys) + j
            pos = self._tensor_info(starts[i], starts[i + 1], f"tensor {j} {name}", f.tensors[name])
        pad = f.data_offset - f.info_end
        self._add(
            f.info_end,
            pad,
            "padding",
            "padding",
            "alignment padding",
            f"{pad} zero bytes: the data section starts at a multiple of {f.alignment}",
        )
        self._data()

    def _check_end(self, pos, end, rec):
        if pos != end:
            raise GGUFError(f"{rec}: the fields end at byte {pos}, but the next record starts at byte {end}")

    def _kv(self, pos, end, rec, key):
        md = self.file.metadata
        pos, _ = self._string(pos, "metadata", rec, "key")
        t = self._u(pos, 4)
        pos = self._add(pos, 4, "metadata", rec, "value type", f"u32 = {t} ({ValueType(t).name.lower()})")
        vt = ValueType(t)
        if vt == ValueType.STRING:
            pos, _ = self._string(pos, "metadata", rec, "value")
        elif vt == ValueType.ARRAY:
            et = ValueType(self._u(pos, 4))
            pos = self._add(pos, 4, "metadata", rec, "array element type", f"u32 = {int(et)} ({et.name.lower()})")
            n = self._u(pos, self.P)
            pos = self._add(pos, self.P, "metadata", rec, "array count", f"{n:,} elements")
            pos = self._array_items(pos, end, rec, et, n, md[key] if et != ValueType.ARRAY else None)
        else:
            v = md[key]
            pos = self._add(pos, vt.size, "metadata", rec, "value", f"{vt.name.lower()} = {v!r}")
        self._check_end(pos, end, rec)
        return pos

    def _array_items(self, pos, end, rec, et, n, values):
        k = min(n, self.items)
        if et == ValueType.STRING:
            for i in range(k):
                pos, _ = self._string(pos, "metadata", rec, f"[{i}]")
        elif et != ValueType.ARRAY:
            for i in range(k):
                pos = self._add(pos, et.size, "metadata", rec, f"[{i}]", f"{et.name.lower()} = {values[i].item()!r}")
        else:
            k = 0
        if n > k:
            what = f"elements [{k}..{n - 1}]" if k else f"all {n} elements"
            pos = self._add(pos, end - pos, "metadata", rec, what, f"{n - k:,} more ({end - pos:,} bytes)")
        return pos

    def _tensor_info(self, pos, end, rec, t):
        pos, _ = self._string(pos, "tensor info", rec, "name")
        nd = self._u(pos, 4)
        pos = self._add(pos, 4, "tensor info", rec, "n_dims", f"u32 = {nd}")
        for d in range(nd):
            pos = self._add(pos, self.P, "tensor info", rec, f"ne[{d}]", f"u{8 * self.P} = {self._u(pos, self.P)}")
        tid = self._u(pos, 4)
        pos = self._add(pos, 4, "tensor info", rec, "ggml type", f"u32 = {tid} ({t.format.name})")
        off = self._u(pos, 8)
        pos = self._add(
            pos, 8, "tensor info", rec, "data offset", f"u64 = {off:,} (file byte {self.file.data_offset + off:,})"
        )
        self._check_end(pos, end, rec)
        return pos

    def _data(self):
        f = self.file
        ts = sorted(f.tensors.values(), key=lambda t: t.offset)
        pos = f.data_offset
        for t in ts:
            if t.file_offset > pos:
                self._add(
                    pos,
                    t.file_offset - pos,
                    "data",
                    "padding",
                    "tensor padding",
                    f"{t.file_offset - pos} zero bytes up to a multiple of {f.alignment}",
                )
            pos = t.file_offset
            rec = f"data {t.name}"
            fmt = t.format
            nblk = t.nbytes // fmt.type_size if fmt.type_size else 0
            k = min(nblk, self.items)
            what = "block" if fmt.block_size > 1 else "value"
            for b in range(k):
                if fmt.name == "F32" and self.order == "<":
                    desc = f"F32 = {struct.unpack('<f', self.read(pos, 4))[0]!r}"
                else:
                    desc = f"{fmt.name}: {fmt.block_size} weight(s) in {fmt.type_size} bytes"
                pos = self._add(pos, fmt.type_size, "data", rec, f"{what} {b}", desc)
            rest = t.file_offset + t.nbytes - pos
            if rest > 0:
                pos = self._add(pos, rest, "data", rec, f"{what}s {k}..{nblk - 1}", f"{rest:,} bytes")
            pos = t.file_offset + t.nbytes
        if f.file_size > pos:
            self._add(pos, f.file_size - pos, "data", "padding", "end padding", f"{f.file_size - pos} bytes")

    # ---------------------------------------------------------------- queries
    def field_at(self, offset: int) -> Field:
        """The field holding byte ``offset``."""
        i = int(np.searchsorted(self._starts, offset, side="right")) - 1
        if i < 0 or offset >= self.fields[i].end:
            raise GGUFError(f"byte {offset} is outside the file ({self.file.file_size} bytes)")
        return self.fields[i]

    def fields_in(self, start: int, end: int) -> list[Field]:
        """Fields that overlap the bytes [start, end)."""
        i = max(0, int(np.searchsorted(self._starts, start, side="right")) - 1)
        out = []
        for fl in self.fields[i:]:
            if fl.start >= end:
                break
            if fl.end > start:
                out.append(fl)
        return out

    def sections(self) -> list[dict]:
        """The five parts of the file (the padding may be 0 bytes): name, start, end, bytes, percent."""
        f = self.file
        hdr = 24 if self.P == 8 else 16
        first_info = next(iter(f.tensors.values())).info_offset if f.tensors else f.info_end
        bounds = [
            ("header", 0, hdr),
            ("metadata", hdr, first_info),
            ("tensor info", first_info, f.info_end),
            ("padding", f.info_end, f.data_offset),
            ("data (tensor bytes)", f.data_offset, f.file_size),
        ]
        return [
            {"section": n, "start": a, "end": b, "bytes": b - a, "percent": 100.0 * (b - a) / f.file_size}
            for n, a, b in bounds
        ]

    def regions(self) -> dict:
        """Named places worth looking at: name -> (start, length)."""
        f = self.file
        md = f.metadata
        keys = list(md)
        r = {"header (magic, version, counts)": (0, 24 if self.P == 8 else 16)}
        for i, k in enumerate(keys[:4]):
            fl = self.fields_in(md.offset_of(k), md.offset_of(k) + 1)[0]
            end = max(x.end for x in self.fields if x.record == fl.record)
            r[f"kv {i}: {k}"] = (md.offset_of(k), end - md.offset_of(k))
        arrays = [k for k in keys if isinstance(md.type_of(k), ArrayOf) and md.type_of(k).elem == ValueType.STRING]
        if arrays:
            big = max(arrays, key=md.count_of)
            r[f"string array: {big}"] = (md.offset_of(big), 96)
        for j, (name, t) in enumerate(list(f.tensors.items())[:2]):
            nxt = list(f.tensors.values())[j + 1].info_offset if j + 1 < len(f.tensors) else f.info_end
            r[f"tensor info {j}: {name}"] = (t.info_offset, nxt - t.info_offset)
        a = max(0, f.info_end - 32)
        r["end of tensor table, padding, data start"] = (a, f.data_offset + 48 - a)
        return r

    # ---------------------------------------------------------------- views
    def rows(self, start: int, length: int, width: int = 16) -> list[dict]:
        """Hex-dump rows: offset, bytes, and for each byte the index of its field in ``fields_in``."""
        start = max(0, int(start))
        data = self.read(start, length)
        fl = self.fields_in(start, start + len(data))
        owner = np.zeros(len(data), dtype=np.int64)
        for i, x in enumerate(fl):
            a, b = max(x.start, start) - start, min(x.end, start + len(data)) - start
            owner[a:b] = i
        out = []
        for r in range(0, len(data), width):
            out.append({"offset": start + r, "bytes": data[r : r + width], "owner": owner[r : r + width].tolist()})
        return out

    def text(self, start: int, length: int, width: int = 16) -> str:
        """A plain-text annotated hex dump: the bytes, then the fields they belong to."""
        lines = []
        for row in self.rows(start, length, width):
            hx = " ".join(f"{b:02x}" for b in row["bytes"])
            asc = "".join(chr(b) if 32 <= b < 127 else "." for b in row["bytes"])
            lines.append(f"{row['offset']:08x}  {hx:<{3 * width}} {asc}")
        lines.append("")
        for x in self.fields_in(start, start + length):
            lines.append(f"{x.start:>10,}  {x.size:>8,} B  {x.record:<34.34} {x.name:<20.20} {x.value}")
        return "\n".join(lines)

    # ---------------------------------------------------------------- tables for the lesson
    def metadata_table(self) -> list[dict]:
        """One row per key: key, type, offset, record bytes, summarised value."""
        md = self.file.metadata
        keys = list(md)
        ends = [md.offset_of(k) for k in keys[1:]] + [
            next(iter(self.file.tensors.values())).info_offset if self.file.tensors else self.file.info_end
        ]
        return [
            {
                "key": k,
                "type": type_name(md.type_of(k)),
                "offset": md.offset_of(k),
                "bytes": e - md.offset_of(k),
                "value": summarize_value(md[k], md.type_of(k)),
            }
            for k, e in zip(keys, ends)
        ]

    def tensor_table(self) -> list[dict]:
        """One row per tensor: name, shape (llama.cpp's ne order, row length first, as its tools and
        ``quantlab inspect`` print it), format, data offset, bytes, bits per weight."""
        return [
            {
                "name": t.name,
                "shape": "x".join(map(str, t.ne)),
                "format": t.format.name,
                "offset": t.offset,
                "nbytes": t.nbytes,
                "bpw": 8.0 * t.nbytes / max(1, t.n_elements),
            }
            for t in self.file.tensors.values()
        ]

    def bytes_by_format(self) -> list[dict]:
        """Per storage format: tensors, weights, bytes, share of the tensor bytes, bits per weight."""
        agg: dict = {}
        for t in self.file.tensors.values():
            a = agg.setdefault(t.format.name, {"format": t.format.name, "tensors": 0, "weights": 0, "bytes": 0})
            a["tensors"] += 1
            a["weights"] += t.n_elements
            a["bytes"] += t.nbytes
        total = sum(a["bytes"] for a in agg.values())
        rows = sorted(agg.values(), key=lambda a: -a["bytes"])
        for a in rows:
            a["percent"] = 100.0 * a["bytes"] / total
            a["bpw"] = 8.0 * a["bytes"] / a["weights"]
        return rows

    def effective_bpw(self) -> dict:
        """Bits per weight counted three ways: tensor bytes only, and the whole file (metadata included)."""
        f = self.file
        n = f.n_params
        return {
            "weights": n,
            "tensor_bytes": f.tensor_bytes,
            "file_bytes": f.file_size,
            "bpw_tensors": 8.0 * f.tensor_bytes / n,
            "bpw_file": 8.0 * f.file_size / n,
        }

    def tokenizer_summary(self) -> dict:
        """What the tokenizer keys hold and how many bytes of the file they take."""
        md = self.file.metadata
        out = {}
        tok_keys = [k for k in md if k.startswith("tokenizer.")]
        rows = {r["key"]: r for r in self.metadata_table()}
        out["bytes"] = sum(rows[k]["bytes"] for k in tok_keys)
        out["percent_of_header"] = 100.0 * out["bytes"] / self.file.data_offset
        out["percent_of_file"] = 100.0 * out["bytes"] / self.file.file_size
        if "tokenizer.ggml.tokens" in md:
            toks = md["tokenizer.ggml.tokens"]
            out["n_tokens"] = len(toks)
            out["longest_token"] = max(toks, key=len)
            out["first_tokens"] = list(toks[:5])
        if "tokenizer.ggml.token_type" in md:
            tt = np.asarray(md["tokenizer.ggml.token_type"])
            vals, cnt = np.unique(tt, return_counts=True)
            out["token_types"] = {TOKEN_TYPES.get(int(v), str(int(v))): int(c) for v, c in zip(vals, cnt)}
        if "tokenizer.ggml.merges" in md:
            m = md["tokenizer.ggml.merges"]
            out["n_merges"] = len(m)
            out["first_merges"] = list(m[:5])
        return out


def _plain(v):
    """A metadata value in a form both readers can be compared on (lists of Python scalars)."""
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def compare_readers(path) -> list[dict]:
    """Read ``path`` with quantlab and with gguf-py's ``GGUFReader`` and compare, item by item: every
    metadata value, type and offset, every tensor's type, dimensions, data offset and bytes.
    Rows: what, quantlab, gguf_py, equal. (gguf-py reads every array eagerly: use it on small files.)"""
    # gguf-py (~35 ms): only this comparison
    import gguf as gguf_py

    r = gguf_py.GGUFReader(os.fspath(path))
    rows = []

    def row(what, a, b):
        rows.append({"what": what, "quantlab": a, "gguf_py": b, "equal": a == b})

    with open_gguf(path) as f:
        g_fields = {k: v for k, v in r.fields.items() if not k.startswith("GGUF.")}
        row("keys (in order)", list(f.metadata), list(g_fields))
        for k in f.metadata:
            gf = g_fields.get(k)
            if gf is None:
                continue
            mine = _plain(f.metadata[k])
            if isinstance(mine, list) and mine and isinstance(mine[0], list):
                # gguf-py returns the elements of an array of arrays concatenated: compare them that way
                row(
                    f"{k}: value (flattened: gguf-py concatenates nested arrays)",
                    [v for a in mine for v in a],
                    _plain(gf.contents()),
                )
            else:
                row(f"{k}: value", mine, _plain(gf.contents()))
            gt = gf.types[-1].name.lower()
            for _ in gf.types[:-1]:
                gt = f"array[{gt}]"
            row(f"{k}: type", type_name(f.metadata.type_of(k)), gt)
            row(f"{k}: offset", f.metadata.offset_of(k), int(gf.offset))
        g_t = {t.name: t for t in r.tensors}
        row("tensors (in order)", list(f.tensors), list(g_t))
        for name, t in f.tensors.items():
            gt = g_t.get(name)
            if gt is None:
                continue
            row(f"{name}: ggml type", t.format.name, gguf_py.GGMLQuantizationType(int(gt.tensor_type)).name)
            row(f"{name}: ne", list(t.ne), [int(v) for v in gt.shape])
            row(f"{name}: data starts at byte", t.file_offset, int(gt.data_offset))
            same = bool(
                np.array_equal(
                    np.asarray(t.data).reshape(-1).view(np.uint8), np.asarray(gt.data).reshape(-1).view(np.uint8)
                )
            )
            rows.append(
                {
                    "what": f"{name}: data bytes",
                    "quantlab": f"{t.nbytes} bytes",
                    "gguf_py": f"{int(gt.n_bytes)} bytes" + ("" if same else " (different bytes)"),
                    "equal": same and t.nbytes == int(gt.n_bytes),
                }
            )
    return rows
