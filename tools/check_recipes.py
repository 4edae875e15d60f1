#!/usr/bin/env python
"""Quantize SmolLM2 with quantlab.recipes for every llama-quantize run recorded in
tests/data/recipes_smollm2.json and compare the sha256 of the output files; optionally time
llama-quantize and quantlab back to back (same threads, same machine load).

    .venv/bin/python tools/check_recipes.py [KEY ...] [--threads 2] [--time-llama] [--time-cli] [--repeat N]

Per run, one JSON line:

* ``quantlab_s``: :func:`quantlab.recipes.quantize_model` in this process, numba already started (one
  tiny quantization before the first run; the first use of each kernel still loads it from numba's
  cache, a few milliseconds);
* with ``--time-llama``: ``llama_total_s``, the "total time" llama-quantize prints (its main function),
  and ``llama_process_s`` / ``llama_cpu_s``, its whole process (wall, user + system CPU);
* with ``--time-cli``: ``cli_process_s`` / ``cli_cpu_s``, the whole ``quantlab quantize`` process (Python
  start-up, imports, numba's start-up, the same quantization), and ``cli_quantize_s``, the time it prints;
* ``load``: the 1-minute load average before the run (the machine is shared: compare runs side by side).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.chdir(ROOT)  # the imatrix path is stored in the output as given (relative)

import numpy as np  # noqa: E402

import quantlab  # noqa: E402
from quantlab import data, recipes  # noqa: E402
from quantlab.recipes.pipeline import file_sha256  # noqa: E402

FX = json.loads((ROOT / "tests/data/recipes_smollm2.json").read_text())


def timed(cmd, env=None) -> tuple[float, float, str]:
    """Run ``cmd``; (wall seconds, user + system CPU seconds of the child, its stdout + stderr)."""
    before = os.times()
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = os.times()
    if p.returncode:
        raise SystemExit(f"{cmd[0]} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return wall, cpu, p.stdout + p.stderr


def _num(pattern, text):
    m = re.search(pattern, text)
    return float(m.group(1)) if m else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("keys", nargs="*")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--time-llama", action="store_true", help="also time llama-quantize right before")
    ap.add_argument("--time-cli", action="store_true", help="also time the whole `quantlab quantize` process")
    ap.add_argument("--repeat", type=int, default=1, help="runs per key")
    a = ap.parse_args()
    runs = {r["key"]: r for r in FX["runs"]}
    keys = a.keys or list(runs)
    model = data.path("smollm2")
    quantlab.quantize(np.zeros((1, 32), np.float32), "Q8_0")  # numba's start-up, not timed
    ok = True
    with tempfile.TemporaryDirectory() as td:
        for key in keys:
            rec = runs[key]
            im = FX["imatrix"] if rec["imatrix"] else None
            for _ in range(a.repeat):
                row = {"key": key, "load": round(os.getloadavg()[0], 2)}
                if a.time_llama:
                    env = dict(os.environ, LD_LIBRARY_PATH=str(ROOT / ".cache/oracle/lib"))
                    wall, cpu, out = timed(
                        [
                            str(ROOT / ".cache/oracle/bin/llama-quantize"),
                            "--allow-requantize",
                            *(["--imatrix", im] if im else []),
                            str(model),
                            f"{td}/l.gguf",
                            rec["ftype"],
                            str(a.threads),
                        ],
                        env,
                    )
                    total = _num(r"total time\s*=\s*([0-9.]+) ms", out)
                    row.update(
                        llama_total_s=None if total is None else round(total / 1000, 2),
                        llama_process_s=round(wall, 2),
                        llama_cpu_s=round(cpu, 2),
                    )
                out_path = pathlib.Path(td) / "q.gguf"
                r = recipes.quantize_model(
                    model,
                    out_path,
                    rec["ftype"],
                    imatrix=im,
                    allow_requantize=True,
                    threads=a.threads,
                    verbose=False,
                    progress=False,
                )
                same = r.sha256() == rec["sha256"]
                ok &= same
                row.update(identical=same, quantlab_s=round(r.seconds, 2))
                if a.time_cli:
                    wall, cpu, out = timed(
                        [
                            str(ROOT / ".venv/bin/quantlab"),
                            "quantize",
                            "--allow-requantize",
                            "--no-progress",
                            *(["--imatrix", im] if im else []),
                            str(model),
                            f"{td}/c.gguf",
                            rec["ftype"],
                            str(a.threads),
                        ]
                    )
                    c_same = file_sha256(f"{td}/c.gguf") == rec["sha256"]
                    ok &= c_same
                    row.update(
                        cli_identical=c_same,
                        cli_quantize_s=_num(r"(?m)^time\s*=\s*([0-9.]+) s", out),
                        cli_process_s=round(wall, 2),
                        cli_cpu_s=round(cpu, 2),
                    )
                row.update(sha256=r.sha256(), size=r.nbytes)
                print(json.dumps(row), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
