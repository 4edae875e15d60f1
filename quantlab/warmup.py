"""Compile every numba kernel the API can call, once, into numba's on-disk cache.

    python -m quantlab.warmup [--jobs N]

A numba kernel is compiled on its first call and then loaded from the cache by every later process.
The cache is the one every entry point uses (``quantlab/_cache.py``: ``NUMBA_CACHE_DIR`` if set, else
``~/.cache/quantlab/numba``). Compiling takes seconds to a minute per format, so a student's first run
of a notebook would wait for it; ``make lab`` and ``make test`` run this instead. It calls the public
API on tiny inputs of real shape and dtype (the same argument types as real use, so the same compiled
versions):

* per format: ``quantize`` with an imatrix where the format takes one, without one where it may go
  without, and ``dequantize`` of a writable and of a read-only array (a GGUF file's tensors are
  read-only views of the mapped file, and numba compiles each kind separately);
* per format of ``matmul.INT_KERNELS``: ``quantize_activations`` and ``matmul_int``, serial and
  threaded, on writable and read-only weights;
* the model: SmolLM2 generating two tokens (its forward kernels).

The jobs run in ``N`` worker processes (default 2): a progress bar (tqdm, on stderr) and one line per
job with its seconds as it ends (stdout). The exit status is 1 if any job failed (its error is printed),
else 0; on success ``<cache>/.quantlab-warm`` records when and for which quantlab the cache was warmed.

``CompileCounter`` counts the kernels a process really compiles (a cache miss): zero in a process
that starts after a warm-up — the check used by the workshop hub's load test and the install check.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context

import numpy as np
from numba.core import event as numba_event
from tqdm import tqdm

from . import __version__, _cache, api, data, model
from .formats.registry import all_formats, get
from .kernels import matmul as mm

MODEL_JOB = "model generate"
STAMP = ".quantlab-warm"


def _inputs(block_size: int, rows: int = 2):
    n = math.lcm(block_size, 256)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, n)).astype(np.float32)
    im = (np.float32(0.5) + rng.random(n)).astype(np.float32)
    return x, im


def _readonly(a: np.ndarray) -> np.ndarray:
    r = a.copy()
    r.setflags(write=False)
    return r


def warm_format(name: str) -> None:
    """Quantize (with and without an imatrix, as the format allows) and dequantize through the API."""
    f = get(name)
    x, im = _inputs(f.block_size)
    q = None
    if f.has_impl("fast", "quantize"):
        if f.uses_imatrix:
            q = api.quantize(x, f, imatrix=im, threads=1)
        if not f.requires_imatrix:
            q = api.quantize(x, f, threads=1)
    if f.has_impl("fast", "dequantize"):
        if q is None:
            q = np.zeros((x.shape[0], f.row_bytes(x.shape[1])), dtype=np.uint8)
        api.dequantize(q, f, threads=1)
        # a tensor of a GGUF file is a read-only view of the mapped file: numba compiles a separate version
        # for read-only arrays (seen: `quantlab quantize` of SmolLM2's Q4_1 tensors compiled one)
        api.dequantize(_readonly(q), f, threads=1)


def warm_matmul(name: str) -> None:
    """The integer matrix-vector path of one format: activations quantized to its vec_dot type, then
    ``matmul_int`` serial and threaded."""
    f = get(name)
    w, im = _inputs(f.block_size, rows=4)
    W = api.quantize(w, f, imatrix=im if f.uses_imatrix else None, threads=1)
    act = mm.quantize_activations(w[:1].copy(), mm.VEC_DOT_TYPE[name])
    for weights in (W, _readonly(W)):  # quantized here (writable) or a model file's (read-only)
        for parallel in (False, True):
            out = np.empty((1, W.shape[0]), dtype=np.float32)
            mm.matmul_int(weights, name, act, out, parallel=parallel)


def warm_model() -> None:
    """Two tokens of SmolLM2: the forward pass's kernels for the formats its file uses."""
    model.load(data.path("smollm2")).generate("The capital of France is", n_predict=2)


def jobs() -> list[tuple[str, str]]:
    """(kind, name) of every warm-up job: the model and the matmul kernels first (the longest),
    then every format with a fast kernel, in registry order."""
    out = [("model", MODEL_JOB)]
    out += [("matmul", n) for n in mm.INT_KERNELS]
    out += [
        ("format", f.name) for f in all_formats() if f.has_impl("fast", "quantize") or f.has_impl("fast", "dequantize")
    ]
    return out


def run_job(kind: str, name: str) -> tuple[str, str, float, str | None]:
    """Run one job; returns (kind, name, seconds, error text or None). Never raises."""
    t = time.perf_counter()
    try:
        if kind == "model":
            warm_model()
        elif kind == "matmul":
            warm_matmul(name)
        else:
            warm_format(name)
        err = None
    except BaseException:  # noqa: BLE001  (reported by the parent, which exits non-zero)
        err = traceback.format_exc()
    return kind, name, time.perf_counter() - t, err


class CompileCounter(numba_event.Listener):
    """Counts numba compilations in this process from the moment it is created (``.count``; the
    functions in ``.names``). A kernel loaded from the cache is not a compilation: numba emits
    ``numba:compile`` only after a cache miss."""

    def __init__(self):
        self.count = 0
        self.names: list[str] = []
        numba_event.register("numba:compile", self)

    def on_start(self, event):
        pass

    def on_end(self, event):
        self.count += 1
        d = event.data.get("dispatcher") if isinstance(event.data, dict) else None
        self.names.append(getattr(getattr(d, "py_func", None), "__qualname__", str(d)))

    def close(self) -> None:
        numba_event.unregister("numba:compile", self)


def _label(kind: str, name: str) -> str:
    return name if kind != "matmul" else f"matmul {name}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m quantlab.warmup",
        description="compile every format, matmul and model kernel into numba's cache "
        f"(here: {_cache.numba_cache_dir()})",
    )
    p.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    p.add_argument(
        "--only",
        default=None,
        help=f"comma-separated job names to run (formats, matmul formats as 'matmul Q4_0', '{MODEL_JOB}'); default all",
    )
    args = p.parse_args(argv)
    todo = jobs()
    if args.only:
        want = {s.strip() for s in args.only.split(",")}
        todo = [j for j in todo if _label(*j) in want]
        unknown = want - {_label(*j) for j in todo}
        if unknown:
            print(f"warmup: unknown job(s) {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
    t0 = time.perf_counter()
    failed = []
    width = max((len(_label(*j)) for j in todo), default=8)
    bar = tqdm(
        total=len(todo), desc="compiling kernels", unit="job", file=sys.stderr, leave=False, disable=None
    )  # None: no bar when stderr is not a terminal (logs, CI)

    def report(kind, name, secs, err):
        label = _label(kind, name)
        bar.write(f"{label:{width}s} {secs:7.1f} s{'  FAILED' if err else ''}", file=sys.stdout)
        bar.update(1)
        if err:
            failed.append((label, err))

    try:
        if args.jobs <= 1:
            for j in todo:
                bar.set_postfix_str(_label(*j))
                report(*run_job(*j))
        else:
            with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
                futs = [pool.submit(run_job, *j) for j in todo]
                for fut in as_completed(futs):
                    report(*fut.result())
    finally:
        bar.close()
    print(f"{'total':{width}s} {time.perf_counter() - t0:7.1f} s ({len(todo)} jobs, {args.jobs} processes)")
    for label, err in failed:
        print(f"\n{label} failed:\n{err}", file=sys.stderr)
    if failed:
        return 1
    if not args.only:
        note = (
            f"quantlab {__version__} warmed {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}"
            f" ({len(todo)} jobs)\n"
        )
        # the cache's stamp (make's target) and its kernel subdirectory's (a hub asks whether these sources are warm)
        for d in (_cache.numba_cache_dir(), _cache.kernel_cache_dir()):
            d.mkdir(parents=True, exist_ok=True)
            (d / STAMP).write_text(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
