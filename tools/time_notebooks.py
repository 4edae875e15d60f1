"""Time notebooks cell by cell: run each in a fresh python3 kernel (nbclient) and print per-cell and total seconds.

    .venv/bin/python tools/time_notebooks.py notebooks/10_benchmarks.ipynb          # full mode
    .venv/bin/python tools/time_notebooks.py --quick notebooks/0[5-9]*.ipynb        # QUICK mode (what the suite runs)
    .venv/bin/python tools/time_notebooks.py --json /tmp/t.json notebooks/*.ipynb   # also write the figures

Full mode unsets QUANTLAB_QUICK and CI in the kernel's environment (the notebooks read them through
``quantlab.widgets._common.quick_default``); ``--quick`` sets QUANTLAB_QUICK=1. Numba's cache is
quantlab's (NUMBA_CACHE_DIR if set, else ``~/.cache/quantlab/numba``, what ``make`` warms and the test suite
uses), so a second run is a warm-cache run.

For each notebook: the wall seconds of every code cell, the kernel process's CPU seconds over the run
(user + system, children included: on a shared machine wall time minus CPU time is time spent waiting
for a core or for I/O), the total, and the 1-minute load average before and after. A cell that raises
stops that notebook (reported as an error, exit status 1). Nothing is written into the notebooks;
``--save DIR`` writes the executed copies (outputs included) into DIR, to read or compare the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def kernel_env(quick: bool) -> dict:
    """The kernel's environment: the repo on PYTHONPATH, QUICK on or off (numba's cache: quantlab's default)."""
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)  # else the kernel cannot pick the inline backend
    env.pop("CI", None)
    if quick:
        env["QUANTLAB_QUICK"] = "1"
    else:
        env.pop("QUANTLAB_QUICK", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _load1() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def _kernel_cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a live process and its waited-for children (Linux /proc)."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    # after the ")": state is field 3 of stat, so utime/stime/cutime/cstime (14-17) are indexes 11-14 here
    return sum(int(v) for v in fields[11:15]) / ticks


def time_notebook(path, quick: bool = False, timeout: float = 1800, progress=None, save_to=None) -> dict:
    """Run one notebook; returns {"notebook", "mode", "cells": [{"index", "first_line", "seconds", "cpu_seconds"}],
    "total_seconds", "cpu_seconds", "load_before", "load_after", "error"}."""
    import nbclient
    import nbformat

    path = pathlib.Path(path)
    nb = nbformat.read(path, as_version=4)
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(kernel_env(quick))  # the kernel inherits this process's environment
    out = {
        "notebook": path.name,
        "mode": "quick" if quick else "full",
        "cells": [],
        "error": None,
        "load_before": round(_load1(), 2),
    }
    sys.path.insert(0, str(ROOT))
    from tests.nbrun import NotebookClient  # nbclient without its Output-widget hang (nbclient#312)

    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    try:
        t_start = time.perf_counter()
        with client.setup_kernel():
            pid = getattr(client.km.provisioner, "pid", None) if client.km.provisioner else None
            cpu0 = _kernel_cpu_seconds(pid) if pid else None
            t_start = time.perf_counter()
            for i, cell in enumerate(nb.cells):
                if cell.cell_type != "code":
                    continue
                first = next((s for s in cell.source.splitlines() if s.strip()), "")
                c0 = _kernel_cpu_seconds(pid) if pid else None
                t0 = time.perf_counter()
                try:
                    client.execute_cell(cell, i)
                except nbclient.exceptions.CellExecutionError as e:
                    out["error"] = f"cell {i}: {str(e).strip().splitlines()[-1][:200]}"
                except nbclient.exceptions.CellTimeoutError:
                    out["error"] = f"cell {i}: no reply within {timeout:.0f} s"
                    out["timed_out"] = True
                finally:
                    dt = time.perf_counter() - t0
                    dc = _kernel_cpu_seconds(pid) - c0 if pid else None
                    out["cells"].append(
                        {
                            "index": i,
                            "first_line": first[:60],
                            "seconds": round(dt, 2),
                            "cpu_seconds": None if dc is None else round(dc, 2),
                        }
                    )
                    if progress:
                        cpu = "    ?" if dc is None else f"{dc:7.1f}"
                        progress(f"  [{i:2d}] {dt:7.1f} s wall {cpu} s CPU  {first[:50]}")
                if out["error"]:
                    break
            out["total_seconds"] = round(time.perf_counter() - t_start, 1)
            out["cpu_seconds"] = round(_kernel_cpu_seconds(pid) - cpu0, 1) if pid else None
    finally:
        os.environ.clear()
        os.environ.update(saved)
    out["load_after"] = round(_load1(), 2)
    if save_to is not None:  # the executed notebook, outputs included (never into notebooks/)
        dest = pathlib.Path(save_to) / path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, dest)
        out["saved"] = str(dest)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="+", help="notebook files")
    ap.add_argument("--quick", action="store_true", help="QUANTLAB_QUICK=1 (the test suite's mode)")
    ap.add_argument(
        "--timeout",
        type=float,
        default=600,
        help="seconds a cell may take; a cell over it is reported as hung (default 600)",
    )
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--save", metavar="DIR", help="write each executed notebook, with its outputs, into DIR")
    args = ap.parse_args(argv)
    results, failed = [], False
    for nbp in args.notebooks:
        print(f"{pathlib.Path(nbp).name} ({'quick' if args.quick else 'full'} mode), load {_load1():.2f}", flush=True)
        if args.save and pathlib.Path(args.save).resolve() == pathlib.Path(nbp).resolve().parent:
            ap.error("--save must not be the notebooks' own folder (they are committed without outputs)")
        r = time_notebook(
            nbp, quick=args.quick, timeout=args.timeout, progress=lambda s: print(s, flush=True), save_to=args.save
        )
        results.append(r)
        failed |= bool(r["error"])
        cpu = f"{r['cpu_seconds']:.1f}" if r.get("cpu_seconds") is not None else "?"
        print(
            f"  total {r.get('total_seconds', float('nan')):.1f} s wall, {cpu} s CPU (kernel process), "
            f"load {r['load_before']:.2f} -> {r['load_after']:.2f}" + (f"  ERROR {r['error']}" if r["error"] else ""),
            flush=True,
        )
    if len(results) > 1:
        print("\nnotebook                          mode   wall s   CPU s  load before/after")
        for r in results:
            cpu = f"{r['cpu_seconds']:7.1f}" if r.get("cpu_seconds") is not None else "      ?"
            print(
                f"{r['notebook']:33s} {r['mode']:5s} {r.get('total_seconds', float('nan')):7.1f} {cpu}  "
                f"{r['load_before']:.2f} / {r['load_after']:.2f}" + ("  ERROR" if r["error"] else "")
            )
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
