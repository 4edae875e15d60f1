"""``quantlab inspect FILE``: what is inside a GGUF file, on an 80-column terminal or as JSON.

Header (with the file type by name, as llama.cpp prints it), metadata (long arrays summarised), tensor table
(name, shape in llama.cpp's ``ne`` order -- row length first, as llama-quantize and llama.cpp's loader print
it --, format, bits per weight, bytes, offset), bytes and share of the file per format, the file's parameter
count and effective bits per weight. Everything taken from the file is printed through
``quantlab.cli.printable``: a hostile file cannot send escape sequences to the terminal, and bytes that are
not UTF-8 cannot stop the report.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from ..cli import model_file, printable, regular_file
from ..errors import QuantlabError
from ..recipes.ftypes import file_type
from .constants import ArrayOf, ValueType, type_name
from .reader import open as open_gguf

WIDTH = 80
_HEAD = 4  # array elements shown in the summaries


def _human(n: int) -> str:
    x = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if x < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return str(n)


def _clip(s: str, width: int) -> str:
    return s if len(s) <= width else s[: max(width - 1, 0)] + "…"


def _one_line(v) -> str:
    if isinstance(v, str):
        return repr(v)[1:-1] if "\n" in v or "\t" in v else v
    if isinstance(v, float):
        return f"{v:.8g}"
    return str(v)


def _head(value, spec, n) -> list:
    """The first ``n`` elements of an array value, each formatted for one line."""
    if spec.elem == ValueType.ARRAY:
        return [f"[{len(v)}]" for v in value[:n]]
    if isinstance(value, np.ndarray):
        return [_one_line(x) for x in value[:n].tolist()]
    return [repr(x) for x in value[:n]]


def _summary(md, key) -> str:
    spec = md.type_of(key)
    v = md[key]
    if not isinstance(spec, ArrayOf):
        return _one_line(v)
    n = len(v)
    return f"[{n}] {', '.join(_head(v, spec, _HEAD))}{', …' if n > _HEAD else ''}"


def _json_value(md, key, full: bool):
    spec = md.type_of(key)
    v = md[key]
    out = {"type": type_name(spec), "offset": md.offset_of(key)}
    if not isinstance(spec, ArrayOf):
        out["value"] = v
        return out
    out["count"] = len(v)
    if full or len(v) <= 16:
        out["value"] = _plain(v)
    else:
        out["head"] = _plain(v[:8])
    return out


def _plain(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v


def _shape(t) -> str:
    return "x".join(str(d) for d in t.ne) or "scalar"


def _file_type(md) -> dict | None:
    """``general.file_type`` as llama.cpp names it: {"value", "name", "description"}; None when absent."""
    if "general.file_type" not in md:
        return None
    v = md["general.file_type"]
    try:
        ft = file_type(int(v))
    except (QuantlabError, TypeError, ValueError, OverflowError):
        return {"value": v if isinstance(v, (int, float, str)) else str(v), "name": None, "description": "unknown"}
    return {"value": ft.value, "name": ft.name, "description": ft.description}


def summarize(f, full: bool = False) -> dict:
    """Everything ``quantlab inspect`` shows, as a JSON-ready dict."""
    tensors = list(f.tensors.values())
    per = {}
    for t in tensors:
        d = per.setdefault(t.format.name, {"format": t.format.name, "tensors": 0, "n_params": 0, "nbytes": 0})
        d["tensors"] += 1
        d["n_params"] += t.n_elements
        d["nbytes"] += t.nbytes
    n_params = sum(t.n_elements for t in tensors)
    tbytes = sum(t.nbytes for t in tensors)
    for d in per.values():
        d["share"] = d["nbytes"] / f.file_size
        d["bpw"] = 8 * d["nbytes"] / d["n_params"] if d["n_params"] else 0.0
    return {
        "path": os.path.abspath(f.path),
        "file_size": f.file_size,
        "version": f.version,
        "byte_order": f.byte_order,
        "alignment": f.alignment,
        "kv_count": len(f.metadata),
        "file_type": _file_type(f.metadata),
        "tensor_count": len(tensors),
        "data_offset": f.data_offset,
        "canonical_layout": f.canonical_layout,
        "metadata": {k: _json_value(f.metadata, k, full) for k in f.metadata},
        "tensors": [
            {
                "name": t.name,
                "shape": list(t.shape),
                "ne": list(t.ne),
                "format": t.format.name,
                "bpw": t.format.bpw,
                "nbytes": t.nbytes,
                "offset": t.offset,
                "file_offset": t.file_offset,
            }
            for t in tensors
        ],
        "formats": sorted(per.values(), key=lambda d: -d["nbytes"]),
        "n_params": n_params,
        "tensor_bytes": tbytes,
        "bpw": 8 * tbytes / n_params if n_params else 0.0,
        "bpw_file": 8 * f.file_size / n_params if n_params else 0.0,
    }


def render(f, out=None) -> None:
    """Print the human-readable report (80 columns)."""
    out = out or sys.stdout
    s = summarize(f)
    w = lambda line="": print(_clip(printable(line), WIDTH), file=out)  # noqa: E731
    w(os.path.basename(f.path))
    w(
        f"  GGUF v{f.version}, {f.byte_order}-endian, {s['file_size']:,} bytes ({_human(s['file_size'])}), "
        f"alignment {f.alignment}"
    )
    w(f"  {s['kv_count']} metadata keys, {s['tensor_count']} tensors, data section at byte {f.data_offset:,}")
    ft = s["file_type"]
    if ft is not None:
        w(
            f"  file type {ft['name']}" + (f" ({ft['description']})" if ft["description"] != ft["name"] else "")
            if ft["name"]
            else f"  file type {ft['value']!r} (not a llama_ftype)"
        )
    if s["n_params"]:
        w(
            f"  {s['n_params']:,} parameters, {s['bpw']:.3f} bits per weight "
            f"({s['bpw_file']:.3f} counting the whole file)"
        )
    if not f.canonical_layout:
        w("  note: tensor offsets differ from llama.cpp's layout (its loader would refuse this file)")
    w()
    w("Metadata")
    kw = min(40, max((len(k) for k in f.metadata), default=3))
    w(f"  {'key':<{kw}} {'type':<13} value")
    for k in f.metadata:
        line = f"  {_clip(k, kw):<{kw}} {type_name(f.metadata.type_of(k)):<13} {_summary(f.metadata, k)}"
        w(line)
    w()
    if s["tensors"]:
        w("Tensors")
        nw = 28
        w(f"  {'name':<{nw}} {'shape':>11} {'format':<7} {'bpw':>5} {'bytes':>9} {'offset':>11}")
        for t in f.tensors.values():
            w(
                f"  {_clip(t.name, nw):<{nw}} {_clip(_shape(t), 11):>11} {t.format.name:<7} {t.format.bpw:>5.2f} "
                f"{_human(t.nbytes):>9} {t.offset:>11}"
            )
        w()
        w("Formats")
        w(f"  {'format':<8} {'tensors':>7} {'parameters':>14} {'bytes':>15} {'of file':>8} {'bpw':>6}")
        for d in s["formats"]:
            w(
                f"  {d['format']:<8} {d['tensors']:>7} {d['n_params']:>14,} {d['nbytes']:>15,} "
                f"{100 * d['share']:>7.2f}% {d['bpw']:>6.3f}"
            )
        meta = f.data_offset
        w(f"  {'header':<8} {'':>7} {'':>14} {meta:>15,} {100 * meta / f.file_size:>7.2f}%")
        w(
            f"  {'total':<8} {s['tensor_count']:>7} {s['n_params']:>14,} {s['file_size']:>15,} {100.0:>7.2f}% "
            f"{s['bpw_file']:>6.3f}"
        )


def run(args) -> int:
    with open_gguf(regular_file(model_file(args.file))) as f:
        if args.json:
            json.dump(summarize(f, full=args.full), sys.stdout, indent=1)
            sys.stdout.write("\n")
        else:
            render(f)
    return 0


def register(sub):
    p = sub.add_parser("inspect", help="show what is inside a GGUF file (header, metadata, tensors, sizes)")
    p.add_argument("file", help="path of a .gguf file ('smollm2': the shipped SmolLM2-135M-Instruct Q4_1)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--full", action="store_true", help="with --json: every element of long arrays")
    p.set_defaults(func=run)
