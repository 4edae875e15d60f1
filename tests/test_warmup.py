"""python -m quantlab.warmup: the job list, one line per job, the exit status; and the numba cache every
entry point uses (quantlab/_cache.py), tested from fresh processes that have no NUMBA_CACHE_DIR."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from quantlab import _cache, warmup
from quantlab.formats.registry import all_formats
from quantlab.kernels import matmul as mm

ROOT = pathlib.Path(__file__).resolve().parent.parent

# F16 is the cheapest kernel pair to compile (about a second), enough to see a cache hit or a miss.
PROBE = """
import json, numpy as np, numba, quantlab
from quantlab.warmup import CompileCounter
c = CompileCounter()
q = quantlab.quantize(np.ones((2, 256), np.float32), "F16", threads=1)
quantlab.dequantize(q, "F16", threads=1)
print(json.dumps({"cache_dir": numba.config.CACHE_DIR, "compiles": c.count}))
"""


def test_jobs_cover_every_fast_kernel_the_api_can_call():
    jobs = warmup.jobs()
    fmts = {n for k, n in jobs if k == "format"}
    assert fmts == {f.name for f in all_formats() if f.has_impl("fast", "quantize") or f.has_impl("fast", "dequantize")}
    assert {n for k, n in jobs if k == "matmul"} == set(mm.INT_KERNELS)
    assert ("model", warmup.MODEL_JOB) in jobs
    assert len(jobs) == len(set(jobs))


def test_one_line_per_job_and_exit_status(capsys, monkeypatch):
    assert warmup.main(["--only", "Q8_0,matmul Q8_0", "--jobs", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [re.fullmatch(r"(.*\S) +\d+\.\d s", line).group(1) for line in out[:2]] == ["matmul Q8_0", "Q8_0"]
    assert re.fullmatch(r"total +\d+\.\d s \(2 jobs, 1 processes\)", out[2]) and len(out) == 3

    monkeypatch.setattr(warmup, "jobs", lambda: [("format", "Q8_0"), ("format", "NO_SUCH_FORMAT")])
    assert warmup.main(["--jobs", "1"]) == 1
    cap = capsys.readouterr()
    assert "NO_SUCH_FORMAT" in cap.out and "FAILED" in cap.out
    assert "NO_SUCH_FORMAT failed" in cap.err

    assert warmup.main(["--only", "not a job"]) == 2


def _env(home, **extra):
    """A child's environment as a user who never heard of NUMBA_CACHE_DIR: HOME=home, no XDG cache."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "QUANTLAB_SHARED_NUMBA_CACHE")
    }
    env.update(HOME=str(home), PYTHONPATH=str(ROOT), **extra)
    return env


def _probe(env, user=None):
    cmd = [sys.executable, "-c", PROBE]
    if user:  # run as another (unprivileged) user: setpriv is util-linux, on every Debian
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] + cmd
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=env["HOME"])
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


SRC = _cache.SRC_PREFIX + _cache.source_fingerprint()  # the kernels' subdirectory of a cache


def test_the_kernel_cache_is_keyed_by_every_numba_source():
    """numba checks only a kernel's own file for staleness; a helper inlined from another module would be
    used stale. The cache subdirectory is named by a hash of every module numba compiles: none may be
    missing from it, and a change to any of them names a new one."""
    pkg = _cache.PACKAGE
    covered = {p for pattern in _cache.NUMBA_SOURCES for p in pkg.glob(pattern)}
    uses_numba = {
        p for p in pkg.rglob("*.py") if re.search(r"^\s*(from|import) (numba|llvmlite)\b", p.read_text(), re.M)
    }
    # import numba's machinery, compile nothing of their own: warmup.py counts compiles, recipes/cli.py
    # loads cached kernels for `quantlab quantize` (quick_numba_start)
    no_kernels = {pkg / "warmup.py", pkg / "recipes" / "cli.py"}
    assert uses_numba - covered - no_kernels == set() and uses_numba
    base = _cache.source_fingerprint()
    src = pkg / "kernels" / "simd.py"
    text = src.read_bytes()
    try:
        src.write_bytes(text + b"\n")
        assert _cache.source_fingerprint() != base
    finally:
        src.write_bytes(text)
    assert _cache.source_fingerprint() == base


def test_cli_command_is_read_from_the_interpreter_s_command_line():
    """The start-up hint for `quantlab quantize` (OpenBLAS on one thread, set before numpy loads): the
    command as the console script or `python -m quantlab.cli` runs it, and nothing for other programs."""
    cmd = _cache.cli_command
    assert cmd(["/v/bin/python", "/v/bin/quantlab", "quantize", "in", "out", "Q8_0"]) == "quantize"
    assert cmd(["/v/bin/python", "/v/bin/quantlab", "--debug", "quantize", "in"]) == "quantize"
    assert cmd(["/v/bin/python", "-m", "quantlab.cli", "quantize", "in"]) == "quantize"
    assert cmd(["/v/bin/python", "-I", "-m", "quantlab.cli", "eval", "m"]) == "eval"
    assert cmd(["/v/bin/python", "-m", "pytest", "quantize"]) is None
    assert cmd(["/v/bin/python", "-c", "import quantlab", "quantize"]) is None
    assert cmd(["/v/bin/python", "tools/quantize_vs_llama.py", "quantize"]) is None
    assert cmd(["/v/bin/python"]) is None and cmd([]) is None
    assert "quantize" in _cache.NO_BLAS_COMMANDS and "eval" not in _cache.NO_BLAS_COMMANDS


def test_a_process_without_numba_cache_dir_uses_the_per_user_cache_and_finds_it_warm(tmp_path):
    default = tmp_path / ".cache" / "quantlab" / "numba" / SRC
    first = _probe(_env(tmp_path))
    assert first["cache_dir"] == str(default)
    assert list(default.rglob("*.nbi")) and list(default.rglob("*.nbc"))  # numba wrote its cache there
    second = _probe(_env(tmp_path))
    assert second == {"cache_dir": str(default), "compiles": 0}  # and a new process loads it
    # the user's choice still wins
    mine = str(tmp_path / "mine" / SRC)
    assert _probe(_env(tmp_path, NUMBA_CACHE_DIR=str(tmp_path / "mine")))["cache_dir"] == mine
    assert _probe(_env(tmp_path, NUMBA_CACHE_DIR=mine))["cache_dir"] == mine  # as a child process inherits it


def test_a_read_only_shared_cache_is_used_through_links_and_never_written():
    """numba ignores a cache directory it cannot write (it falls back to another one and compiles);
    QUANTLAB_SHARED_NUMBA_CACHE links the shared files into the user's own cache instead. As root the
    student is uid 65534 (nobody), who cannot write the shared files; otherwise the files are made
    read-only."""
    if os.geteuid() == 0:
        # as nobody, this environment must be importable: a clone inside a root-only folder (mktemp -d
        # makes 0700 folders) is not, and then the student's side cannot be played here
        r = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                sys.executable,
                "-c",
                "import numpy, numba",
            ],
            capture_output=True,
            text=True,
            cwd="/",
        )
        if r.returncode != 0:
            pytest.skip(f"{sys.executable} cannot import numpy/numba as uid 65534 (a root-only folder?)")
    base = pathlib.Path(tempfile.mkdtemp(prefix="quantlab-shared-"))  # not pytest's root-only tmp
    try:
        base.chmod(0o755)
        shared = base / "shared"
        _probe(_env(base, NUMBA_CACHE_DIR=str(shared)))  # the instructor warms it
        before = {p: p.stat().st_mtime_ns for p in shared.rglob("*")}
        student = base / "student"
        student.mkdir()
        dirs = [shared, *[p for p in shared.rglob("*") if p.is_dir()]]
        user = None
        if os.geteuid() == 0:
            user = 65534
            os.chown(student, user, user)
        for d in dirs:
            d.chmod(0o555)

        direct = _probe(_env(student, NUMBA_CACHE_DIR=str(shared)), user)
        assert direct["compiles"] > 0  # numba's own behaviour: a read-only cache dir is not used

        linked = _probe(_env(student, QUANTLAB_SHARED_NUMBA_CACHE=str(shared)), user)
        assert linked == {"cache_dir": str(student / ".cache" / "quantlab" / "numba" / SRC), "compiles": 0}
        assert {p: p.stat().st_mtime_ns for p in shared.rglob("*")} == before  # nothing written there
        assert any(p.is_symlink() for p in (student / ".cache" / "quantlab" / "numba").rglob("*.nbi"))
    finally:
        for d in [base, *[p for p in base.rglob("*") if p.is_dir() and not p.is_symlink()]]:
            d.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)
