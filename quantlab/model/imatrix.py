"""Importance matrices, collected the way ``llama-imatrix`` does, saved/loaded in its two file formats.

For every weight matrix ``blk.*`` (and ``output.weight`` with ``process_output``), every batch of at least
16 activation rows that enters it adds, per input column j, the squares of those activations::

    in_sum2[j] += a[t, j]^2   (float32, token after token)      counts += number of rows

The value quantizers use is the mean: ``in_sum2[j] / counts`` (spec §9.6). The text is tokenized and
cut into ``n_ctx``-token chunks exactly as for perplexity; each chunk runs from an empty cache.

Files (both written and read here, interchangeable with llama.cpp's):

* GGUF (default, ``.gguf``): ``general.type = "imatrix"``, ``imatrix.datasets`` (array of str),
  ``imatrix.chunk_count``, ``imatrix.chunk_size`` (uint32), and per weight two F32 tensors
  ``<name>.in_sum2`` [n_mat, ne0] and ``<name>.counts`` [n_mat, 1], sorted by name.
* legacy ``.dat``: int32 n_entries; per entry int32 name length, name, int32 ncall, int32 nval,
  float32[nval] = (in_sum2 / count) * ncall with ncall = ceil(max count / chunk_size); then int32 chunk
  count, int32 dataset-name length, dataset name.
"""

from __future__ import annotations

import os
import pathlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import cast

import numpy as np
from numba import njit

from ..errors import GGUFError, ImatrixError, ModelError
from ..progress import Progress, callback
from .eval import chunks_of
from .llama import Model
from .llama import threads as _threads


@njit(cache=True)
def _acc_sq(acc, x):
    """acc[j] += x[t, j]^2 for t in order (float32, the accumulation order of llama-imatrix)."""
    for t in range(x.shape[0]):
        for j in range(x.shape[1]):
            acc[j] += x[t, j] * x[t, j]


@dataclass
class Imatrix:
    """Per weight name: raw sums of squared activations (``in_sum2``, float32 [n_mat * ne0]) and token
    counts (float [n_mat]). ``im[name]`` is the mean per column that :func:`quantlab.quantize` takes."""

    sums: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    chunk_count: int = 0
    chunk_size: int = 512
    datasets: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> np.ndarray:
        """Mean squared activation per column, as llama-quantize computes it from the file: the
        count of each matrix is rounded (lround) and the float32 sums divided by it; 1.0 where a
        matrix (an expert) saw no token."""
        if name not in self.sums:
            raise KeyError(name)
        s = np.asarray(self.sums[name], dtype=np.float32)
        c = np.asarray(self.counts[name], dtype=np.float64)
        ne0 = len(s) // len(c)
        cr = np.floor(np.abs(c) + 0.5) * np.sign(c)  # lround
        out = np.ones_like(s)
        for i in range(len(c)):
            if cr[i] > 0:
                out[i * ne0 : (i + 1) * ne0] = s[i * ne0 : (i + 1) * ne0] / np.float32(cr[i])
        return out

    def __contains__(self, name: object) -> bool:
        return name in self.sums

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.sums))

    def __len__(self) -> int:
        return len(self.sums)

    def names(self) -> list[str]:
        return sorted(self.sums)

    def as_dict(self) -> dict[str, np.ndarray]:
        return {k: self[k] for k in self.names()}

    def __repr__(self):
        return f"<Imatrix {len(self)} weights, {self.chunk_count} chunks of {self.chunk_size}>"

    # -- files -------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, format: str | None = None) -> str:
        """Write ``path`` as llama.cpp does: GGUF unless ``format='dat'`` or the name ends in .dat."""
        path = str(path)
        fmt = format or ("dat" if path.endswith(".dat") else "gguf")
        if fmt == "dat":
            _save_dat(self, path)
        elif fmt == "gguf":
            _save_gguf(self, path)
        else:
            raise ImatrixError(f"imatrix file format must be 'gguf' or 'dat', got {format!r}")
        return path


def save_imatrix(im: Imatrix, path: str | os.PathLike, format: str | None = None) -> str:
    return im.save(path, format)


def _save_gguf(im: Imatrix, path: str) -> None:
    # lazy: quantlab.gguf is ~20 ms that `import quantlab.model` does not pay
    from ..gguf import ArrayOf, TensorSource, ValueType, write
    from ..gguf.reader import MetadataDict

    md = MetadataDict()
    md.set("general.type", "imatrix", ValueType.STRING)
    md.set("imatrix.datasets", list(im.datasets), ArrayOf(ValueType.STRING))
    md.set("imatrix.chunk_count", int(im.chunk_count), ValueType.UINT32)
    md.set("imatrix.chunk_size", int(im.chunk_size), ValueType.UINT32)
    tensors = []
    for name in sorted(im.sums):
        s = np.ascontiguousarray(im.sums[name], dtype=np.float32)
        c = np.asarray(im.counts[name], dtype=np.float32)
        n_mat = len(c)
        ne0 = len(s) // n_mat
        # ggml writes n_dims = number of dims up to the last one > 1 (at least 1)
        ne_s = (ne0,) if n_mat == 1 else (ne0, n_mat)
        ne_c = (1,) if n_mat == 1 else (1, n_mat)
        tensors.append((f"{name}.in_sum2", TensorSource(s.reshape(n_mat, ne0), format="F32", ne=ne_s)))
        tensors.append((f"{name}.counts", TensorSource(c.reshape(n_mat, 1), format="F32", ne=ne_c)))
    write(path, md, tensors)


def _save_dat(im: Imatrix, path: str) -> None:
    names = [n for n in sorted(im.sums) if np.any(np.asarray(im.counts[n]) > 0)]
    with open(path, "wb") as f:
        f.write(struct.pack("<i", len(names)))
        for name in names:
            s = np.asarray(im.sums[name], dtype=np.float32)
            c = np.asarray(im.counts[name], dtype=np.float32)
            b = name.encode("utf-8")
            f.write(struct.pack("<i", len(b)) + b)
            ncall = int((int(c.max()) + im.chunk_size - 1) // im.chunk_size)
            nmat = len(c)
            per = len(s) // nmat
            cnt = np.repeat(c, per)
            val = np.where(cnt == 0, np.float32(1), s)
            cnt = np.where(cnt == 0, np.float32(1), cnt)
            tmp = ((val / cnt).astype(np.float32) * np.float32(ncall)).astype("<f4")
            f.write(struct.pack("<ii", ncall, len(s)))
            f.write(tmp.tobytes())
        f.write(struct.pack("<i", int(im.chunk_count)))
        ds = (im.datasets[-1] if im.datasets else "").encode("utf-8")
        f.write(struct.pack("<i", len(ds)) + ds)


def load_imatrix(path: str | os.PathLike) -> Imatrix:
    """Read an imatrix written by llama-imatrix (or :meth:`Imatrix.save`): GGUF first, else legacy
    .dat. The one reader of imatrix files (quantlab.recipes.load_imatrix_file uses it too)."""
    p = pathlib.Path(path)
    if not p.exists():
        raise ImatrixError(f"no such imatrix file: {p}")
    with open(p, "rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        return _load_gguf(p)
    return _load_dat(p)


def _load_gguf(p) -> Imatrix:
    # lazy: see _save_gguf
    from ..gguf import open as open_gguf

    try:
        f = open_gguf(p)
    except GGUFError as e:
        raise ImatrixError(f"not a readable imatrix file: {e}") from None  # e names the file
    with f:
        md = f.metadata
        missing = [k for k in ("imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size") if k not in md]
        if missing:
            raise ImatrixError(
                f"{p.name} is a GGUF file but not an imatrix: it has no {', '.join(missing)} (llama.cpp rejects it too)"
            )
        ds = md["imatrix.datasets"]
        im = Imatrix(
            chunk_count=int(cast(int, md["imatrix.chunk_count"])),  # a GGUF value: int() checks it
            chunk_size=int(cast(int, md["imatrix.chunk_size"])),
            datasets=[ds] if isinstance(ds, str) else [str(d) for d in ds],
        )
        ts = f.tensors
        sums = {tn[: -len(".in_sum2")] for tn in ts if tn.endswith(".in_sum2")}
        counts = {tn[: -len(".counts")] for tn in ts if tn.endswith(".counts")}
        for name in sorted(sums | counts):
            if name not in sums or name not in counts:
                raise ImatrixError(f"{p.name}: {name} has sums without counts or counts without sums")
            st, ct = ts[name + ".in_sum2"], ts[name + ".counts"]
            if st.format.name != "F32" or ct.format.name != "F32":
                raise ImatrixError(f"{p.name}: the sums and counts of {name} must be F32")
            sv = np.array(st.numpy(), dtype=np.float32).reshape(-1)
            cv = np.array(ct.numpy(), dtype=np.float32).reshape(-1)
            if len(cv) == 0 or len(sv) % len(cv):
                raise ImatrixError(f"{p.name}: {name} has {len(sv)} sums for {len(cv)} counts")
            im.sums[name] = sv
            im.counts[name] = cv
    return im


def _load_dat(p) -> Imatrix:
    data = p.read_bytes()
    pos = 0

    def take(fmt):
        nonlocal pos
        n = struct.calcsize(fmt)
        if pos + n > len(data):
            raise ImatrixError(f"{p.name} is truncated at byte {pos}: not a legacy imatrix (.dat) file")
        v = struct.unpack_from(fmt, data, pos)
        pos += n
        return v

    (n_entries,) = take("<i")
    if n_entries < 1 or n_entries > 1 << 20:
        raise ImatrixError(f"{p.name} does not look like an imatrix file (entry count {n_entries})")
    im = Imatrix()
    ncalls = []
    for _ in range(n_entries):
        (ln,) = take("<i")
        if not 0 < ln < 4096:
            raise ImatrixError(f"{p.name}: bad name length {ln} at byte {pos - 4}")
        (name,) = take(f"<{ln}s")
        ncall, nval = take("<ii")
        if nval < 1 or pos + 4 * nval > len(data):
            raise ImatrixError(f"{p.name}: entry {name!r} has {nval} values or is truncated")
        vals = np.frombuffer(data, dtype="<f4", count=nval, offset=pos).astype(np.float32)
        pos += 4 * nval
        n = name.split(b"\0", 1)[0].decode("utf-8", "replace")
        # stored: mean * ncall. Keep it as sums over `ncall` pseudo-tokens, so that mean = value / ncall
        # (llama.cpp's loader divides by ncall, or uses the raw values when ncall is 0).
        im.sums[n] = vals.copy()
        im.counts[n] = np.array([float(ncall) if ncall > 0 else 1.0], dtype=np.float32)
        ncalls.append(ncall)
    if pos + 4 <= len(data):
        (im.chunk_count,) = take("<i")
        if pos + 4 <= len(data):
            (ln,) = take("<i")
            if ln > 0 and pos + ln <= len(data):
                im.datasets = [data[pos : pos + ln].split(b"\0", 1)[0].decode("utf-8", errors="replace")]
    if ncalls and im.chunk_count and max(ncalls) > 0:
        im.chunk_size = 512
    return im


def compute_imatrix(
    model: Model,
    text: str | None = None,
    n_ctx: int = 512,
    n_chunks: int | None = None,
    process_output: bool = False,
    threads: int | None = None,
    dataset: str = "quantlab.data.text()",
    progress: Progress = True,
) -> Imatrix:
    """Collect an importance matrix for every ``blk.*`` weight of ``model`` on ``text``, like
    ``llama-imatrix -c n_ctx --chunks n_chunks`` (``process_output`` adds output.weight when the model
    has one). Returns an :class:`Imatrix`; ``im[name]`` is what ``quantlab.quantize(..., imatrix=)``
    takes, ``im.save(path)`` writes the file llama-quantize reads. ``progress``: a bar (True, see
    :mod:`quantlab.progress`), nothing (False), or ``progress(i, n)`` called after every chunk."""
    chunks = chunks_of(model, text, n_ctx, n_chunks)

    progress = callback(progress, len(chunks), "imatrix", "chunk")
    im = Imatrix(chunk_size=n_ctx, datasets=[dataset] if dataset else [])
    sums, counts = im.sums, im.counts

    def hook(name, x):
        if x.shape[0] < 16:
            return
        if not (name.startswith("blk.") or (process_output and name == "output.weight")):
            return
        acc = sums.get(name)
        if acc is None:
            acc = sums[name] = np.zeros(x.shape[1], dtype=np.float32)
            counts[name] = np.zeros(1, dtype=np.float32)
        if acc.shape[0] != x.shape[1]:
            raise ModelError(f"inconsistent activation width for {name}")
        _acc_sq(acc, np.ascontiguousarray(x, dtype=np.float32))
        counts[name][0] += x.shape[0]

    old, old_stream = model.hook, model.stream
    model.hook = hook  # pyright: ignore[reportAttributeAccessIssue]  (Model.hook: None or a callable; llama.py is not annotated yet)
    model.stream = True
    try:
        with _threads(threads):
            for i, toks in enumerate(chunks):
                h = model.forward(toks, model.new_cache(n_ctx), outputs="all", logits=False)
                if process_output and not model.tied:
                    model.logits(h)
                im.chunk_count = i + 1
                if progress is not None:
                    progress(i + 1, len(chunks))
    finally:
        model.hook = old
        model.stream = old_stream
    for name, acc in sums.items():
        if not np.isfinite(acc).all():
            raise ModelError(f"non-finite activations collected for {name}")
    return im
