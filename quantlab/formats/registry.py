"""The format registry: what every ggml type IS, in one table.

Every other layer (API, kernels, GGUF reader/writer, recipes, benchmarks, widgets, notebooks) asks this
registry for block sizes, type sizes and ids; nothing re-derives them. A :class:`Format` also knows where
its implementations live, and each family module registers them explicitly where they are defined, with
one :func:`register` call per format at its end (the way gguf-py's ``__init_subclass__(qtype=...)`` does):

* reference (readable numpy):   ``quantlab.formats.<family>``: ``quantize_<key>``, ``dequantize_<key>``,
  ``inspect_<key>`` (the block inspector, for teaching)
* fast (numba kernels):         ``quantlab.kernels.<family>``: ``quantize_<key>``, ``dequantize_<key>``

where ``key`` is the lower-case name (``q4_k``). :func:`register` refuses a function whose name is not
``<op>_<key>`` and a second registration; ``tests/test_registry.py`` fails for a usable format that lacks
any of the five. The calling convention is the same for all of them:

* ``quantize_<key>(x, imatrix) -> uint8[nrows, row_bytes]`` with ``x`` a C-contiguous float32 array of
  shape ``(nrows, n_per_row)`` and ``imatrix`` either ``None`` or float32 of shape ``(n_per_row,)``;
* ``dequantize_<key>(q, n_per_row) -> float32[nrows, n_per_row]`` with ``q`` uint8 ``(nrows, row_bytes)``;
* ``inspect_<key>(block) -> dict`` with ``block`` the ``type_size`` bytes of one block.

Validation (shapes, dtypes, NaN, imatrix length) happens once, in :mod:`quantlab.api`, before any of
these run, so kernels can trust their inputs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import FormatError, RemovedTypeError, ShapeError

__all__ = ["Format", "get", "all_formats", "register", "registered", "FORMATS", "QK_K", "OPS"]

QK_K = 256

# id  name      block bytes family    vdot  flags
#   vdot: the activation ("vec_dot") type a matrix product with this weight type quantizes its input to,
#         as ggml-cpu's type_traits_cpu[type].vec_dot_type (ggml-cpu.c); "-": no matrix product
#   flags: I = output depends on an importance matrix, R = imatrix required,
#          A = activation-side type (never stored in model files by llama.cpp), X = removed from GGUF
_TABLE = """
0   F32        1    4    floats    F32
1   F16        1    2    floats    F16
2   Q4_0       32   18   legacy    Q8_0  I
3   Q4_1       32   20   legacy    Q8_1  I
4   Q4_2       0    0    removed   -     X
5   Q4_3       0    0    removed   -     X
6   Q5_0       32   22   legacy    Q8_0  I
7   Q5_1       32   24   legacy    Q8_1  I
8   Q8_0       32   34   legacy    Q8_0
9   Q8_1       32   36   legacy    Q8_1  A
10  Q2_K       256  84   kquants   Q8_K  I
11  Q3_K       256  110  kquants   Q8_K  I
12  Q4_K       256  144  kquants   Q8_K  I
13  Q5_K       256  176  kquants   Q8_K  I
14  Q6_K       256  210  kquants   Q8_K  I
15  Q8_K       256  292  kquants   -     A
16  IQ2_XXS    256  66   iq2       Q8_K  IR
17  IQ2_XS     256  74   iq2       Q8_K  IR
18  IQ3_XXS    256  98   iq3       Q8_K  I
19  IQ1_S      256  50   iq1       Q8_K  IR
20  IQ4_NL     32   18   iq4       Q8_0  I
21  IQ3_S      256  110  iq3       Q8_K  I
22  IQ2_S      256  82   iq2       Q8_K  I
23  IQ4_XS     256  136  iq4       Q8_K  I
24  I8         1    1    floats    -
25  I16        1    2    floats    -
26  I32        1    4    floats    -
27  I64        1    8    floats    -
28  F64        1    8    floats    -
29  IQ1_M      256  56   iq1       Q8_K  I
30  BF16       1    2    floats    BF16
31  Q4_0_4_4   0    0    removed   -     X
32  Q4_0_4_8   0    0    removed   -     X
33  Q4_0_8_8   0    0    removed   -     X
34  TQ1_0      256  54   ternary   Q8_K
35  TQ2_0      256  66   ternary   Q8_K
36  IQ4_NL_4_4 0    0    removed   -     X
37  IQ4_NL_4_8 0    0    removed   -     X
38  IQ4_NL_8_8 0    0    removed   -     X
39  MXFP4      32   17   fp4       Q8_0
40  NVFP4      64   36   fp4       Q8_0
41  Q1_0       128  18   legacy    Q8_0
42  Q2_0       64   18   legacy    Q8_0
"""

_REMOVED_WHY = {
    4: "Q4_2 was removed from ggml in 2023",
    5: "Q4_3 was removed from ggml in 2023",
    31: "Q4_0_4_4 was removed from GGUF files: use Q4_0, which ggml repacks at load time",
    32: "Q4_0_4_8 was removed from GGUF files: use Q4_0, which ggml repacks at load time",
    33: "Q4_0_8_8 was removed from GGUF files: use Q4_0, which ggml repacks at load time",
    36: "IQ4_NL_4_4 was removed from GGUF files: use IQ4_NL, which ggml repacks at load time",
    37: "IQ4_NL_4_8 was removed from GGUF files: use IQ4_NL, which ggml repacks at load time",
    38: "IQ4_NL_8_8 was removed from GGUF files: use IQ4_NL, which ggml repacks at load time",
}


# The max_abs column: the largest |weight| each format represents (quantlab.api warns beyond it, with a
# QuantizationWarning, when the blocks of a row come out as inf/NaN or all zeros; the bytes are ggml's).
# "fp16 x k": the format stores a scale (or a min) as fp16, 65504 at most, that multiplies codes of up to
# k in magnitude; ggml's scale searches may pick a slightly larger scale, so these are the measured
# smallest breaking magnitudes over several weight patterns, with and without an importance matrix,
# rounded down (re-measured by tests/test_api.py::test_max_abs_column_matches_what_happens).
_MAX_ABS = {
    "F32": float("inf"),
    "F64": float("inf"),
    "BF16": 3.3895313892515355e38,
    "F16": 65504.0,  # fp16's largest finite value
    "I8": float("inf"),
    "I16": float("inf"),
    "I32": float("inf"),
    "I64": float("inf"),  # integers: no scale
    "Q4_0": 4.5e5,  # fp16 x 8 = 5.2e5 without an imatrix; the imatrix search divides by as little as ~7
    "Q4_1": 6.3e4,  # the block minimum is stored as fp16
    "Q5_0": 9.7e5,  # fp16 x 16 = 1.05e6 without an imatrix
    "Q5_1": 6.2e4,  # the block minimum is stored as fp16
    "Q8_0": 8.3e6,  # fp16 x 127
    "Q8_1": 8.3e6,  # fp16 x 127
    "Q2_K": 9.4e5,
    "Q3_K": 6.0e6,
    "Q4_K": 4.0e6,
    "Q5_K": 4.0e6,
    "Q6_K": 2.5e8,  # fp16 super-block scales
    "Q8_K": float("inf"),  # fp32 scale
    "IQ2_XXS": 9.6e6,
    "IQ2_XS": 6.6e6,
    "IQ3_XXS": 1.8e7,
    "IQ1_S": 8.0e5,
    "IQ4_NL": 7.4e6,
    "IQ3_S": 2.3e7,
    "IQ2_S": 6.9e6,
    "IQ4_XS": 2.3e8,
    "IQ1_M": 7.5e5,
    "TQ1_0": 6.5e4,
    "TQ2_0": 6.5e4,  # fp16 x 1: the scale is the block's largest magnitude
    "MXFP4": float("inf"),  # E8M0 power-of-two scales: the whole fp32 range
    "NVFP4": 1.1e12,  # measured: 1.2e12 to 2.6e15 depending on the weights
    "Q1_0": 6.5e4,  # fp16 x 1: the scale is a mean magnitude, at most the largest
    "Q2_0": 6.5e4,  # fp16 x 1
}


@dataclass(frozen=True)
class Format:
    """One ggml tensor type."""

    name: str
    id: int
    block_size: int  # weights per block
    type_size: int  # bytes per block
    family: str  # module name under quantlab.formats / quantlab.kernels
    vec_dot_type: str | None = None  # ggml-cpu's vec_dot_type (None: no matrix product with this type)
    uses_imatrix: bool = False
    requires_imatrix: bool = False
    activation_only: bool = False
    removed: bool = False
    _cache: dict = field(default_factory=dict, compare=False, repr=False, hash=False)

    @property
    def key(self) -> str:
        return self.name.lower()

    @property
    def bpw(self) -> float:
        """Bits per weight, block scales included (8 * bytes / weights)."""
        return 8.0 * self.type_size / self.block_size if self.block_size else 0.0

    @property
    def is_quantized(self) -> bool:
        return self.family not in ("floats", "removed")

    def row_bytes(self, n_per_row: int) -> int:
        """Bytes of one row of ``n_per_row`` weights (must be a multiple of the block size)."""
        self.check_usable()
        if n_per_row % self.block_size:
            raise ShapeError(
                f"{self.name} stores blocks of {self.block_size} weights, but a row has {n_per_row} "
                f"weights ({n_per_row} is not a multiple of {self.block_size})"
            )
        return n_per_row // self.block_size * self.type_size

    def nbytes(self, n_elements: int) -> int:
        return self.row_bytes(n_elements)

    def check_usable(self) -> None:
        if self.removed:
            raise RemovedTypeError(
                f"ggml type id {self.id} ({self.name}) is no longer a valid tensor type: "
                f"{_REMOVED_WHY.get(self.id, 'removed')}"
            )

    def vec_dot(self) -> str:
        """The type ggml quantizes activations to before a matrix product with this weight type
        (``vec_dot_type``); FormatError for types without a matrix product (integers, F64,
        activation-only Q8_K, removed types)."""
        self.check_usable()
        if self.vec_dot_type is None:
            raise FormatError(f"{self.name} has no matrix product in ggml (no vec_dot_type)")
        return self.vec_dot_type

    def impl(self, kind: str, op: str) -> Callable:
        """The function implementing ``op`` ('quantize' | 'dequantize' | 'inspect') for ``kind``
        ('reference' | 'fast'): its family module is imported (it registers itself) on first use.
        Raises FormatError when the module registered none."""
        self.check_usable()
        ck = (kind, op)
        if ck in self._cache:
            return self._cache[ck]
        if kind not in ("reference", "fast"):
            raise FormatError(f"impl must be 'reference' or 'fast', got {kind!r}")
        if op not in OPS["reference"]:
            raise FormatError(f"op must be one of {', '.join(OPS['reference'])}, got {op!r}")
        if op == "inspect":
            kind = "reference"  # one block inspector, the reference's
        pkg = _PACKAGE[kind]
        importlib.import_module(f"{pkg}.{self.family}")
        fn = _IMPLS.get((self.name, kind, op))
        if fn is None:
            raise FormatError(
                f"{op} is not implemented for {self.name} ({kind} implementation: {pkg}.{self.family} registers none)"
            )
        self._cache[ck] = fn
        return fn

    def has_impl(self, kind: str, op: str) -> bool:
        try:
            self.impl(kind, op)
            return True
        except FormatError:
            return False

    @property
    def max_abs(self) -> float:
        """The largest weight magnitude this format's scales can hold (the ``max_abs`` column below:
        beyond it ggml's quantizer writes blocks that decode to inf/NaN or zeros; inf = no such limit)."""
        return _MAX_ABS[self.name]

    def gguf_type(self):
        """The matching ``gguf.GGMLQuantizationType`` member, or None where the gguf package lacks it."""
        # gguf-py (~35 ms) is not imported by `import quantlab`
        import gguf

        try:
            return gguf.GGMLQuantizationType(self.id)
        except ValueError:
            return None


def _parse() -> tuple[Format, ...]:
    out = []
    for line in _TABLE.strip().splitlines():
        parts = line.split()
        flags = parts[6] if len(parts) > 6 else ""
        out.append(
            Format(
                name=parts[1],
                id=int(parts[0]),
                block_size=int(parts[2]),
                type_size=int(parts[3]),
                family=parts[4],
                vec_dot_type=None if parts[5] == "-" else parts[5],
                uses_imatrix="I" in flags,
                requires_imatrix="R" in flags,
                activation_only="A" in flags,
                removed="X" in flags,
            )
        )
    assert [f.id for f in out] == list(range(len(out)))
    names = {f.name for f in out}
    assert all(f.vec_dot_type in names for f in out if f.vec_dot_type is not None)
    return tuple(out)


FORMATS: tuple[Format, ...] = _parse()
_BY_NAME = {f.name: f for f in FORMATS}

# Implementations, registered by the family modules themselves (register below).
OPS = {"reference": ("quantize", "dequantize", "inspect"), "fast": ("quantize", "dequantize")}
_PACKAGE = {"reference": "quantlab.formats", "fast": "quantlab.kernels"}
_IMPLS: dict[tuple[str, str, str], Callable] = {}


def register(kind: str, name: str, **ops: Callable) -> None:
    """Register the ``kind`` ('reference' | 'fast') implementations of format ``name``, one keyword per
    op (``quantize=quantize_q4_k, dequantize=dequantize_q4_k[, inspect=inspect_q4_k]``). Called at the
    end of each family module. Refuses (FormatError) an unknown format or op, a function not named
    ``<op>_<key>`` (so a misnamed function cannot stand in for another format), and a second
    registration of the same (format, kind, op)."""
    f = _BY_NAME.get(name)
    if f is None or f.removed:
        raise FormatError(f"register: {name!r} is not a usable format")
    if kind not in OPS:
        raise FormatError(f"register: kind must be 'reference' or 'fast', got {kind!r}")
    for op, fn in ops.items():
        if op not in OPS[kind]:
            raise FormatError(f"register: {kind} implementations are {', '.join(OPS[kind])}; got {op!r}")
        want = f"{op}_{f.key}"
        if getattr(fn, "__name__", None) != want:
            raise FormatError(
                f"register: {name} {op} must be a function named {want}, got {getattr(fn, '__name__', fn)!r}"
            )
        old = _IMPLS.get((name, kind, op))
        if old is not None and _where(old) != _where(fn):  # the same function again: a reload
            raise FormatError(f"register: {name} {kind} {op} is already registered ({_where(old)})")
        _IMPLS[(name, kind, op)] = fn


def _where(fn) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}"


def registered(kind: str) -> dict[tuple[str, str], Callable]:
    """{(format name, op): function} of every ``kind`` implementation registered so far (import the
    family modules first to see them all)."""
    return {(n, op): fn for (n, k, op), fn in _IMPLS.items() if k == kind}


def get(fmt) -> Format:
    """Look a format up by name (case-insensitive), ggml id, ``gguf.GGMLQuantizationType`` or Format.

    Removed types are returned (so a reader can name them); using them raises RemovedTypeError.
    """
    if isinstance(fmt, Format):
        return fmt
    if isinstance(fmt, str):
        f = _BY_NAME.get(fmt.strip().upper())
        if f is None:
            raise FormatError(f"unknown format {fmt!r}; known formats: {', '.join(f.name for f in all_formats())}")
        return f
    try:
        i = int(fmt)
    except (TypeError, ValueError):
        raise FormatError(f"a format is a name like 'Q4_K' or a ggml type id, got {fmt!r}") from None
    if not 0 <= i < len(FORMATS):
        raise FormatError(f"unknown ggml type id {i}: valid ids are 0..{len(FORMATS) - 1}")
    return FORMATS[i]


def all_formats(*, include_activation: bool = True, quantized_only: bool = False) -> list[Format]:
    """Every usable (not removed) format in id order; filters for common needs."""
    return [
        f
        for f in FORMATS
        if not f.removed and (include_activation or not f.activation_only) and (not quantized_only or f.is_quantized)
    ]
