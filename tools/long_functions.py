"""Functions longer than a limit (default 80 lines), for the architecture issue's acceptance count.

    python tools/long_functions.py [--limit 80] [paths...]     (default: quantlab/ tools/ tests/)

Counts a function's lines from its `def` to its last line (decorators excluded), nested functions
separately. Prints one `path:line name lines` row per long function, longest first, then the count.
"""

from __future__ import annotations

import argparse
import ast
import pathlib


def long_functions(paths: list[pathlib.Path], limit: int) -> list[tuple[int, str, str]]:
    """(lines, "path:line", name) of every function over `limit` lines in the .py files under `paths`."""
    rows = []
    for top in paths:
        for f in sorted([top] if top.is_file() else top.rglob("*.py")):
            for node in ast.walk(ast.parse(f.read_text(), str(f))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = (node.end_lineno or node.lineno) - node.lineno + 1
                    if n > limit:
                        rows.append((n, f"{f}:{node.lineno}", node.name))
    return sorted(rows, reverse=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Functions longer than a limit (default 80 lines).")
    ap.add_argument("--limit", type=int, default=80)
    ap.add_argument(
        "paths", nargs="*", type=pathlib.Path, default=[pathlib.Path(p) for p in ("quantlab", "tools", "tests")]
    )
    a = ap.parse_args(argv)
    rows = long_functions(a.paths, a.limit)
    for n, where, name in rows:
        print(f"{where} {name} {n}")
    print(f"{len(rows)} functions over {a.limit} lines")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
