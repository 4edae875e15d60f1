"""Per-architecture agreement with llama.cpp on chunk 1 (n_ctx 512) of the evaluation text:

    python tools/arch_kld_table.py [name ...]      (names from tools/make_arch_fixtures.NAMES)

For each test model: llama-perplexity writes a --kl-divergence-base file (default settings, -t 1),
llama.cpp is compared with itself (-fa off), then quantlab. Prints PPL ratio, mean |dNLL| per token,
top-1 agreement and KLD for quantlab and for llama.cpp's own spread.

Measured 2026-12-07 (kld branch, load 15-20 on 2 cores; chunk 1 only, so PPL ratios are 255-token ones):
  smollm2  ppl 0.99713  top-1 0.9804  KLD 0.003686  | llama -fa off vs on: top-1 0.9804  KLD 0.003633
  llama    ppl 0.99355  top-1 0.9725  KLD 0.004025  |                      top-1 0.9725  KLD 0.004065
  qwen2    ppl 1.00010  top-1 0.9686  KLD 0.004021  |                      top-1 0.9686  KLD 0.003932
  qwen3    ppl 1.01191  top-1 0.9373  KLD 0.008963  |                      top-1 0.9137  KLD 0.008720
  phi3     ppl 1.00786  top-1 0.9333  KLD 0.007405  |                      top-1 0.9647  KLD 0.007558
quantlab's KLD equals llama.cpp's own spread on every Q4_1-derived model; phi3's top-1 is 3 points
under llama.cpp's own (same KLD) -- not explained yet.
Session 5 (quantlab computing ggml's arithmetic op for op, tests/test_forward_ops.py; not re-run with this
tool): llama.gguf chunk 1 via kld.compare against the default run: KLD mean -3e-7 (storage rounding), top-1
100 %, PPL 18.63306 vs 18.63307; against -fa off 0.00407 / 97.25 %, llama.cpp's own spread. The 4-chunk
PPL and per-token NLL of every model equal llama.cpp's (tests/test_arch.py)."""

import pathlib
import re
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


import make_arch_fixtures as fixtures_tool
import make_model_fixtures as llama

import quantlab.data
import quantlab.model as qm
from quantlab.model import kld


def row(name, path, td):
    text = pathlib.Path(td) / "t.txt"
    if not text.exists():
        text.write_bytes(quantlab.data.text().encode())
    base = pathlib.Path(td) / f"{name}.kld"
    llama.kld_base(path, text, base)
    out = llama.kld_base(path, text, base, "-fa", "off", "--kl-divergence")
    s_kld = float(re.search(r"Mean\s+KLD:\s+([-0-9.]+)", out).group(1))
    s_top = float(re.search(r"Same top p:\s+([0-9.]+)", out).group(1)) / 100
    b = kld.BaseLogits(base)
    r = kld.compare(qm.load(path), b, threads=2)
    c0 = b.chunk(0)
    return (
        f"{name:12s} ppl ratio {r.ppl / r.base_ppl:.5f}  top-1 {r.top1:.4f}  KLD {r.kld_mean:.6f}  |  "
        f"llama -fa off vs on: top-1 {s_top:.4f} KLD {s_kld:.6f}  (base ppl {r.base_ppl:.3f}, "
        f"{len(c0.targets)} tokens)"
    )


def main(names):
    with tempfile.TemporaryDirectory() as td:
        for n in names or fixtures_tool.NAMES:
            path = fixtures_tool.build(n)
            print(row(n, path, td), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
