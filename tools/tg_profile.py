"""Where one generated token's time goes (batch 1, the decode path), per file type.

    python tools/tg_profile.py FILE.gguf [FILE ...] [--threads 1] [--tokens 32] [--ctx 16]

Runs ``--tokens`` single-token forward passes after ``--ctx`` tokens of context, with the kernel entry
points the forward calls wrapped by timers (wall and this process's CPU time). Printed per file:
milliseconds per token for each part (the integer products by format and shape, activation
quantization, attention, rms_norm, rope + cache store, the GLU), the number of calls per token, and
what remains ("python": the interpreter between the calls, numpy temporaries, the wrappers' own cost).
CPU time is the figure to trust on a shared machine (wall time includes waiting for a core); with
``--threads 1`` the two agree when the machine is quiet.
"""

from __future__ import annotations

import argparse
import collections
import time

import numpy as np


def _wrap(mod, name, label_fn, stats):
    f = getattr(mod, name)

    def w(*a, **k):
        t0, c0 = time.perf_counter(), time.process_time()
        r = f(*a, **k)
        s = stats[label_fn(*a, **k)]
        s[0] += time.perf_counter() - t0
        s[1] += time.process_time() - c0
        s[2] += 1
        return r

    setattr(mod, name, w)
    return f


def _mm_label(W, fmt, act, out, *a, **k):
    if isinstance(fmt, tuple):
        return "matmul " + "+".join(f"{f}[{w.shape[0]}]" for f, w in zip(fmt, W)) + f"x{act[0].shape[1]}"
    return f"matmul {fmt}[{W.shape[0]}x{act[0].shape[1]}]"


def profile(path, threads=1, tokens=32, ctx=16):
    from quantlab.kernels import attn as fa
    from quantlab.kernels import decode as dk
    from quantlab.kernels import llama as lk
    from quantlab.kernels import matmul as mm
    from quantlab.model import blocks
    from quantlab.model import llama as ml

    m = ml.load(path)
    rng = np.random.default_rng(0)
    toks = rng.integers(0, m.n_vocab, size=ctx + tokens)
    with blocks.threads(threads):
        cache = m.new_cache(ctx + tokens + 1)
        m.forward(toks[:ctx], cache)  # context (prompt path), and warm-up of the decode kernels:
        c2 = m.new_cache(4)
        m.forward(toks[:1], c2)
        m.forward(toks[1:2], c2)
        # plain timing first (no wrappers)
        n0 = cache.n
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(tokens):
            m.forward(toks[ctx + i : ctx + i + 1], cache)
        plain = (time.perf_counter() - t0, time.process_time() - c0)
        cache.n = n0
        stats = collections.defaultdict(lambda: [0.0, 0.0, 0])
        saved = []
        for mod, name, lab in (
            (mm, "matmul_int", _mm_label),
            (mm, "quantize_activations", lambda x, vt: f"act quantize {vt}x{x.shape[1]}"),
            (lk, "rms_norm", lambda *a: "rms_norm"),
            (lk, "rope_store", lambda *a: "rope+store"),
            (lk, "attention", lambda *a: "attention"),
            (fa, "attention", lambda *a: "attention (kernels.attn)"),
            (lk, "swiglu", lambda *a: "swiglu"),
            (lk, "geglu", lambda *a: "geglu"),
            (dk, "token", lambda *a: "decode.token (every layer, output norm, output product)"),
        ):
            if hasattr(mod, name):  # entry points that moved or went away are skipped
                saved.append((mod, name, _wrap(mod, name, lab, stats)))
        try:
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(tokens):
                m.forward(toks[ctx + i : ctx + i + 1], cache)
            wrapped = (time.perf_counter() - t0, time.process_time() - c0)
        finally:
            for mod, name, f in saved:
                setattr(mod, name, f)
    return plain, wrapped, dict(stats), tokens


def report(path, threads, tokens, ctx):
    plain, wrapped, stats, n = profile(path, threads, tokens, ctx)
    print(f"\n{path}  threads={threads}  tokens={n} after ctx={ctx}")
    print(
        f"  plain:   {1e3 * plain[0] / n:7.3f} ms/token wall ({n / plain[0]:6.1f} t/s), "
        f"{1e3 * plain[1] / n:7.3f} ms CPU"
    )
    print(f"  wrapped: {1e3 * wrapped[0] / n:7.3f} ms/token wall, {1e3 * wrapped[1] / n:7.3f} ms CPU")
    rows = sorted(stats.items(), key=lambda kv: -kv[1][1])
    tot_w = tot_c = 0.0
    calls = 0
    print(f"  {'part':58s} {'ms wall':>8s} {'ms CPU':>8s} {'calls':>6s} {'us/call':>8s}")
    for k, (w, c, cnt) in rows:
        tot_w += w
        tot_c += c
        calls += cnt
        print(f"  {k:58s} {1e3 * w / n:8.3f} {1e3 * c / n:8.3f} {cnt / n:6.1f} {1e6 * w / cnt:8.1f}")
    print(
        f"  {'python (rest of the token)':58s} {1e3 * (wrapped[0] - tot_w) / n:8.3f} "
        f"{1e3 * (wrapped[1] - tot_c) / n:8.3f} {'':6s}"
    )
    print(f"  kernel calls per token: {calls / n:.0f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--ctx", type=int, default=16)
    a = ap.parse_args()
    import os

    print("load average:", " ".join(f"{v:.2f}" for v in os.getloadavg()))
    for f in a.files:
        report(f, a.threads, a.tokens, a.ctx)


if __name__ == "__main__":
    main()
