"""docs/instructor.md's answers section is what tools/make_answers.py computes from the registry now."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("make_answers", ROOT / "tools" / "make_answers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_instructor_answers_are_current():
    tool = _tool()
    old = tool.current_section(tool.DOC.read_text(encoding="utf-8"))
    assert old is not None, "docs/instructor.md has no answers section"
    new = tool.render()
    assert old == new, "docs/instructor.md's answers are stale: run `.venv/bin/python tools/make_answers.py`"
    from quantlab.course import exercises

    assert all(f"**{k}**" in new for k in exercises())


def test_instructor_timing_blocks_add_up_to_the_syllabus():
    """The hand-written timing blocks of docs/instructor.md: every core notebook in exactly one block, each block's
    minutes the sum of its notebooks' core-part minutes (the syllabus's), the total row their sum, within 2½ hours."""
    import re
    import sys

    spec = importlib.util.spec_from_file_location("make_syllabus", ROOT / "tools" / "make_syllabus.py")
    ms = importlib.util.module_from_spec(spec)
    sys.modules["make_syllabus"] = ms  # dataclasses look their module up there
    spec.loader.exec_module(ms)
    core = {h.nn: h.path_minutes for h in ms.read_headers()[0] if h.path == "core"}
    text = (ROOT / "docs" / "instructor.md").read_text(encoding="utf-8")
    section = text.split("## Timing: the core path", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^\| (\d+) \| ([^|]+) \| (\d+) \|", section, re.M)
    assert blocks, "no timing blocks in docs/instructor.md"
    seen = []
    for n, nbs, minutes in blocks:
        names = [x.strip().split()[0] for x in nbs.split(",")]
        seen += names
        assert int(minutes) == sum(core[x] for x in names), f"block {n}: {minutes} min, notebooks {names}"
    assert sorted(seen) == sorted(core), (seen, sorted(core))
    total = re.search(r"^\| \| \*\*total\*\* \| \*\*(\d+)\*\* \|", section, re.M)
    assert total and int(total[1]) == sum(core.values()) <= 150, (total and total[1], sum(core.values()))
    assert f"**{sum(core.values())} min**" in section
