"""Write notebooks/README.md, the course syllabus, from the header cell of every notebook in notebooks/.

    .venv/bin/python tools/make_syllabus.py            # rewrite notebooks/README.md
    .venv/bin/python tools/make_syllabus.py --check    # exit 1 if README.md is not what the notebooks say

A notebook's FIRST markdown cell is its header, in this shape (tests/test_course.py checks it)::

    # NN · Title
    One or two sentences on what it is about.

    **You will:**
    - verb-first objective (3-5 of them)
    **Needs:** 00, 01            (or "nothing")
    **Time:** ~20 min (compute: 12 s full, 4 s QUICK; <machine>)
    **Path:** core               (or: extension / appendix, optionally followed by a note)

Blank lines between the lines are allowed, and so is a trailing backslash (a Markdown line break): without
one, Markdown runs "**Needs:**" into the last objective and the three last lines into one paragraph.

The README lists, per notebook, the objectives, prerequisites, minutes and path; a core-path table with
the total minutes and the total compute time (a notebook whose **Time:** line gives a "core part ~N min", made by
tools/time_notebooks.py without its extension sections, counts those N minutes there); then the extensions and
appendices. A notebook whose first
cell does not have that shape is listed under "not described yet" (never silently dropped). Run it again
after adding or changing a notebook: the test suite fails while README.md is out of date.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
NB_DIR = ROOT / "notebooks"
PATHS = ("core", "extension", "appendix")

_TITLE = re.compile(r"^#\s+(?P<nn>[0-9A-Za-z]+)\s+·\s+(?P<title>.+?)\s*$")
_FIELD = re.compile(r"^\*\*(?P<key>You will|Needs|Time|Path):\*\*\s*(?P<value>.*?)[\s\\]*$")  # "\\" = line break
_MINUTES = re.compile(r"~\s*(?P<min>\d+)\s*min")
_CORE_MINUTES = re.compile(r"core part ~\s*(?P<min>\d+)\s*min")  # tools/time_notebooks.py: extension sections left out
_COMPUTE = re.compile(r"compute:\s*(?P<full>[\d.]+)\s*s full(?:,\s*(?P<quick>[\d.]+)\s*s QUICK)?")


class HeaderError(ValueError):
    """A header cell that does not have the agreed shape."""


@dataclasses.dataclass
class Header:
    file: str
    nn: str
    title: str
    about: str
    objectives: list[str]
    needs: str
    time: str
    minutes: int
    compute_full_s: float | None
    compute_quick_s: float | None
    path: str  # core | extension | appendix
    path_note: str
    core_minutes: int | None = None  # the minutes of the cells outside the notebook's extension sections

    @property
    def path_minutes(self) -> int:
        """What the notebook costs on the core path: its core part's minutes when it has extension sections."""
        return self.minutes if self.core_minutes is None else self.core_minutes


def first_markdown(nb_path: pathlib.Path) -> str:
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            src = cell.get("source", "")
            return "".join(src) if isinstance(src, list) else src
    return ""


def parse_header(text: str, file: str = "?") -> Header:
    """Parse one header cell; raises HeaderError naming the file and what is missing."""
    lines = [ln.rstrip() for ln in text.strip().splitlines()]
    if not lines:
        raise HeaderError(f"{file}: the first markdown cell is empty")
    m = _TITLE.match(lines[0])
    if not m:
        raise HeaderError(f"{file}: first line {lines[0]!r} is not '# NN · Title'")
    about, objectives, fields = [], [], {}
    in_objectives = False
    for ln in lines[1:]:
        f = _FIELD.match(ln)
        if f:
            in_objectives = f["key"] == "You will"
            fields[f["key"]] = f["value"]
            continue
        if in_objectives and ln.startswith("- "):
            objectives.append(ln[2:].strip())
        elif not fields and ln.strip():
            about.append(ln.strip())
    for key in ("You will", "Needs", "Time", "Path"):
        if key not in fields:
            raise HeaderError(f"{file}: no '**{key}:**' line")
    if not 3 <= len(objectives) <= 5:
        raise HeaderError(f"{file}: {len(objectives)} objectives under '**You will:**' (3 to 5 expected)")
    if not about:
        raise HeaderError(f"{file}: no sentence on what the notebook is about under the title")
    mm = _MINUTES.search(fields["Time"])
    if not mm:
        raise HeaderError(f"{file}: '**Time:** {fields['Time']}' has no '~N min'")
    c = _COMPUTE.search(fields["Time"])
    cm = _CORE_MINUTES.search(fields["Time"])
    path_word, _, note = fields["Path"].partition(" ")
    path_word = path_word.strip().rstrip(",;:").lower()
    if path_word not in PATHS:
        raise HeaderError(f"{file}: '**Path:** {fields['Path']}' does not start with one of {', '.join(PATHS)}")
    return Header(
        file=file,
        nn=m["nn"],
        title=m["title"],
        about=" ".join(about),
        objectives=objectives,
        needs=fields["Needs"],
        time=fields["Time"],
        minutes=int(mm["min"]),
        compute_full_s=float(c["full"]) if c else None,
        compute_quick_s=float(c["quick"]) if c and c["quick"] else None,
        path=path_word,
        path_note=note.strip(" ()"),
        core_minutes=int(cm["min"]) if cm else None,
    )


def read_headers(nb_dir: pathlib.Path = NB_DIR) -> tuple[list[Header], list[tuple[str, str]]]:
    """(headers of the notebooks that have one, [(file, why not)] for the others), in file-name order."""
    ok, bad = [], []
    for p in sorted(nb_dir.glob("*.ipynb")):
        try:
            ok.append(parse_header(first_markdown(p), p.name))
        except HeaderError as e:
            bad.append((p.name, str(e).split(": ", 1)[-1]))
    return ok, bad


def _secs(v: float | None) -> str:
    return "not measured" if v is None else f"{v:.0f} s"


def _link(h: Header) -> str:
    return f"[{h.nn} · {h.title}]({h.file})"


def render(headers: list[Header], undescribed: list[tuple[str, str]]) -> str:
    core = [h for h in headers if h.path == "core"]
    rest = [h for h in headers if h.path != "core"]
    out = [
        "# quantlab course: syllabus",
        "",
        "_Written by `tools/make_syllabus.py` from the first cell of every notebook; do not edit by hand._",
        "",
        "A workshop on LLM weight quantization the way llama.cpp does it: every number is computed in the "
        "notebooks, on real tensors.",
        "",
        "**How the times are made.** *Compute* is measured: the CPU seconds of the notebook's kernel over a full "
        "run (`tools/time_notebooks.py`; the wall time on the shared 2-core machine, inflated by its load, is "
        "stated in each header). *Minutes* are made from the notebook by `tools/time_notebooks.py "
        "--write-headers`, not guessed: its markdown words at an assumed reading rate, a fixed time per code "
        "cell (reading the code and its output), a fixed time per exercise, plus the compute; each notebook's "
        "**Time** line below gives its parts and the rates. Nobody has timed a human read-through: treat the "
        "minutes as a planning figure and adjust them after the first class. A header without those parts "
        "still carries an estimate. A notebook with extension sections (a heading that says *extension*) "
        "counts on the core path with the minutes of its other cells, its *core part* (with all of its compute); "
        "its **Time** line gives both.",
        "",
        "## Core path",
        "",
        "| # | notebook | needs | minutes | compute (full run, CPU s) | note |",
        "|---|---|---|---:|---:|---|",
    ]
    for i, h in enumerate(core, 1):
        whole = f"whole notebook, extensions included: {h.minutes} min" if h.core_minutes is not None else ""
        note = "; ".join(x for x in (h.path_note, whole) if x)
        out.append(f"| {i} | {_link(h)} | {h.needs} | {h.path_minutes} | {_secs(h.compute_full_s)} | {note} |")
    measured = [h.compute_full_s for h in core if h.compute_full_s is not None]
    missing = [h.nn for h in core if h.compute_full_s is None]
    total_c = f"{sum(measured):.0f} s ({sum(measured) / 60:.1f} min)" + (
        f", without {', '.join(missing)} (not measured)" if missing else ""
    )
    out += [f"| | **total** | | **{sum(h.path_minutes for h in core)} min** | **{total_c}** | |", ""]
    if rest:
        out += [
            "## Extensions and appendices",
            "",
            "| notebook | path | needs | minutes | compute (full run, CPU s) | note |",
            "|---|---|---|---:|---:|---|",
        ]
        for h in rest:
            out.append(
                f"| {_link(h)} | {h.path} | {h.needs} | {h.minutes} | {_secs(h.compute_full_s)} | {h.path_note} |"
            )
        out.append("")
    if undescribed:
        out += [
            "## Not described yet",
            "",
            "These notebooks have no header cell in the agreed shape (see `tools/make_syllabus.py`):",
            "",
        ]
        out += [f"- [{f}]({f}): {why}" for f, why in undescribed]
        out.append("")
    out += ["## The notebooks", ""]
    for h in headers:
        out += [f"### {_link(h)}", "", h.about, "", "You will:", ""]
        out += [f"- {o}" for o in h.objectives]
        out += [
            "",
            f"Needs: {h.needs}. Time: {h.time}. Path: {h.path}{(' (' + h.path_note + ')') if h.path_note else ''}.",
            "",
        ]
    return "\n".join(out).rstrip() + "\n"


def build(nb_dir: pathlib.Path = NB_DIR) -> str:
    return render(*read_headers(nb_dir))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if notebooks/README.md is out of date")
    args = ap.parse_args(argv)
    text = build()
    target = NB_DIR / "README.md"
    if args.check:
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            print(f"{target} is out of date: run tools/make_syllabus.py", file=sys.stderr)
            return 1
        return 0
    tmp = target.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)
    headers, bad = read_headers()
    print(f"wrote {target}: {len(headers)} notebooks described, {len(bad)} not described yet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
