"""Time notebooks cell by cell: run each in a fresh python3 kernel (nbclient) and print per-cell and total seconds.

    .venv/bin/python tools/time_notebooks.py notebooks/10_benchmarks.ipynb          # full mode
    .venv/bin/python tools/time_notebooks.py --quick notebooks/0[5-9]*.ipynb        # QUICK mode (what the suite runs)
    .venv/bin/python tools/time_notebooks.py --json /tmp/t.json notebooks/*.ipynb   # also write the figures
    .venv/bin/python tools/time_notebooks.py --write-headers notebooks/0[0-6]*.ipynb  # and record them in the headers
    .venv/bin/python tools/time_notebooks.py --refresh notebooks/*.ipynb            # minutes again after a text edit

Full mode unsets QUANTLAB_QUICK and CI in the kernel's environment (the notebooks read them through
``quantlab.widgets._common.quick_default``); ``--quick`` sets QUANTLAB_QUICK=1. Numba's cache is
quantlab's (NUMBA_CACHE_DIR if set, else ``~/.cache/quantlab/numba``, what ``make`` warms and the test suite
uses), so a second run is a warm-cache run.

For each notebook: the wall seconds of every code cell, the kernel process's CPU seconds over the run
(user + system, children included: on a shared machine wall time minus CPU time is time spent waiting
for a core or for I/O), the total, and the 1-minute load average before and after. A cell that raises
stops that notebook (reported as an error, exit status 1). Nothing is written into the notebooks;
``--save DIR`` writes the executed copies (outputs included) into DIR, to read or compare the figures.

``--write-headers`` records the run in each notebook's header cell (the ``**Time:**`` line that
tools/make_syllabus.py turns into notebooks/README.md), replacing the figure of this mode (full or QUICK) and
keeping the other one. The compute figure is the kernel process's CPU seconds (what the run costs; on a
shared machine the wall time is inflated by the load, so it is stated beside it). The minutes are made, not
guessed, from the notebook itself (:func:`minutes_parts`): its markdown words at ``--wpm`` words per minute,
``--cell-min`` minutes per code cell that is not an exercise cell (reading the code and its output),
``--exercise-min`` per exercise (predict, run ``check``, read the hint) and the full run's compute. These rates are
assumptions stated in the header and the syllabus: nobody timed a human read-through.

**Core part.** A notebook may end (or pause) its core-path part with an *extension section*: a markdown cell whose
FIRST line is a Markdown heading containing the word "extension" (e.g. ``## 4. (extension) Letting an optimizer
choose``). The section runs to the next markdown cell whose first line is a heading of the same or a higher level
(fewer or as many ``#``) without that word, or to the closing ``**Next:**`` cell, which stays in the core part.
When a notebook has one, the **Time:** line also gives the core part's minutes (``core part ~N min = ...``, made
the same way from the cells outside the extension sections, with all of the compute counted: the header records
no per-cell compute) and tools/make_syllabus.py puts those in the core-path table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import re
import sys
import time
import types

ROOT = pathlib.Path(__file__).resolve().parent.parent


#: the rates the minutes are made from (assumptions, stated wherever the minutes are shown)
WPM = 100  # words of markdown read per minute: careful reading of technical text
CELL_MIN = 0.5  # minutes per code cell that is not an exercise: read the code, run it, read its output
EXERCISE_MIN = 3.0  # minutes per exercise: predict, check, read the hint
_EXERCISE = re.compile(r"""\b(?:check|reveal|answer)\(\s*["']([^"']+)["']""")
_TIME_LINE = re.compile(r"^\*\*Time:\*\*.*$", re.M)
_OLD = re.compile(
    r"compute:\s*(?P<full>[\d.]+)\s*s full(?:,\s*(?P<quick>[\d.]+)\s*s QUICK)?|compute:\s*(?P<q2>[\d.]+)\s*s QUICK"
)


_HEADING = re.compile(r"^(?P<level>#{1,6})\s")
_EXTENSION = re.compile(r"\bextension\b", re.I)


def extension_cells(nb) -> set[int]:
    """Indexes of the cells in the notebook's extension sections (see the module's **Core part**): from a markdown
    cell whose first line is a heading saying "extension" to the next heading of the same or a higher level that
    does not, or to the closing "**Next:**" cell. The header cell (index 0) is never one."""
    out, level = set(), None  # level: the open extension section's heading level, None outside one
    for i, c in enumerate(nb.cells):
        if i == 0:
            continue
        first = c.source.lstrip().split("\n", 1)[0] if c.cell_type == "markdown" else ""
        h = _HEADING.match(first)
        if h and _EXTENSION.search(first):
            level = len(h["level"]) if level is None else min(level, len(h["level"]))
        elif (h and level is not None and len(h["level"]) <= level) or first.startswith("**Next:**"):
            level = None
        if level is not None:
            out.add(i)
    return out


def core_cells(nb):
    """The notebook with only its core-part cells (the header, and everything outside extension sections)."""
    ext = extension_cells(nb)
    return types.SimpleNamespace(cells=[c for i, c in enumerate(nb.cells) if i not in ext])


def minutes_parts(
    nb, compute_s: float, wpm: float = WPM, cell_min: float = CELL_MIN, exercise_min: float = EXERCISE_MIN
):
    """The parts a notebook's minutes are made of: {"words", "cells", "exercises", "reading", "running",
    "exercising", "compute", "minutes"} (minutes rounded to the nearest whole minute; the header cell's own
    words are not counted). ``minutes_parts(core_cells(nb), ...)`` gives the core part's."""
    words = sum(len(c.source.split()) for c in nb.cells[1:] if c.cell_type == "markdown")
    code = [c for c in nb.cells if c.cell_type == "code"]
    ex_cells = [c for c in code if _EXERCISE.search(c.source)]
    n_ex = len({m for c in ex_cells for m in _EXERCISE.findall(c.source)})
    parts = {
        "words": words,
        "cells": len(code) - len(ex_cells),
        "exercises": n_ex,
        "reading": words / wpm,
        "running": (len(code) - len(ex_cells)) * cell_min,
        "exercising": n_ex * exercise_min,
        "compute": compute_s / 60,
    }
    parts["minutes"] = math.floor(parts["reading"] + parts["running"] + parts["exercising"] + parts["compute"] + 0.5)
    return parts


def _parts_text(parts, wpm, cell_min, exercise_min) -> str:
    return (
        f"{parts['words']} words at {wpm:g}/min {parts['reading']:.1f} + {parts['cells']} cells x {cell_min:g} + "
        f"{parts['exercises']} exercises x {exercise_min:g} + compute {parts['compute']:.1f}"
    )


def time_line(
    full_s,
    quick_s,
    parts,
    wall_s,
    load,
    cores=None,
    wpm=WPM,
    cell_min=CELL_MIN,
    exercise_min=EXERCISE_MIN,
    core_parts=None,
) -> str:
    """The header's **Time:** line (tools/make_syllabus.py parses '~N min', 'compute: X s full, Y s QUICK' and,
    when ``core_parts`` (the core part's minutes_parts) is given, 'core part ~M min')."""
    comp = "compute: " + ", ".join(
        x
        for x in (
            f"{full_s:.0f} s full" if full_s is not None else "",
            f"{quick_s:.0f} s QUICK" if quick_s is not None else "",
        )
        if x
    )
    core = (
        f"; core part ~{core_parts['minutes']} min = {_parts_text(core_parts, wpm, cell_min, exercise_min)} "
        "(the cells outside its extension sections, all of the compute)"
        if core_parts is not None
        else ""
    )
    return (
        f"**Time:** ~{parts['minutes']} min ({comp}, kernel CPU s; full run {wall_s:.0f} s wall at load {load:.0f} "
        f"on {cores or os.cpu_count()} cores; minutes = {_parts_text(parts, wpm, cell_min, exercise_min)}{core}, "
        "by tools/time_notebooks.py)"
    )


def write_header(path, result: dict, wpm=WPM, cell_min=CELL_MIN, exercise_min=EXERCISE_MIN) -> str | None:
    """Put ``result`` (a time_notebook() result without error) into the notebook's header **Time:** line;
    ``result=None`` keeps the figures there and makes the minutes again (after the text changed).
    Returns the new line, or None when the first markdown cell has no **Time:** line."""
    import nbformat

    path = pathlib.Path(path)
    nb = nbformat.read(path, as_version=4)
    head = next((c for c in nb.cells if c.cell_type == "markdown"), None)
    m = _TIME_LINE.search(head.source) if head is not None else None
    if m is None:
        return None
    old = m.group(0)
    o = _OLD.search(old)
    full_s = float(o["full"]) if o and o["full"] else None
    quick_s = float(o["quick"] or o["q2"]) if o and (o["quick"] or o["q2"]) else None
    w = re.search(r"full run (?P<wall>[\d.]+) s wall at load (?P<load>[\d.]+) on (?P<cores>\d+)", old)
    wall_s, load = (float(w["wall"]), float(w["load"])) if w else (float("nan"), float("nan"))
    cores = int(w["cores"]) if w else None
    if result is None:  # --refresh: the figures already in the header, the minutes made again
        pass
    elif result["mode"] == "full":
        full_s, wall_s = result["cpu_seconds"], result["total_seconds"]
        load, cores = (result["load_before"] + result["load_after"]) / 2, os.cpu_count()
    else:
        quick_s = result["cpu_seconds"]
    if full_s is None:
        raise ValueError(f"{path.name}: no full-run figure yet: time it in full mode first")
    parts = minutes_parts(nb, full_s, wpm, cell_min, exercise_min)
    core_parts = minutes_parts(core_cells(nb), full_s, wpm, cell_min, exercise_min) if extension_cells(nb) else None
    tail = "\\" if old.rstrip().endswith("\\") else ("  " if old.endswith("  ") else "")
    line = time_line(full_s, quick_s, parts, wall_s, load, cores, wpm, cell_min, exercise_min, core_parts) + tail
    head.source = head.source.replace(old, line)
    tmp = path.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    tmp.replace(path)
    return line


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
    ap.add_argument(
        "--write-headers",
        action="store_true",
        help="record each clean run (CPU s) and the minutes made from it in the notebook's header **Time:** line",
    )
    ap.add_argument(
        "--refresh",
        action="store_true",
        help="run nothing: make the minutes again from the figures already in each header (after editing text)",
    )
    ap.add_argument("--wpm", type=float, default=WPM, help=f"markdown words read per minute (default {WPM})")
    ap.add_argument("--cell-min", type=float, default=CELL_MIN, help=f"minutes per code cell (default {CELL_MIN})")
    ap.add_argument(
        "--exercise-min", type=float, default=EXERCISE_MIN, help=f"minutes per exercise (default {EXERCISE_MIN})"
    )
    args = ap.parse_args(argv)
    if args.refresh:
        for nbp in args.notebooks:
            line = write_header(nbp, None, args.wpm, args.cell_min, args.exercise_min)
            print(f"{pathlib.Path(nbp).name}: {line or 'no **Time:** line'}")
        return 0
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
        if args.write_headers and not r["error"] and r.get("cpu_seconds") is not None:
            try:
                line = write_header(nbp, r, args.wpm, args.cell_min, args.exercise_min)
            except ValueError as e:  # a QUICK figure for a notebook never timed in full: nothing to make minutes from
                line = f"not written: {e}"
            print(f"  header: {line}" if line else "  header: no **Time:** line, nothing written", flush=True)
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
