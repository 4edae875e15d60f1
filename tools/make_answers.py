"""Write the answers section of docs/instructor.md from the exercise registry (every answer computed now).

    .venv/bin/python tools/make_answers.py            # rewrite the section between the markers
    .venv/bin/python tools/make_answers.py --check    # exit 1 if the file is not current (what the test runs)

The section sits between ``<!-- answers:begin -->`` and ``<!-- answers:end -->``; everything else in the
file is the instructor's prose and is left alone. Every part of quantlab.course (part1, part2, ...) is
listed, notebook by notebook.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "instructor.md"
BEGIN, END = "<!-- answers:begin -->", "<!-- answers:end -->"


def _fmt(v, unit: str) -> str:
    if isinstance(v, float):
        s = f"{v:.4g}"
    elif isinstance(v, int) and not isinstance(v, bool):
        s = f"{v:,}"
    elif isinstance(v, (set, frozenset, tuple, list)):
        s = ", ".join(str(x) for x in v)
    else:
        s = str(v)
    return f"{s} {unit}".strip()


def _tolerance(ex) -> str:
    parts = []
    if ex.rel:
        parts.append(f"±{100 * ex.rel:g} %")
    if ex.abs:
        parts.append(f"±{ex.abs:g}")
    return f" (accepted: {' or '.join(parts)})" if parts else ""


def render() -> str:
    """The answers section (markers included), computed from the registry."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from quantlab.course import exercises

    lines = [BEGIN, "", "_Written by `tools/make_answers.py` from `quantlab.course`; do not edit by hand._", ""]
    current = None
    for key, ex in exercises().items():
        nb = key.split(".")[0]
        if nb != current:
            lines += ([""] if current else []) + [f"### Notebook {nb}", ""]
            current = nb
        lines.append(f"- **{key}** {ex.question}  ")
        lines.append(f"  **Answer: {_fmt(ex.expected(), ex.unit)}**{_tolerance(ex)}. {ex.explain}".rstrip())
        lines.append(f"  _Hint shown on a wrong answer:_ {ex.hint}")
    lines += ["", END]
    return "\n".join(lines)


def current_section(text: str) -> str | None:
    i, j = text.find(BEGIN), text.find(END)
    if i < 0 or j < i:
        return None
    return text[i : j + len(END)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/instructor.md is not current")
    args = ap.parse_args(argv)
    text = DOC.read_text(encoding="utf-8")
    old = current_section(text)
    if old is None:
        print(f"{DOC}: no {BEGIN} ... {END} section", file=sys.stderr)
        return 1
    new = render()
    if args.check:
        if old != new:
            print(f"{DOC} is not current: run `.venv/bin/python tools/make_answers.py`", file=sys.stderr)
            return 1
        print(f"{DOC}: answers current")
        return 0
    tmp = DOC.with_suffix(".md.tmp")
    tmp.write_text(text.replace(old, new), encoding="utf-8")
    tmp.replace(DOC)
    print(f"wrote the answers of {new.count('- **')} exercises into {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
