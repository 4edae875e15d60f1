"""tests/nbrun.py's client: the Output-widget state still reaches the kernel, and never through the shell
socket that the client polls for execute replies (the cause of the headless hang, nbclient#312)."""

from __future__ import annotations

import os

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_output_widget_sync_goes_around_the_polled_shell_socket(monkeypatch):
    from .nbrun import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(src)
        for src in (
            "import ipywidgets as W\nfrom IPython.display import display, clear_output\nout = W.Output(); display(out)",
            *[f"with out:\n    clear_output(wait=True)\n    print('step {i}')" for i in range(5)],
            "assert [o['text'] for o in out.outputs] == ['step 4\\n'], out.outputs\nprint('synced')",
        )
    ]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    client = NotebookClient(nb, timeout=120, kernel_name="python3")
    sent_on_shell = _run_recording_shell(client, nb, monkeypatch)
    assert "synced" in "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    # only the client's requests used the polled socket; the widget's comm_msg went on the comm socket
    assert sent_on_shell == ["execute_request"] * len(nb.cells), sent_on_shell


def test_show_figure_needs_no_front_end_sync_even_with_stock_nbclient(monkeypatch):
    """quantlab's apps draw through show_figure: the figure is set as the Output widget's state by the kernel,
    so even nbclient's own client (nbconvert, papermill) never sends anything back on the shell socket."""
    import nbclient

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(src)
        for src in (
            "%matplotlib inline\nimport ipywidgets as W\nfrom IPython.display import display\n"
            "from quantlab.widgets._common import new_figure, show_figure\nout = W.Output(); display(out)\n"
            "fig, ax = new_figure(3, 2)",
            *[
                f"ax.clear(); ax.plot([0, {i}]); show_figure(out, fig)\n"
                f"assert len(out.outputs) == 1 and 'image/png' in out.outputs[0]['data']"
                for i in range(4)
            ],
        )
    ]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    monkeypatch.delenv("MPLBACKEND", raising=False)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3")
    sent_on_shell = _run_recording_shell(client, nb, monkeypatch)
    assert sent_on_shell == ["execute_request"] * len(nb.cells), sent_on_shell


def _run_recording_shell(client, nb, monkeypatch) -> list:
    """Run every cell of ``nb`` with ``client``; the message types the client sent on the shell socket."""
    sent_on_shell = []
    with client.setup_kernel():
        shell = client.kc.shell_channel
        send = shell.send
        monkeypatch.setattr(shell, "send", lambda msg: (sent_on_shell.append(msg["msg_type"]), send(msg))[1])
        for i, cell in enumerate(nb.cells):
            client.execute_cell(cell, i)
    return sent_on_shell
