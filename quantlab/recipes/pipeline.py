"""Quantize a whole GGUF model the way llama-quantize does, byte for byte.

    >>> r = quantize_model("model.gguf", "model-Q4_K_M.gguf", "Q4_K_M", imatrix="imatrix.gguf")
    >>> r.plan.table(), r.seconds, r.bpw

What happens, in order (the same order llama-quantize follows, so the output file is identical):

1. the plan (:func:`quantlab.recipes.make_plan`): every tensor's target format, tensors in llama.cpp's
   order (non-layer tensors, then by layer, names sorted); everything that could fail (unknown type,
   missing imatrix, imatrix of another model, requantization not allowed) is checked *before* the output
   file is created;
2. the metadata: the input's pairs in their order, then ``general.quantization_version`` = 2 and
   ``general.file_type`` moved to the end, split keys dropped, then the ``quantize.imatrix.*`` keys. The
   copied pairs are copied as their bytes (``Metadata.encoded``): the tokenizer's 49,152 tokens and
   48,900 merges are never decoded to Python strings and encoded back;
3. the header and tensor table (every size is known from the plan, so it is written first), then tensor
   by tensor: bytes copied when the type does not change, otherwise dequantized to float32 in slabs of
   rows and quantized with quantlab's kernels (all cores), each tensor padded to 32 bytes. A
   write-behind thread writes tensor i (one ``writev`` from the array's memory) while tensor i+1 is
   quantized, and a decode-ahead thread decodes tensor i+2's first slab meanwhile. The input is mapped, and each source tensor's pages are released once it is quantized
   (:meth:`quantlab.gguf.GGUFFile.release`): they do not pile up in the resident set, which stays about
   the biggest tensor's output plus a 64 MB slab whatever the model's size (``tools/scale_7b.py``
   measures it on a 7B-shaped F16 model).

A big-endian input (gguf-py's ``--bigendian``) is read through the reader's byte-order-aware path and
written little-endian: the output is byte for byte what llama-quantize writes for the little-endian
conversion of the same file (llama-quantize itself refuses a big-endian file on a little-endian machine:
"is there a mismatch between the host and model endianness?", exit 1, nothing written). Big-endian files
with quantized tensors are refused before anything is written: GGUF does not record which fields of a
block were swapped (gguf-py leaves blocks as they are, ``gguf_convert_endian`` swaps their scales).

The output appears under its name only when complete (``quantlab.gguf.GGUFWriter`` writes a temporary
file and renames it); the input is only ever read. Like llama-quantize, it does not wait for the disk
(``fsync=True`` does).

``QuantizeResult.seconds`` is the time of this call: opening, planning, quantizing, writing, the rename.
In a fresh process, Python's start-up, the imports and numba's start-up come on top (about 0.3 s of CPU
for ``quantlab quantize``, which spares numba its optional imports and its compiler's set-up: see
:func:`quantlab.recipes.cli.quick_numba_start`); the command prints both times.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .. import gguf
from ..api import dequantize, quantize
from ..errors import FormatError, ImatrixError, ImatrixRequired, QuantlabError
from ..gguf import GGUFWriter, MetadataDict, ValueType
from .ftypes import FileType, file_type
from .imatrix import ImatrixData, ImatrixSource, as_imatrix
from .select import ModelInfo, Options, Plan, TensorSpec, make_plan

__all__ = ["quantize_model", "plan_model", "QuantizeResult", "RecipeError"]

QUANTIZATION_VERSION = 2  # GGML_QNT_VERSION
ALIGNMENT = 32  # GGUF_DEFAULT_ALIGNMENT, what llama-quantize pads with
SLAB_BYTES = 64 * 1024 * 1024  # float32 rows dequantized at once (bounds memory for huge tensors)
_WRITE_BEHIND = True  # write tensor i on a background thread while tensor i+1 is quantized
_DECODE_AHEAD = True  # decode tensor i+1 on a background thread while tensor i is quantized


class RecipeError(QuantlabError, ValueError):
    """A whole-model quantization cannot run as asked (paths, options, requantization)."""


@dataclass
class QuantizeResult:
    """What :func:`quantize_model` did."""

    plan: Plan
    path: str
    nbytes: int  # output file size
    seconds: float
    src_nbytes: int  # tensor data in the input
    tensor_nbytes: int  # tensor data in the output

    @property
    def bpw(self) -> float:
        return 8.0 * self.tensor_nbytes / max(1, self.plan.n_elements)

    def summary(self) -> str:
        mib = 1024.0 * 1024.0
        n = max(1, self.plan.n_elements)
        return (
            f"model size  = {self.src_nbytes / mib:8.2f} MiB ({8.0 * self.src_nbytes / n:.2f} BPW)\n"
            f"quant size  = {self.tensor_nbytes / mib:8.2f} MiB ({self.bpw:.2f} BPW)\n"
            f"file        = {self.path} ({self.nbytes} bytes)\n"
            f"time        = {self.seconds:.2f} s"
        )

    def sha256(self) -> str:
        return file_sha256(self.path)


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file, as ``sha256sum`` prints it (what the byte-identity checks compare)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _trim_ne(ne) -> tuple:
    ne = tuple(int(v) for v in ne)
    while len(ne) > 1 and ne[-1] == 1:  # ggml_n_dims: llama.cpp's writer drops trailing 1s
        ne = ne[:-1]
    return ne


def _open(path):
    p = os.fspath(path)
    if not os.path.exists(p):
        raise RecipeError(f"input model {p!r} does not exist")
    return gguf.open(p)


def _options(options, kw) -> Options:
    if options is not None and kw:
        raise RecipeError(f"give either options=Options(...) or keyword options, not both ({', '.join(kw)})")
    return options if options is not None else Options(**kw)


def plan_model(
    model: str | os.PathLike | gguf.GGUFFile,
    ftype: str | int | FileType,
    *,
    imatrix: ImatrixSource | None = None,
    options: Options | None = None,
    check: bool = False,
    **kw,
) -> Plan:
    """The plan for a GGUF file (path or an open ``quantlab.gguf`` file), without quantizing anything.
    ``check=True`` refuses exactly as :func:`quantize_model` would (requantization not allowed, an imatrix
    missing or computed for another model): what ``quantlab quantize --dry-run`` uses."""
    opts = _options(options, kw)
    f = _open(model) if isinstance(model, (str, os.PathLike)) else model
    im = as_imatrix(imatrix)
    specs = [TensorSpec(n, t.ne, t.format) for n, t in f.tensors.items()]
    plan = make_plan(specs, ftype, ModelInfo.from_metadata(f.metadata), opts, has_imatrix=bool(im))
    if check:
        _check(plan, f, im if im else None)
    return plan


def _check(plan: Plan, f, im: ImatrixData | None) -> dict:
    """Everything llama-quantize would abort on, before any output exists. Returns name -> imatrix."""
    opts = plan.options
    per_tensor = {}
    if getattr(f, "byte_order", "little") != "little":
        bad = [n for n, t in f.tensors.items() if not t.swappable]
        if bad:
            t = f.tensors[bad[0]]
            raise RecipeError(
                f"{f.path!r} is a big-endian GGUF file with {len(bad)} quantized tensor(s) (first: {bad[0]}, "
                f"{t.format.name}); which fields of their blocks were byte-swapped is not recorded in GGUF, so "
                f"they cannot be read reliably. Convert the original model to GGUF little-endian (llama.cpp "
                f"itself refuses big-endian files on a little-endian machine)"
            )
    if im is not None:
        names = set(f.tensors)
        if not any(k in names for k in im):
            sample = ", ".join(list(im)[:3])
            raise ImatrixError(
                f"none of the {len(im)} imatrix entries ({sample}, ...) names a tensor of this model: the "
                f"imatrix was computed for another model"
            )
    for t in plan:
        if t.action != "quantize":
            continue
        if not t.fmt.has_impl("fast", "quantize") and not t.fmt.has_impl("reference", "quantize"):
            raise FormatError(f"{t.name}: quantlab cannot quantize to {t.fmt.name} yet")
        if t.src.is_quantized and not opts.allow_requantize:
            raise RecipeError(
                f"{t.name} is already quantized ({t.src.name}); requantizing loses quality compared to "
                f"quantizing from F16/F32, so it must be asked for: allow_requantize=True "
                f"(--allow-requantize)"
            )
        ent = None
        if im is not None and t.name in im:
            v = im[t.name]
            n_mat = t.ne[2] if len(t.ne) > 2 else 1
            if v.size == t.ne[0] * n_mat:
                ent = v
            elif t.name not in ("token_embd.weight", "per_layer_token_embd.weight"):
                raise ImatrixError(
                    f"the imatrix entry for {t.name} has {v.size} values, but the tensor has "
                    f"{t.ne[0] * n_mat} input columns: the imatrix was computed for another model"
                )
        if ent is None and t.requires_imatrix:
            how = "the imatrix has no entry for it" if im is not None else "no imatrix was given"
            raise ImatrixRequired(
                f"{t.name} would be quantized to {t.fmt.name} in {plan.ftype.name}, a type that gives "
                f"garbage without an importance matrix, and {how}. Compute one (llama-imatrix, or "
                f"quantlab.model.compute_imatrix) and pass imatrix=FILE / --imatrix FILE"
            )
        per_tensor[t.name] = ent
    return per_tensor


_SET_OR_DROPPED = (
    "general.quantization_version",
    "general.file_type",
    "split.no",
    "split.count",
    "split.tensors.count",
)


def _metadata(f, ft, im: ImatrixData | None, imatrix_arg):
    """The output's metadata: the input's pairs copied as their bytes (``Metadata.encoded``: the
    tokenizer's arrays are never decoded), then the keys llama-quantize sets, at the end."""
    md = MetadataDict()
    for k in f.metadata:
        if k not in _SET_OR_DROPPED:
            md.set(k, f.metadata.encoded(k))
    md.set("general.quantization_version", QUANTIZATION_VERSION, ValueType.UINT32)
    md.set("general.file_type", ft.value, ValueType.UINT32)
    if im is not None and len(im):
        src = os.fspath(imatrix_arg) if isinstance(imatrix_arg, (str, os.PathLike)) else (im.path or "")
        # llama-quantize copies these strings into 128-byte override slots (127 bytes + NUL)
        if src:
            md.set("quantize.imatrix.file", _cut(src), ValueType.STRING)
        if im.datasets:
            md.set("quantize.imatrix.dataset", _cut(im.datasets[0]), ValueType.STRING)
        md.set("quantize.imatrix.entries_count", len(im), ValueType.UINT32)
        if im.chunk_count > 0:
            md.set("quantize.imatrix.chunks_count", int(im.chunk_count), ValueType.UINT32)
    return md


def _cut(s: str) -> str:
    b = s.encode("utf-8")[:127]
    return b.decode("utf-8", "ignore")


def _slabs(t):
    """The row ranges [r, end) a tensor is decoded and quantized in: at most SLAB_BYTES of float32 each,
    never across an expert boundary (each expert has its own imatrix slice)."""
    ne0 = t.ne[0]
    n_rows = t.n_elements // ne0
    rows_per_mat = t.ne[1] if len(t.ne) > 1 else 1
    slab = max(1, min(n_rows, SLAB_BYTES // (4 * ne0)))
    r = 0
    while r < n_rows:
        end = min(n_rows, r + slab, (r // rows_per_mat + 1) * rows_per_mat)
        yield r, end
        r = end


def _decode(t, src, r, end, impl) -> np.ndarray:
    """Rows [r, end) of the source tensor ``src`` (a quantlab GGUFTensor) as float32."""
    raw = src.little_endian_data().reshape(t.n_elements // t.ne[0], -1)  # a byte-swapped copy (big-endian)
    if t.src.name == "F32":
        return np.ascontiguousarray(raw[r:end]).view("<f4").astype(np.float32, copy=False)
    d_impl = impl if t.src.has_impl(impl, "dequantize") else "reference"
    # decoding runs at GB/s: one thread, never a parallel region that a busy machine can stall (threads
    # pay off for the quantize searches, and the next tensor's decoding overlaps them: _DecodeAhead)
    return dequantize(raw[r:end], t.src, impl=d_impl, threads=1)


def _quantize_tensor(t, src, fmt, imat, threads, impl, first=None) -> np.ndarray:
    """Dequantize ``src`` (a quantlab GGUFTensor) slab by slab and quantize to ``fmt``. ``first``: the
    first slab, already decoded (by :class:`_DecodeAhead`)."""
    ne0 = t.ne[0]
    n_rows = t.n_elements // ne0
    rows_per_mat = t.ne[1] if len(t.ne) > 1 else 1
    out = None
    q_impl = impl if fmt.has_impl(impl, "quantize") else "reference"
    for r, end in _slabs(t):
        mat = r // rows_per_mat
        x = first if r == 0 and first is not None else _decode(t, src, r, end, impl)
        im = None if imat is None else imat[mat * ne0 : (mat + 1) * ne0]
        q = quantize(x, fmt, imatrix=im, impl=q_impl, threads=threads)
        if r == 0 and end == n_rows:
            return q  # one slab (the usual case): no copy
        if out is None:
            out = np.empty((n_rows, q.shape[1]), dtype=np.uint8)
        out[r:end] = q
    if out is None:  # no rows (a dimension of 0)
        out = np.empty((0, 0), dtype=np.uint8)
    return out


class _DecodeAhead:
    """Decodes the first slab of the next tensor to quantize on a background thread while the main thread
    quantizes the current one (the decoding kernels release the GIL): the decoding leaves the main
    thread's path, whose start-up and per-tensor steps are otherwise serial. One slab waits at most
    (SLAB_BYTES of float32). Order and bytes are unchanged; an error in the decoding is raised in the
    main thread when that tensor's turn comes (``take``)."""

    def __init__(self, f, impl):
        self._f, self._impl = f, impl
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quantlab-decode")
        self._name, self._fut = None, None

    def start(self, t) -> None:
        """Begin decoding the first slab of the plan entry ``t`` (a tensor to quantize)."""
        r, end = next(_slabs(t), (0, 0))
        if end > r:
            src = self._f.tensors[t.name]
            self._name, self._fut = t.name, self._pool.submit(_decode, t, src, r, end, self._impl)

    def take(self, name):
        """The decoded first slab of ``name``, or None when it was not started."""
        if self._fut is None or self._name != name:
            return None
        fut, self._fut, self._name = self._fut, None, None
        return fut.result()

    def close(self) -> None:
        """Wait for a decoding in flight (it reads the mapped input, which is closed next) and stop."""
        if self._fut is not None:
            self._fut.cancel()
        self._pool.shutdown(wait=True)
        self._fut = None


class _WriteBehind:
    """Writes each tensor on a background thread while the main thread quantizes the next one (the row
    kernels and the ``writev`` system call both release the GIL). At most ``depth`` writes wait, so
    memory stays bounded; the first error of a write is raised in the main thread at the next ``put``
    or at ``finish``."""

    def __init__(self, writer, depth: int = 2):
        self._w, self._depth = writer, depth
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quantlab-write")
        self._pending: list = []

    def put(self, name, data) -> None:
        while len(self._pending) >= self._depth:
            self._pending.pop(0).result()
        self._pending.append(self._pool.submit(self._w.write_tensor, name, data))

    def finish(self) -> None:
        """Wait for every write; raise the first error."""
        try:
            while self._pending:
                self._pending.pop(0).result()
        finally:
            self.cancel()

    def cancel(self) -> None:
        """Drop the writes not started, wait for the one running (errors ignored: the caller aborts)."""
        for fut in self._pending:
            fut.cancel()
        self._pool.shutdown(wait=True)
        self._pending = []


def quantize_model(
    inp: str | os.PathLike,
    out: str | os.PathLike,
    ftype: str | int | FileType,
    *,
    imatrix: ImatrixSource | None = None,
    options: Options | None = None,
    threads: int | None = None,
    progress: bool = True,
    verbose: bool = True,
    impl: str = "fast",
    log=None,
    fsync: bool = False,
    **kw,
) -> QuantizeResult:
    """Quantize the GGUF model ``inp`` into ``out`` with llama.cpp's file type ``ftype``.

    Keyword options are llama-quantize's: ``allow_requantize``, ``pure``, ``output_tensor_type``,
    ``token_embedding_type``, ``leave_output_tensor``, ``tensor_types`` (``["attn_v=q8_0", ...]``); or
    pass ``options=Options(...)``. ``imatrix``: a file (GGUF or legacy .dat) or a mapping name -> values.
    ``threads``: numba threads (default: all cores; never changes a byte). Prints the plan, a progress bar
    and a summary unless ``verbose=False`` / ``progress=False``. ``fsync=True`` waits until the file is
    on the disk before moving it into place; by default, like llama-quantize, the operating system
    writes it out in its own time (either way the output appears under its name only when complete).
    """
    t0 = time.perf_counter()
    ft = file_type(ftype)
    opts = _options(options, kw)
    inp_s, out_s = os.fspath(inp), os.fspath(out)
    if (os.path.exists(out_s) and os.path.exists(inp_s) and os.path.samefile(inp_s, out_s)) or os.path.realpath(
        inp_s
    ) == os.path.realpath(out_s):
        raise RecipeError(
            f"input and output are the same file ({inp_s!r}): the output is written next to "
            f"the input and moved into place, which would replace the model being read"
        )
    if impl not in ("fast", "reference"):
        raise RecipeError(f"impl must be 'fast' or 'reference', got {impl!r}")
    say = log or (lambda s: print(s, file=sys.stderr, flush=True))
    if not verbose:
        say = lambda s: None  # noqa: E731
    f = _open(inp_s)
    try:
        im = as_imatrix(imatrix)
        if im is not None and len(im) == 0:
            im = None
        specs = [TensorSpec(n, t.ne, t.format) for n, t in f.tensors.items()]
        plan = make_plan(specs, ft, ModelInfo.from_metadata(f.metadata), opts, has_imatrix=im is not None)
        per_tensor = _check(plan, f, im)
        say(f"quantizing {inp_s!r} to {out_s!r} as {ft.name}" + (f" using {threads} threads" if threads else ""))
        if f.byte_order != "little":
            say("the input is big-endian: its values are decoded in its byte order, the output is little-endian")
        if im is not None:
            say(f"imatrix: {len(im)} entries, {im.chunk_count} chunks, datasets {im.datasets}")
        say(plan.table())
        md = _metadata(f, ft, im, imatrix)

        w = GGUFWriter(out_s, md, alignment=None, fsync=fsync)
        for t in plan:
            w.add_tensor(t.name, ne=_trim_ne(t.ne), format=t.fmt)
        bar = None
        if progress:
            try:
                # tqdm.auto (~45 ms): only when a bar is shown
                from tqdm.auto import tqdm

                bar = tqdm(
                    total=plan.nbytes,
                    unit="B",
                    unit_scale=True,
                    desc=f"quantize {ft.name}",
                    file=sys.stderr,
                    leave=verbose,
                )
            except ImportError:  # pragma: no cover
                bar = None
        behind = _WriteBehind(w) if _WRITE_BEHIND else None
        ahead = _DecodeAhead(f, impl) if _DECODE_AHEAD else None
        todo = [t for t in plan if t.action != "copy"]  # in plan order: the next one is decoded ahead
        after = {a.name: b for a, b in zip(todo, todo[1:])}
        try:
            for t in plan:
                src = f.tensors[t.name]
                if t.action == "copy":
                    data = src.little_endian_data()
                else:
                    first = None
                    if ahead is not None:
                        first = ahead.take(t.name)
                        if t.name in after:
                            ahead.start(after[t.name])
                    data = _quantize_tensor(t, src, t.fmt, per_tensor.get(t.name), threads, impl, first)
                    release = getattr(f, "release", None)
                    if release is not None:
                        release(src)  # its pages leave our RSS (a 7B F16 input: 13.5 GB of them)
                if behind is not None:
                    behind.put(t.name, data)
                else:
                    w.write_tensor(t.name, data)
                if bar is not None:
                    bar.set_postfix_str(f"{t.name} -> {t.fmt.name}", refresh=False)
                    bar.update(t.nbytes)
            if behind is not None:
                behind.finish()
            w.close()
        except BaseException:
            if behind is not None:
                behind.cancel()
            w.abort()
            raise
        finally:
            if ahead is not None:
                ahead.close()  # before the input is unmapped
            if bar is not None:
                bar.close()
    finally:
        close = getattr(f, "close", None)
        if close:
            close()
    res = QuantizeResult(plan, out_s, os.path.getsize(out_s), time.perf_counter() - t0, plan.src_nbytes, plan.nbytes)
    say(res.summary())
    if plan.n_fallback:
        say(f"{plan.n_fallback} of {len(plan)} tensor(s) required fallback quantization")
    return res
