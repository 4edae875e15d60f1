"""``quantlab quantize``: llama-quantize's command line on quantlab's kernels (same option names)."""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys

from ..cli import model_file, printable, regular_file
from .ftypes import all_file_types, file_type
from .pipeline import plan_model, quantize_model
from .select import Options, requires_imatrix


def file_types_help() -> str:
    """The file types, llama-quantize's way ("  15  or  Q4_K_M : ..."), with the bits per weight of the type
    most tensors get (a mix gives a few tensors more bits, so a whole file lands a little above it)."""
    lines = [
        "allowed file types (bits per weight of the type most tensors get; a mix such as Q4_K_M gives",
        "some tensors more bits, --dry-run prints a model's exact size):",
        "",
    ]
    for ft in all_file_types():
        f = ft.default
        note = ", needs --imatrix" if requires_imatrix("blk.0.ffn_up.weight", f, ft) else ""
        mix = "" if ft.name == f.name else f"  {ft.description}"
        lines.append(f"  {ft.value:2d}  or  {ft.name:<9} : {f.name:<7} {f.bpw:6.3f} bpw{mix}{note}")
    return "\n".join(lines)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "quantize",
        help="quantize a whole GGUF model like llama-quantize (Q4_K_M, IQ2_XXS, ...)",
        description="Quantize a GGUF model with one of llama.cpp's file types. The output is byte-identical "
        "to llama-quantize's for the same input, options and imatrix.",
        epilog=file_types_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--allow-requantize",
        action="store_true",
        help="allow requantizing tensors that are already quantized (loses quality)",
    )
    p.add_argument("--leave-output-tensor", action="store_true", help="leave output.weight un(re)quantized")
    p.add_argument(
        "--pure", action="store_true", help="disable the k-quant mixtures: every tensor gets the default type"
    )
    p.add_argument("--imatrix", metavar="FILE", help="importance matrix (llama-imatrix GGUF or legacy .dat)")
    p.add_argument("--output-tensor-type", metavar="T", help="ggml type for output.weight")
    p.add_argument("--token-embedding-type", metavar="T", help="ggml type for token_embd.weight")
    p.add_argument(
        "--tensor-type",
        metavar="PAT=T",
        action="append",
        default=[],
        help="quantize tensors whose name matches the regex PAT to type T (repeatable; first match wins)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan and sizes, write nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--plan", action="store_true", help="print the plan table (rule per tensor)")
    p.add_argument("inp", metavar="IN.gguf", help="input model ('smollm2': the shipped SmolLM2-135M-Instruct Q4_1)")
    p.add_argument("out", metavar="OUT.gguf")
    p.add_argument("ftype", metavar="FTYPE", help="file type: Q4_K_M, Q8_0, IQ2_XXS, ... or its number")
    p.add_argument("nthreads", metavar="NTHREADS", nargs="?", type=int, default=None)
    p.set_defaults(func=run)


def run(args) -> int:
    ft = file_type(args.ftype)
    args.inp = model_file(args.inp)  # 'smollm2': the shipped model, as `eval` takes it
    regular_file(args.inp)
    if args.imatrix:
        regular_file(args.imatrix, "an imatrix")
    opts = Options(
        allow_requantize=args.allow_requantize,
        leave_output_tensor=args.leave_output_tensor,
        pure=args.pure,
        output_tensor_type=args.output_tensor_type,
        token_embedding_type=args.token_embedding_type,
        tensor_types=tuple(args.tensor_type),
    )
    if args.dry_run:
        # refuses exactly as the real run would (requantization, missing imatrix, imatrix of another model)
        plan = plan_model(args.inp, ft, imatrix=args.imatrix, options=opts, check=True)
        print(printable(plan.table()).replace("\\n", "\n"))
        print(printable(plan.summary()))
        return 0
    # numba's start-up (at the first kernel) builds a large graph of objects and no garbage: the collector
    # walking it costs about 0.1 s of CPU, so it is off while the model is quantized
    collecting = gc.isenabled()
    gc.disable()
    try:
        with quick_numba_start():
            r = quantize_model(
                args.inp,
                args.out,
                ft,
                imatrix=args.imatrix,
                options=opts,
                threads=args.nthreads,
                progress=not args.no_progress and sys.stderr.isatty(),
                verbose=True,
                log=lambda s: print(printable(s).replace("\\n", "\n"), flush=True),
            )
    finally:
        if collecting:
            gc.enable()
    whole = process_seconds()
    if whole is not None:
        cpu = os.times()
        print(
            f"process     = {whole:.2f} s since this process started, {cpu.user + cpu.system:.2f} s CPU "
            f"(Python, imports and numba's start-up included; llama-quantize's \"total time\" is its whole "
            f"run)",
            flush=True,
        )
    return 0 if r else 1


def process_seconds() -> float | None:
    """Wall time since this process started (Linux: from /proc, 10 ms resolution), else None."""
    try:
        with open("/proc/self/stat", "rb") as fh:
            stat = fh.read()
        with open("/proc/uptime", "rb") as fh:
            up = float(fh.read().split()[0])
        start_ticks = int(stat[stat.rindex(b")") + 2 :].split()[19])  # field 22, starttime
        return max(0.0, up - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


# Modules numba imports at start-up that no format kernel uses, with the reason numba imports each. Hidden
# while numba is imported (an ``import`` of a None entry of sys.modules raises ImportError, which numba
# expects for each of them), then put back. Measured on SmolLM2 -> Q8_0, CPU time of the whole process, see
# the commit message.
_NUMBA_OPTIONAL = {
    "scipy.linalg.cython_blas": "is there a BLAS (np.correlate/np.convolve in jitted code): ~0.2 s",
    "scipy": "a version check of scipy at `import numba`",
    "yaml": "to read a .numba_config.yaml file (kept when the working directory has one)",
    "cffi": "typing of cffi functions in jitted code (cffi.FFI() builds pycparser's lexer)",
}


@contextlib.contextmanager
def quick_numba_start():
    """While active: numba has been imported without the optional modules it imports, and it loads
    cached kernels without first setting up its compiler. Only the ``quantlab quantize`` process uses it.

    *Optional modules.* At import numba imports ``scipy`` (a version check) and ``yaml`` (for an
    optional config file); setting up its compiler imports ``cffi`` (creating an FFI, which compiles
    pycparser's regular expressions) and ``scipy.linalg.cython_blas`` (only to learn whether a BLAS is
    there, for ``np.correlate`` / ``np.convolve`` in jitted code). No format kernel multiplies matrices or
    calls cffi, so they are hidden while numba is imported and put back right after: anything that
    really needs scipy, yaml or BLAS later (``np.dot`` in jitted code, gguf-py, scipy itself) imports it
    as usual.

    *Cached kernels.* Before it loads a kernel from its cache, numba "refreshes" its typing and target
    contexts (``Cache.load_overload``): the first refresh imports and installs every typing and lowering
    registry numba has (the cffi and BLAS imports above among them), ~0.1 s of CPU, which compiling
    needs and loading machine code does not. Loading needs the NRT (numba's runtime, which cached code
    links against) to be initialised, nothing else; so here a cache hit initialises the NRT and loads. A
    kernel that is not in the cache is compiled by numba's usual path, whose compiler refreshes both
    contexts itself. Where numba's internals are not the ones this was written against (0.6x), numba's
    own loading is kept.

    *Extensions.* numba's first dispatch scans every installed distribution's entry points for
    ``numba_extensions`` plugins (~10 ms here, 160 distributions); quantlab's kernels use none, so the
    scan is marked done while active (and unmarked after, if it was skipped).
    """
    hidden = []
    if "numba" not in sys.modules:
        hidden = [
            m
            for m in _NUMBA_OPTIONAL
            if m not in sys.modules and not (m == "yaml" and os.path.exists(".numba_config.yaml"))
        ]
    for m in hidden:
        sys.modules[m] = None  # pyright: ignore[reportArgumentType]  (an `import` of a None entry raises ImportError)
    try:
        restore = _load_cached_kernels_directly()  # imports numba
    finally:
        for m in hidden:
            if m in sys.modules and sys.modules[m] is None:
                del sys.modules[m]
    entrypoints = sys.modules.get("numba.core.entrypoints")
    skipped = getattr(entrypoints, "_already_initialized", None) is False
    if skipped:
        setattr(entrypoints, "_already_initialized", True)  # noqa: B010  (numba's module-level flag)
    try:
        yield
    finally:
        if skipped:
            setattr(entrypoints, "_already_initialized", False)  # noqa: B010
        if restore is not None:
            restore()


def _load_cached_kernels_directly():
    """Replace numba's ``Cache.load_overload`` (refresh, then load) by NRT set-up, then load; returns the
    function that puts numba's back, or None (numba's internals differ: nothing replaced)."""
    # lazy: numba's import (~0.15 s) happens here, while quick_numba_start hides its optional modules
    from numba.core import caching
    from numba.core.runtime.nrt import rtsys

    cache = caching.Cache
    original = cache.__dict__.get("load_overload")
    if (
        original is None
        or not all(hasattr(cache, a) for a in ("_load_overload", "_guard_against_spurious_io_errors"))
        or not hasattr(rtsys, "initialize")
    ):
        return None

    def load_overload(self, sig, target_context):
        rtsys.initialize(target_context)  # once per process; what cached code links against
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)
        # None (a miss: numba compiles) when the `with` swallows an I/O error, as numba's own does

    cache.load_overload = load_overload

    def restore():
        cache.load_overload = original

    return restore
