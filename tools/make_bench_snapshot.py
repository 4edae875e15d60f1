"""Write quantlab/assets/bench_snapshot.json: one benchmark run of quantlab.bench, with the facts of the machine it ran on.

Notebook 10 measures this machine live and shows its figures next to this snapshot's (a ratio column),
so a student can see whether their machine is faster or slower than the one the course was written on.

What is measured (everything from ``quantlab.bench``, nothing else):

* ``bench.formats(...)`` with its defaults, as notebook 10 runs it (up to 2^20 weights, slow quantizes on
  fewer rows), for every quantized format of the registry plus F16 and BF16 (quantize, quantize with an
  importance matrix where the format uses one, dequantize; numpy reference, numba 1 thread / all
  threads, the ``gguf`` package, ggml when found);
* ``bench.gguf_open()``: opening SmolLM2's GGUF, quantlab vs ``gguf.GGUFReader``.

What is recorded about the machine: CPU model (``/proc/cpuinfo``), logical cores, the load average at the
start and at the end (benchmarks on a loaded machine are slower: check it before trusting a figure),
Python / numpy / numba versions and numba's thread count, the date (UTC) and quantlab's git commit
(``+dirty`` when the working tree had uncommitted changes).

    .venv/bin/python tools/make_bench_snapshot.py            # about a minute; rewrites quantlab/assets/bench_snapshot.json
    .venv/bin/python tools/make_bench_snapshot.py --out /tmp/snap.json --size 65536 --formats Q4_0,Q8_0   # a try

Run it on a quiet machine (``uptime``: a load average well below the core count).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCHEMA = 1


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo (Linux); platform.processor() elsewhere."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    """quantlab's HEAD commit, with ``+dirty`` when tracked files under quantlab/ differ from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "quantlab"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def machine_facts() -> dict:
    import numba
    import numpy as np

    return {
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "quantlab_commit": git_commit(),
    }


def table_dict(table) -> dict:
    return {"title": table.title, "columns": list(table.columns), "rows": table.rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "quantlab" / "assets" / "bench_snapshot.json"))
    ap.add_argument("--size", type=int, default=None, help="weights per measurement (default: bench.formats' own)")
    ap.add_argument(
        "--formats", default=None, help="comma-separated format names (default: every quantized format, F16 and BF16)"
    )
    args = ap.parse_args(argv)

    from quantlab import bench
    from quantlab.formats import all_formats

    names = (
        args.formats.split(",") if args.formats else [f.name for f in all_formats() if f.is_quantized] + ["F16", "BF16"]
    )
    facts = machine_facts()
    facts["load_start"] = load_average()
    t0 = time.perf_counter()
    kw = {} if args.size is None else {"size": args.size}
    fmt_table = bench.formats(names, progress=lambda s: print(f"  {s}", file=sys.stderr, flush=True), **kw)
    open_table = bench.gguf_open()
    facts["load_end"] = load_average()
    facts["seconds"] = round(time.perf_counter() - t0, 1)
    snap = {"schema": SCHEMA, "machine": facts, "formats": table_dict(fmt_table), "gguf_open": table_dict(open_table)}
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(snap, indent=1, default=float) + "\n")
    print(
        f"wrote {out}: {len(fmt_table)} format rows, {len(open_table)} GGUF-open rows in {facts['seconds']} s; "
        f"load average {facts['load_start']} -> {facts['load_end']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
