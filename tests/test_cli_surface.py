"""The surface around the commands (issue 19): progress bars (tqdm.auto: stderr with an ETA on a terminal,
nothing on a pipe, a widget in a kernel; stdout keeps only results) and widget callbacks that report a
failure on one line instead of a traceback."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

import pytest

from quantlab import progress as qp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _on_a_terminal(code: str, columns: int = 100) -> str:
    """Run ``python -c code`` with stdin/stdout/stderr on a pseudo-terminal of ``columns``; its output."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: a sized terminal (tqdm draws nothing on a 0-column one), then the code
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        os.environ["PYTHONPATH"] = os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])
        os.execv(sys.executable, [sys.executable, "-c", code])
    out = b""
    while True:
        try:
            d = os.read(fd, 4096)
        except OSError:
            break
        if not d:
            break
        out += d
    os.waitpid(pid, 0)
    return out.decode("utf-8", "replace")


_JOB = (
    "import time\nfrom quantlab.progress import callback\n"
    "f = callback(True, 3, 'perplexity', 'chunk', value='PPL')\n"
    "for i in range(3):\n    time.sleep(0.05); f(i + 1, 3, 12.5)\nprint('result')\n"
)


def test_progress_bar_with_eta_on_a_terminal():
    out = _on_a_terminal(_JOB)
    frames = out.replace("\r\n", "\n").split("\r")
    # a frame past the start: percentage, steps, elapsed<ETA, rate, the value (tqdm skips frames under 0.1 s)
    assert any(
        "perplexity:" in f and "%|" in f and "/3 [00:00<00:0" in f and "chunk/s, PPL 12.5000" in f for f in frames
    ), out
    assert "3/3" in out and out.rstrip().endswith("result")


def test_progress_nothing_on_a_pipe_and_stdout_untouched():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    p = subprocess.run([sys.executable, "-c", _JOB], capture_output=True, env=env, timeout=120, check=False)
    assert p.returncode == 0 and p.stdout == b"result\n" and p.stderr == b""


def test_progress_argument_meanings():
    assert qp.callback(None, 3, "x") is None and qp.callback(False, 3, "x") is None
    seen = []
    f = qp.callback(lambda *a: seen.append(a), 3, "x")
    f(1, 3, 2.0)
    assert seen == [(1, 3, 2.0)]
    seen.clear()
    assert list(qp.steps(lambda i, n: seen.append((i, n)), "abc", "x")) == ["a", "b", "c"]
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_quantlab_bench_progress_goes_to_stderr():
    """`quantlab bench`'s progress used to be '\\r' lines on stdout, mixed into the table."""
    code = (
        "import sys\nfrom quantlab.cli import main\n"
        "sys.exit(main(['bench', 'formats', '--formats', 'Q8_0', '--size', '65536', '--no-reference']))\n"
    )
    out = _on_a_terminal(code.replace("main([", "main([") + "", columns=100)
    assert "bench formats" in out  # the bar, drawn on the terminal's stderr
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "quantlab.cli",
            "bench",
            "formats",
            "--formats",
            "Q8_0",
            "--size",
            "65536",
            "--no-reference",
        ],
        capture_output=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert p.returncode == 0 and b"\r" not in p.stdout and b"Q8_0" in p.stdout


def test_progress_is_a_widget_in_a_kernel():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from quantlab.progress import callback\nf = callback(True, 2, 'imatrix', 'chunk')\nf(1, 2); f(2, 2)"
        )
    ]
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join([ROOT, env_path])
    try:
        nbclient.NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    finally:
        os.environ["PYTHONPATH"] = env_path
    outs = nb.cells[0].outputs
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outs), outs
    assert not any(o.get("name") == "stderr" for o in outs), outs


# --------------------------------------------------------------------------- widget errors, one line


def test_widget_callback_error_is_one_line_in_the_app(monkeypatch):
    from quantlab.widgets import jpeg_quality
    from quantlab.widgets._common import App, contained

    class Boom(App):
        def __init__(self):
            import ipywidgets as W

            self.x = W.IntSlider(value=1)
            self.x.observe(self.update, names="value")
            self.box = W.VBox([self.x])

        @contained
        def update(self, change=None):
            if self.x.value == 3:
                raise ValueError("Unknown symbol: \\mathdefault\n" + "long detail " * 200)
            self.inner()

        @contained
        def inner(self):
            if self.x.value == 4:
                raise KeyError("inner")

    app = Boom()
    app.x.value = 3  # the setter does not raise
    assert isinstance(app.last_error, ValueError)
    assert app.error in app.box.children and app.error.layout.display is None
    text = app.error.value
    assert "ValueError: Unknown symbol: \\mathdefault long detail" in text and "\n" not in text
    assert len(text) < 400
    app.x.value = 4  # a failure in a nested callback is not hidden
    assert isinstance(app.last_error, KeyError) and "KeyError" in app.error.value
    app.x.value = 5
    assert app.last_error is None and app.error.value == "" and app.error.layout.display == "none"

    # a real app: its callbacks are contained too
    app = jpeg_quality.app()

    def broken(*a, **k):
        raise RuntimeError("kernel under construction")

    monkeypatch.setattr(jpeg_quality, "show_figure", broken)
    app.quality.value = 30
    assert isinstance(app.last_error, RuntimeError) and "RuntimeError: kernel under construction" in app.error.value
    monkeypatch.undo()
    app.quality.value = 60
    assert app.last_error is None and app.error.value == ""


def test_every_widget_callback_is_contained():
    """Each method an app hands to ``observe`` is wrapped (a new app or callback cannot forget it)."""
    import inspect
    import re

    from quantlab import widgets

    names = [m for m in os.listdir(os.path.dirname(widgets.__file__)) if m.endswith(".py") and m[0] != "_"]
    missing = []
    for fn in names:
        with open(os.path.join(os.path.dirname(widgets.__file__), fn)) as fh:
            src = fh.read()
        for meth in set(re.findall(r"\.observe\(self\.(\w+)", src)):
            mod = __import__(f"quantlab.widgets.{fn[:-3]}", fromlist=["x"])
            for _, cls in inspect.getmembers(mod, inspect.isclass):
                f = cls.__dict__.get(meth)
                if f is not None and not hasattr(f, "__wrapped__"):
                    missing.append(f"{fn}:{cls.__name__}.{meth}")
    assert not missing, missing
