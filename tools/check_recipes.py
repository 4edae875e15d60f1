#!/usr/bin/env python
"""Quantize SmolLM2 with quantlab.recipes for every llama-quantize run recorded in
tests/data/recipes_smollm2.json and compare the sha256 of the output files; optionally time
llama-quantize and quantlab back to back (same threads, same machine load).

    .venv/bin/python tools/check_recipes.py [KEY ...] [--threads 2] [--time-llama]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.chdir(ROOT)  # the imatrix path is stored in the output as given (relative)

from quantlab import data, recipes  # noqa: E402

FX = json.loads((ROOT / "tests/data/recipes_smollm2.json").read_text())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("keys", nargs="*")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--time-llama", action="store_true", help="also time llama-quantize right before")
    a = ap.parse_args()
    runs = {r["key"]: r for r in FX["runs"]}
    keys = a.keys or list(runs)
    model = data.path("smollm2")
    ok = True
    with tempfile.TemporaryDirectory() as td:
        for key in keys:
            rec = runs[key]
            im = FX["imatrix"] if rec["imatrix"] else None
            tl = None
            if a.time_llama:
                env = dict(os.environ, LD_LIBRARY_PATH=str(ROOT / ".cache/oracle/lib"))
                t0 = time.perf_counter()
                subprocess.run([str(ROOT / ".cache/oracle/bin/llama-quantize"), "--allow-requantize",
                                *(["--imatrix", im] if im else []), str(model), f"{td}/l.gguf", rec["ftype"],
                                str(a.threads)], env=env, capture_output=True, check=True)
                tl = time.perf_counter() - t0
            out = pathlib.Path(td) / "q.gguf"
            r = recipes.quantize_model(model, out, rec["ftype"], imatrix=im, allow_requantize=True,
                                       threads=a.threads, verbose=False, progress=False)
            same = r.sha256() == rec["sha256"]
            ok &= same
            print(json.dumps({"key": key, "identical": same, "sha256": r.sha256(), "size": r.nbytes,
                              "quantlab_s": round(r.seconds, 2),
                              "llama_quantize_s": None if tl is None else round(tl, 2)}), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
