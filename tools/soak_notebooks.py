"""Soak the notebooks: execute each one N times in a row headless (a fresh python3 kernel each time) and count
what happens, so a rare hang shows up here and not in the suite.

    .venv/bin/python tools/soak_notebooks.py notebooks/01_bits_and_floats.ipynb notebooks/06_*.ipynb
    .venv/bin/python tools/soak_notebooks.py --runs 20 notebooks/*.ipynb            # the acceptance run
    .venv/bin/python tools/soak_notebooks.py --stock-nbclient --timeout 60 notebooks/06_*.ipynb   # the old client

The client is tests/nbrun.py's (nbclient without its Output-widget hang, nbclient#312; ``--stock-nbclient``
runs nbclient's own, to see the hang). QUICK mode (QUANTLAB_QUICK=1, what the suite runs) unless ``--full``;
the suite's probe cells (tests/test_notebooks.py PROBES, which move the widgets) run after the notebook unless
``--no-probes``.

A cell that gets no reply within ``--timeout`` seconds is a hang: it is reported with what the client had
received for it (iopub messages by type; whether a message sat unread on the shell or iopub socket) and that
run stops; the tool goes on with the next run. A cell slower than ``--slow`` seconds is named: a stall of
exactly the timeout is the lost wake-up of nbclient#312 (zmq's poll makes a last check when its timer fires).

For every cell the tool counts the iopub messages twice: as the kernel sent them (a hidden first cell wraps
the kernel's ``Session.send`` and tallies per request) and as the client received them. A difference is
messages the PUB socket dropped (its high-water mark); each run prints the largest per-cell count and the
drops. Exit status 1 if any run hung or failed.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from time_notebooks import kernel_env  # noqa: E402 - same kernel environment as the timing tool

# Runs in the kernel before the notebook: count every message the kernel sends on iopub, per parent request.
_COUNTER = """
def _soak_install():
    import collections
    k = get_ipython().kernel
    sent = collections.defaultdict(collections.Counter)
    send0 = k.session.send
    iopub = [s for s in (k.iopub_socket, getattr(k, "iopub_thread", None), getattr(k.iopub_socket, "io_thread", None))
             if s is not None]
    def send(stream, msg_or_type, content=None, parent=None, *a, **kw):   # a closure: safe at shutdown
        if any(stream is s for s in iopub):
            pid = (parent or {}).get("header", {}).get("msg_id", "")
            t = msg_or_type if isinstance(msg_or_type, str) else msg_or_type["header"]["msg_type"]
            sent[pid][t] += 1
        return send0(stream, msg_or_type, content, parent, *a, **kw)
    k.session.send = send
    return sent
_soak_sent = _soak_install()
"""
_REPORT = "import json as _j; print(_j.dumps({k: dict(v) for k, v in _soak_sent.items()}))"


def _client_class(stock: bool = False):
    import nbclient

    if stock:
        base = nbclient.NotebookClient
    else:
        sys.path.insert(0, str(ROOT))
        from tests.nbrun import NotebookClient as base

    class CountingClient(base):
        """nbclient's client, counting the iopub messages each cell's request got."""

        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.received = collections.defaultdict(collections.Counter)  # parent msg_id -> type -> n
            self.parent_of = {}  # cell index -> parent msg_id

        def process_message(self, msg, cell, cell_index):
            pid = msg["parent_header"].get("msg_id", "")
            self.received[pid][msg["msg_type"]] += 1
            self.parent_of[cell_index] = pid
            return super().process_message(msg, cell, cell_index)

    return CountingClient


def _socket_has_message(channel) -> bool:
    import zmq

    sock = getattr(channel, "socket", None)
    return bool(sock is not None and sock.get(zmq.EVENTS) & zmq.POLLIN)


def _probes(name: str) -> list:
    """The suite's probe cells for this notebook (tests/test_notebooks.py PROBES): they move the widgets."""
    sys.path.insert(0, str(ROOT))
    from tests.test_notebooks import PROBES

    probe = PROBES.get(name)
    return [probe] if isinstance(probe, str) else list(probe or ())


def soak_once(path: pathlib.Path, quick: bool, timeout: float, probes: bool = True, stock: bool = False) -> dict:
    """One headless run of one notebook (and the suite's probe cells for it); returns
    {"ok", "seconds", "cells": [...], "hang": {...} | None, "error"}."""
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(_COUNTER))
    nb.cells.extend(nbformat.v4.new_code_cell(src) for src in (_probes(path.name) if probes else ()))
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(kernel_env(quick))
    client = _client_class(stock)(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    out = {"ok": False, "hang": None, "error": None, "cells": []}
    t0 = time.perf_counter()
    try:
        with client.setup_kernel():
            out["start_seconds"] = round(time.perf_counter() - t0, 1)
            for i, cell in enumerate(nb.cells):
                if cell.cell_type != "code":
                    continue
                c0 = time.perf_counter()
                try:
                    client.execute_cell(cell, i)
                except nbclient.exceptions.CellTimeoutError:
                    pid = client.parent_of.get(i)
                    got = dict(client.received.get(pid, {})) if pid else {}
                    out["hang"] = {
                        "cell": i,
                        "seconds": round(time.perf_counter() - c0, 1),
                        "received": got,
                        "idle_received": any(k == "status" for k in got) and got.get("status", 0) >= 2,
                        "shell_message_unread": _socket_has_message(client.kc.shell_channel),
                        "iopub_message_unread": _socket_has_message(client.kc.iopub_channel),
                    }
                    break
                except nbclient.exceptions.CellExecutionError as e:
                    out["error"] = f"cell {i}: {str(e).strip().splitlines()[-1][:200]}"
                    break
                out["cells"].append(
                    {"index": i, "seconds": round(time.perf_counter() - c0, 2), "parent": client.parent_of.get(i)}
                )
            if out["hang"] is None and out["error"] is None:
                report = nbformat.v4.new_code_cell(_REPORT)
                nb.cells.append(report)
                client.execute_cell(report, len(nb.cells) - 1)
                sent = json.loads("".join(o.get("text", "") for o in report.outputs if o.get("name") == "stdout"))
                for c in out["cells"]:
                    s = sent.get(c["parent"] or "", {})
                    r = client.received.get(c["parent"] or "", {})
                    c["sent"] = sum(s.values())
                    c["received"] = sum(r.values())
                    c["comm_msg"] = s.get("comm_msg", 0)
                out["ok"] = True
    except nbclient.exceptions.DeadKernelError as e:
        out["error"] = f"kernel died: {e}"
    finally:
        os.environ.clear()
        os.environ.update(saved)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="+", help="notebook files")
    ap.add_argument("--runs", type=int, default=20, help="runs of each notebook (default 20)")
    ap.add_argument("--full", action="store_true", help="full mode instead of QUICK")
    ap.add_argument(
        "--timeout",
        type=float,
        default=300,
        help="seconds without a reply after which a cell is taken as hung (default 300)",
    )
    ap.add_argument("--slow", type=float, default=30, help="name the cells that took longer than this (s)")
    ap.add_argument(
        "--stock-nbclient",
        action="store_true",
        help="nbclient's own client instead of tests/nbrun.py's (to see the widget hang it fixes)",
    )
    ap.add_argument("--no-probes", action="store_true", help="without the suite's probe cells")
    ap.add_argument("--json", help="also write every run's record to this file")
    args = ap.parse_args(argv)
    records, bad = [], 0
    for nbp in map(pathlib.Path, args.notebooks):
        hung = failed = 0
        most_sent = most_dropped = 0
        for run in range(1, args.runs + 1):
            r = soak_once(
                nbp, quick=not args.full, timeout=args.timeout, probes=not args.no_probes, stock=args.stock_nbclient
            )
            r.update(notebook=nbp.name, run=run, load=round(os.getloadavg()[0], 2))
            records.append(r)
            cells = r["cells"]
            sent = max((c.get("sent", 0) for c in cells), default=0)
            dropped = sum(max(0, c.get("sent", 0) - c.get("received", 0)) for c in cells)
            most_sent, most_dropped = max(most_sent, sent), max(most_dropped, dropped)
            state = "ok" if r["ok"] else ("HANG " + json.dumps(r["hang"]) if r["hang"] else f"ERROR {r['error']}")
            hung += r["hang"] is not None
            failed += r["error"] is not None
            slow = ", ".join(
                [f"kernel start {r['start_seconds']:.0f} s"] * (r.get("start_seconds", 0) > args.slow)
                + [f"cell {c['index']} {c['seconds']:.0f} s" for c in cells if c["seconds"] > args.slow]
            )
            print(
                f"{nbp.name} run {run:2d}/{args.runs}: {r['seconds']:6.1f} s, load {r['load']:.2f}, "
                f"most iopub messages in a cell {sent}, dropped {dropped}  {state}"
                + (f"  (slow: {slow})" if slow else ""),
                flush=True,
            )
        print(
            f"{nbp.name}: {args.runs - hung - failed}/{args.runs} runs ok, {hung} hung, {failed} failed; "
            f"most iopub messages in one cell {most_sent}, most dropped in a run {most_dropped}",
            flush=True,
        )
        bad += hung + failed
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(records, indent=1) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
