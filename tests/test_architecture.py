"""The layering of docs/architecture.md, enforced: every import in quantlab/ (module level and inside
functions alike) goes to the importer's own layer or a lower one, and the rules the document states
beside the drawing hold. The imports are read with ``ast``, nothing is imported, so this runs in a
second and the document and the code cannot drift apart silently: a new module must be given a layer
here (and in the document), and an upward import fails with the line that makes it.
"""

from __future__ import annotations

import ast
import json
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PKG = ROOT / "quantlab"
DOC = ROOT / "docs" / "architecture.md"

# quantlab.<name> -> layer, lowest first. The same table is drawn in docs/architecture.md (checked below).
LAYERS: dict[str, int] = {
    # 0: no quantlab imports at all (errors) or only errors: the ground every layer stands on
    "errors": 0,
    "_cache": 0,
    "progress": 0,
    # 1: the registry and the numpy references, byte tables, block layouts
    "formats": 1,
    # 2: numba kernels, one module per family, and their row driver
    "kernels": 2,
    # 3: the one validation boundary
    "api": 3,
    # 4: files, real data, peers and measures built on the api
    "gguf": 4,
    "data": 4,
    "peers": 4,
    "metrics": 4,
    "analogy": 4,
    "qat": 4,
    # 5: the transformer models (forward passes, tokenizers, imatrix, evaluation)
    "model": 5,
    # 6: llama-quantize's recipes (they read the imatrix the model layer computes and writes GGUF files)
    "recipes": 6,
    # 7: what people touch: benchmarks, warm-up, widgets, command lines, the course
    # (sizes, choose: a model's size and the format to pick under a recipe, for the widgets and the course)
    "bench": 7,
    "warmup": 7,
    "widgets": 7,
    "cli": 7,
    "cli_formats": 7,
    "course": 7,
    "sizes": 7,
    "choose": 7,
}
# A subpackage's command line (quantlab/gguf/cli.py, model/cli.py, recipes/cli.py) is in the `cli` layer.
CLI = "cli"
# Upward imports that an open branch removes (issue 16), as (file, imported layer). When the branch
# merges the import is gone and test_pending_are_still_there fails: delete the line then.
PENDING = {
    ("quantlab/model/describe.py", "recipes"),  # arch (new file): file_type()'s names, to move below model
}


def _modules():
    for f in sorted(PKG.rglob("*.py")):
        rel = f.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        yield f, ".".join(parts), is_pkg


def _imports(f: pathlib.Path, name: str, is_pkg: bool):
    """(line, imported module) of every import in ``f``, relative ones resolved against ``name``."""
    package = name if is_pkg else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(f.read_text(), str(f))):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from . import x`: x may be a module; count it as one (the stricter reading)
            for a in node.names:
                yield node.lineno, f"{mod}.{a.name}" if not node.module else mod


def _top(mod: str) -> str | None:
    """The layer key of a quantlab module: its first name below quantlab, or `cli` for a `*.cli` module."""
    parts = mod.split(".")
    if parts[0] != "quantlab" or len(parts) < 2:
        return None
    return CLI if parts[-1] == CLI else parts[1]


def _upward():
    """{(file, imported layer key): first line} of the imports that break the layering. Inside one
    subpackage anything goes (recipes/__init__.py may expose recipes/cli.py)."""
    bad: dict[tuple[str, str], str] = {}
    for f, name, is_pkg in _modules():
        me = _top(name)
        if me is None:  # quantlab/__init__.py: the facade, reaches everything lazily (PEP 562)
            continue
        for line, mod in _imports(f, name, is_pkg):
            it = _top(mod)
            if it is None or it == me or it not in LAYERS or mod.startswith(f"quantlab.{me}."):
                continue
            if LAYERS[it] > LAYERS[me]:
                bad.setdefault(
                    (str(f.relative_to(ROOT)), it),
                    f"{f.relative_to(ROOT)}:{line}: {me} (layer {LAYERS[me]}) imports {mod} (layer {LAYERS[it]})",
                )
    return bad


def test_every_module_has_a_layer():
    tops = {_top(n) for _, n, _ in _modules()}
    missing = {t for t in tops if t is not None and t not in LAYERS}
    assert not missing, f"give these a layer in LAYERS and in docs/architecture.md: {sorted(missing)}"


def test_imports_go_down_the_layers():
    bad = [why for key, why in _upward().items() if key not in PENDING]
    assert not bad, "upward imports (docs/architecture.md):\n" + "\n".join(bad)


def test_pending_are_still_there():
    gone = {p for p in PENDING if (ROOT / p[0]).exists()} - set(_upward())
    assert not gone, f"fixed, so delete them from PENDING: {sorted(gone)}"


def test_layer_zero_imports_only_errors():
    bad = [
        f"{f.relative_to(ROOT)}:{line}: {mod}"
        for f, name, is_pkg in _modules()
        if LAYERS.get(_top(name) or "", -1) == 0
        for line, mod in _imports(f, name, is_pkg)
        if _top(mod) not in (None, "errors", _top(name))
    ]
    assert not bad, "\n".join(bad)


def test_document_draws_the_same_layers():
    text = DOC.read_text()
    rows = dict(re.findall(r"^\| *(\d) *\| *([^|]+?) *\|", text, re.M))
    drawn = {m.strip("` "): int(k) for k, v in rows.items() for m in v.split(",")}
    assert drawn == LAYERS, "the layer table in docs/architecture.md and LAYERS here differ"


def test_readme_points_to_the_document():
    assert "docs/architecture.md" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("nb", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_store_no_outputs(nb):
    cells = json.loads(nb.read_text())["cells"]
    stored = [i for i, c in enumerate(cells) if c.get("outputs") or c.get("execution_count")]
    assert not stored, f"{nb.name}: cells {stored} store outputs (clear them before committing)"
