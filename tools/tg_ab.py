"""Generation (batch 1) outputs and speed of this checkout, saved or compared with a saved run.

    python tools/tg_ab.py save DIR FILE.gguf [FILE ...]     # logits of a few decode steps -> DIR/*.npy
    python tools/tg_ab.py check DIR FILE.gguf [FILE ...]    # same steps here: bitwise equal to DIR's?

Per file: 8 prompt tokens (prompt path), then ``STEPS`` single-token forward passes (the decode path,
the op set and the integer kernels); the logits of every decode step are kept. ``check`` compares
them bit for bit (float32 bit patterns) with the saved ones and prints the first difference, if any.
Both modes also print the decode speed: tokens/s of the steps (best of 3 passes, ``TG_THREADS``
threads, default 2) and the fastest single token of ``TG_TOKENS`` (default 200) more decode steps in
milliseconds -- on a busy shared machine the fastest token is the one that ran without waiting for a
core, the figure to compare between two trees run one after the other.
"""

from __future__ import annotations

import os
import pathlib
import sys
import time

import numpy as np

STEPS = 12


def run(path, threads=None):
    threads = threads or int(os.environ.get("TG_THREADS", "2"))
    from quantlab.model import blocks
    from quantlab.model import llama as ml

    m = ml.load(path)
    toks = np.random.default_rng(1).integers(0, m.n_vocab, size=8 + STEPS)
    best = float("inf")
    with blocks.threads(threads):
        for _ in range(3):
            cache = m.new_cache(64)
            m.forward(toks[:8], cache)
            out = []
            t0 = time.perf_counter()
            for i in range(STEPS):
                out.append(m.forward(toks[8 + i : 9 + i], cache)[-1])
            best = min(best, time.perf_counter() - t0)
        cache = m.new_cache(int(os.environ.get("TG_TOKENS", "200")) + 8)
        fastest = float("inf")
        cpu = []
        for i in range(cache.n_ctx - 1):
            t0, c0 = time.perf_counter(), time.process_time()
            m.forward(toks[i % 8 : i % 8 + 1], cache)
            fastest = min(fastest, time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return np.stack(out), STEPS / best, f"{fastest * 1e3:.2f} ms wall, median CPU {np.median(cpu) * 1e3:.2f} ms"


def main():
    mode, d, files = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3:]
    d.mkdir(parents=True, exist_ok=True)
    print("load average:", " ".join(f"{v:.2f}" for v in os.getloadavg()))
    bad = 0
    for f in files:
        y, tps, fast = run(f)
        ref = d / (pathlib.Path(f).stem + ".npy")
        if mode == "save":
            np.save(ref, y)
            print(f"{f}: saved {y.shape} logits, {tps:.1f} t/s, fastest token {fast}")
            continue
        old = np.load(ref)
        same = np.array_equal(old.view(np.uint32), y.view(np.uint32))
        if not same:
            bad += 1
            idx = np.argwhere(old.view(np.uint32) != y.view(np.uint32))[0]
            print(
                f"{f}: DIFFERENT logits, first at step {idx[0]} token {idx[1]}: "
                f"{old[tuple(idx)]!r} vs {y[tuple(idx)]!r}; {tps:.1f} t/s, fastest token {fast}"
            )
        else:
            print(f"{f}: {y.shape} logits bitwise equal; {tps:.1f} t/s, fastest token {fast}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
