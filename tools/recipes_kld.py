#!/usr/bin/env python
"""The optimizer (quantlab.recipes.optimize) at the size of llama.cpp's Q4_K_M vs Q4_K_M itself, in KL
divergence against the source model on the default text (quantlab.data.text()).

    .venv/bin/python tools/recipes_kld.py [--chunks 8] [--ctx 512] [--max-rows 128] [--keep-source-type]

SmolLM2 ships as Q4_1, so the source model is the Q4_1 file and both contenders are requantizations of
it. Keeping Q4_1 is lossless (KLD 0) and smaller than Q4_K_M here, and the optimizer finds that; by
default the source type is therefore removed from the candidates so the comparison says something.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.chdir(ROOT)

from quantlab import data, model, recipes  # noqa: E402

IM = "tests/data/smollm2-imatrix.gguf"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--max-rows", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep-source-type", action="store_true")
    a = ap.parse_args()
    src = data.path("smollm2")
    cands = [c for c in recipes.DEFAULT_CANDIDATES if a.keep_source_type or c != "Q4_1"]
    opt = recipes.optimize(src, "Q4_K_M", imatrix=IM, candidates=cands, max_rows=a.max_rows, threads=a.threads)
    print(opt.summary(), flush=True)
    base = model.load(src)
    out = {"optimizer": opt.summary(), "candidates": cands, "chunks": a.chunks, "ctx": a.ctx}
    with tempfile.TemporaryDirectory() as td:
        for name, kw in (
            ("llama.cpp Q4_K_M (imatrix)", {}),
            ("optimized", {"options": opt.options(allow_requantize=True)}),
        ):
            p = pathlib.Path(td) / "m.gguf"
            if "options" not in kw:
                kw = {"allow_requantize": True}
            r = recipes.quantize_model(
                src, p, "Q4_K_M", imatrix=IM, verbose=False, progress=False, threads=a.threads, **kw
            )
            m = model.load(p)
            ev = model.evaluate(m, n_ctx=a.ctx, n_chunks=a.chunks, base=base, threads=a.threads)
            out[name] = {
                "bytes": r.nbytes,
                "bpw": round(r.bpw, 4),
                "sha256": r.sha256(),
                "ppl": ev.ppl,
                "base_ppl": ev.base_ppl,
                "kld_mean": ev.kld_mean,
                "kld_err": ev.kld_err,
                "kld_p99": ev.kld_p99,
                "top1": ev.top1,
            }
            print(name, json.dumps(out[name]), flush=True)
            del m
    (ROOT / ".cache/recipes").mkdir(parents=True, exist_ok=True)
    (ROOT / ".cache/recipes/kld.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
