"""Importance-matrix files as llama-quantize reads them (spec §9.6).

llama-imatrix writes, per weight matrix, the *sum* of squared activations per input column and how many
tokens it saw. llama-quantize hands the quantizer the *mean*: ``sum / count`` (float32 division; 1.0
where a matrix, or an expert of it, saw no token). Two file layouts exist:

* GGUF (default): ``<name>.in_sum2`` (F32, ne = [cols, n_mat]) and ``<name>.counts`` (F32, ne = [1, n_mat]),
  plus ``imatrix.datasets`` / ``imatrix.chunk_count`` / ``imatrix.chunk_size`` metadata (required);
* legacy ``.dat``: int32 n_entries; per entry int32 name length, name, int32 ncall, int32 nval,
  float32[nval] (already divided by count and multiplied by ncall); optional trailer int32 chunk count,
  int32 dataset name length, dataset name. Values are divided by ncall.
"""
from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..errors import GGUFError, ImatrixError

__all__ = ["ImatrixData", "load_imatrix_file", "as_imatrix"]


@dataclass
class ImatrixData(Mapping):
    """``{tensor name: float32 mean squared activation per column}`` plus what the file says about itself."""

    entries: dict
    datasets: list = field(default_factory=list)
    chunk_count: int = 0
    path: str | None = None

    def __getitem__(self, k):
        return self.entries[k]

    def __iter__(self):
        return iter(self.entries)

    def __len__(self):
        return len(self.entries)

    def __repr__(self):
        return f"<ImatrixData {len(self)} entries, {self.chunk_count} chunks, datasets={self.datasets}>"


def load_imatrix_file(path) -> ImatrixData:
    """Read an imatrix file (GGUF or legacy .dat) exactly as llama-quantize does."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise ImatrixError(f"imatrix file {p!r} does not exist")
    with open(p, "rb") as fh:
        magic = fh.read(4)
    if magic == b"GGUF":
        return _load_gguf(p)
    return _load_legacy(p)


def _load_gguf(p: str) -> ImatrixData:
    from .. import gguf

    try:
        f = gguf.open(p)
    except GGUFError as e:
        raise ImatrixError(f"{p!r} is not a readable imatrix file: {e}") from None
    md = f.metadata
    missing = [k for k in ("imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size") if k not in md]
    if missing:
        raise ImatrixError(f"{p!r} is a GGUF file without the imatrix metadata ({', '.join(missing)}); "
                           f"it is not an importance matrix written by llama-imatrix / quantlab")
    sums, counts = {}, {}
    for name, t in f.tensors.items():
        if name.endswith(".in_sum2"):
            sums[name[:-len(".in_sum2")]] = t
        elif name.endswith(".counts"):
            counts[name[:-len(".counts")]] = t
    entries = {}
    for name in sorted(set(sums) | set(counts)):
        if name not in sums or name not in counts:
            raise ImatrixError(f"{p!r}: {name} has sums without counts or counts without sums")
        s, c = sums[name], counts[name]
        if s.format.name != "F32" or c.format.name != "F32":
            raise ImatrixError(f"{p!r}: sums and counts of {name} must be F32")
        sv = np.asarray(s.numpy(), dtype=np.float32).reshape(-1)
        cv = np.asarray(c.numpy(), dtype=np.float32).reshape(-1)
        n = len(cv)
        if n == 0 or len(sv) % n:
            raise ImatrixError(f"{p!r}: {name} has {len(sv)} sums for {n} counts")
        ne0 = len(sv) // n
        # counts are rounded to integers (lround), then used as float32 divisors
        cr = np.floor(np.abs(cv.astype(np.float64)) + 0.5) * np.sign(cv)
        e = np.ones(len(sv), dtype=np.float32)
        for j in range(n):
            cnt = np.float32(cr[j])
            if cnt > 0:
                e[j * ne0:(j + 1) * ne0] = sv[j * ne0:(j + 1) * ne0] / cnt
        entries[name] = e
    ds = md["imatrix.datasets"]
    ds = [ds] if isinstance(ds, str) else list(ds)
    return ImatrixData(entries, [str(d) for d in ds], int(md["imatrix.chunk_count"]), p)


def _load_legacy(p: str) -> ImatrixData:
    with open(p, "rb") as fh:
        b = fh.read()
    pos = 0

    def take(n, what):
        nonlocal pos
        if pos + n > len(b):
            raise ImatrixError(f"{p!r} is neither a GGUF imatrix nor a complete legacy .dat imatrix "
                               f"(file ends while reading {what} at byte {pos})")
        out = b[pos:pos + n]
        pos += n
        return out

    (n_entries,) = struct.unpack("<i", take(4, "the entry count"))
    if n_entries < 1:
        raise ImatrixError(f"{p!r} holds no imatrix entries (count {n_entries})")
    entries = {}
    for i in range(n_entries):
        (ln,) = struct.unpack("<i", take(4, f"entry {i}'s name length"))
        if ln < 0 or ln > 4096:
            raise ImatrixError(f"{p!r}: entry {i} has a name length of {ln}; this is not an imatrix file")
        name = take(ln, f"entry {i}'s name").split(b"\0", 1)[0].decode("utf-8", "replace")
        ncall, nval = struct.unpack("<ii", take(8, f"entry {i}'s counts"))
        if nval < 1:
            raise ImatrixError(f"{p!r}: entry {name} has {nval} values")
        v = np.frombuffer(take(4 * nval, f"entry {name}'s values"), dtype="<f4").astype(np.float32)
        entries[name] = (v / np.float32(ncall)).astype(np.float32) if ncall > 0 else v.copy()
    chunks, datasets = 0, []
    if pos < len(b):
        if pos + 4 <= len(b):
            (chunks,) = struct.unpack("<i", b[pos:pos + 4])
            pos += 4
            if pos + 4 <= len(b):
                (ln,) = struct.unpack("<i", b[pos:pos + 4])
                pos += 4
                if 0 < ln and pos + ln <= len(b):
                    datasets.append(b[pos:pos + ln].split(b"\0", 1)[0].decode("utf-8", "replace"))
    return ImatrixData(entries, datasets, int(chunks), p)


def as_imatrix(imatrix) -> ImatrixData | None:
    """Accept a path, an :class:`ImatrixData`, an object with ``.entries`` or ``.means`` (quantlab.model's
    imatrix), or a plain mapping name -> per-column values."""
    if imatrix is None:
        return None
    if isinstance(imatrix, ImatrixData):
        data = imatrix
    elif isinstance(imatrix, (str, os.PathLike)):
        data = load_imatrix_file(imatrix)
    else:
        ent = None
        for attr in ("means", "entries", "data"):
            v = getattr(imatrix, attr, None)
            if isinstance(v, Mapping):
                ent = v
                break
        if ent is None and callable(getattr(imatrix, "as_dict", None)):  # quantlab.model.Imatrix
            ent = imatrix.as_dict()
        if ent is None and isinstance(imatrix, Mapping):
            ent = imatrix
        if ent is None:
            raise ImatrixError(f"an imatrix is a file path or a mapping tensor name -> values, got {type(imatrix).__name__}")
        data = ImatrixData({str(k): np.asarray(v, dtype=np.float32).reshape(-1) for k, v in ent.items()},
                           list(getattr(imatrix, "datasets", []) or []),
                           int(getattr(imatrix, "chunk_count", 0) or 0), None)
    for k, v in data.entries.items():
        if not np.isfinite(v).all():
            bad = np.flatnonzero(~np.isfinite(v))[0]
            raise ImatrixError(f"imatrix entry {k} holds a non-finite value ({v[bad]} at column {bad}); "
                               f"llama-quantize refuses such a file")
    return data
