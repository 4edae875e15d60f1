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
