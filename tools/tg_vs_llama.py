"""Generation speed (tg, batch 1) of quantlab against llama.cpp's llama-bench, interleaved in one run.

    python tools/tg_vs_llama.py [--build native] [--threads 2] [--n-gen 64] [--rounds 3]
        [--base DIR] FILE.gguf [FILE ...]

For each round and each file: quantlab's tg (quantlab.model.bench with n_prompt=0-ish: 8 prompt tokens
are not timed; ``n_gen`` tokens one at a time, best of 3), then ``llama-bench -p 0 -n N -r 3`` of the
chosen build on the same file, then (``--base DIR``: a plain copy of an older quantlab tree, e.g. from
``git archive REV quantlab | tar -x -C DIR``) the old quantlab the same way. Each side runs in its own
process (``PYTHONPATH`` pointing at its tree, its own numba cache). Prints every measurement with the
1-minute load average and, per file, the best over the rounds and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

_CHILD = """
import json, sys
from quantlab.model.eval import bench
r = bench(sys.argv[1], n_prompt=8, n_gen=int(sys.argv[2]), threads=int(sys.argv[3]), reps=3)
print(json.dumps(r["tg_tok_s"]))
"""


def quantlab_tg(tree, path, n_gen, threads):
    env = dict(os.environ, PYTHONPATH=str(tree), NUMBA_CACHE_DIR=str(pathlib.Path(tree) / ".cache" / "numba"))
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), str(n_gen), str(threads)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    from quantlab.bench import llama_bench_binary, run_llama_bench

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--build", default="native", choices=("avx2", "native"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-gen", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--base", help="an older quantlab tree to run as well")
    a = ap.parse_args()
    exe = llama_bench_binary(a.build)
    best: dict = {}
    for rnd in range(a.rounds):
        for f in a.files:
            name = pathlib.Path(f).name
            sides = [("quantlab", lambda f=f: quantlab_tg(ROOT, f, a.n_gen, a.threads))]
            sides.append(
                (
                    f"llama-{a.build}",
                    lambda f=f: run_llama_bench(f, a.threads, 0, a.n_gen, 3, binary=exe)["llama_tg_tok_s"],
                )
            )
            if a.base:
                sides.append(("quantlab-base", lambda f=f: quantlab_tg(a.base, f, a.n_gen, a.threads)))
            for side, fn in sides:
                load = os.getloadavg()[0]
                v = fn()
                print(f"round {rnd} {name:24s} {side:14s} {v:7.1f} t/s  load {load:.2f}", flush=True)
                b = best.setdefault(name, {})
                b[side] = max(b.get(side, 0), v)
    print(f"\nbest of {a.rounds} rounds, {a.threads} threads, tg{a.n_gen}, llama-bench {a.build} ({exe}):")
    for name, b in best.items():
        ll = b[f"llama-{a.build}"]
        line = f"  {name:24s} quantlab {b['quantlab']:7.1f}  llama {ll:7.1f}  ratio {b['quantlab'] / ll:5.2f}"
        if "quantlab-base" in b:
            line += f"  | base {b['quantlab-base']:7.1f} ratio {b['quantlab-base'] / ll:5.2f}"
        print(line)
    print("load average now:", " ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()
