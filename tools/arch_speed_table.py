"""Per-architecture speed (issue 15 item 4): pp512 and tg32 tokens/s of ``quantlab bench model`` next to
llama.cpp's llama-bench, for every test model of .cache/arch-fixtures (llama, qwen2, qwen3, gemma3, phi3,
gemma3-tiny, qwen3-tiny; built by tools/make_arch_fixtures.py).

    PYTHONPATH=$PWD NUMBA_CACHE_DIR=$PWD/.cache/numba .venv/bin/python tools/arch_speed_table.py
        [--threads 2] [--reps 3] [--llama-build native|avx2] [--json]

It is :func:`quantlab.bench.model` on those files: each file measured by quantlab and right after by
llama-bench (same threads, best of ``reps`` on both sides), the load average per row, the build named in
the title.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from quantlab import bench  # noqa: E402

ARCHS = ("llama", "qwen2", "qwen3", "gemma3", "phi3", "gemma3-tiny", "qwen3-tiny")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n-gen", type=int, default=32, help="generated tokens per tg run (default 32)")
    ap.add_argument("--llama-build", default="native", choices=("avx2", "native"))
    ap.add_argument("--dir", default=str(ROOT / ".cache" / "arch-fixtures"))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    paths = [pathlib.Path(a.dir) / f"{n}.gguf" for n in ARCHS]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        sys.exit(f"arch_speed_table: {', '.join(missing)} missing in {a.dir}: run tools/make_arch_fixtures.py")
    t = bench.model(paths=paths, threads=a.threads, reps=a.reps, n_gen=a.n_gen, flavour=a.llama_build, progress=False)
    print(json.dumps({"title": t.title, "rows": t.rows}, indent=1, default=float) if a.json else t)


if __name__ == "__main__":
    main()
