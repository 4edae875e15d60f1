"""The README's `make lab`, server part (`make lab-server`: everything after the set-up): it starts as
whoever runs it — root included, with the one line saying so —, prints the URL to open, and that URL
serves JupyterLab (`/lab`, 200)."""

from __future__ import annotations

import os
import pathlib
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_make_lab_server_prints_a_url_that_serves_jupyterlab(tmp_path):
    port = _free_port()
    env = dict(
        os.environ,
        BROWSER="true",  # webbrowser would "open" the URL with /bin/true
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
    )
    log = tmp_path / "lab.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            ["make", "--no-print-directory", "-s", "lab-server", f"LAB_PORT={port}"],
            cwd=ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = status = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and status != 200:
            assert proc.poll() is None, f"make lab-server exited {proc.returncode}:\n{log.read_text()}"
            m = re.search(r"^quantlab: open (http://\S+/lab\?token=\w+)$", log.read_text(), re.M)
            if m:
                url = m.group(1)
                try:
                    with urllib.request.urlopen(url, timeout=5) as r:
                        status = r.status
                        body = r.read().decode()
                except OSError:
                    pass
            time.sleep(0.5)
        text = log.read_text()
        assert status == 200, f"no 200 from {url} within 120 s:\n{text}"
        assert "JupyterLab" in body
        assert url == f"http://127.0.0.1:{port}" + url.split(str(port), 1)[1]
        assert ("running as root: passing --allow-root to JupyterLab" in text) == (os.geteuid() == 0)
        # the token matters: without it the server's API refuses
        assert _status(url.split("?")[0].replace("/lab", "/api/sessions")) == 403
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
