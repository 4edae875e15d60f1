"""GGUF metadata values: decoding them from a file's bytes and encoding them for the writer.

One module for both directions, so the reader and the writer each import it and not each other.

Decoding (the reader's half): :class:`_Source` reads bounds-checked primitives from the map in the file's
byte order and version; :func:`read_value` reads one value — scalars at once, numeric arrays only
*located* (:class:`_Lazy`), string arrays located by :func:`_walk_strings` without decoding them —
and :func:`materialize` decodes a located array when it is first asked for.

A string array is a chain: element i+1 starts right after element i's P-byte length and its bytes, so
finding where the 49,152-element token array ends needs each element's length. :func:`_walk_strings`
finds that chain with whole-array numpy passes over the positions that can hold a length prefix
(:func:`_chain_fast`), and element by element where pruning cannot settle it (:func:`_chain_walk`:
linear, for adversarial windows such as a run of empty strings, where every byte reads as a length 0).

Encoding (the writer's half): :func:`infer_type` gives a plain Python/numpy value its GGUF type;
:func:`encode_value` turns a value into GGUF bytes (v3, little-endian, without the type id).

Every malformed input raises :class:`quantlab.errors.GGUFError` naming the byte offset.
"""

from __future__ import annotations

import struct
from array import array

import numpy as np

from ..errors import GGUFError
from .constants import DTYPE_TO_VALUE_TYPE, ArrayOf, Encoded, Value, ValueType, type_name

__all__ = ["infer_type", "encode_value", "type_str", "read_value", "read_array", "materialize", "MAX_RECORDS"]

MAX_RECORDS = 1 << 16  # metadata pairs + arrays nested in arrays (real models: under a hundred pairs)
_MAX_NESTING = 16  # arrays of arrays deeper than this are refused (no recursion blow-up)
_FAST_PASSES = 8  # see _chain_fast
_MAX_BREAKS = 256  # see _chain_fast
_DECODE_CHUNK = 1 << 16  # strings decoded per slice of the map
_SMALL_ARRAY = 16  # string arrays up to this length are read element by element
_WINDOW_MAX = 1 << 20  # bytes scanned at once when walking a string array (bounds its temporaries)
_VALID_TYPES = frozenset(int(t) for t in ValueType)
_STRUCT_CHAR = {
    ValueType.UINT8: "B",
    ValueType.INT8: "b",
    ValueType.UINT16: "H",
    ValueType.INT16: "h",
    ValueType.UINT32: "I",
    ValueType.INT32: "i",
    ValueType.FLOAT32: "f",
    ValueType.BOOL: "B",
    ValueType.UINT64: "Q",
    ValueType.INT64: "q",
    ValueType.FLOAT64: "d",
}

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_SCALAR = {
    ValueType.UINT8: struct.Struct("<B"),
    ValueType.INT8: struct.Struct("<b"),
    ValueType.UINT16: struct.Struct("<H"),
    ValueType.INT16: struct.Struct("<h"),
    ValueType.UINT32: struct.Struct("<I"),
    ValueType.INT32: struct.Struct("<i"),
    ValueType.FLOAT32: struct.Struct("<f"),
    ValueType.UINT64: struct.Struct("<Q"),
    ValueType.INT64: struct.Struct("<q"),
    ValueType.FLOAT64: struct.Struct("<d"),
}


# --------------------------------------------------------------------------- decoding


class _Source:
    """Bounds-checked primitive reads from the map, in the file's byte order and version."""

    def __init__(self, mm, size: int, order: str, version: int):
        self.mm, self.size, self.order, self.version = mm, size, order, version
        self.len_size = 4 if version == 1 else 8  # string lengths, array and header counts
        self.len_dtype = np.dtype(order + ("u4" if version == 1 else "u8"))
        self.u32 = struct.Struct(order + "I")
        self.u64 = struct.Struct(order + "Q")
        self.count = self.u32 if version == 1 else self.u64
        self.scalar = {t: struct.Struct(order + c) for t, c in _STRUCT_CHAR.items()}
        self.records = 0  # metadata records made so far (pairs + nested arrays): see MAX_RECORDS

    def need(self, pos: int, n: int, what: str) -> None:
        if n > self.size - pos:
            raise GGUFError(
                f"truncated file: {what} at byte {pos} needs {n} bytes, but the file ends at byte "
                f"{self.size} ({max(self.size - pos, 0)} bytes left)"
            )

    def read_u32(self, pos: int, what: str) -> tuple[int, int]:
        self.need(pos, 4, what)
        return self.u32.unpack_from(self.mm, pos)[0], pos + 4

    def read_u64(self, pos: int, what: str) -> tuple[int, int]:
        self.need(pos, 8, what)
        return self.u64.unpack_from(self.mm, pos)[0], pos + 8

    def read_count(self, pos: int, what: str) -> tuple[int, int]:
        self.need(pos, self.len_size, what)
        return self.count.unpack_from(self.mm, pos)[0], pos + self.len_size

    def read_str(self, pos: int, what: str) -> tuple[str, int]:
        n, p = self.read_count(pos, f"length of {what}")
        if n > self.size - p:
            raise GGUFError(
                f"{what} at byte {pos} claims a length of {n} bytes, but only {self.size - p} bytes follow in the file"
            )
        return self.mm[p : p + n].decode("utf-8", "surrogateescape"), p + n


# --------------------------------------------------------------------------- string arrays, vectorized


def _walk_strings(src: _Source, pos: int, n: int, what: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Locate the ``n`` strings of an array starting at ``pos``: (body offsets, lengths, end offset).

    Each element is a P-byte length L followed by L bytes, so element i+1 starts at start_i + P + L_i. Over a
    window of the file, every byte position p whose P-byte value L(p) is small enough to fit in the file is a
    *candidate* start (the true starts always are; false ones are weeded out), and next(p) = p + P + L(p).
    :func:`_chain` finds the candidates reachable from the known first start, in a few numpy passes (a
    pruning pass verified link by link, or element by element when pruning cannot settle it). A chain that leaves
    the window continues in a new window, sized from the average element length seen so far.
    """
    P, size, mm = src.len_size, src.size, src.mm
    if n > (size - pos) // P:
        raise GGUFError(
            f"{what} at byte {pos} claims {n} strings; even empty ones need {n * P} bytes, but only "
            f"{size - pos} bytes are left in the file"
        )
    starts = np.empty(n, dtype=np.int64)
    lens = np.empty(n, dtype=np.int64)
    if n <= _SMALL_ARRAY:  # a handful of strings: just read them
        for i in range(n):
            ln, p = src.read_count(pos, f"length of element {i} of {what}")
            if ln > size - p:
                raise GGUFError(
                    f"element {i} of {what}: the string at byte {pos} claims a length of {ln} bytes, "
                    f"but only {size - p} bytes follow in the file"
                )
            starts[i], lens[i] = p, ln
            pos = p + ln
        return starts, lens, pos
    done, cur, avg = 0, pos, 16.0
    while done < n:
        remaining = n - done
        window = int(min(size - cur, max(4096.0, min(avg * remaining * 1.1 + 64, _WINDOW_MAX))))
        m = window - P + 1  # positions of the window that hold a whole prefix
        if m <= 0:
            raise GGUFError(
                f"truncated file: element {done} of {what} at byte {cur} needs a {P}-byte length, "
                f"but the file ends at byte {size}"
            )
        L = np.ndarray((m,), dtype=src.len_dtype, buffer=mm, offset=cur, strides=(1,))
        loose = size - cur - P
        if int(L[0]) > loose:
            bad = int(L[0])
            raise GGUFError(
                f"element {done} of {what}: the string at byte {cur} claims a length of {bad} bytes, "
                f"but only {size - cur - P} bytes follow in the file"
            )
        els = _chain(src, cur, L, m, remaining, loose)
        k = els.size
        ln = L[els].astype(np.int64)
        starts[done : done + k] = cur + els + P
        lens[done : done + k] = ln
        last_end = cur + int(els[-1]) + P + int(ln[-1])
        if last_end > size:
            raise GGUFError(
                f"element {done + k - 1} of {what}: the string at byte {cur + int(els[-1])} has length "
                f"{int(ln[-1])} and runs past the end of the file (byte {size})"
            )
        done += k
        if done < n and last_end < cur + m:
            bad = int(L[last_end - cur])
            raise GGUFError(
                f"element {done} of {what}: the string at byte {last_end} claims a length of {bad} "
                f"bytes, but only {size - last_end - P} bytes follow in the file"
            )
        avg = max((last_end - cur) / k, 1.0)
        cur = last_end
    return starts, lens, cur


def _chain(src: _Source, cur: int, L, m: int, want: int, loose: int) -> np.ndarray:
    """Window positions of the chain of elements that starts at position 0 (at most ``want``), in order.
    ``L`` holds the P-byte value at every window position (the window starts at byte ``cur``), ``loose``
    the largest length that fits the file."""
    els = _chain_fast(L, m, src.len_size, want, loose)
    return els if els is not None else _chain_walk(src, cur, m, want, loose)


def _chain_fast(L, m: int, P: int, want: int, loose: int):
    """The usual case in a couple of passes over the candidates, checked link by link; None when it does
    not apply.

    A true element that is not the last one in the window has a successor inside the window that is a
    candidate too, and (except the first) is the successor of a candidate. Candidates failing either test
    are dropped, pass after pass (true elements are only lost at the end of the window, at most one per
    pass). Once few survivors fail to link to the next survivor, the chain is read off as runs of linked
    survivors: from the end of a run, the true successor (known exactly) starts the next run, skipping the
    false survivors in between. The true elements dropped at the end are then stepped through exactly.
    """
    is_cand = np.uint64(min(loose, m)) >= L
    cand = np.flatnonzero(is_cand)
    if cand.size > 2 * (m // P + 1):
        return None  # more than twice as many candidates as elements can fit
    nxt = cand + P + L[cand].astype(np.int64)
    before = None
    for _ in range(_FAST_PASSES):
        inside = nxt < m
        cand, nxt = cand[inside], nxt[inside]
        pointed = np.zeros(m, dtype=bool)
        pointed[nxt] = True
        pointed[0] = True
        keep = is_cand[nxt] & pointed[cand]
        is_cand[cand[~keep]] = False
        cand, nxt = cand[keep], nxt[keep]
        if cand.size == 0 or cand[0] != 0:
            return None
        breaks = np.flatnonzero(cand[1:] != nxt[:-1])  # survivor i does not lead to survivor i+1
        if breaks.size <= _MAX_BREAKS:
            break
        if before is not None and breaks.size > before // 2:
            return None  # not converging (e.g. a run of empty strings)
        before = breaks.size
    else:
        return None
    runs, total, i, last = [], 0, 0, cand.size - 1
    while True:
        k = int(np.searchsorted(breaks, i))
        end = int(breaks[k]) if k < breaks.size else last
        runs.append(np.arange(i, end + 1))
        total += end - i + 1
        if total >= want or end == last or len(runs) > _MAX_BREAKS + 1:
            break
        j = int(np.searchsorted(cand, nxt[end]))
        if j > last or cand[j] != nxt[end]:
            break  # the true successor was pruned: the tail below
        i = j
    if total < want and end != last and len(runs) > _MAX_BREAKS + 1:
        return None
    els = cand[np.concatenate(runs)[:want]]
    tail = []
    p = int(els[-1])
    for _ in range(_FAST_PASSES + 2):
        if els.size + len(tail) >= want:
            break
        q = p + P + int(L[p])
        if q >= m or int(L[q]) > loose:
            break
        tail.append(q)
        p = q
    else:
        return None
    return np.concatenate([els, np.array(tail, dtype=np.int64)]) if tail else els


def _chain_walk(src: _Source, cur: int, m: int, want: int, loose: int) -> np.ndarray:
    """Same result as :func:`_chain_fast`, for any input: element after element, linear in the elements
    of the window (about 0.2 us each). Used when the fast path cannot settle the chain — adversarial
    windows where nearly every byte position is a candidate (a run of empty strings is one: every byte of
    the zero prefixes reads as a length of 0)."""
    unpack, mm, P = src.count.unpack_from, src.mm, src.len_size
    out = array("q")
    add = out.append
    p, k = 0, 0
    while k < want:
        add(p)
        k += 1
        q = p + P + unpack(mm, cur + p)[0]
        if q >= m or unpack(mm, cur + q)[0] > loose:
            break
        p = q
    return np.frombuffer(out, dtype=np.int64)


def _decode_strings(mm, starts: np.ndarray, lens: np.ndarray) -> tuple:
    """The strings at (starts, lens) as Python str (UTF-8; invalid bytes kept via surrogateescape).

    The offsets come from the vectorized walk; each chunk of up to 65,536 strings is copied once from the
    map and sliced (so the temporaries stay small whatever the array's length). (Decoding the joined
    bodies as one text and slicing it by character offsets was measured slower than this.)
    """
    if starts.size <= _DECODE_CHUNK:
        return tuple(_decode_chunk(mm, starts, lens))
    out: list = []
    for c in range(0, starts.size, _DECODE_CHUNK):
        out.extend(_decode_chunk(mm, starts[c : c + _DECODE_CHUNK], lens[c : c + _DECODE_CHUNK]))
    return tuple(out)


def _decode_chunk(mm, st: np.ndarray, ln: np.ndarray) -> list:
    if st.size == 0:
        return []
    lo = int(st[0])
    raw = mm[lo : int(st[-1] + ln[-1])]
    a = (st - lo).tolist()
    b = (st - lo + ln).tolist()
    if raw.isascii():
        s = raw.decode("ascii")  # ASCII: byte offsets are character offsets
        return [s[i:j] for i, j in zip(a, b)]
    return [raw[i:j].decode("utf-8", "surrogateescape") for i, j in zip(a, b)]


class _Lazy:
    """A located but not yet decoded array value."""

    __slots__ = ("kind", "pos", "n", "vtype", "starts", "lens")

    def __init__(self, kind, pos, n, vtype=None, starts=None, lens=None):
        self.kind, self.pos, self.n, self.vtype, self.starts, self.lens = kind, pos, n, vtype, starts, lens


def read_value(src: _Source, t: int, pos: int, key: str, tpos: int, depth: int = 0):
    """The value of type ``t`` at ``pos``: (value or :class:`_Lazy`, type spec, end offset)."""
    if t not in _VALID_TYPES:
        raise GGUFError(f"metadata {key!r}: unknown value type {t} at byte {tpos} (valid: 0-12)")
    vt = ValueType(t)
    if vt == ValueType.STRING:
        s, pos = src.read_str(pos, f"string value of {key!r}")
        return s, vt, pos
    if vt == ValueType.ARRAY:
        return read_array(src, pos, key, depth)
    src.need(pos, vt.size, f"{vt.name.lower()} value of {key!r}")
    v = src.scalar[vt].unpack_from(src.mm, pos)[0]
    if vt == ValueType.BOOL:
        if v > 1:
            raise GGUFError(f"metadata {key!r}: bool value at byte {pos} is {v}; a GGUF bool is 0 or 1")
        v = bool(v)
    return v, vt, pos + vt.size


def read_array(src: _Source, pos: int, key: str, depth: int):
    """An array value at ``pos`` (after its type id): numeric and string arrays are only located."""
    if depth >= _MAX_NESTING:
        raise GGUFError(f"metadata {key!r}: arrays nested more than {_MAX_NESTING} deep at byte {pos}")
    apos = pos
    et, pos = src.read_u32(pos, f"array element type of {key!r}")
    if et not in _VALID_TYPES:
        raise GGUFError(f"metadata {key!r}: unknown array element type {et} at byte {apos} (valid: 0-12)")
    et = ValueType(et)
    n, pos = src.read_count(pos, f"array length of {key!r}")
    left = src.size - pos
    if et.is_numeric:
        if n > left // et.size:
            raise GGUFError(
                f"metadata {key!r}: array at byte {apos} claims {n} {et.name.lower()} values "
                f"({n * et.size} bytes), but only {left} bytes are left in the file"
            )
        if et == ValueType.BOOL and n:
            b = np.frombuffer(src.mm, np.uint8, n, pos)
            if b.max() > 1:
                i = int(np.argmax(b > 1))
                raise GGUFError(
                    f"metadata {key!r}: bool element {i} at byte {pos + i} is {int(b[i])}; a GGUF bool is 0 or 1"
                )
        return _Lazy("num", pos, n, et), ArrayOf(et), pos + n * et.size
    if et == ValueType.STRING:
        starts, lens, end = _walk_strings(src, pos, n, f"string array {key!r} (byte {apos})")
        return _Lazy("str", pos, n, et, starts, lens), ArrayOf(et), end
    # array of arrays: each element is (element type u32, count, values)
    if n > left // (4 + src.len_size):
        raise GGUFError(
            f"metadata {key!r}: array at byte {apos} claims {n} inner arrays; each needs at least "
            f"{4 + src.len_size} bytes, but only {left} bytes are left in the file"
        )
    src.records += n
    if src.records > MAX_RECORDS:
        raise GGUFError(
            f"metadata {key!r}: array at byte {apos} holds {n:,} inner arrays, which makes more "
            f"than {MAX_RECORDS:,} metadata records (pairs + nested arrays) in the file, the most "
            f"quantlab reads (llama.cpp refuses arrays of arrays altogether)"
        )
    values, specs = [], []
    for _ in range(n):
        v, s, pos = read_array(src, pos, key, depth + 1)
        values.append(v)
        specs.append(s)
    return _Lazy("nested", apos, n, et, values, None), ArrayOf(ValueType.ARRAY, items=tuple(specs)), pos


def materialize(src: _Source, lz: _Lazy):
    """Decode a located array: a read-only numpy array in native byte order (numeric), a tuple of str
    (strings) or a tuple of those (arrays of arrays)."""
    mm = src.mm
    if lz.kind == "num":
        dt = np.dtype(src.order + lz.vtype.dtype_code)
        if lz.n == 0:
            a = np.empty(0, dtype=dt.newbyteorder("="))
        else:
            a = np.frombuffer(mm, dtype=dt, count=lz.n, offset=lz.pos)
            if src.order == ">":
                a = a.astype(dt.newbyteorder("="))
        if lz.vtype == ValueType.BOOL:
            a = a.view(np.bool_)
        a.flags.writeable = False
        return a
    if lz.kind == "str":
        return _decode_strings(mm, lz.starts, lz.lens)
    return tuple(materialize(src, v) for v in lz.starts)


# --------------------------------------------------------------------------- encoding


def infer_type(value):
    """The GGUF type a plain Python/numpy value gets when none is recorded.

    bool -> BOOL; int -> UINT32 (0..2^32-1), INT32 (negative, fits), else UINT64 / INT64; float -> FLOAT32
    (what llama.cpp reads hyper-parameters as); numpy scalars and arrays keep their dtype; str -> STRING;
    bytes -> array[uint8]; lists/tuples -> array of the common element type (ints: INT32 if they all fit,
    else INT64 / UINT64; floats or a mix of ints and floats: FLOAT32); lists of lists -> nested arrays.
    """
    if isinstance(value, (Value, Encoded)):
        return value.type
    if isinstance(value, (bool, np.bool_)):
        return ValueType.BOOL
    if isinstance(value, np.generic):
        t = _dtype_type(value.dtype)
        if t is None:
            raise GGUFError(f"no GGUF value type for a numpy {value.dtype} scalar")
        return t
    if isinstance(value, int):
        if 0 <= value < 1 << 32:
            return ValueType.UINT32
        if -(1 << 31) <= value < 0:
            return ValueType.INT32
        if 0 <= value < 1 << 64:
            return ValueType.UINT64
        if -(1 << 63) <= value < 0:
            return ValueType.INT64
        raise GGUFError(f"integer {value} does not fit any GGUF integer type (64 bits at most)")
    if isinstance(value, float):
        return ValueType.FLOAT32
    if isinstance(value, str):
        return ValueType.STRING
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ArrayOf(ValueType.UINT8)
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise GGUFError(f"metadata arrays are 1-D; got a numpy array of shape {value.shape}")
        if value.dtype.kind in "US":
            return ArrayOf(ValueType.STRING)
        t = _dtype_type(value.dtype)
        if t is None:
            raise GGUFError(f"no GGUF value type for numpy dtype {value.dtype}")
        return ArrayOf(t)
    if isinstance(value, (list, tuple)):
        if len(value) == 0:
            raise GGUFError("cannot infer the element type of an empty list: pass Value([], ArrayOf(ValueType.<TYPE>))")
        if all(isinstance(v, str) for v in value):
            return ArrayOf(ValueType.STRING)
        if all(isinstance(v, (bool, np.bool_)) for v in value):
            return ArrayOf(ValueType.BOOL)
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in value):
            lo, hi = min(int(v) for v in value), max(int(v) for v in value)
            if lo >= -(1 << 31) and hi < 1 << 31:
                return ArrayOf(ValueType.INT32)
            if lo >= -(1 << 63) and hi < 1 << 63:
                return ArrayOf(ValueType.INT64)
            if lo >= 0 and hi < 1 << 64:
                return ArrayOf(ValueType.UINT64)
            raise GGUFError("integers in the list do not fit 64 bits")
        if all(
            isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)) for v in value
        ):
            return ArrayOf(ValueType.FLOAT32)
        if all(isinstance(v, (list, tuple, np.ndarray, bytes)) for v in value):
            return ArrayOf(ValueType.ARRAY, items=tuple(infer_type(v) for v in value))
        kinds = sorted({type(v).__name__ for v in value})
        raise GGUFError(f"a GGUF array holds one type of element; this list mixes {', '.join(kinds)}")
    raise GGUFError(
        f"no GGUF value type for a {type(value).__name__}; use int, float, bool, str, a list or a "
        f"numpy array, or wrap it as Value(value, type)"
    )


def _dtype_type(dt):
    return DTYPE_TO_VALUE_TYPE.get((dt.kind, dt.itemsize))


def _encode_strings(strings) -> bytes:
    """GGUF strings back to back (u64 length + bytes each), assembled with numpy rather than per element."""
    enc = [s if isinstance(s, bytes) else s.encode("utf-8", "surrogateescape") for s in strings]
    n = len(enc)
    if n == 0:
        return b""
    lens = np.fromiter(map(len, enc), dtype=np.int64, count=n)
    body = np.frombuffer(b"".join(enc), dtype=np.uint8)
    out = np.empty(8 * n + body.size, dtype=np.uint8)
    prefix_at = 8 * np.arange(n, dtype=np.int64) + np.concatenate(([0], np.cumsum(lens)[:-1]))
    is_prefix = np.zeros(out.size, dtype=bool)
    idx = (prefix_at[:, None] + np.arange(8)).reshape(-1)
    is_prefix[idx] = True
    out[idx] = lens.astype("<u8").view(np.uint8)
    out[~is_prefix] = body
    return out.tobytes()


def encode_value(value, spec, where: str = "value") -> bytes:
    """The bytes of ``value`` as GGUF type ``spec`` (without the type id), little-endian. An
    :class:`~quantlab.gguf.constants.Encoded` value of that type already is those bytes."""
    if isinstance(value, Encoded):
        if value.type != spec:
            raise GGUFError(f"{where}: the bytes given are a {type_str(value.type)} value, not {type_str(spec)}")
        return value.raw
    if isinstance(value, Value):
        value = value.value
    try:
        if isinstance(spec, ArrayOf):
            return _encode_array(value, spec, where)
        spec = ValueType(spec)
        if spec == ValueType.STRING:
            if isinstance(value, (bytes, bytearray)):
                b = bytes(value)
            elif isinstance(value, str):
                b = value.encode("utf-8", "surrogateescape")
            else:
                raise GGUFError(f"{where}: a string value must be str, got {type(value).__name__}")
            return _U64.pack(len(b)) + b
        if spec == ValueType.BOOL:
            if isinstance(value, (bool, np.bool_)) or value in (0, 1):
                return b"\x01" if value else b"\x00"
            raise GGUFError(f"{where}: a bool value must be True/False, got {value!r}")
        if spec == ValueType.ARRAY:
            raise GGUFError(f"{where}: give array types as ArrayOf(element type)")
        if spec in (ValueType.FLOAT32, ValueType.FLOAT64):
            if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, (bool, np.bool_)):
                raise GGUFError(f"{where}: a {spec.name.lower()} value must be a number, got {value!r}")
            return np.array(value, dtype="<" + spec.dtype_code).tobytes()
        if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)):
            raise GGUFError(f"{where}: a {spec.name.lower()} value must be an integer, got {value!r}")
        return _SCALAR[spec].pack(int(value))
    except struct.error:
        raise GGUFError(f"{where}: {value!r} does not fit {spec.name.lower()}") from None
    except OverflowError:
        raise GGUFError(f"{where}: {value!r} does not fit {type_str(spec)}") from None


def type_str(spec) -> str:
    return type_name(spec)


def _encode_array(value, spec: ArrayOf, where: str) -> bytes:
    et = spec.elem
    if isinstance(value, (bytes, bytearray, memoryview)) and et != ValueType.STRING:
        value = np.frombuffer(bytes(value), dtype=np.uint8)
    if et == ValueType.STRING:
        if isinstance(value, (str, bytes)):
            raise GGUFError(
                f"{where}: an array of strings must be a list/tuple of str, got a single {type(value).__name__}"
            )
        items = list(value)
        for s in items:
            if not isinstance(s, (str, bytes, np.str_)):
                raise GGUFError(f"{where}: array[string] element {s!r} is not a str")
        return (
            _U32.pack(et)
            + _U64.pack(len(items))
            + _encode_strings([str(s) if isinstance(s, np.str_) else s for s in items])
        )
    if et == ValueType.ARRAY:
        items = list(value)
        if len(items) != len(spec.items):
            raise GGUFError(f"{where}: the type gives {len(spec.items)} inner arrays, the value has {len(items)}")
        return (
            _U32.pack(et)
            + _U64.pack(len(items))
            + b"".join(_encode_array(v, s, f"{where}[{i}]") for i, (v, s) in enumerate(zip(items, spec.items)))
        )
    a = np.asarray(value)
    if a.ndim != 1:
        raise GGUFError(f"{where}: metadata arrays are 1-D, got shape {a.shape}")
    if a.size and a.dtype.kind not in "biuf":
        raise GGUFError(f"{where}: array[{et.name.lower()}] needs numbers, got dtype {a.dtype}")
    if et == ValueType.BOOL:
        if a.size and a.dtype.kind != "b" and not np.isin(a, (0, 1)).all():
            raise GGUFError(f"{where}: array[bool] elements must be True/False (0/1)")
        data = a.astype(np.uint8)
    else:
        target = np.dtype("<" + et.dtype_code)
        if a.size and a.dtype.kind == "f" and target.kind in "iu" and not np.array_equal(a, np.trunc(a)):
            raise GGUFError(f"{where}: array[{et.name.lower()}] needs integers, found fractional values")
        if a.size and target.kind in "iu":
            info = np.iinfo(target)
            lo, hi = a.min(), a.max()
            if lo < info.min or hi > info.max:
                raise GGUFError(f"{where}: values {lo}..{hi} do not fit {et.name.lower()}")
        data = a.astype(target)
    return _U32.pack(et) + _U64.pack(a.size) + data.tobytes()
