"""Read GGUF files: memory-mapped, lazy, strict, fast.

The file is mapped read-only once; nothing else is copied at open. The header, every metadata key and
scalar, and the tensor table are parsed; big arrays are only *located* (their bytes are decoded the first
time the value is asked for). Tensor data are zero-copy ``uint8`` views of the map.

Layout of a GGUF file (little-endian unless the version reads byte-swapped; v1 has 32-bit counts)::

    offset 0   "GGUF"                     magic, 4 bytes
           4   version         u32        1, 2 or 3
           8   tensor_count    u64 (v1: u32)
          16   kv_count        u64 (v1: u32)
          24   kv_count x { key: string, type: u32, value }      string = u64 length + UTF-8 bytes
               tensor_count x { name: string, n_dims: u32, ne[n_dims]: u64, ggml type: u32, offset: u64 }
               zero padding to a multiple of ALIGNMENT (general.alignment, default 32)
    data_start tensor bytes at data_start + offset, each offset a multiple of ALIGNMENT

Parsing runs in named phases, like gguf-py's ``_build_fields / _build_tensor_info / _build_tensors``:
:meth:`GGUFFile._read_header` (magic, version, byte order, counts), :meth:`~GGUFFile._build_fields`
(the key/value pairs, then ``general.alignment``), :meth:`~GGUFFile._build_tensor_infos` (the tensor table)
and :meth:`~GGUFFile._build_tensors` (layout checks: alignment, bounds, overlaps). Values are decoded by
:mod:`quantlab.gguf.values` (shared with the writer): numeric arrays are only located, string arrays
located with whole-array numpy passes (finding where the 49,152-element token array ends needs each
element's length: a chain), never decoded before they are asked for.

Every malformed input raises :class:`quantlab.errors.GGUFError` whose message names the byte offset
and what was wrong. Counts and lengths are checked against the bytes left in the file *before* anything
is allocated, and the records that become Python objects are bounded: at most :data:`MAX_TENSORS`
(65,536) tensors and :data:`MAX_RECORDS` (65,536) metadata records — pairs plus arrays nested in arrays —
far above any real model (the largest have a few thousand tensors and under a hundred keys; llama.cpp
refuses nested arrays). So opening any file, hostile or not, costs at most the file's size + 64 MB of
memory (the map itself is not counted: it is the file) and well under a second of CPU: a string array is
located with numpy (16 bytes per element, each element taking at least 8 in the file), every other array
is only located. Decoding a value (``metadata[key]``) costs what the value is: a tuple of ``str`` for a
string array. Checked by tests/test_gguf.py::test_hostile_files_fit_the_budget (RLIMIT_AS in a child).

A file truncated or rewritten by another process *while it is open* is not protected: reading a tensor
or a value whose pages are gone from the map kills the process with SIGBUS (gguf-py's reader, which
also maps the file, does the same; llama.cpp reads into its own buffers). Copy a file that may change
before opening it.

Closing: :meth:`GGUFFile.close` releases the map. Arrays obtained before (tensor ``.data`` views, decoded
numeric metadata arrays) stay valid: they hold a reference to the map, which the operating system unmaps
when the last of them is garbage-collected — reading them after close never crashes. Values not yet
decoded, and new tensor views, raise GGUFError after close.
"""

from __future__ import annotations

import builtins
import mmap
import os
import struct
from collections.abc import Mapping

import numpy as np

from ..api import dequantize
from ..errors import FormatError, GGUFError
from ..formats.registry import Format
from ..formats.registry import get as get_format
from .constants import DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_DIMS, READ_VERSIONS, ArrayOf, Encoded, ValueType, type_name
from .values import MAX_RECORDS, _Lazy, _Source, encode_value, infer_type, materialize, read_value

__all__ = ["open", "GGUFFile", "GGUFTensor", "Metadata", "MetadataDict", "MAX_TENSORS", "MAX_RECORDS"]

_INT64_MAX = (1 << 63) - 1
MAX_TENSORS = 1 << 16  # tensors per file (the largest real models have a few thousand)
_LEGACY_MAGIC = {b"lmgg": "GGML", b"fmgg": "GGMF", b"tjgg": "GGJT"}


def _align(x: int, a: int) -> int:
    return (x + a - 1) // a * a


# --------------------------------------------------------------------------- metadata


class Metadata(Mapping):
    """The file's metadata: a read-only mapping key -> Python value, in file order.

    Scalars are ``int``/``float``/``bool``/``str``; numeric arrays are read-only 1-D numpy arrays (native
    byte order); string arrays are tuples of ``str``; arrays of arrays are tuples. Big arrays are decoded on
    first access. ``type_of(key)`` gives the GGUF type spec (kept so a round trip writes the same types),
    ``offset_of(key)`` the byte offset of the key/value pair in the file, ``encoded(key)`` the value's bytes
    as the writer writes them (what a copy to another file uses: no decoding, no re-encoding).
    """

    def __init__(self, gfile: GGUFFile, entries: dict):
        self._file = gfile
        self._entries = entries  # key -> [value or _Lazy, spec, offset]

    def __getitem__(self, key):
        e = self._entries[key]
        v = e[0]
        if isinstance(v, _Lazy):
            v = e[0] = self._file._materialize(v, key)
        return v

    def __iter__(self):
        return iter(self._entries)

    def __len__(self):
        return len(self._entries)

    def __contains__(self, key):
        return key in self._entries

    def type_of(self, key):
        """GGUF type spec of ``key``: a ValueType, or an ArrayOf for arrays."""
        return self._entries[key][1]

    def types(self) -> dict:
        return {k: e[1] for k, e in self._entries.items()}

    def offset_of(self, key) -> int:
        """Byte offset in the file where the key/value pair of ``key`` starts."""
        return self._entries[key][2]

    def encoded(self, key) -> Encoded:
        """The value of ``key`` as GGUF bytes (v3, little-endian, without the type id), ready for the
        writer: sliced from the file as they are when the file is a little-endian v2/v3 file (nothing is
        decoded, so copying the 49,152-token vocabulary costs a memcpy), re-encoded otherwise."""
        e = self._entries[key]
        f = self._file
        if f._mm is not None and f.byte_order == "little" and f.version >= 2:
            return Encoded(f._mm[e[3] : e[4]], e[1])
        return Encoded(encode_value(self[key], e[1], f"metadata {key!r}"), e[1])

    def count_of(self, key) -> int:
        """Number of elements of an array value (1 for a scalar), without decoding it."""
        v = self._entries[key][0]
        if isinstance(v, _Lazy):
            return v.n
        return len(v) if isinstance(self._entries[key][1], ArrayOf) else 1

    def copy(self) -> MetadataDict:
        """A mutable copy that remembers each key's GGUF type (decodes every value)."""
        d = MetadataDict()
        for k in self:
            d.set(k, self[k], self.type_of(k))
        return d

    def __repr__(self):
        return f"<GGUF metadata: {len(self)} keys>"


_KIND = {ValueType.BOOL: "bool", ValueType.STRING: "str", ValueType.FLOAT32: "float", ValueType.FLOAT64: "float"}


def _kind(spec) -> str:
    if isinstance(spec, ArrayOf):
        return "array"
    return _KIND.get(spec, "int")


class MetadataDict(dict):
    """A plain dict of metadata that also remembers GGUF types (what ``Metadata.copy()`` returns).

    Assigning a plain value to a key keeps the key's previous type when the value is of the same kind
    (``d["general.file_type"] = 15`` stays UINT32); otherwise the writer infers a type. ``set(key, value,
    type)`` pins a type explicitly.
    """

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._types = {}

    def set(self, key, value, type=None):
        super().__setitem__(key, value)
        if type is None:
            self._types.pop(key, None)
        else:
            self._types[key] = type

    def __setitem__(self, key, value):
        old = self._types.get(key)
        super().__setitem__(key, value)
        if old is not None:
            try:
                same = _kind(infer_type(value)) == _kind(old)
            except GGUFError:
                same = False
            if not same:
                del self._types[key]

    def __delitem__(self, key):
        super().__delitem__(key)
        self._types.pop(key, None)

    def update(self, *a, **kw):
        for k, v in dict(*a, **kw).items():
            self[k] = v

    def pop(self, key, *default):
        self._types.pop(key, None)
        return super().pop(key, *default)

    def replace(self, key, value, type=None):
        """Set ``key`` the way llama.cpp's ``gguf_set_val_*`` does: remove it, then append it at the end
        (so the pair moves to the end of the file's metadata). ``type`` defaults to the key's old type."""
        old = self._types.get(key) if type is None else type
        if key in self:
            del self[key]
        self.set(key, value, old)

    def type_of(self, key):
        return self._types.get(key)

    def copy(self):
        d = MetadataDict(self)
        d._types = dict(self._types)
        return d


# --------------------------------------------------------------------------- tensors

# byte-swap unit of each plain format, for big-endian files (quantized blocks: see GGUFTensor.numpy)
_SWAP = {"F32": "f4", "F16": "u2", "BF16": "u2", "F64": "f8", "I8": "i1", "I16": "i2", "I32": "i4", "I64": "i8"}
_NUMPY_DTYPE = {"F32": "f4", "F16": "f2", "F64": "f8", "I8": "i1", "I16": "i2", "I32": "i4", "I64": "i8"}


class GGUFTensor:
    """One tensor of a GGUF file.

    ``shape`` is numpy order (rows last = contiguous), ``ne`` ggml order as stored (``ne[0]`` contiguous,
    ``len(ne)`` = n_dims written in the file). ``offset`` is relative to the data section,
    ``file_offset`` absolute. ``data`` is a zero-copy read-only uint8 view of the map shaped
    ``(*shape[:-1], row_bytes)``, ready for :func:`quantlab.dequantize`.
    """

    __slots__ = (
        "name",
        "ne",
        "shape",
        "format",
        "offset",
        "file_offset",
        "nbytes",
        "n_elements",
        "info_offset",
        "_file",
    )

    def __init__(self, gfile, name, ne, fmt, offset, nbytes, n_elements, info_offset):
        self._file = gfile
        self.name, self.ne, self.format, self.offset = name, tuple(ne), fmt, offset
        self.shape = tuple(reversed(self.ne))
        self.nbytes, self.n_elements, self.info_offset = nbytes, n_elements, info_offset
        self.file_offset = gfile.data_offset + offset

    @property
    def n_dims(self) -> int:
        return len(self.ne)

    @property
    def bpw(self) -> float:
        return self.format.bpw

    @property
    def data(self) -> np.ndarray:
        raw = self._file._view(self.file_offset, self.nbytes)
        n0 = self.ne[0] if self.ne else 1
        row = n0 // self.format.block_size * self.format.type_size
        return raw.reshape(*self.shape[:-1], row) if self.shape else raw

    @property
    def swappable(self) -> bool:
        """True when :meth:`little_endian_data` can give this tensor's data: a little-endian file, or a
        plain format (F32, F16, BF16, F64, I8-I64) whose byte swap is unambiguous."""
        return self._file.byte_order == "little" or self.format.name in _SWAP

    def little_endian_data(self) -> np.ndarray:
        """The data as ggml lays it out in memory and as quantlab's writer writes it: little-endian (``data``
        itself for little-endian files; a byte-swapped copy for big-endian files, plain formats only)."""
        d = self.data
        if self._file.byte_order == "little":
            return d
        code = _SWAP.get(self.format.name)
        if code is None:
            raise GGUFError(
                f"tensor {self.name!r} ({self.format.name}) comes from a big-endian file; which of its block "
                f"fields were byte-swapped is not recorded in GGUF (gguf-py leaves quantized blocks as they "
                f"are, gguf_convert_endian swaps their fp16 scales), so quantlab does not guess"
            )
        return d.view(">" + code).astype("<" + code).view(np.uint8).reshape(d.shape)

    def dequantize(self, impl: str = "fast", threads: int | None = None) -> np.ndarray:
        """The tensor as float32 of shape ``shape``, through :func:`quantlab.dequantize`."""
        out = dequantize(self.little_endian_data(), self.format, impl=impl, threads=threads)
        return out.reshape(self.shape)

    def numpy(self) -> np.ndarray:
        """The values in their natural numpy dtype (F32/F16/F64/I8..I64 as stored, zero-copy for
        little-endian files); BF16 and quantized formats are dequantized to float32."""
        code = _NUMPY_DTYPE.get(self.format.name)
        if code is None:
            return self.dequantize()
        order = "<" if self._file.byte_order == "little" else ">"
        a = self.data.view(order + code).reshape(self.shape)
        return a if order == "<" else a.astype("=" + code)

    def __repr__(self):
        return (
            f"<GGUFTensor {self.name!r} {self.format.name} shape={self.shape} offset={self.offset} "
            f"nbytes={self.nbytes}>"
        )


class TensorMap(Mapping):
    """name -> GGUFTensor, in file order."""

    def __init__(self, tensors: dict):
        self._t = tensors

    def __getitem__(self, k):
        return self._t[k]

    def __iter__(self):
        return iter(self._t)

    def __len__(self):
        return len(self._t)

    def __repr__(self):
        names = list(self._t)
        more = ", ..." if len(names) > 3 else ""
        return f"<{len(names)} tensors: {', '.join(names[:3])}{more}>"


# --------------------------------------------------------------------------- the file


class GGUFFile:
    """An open GGUF file (use :func:`open`). Attributes: ``path``, ``version``, ``byte_order``
    ('little' | 'big'), ``alignment``, ``metadata`` (:class:`Metadata`), ``tensors`` (name ->
    :class:`GGUFTensor`, file order), ``data_offset`` (start of the data section), ``file_size``,
    ``canonical_layout`` (True when tensors sit exactly where llama.cpp's writer puts them)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self._mm = None
        try:
            fh = builtins.open(self.path, "rb")  # noqa: SIM115 (a `with` follows once it is open)
        except OSError as e:
            raise GGUFError(f"cannot open {self.path!r}: {e.strerror or e}") from None
        with fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                raise GGUFError(f"{self.path}: empty file (0 bytes): a GGUF file starts with the 4 bytes 'GGUF'")
            self._mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        self.file_size = size
        try:
            self._parse()
        except GGUFError as e:  # the message names the byte; the file is named here, once
            self.close()
            raise GGUFError(f"{self.path}: {e}") from None
        except BaseException:
            self.close()
            raise

    # ---- parsing, in phases
    def _parse(self):
        src, pos = self._read_header()
        pos = self._build_fields(src, pos)
        infos, pos = self._build_tensor_infos(src, pos)
        self._build_tensors(infos, pos)

    def _read_header(self) -> tuple[_Source, int]:
        """Magic, version (and from it the byte order), tensor and key/value counts, checked against the
        bytes that follow and against the record limits. Returns the byte source and the first pair's offset."""
        mm, size = self._mm, self.file_size
        if size < 4:
            raise GGUFError(f"truncated file: {size} bytes, too short for the 4-byte magic 'GGUF' at byte 0")
        magic = bytes(mm[:4])
        if magic != GGUF_MAGIC:
            legacy = _LEGACY_MAGIC.get(magic)
            hint = f" (this is a pre-GGUF {legacy} file: convert it with llama.cpp's tools first)" if legacy else ""
            raise GGUFError(f"not a GGUF file: bytes 0-3 are {magic!r}, expected b'GGUF'{hint}")
        if size < 8:
            raise GGUFError(f"truncated file: the 4-byte version at byte 4 needs 8 bytes, the file has {size}")
        raw_version = struct.unpack_from("<I", mm, 4)[0]
        order = "<"
        version = raw_version
        if raw_version & 0xFFFF == 0 and raw_version != 0:
            order = ">"  # the version reads byte-swapped: a big-endian file
            version = struct.unpack_from(">I", mm, 4)[0]
        if version not in READ_VERSIONS:
            raise GGUFError(
                f"unknown GGUF version {version} at byte 4 (quantlab reads versions "
                f"{', '.join(map(str, READ_VERSIONS))})"
            )
        self.version = version
        self.byte_order = "little" if order == "<" else "big"
        src = self._src = _Source(mm, size, order, version)
        P = src.len_size
        n_tensors, pos = src.read_count(8, "tensor count")
        n_kv, pos = src.read_count(pos, "metadata key/value count")
        self.tensor_count, self.kv_count = n_tensors, n_kv
        left = size - pos
        # smallest possible records: a KV = P-byte length + 1-byte key + u32 type + 1-byte value
        if n_kv > left // (P + 6):
            raise GGUFError(
                f"the header (byte {8 + P}) claims {n_kv} metadata pairs; each takes at least {P + 6} "
                f"bytes, but only {left} bytes follow the header"
            )
        # a tensor info = name length + n_dims u32 + type u32 + offset u64
        if n_tensors > left // (P + 16):
            raise GGUFError(
                f"the header (byte 8) claims {n_tensors} tensors; each tensor record takes at least "
                f"{P + 16} bytes, but only {left} bytes follow the header"
            )
        if n_tensors > MAX_TENSORS:
            raise GGUFError(
                f"the header (byte 8) claims {n_tensors:,} tensors; quantlab reads at most "
                f"{MAX_TENSORS:,} (the largest real models have a few thousand)"
            )
        if n_kv > MAX_RECORDS:
            raise GGUFError(
                f"the header (byte {8 + P}) claims {n_kv:,} metadata pairs; quantlab reads at most "
                f"{MAX_RECORDS:,} (real models have under a hundred)"
            )
        src.records = n_kv
        return src, pos

    def _build_fields(self, src: _Source, pos: int) -> int:
        """The key/value pairs (``self.metadata``), then ``general.alignment``. Returns the table's offset."""
        entries: dict = {}
        for i in range(self.kv_count):
            kpos = pos
            key, pos = src.read_str(pos, f"key of metadata pair {i}")
            if not key:
                raise GGUFError(f"metadata pair {i} at byte {kpos} has an empty key")
            if key in entries:
                raise GGUFError(f"duplicate metadata key {key!r} at byte {kpos} (first at byte {entries[key][2]})")
            t, pos = src.read_u32(pos, f"value type of {key!r}")
            vpos = pos
            value, spec, pos = read_value(src, t, pos, key, pos - 4)
            entries[key] = [value, spec, kpos, vpos, pos]
        self.metadata = Metadata(self, entries)
        alignment = DEFAULT_ALIGNMENT
        if "general.alignment" in entries:
            v, spec, kpos = entries["general.alignment"][:3]
            if spec != ValueType.UINT32:
                raise GGUFError(f"general.alignment (byte {kpos}) must be of type uint32, found {type_name(spec)}")
            if v == 0 or v & (v - 1):
                raise GGUFError(f"general.alignment (byte {kpos}) is {v}: it must be a non-zero power of two")
            alignment = v
        self.alignment = alignment
        return pos

    def _build_tensor_infos(self, src: _Source, pos: int) -> tuple[dict, int]:
        """The tensor table: name -> (name, ne, format, offset, record offset, nbytes, n_elements, offset of
        the offset field), each record checked on its own (dimensions, type, block size)."""
        mm, P = self._mm, src.len_size
        dims = src.order + ("I" if P == 4 else "Q")
        tensors: dict = {}
        for i in range(self.tensor_count):
            rec = pos
            name, pos = src.read_str(pos, f"name of tensor {i}")
            if name in tensors:
                raise GGUFError(
                    f"duplicate tensor name {name!r} at byte {rec} (tensor {i}; first at byte {tensors[name][4]})"
                )
            nd, pos = src.read_u32(pos, f"n_dims of tensor {name!r}")
            if nd > MAX_DIMS:
                raise GGUFError(
                    f"tensor {name!r} (byte {rec}) has {nd} dimensions at byte {pos - 4}; "
                    f"ggml allows at most {MAX_DIMS}"
                )
            src.need(pos, nd * P, f"dimensions of tensor {name!r}")
            ne = struct.unpack_from(dims[0] + dims[1] * nd, mm, pos)
            dpos = pos
            pos += nd * P
            n_el = 1
            for d in ne:
                if d > _INT64_MAX:
                    raise GGUFError(
                        f"tensor {name!r}: dimension {d} at byte {dpos} is negative as a signed 64-bit ggml dimension"
                    )
                n_el *= d
            if n_el > _INT64_MAX:
                raise GGUFError(
                    f"tensor {name!r}: dimensions {list(ne)} at byte {dpos} multiply to {n_el} "
                    f"elements, more than ggml can count (2^63 - 1)"
                )
            tid, pos = src.read_u32(pos, f"type of tensor {name!r}")
            fmt = self._format(tid, name, pos - 4)
            ne0 = ne[0] if nd else 1
            if ne0 % fmt.block_size:
                raise GGUFError(
                    f"tensor {name!r} (byte {rec}): {fmt.name} stores blocks of {fmt.block_size} "
                    f"values, but its rows have {ne0} (ne[0] is not a multiple of the block size)"
                )
            nbytes = (n_el // fmt.block_size) * fmt.type_size if n_el else 0
            off, pos = src.read_u64(pos, f"data offset of tensor {name!r}")
            tensors[name] = (name, ne, fmt, off, rec, nbytes, n_el, pos - 8)
        return tensors, pos

    def _build_tensors(self, infos: dict, pos: int) -> None:
        """Where the data section starts, then the layout checks: every tensor aligned, inside the file,
        no two overlapping. Sets ``self.tensors`` and ``canonical_layout``."""
        size, alignment = self.file_size, self.alignment
        self.info_end = pos
        self.data_offset = _align(pos, alignment)
        if infos and self.data_offset > size:
            raise GGUFError(
                f"truncated file: the tensor table ends at byte {pos}, so the data section starts at "
                f"byte {self.data_offset} (alignment {alignment}), past the end of the file ({size})"
            )
        built = {}
        spans = []
        expect = 0
        canonical = True
        for name, ne, fmt, off, rec, nbytes, n_el, opos in infos.values():
            if off % alignment:
                raise GGUFError(
                    f"tensor {name!r}: data offset {off} (stored at byte {opos}) is not a multiple of "
                    f"the alignment {alignment} (misaligned tensor data)"
                )
            start = self.data_offset + off
            if nbytes > size or start > size - nbytes:
                raise GGUFError(
                    f"tensor {name!r}: its {nbytes} bytes at byte {start} (offset {off}, stored at byte "
                    f"{opos}) run past the end of the file ({size} bytes): truncated file or bad offset"
                )
            canonical &= off == expect
            expect = off + _align(nbytes, alignment)
            spans.append((off, off + nbytes, name))
            built[name] = GGUFTensor(self, name, ne, fmt, off, nbytes, n_el, rec)
        spans.sort()
        reach, reach_name = 0, None  # furthest end so far among non-empty tensors
        for b0, b1, bn in spans:
            if b1 == b0:
                continue
            if b0 < reach:
                a = built[reach_name]
                raise GGUFError(
                    f"tensors {reach_name!r} and {bn!r} overlap: bytes {a.file_offset}-"
                    f"{a.file_offset + a.nbytes - 1} and {self.data_offset + b0}-"
                    f"{self.data_offset + b1 - 1}"
                )
            if b1 > reach:
                reach, reach_name = b1, bn
        self.canonical_layout = canonical
        self.tensors = TensorMap(built)

    def _format(self, tid: int, name: str, at: int) -> Format:
        try:
            fmt = get_format(tid)
        except FormatError:
            raise GGUFError(f"tensor {name!r}: unknown ggml type id {tid} at byte {at}") from None
        if fmt.removed:
            try:
                fmt.check_usable()
            except FormatError as e:
                raise GGUFError(f"tensor {name!r}: type id {tid} at byte {at}: {e}") from None
        return fmt

    def _materialize(self, lz: _Lazy, key: str):
        if self._mm is None:
            raise GGUFError(
                f"the file {self.path!r} is closed; read metadata {key!r} before closing it (or keep the file open)"
            )
        try:
            return materialize(self._src, lz)
        except GGUFError as e:
            raise GGUFError(f"{self.path}: {e}") from None

    def _view(self, start: int, nbytes: int) -> np.ndarray:
        if self._mm is None:
            raise GGUFError(
                f"the file {self.path!r} is closed; take tensor data before closing it (views taken before stay valid)"
            )
        if nbytes == 0:
            a = np.empty(0, dtype=np.uint8)
            a.flags.writeable = False
            return a
        return np.frombuffer(self._mm, dtype=np.uint8, count=nbytes, offset=start)

    def release(self, tensor) -> None:
        """Done with ``tensor`` (a :class:`GGUFTensor` of this file, or its name): its pages leave this
        process's resident set (``madvise(MADV_DONTNEED)`` on the map; the kernel's page cache keeps them,
        and a later read maps them again, same bytes). Without it every page of a mapped file that was
        read stays in RSS until the file is closed: a whole 13.5 GB model for a pass over its tensors.
        Nothing happens where ``madvise`` is missing (not Linux/Unix) or the file is closed."""
        t = self.tensors[tensor] if isinstance(tensor, str) else tensor
        mm = self._mm
        if mm is None or not t.nbytes or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
            return
        start = t.file_offset - t.file_offset % mmap.PAGESIZE
        end = min(len(mm), t.file_offset + t.nbytes)
        try:
            mm.madvise(mmap.MADV_DONTNEED, start, end - start)
        except (OSError, ValueError):
            pass  # advice only

    # ---- conveniences
    @property
    def closed(self) -> bool:
        return self._mm is None

    def close(self) -> None:
        """Release the map. Views handed out earlier keep it alive until they are garbage-collected."""
        mm, self._mm = self._mm, None
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # numpy views still export the buffer: the map lives on until they are gone

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 (never raise from a finalizer)
            pass

    @property
    def architecture(self) -> str | None:
        return self.metadata.get("general.architecture") if hasattr(self, "metadata") else None

    @property
    def n_params(self) -> int:
        return sum(t.n_elements for t in self.tensors.values())

    @property
    def tensor_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    def __repr__(self):
        state = "closed" if self.closed else "open"
        return (
            f"<GGUFFile {self.path!r} v{self.version} {self.byte_order}-endian, {len(self.metadata)} keys, "
            f"{len(self.tensors)} tensors, {state}>"
        )


def open(path: str | os.PathLike[str]) -> GGUFFile:
    """Open a GGUF file (versions 1-3, little- or big-endian): ``with quantlab.gguf.open(p) as f: ...``."""
    return GGUFFile(path)
