"""Write GGUF v3 files (little-endian), one tensor at a time, atomically.

Layout conventions are llama.cpp's (``gguf_write_to_file``), so a file written here can be byte-identical
to one written by llama-quantize:

* header, then the metadata pairs in the order given, then the tensor infos in the order given;
* zero padding to ALIGNMENT after the infos (always), ALIGNMENT = ``general.alignment`` or 32;
* tensor data in info order, each at the running sum of the previous tensors' padded sizes, each followed
  by zero padding to ALIGNMENT;
* ``n_dims`` as the source tensor had it (a tensor read by quantlab keeps its stored ``ne``; plain arrays
  give ``len(shape)`` like gguf-py), or, with ``trim_dims=True``, ggml's ``ggml_n_dims`` (trailing 1s
  dropped) like llama.cpp's C writer, for every tensor whose ``ne`` is not given explicitly.

To reproduce llama-quantize's metadata order: it copies the source's pairs in order, then *moves* the keys
it sets to the end (``gguf_set_val_*`` removes, then appends): use ``MetadataDict.replace`` for those.

The file is written to a temporary file in the target's directory and moved over the target with
``os.replace`` only when complete: an interrupted or failed write never leaves a truncated file under the
target name, and the temporary file is removed on error. With ``fsync=True`` (the default) the data reach
the disk before the rename, so even a power cut right after leaves the old file or the whole new one;
``fsync=False`` leaves that to the operating system (llama.cpp's writers do not sync).

Each tensor goes to the file in one ``os.writev`` system call together with its padding, straight from
the array's memory (no copy in a Python buffer). The file's blocks are reserved first
(``fallocate``, see :func:`_preallocate`).

Metadata types: a key keeps the type recorded by the source (``Metadata.type_of`` / ``MetadataDict``),
a :class:`~quantlab.gguf.constants.Value` pins one, and plain Python values get an inferred type
(:func:`infer_type`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import struct
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..api import dequantize, quantize
from ..errors import FormatError, GGUFError
from ..formats.registry import Format
from ..formats.registry import get as get_format
from .constants import (
    DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    GGUF_VERSION,
    MAX_DIMS,
    MAX_NAME,
    ArrayOf,
    Encoded,
    Value,
    ValueType,
)
from .values import encode_value, infer_type, type_str

__all__ = ["GGUFWriter", "write", "TensorSource", "infer_type", "encode_value"]

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_PLAIN_DTYPE_FORMAT = {
    ("f", 4): "F32",
    ("f", 2): "F16",
    ("f", 8): "F64",
    ("i", 1): "I8",
    ("i", 2): "I16",
    ("i", 4): "I32",
    ("i", 8): "I64",
}
_FORMAT_DTYPE = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I8": "<i1", "I16": "<i2", "I32": "<i4", "I64": "<i8"}


def _pad(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def _preallocate(fd: int, size: int) -> None:
    """Reserve the whole file's blocks before writing (the size is known from the tensor table). Besides
    failing at once when the disk is too small, this makes the final ``os.replace`` over an existing file
    cheap on ext4: a renamed-over target makes ext4 allocate and start writing out every delayed-allocation
    block of the new file inside the rename (its ``auto_da_alloc`` safeguard), measured 90 ms of a 145 MB
    SmolLM2 Q8_0 file's rename, 12-36 ms when the blocks were reserved first.

    Linux's ``fallocate(2)`` itself, not ``posix_fallocate``: where the filesystem cannot reserve blocks
    (NFSv3, some FUSE mounts) glibc's posix_fallocate would emulate it by writing a byte into every block
    of the file, a second pass over a multi-GB output; fallocate(2) says EOPNOTSUPP instead and the file is
    simply written as before. Elsewhere (not Linux/glibc) nothing is reserved."""
    fallocate = _fallocate()
    if size <= 0 or fallocate is None:
        return
    if fallocate(fd, 0, 0, size) != 0:
        err = ctypes.get_errno()
        if err in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise OSError(err, os.strerror(err))
        # EOPNOTSUPP, EINVAL, ENOSYS...: no reservation here, nothing lost


@functools.cache
def _fallocate():
    """glibc's fallocate(int fd, int mode, off_t offset, off_t len), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fn.restype = ctypes.c_int
    return fn


def _write_all(fd: int, bufs) -> None:
    """Write the buffers back to back at the file position: one ``writev`` call in the usual case,
    continued after a partial write (a big tensor, a signal)."""
    views = [memoryview(b).cast("B") for b in bufs]
    views = [v for v in views if len(v)]
    writev = getattr(os, "writev", None)
    while views:
        n = writev(fd, views) if writev is not None else os.write(fd, views[0])
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if n:
            views[0] = views[0][n:]


# --------------------------------------------------------------------------- tensor sources


@dataclass
class TensorSource:
    """A tensor to write: ``data`` is a numpy array, bytes, or a zero-argument callable returning one
    (called only when the tensor is written, so nothing needs to be in memory before).

    ``format``: a registry name/id (default: from the dtype of ``data``, which then must be an array).
    ``shape``: numpy order (default: ``data.shape``; required for callables and raw bytes).
    ``ne``: ggml order, to pin n_dims exactly (overrides shape).
    Float data with a quantized ``format`` is quantized with :func:`quantlab.quantize` when written.
    """

    data: Any
    format: Any = None
    shape: tuple | None = None
    ne: tuple | None = None


class _Plan:
    __slots__ = ("name", "ne", "format", "nbytes", "offset", "source", "written")

    def __init__(self, name, ne, fmt, nbytes, source):
        self.name, self.ne, self.format, self.nbytes, self.source = name, ne, fmt, nbytes, source
        self.offset = 0
        self.written = False

    @property
    def shape(self):
        return tuple(reversed(self.ne))


def _describe(name, src, shape=None, fmt=None, ne=None):
    """(ne, Format, data source) for anything the writer accepts as a tensor."""
    if isinstance(src, TensorSource):
        return _describe(
            name,
            src.data,
            src.shape if shape is None else shape,
            src.format if fmt is None else fmt,
            src.ne if ne is None else ne,
        )
    # a gguf-py ReaderTensor (gguf.GGUFReader): shape is stored in ggml order
    if hasattr(src, "tensor_type") and hasattr(src, "data") and hasattr(src, "shape") and fmt is None:
        f = get_format(int(src.tensor_type))
        tne = tuple(int(v) for v in src.shape)
        return tne, f, (lambda: np.asarray(src.data))
    # any tensor-like object: a format, a shape (numpy order; ``ne`` pins n_dims) and its data — a tensor
    # read by quantlab.gguf (``little_endian_data()``: its bytes in ggml's layout, whatever the file's byte
    # order) or anything with ``data`` (ggml bytes, or float values to quantize)
    if (
        hasattr(src, "format")
        and hasattr(src, "shape")
        and (hasattr(src, "little_endian_data") or hasattr(src, "data"))
    ):
        return _tensor_like(name, src, shape, fmt, ne)
    if isinstance(src, (bytes, bytearray, memoryview)):
        src = np.frombuffer(src, dtype=np.uint8)
    if isinstance(src, np.ndarray):
        f = get_format(fmt) if fmt is not None else None
        if f is None:
            key = _PLAIN_DTYPE_FORMAT.get((src.dtype.kind, src.dtype.itemsize))
            if key is None:
                hint = (
                    " (raw quantized bytes: wrap them as TensorSource(data, format='Q4_K', shape=...))"
                    if src.dtype == np.uint8
                    else ""
                )
                raise GGUFError(f"tensor {name!r}: cannot tell the ggml type of a {src.dtype} array{hint}")
            f = get_format(key)
        if ne is None and shape is None:
            if src.dtype == np.uint8 and f.name != "I8":
                if src.ndim == 0 or src.shape[-1] % f.type_size:
                    raise GGUFError(f"tensor {name!r}: {src.shape} bytes is not whole {f.name} rows; give shape=")
                shape = (*src.shape[:-1], src.shape[-1] // f.type_size * f.block_size)
            else:
                shape = src.shape
        arr = src
        return (tuple(ne) if ne is not None else tuple(reversed(tuple(shape)))), f, (lambda: arr)
    if callable(src):
        if fmt is None or (shape is None and ne is None):
            raise GGUFError(
                f"tensor {name!r}: a lazy (callable) source needs format= and shape= (or ne=) "
                f"up front, because the tensor table is written before any data"
            )
        f = get_format(fmt)
        return (tuple(ne) if ne is not None else tuple(reversed(tuple(shape)))), f, src
    raise GGUFError(
        f"tensor {name!r}: cannot write a {type(src).__name__}; give a numpy array, bytes, a "
        f"TensorSource, or a tensor read with quantlab.gguf.open"
    )


def _tensor_like(name, src, shape, fmt, ne):
    try:
        sf = get_format(src.format)
        f = sf if fmt is None else get_format(fmt)
    except FormatError as e:
        raise GGUFError(f"tensor {name!r}: {e}") from None
    tne = (
        tuple(ne)
        if ne is not None
        else (
            tuple(src.ne)
            if getattr(src, "ne", None) is not None
            else tuple(reversed(tuple(src.shape if shape is None else shape)))
        )
    )
    raw = src.little_endian_data if callable(getattr(src, "little_endian_data", None)) else (lambda: src.data)
    if f == sf:
        return tne, sf, raw
    # another format: through float values
    if callable(getattr(src, "dequantize", None)):
        values = src.dequantize
    else:

        def values():
            d = raw()
            a = np.frombuffer(d, np.uint8) if isinstance(d, (bytes, bytearray, memoryview)) else np.asarray(d)
            if a.dtype == np.uint8 and sf.name != "I8":
                return dequantize(a.reshape(-1, sf.row_bytes(tne[0] if tne else 1)), sf)
            return a

    return _describe(name, values, tuple(reversed(tne)), f, tne)


def _to_bytes(plan: _Plan, data) -> np.ndarray:
    """The tensor's bytes in ggml layout (uint8, C order) from whatever the source produced."""
    f = plan.format
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = np.frombuffer(data, dtype=np.uint8)
    a = np.asarray(data)
    if a.dtype == np.uint8 and f.name != "I8":
        out = a
    elif f.name in _FORMAT_DTYPE and a.dtype.kind in "fiu":
        target = np.dtype(_FORMAT_DTYPE[f.name])
        if a.size != int(np.prod(plan.shape, dtype=object)):
            raise GGUFError(f"tensor {plan.name!r}: declared shape {plan.shape}, data has shape {a.shape}")
        if target.kind in "iu" and a.dtype.kind == "f":
            raise GGUFError(f"tensor {plan.name!r}: {f.name} stores integers, got {a.dtype} data")
        out = np.ascontiguousarray(a, dtype=target).reshape(-1).view(np.uint8)
    elif a.dtype.kind == "f":
        if a.size != int(np.prod(plan.shape, dtype=object)):
            raise GGUFError(f"tensor {plan.name!r}: declared shape {plan.shape}, data has shape {a.shape}")
        n0 = plan.ne[0] if plan.ne else 1
        try:
            out = quantize(a.reshape(-1, n0), f)
        except FormatError as e:
            raise GGUFError(f"tensor {plan.name!r}: cannot quantize to {f.name}: {e}") from None
    else:
        raise GGUFError(f"tensor {plan.name!r}: cannot write {a.dtype} data as {f.name}")
    if out.nbytes != plan.nbytes:
        raise GGUFError(
            f"tensor {plan.name!r}: {f.name} with shape {plan.shape} takes {plan.nbytes} bytes, "
            f"the data has {out.nbytes}"
        )
    return np.ascontiguousarray(out).reshape(-1)


# --------------------------------------------------------------------------- the writer


class GGUFWriter:
    """Streaming GGUF v3 writer. Declare metadata and tensors, then write tensor data one at a time::

        with GGUFWriter("out.gguf", metadata) as w:
            for name, t in src.tensors.items():
                w.add_tensor(name, shape=t.shape, format="Q4_K")    # declare every tensor first
            for name, t in src.tensors.items():
                w.write_tensor(name, quantize(t.dequantize(), "Q4_K"))   # then stream the data

    ``add_tensor(name, source)`` with a source (array, callable, tensor read by quantlab...) and then
    ``write_tensors()`` does both. The header and tensor table are written at the first ``write_tensor``;
    the file appears under ``path`` only when ``close()`` (or the ``with`` block) completes.
    ``trim_dims=True`` writes n_dims like llama.cpp's writer (``ggml_n_dims``) for every tensor whose
    ``ne`` is not given explicitly. ``fsync=False``: do not wait for the data to reach the disk before
    moving the file into place (see the module's docstring).

    One thread at a time: ``write_tensor`` may be called from a thread other than the one that declared
    the tensors (a write-behind thread), as long as calls do not overlap.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        metadata: Mapping[str, Any] | None = None,
        *,
        alignment: int | None = None,
        trim_dims: bool = False,
        fsync: bool = True,
    ) -> None:
        self.path = os.fspath(path)
        self._fsync = bool(fsync)
        self._kv: dict = {}  # key -> (spec, value)
        self._plans: dict = {}
        self._order: list = []
        self._trim = trim_dims
        self._alignment_arg = alignment
        self._fd = None
        self._tmp = None
        self._next = 0
        self._pos = 0
        self._state = "declaring"
        if metadata is not None:
            self.add_metadata(metadata)

    # ---- declaring
    def _check_declaring(self, what):
        if self._state != "declaring":
            raise GGUFError(f"cannot {what} after the header was written (state: {self._state})")

    def add_metadata(self, metadata) -> None:
        """Add every key of a mapping, keeping types the mapping records (``type_of``). The metadata of a
        file being read (:class:`~quantlab.gguf.Metadata`) is copied as its bytes (``encoded``), not
        decoded and encoded again."""
        encoded = getattr(metadata, "encoded", None)
        type_of = getattr(metadata, "type_of", None)
        for k in metadata:
            if encoded is not None:
                self.add_key(k, encoded(k))
                continue
            v = metadata[k]
            t = type_of(k) if type_of is not None else None
            self.add_key(k, v, t)

    def add_key(self, key: str, value, type=None) -> None:
        """Add (or replace) one metadata pair; ``type`` a ValueType / ArrayOf, else recorded or inferred."""
        self._check_declaring("add metadata")
        if not isinstance(key, str) or not key:
            raise GGUFError(f"metadata keys are non-empty strings, got {key!r}")
        if isinstance(value, Encoded):
            spec = value.type
            if type is not None and (type if isinstance(type, ArrayOf) else ValueType(int(type))) != spec:
                raise GGUFError(f"metadata {key!r}: the bytes given are a {type_str(spec)} value, not {type_str(type)}")
        elif isinstance(value, Value):
            spec, value = value.type, value.value
        elif type is not None:
            spec = type if isinstance(type, ArrayOf) else ValueType(int(type))
        else:
            spec = infer_type(value)
        self._kv[key] = (spec, value)

    def add_tensor(self, name: str, source=None, *, shape=None, format=None, ne=None) -> None:
        """Declare a tensor (in file order). ``source``: what ``write_tensor`` writes when given no data."""
        self._check_declaring("add tensors")
        if not isinstance(name, str):
            raise GGUFError(f"tensor names are strings, got {name!r}")
        if len(name.encode("utf-8", "surrogateescape")) >= MAX_NAME:
            raise GGUFError(
                f"tensor name {name!r} is {len(name.encode())} bytes; llama.cpp needs names shorter "
                f"than {MAX_NAME} bytes"
            )
        if name in self._plans:
            raise GGUFError(f"duplicate tensor name {name!r}")
        if source is None:
            if format is None or (shape is None and ne is None):
                raise GGUFError(f"tensor {name!r}: without a source, give format= and shape= (or ne=)")
            tne, f, src = (tuple(ne) if ne is not None else tuple(reversed(tuple(shape)))), get_format(format), None
        else:
            tne, f, src = _describe(name, source, shape, format, ne)
        if not isinstance(f, Format):
            f = get_format(f)
        try:
            f.check_usable()
        except FormatError as e:
            raise GGUFError(f"tensor {name!r}: {e}") from None
        tne = tuple(int(d) for d in tne)
        if ne is None and self._trim and not (isinstance(source, TensorSource) and source.ne is not None):
            while len(tne) > 1 and tne[-1] == 1:  # ggml_n_dims: trailing 1s dropped, at least 1
                tne = tne[:-1]
        if len(tne) > MAX_DIMS:
            raise GGUFError(f"tensor {name!r} has {len(tne)} dimensions; ggml allows at most {MAX_DIMS}")
        if any(d < 0 for d in tne):
            raise GGUFError(f"tensor {name!r}: negative dimension in {tne}")
        n_el = 1
        for d in tne:
            n_el *= d
        if n_el >= 1 << 63:
            raise GGUFError(f"tensor {name!r}: {tne} has more elements than ggml can count")
        n0 = tne[0] if tne else 1
        if n0 % f.block_size:
            raise GGUFError(f"tensor {name!r}: {f.name} stores blocks of {f.block_size} values, but rows have {n0}")
        nbytes = n_el // f.block_size * f.type_size
        self._plans[name] = _Plan(name, tne, f, nbytes, src)
        self._order.append(name)

    # ---- writing
    def _alignment(self) -> int:
        a = self._kv.get("general.alignment")
        if a is not None:
            spec, v = a
            if spec != ValueType.UINT32:
                raise GGUFError("general.alignment must be of type uint32 (llama.cpp refuses anything else)")
            if isinstance(v, Encoded):
                v = _U32.unpack(v.raw)[0]
            if self._alignment_arg is not None and self._alignment_arg != v:
                raise GGUFError(f"alignment={self._alignment_arg} contradicts general.alignment = {v}")
            al = int(v)
        elif self._alignment_arg is not None:
            al = int(self._alignment_arg)
            if al != DEFAULT_ALIGNMENT:
                self._kv["general.alignment"] = (ValueType.UINT32, al)
        else:
            al = DEFAULT_ALIGNMENT
        if al <= 0 or al & (al - 1):
            raise GGUFError(f"alignment {al} is not a non-zero power of two")
        return al

    def _header_bytes(self) -> bytes:
        self.alignment = al = self._alignment()
        parts = [GGUF_MAGIC, _U32.pack(GGUF_VERSION), _U64.pack(len(self._order)), _U64.pack(len(self._kv))]
        for key, (spec, value) in self._kv.items():
            kb = key.encode("utf-8", "surrogateescape")
            parts.append(_U64.pack(len(kb)) + kb)
            parts.append(_U32.pack(ValueType.ARRAY if isinstance(spec, ArrayOf) else spec))
            parts.append(encode_value(value, spec, f"metadata {key!r}"))
        off = 0
        for name in self._order:
            p = self._plans[name]
            nb = name.encode("utf-8", "surrogateescape")
            p.offset = off
            parts.append(
                _U64.pack(len(nb))
                + nb
                + _U32.pack(len(p.ne))
                + struct.pack(f"<{len(p.ne)}Q", *p.ne)
                + _U32.pack(p.format.id)
                + _U64.pack(off)
            )
            off += _pad(p.nbytes, al)
        head = b"".join(parts)
        return head + bytes(_pad(len(head), al) - len(head))

    def write_header(self) -> None:
        """Write header, metadata and tensor table to the temporary file (done by the first write_tensor)."""
        self._check_declaring("write the header")
        head = self._header_bytes()
        d = os.path.dirname(os.path.abspath(self.path))
        try:
            fd, self._tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(self.path) + ".", suffix=".tmp")
        except OSError as e:
            raise GGUFError(f"cannot create a temporary file next to {self.path!r}: {e.strerror or e}") from None
        self._fd = fd
        self._state = "writing"
        with self._aborting():
            _preallocate(fd, len(head) + sum(_pad(p.nbytes, self.alignment) for p in self._plans.values()))
            _write_all(fd, [head])
        self._pos = len(head)
        self._data_start = len(head)

    def write_tensor(self, name: str | None = None, data=None) -> None:
        """Write the next tensor's data (tensors go in declaration order; ``name`` is checked)."""
        if self._state == "declaring":
            self.write_header()
        if self._state != "writing":
            raise GGUFError(f"cannot write tensors: the writer is {self._state}")
        if self._next >= len(self._order):
            raise GGUFError(f"all {len(self._order)} declared tensors are already written")
        p = self._plans[self._order[self._next]]
        if name is not None and name != p.name:
            raise GGUFError(f"tensors are written in declaration order: expected {p.name!r}, got {name!r}")
        with self._aborting():
            if data is None:
                if p.source is None:
                    raise GGUFError(f"tensor {p.name!r} was declared without a source; pass its data")
                data = p.source()
            b = _to_bytes(p, data)
            assert self._pos - self._data_start == p.offset
            pad = _pad(p.nbytes, self.alignment) - p.nbytes
            _write_all(self._fd, [b, bytes(pad)])
            self._pos += p.nbytes + pad
        p.written = True
        self._next += 1

    def write_tensors(self) -> None:
        """Write every remaining declared tensor from its source."""
        while self._state in ("declaring", "writing") and self._next < len(self._order):
            self.write_tensor()
        if self._state == "declaring":
            self.write_header()

    def close(self) -> None:
        """Finish: check every tensor was written, then move the file into place (atomic)."""
        if self._state in ("done", "aborted"):
            return
        if self._state == "declaring":
            self.write_tensors()
        if self._next < len(self._order):
            missing = self._order[self._next]
            self.abort()
            raise GGUFError(
                f"{len(self._order) - self._next} declared tensors were never written (first: "
                f"{missing!r}); {self.path!r} was not created"
            )
        with self._aborting():
            if self._fsync:
                os.fsync(self._fd)
            fd, self._fd = self._fd, None
            os.close(fd)
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(self._tmp, 0o666 & ~mask)
            os.replace(self._tmp, self.path)
        self._state = "done"
        self.size = self._pos

    @contextlib.contextmanager
    def _aborting(self):
        """Any failure inside removes the temporary file (no half-written file remains); an OSError
        becomes one GGUFError naming the file, anything else (a bad source, Ctrl-C) goes on as it is."""
        try:
            yield
        except OSError as e:
            self.abort()
            raise self._write_error(e) from None
        except BaseException:
            self.abort()
            raise

    def _write_error(self, e: OSError) -> GGUFError:
        return GGUFError(
            f"writing {self.path!r} failed: {e.strerror or e}; nothing was created under that "
            f"name (the partial temporary file was removed)"
        )

    def abort(self) -> None:
        """Give up: close and delete the temporary file; the target path is left untouched."""
        self._state = "aborted"
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
        if self._tmp is not None:
            try:
                os.unlink(self._tmp)
            except FileNotFoundError:
                pass
            self._tmp = None

    def __del__(self):
        if getattr(self, "_fd", None) is not None:  # dropped half-written: like abort()
            try:
                self.abort()
            except Exception:  # noqa: BLE001  (never raise from a finalizer)
                pass

    def __enter__(self) -> GGUFWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()


def _iter_tensors(tensors):
    if tensors is None:
        return []
    if isinstance(tensors, Mapping):
        return list(tensors.items())
    out = []
    for item in tensors:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            out.append(item)
        elif hasattr(item, "name"):
            out.append((str(item.name), item))
        else:
            raise GGUFError("tensors must be a mapping name -> source, (name, source) pairs, or objects with .name")
    return out


# what write()/GGUFWriter take: a mapping name -> source, (name, source) pairs, or objects with .name; a
# source is a numpy array, a TensorSource, a reader's GGUFTensor or anything with shape, format and bytes
Tensors = Mapping[str, Any] | Iterable[Any] | None


def write(
    path: str | os.PathLike[str],
    metadata: Mapping[str, Any] | None,
    tensors: Tensors,
    *,
    alignment: int | None = None,
    trim_dims: bool = False,
) -> str:
    """Write a GGUF v3 file from metadata (a mapping; recorded types kept) and tensors (mapping name ->
    source, or (name, source) pairs). Sources are read one at a time while writing. Returns the path."""
    w = GGUFWriter(path, metadata, alignment=alignment, trim_dims=trim_dims)
    try:
        for name, src in _iter_tensors(tensors):
            w.add_tensor(name, src)
        w.write_tensors()
        w.close()
    except BaseException:
        w.abort()
        raise
    return w.path
