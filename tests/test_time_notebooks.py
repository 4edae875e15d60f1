"""tools/time_notebooks.py's header writer: the minutes are made from the notebook (words, code cells,
exercises, compute) and the line it writes is what tools/make_syllabus.py parses. No notebook is run here."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest

nbformat = pytest.importorskip("nbformat")

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


tn = _load("time_notebooks")
ms = _load("make_syllabus")

HEADER = (
    "# 07 · A title\nWhat it is.\n\n**You will:**\n- Do a\n- Do b\n- Do c\n\n**Needs:** 00\\\n"
    "**Time:** ~12 min (compute: 30 s full, 5 s QUICK; an estimate)\\\n**Path:** core"
)


def _notebook(path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(HEADER),
        nbformat.v4.new_code_cell("import numpy as np"),
        nbformat.v4.new_markdown_cell(" ".join(["word"] * 250)),  # 250 words
        nbformat.v4.new_code_cell('my_answer = ...\ncheck("07.1", my_answer)'),
        nbformat.v4.new_code_cell('reveal("07.1")'),
        nbformat.v4.new_code_cell("print(1)"),
    ]
    nbformat.write(nb, path)
    return path


def _result(mode, cpu, wall=50.0):
    return {"mode": mode, "cpu_seconds": cpu, "total_seconds": wall, "load_before": 3.0, "load_after": 5.0}


def test_minutes_are_made_from_the_notebook(tmp_path):
    nb = nbformat.read(_notebook(tmp_path / "07_x.ipynb"), as_version=4)
    p = tn.minutes_parts(nb, 90.0)
    # 250 words at 100/min + 2 code cells (the exercise's two cells are not counted twice) x 0.5 + 1 exercise x 3
    # + 1.5 min of compute = 2.5 + 1 + 3 + 1.5
    assert (p["words"], p["cells"], p["exercises"]) == (250, 2, 1)
    assert p["minutes"] == 8


def test_write_header_full_then_quick_then_refresh(tmp_path):
    path = _notebook(tmp_path / "07_x.ipynb")
    line = tn.write_header(path, _result("full", 90.4))
    assert line.startswith(
        "**Time:** ~8 min (compute: 90 s full, 5 s QUICK, kernel CPU s; full run 50 s wall at load 4"
    )
    assert line.endswith("\\")  # the Markdown line break the header had is kept
    h = ms.parse_header(ms.first_markdown(path), path.name)
    assert (h.minutes, h.compute_full_s, h.compute_quick_s) == (8, 90.0, 5.0)
    tn.write_header(path, _result("quick", 20.2))  # replaces the QUICK figure only
    h = ms.parse_header(ms.first_markdown(path), path.name)
    assert (h.minutes, h.compute_full_s, h.compute_quick_s) == (8, 90.0, 20.0)
    assert "full run 50 s wall at load 4" in h.time
    nb = nbformat.read(path, as_version=4)
    nb.cells[2].source = " ".join(["word"] * 850)  # six more minutes of reading
    nbformat.write(nb, path)
    tn.write_header(path, None)  # --refresh: same figures, minutes made again
    h = ms.parse_header(ms.first_markdown(path), path.name)
    assert (h.minutes, h.compute_full_s, h.compute_quick_s) == (14, 90.0, 20.0)


def test_quick_before_any_full_run_is_refused(tmp_path):
    path = _notebook(tmp_path / "07_x.ipynb")
    nb = nbformat.read(path, as_version=4)
    nb.cells[0].source = nb.cells[0].source.replace("compute: 30 s full, 5 s QUICK", "compute: about 2 min")
    nbformat.write(nb, path)
    with pytest.raises(ValueError, match=r"07_x\.ipynb: no full-run figure yet"):
        tn.write_header(path, _result("quick", 20.0))


def test_core_part_minutes_leave_the_extension_sections_out(tmp_path):
    """A heading saying "extension" opens a section that runs to the next heading of the same or a higher level
    (a sub-heading stays inside) or to the closing **Next:** cell; the core part's minutes are made from the
    other cells, written into the **Time:** line, and the syllabus's core table counts them."""
    path = _notebook(tmp_path / "07_x.ipynb")  # 8 min, as above
    nb = nbformat.read(path, as_version=4)
    nb.cells += [
        nbformat.v4.new_markdown_cell("## 2. (extension) An optimizer\n" + " ".join(["word"] * 300)),
        nbformat.v4.new_code_cell("print(2)"),
        nbformat.v4.new_markdown_cell("### A sub-section, still the extension\n" + " ".join(["word"] * 98)),
        nbformat.v4.new_code_cell('my_answer = ...\ncheck("07.2", my_answer)'),
        nbformat.v4.new_markdown_cell("## 3. Back on the core path\n" + " ".join(["word"] * 94)),
        nbformat.v4.new_code_cell("print(3)"),
        nbformat.v4.new_markdown_cell("**Next:** [syllabus](README.md)"),
    ]
    nbformat.write(nb, path)
    nb = nbformat.read(path, as_version=4)
    assert tn.extension_cells(nb) == {6, 7, 8, 9}
    full, core = tn.minutes_parts(nb, 90.0), tn.minutes_parts(tn.core_cells(nb), 90.0)
    # words, headings included: 250 + 305 + 104 + 101 + 2 (the Next cell) = 762 -> 7.62, 4 cells x 0.5,
    # 2 exercises x 3, compute 1.5 -> 17.12
    assert (full["words"], full["cells"], full["exercises"], full["minutes"]) == (762, 4, 2, 17)
    # core: 250 + 101 + 2 words -> 3.53, 3 cells x 0.5, 1 exercise x 3, all of the compute 1.5 -> 9.53
    assert (core["words"], core["cells"], core["exercises"], core["minutes"]) == (353, 3, 1, 10)
    line = tn.write_header(path, _result("full", 90.0))
    assert line.startswith("**Time:** ~17 min (") and "; core part ~10 min = 353 words at 100/min 3.5 + 3 cells" in line
    h = ms.parse_header(ms.first_markdown(path), path.name)
    assert (h.minutes, h.core_minutes, h.path_minutes, h.compute_full_s) == (17, 10, 10, 90.0)
    text = ms.render([h], [])
    assert "| 1 | [07 · A title](07_x.ipynb) | 00 | 10 | 90 s | whole notebook, extensions included: 17 min |" in text
    assert "| | **total** | | **10 min** |" in text
    plain = ms.parse_header(ms.first_markdown(_notebook(tmp_path / "08_y.ipynb")).replace("07", "08"), "08_y.ipynb")
    assert (plain.core_minutes, plain.path_minutes) == (None, 12)  # no extension section: the whole notebook
