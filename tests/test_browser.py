"""The notebooks in a real JupyterLab, driven by Debian's chromium through Playwright (marker ``browser``).

The test starts JupyterLab on 127.0.0.1 over a temporary copy of notebooks/ (autosave off, so nothing is
written back into the repository), opens a notebook, runs all cells from the Run menu, then moves a slider /
changes a dropdown and checks that the rendered output changed. Screenshots go to test-artifacts/ (or
$SHOT_DIR).

Without chromium or the playwright package the tests skip — except in CI (CI=true), where they FAIL.
Never run `playwright install`: the distro chromium at /usr/bin/chromium is used.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytestmark = pytest.mark.browser

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("QUANTLAB_CHROMIUM", "/usr/bin/chromium")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SHOT_DIR = pathlib.Path(os.environ.get("SHOT_DIR", ROOT / "test-artifacts"))
TOKEN = "quantlab-browser-test"
CHROME_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/docmanager-extension:plugin": {"autosave": False},
    "@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"},
}
RUN_ALL_TIMEOUT_MS = 300_000


def _missing(why: str):
    if IN_CI:
        pytest.fail(f"browser test cannot run in CI: {why}")
    pytest.skip(why)


def _require_browser():
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        _missing(f"{CHROMIUM} not found (apt-get install chromium, or `make browser`)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("the playwright Python package is not installed (pip install playwright; never `playwright install`)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server over a temporary copy of notebooks/; yields (base_url, work_dir)."""
    _require_browser()
    work = tmp_path_factory.mktemp("lab")
    shutil.copytree(ROOT / "notebooks", work / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    cfg = work / "jupyter_config"
    (cfg / "labconfig").mkdir(parents=True)
    (cfg / "labconfig" / "default_setting_overrides.json").write_text(json.dumps(LAB_SETTINGS))
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)
    env["QUANTLAB_QUICK"] = "1"  # notebook 07 takes its short path
    env.update(
        {
            "JUPYTER_CONFIG_DIR": str(cfg),
            "JUPYTER_RUNTIME_DIR": str(work / "runtime"),
            "IPYTHONDIR": str(work / "ipython"),
            "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        }
    )
    port = _free_port()
    log = open(work / "lab.log", "wb")  # noqa: SIM115 (the server writes it until teardown)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.token={TOKEN}",
            f"--ServerApp.root_dir={work}",
            "--LabApp.news_url=None",
        ],
        cwd=work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"jupyter lab exited ({proc.returncode}):\n"
                    + (work / "lab.log").read_text(errors="replace")[-3000:]
                )
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("jupyter lab did not answer within 120 s")
            time.sleep(0.5)
        yield url, work
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1500, "height": 1000})
    pg = ctx.new_page()
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    yield pg
    ctx.close()


def _open_and_run_all(page, url: str, name: str, timeout_ms: int = RUN_ALL_TIMEOUT_MS):
    from playwright.sync_api import expect

    page.goto(f"{url}/lab/tree/notebooks/{name}?token={TOKEN}&reset")
    expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle", timeout=120_000)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    # the last code cell whose input is shown (a cell with hidden source has an empty placeholder prompt)
    last_prompt = page.locator(".jp-Notebook .jp-CodeCell .jp-InputPrompt:not(.jp-Placeholder-prompt)").last
    expect(last_prompt).to_have_text(re.compile(r"\[\d+\]:"), timeout=timeout_ms)
    expect(page.locator(".jp-Notebook .jp-InputPrompt", has_text="[*]")).to_have_count(0, timeout=60_000)
    errors = page.locator(
        ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']", has_text="Traceback"
    )
    assert errors.count() == 0, errors.first.inner_text()[:2000]
    assert page.locator(".jp-OutputArea-output", has_text="Error:").filter(has_text="Traceback").count() == 0


def _shot(page, name: str):
    from playwright.sync_api import expect

    expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle", timeout=60_000)  # redraws finished
    SHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOT_DIR / name))


def _exercise(page, key: str, typed: str, expect_text: str):
    """Type ``typed`` into the exercise cell of ``key`` (the cell calling check("key", ...)) in the real editor,
    run it with Shift+Enter, and wait for the helper's line (✓ / ✗) in that cell's output."""
    from playwright.sync_api import expect

    cell = page.locator(".jp-CodeCell").filter(has=page.locator(".cm-content", has_text=f'check("{key}"'))
    expect(cell).to_have_count(1)
    cell.scroll_into_view_if_needed()
    editor = cell.locator(".cm-content")
    editor.click()
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type(typed)
    page.keyboard.press("Shift+Enter")
    expect(cell.locator(".jp-OutputArea-output", has_text=expect_text)).to_have_count(1, timeout=60_000)
    return cell


def _answers_collapsed(page, n_min: int):
    """The answer cells show collapsed in Lab after Run All: source hidden (a placeholder), the answer in a
    closed <details> box."""
    from playwright.sync_api import expect

    boxes = page.locator(".jp-OutputArea-output details.ql-answer")
    expect(boxes.first).to_be_attached(timeout=30_000)
    n = boxes.count()
    assert n >= n_min and page.locator(".jp-InputPlaceholder").count() >= n
    assert page.locator(".jp-OutputArea-output details.ql-answer[open]").count() == 0
    assert not boxes.first.locator("b").is_visible()  # the answer itself is not shown


def test_start_here_size_calculator(lab, page):
    from playwright.sync_api import expect

    url, _ = lab
    _open_and_run_all(page, url, "00_start_here.ipynb")
    summary = page.locator(".ql-size-summary")
    expect(summary).to_be_visible(timeout=30_000)
    # the notebook leaves the calculator as it opens: Llama-2-7B in Q4_0, with its Q4_K_M file line
    expect(summary).to_contain_text("in Q4_0")
    before = summary.inner_text()
    file_summary = page.locator(".ql-file-summary")
    expect(file_summary).to_contain_text("Q4_K_M file: 4.844 bits per weight")
    chart = page.locator(".widget-output img").first
    expect(chart).to_be_visible(timeout=30_000)
    chart_before = chart.get_attribute("src")
    summary.scroll_into_view_if_needed()
    _shot(page, "00_start_here_before.png")
    # the format dropdown (the only one listing F64; the file-type dropdown lists Q2_K too)
    fmt = page.locator(".widget-dropdown select").filter(has=page.locator("option", has_text="F64"))
    fmt.select_option(label="Q2_K")
    expect(summary).to_contain_text("in Q2_K", timeout=30_000)
    expect(summary).to_contain_text("2.625 bits per weight")
    assert summary.inner_text() != before
    expect(chart).not_to_have_attribute("src", chart_before, timeout=30_000)  # the bar chart follows
    # the model dropdown too: the parameter count follows the preset
    preset = page.locator(".widget-dropdown select").filter(has=page.locator("option", has_text="Llama-2-13B"))
    preset.select_option(label="Llama-2-13B (13.0B)")
    expect(summary).to_contain_text("13.0159 B parameters", timeout=30_000)
    expect(file_summary).to_contain_text("Q4_K_M file", timeout=30_000)
    expect(file_summary).not_to_contain_text("4.844 bits per weight")
    summary.scroll_into_view_if_needed()
    chart.evaluate("i => i.decode()")
    _shot(page, "00_start_here_after.png")
    # the exercise helper: a wrong prediction, then the right one, typed into the real editor
    _answers_collapsed(page, 3)
    _exercise(page, "00.1", 'check("00.1", 350);', "✗ 00.1 not yet")
    _exercise(page, "00.1", 'check("00.1", 700);', "✓ 00.1 right")
    cell = _exercise(page, "00.3", 'check("00.3", 7.16);', "✓ 00.3 right")
    cell.scroll_into_view_if_needed()
    _shot(page, "00_start_here_exercise.png")
    assert not page.errors, page.errors


def test_scales_exercise_helper(lab, page):
    """Notebook 02: the exercise cells answer ✗ with a hint, then ✓, in the real JupyterLab."""
    from playwright.sync_api import expect

    url, _ = lab
    _open_and_run_all(page, url, "02_scales_and_zero_points.ipynb")
    _answers_collapsed(page, 3)
    # before the student types anything, the placeholder says what to do (Run All ran it)
    cell = page.locator(".jp-CodeCell").filter(has=page.locator(".cm-content", has_text='check("02.3"'))
    expect(cell.locator(".jp-OutputArea-output", has_text="replace ... with your answer")).to_have_count(1)
    _exercise(page, "02.3", 'check("02.3", 6.02);', "Hint: The step is max|x| / qmax")
    cell = _exercise(page, "02.3", 'check("02.3", 6.3);', "✓ 02.3 right")
    _shot(page, "02_scales_exercise.png")
    # the closed answer box below it opens on click and shows the computed answer
    box = page.locator("details.ql-answer", has_text="answer to 02.3")
    box.scroll_into_view_if_needed()
    box.locator("summary").click()
    expect(box.locator("b")).to_be_visible()
    expect(box.locator("b")).to_have_text("6.294 dB")
    _shot(page, "02_scales_answer_open.png")
    assert not page.errors, page.errors


#: notebooks 00-04b and how many figures each shows at least (opening picture + widget plots)
COURSE_A = {
    "00_start_here.ipynb": 2,
    "01_bits_and_floats.ipynb": 2,
    "02_scales_and_zero_points.ipynb": 2,
    "03_group_size.ipynb": 2,
    "04_block_formats.ipynb": 2,
    "04b_all_formats.ipynb": 1,
}


@pytest.mark.parametrize("name", list(COURSE_A))
def test_course_figures_render(lab, page, name):
    """Every figure of notebooks 00-04b renders in Lab; each is saved as a screenshot to look at
    (test-artifacts/figures/<notebook>_<n>.png)."""
    from playwright.sync_api import expect

    url, _ = lab
    _open_and_run_all(page, url, name)
    imgs = page.locator(".jp-OutputArea-output img")
    expect(imgs.first).to_be_visible(timeout=60_000)
    n = imgs.count()
    assert n >= COURSE_A[name], f"{name}: {n} figures"
    out = SHOT_DIR / "figures"
    out.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = imgs.nth(i)
        img.scroll_into_view_if_needed()
        img.evaluate("i => i.decode()")
        assert img.evaluate("i => i.naturalWidth") > 300, f"{name}: figure {i} did not load"
        img.screenshot(path=str(out / f"{name[:3].rstrip('_')}_{i}.png"))
    assert not page.errors, page.errors


def test_block_formats_inspector(lab, page):
    from playwright.sync_api import expect

    url, _ = lab
    _open_and_run_all(page, url, "04_block_formats.ipynb")
    header = page.locator(".ql-head")
    # the widget's hex (the first .ql-hex on the page; the notebook shows a Q4_K block's hex further down)
    expect(page.locator(".ql-hex-legend").first).to_contain_text("scales bytes 4-15")  # Q4_K, coloured by field
    expect(header).to_be_visible(timeout=30_000)
    fmt = page.locator(".widget-dropdown select").filter(has=page.locator("option", has_text="Q8_0"))
    fmt.select_option(label="Q8_0")
    expect(header).to_contain_text("Q8_0", timeout=60_000)
    expect(header).to_contain_text("34 bytes")
    hexbox = page.locator(".ql-hex").first
    expect(hexbox).to_be_visible()
    before_hex = hexbox.inner_text()
    img = page.locator(".widget-output img").last
    expect(img).to_be_visible(timeout=30_000)
    before_img = img.get_attribute("src")
    handle = page.locator(".widget-slider .noUi-handle").first
    handle.scroll_into_view_if_needed()
    _shot(page, "04_block_formats_before.png")
    handle.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    readout = page.locator(".widget-slider .widget-readout").first
    expect(readout).to_have_text(re.compile(r"^\s*[1-9]\d*\s*$"), timeout=30_000)
    expect(header).to_contain_text(f"block {readout.inner_text().strip()} of", timeout=60_000)
    expect(hexbox).not_to_have_text(before_hex, timeout=30_000)
    expect(img).not_to_have_attribute("src", before_img, timeout=30_000)
    expect(page.locator(".ql-source")).to_contain_text("def quantize_q8_0")
    _shot(page, "04_block_formats_after.png")
    assert not page.errors, page.errors


def test_quantize_a_real_model_ladder(lab, page):
    """Notebook 07 in QUICK mode (whole-model quantization included): change the format and the layer of
    the tensor-error app and check that its summary and its histogram follow."""
    from playwright.sync_api import expect

    url, _ = lab
    _open_and_run_all(page, url, "07_quantize_a_real_model.ipynb", timeout_ms=900_000)
    summary = page.locator(".ql-ladder-summary")
    expect(summary).to_be_visible(timeout=30_000)
    # the notebook leaves the app as it opens (the widget checks run from tests/test_notebooks.py's PROBES):
    # the first layer's attn_q in Q4_K
    expect(summary).to_contain_text("attn_q.weight")
    expect(summary).to_contain_text("in Q4_K")
    img = page.locator(".widget-output img").last
    expect(img).to_be_visible(timeout=30_000)
    before_img = img.get_attribute("src")
    summary.scroll_into_view_if_needed()
    _shot(page, "07_quantize_a_real_model_before.png")
    fmt = page.locator(".widget-dropdown select").filter(has=page.locator("option", has_text="IQ4_XS"))
    fmt.select_option(label="Q4_0")
    expect(summary).to_contain_text("in Q4_0", timeout=60_000)
    expect(img).not_to_have_attribute("src", before_img, timeout=60_000)
    before_img = img.get_attribute("src")
    fmt.select_option(label="Q4_K")
    expect(summary).to_contain_text("in Q4_K", timeout=60_000)
    expect(summary).to_contain_text("stored as Q5_0")  # rows of 576: llama.cpp's fallback
    expect(img).not_to_have_attribute("src", before_img, timeout=60_000)  # each change redraws the plot
    before_img = img.get_attribute("src")
    kind = page.locator(".widget-dropdown select").filter(has=page.locator("option", has_text="ffn_down"))
    kind.select_option(label="ffn_down")
    expect(summary).to_contain_text("ffn_down.weight", timeout=60_000)
    expect(summary).not_to_contain_text("stored as", timeout=60_000)
    expect(img).not_to_have_attribute("src", before_img, timeout=60_000)
    before_img = img.get_attribute("src")
    handle = page.locator(".widget-slider .noUi-handle").last
    handle.focus()
    page.keyboard.press("ArrowRight")  # the app opens at layer 0: one layer up
    readout = page.locator(".widget-slider .widget-readout").last
    expect(readout).to_have_text(re.compile(r"^\s*\d+\s*$"), timeout=30_000)
    expect(summary).to_contain_text(f"blk.{readout.inner_text().strip()}.ffn_down.weight", timeout=60_000)
    expect(img).not_to_have_attribute("src", before_img, timeout=60_000)  # redrawn for the new layer
    summary.scroll_into_view_if_needed()
    img.evaluate("i => i.decode()")  # the new PNG is painted before the screenshot
    _shot(page, "07_quantize_a_real_model_after.png")
    assert not page.errors, page.errors
