"""Where a prompt batch (pp512, like llama-bench's) spends its time in quantlab's forward, per file.

    PYTHONPATH=$PWD NUMBA_CACHE_DIR=$PWD/.cache/numba .venv/bin/python tools/pp_profile.py [--threads 2]
        [--n-prompt 512] [--reps 3] GGUF [GGUF ...]

Each part of the forward is timed by wrapping the function that does it (wall clock, perf_counter):
the weight products per file type (activation quantization / the product kernel / anything else inside
``Linear.__call__``: tile dequantization, BLAS, the Q8_1 min term), split into the layers' matrices
and the output layer (49152 x 576 for SmolLM2; pp needs only the last row's logits), and the op set's
norm, RoPE + cache store, attention, GLU; "other" is the forward's wall time minus all of those
(embedding lookup, residual adds, reshapes, Python). The run with the smallest total is printed, in
milliseconds and as a share of the total, with the load average. ``--ab``: instead, pp tokens/s of the
prompt path without kernels/gemm.py (:class:`Baseline`: the row kernels, the same bytes) and with it,
interleaved in one process, best of reps each.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import sys
import time
from collections import defaultdict

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from quantlab.kernels import act as _act
from quantlab.model import blocks
from quantlab.model import llama as ml

T_ACC: dict = defaultdict(float)
CLOCK = time.perf_counter  # --cpu: time.process_time (the process's CPU time: with --threads 1, what each
# part costs regardless of how loaded the machine is)
_STACK: list = []  # the part being timed (nested parts subtract from their parent)


@contextlib.contextmanager
def part(name):
    t0 = CLOCK()
    _STACK.append([name, 0.0])
    try:
        yield
    finally:
        name, inner = _STACK.pop()
        dt = CLOCK() - t0
        T_ACC[name] += dt - inner
        if _STACK:
            _STACK[-1][1] += dt


def wrap(obj, attr, label):
    f = getattr(obj, attr)

    def w(*a, **k):
        lab = label(*a, **k) if callable(label) else label
        with part(lab):
            return f(*a, **k)

    setattr(obj, attr, w)


def instrument():
    lin_call = blocks.Linear.__call__

    def call(self, x, *a, **k):
        role = "output" if self.name == "output.weight" or (self.name == "token_embd.weight") else "layers"
        with part(f"matmul {role} {self.format.name}"):
            return lin_call(self, x, *a, **k)

    blocks.Linear.__call__ = call
    wrap(blocks.Linear, "rows_f32", lambda self, *a, **k: f"dequant tile {self.format.name}")
    wrap(blocks.mm, "block_mins", "Q8_1 min term")
    for mod in (blocks.mm, _act):
        for fn in ("fake_quantize_activations", "quantize_activations"):
            if hasattr(mod, fn):
                wrap(mod, fn, lambda x, vt, *a, **k: f"act-quant {vt}")
    wrap(blocks.mm, "matmul_int", lambda W, fmt, *a, **k: f"int kernel {fmt if isinstance(fmt, str) else fmt[0]}")
    if hasattr(blocks, "gk"):
        wrap(blocks.gk, "gemm", lambda P, fmt, *a, **k: f"gemm kernel {fmt}")
        wrap(blocks.gk, "pack", lambda W, fmt, *a, **k: f"gemm pack {fmt} (first batch only)")
    for meth in ("norm", "rope_store", "attention", "glu"):
        wrap(blocks.Ops, meth, f"op {meth}")


class Baseline:
    """The prompt path without kernels/gemm.py: every batch through the row kernels (matmul_int), as main
    ran it before the GEMM (same bytes). ``with Baseline() as b: b.off(model)`` switches a loaded model to
    it (for a same-process A/B)."""

    def __enter__(self):
        self.lins = []
        return self

    def off(self, model):
        for lin in list(model.linears().values()) + [model.tok_embd]:
            self.lins.append((lin, lin.gemm))
            lin.gemm = False

    def __exit__(self, *exc):
        for lin, g in self.lins:
            lin.gemm = g


def ab(path, threads, n_prompt, reps):
    """pp tokens/s of the baseline and the current prompt path, interleaved in one process: best of reps."""
    m = ml.load(path)
    toks = np.random.default_rng(0).integers(0, m.n_vocab, size=n_prompt)
    best = {"baseline": float("inf"), "now": float("inf")}
    with ml.threads(threads):
        for _ in range(reps):
            for mode in ("baseline", "now"):
                if mode == "baseline":
                    base = Baseline().__enter__()
                    base.off(m)
                m.forward(toks[:8], m.new_cache(16))
                t0 = time.perf_counter()
                m.forward(toks, m.new_cache(n_prompt + 1))
                best[mode] = min(best[mode], time.perf_counter() - t0)
                if mode == "baseline":
                    base.__exit__()
    return {k: n_prompt / v for k, v in best.items()}


def profile(path, threads, n_prompt, reps):
    m = ml.load(path)
    toks = np.random.default_rng(0).integers(0, m.n_vocab, size=n_prompt)
    best = None
    with ml.threads(threads):
        m.forward(toks[:8], m.new_cache(16))
        for _ in range(reps):
            T_ACC.clear()
            c = m.new_cache(n_prompt + 1)
            t0 = CLOCK()
            with part("other"):
                m.forward(toks, c)
            tot = CLOCK() - t0
            if best is None or tot < best[0]:
                best = (tot, dict(T_ACC))
    return m, best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("gguf", nargs="+")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-prompt", type=int, default=512)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--ab", action="store_true", help="pp tok/s of the baseline prompt path vs now, interleaved")
    ap.add_argument("--cpu", action="store_true", help="CPU time instead of wall clock (use with --threads 1)")
    a = ap.parse_args(argv)
    global CLOCK
    if a.cpu:
        CLOCK = time.process_time
    if a.ab:
        for p in a.gguf:
            l0 = " ".join(f"{v:.2f}" for v in os.getloadavg())
            r = ab(p, a.threads, a.n_prompt, a.reps)
            l1 = " ".join(f"{v:.2f}" for v in os.getloadavg())
            print(
                f"{pathlib.Path(p).name}: pp{a.n_prompt} baseline {r['baseline']:.0f} tok/s, now {r['now']:.0f} tok/s "
                f"= {r['now'] / r['baseline']:.2f}x ({a.threads} threads, best of {a.reps} interleaved; load {l0} -> {l1})"
            )
        return
    instrument()
    for p in a.gguf:
        load = " ".join(f"{v:.2f}" for v in os.getloadavg())
        m, (tot, acc) = profile(p, a.threads, a.n_prompt, a.reps)
        print(
            f"{pathlib.Path(p).name}: pp{a.n_prompt} {tot * 1e3:.0f} ms = {a.n_prompt / tot:.0f} tok/s "
            f"({a.threads} threads, best of {a.reps}, {'CPU time' if a.cpu else 'wall clock'}; load {load}; {m!r})"
        )
        for k, v in sorted(acc.items(), key=lambda kv: -kv[1]):
            print(f"  {k:34s} {v * 1e3:8.1f} ms  {100 * v / tot:5.1f} %")
        print()


if __name__ == "__main__":
    main()
