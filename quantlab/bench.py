"""Benchmarks, callable from a notebook cell and from ``quantlab bench``: every peer in one run.

    >>> t = quantlab.bench.formats(["Q4_0", "Q4_K"], size=1 << 20)   # a table; print(t) or t in a cell
    >>> quantlab.bench.plot(t)

Throughput is MB of float32 weights per second (the same unit for quantize and dequantize: the
float side), best of several repeats after a warm-up (numba compiles on first use; that is not
counted). Peers measured in the same run, on the same real weights:

* ``reference``  – quantlab's numpy reference (run on a slice; it is for reading, not speed)
* ``numba-1t``   – quantlab's kernels on one thread; ``numba-Nt`` on all cores
* ``gguf``       – the ``gguf`` package (gguf-py), where it implements the operation
* ``ggml-1t``    – ggml itself (``ggml_quantize_chunk`` / ``to_float``, single-threaded), when found

Ratios are against ggml-1t from the same run. Nothing here is asserted in tests: speed is measured and
reported, never claimed.
"""

from __future__ import annotations

import glob
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from . import api, data
from .errors import DataMissing, ModelError, QuantlabError
from .formats import all_formats, get
from .gguf import open as qopen
from .peers import ggml
from .progress import bar
from .recipes import quantize_model

__all__ = ["formats", "gguf_open", "model", "matvec", "memory_bandwidth", "plot", "Table", "run", "register"]


def _best_time(fn, min_time=0.15, max_repeats=400, min_repeats=2, warmup=True):
    """Best of as many calls as fit in ``min_time`` (at least ``min_repeats``, at most ``max_repeats``),
    after one untimed call when ``warmup`` (JIT, caches).
    Fast calls (a dequantize takes ~0.1 ms) need hundreds of repeats for a stable best: with 20, two
    quiet runs of the same kernel differed by 25%."""
    if warmup:
        fn()
    times = []
    t_end = time.perf_counter() + min_time
    while len(times) < min_repeats or (time.perf_counter() < t_end and len(times) < max_repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


@dataclass
class Table:
    """Benchmark rows (list of dicts) that print as text and render as HTML in a notebook."""

    rows: list = field(default_factory=list)
    title: str = ""
    columns: tuple = ()

    def __iter__(self):
        return iter(self.rows)

    def __len__(self):
        return len(self.rows)

    def _fmt(self, v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return "" if v is None else str(v)

    def __str__(self):
        cols = self.columns or tuple(self.rows[0]) if self.rows else ()
        cells = [[str(c) for c in cols]] + [[self._fmt(r.get(c)) for c in cols] for r in self.rows]
        w = [max(len(row[i]) for row in cells) for i in range(len(cols))]
        lines = [self.title] if self.title else []
        for k, row in enumerate(cells):
            lines.append("  ".join(s.rjust(w[i]) if k and i else s.ljust(w[i]) for i, s in enumerate(row)))
            if k == 0:
                lines.append("  ".join("-" * x for x in w))
        return "\n".join(lines)

    def _repr_html_(self):
        cols = self.columns or (tuple(self.rows[0]) if self.rows else ())
        head = "".join(f"<th>{c}</th>" for c in cols)
        body = "".join("<tr>" + "".join(f"<td>{self._fmt(r.get(c))}</td>" for c in cols) + "</tr>" for r in self.rows)
        cap = f"<caption>{self.title}</caption>" if self.title else ""
        return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _weights(n_elements: int, n_per_row: int) -> tuple[np.ndarray, str]:
    """Real weights (all-MiniLM-L6-v2, fp32) tiled to n_elements, as rows of n_per_row, and what they are
    (for the table's title): heavy-tailed synthetic ones when the model package is not installed."""
    try:
        ts = data.tensors("minilm")
    except DataMissing:
        flat = (np.random.default_rng(0).standard_t(4, n_elements) * 0.02).astype(np.float32)
        what = "synthetic Student-t weights (all-MiniLM-L6-v2 is not installed)"
    else:
        parts, total = [], 0
        for k in ts:
            a = ts[k]
            if a.ndim == 2:
                parts.append(a.reshape(-1))
                total += a.size
            if total >= n_elements:
                break
        flat = np.resize(np.concatenate(parts), n_elements)
        what = "real weights"
    return np.ascontiguousarray(flat.reshape(-1, n_per_row), dtype=np.float32), what


def _gguf_ops(fmt):
    try:
        # gguf-py (~35 ms): only the peer column
        import gguf.quants as gq
    except ImportError:
        return None, None
    qt = fmt.gguf_type()
    if qt is None:
        return None, None
    probe = np.zeros((1, max(fmt.block_size, 256)), np.float32)
    q_ok = d_ok = True
    try:
        qq = gq.quantize(probe, qt)
    except Exception:  # noqa: BLE001 - gguf-py has no quantizer for this type
        q_ok = False
        im = np.ones(probe.shape[1], np.float32) if fmt.requires_imatrix else None
        qq = api.quantize(probe, fmt, imatrix=im) if fmt.has_impl("fast", "quantize") else None
    try:
        if qq is None:
            raise NotImplementedError
        gq.dequantize(qq, qt)
    except Exception:  # noqa: BLE001 - gguf-py has no dequantizer for this type
        d_ok = False
    return ((lambda x: gq.quantize(x, qt)) if q_ok else None, (lambda q: gq.dequantize(q, qt)) if d_ok else None)


def _sample_rows(a: np.ndarray, k: int) -> np.ndarray:
    """``k`` rows spread evenly over ``a`` (contiguous), or ``a`` itself when ``k`` covers it."""
    n = a.shape[0]
    if k >= n:
        return a
    return np.ascontiguousarray(a[np.linspace(0, n - 1, k).round().astype(np.intp)])


def _rows_for(fn, a: np.ndarray, call_time: float, least: int = 1, probe: int = 4) -> tuple[int, float]:
    """How many rows of ``a`` make one call ``fn(rows)`` take about ``call_time`` seconds (between
    ``least`` and all of them): one untimed call on ``probe`` rows (numba loads or compiles the kernel
    there), then the best of two timed. Fast operations get every row; a slow search (IQ2 quantize:
    milliseconds a row) gets a few, so that the best of several calls still fits in ``min_time``.
    Returns the rows and the probe's best seconds per row."""
    n = a.shape[0]
    k0 = min(probe, n)
    fn(a[:k0])
    per_row = _best_time(lambda: fn(a[:k0]), min_time=0.0, warmup=False) / k0  # best of 2
    return int(min(n, max(least, call_time / max(per_row, 1e-9)))), per_row


def _bar_iter(b, items):
    """``items`` one by one, moving the bar ``b`` after each; closes it at the end."""
    with b:
        for x in items:
            yield x
            b.update()


def _dequantize_input(f, g, x, k_quant: int, im_full) -> np.ndarray | None:
    """Quantized rows of ``x`` to dequantize, as many rows as ``x``: at least 128 distinct ones (repeating a
    few lets the branch predictor learn their sign bits: ggml's IQ2/IQ3 dequantize ran 4x faster on 9 rows
    repeated; 64 or more: no effect). ``g``: ggml when it has the type. None: nothing can quantize it."""
    n_rows = x.shape[0]
    im = im_full if f.requires_imatrix else None
    xq = _sample_rows(x, max(k_quant, min(n_rows, 128)))
    if f.has_impl("fast", "quantize"):
        q = api.quantize(xq, f, imatrix=im)
    elif g is not None:
        q = g.quantize(xq, f.id, im)
    else:
        return None
    return q if q.shape[0] == n_rows else np.resize(q, (n_rows, q.shape[1]))


def _dequantize_peers(f, g, gd, nthreads: int, reference: bool, n_per_row: int) -> dict:
    """Each peer's dequantize of format ``f`` (None where it has none); ``g``: ggml when it has the type."""
    fast = f.has_impl("fast", "dequantize")
    return {
        "reference": (lambda d: api.dequantize(d, f, impl="reference"))
        if reference and f.has_impl("reference", "dequantize")
        else None,
        "numba-1t": (lambda d: api.dequantize(d, f, threads=1)) if fast else None,
        f"numba-{nthreads}t": (lambda d: api.dequantize(d, f, threads=nthreads)) if fast else None,
        "gguf": gd,
        "ggml-1t": (lambda d: g.dequantize(d, f.id, n_per_row)) if g is not None and g.has_to_float(f.id) else None,
    }


def _quantize_peers(f, g, gq, im, nthreads: int, reference: bool) -> dict:
    """Each peer's quantize of format ``f`` with imatrix ``im`` (None where it has none)."""
    fast = f.has_impl("fast", "quantize")
    return {
        "reference": (lambda d: api.quantize(d, f, imatrix=im, impl="reference"))
        if reference and f.has_impl("reference", "quantize")
        else None,
        "numba-1t": (lambda d: api.quantize(d, f, imatrix=im, threads=1)) if fast else None,
        f"numba-{nthreads}t": (lambda d: api.quantize(d, f, imatrix=im, threads=nthreads)) if fast else None,
        "gguf": gq if im is None else None,
        # ggml_quantize_chunk has no case for the activation types Q8_1/Q8_K (it aborts)
        "ggml-1t": (lambda d: g.quantize(d, f.id, im)) if g is not None and not f.activation_only else None,
    }


def _time_peers(run: dict, a: np.ndarray, k: int, n_per_row: int, ref_rows: int, call_time, min_time) -> dict:
    """MB/s of float32 (the float side) of each peer in ``run`` on ``k`` rows of ``a`` spread over it; the
    numpy reference on at most ``ref_rows`` (10-100x slower: one row, best of 2, when that is slow)."""
    out = {}
    a_k = _sample_rows(a, k)
    for impl, fn in run.items():
        if fn is None:
            out[impl] = None
            continue
        a_r = a_k
        if impl == "reference":
            k_r, per_row = _rows_for(fn, a[:ref_rows], call_time, probe=1)
            out["reference rows"] = k_r
            if k_r == 1:
                out[impl] = n_per_row * 4 / 1e6 / per_row
                continue
            a_r = _sample_rows(a, k_r)
        t = _best_time(lambda: fn(a_r), min_time=min_time)
        out[impl] = a_r.shape[0] * n_per_row * 4 / 1e6 / t
    return out


def _with_ratios(row: dict, nthreads: int) -> dict:
    """``row`` plus numba's ratios to ggml-1t and gguf of the same run (None where a side is missing)."""
    base, one, many = row.get("ggml-1t"), row.get("numba-1t"), row.get(f"numba-{nthreads}t")
    row["numba-1t/ggml"] = one / base if base and one else None
    row[f"numba-{nthreads}t/ggml"] = many / base if base and many else None
    row["numba-1t/gguf"] = one / row["gguf"] if row.get("gguf") and one else None
    return row


def _operations(f, im_full) -> list:
    """(operation, imatrix) pairs timed for format ``f``: quantize (not for a format that requires an
    imatrix), quantize+imatrix where ``im_full`` is given and the format uses one, dequantize."""
    ops = [] if f.requires_imatrix else [("quantize", None)]
    if im_full is not None and f.uses_imatrix:
        ops.append(("quantize+imatrix", im_full))
    return ops + [("dequantize", None)]


def _formats_table(rows: list, nthreads: int, what: str, g) -> Table:
    cols = (
        "format",
        "op",
        "reference",
        "numba-1t",
        f"numba-{nthreads}t",
        "gguf",
        "ggml-1t",
        "numba-1t/ggml",
        f"numba-{nthreads}t/ggml",
        "numba-1t/gguf",
    )
    src = f"ggml: {g.source}" if g else "ggml: not found"
    return Table(
        rows, f"throughput, MB of float32 per second ({what}, slow operations on fewer rows: see 'rows'; {src})", cols
    )


def formats(
    names=None,
    size: int = 1 << 20,
    n_per_row: int = 4096,
    imatrix: bool = True,
    reference: bool = True,
    peers: bool = True,
    ref_rows: int = 4,
    threads: int | None = None,
    min_time: float = 0.05,
    call_time: float = 0.0125,
    progress=True,
) -> Table:
    """Quantize/dequantize throughput of each format for every implementation, ratios vs ggml.

    ``size``: weights per measurement (rows of ``n_per_row``), at most: a quantize slower than
    ``call_time`` seconds a call on all of them is timed on fewer rows (at least 4, and 2 per thread),
    spread over the matrix, the same rows for every peer of that format and operation (``rows`` in each
    table row says how many; a figure in MB/s hardly depends on it: these operations are compute-bound).
    Each peer's figure is the best of as many calls as fit in ``min_time`` (at least 2, at most 400).
    Dequantize always runs on ``size`` weights: at least 128 quantized rows, repeated to that size (fewer
    would let the CPU's branch predictor learn them). ``ref_rows``: at most this many rows for the slow numpy reference (one
    row, best of two calls, where a row takes longer than ``call_time``; ``reference rows`` in each
    table row); ``imatrix``: also time the importance-matrix path where the format has one.
    ``progress``: a bar over the formats (True, see :mod:`quantlab.progress`), nothing (False), or
    ``progress("Q4_K quantize")`` called before each measurement.
    Default set: every quantized type plus F16 and BF16 (their rounding is real work and ggml and gguf
    both have it); F32, F64 and the integer types are plain numpy casts and are left out (name them
    to time them anyway).
    """
    g = ggml() if peers else None

    def ok(f):  # the types this ggml has (probed, no abort)
        return g is not None and g.supports(f.id)

    fmts = (
        [get(n) for n in names] if names else [f for f in all_formats() if f.is_quantized or f.name in ("F16", "BF16")]
    )
    x, source = _weights(size, n_per_row)
    n_rows = x.shape[0]
    rng = np.random.default_rng(1)
    im_full = (rng.random(n_per_row) + 0.05).astype(np.float32)
    nthreads = threads or (os.cpu_count() or 1)
    least = min(n_rows, max(4, 2 * nthreads))  # every thread gets rows to work on
    rows = []

    fbar = bar(len(fmts), "bench formats", "format", enabled=bool(progress) and not callable(progress))
    for f in _bar_iter(fbar, fmts):
        gg = g if ok(f) else None  # ggml, when it has this type
        if not f.has_impl("fast", "quantize") and gg is None:
            continue
        gq, gd = _gguf_ops(f) if peers else (None, None)
        k_quant = n_rows  # rows the first quantize was timed on
        for op, im in _operations(f, im_full if imatrix else None):
            if callable(progress):
                progress(f"{f.name} {op}")
            fbar.set_postfix_str(f"{f.name} {op}")
            if op == "dequantize":
                a = _dequantize_input(f, gg, x, k_quant, im_full)
                if a is None:
                    continue
                run = _dequantize_peers(f, gg, gd, nthreads, reference, n_per_row)
            else:
                a = x
                run = _quantize_peers(f, gg, gq, im, nthreads, reference)
            pace = run["numba-1t"] or run["ggml-1t"]
            if pace is None:
                continue
            k = n_rows if op == "dequantize" else _rows_for(pace, a, call_time, least)[0]
            if op != "dequantize" and k_quant == n_rows:
                k_quant = k
            row = {"format": f.name, "op": op, "rows": k}
            row.update(_time_peers(run, a, k, n_per_row, ref_rows, call_time, min_time))
            rows.append(_with_ratios(row, nthreads))
    return _formats_table(rows, nthreads, f"up to {n_rows}x{n_per_row} {source}", g)


def gguf_open(path=None, repeats: int = 5) -> Table:
    """Opening a GGUF and reading every metadata value (vocabulary and merges included):
    quantlab (best of up to ``repeats`` calls) vs gguf.GGUFReader (one call: it takes seconds); plus
    quantlab's open without touching the big arrays."""
    # gguf-py (~35 ms): only this benchmark
    import gguf

    path = str(path or data.path("smollm2"))

    def ql_all():
        with qopen(path) as f:
            for k in f.metadata:
                v = f.metadata[k]
                if isinstance(v, (list, tuple)):
                    len(v)
            return f

    def ql_lazy():
        with qopen(path) as f:
            return len(f.tensors)

    def gg_all():
        r = gguf.GGUFReader(path)
        for fld in r.fields.values():
            fld.contents()
        return r

    t_q = _best_time(ql_all, min_time=0.5, max_repeats=repeats)
    t_l = _best_time(ql_lazy, min_time=0.2, max_repeats=repeats)
    # gguf's reader takes seconds (it builds a Python object per vocabulary entry and merge): one call,
    # with the file's pages already cached by the calls above
    t_g = _best_time(gg_all, min_time=0.0, max_repeats=1, min_repeats=1, warmup=False)
    rows = [
        {"task": "open + read all metadata", "quantlab ms": t_q * 1e3, "gguf ms": t_g * 1e3, "speed-up": t_g / t_q},
        {"task": "open (lazy: header, tensor table)", "quantlab ms": t_l * 1e3, "gguf ms": None, "speed-up": None},
    ]
    return Table(rows, f"GGUF open: {os.path.basename(path)}", ("task", "quantlab ms", "gguf ms", "speed-up"))


# llama.cpp builds that tools/build_llama_cpp.sh makes: the portable AVX2 one the tests use as oracle and
# peer, and the one a user's plain `cmake` gives (GGML_NATIVE=ON: AVX-512/VNNI where the CPU has them)
LLAMA_FLAVOURS = {"avx2": ".cache/oracle/bin", "native": ".cache/oracle-native/bin"}


def llama_bench_binary(flavour: str | None = None):
    """llama.cpp's ``llama-bench``: in the folder named by QUANTLAB_LLAMA_BIN, else the build of
    ``flavour`` (``"avx2"``, the default, or ``"native"``; default from QUANTLAB_LLAMA_FLAVOUR) that
    tools/build_llama_cpp.sh makes next to the package, else (no flavour asked for) on PATH; None when
    there is none."""
    env = os.environ.get("QUANTLAB_LLAMA_BIN")
    cands = [pathlib.Path(env) / "llama-bench"] if env and flavour is None else []
    fl = flavour or os.environ.get("QUANTLAB_LLAMA_FLAVOUR") or "avx2"
    if fl not in LLAMA_FLAVOURS:
        raise QuantlabError(f"unknown llama.cpp build flavour {fl!r}: one of {', '.join(LLAMA_FLAVOURS)}")
    cands.append(pathlib.Path(__file__).resolve().parent.parent / LLAMA_FLAVOURS[fl] / "llama-bench")
    for c in cands:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    found = shutil.which("llama-bench") if flavour is None else None
    return pathlib.Path(found) if found else None


_ISA_PROBE = """
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
names = ["avx", "avx2", "fma", "f16c", "avx_vnni", "avx512", "avx512_vbmi", "avx512_vnni", "avx512_bf16", "amx_int8"]
print(" ".join(n.upper() for n in names if getattr(lib, "ggml_cpu_has_" + n, None) and getattr(lib, "ggml_cpu_has_" + n)()))
"""


def llama_build_info(exe) -> dict:
    """Which llama.cpp build ``exe`` is: ``flavour`` (from the BUILD file tools/build_llama_cpp.sh writes
    next to bin/, else from the folder name), ``isa``: the instruction sets its CPU backend was compiled
    for (``ggml_cpu_has_*`` of its libggml-cpu, asked in a subprocess so this process keeps its own ggml),
    ``openmp`` when recorded, and a one-line ``label``."""
    exe = pathlib.Path(exe).resolve()
    root = exe.parent.parent
    info = {"flavour": None, "isa": None, "openmp": None}
    build = root / "BUILD"
    if build.is_file():
        kv = dict(ln.split("=", 1) for ln in build.read_text().splitlines() if "=" in ln)
        info["flavour"] = kv.get("flavour")
        if "GGML_OPENMP" in kv:
            info["openmp"] = kv["GGML_OPENMP"].upper() in ("ON", "1", "TRUE")
    if info["flavour"] is None:
        info["flavour"] = "native" if "native" in root.name else ("avx2" if root.name == "oracle" else "?")
    for lib in (root / "lib" / "libggml-cpu.so", exe.parent / "libggml-cpu.so"):
        if lib.is_file():
            env = dict(os.environ)
            env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(lib.parent), env.get("LD_LIBRARY_PATH")]))
            try:
                r = subprocess.run(
                    [sys.executable, "-c", _ISA_PROBE, str(lib)], capture_output=True, text=True, env=env, timeout=60
                )
                if r.returncode == 0:
                    info["isa"] = r.stdout.strip()
            except (OSError, subprocess.SubprocessError):
                pass
            break
    omp = "" if info["openmp"] is None else (", OpenMP" if info["openmp"] else ", no OpenMP")
    info["label"] = f"{info['flavour']} build [{info['isa'] or 'ISA unknown'}{omp}]"
    return info


def parse_llama_bench(text: str) -> dict:
    """llama-bench's ``-o json`` output -> {"llama_pp_tok_s", "llama_tg_tok_s"} (the best of its
    repetitions, like quantlab's own figures) plus the means it reports itself. A test without a prompt
    or without generation leaves its keys out."""
    try:
        runs = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"llama-bench did not print JSON ({e}); its output starts with {text[:80]!r}") from None
    if isinstance(runs, dict):
        runs = [runs]
    out = {}
    for r in runs:
        if not isinstance(r, dict) or "avg_ts" not in r:
            raise ValueError("llama-bench JSON entries need avg_ts (tokens/s); got " + repr(r)[:80])
        kind = "tg" if int(r.get("n_gen", 0)) > 0 else "pp"
        samples = r.get("samples_ts") or [r["avg_ts"]]
        out[f"llama_{kind}_tok_s"] = float(max(samples))
        out[f"llama_{kind}_avg_tok_s"] = float(r["avg_ts"])
        out[f"llama_{kind}_n"] = int(r.get("n_gen") or r.get("n_prompt") or 0)
        out["llama_build"] = r.get("build_commit")
    return out


def run_llama_bench(
    path, threads: int = 2, n_prompt: int = 512, n_gen: int = 32, reps: int = 2, binary=None, timeout: float = 900
) -> dict | None:
    """Run ``llama-bench -m path -t threads -p n_prompt -n n_gen -r reps -o json`` (its shared
    libraries from the sibling lib folder) and parse it; None when llama-bench is not found."""
    exe = binary or llama_bench_binary()
    if exe is None:
        return None
    env = dict(os.environ)
    lib = exe.resolve().parent.parent / "lib"
    if lib.is_dir():
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(lib), env.get("LD_LIBRARY_PATH")]))
    cmd = [
        str(exe),
        "-m",
        str(path),
        "-t",
        str(threads),
        "-p",
        str(n_prompt),
        "-n",
        str(n_gen),
        "-r",
        str(reps),
        "-o",
        "json",
    ]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"llama-bench on {path} did not finish within {timeout:.0f} s") from None
    if p.returncode != 0:
        raise RuntimeError(f"llama-bench failed ({p.returncode}): {p.stderr.strip()[-300:]}")
    return parse_llama_bench(p.stdout)


def _load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


def model(
    paths=None,
    n_prompt: int = 512,
    n_gen: int = 32,
    threads: int = 2,
    ftypes=("Q8_0", "Q4_0", "Q4_K_M", "IQ4_XS"),
    workdir=None,
    reps: int = 2,
    llama: bool = True,
    flavour: str | None = None,
    progress=True,
) -> Table:
    """Prompt processing (pp) and generation (tg) tokens/s of quantlab's llama forward
    (quantlab.model.bench) for the shipped SmolLM2 model and its requantizations to ``ftypes``
    (made with quantlab.recipes into ``workdir``, a temporary folder by default) — and, in the same run,
    llama.cpp's ``llama-bench`` on the same files with the same threads (see :func:`llama_bench_binary`;
    ``llama=False`` or no binary: those columns stay empty and the title says so).

    Both sides report the best of ``reps`` runs. Each file is measured by quantlab and right after by
    llama-bench, so both see the same machine load; the title shows the load average at the start and
    each row the load when its file started.

    ``flavour``: which llama.cpp build to run (``"avx2"``, the tests' portable build, or ``"native"``,
    what a plain cmake gives; see tools/build_llama_cpp.sh); the title names it with the instruction sets
    it was compiled for. A file quantlab cannot run (an architecture it does not support) keeps its
    llama.cpp columns and says why in ``note``.
    ``progress``: a bar over the files (True, see :mod:`quantlab.progress`) or nothing (False)."""
    exe = (llama_bench_binary(flavour) if flavour else llama_bench_binary()) if llama else None
    build = llama_build_info(exe) if exe is not None else None
    load = _load_average()
    rows = []
    mbar = bar(None, "bench model", "file", enabled=bool(progress))
    with tempfile.TemporaryDirectory() as tmp, mbar:
        if paths is None:
            paths = _smollm2_files(ftypes, workdir or tmp, mbar)
        mbar.reset(total=len(paths))
        for p in paths:
            mbar.set_postfix_str(os.path.basename(str(p)))
            r = _quantlab_model_row(p, n_prompt, n_gen, threads, reps)
            rows.append(_with_llama_bench(r, p, exe, build, threads, n_prompt, n_gen, reps))
            mbar.update()
    t = _model_table(rows, exe, build, flavour, threads, reps, load)
    t.build = build
    return t


def _smollm2_files(ftypes, workdir: str, mbar) -> list:
    """The shipped SmolLM2 file and its requantizations to ``ftypes`` in ``workdir`` (made once)."""
    src = data.path("smollm2")
    paths = [src]
    for ft in ftypes or ():
        out = os.path.join(workdir, f"smollm2-{ft}.gguf")
        if not os.path.exists(out):
            mbar.set_postfix_str(f"quantize {ft}")
            quantize_model(src, out, ft, allow_requantize=True, verbose=False, progress=False)
        paths.append(out)
    return paths


def _quantlab_model_row(p, n_prompt: int, n_gen: int, threads: int, reps: int) -> dict:
    """quantlab's pp/tg tokens/s on file ``p`` (None and a note when quantlab cannot run it), with the
    file's name, size and the load average when it started."""
    # the model code starts numba (~0.25 s): only `bench model`
    from .model import bench as mbench

    row_load = _load_average().split(" ")[0]
    try:
        r = dict(mbench(p, n_prompt=n_prompt, n_gen=n_gen, threads=threads, reps=reps))
    except ModelError as e:
        r = {"threads": threads, "n_prompt": n_prompt, "n_gen": n_gen, "pp_tok_s": None, "tg_tok_s": None}
        r["note"] = f"quantlab: {e}"
    r["model"] = os.path.basename(str(p))
    r["MB"] = os.path.getsize(p) / 1e6
    r["load"] = row_load
    return r


def _with_llama_bench(r: dict, p, exe, build, threads: int, n_prompt: int, n_gen: int, reps: int) -> dict:
    """``r`` plus llama-bench's figures on the same file right after (when found) and the ratios."""
    try:
        lb = run_llama_bench(p, threads, n_prompt, n_gen, reps, binary=exe) if exe is not None else None
    except RuntimeError as e:  # one file's llama-bench failing (a crash, a timeout) keeps the table
        lb = None
        r["note"] = f"llama.cpp: {e}"
    if lb:
        r.update(lb)
        r["llama_flavour"] = build["flavour"]
        for k in ("pp", "tg"):
            ours, theirs = r.get(f"{k}_tok_s"), lb.get(f"llama_{k}_tok_s")
            r[f"{k} quantlab/llama"] = ours / theirs if ours and theirs else None
    return r


def _model_table(rows: list, exe, build, flavour, threads: int, reps: int, load: str) -> Table:
    who = (
        f"vs llama.cpp's llama-bench, {build['label']} ({exe}), in the same run"
        if exe is not None
        else (
            f"llama-bench not found ({flavour or 'avx2'} build: tools/build_llama_cpp.sh, or set QUANTLAB_LLAMA_BIN): "
            f"no llama.cpp columns"
        )
    )
    what = (
        "SmolLM2-135M-Instruct"
        if rows and all(r["model"].startswith(("SmolLM2", "smollm2")) for r in rows)
        else "model"
    )
    title = (
        f"{what} speed with quantlab's forward ({threads} threads, best of {reps}), {who}; load average at start {load}"
    )
    cols = (
        "model",
        "MB",
        "threads",
        "load",
        "n_prompt",
        "pp_tok_s",
        "llama_pp_tok_s",
        "pp quantlab/llama",
        "n_gen",
        "tg_tok_s",
        "llama_tg_tok_s",
        "tg quantlab/llama",
    )
    if any(r.get("note") for r in rows):
        cols += ("note",)
    return Table(rows, title, cols)


def l3_bytes() -> int | None:
    """This machine's last-level (L3) cache size in bytes, from sysconf or /sys; None when unknown."""
    try:
        v = os.sysconf("SC_LEVEL3_CACHE_SIZE")
        if v and v > 0:
            return int(v)
    except (ValueError, OSError, AttributeError):
        pass

    for d in sorted(glob.glob("/sys/devices/system/cpu/cpu0/cache/index*")):
        try:
            with open(os.path.join(d, "level")) as fh:
                if fh.read().strip() != "3":
                    continue
            with open(os.path.join(d, "size")) as fh:
                txt = fh.read().strip().upper()
            mult = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(txt[-1], 1)
            return int(txt.rstrip("KMG")) * mult
        except (OSError, ValueError):
            continue
    return None


def dram_working_set_mb(factor: float = 2.5, least: int = 256) -> int:
    """A working set in MB that cannot sit in the caches: ``factor`` x the L3 size (at least ``least``)."""
    l3 = l3_bytes()
    return max(least, int(factor * l3 / 1e6)) if l3 else max(least, 1024)


def memory_bandwidth(size_mb: int | None = None, threads: int | None = None, min_time: float = 0.3) -> float:
    """Measured read bandwidth in GB/s: ``threads`` threads each stream their share of ``size_mb`` MB
    through numpy's vectorized OR-reduction, which releases the GIL. By default the array is 2.5x this
    machine's L3 cache (:func:`dram_working_set_mb`), so the figure is DRAM's, not a cache's.
    This is the roof a matrix-vector product over weights that do not fit in the caches cannot beat."""
    nthreads = threads or (os.cpu_count() or 1)
    size_mb = size_mb or dram_working_set_mb()
    a = np.ones(size_mb * 1_000_000 // 8, dtype=np.uint64)
    parts = np.array_split(a, nthreads)
    with ThreadPoolExecutor(nthreads) as pool:
        t = _best_time(lambda: list(pool.map(np.bitwise_or.reduce, parts)), min_time=min_time)
    return a.nbytes / t / 1e9


def matvec(
    names=None,
    rows: int = 4096,
    cols: int = 4096,
    threads: int | None = None,
    bandwidth: float | None = None,
    min_time: float = 0.1,
    distinct_rows: int = 256,
    working_set_mb: float | None = None,
) -> Table:
    """Matrix-vector product speed (one token through a rows x cols weight matrix) per format, with
    quantlab's model kernels (quantlab.model.llama.Linear: integer dot products for the fast formats,
    dequantized tiles + BLAS for the others), against the memory-bandwidth roof:
    ``roof = weight bytes / bandwidth`` is the least time any CPU code can take.

    Each matrix is ``distinct_rows`` rows of real weights quantized, repeated to ``rows`` rows: the
    product's speed depends on the bytes it reads, not on their values, and quantizing 16M weights into
    each of the slow formats would take minutes. The timed call cycles through enough separate copies of
    the matrix to read ``working_set_mb`` MB (default: 2.5x the L3 cache, :func:`dram_working_set_mb`), as
    a model's layers do: one matrix alone could sit in the cache and beat the DRAM roof."""
    # the model code starts numba (~0.25 s): only the matvec benchmark
    from .model.llama import Linear

    nthreads = threads or (os.cpu_count() or 1)
    ws = working_set_mb or dram_working_set_mb()
    bw = bandwidth or memory_bandwidth(threads=nthreads)
    fmts = (
        [get(n) for n in names]
        if names
        else [
            f
            for f in all_formats(include_activation=False)
            if f.name not in ("I8", "I16", "I32", "I64", "F64") and f.has_impl("fast", "quantize")
        ]
    )
    w, source = _weights(min(rows, distinct_rows) * cols, cols)
    x = np.random.default_rng(0).standard_normal((1, cols)).astype(np.float32)
    im = (np.random.default_rng(1).random(cols) + 0.05).astype(np.float32)
    out = []
    for f in fmts:
        if cols % f.block_size:
            continue
        q = api.quantize(w, f, imatrix=im if f.uses_imatrix else None)
        one = rows * q.shape[1]
        copies = max(1, int(np.ceil(ws * 1e6 / one)))
        lins = [Linear("bench", f, np.resize(q, (rows, q.shape[1])), rows, cols) for _ in range(copies)]
        with api._threads(nthreads):
            t = _best_time(lambda: [lin(x) for lin in lins], min_time=min_time) / copies
        nbytes = lins[0].data.nbytes
        lins.clear()  # free the copies before the next format's
        out.append(
            {
                "format": f.name,
                "bpw": f.bpw,
                "weight MB": nbytes / 1e6,
                "copies": copies,
                "ms": t * 1e3,
                "GB/s": nbytes / t / 1e9,
                "roof ms": nbytes / bw / 1e6,
                "of roof": nbytes / (bw * 1e9) / t,
                "path": "integer dot" if lin_fast(f) else "tile + BLAS",
            }
        )
    return Table(
        out,
        f"matrix-vector {rows}x{cols} ({min(rows, distinct_rows)} quantized rows of {source} repeated), cycling "
        f"through copies totalling >= {ws:.0f} MB (L3: {(l3_bytes() or 0) / 2**20:.0f} MiB), "
        f"{nthreads} threads; measured bandwidth {bw:.1f} GB/s",
        ("format", "bpw", "weight MB", "copies", "ms", "GB/s", "roof ms", "of roof", "path"),
    )


def lin_fast(f) -> bool:
    """Whether quantlab's model has an integer-dot kernel for format ``f`` (else dequantized tiles + BLAS)."""
    # the matmul kernels start numba (~0.25 s): only the matvec benchmark
    from .kernels import matmul as mm

    return get(f).name in mm.INT_KERNELS


def plot(table: Table, op: str = "quantize", ax=None, log: bool = True):
    """Bar chart of throughput per format and implementation for one op."""
    # matplotlib.pyplot (~0.7 s): only a plot
    import matplotlib.pyplot as plt

    rows = [r for r in table.rows if r.get("op") == op]
    impls = [c for c in table.columns if c not in ("format", "op") and "/" not in c]
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6, len(rows) * 0.6), 3.5))
    width = 0.8 / max(1, len(impls))
    xs = np.arange(len(rows))
    for k, impl in enumerate(impls):
        vals = [r.get(impl) or 0 for r in rows]
        ax.bar(xs + k * width, vals, width, label=impl)
    ax.set_xticks(xs + 0.4 - width / 2)
    ax.set_xticklabels([r["format"] for r in rows], rotation=60)
    ax.set_ylabel("MB/s (float32 side)")
    if log:
        ax.set_yscale("log")
    ax.set_title(f"{op} throughput")
    ax.legend(fontsize=7, ncol=3)
    return ax


def run(args) -> int:
    tables = []
    what = args.what or ["formats"]
    bad = set(what) - {"formats", "gguf", "model", "matvec"}
    if bad:
        raise QuantlabError(f"unknown benchmark {', '.join(sorted(bad))}; choose from formats, gguf, model, matvec")
    if "formats" in what:
        names = args.formats.split(",") if args.formats else None
        # progress: a bar on stderr (quantlab.progress), stdout carries only the tables / the JSON
        tables.append(formats(names, size=args.size, reference=not args.no_reference, progress=True))
    if "gguf" in what:
        tables.append(gguf_open())
    if "model" in what:
        tables.append(
            model(
                paths=args.model or None,
                threads=args.threads,
                flavour=args.llama_build,
                reps=args.reps,
                n_gen=args.n_gen,
            )
        )
    if "matvec" in what:
        tables.append(matvec(args.formats.split(",") if args.formats else None, threads=args.threads))
    if args.json:
        print(json.dumps([{"title": t.title, "rows": t.rows} for t in tables], indent=1, default=float))
    else:
        for t in tables:
            print(t)
            print()
    return 0


def register(sub):
    p = sub.add_parser("bench", help="benchmark quantlab against ggml, gguf-py and its own reference")
    p.add_argument("what", nargs="*", metavar="WHAT", help="any of: formats, gguf, model, matvec (default: formats)")
    p.add_argument("--formats", help="comma-separated format names (default: all)")
    p.add_argument("--size", type=int, default=1 << 20, help="weights per measurement (default 1M)")
    p.add_argument("--threads", type=int, default=2, help="threads for the model benchmark")
    p.add_argument(
        "--model",
        "-m",
        action="append",
        metavar="GGUF",
        help="model benchmark: this file (repeat for more; default SmolLM2 and 4 requantizations: Q8_0, Q4_0, Q4_K_M, IQ4_XS)",
    )
    p.add_argument(
        "--llama-build",
        choices=("avx2", "native"),
        default=None,
        help="model benchmark: which llama.cpp build runs llama-bench (default avx2, or "
        "QUANTLAB_LLAMA_FLAVOUR); native = plain cmake, GGML_NATIVE=ON",
    )
    p.add_argument("--reps", type=int, default=2, help="model benchmark: runs per file, best reported (default 2)")
    p.add_argument("--n-gen", type=int, default=32, help="model benchmark: generated tokens per tg run (default 32)")
    p.add_argument("--no-reference", action="store_true", help="skip the slow numpy reference")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)
