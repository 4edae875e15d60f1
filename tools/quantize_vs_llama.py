"""Whole-process ``quantlab quantize`` against ``llama-quantize``: wall and CPU seconds, median of N.

    PYTHONPATH=$PWD NUMBA_CACHE_DIR=$PWD/.cache/numba .venv/bin/python tools/quantize_vs_llama.py
        [--ftypes Q8_0,Q4_K_M,IQ4_XS] [--runs 5] [--threads 2] [--src smollm2]

Each round runs, per file type, llama-quantize (QUANTLAB_LLAMA_BIN, else the native build's
.cache/oracle-native/bin when it has llama-quantize, else the AVX2 build's .cache/oracle/bin) and then
``python -m quantlab.cli quantize`` as separate processes on the same input (interleaved, so both see the
same machine load), writing to a temporary folder. Measured from outside: wall time (perf_counter around
the child) and CPU time (user + system of the child, from wait4's rusage), which is what start-up
(interpreter, imports, numba's cache loading) adds to. The table gives medians and ratios, with the load
average before and after. The outputs are compared too: the two files must be byte-identical.

quantlab's modules are byte-compiled first (``compileall``), as ``pip install`` leaves them: in an
environment with PYTHONDONTWRITEBYTECODE=1 and no ``__pycache__`` every run would otherwise compile
quantlab's sources again (measured: 35 ms of CPU for the modules ``quantlab quantize`` imports before its
kernels, more with the kernel modules), a cost no installed quantlab pays.
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _run(cmd, env):
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: llama-quantize's log would fill a pipe and block
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        code = os.waitstatus_to_exitcode(status)
        p.returncode = code
        if code != 0:
            log.seek(0)
            raise RuntimeError(f"{cmd[0]} failed ({code}): {log.read().decode(errors='replace').strip()[-300:]}")
    return wall, ru.ru_utime + ru.ru_stime


def _sha(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ftypes", default="Q8_0,Q4_K_M,IQ4_XS")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--src", default="smollm2")
    a = ap.parse_args(argv)
    from quantlab import data

    src = data.path("smollm2") if a.src == "smollm2" else pathlib.Path(a.src)
    native = ROOT / ".cache/oracle-native/bin"
    default = native if (native / "llama-quantize").exists() else ROOT / ".cache/oracle/bin"
    binroot = pathlib.Path(os.environ.get("QUANTLAB_LLAMA_BIN") or default)
    lq = binroot / "llama-quantize"
    build = binroot.parent / "BUILD"
    flavour = next(
        (ln.split("=", 1)[1] for ln in build.read_text().splitlines() if ln.startswith("flavour="))
        if build.exists()
        else (),
        "unknown build",
    )
    compileall.compile_dir(ROOT / "quantlab", quiet=1)  # as installed (see the module docstring)
    env_l = dict(os.environ, LD_LIBRARY_PATH=str(binroot.parent / "lib"))
    env_q = dict(os.environ)
    load0 = " ".join(f"{v:.2f}" for v in os.getloadavg())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        res = {ft: {"llama": [], "quantlab": []} for ft in a.ftypes.split(",")}
        same = {}
        for _ in range(a.runs):
            for ft in res:
                ol, oq = f"{tmp}/l-{ft}.gguf", f"{tmp}/q-{ft}.gguf"
                res[ft]["llama"].append(_run([str(lq), "--allow-requantize", str(src), ol, ft, str(a.threads)], env_l))
                res[ft]["quantlab"].append(
                    _run(
                        [
                            sys.executable,
                            "-m",
                            "quantlab.cli",
                            "quantize",
                            "--allow-requantize",
                            "--no-progress",
                            str(src),
                            oq,
                            ft,
                            str(a.threads),
                        ],
                        env_q,
                    )
                )
                same[ft] = _sha(ol) == _sha(oq)
        for ft, r in res.items():
            lw, lc = (statistics.median(x[i] for x in r["llama"]) for i in (0, 1))
            qw, qc = (statistics.median(x[i] for x in r["quantlab"]) for i in (0, 1))
            rows.append((ft, lw, qw, qw / lw, lc, qc, qc / lc, same[ft]))
    load1 = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"whole-process quantize of {src.name}, {a.threads} threads, median of {a.runs} interleaved runs; "
        f"llama-quantize = {lq} ({flavour}); load {load0} -> {load1}"
    )
    print(
        f"{'ftype':8s} {'llama wall':>10s} {'ql wall':>8s} {'ratio':>6s} {'llama CPU':>9s} {'ql CPU':>7s} {'ratio':>6s}  same bytes"
    )
    for ft, lw, qw, rw, lc, qc, rc, s in rows:
        print(f"{ft:8s} {lw:10.2f} {qw:8.2f} {rw:6.2f} {lc:9.2f} {qc:7.2f} {rc:6.2f}  {s}")


if __name__ == "__main__":
    main()
