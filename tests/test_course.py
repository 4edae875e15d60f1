"""The course as a course: exercises that check themselves, header cells, the syllabus, "Next:" links.

* every exercise key a notebook calls (``check("NN.k", ...)`` / ``answer("NN.k")``) is registered, in every
  part (part1: 00-04, part2: 05 on);
* ``check(key, answer(key))`` is right for every registered exercise, and a wrong answer is rejected;
* the answer cells are collapsed (source and output hidden) so the student predicts first;
* every notebook's header parses (notebooks that carry one; 00-04b must), and notebooks/README.md is what
  tools/make_syllabus.py writes from them (re-run the tool after merging notebooks);
* every notebook with a header ends with a "**Next:**" cell whose links exist.
"""

from __future__ import annotations

import importlib.util
import json
import math
import pathlib
import re
import sys

import numpy as np
import pytest

from quantlab.course import CourseError, answer, check, exercises

ROOT = pathlib.Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))
#: notebooks that must carry a header (this part of the course); others are checked once they have one
MUST_HAVE_HEADER = (
    "00_start_here.ipynb",
    "01_bits_and_floats.ipynb",
    "02_scales_and_zero_points.ipynb",
    "03_group_size.ipynb",
    "04_block_formats.ipynb",
    "04b_all_formats.ipynb",
)
CALL = re.compile(r"""\b(check|answer|reveal)\(\s*["']([^"']+)["']""")

_spec = importlib.util.spec_from_file_location("make_syllabus", ROOT / "tools" / "make_syllabus.py")
make_syllabus = importlib.util.module_from_spec(_spec)
sys.modules["make_syllabus"] = make_syllabus  # dataclasses look their module up there
_spec.loader.exec_module(make_syllabus)


def _cells(path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _src(cell) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def _keys_called(path) -> set[str]:
    return {m[1] for c in _cells(path) if c["cell_type"] == "code" for m in CALL.findall(_src(c))}


def _wrong(v):
    if isinstance(v, str):
        return v + " (not this)"
    if isinstance(v, (set, frozenset, tuple, list)):
        return list(v)[:-1] + ["(not this)"]
    return float(v) * 1.5 + 1.0


@pytest.mark.parametrize("key", sorted(exercises()))
def test_exercise_answer_checks_right_and_a_wrong_one_does_not(key, capsys):
    want = answer(key)
    assert check(key, want) is True
    assert check(key, _wrong(want)) is False
    assert check(key, ...) is False  # the notebook's placeholder: "not tried"
    out = capsys.readouterr().out
    assert f"✓ {key} right" in out and f"✗ {key} not yet" in out and "replace ... with your answer" in out
    if isinstance(want, float):
        assert math.isfinite(want)


def test_unknown_key_is_a_clear_error():
    with pytest.raises(CourseError, match=r"no exercise '99\.9'"):
        check("99.9", 1)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_key_a_notebook_calls_is_registered(path):
    known = exercises()
    missing = sorted(_keys_called(path) - set(known))
    assert not missing, f"{path.name} calls exercises that are not registered: {missing}"


def test_part1_exercises_are_all_used_in_their_notebooks():
    called = set().union(*(_keys_called(p) for p in NOTEBOOKS))
    part1 = [k for k, ex in exercises().items() if ex.solve.__module__.endswith(".part1")]
    assert len(part1) >= 12
    unused = sorted(set(part1) - called)
    assert not unused, f"part1 exercises no notebook asks: {unused}"
    for nb in ("00", "01", "02", "03", "04"):
        n = sum(k.startswith(nb + ".") for k in part1)
        assert 2 <= n <= 4, f"notebook {nb} has {n} exercises (2-4 per core notebook)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_answer_cells_are_collapsed(path):
    """An answer cell hides its source and shows the answer only in a closed <details> box (``reveal``):
    JupyterLab does not keep a cell's output collapsed once Run All has executed it."""
    for c in _cells(path):
        if c["cell_type"] == "code" and re.search(r"^\s*(answer|reveal)\(", _src(c), re.M):
            meta = c.get("metadata", {}).get("jupyter", {})
            assert meta.get("source_hidden") and "reveal(" in _src(c), (path.name, _src(c)[:60])


def test_reveal_is_a_closed_box():
    from quantlab.course import reveal

    r = reveal("00.3")
    html = r._repr_html_()
    assert html.startswith("<details class='ql-answer'>") and " open" not in html and "7.16" in html
    assert repr(r).startswith("00.3: 7.16")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_header_cell(path):
    text = make_syllabus.first_markdown(path)
    if path.name not in MUST_HAVE_HEADER and "**You will:**" not in text:
        pytest.skip(f"{path.name} has no header yet")
    h = make_syllabus.parse_header(text, path.name)
    assert path.name.startswith(h.nn + "_"), (h.nn, path.name)
    assert all(o[:1].isupper() for o in h.objectives)
    if path.name in MUST_HAVE_HEADER:
        assert h.compute_full_s is not None and h.compute_quick_s is not None, f"{path.name}: compute not measured"
        # the cell after the header draws the opening picture
        code = [c for c in _cells(path) if c["cell_type"] == "code"]
        assert "plt.show()" in _src(code[0]) or "plot_" in _src(code[0]), path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_next_links(path):
    if path.name not in MUST_HAVE_HEADER and "**You will:**" not in make_syllabus.first_markdown(path):
        pytest.skip(f"{path.name} has no header yet")
    last = _cells(path)[-1]
    assert last["cell_type"] == "markdown" and _src(last).startswith("**Next:**"), path.name
    links = re.findall(r"\]\(([^)#]+)", _src(last))
    assert links, path.name
    for target in links:
        assert (NB_DIR / target).exists() or target == "README.md", f"{path.name}: broken link {target}"


def test_syllabus_is_up_to_date():
    readme = NB_DIR / "README.md"
    assert readme.exists(), "run tools/make_syllabus.py"
    assert readme.read_text(encoding="utf-8") == make_syllabus.build(), (
        "notebooks/README.md is out of date: run tools/make_syllabus.py"
    )


def test_syllabus_totals_and_bad_headers():
    good = (
        "# 07 · A title\nWhat it is.\n\n**You will:**\n- Do a\n- Do b\n- Do c\n**Needs:** 00\n"
        "**Time:** ~12 min (compute: 30 s full, 5 s QUICK; here)\n**Path:** core (imatrix part)"
    )
    h = make_syllabus.parse_header(good, "07_x.ipynb")
    assert (h.nn, h.minutes, h.compute_full_s, h.compute_quick_s, h.path, h.path_note) == (
        "07",
        12,
        30.0,
        5.0,
        "core",
        "imatrix part",
    )
    h2 = make_syllabus.parse_header(good.replace("07", "08").replace("~12", "~8").replace("30 s", "20 s"), "08_y.ipynb")
    text = make_syllabus.render([h, h2], [("09_z.ipynb", "no header")])
    assert "| | **total** | | **20 min** | **50 s (0.8 min)** | |" in text and "09_z.ipynb" in text
    # a Markdown line break (trailing backslash) and blank lines do not change what is parsed
    h3 = make_syllabus.parse_header(
        good.replace("- Do c\n", "- Do c\n\n")
        .replace("**Needs:** 00", "**Needs:** 00\\")
        .replace("QUICK; here)", "QUICK; here)\\"),
        "07_x.ipynb",
    )
    assert (h3.needs, h3.compute_quick_s, h3.objectives) == ("00", 5.0, ["Do a", "Do b", "Do c"])
    with pytest.raises(make_syllabus.HeaderError, match=r"bad\.ipynb: 2 objectives"):
        make_syllabus.parse_header(good.replace("- Do c\n", ""), "bad.ipynb")
    with pytest.raises(make_syllabus.HeaderError, match="does not start with one of"):
        make_syllabus.parse_header(good.replace("**Path:** core", "**Path:** optional"), "bad.ipynb")


def test_block_field_layouts_tile_their_blocks():
    """block_inspector.FIELD_LAYOUT (the hex colouring of 04's inspector): every field in order, no gap, no
    overlap, ending at the registry's bytes per block; and each byte gets exactly one field."""
    from quantlab.formats import get
    from quantlab.widgets import block_inspector as bi

    assert {"Q4_0", "Q8_0", "Q4_K", "Q6_K", "IQ4_NL", "IQ2_XXS"} <= set(bi.FIELD_LAYOUT)
    for name, lay in bi.FIELD_LAYOUT.items():
        assert lay[0][1] == 0 and lay[-1][2] == get(name).type_size, name
        assert all(a[2] == b[1] and a[1] < a[2] for a, b in zip(lay, lay[1:])), name
        assert len(bi.field_of_bytes(name)) == get(name).type_size
    html = bi.hex_html(np.arange(144, dtype=np.uint8), "Q4_K")
    assert html.count("border-bottom:3px solid") == 144 + 4 and "qs</b> bytes 16-143" in html
    assert "ql-hex" in bi.hex_html(np.zeros(10, np.uint8), "Q4_K")  # a wrong length falls back to plain hex


def test_size_chart_labels_are_plain_and_readable():
    """00's bar chart: device lines at 8/16/24/80 GB, plain tick labels, value labels without e-notation."""
    import matplotlib

    matplotlib.use("Agg")
    from quantlab.widgets import size_calculator as sc

    c = sc.app(params_billion=sc.PRESETS["Llama-3.1-405B (405.9B)"])
    texts = [t.get_text() for t in c.ax.texts]
    assert [t for t in texts if t.endswith(" GB") and t[:-3].replace(",", "").replace(".", "").isdigit()]
    assert not [t for t in texts if "e+" in t], texts
    assert {f"{d} GB" for d in sc.DEVICES_GB} <= set(texts)
    assert min(t.get_fontsize() for t in c.ax.texts) >= 10
