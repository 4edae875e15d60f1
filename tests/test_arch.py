"""Every architecture quantlab runs, judged by llama.cpp on the same file and text.

The test models are built by tools/make_arch_fixtures.py (SmolLM2-135M-Instruct's real tensors laid out
as llama / qwen2 / qwen3 / gemma3 / phi3, plus seeded random gemma3-tiny / qwen3-tiny for head_dim !=
n_embd / n_head) into .cache/arch-fixtures once per session; tests/data/arch/<name>.json holds what
llama.cpp 0.3.36 said about the very same file (its sha256 is checked): llama-perplexity's PPL over 4
chunks of 512 tokens of the default text, the NLL of the true next token and the top-1 id of each of the
255 scored tokens of chunk 1 (from its --kl-divergence-base file), and 32 greedy tokens.

Since session 5 quantlab computes what llama.cpp computes, op for op (its flash attention, fused multiply-adds,
vector exp, integer products for prompt batches; tests/test_forward_ops.py checks each op's bits against ggml):
every PPL equals llama-perplexity's to its printed digits, every per-token NLL llama.cpp's to its base file's
storage step (asserted below), and the greedy text is llama-completion's. The looser checks that follow were
written when it did not, and are kept as the issue's bars.

Tolerances. PPL within 0.5 % (issue 15). Per token, quantlab is allowed what llama.cpp allows itself:
the fixture records llama.cpp's own spread on chunk 1 between its default run (flash attention on) and
the same model with flash attention off ("llama_self_spread"); measured on SmolLM2 that spread is a KLD
of 3.6e-3, mean |dNLL| ~0.06 nats and 98 % same top-1 (F16 K/V rounding against SmolLM2's large
activations), so the issue's "KLD ~1e-4, top-1 >= 99 %" is not what llama.cpp itself meets on these
models. quantlab must stay within 2x llama.cpp's mean and 99th-percentile |dNLL| (at least 0.01 / 0.05
nats) and agree on the top-1 at least as often as llama.cpp agrees with itself less 1 point (at most
99 % asked). Greedy text must be identical.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib

import numpy as np
import pytest

import quantlab.gguf
import quantlab.model as qm
from quantlab.errors import ModelError

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "tests/data/arch"
_spec = importlib.util.spec_from_file_location("make_arch_fixtures", ROOT / "tools/make_arch_fixtures.py")
fixtures_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixtures_tool)

# llama.cpp's base file stores log-probabilities more than 16 below the top as the floor: a stored NLL of
# 16 or more may be a floored one (the random tiny models have many), so per-token checks skip those
FLOOR = 16.0
# known gaps (strict xfails, so a fix shows up as XPASS and the mark goes): none since session 5, where quantlab took
# ggml's arithmetic (flash attention, fused multiply-adds, its vector exp, RoPE and GELU rounding, integer products
# for prompt batches): every test model's 4x512 PPL equals llama-perplexity's to its printed digits and chunk 1's
# per-token NLL to the base file's storage step
NOT_YET: dict = {}


# 32 greedy tokens against llama-completion's: all match since quantlab follows ggml's arithmetic (flash attention,
# fused multiply-adds, its vector exp; session 5); a gap would go here as a strict xfail
GREEDY_NOT_YET: dict = {}


def _param(name, known=NOT_YET):
    marks = [pytest.mark.xfail(strict=True, reason=known[name])] if name in known else []
    return pytest.param(name, marks=marks, id=name)


PARAMS = [_param(n) for n in fixtures_tool.NAMES]
GREEDY_PARAMS = [_param(n, GREEDY_NOT_YET) for n in fixtures_tool.NAMES]


@pytest.fixture(scope="session")
def arch_models():
    """name -> path of every test model, built once (a few seconds each; deterministic)."""
    return {n: fixtures_tool.build(n) for n in fixtures_tool.NAMES}


def _fixture(name):
    p = DATA / f"{name}.json"
    if not p.exists():
        pytest.skip(f"{p} not recorded (tools/make_arch_fixtures.py --record)")
    return json.loads(p.read_text())


def _load(arch_models, name):
    fx = _fixture(name)
    path = arch_models[name]
    assert fixtures_tool.sha256(path) == fx["model_sha256"], (
        f"{path} is not the file llama.cpp was run on: rebuild it (make_arch_fixtures.py --force) or re-record"
    )
    return fx, qm.load(path)


def test_fixture_files_are_informative():
    """The recorded models say something: the SmolLM2 layouts whose extra tensors keep SmolLM2's function
    (llama, qwen2, qwen3, phi3) predict the text far better than chance (PPL < 1000 vs 49152 for a
    uniform guess); every model's top-1 changes from token to token; the stored per-token NLL of chunk 1
    averages to llama-perplexity's first running PPL. (gemma3's post-norms take away the per-token
    magnitudes SmolLM2 relies on: it predicts one token everywhere; the tiny models are random: their PPL
    is that of confident wrong guesses, but their top-1 moves.)"""
    names = [n for n in fixtures_tool.NAMES if (DATA / f"{n}.json").exists()]
    assert names, "no tests/data/arch/*.json recorded"
    for n in names:
        fx = json.loads((DATA / f"{n}.json").read_text())
        if n in ("smollm2", "llama", "qwen2", "qwen3", "phi3"):
            assert fx["ppl"] < 1000, (n, fx["ppl"])
        if n != "gemma3":  # collapses to one token (see tools/make_arch_fixtures.py): tensors + graph only
            assert len(set(fx["chunk0"]["top1"])) > 20, n
        nll = np.asarray(fx["chunk0"]["nll"])
        if nll.max() < FLOOR:  # no token under the base file's floor: its NLLs are llama.cpp's own
            assert nll.mean() == pytest.approx(np.log(fx["running_ppl"][0]), rel=1e-3), n


@pytest.mark.parametrize("name", PARAMS)
def test_perplexity_and_tokens_match_llama_cpp(arch_models, name):
    fx, m = _load(arch_models, name)
    r = qm.evaluate(m, n_ctx=fx["n_ctx"], n_chunks=fx["n_chunks"], threads=2)
    assert r.n_chunks == fx["n_chunks"]
    assert abs(r.ppl / fx["ppl"] - 1) < 0.005, (r.ppl, fx["ppl"])
    n = len(fx["chunk0"]["nll"])
    sp = fx.get("llama_self_spread") or {"mean_abs_dnll": 0.0, "p99_abs_dnll": 0.0, "top1": 1.0}
    ref = np.asarray(fx["chunk0"]["nll"])
    keep = ref < FLOOR  # the others were stored at the floor, not at their value
    # enough tokens carry their value (the random tiny models put ~60 % of theirs under the floor: ~100 remain)
    assert keep.sum() >= 64, keep.sum()
    d = np.abs(r.nll[:n] - ref)[keep]
    assert d.mean() <= max(0.01, 2 * sp["mean_abs_dnll"]), (d.mean(), sp)
    assert np.percentile(d, 99) <= max(0.05, 2 * sp["p99_abs_dnll"]), (np.percentile(d, 99), sp)
    same = np.mean(r.argmax[:n] == np.asarray(fx["chunk0"]["top1"]))
    assert same >= min(0.99, sp["top1"] - 0.01), (same, sp)
    # stricter, since quantlab follows ggml's arithmetic op for op (tests/test_forward_ops.py): every NLL equals
    # llama.cpp's within one storage step of its base file (log-probabilities kept as uint16 over <= 16 nats:
    # 16 / 65535 = 2.4e-4), and where llama.cpp stored only the floor, quantlab is at least there
    assert d.max() <= 2.5e-4, d.max()
    assert (r.nll[:n][~keep] >= ref[~keep] - 2.5e-4).all()


@pytest.mark.parametrize("name", GREEDY_PARAMS)
def test_greedy_generation_matches_llama_cpp(arch_models, name):
    fx = _fixture(name)
    if not fx.get("generate"):
        pytest.skip("llama.cpp's greedy generation was not recorded for this model")
    fx, m = _load(arch_models, name)
    g = fx["generate"]
    got = m.generate(g["prompt"], n_predict=g["n_predict"], temperature=0.0, threads=2)
    assert got == g["text"]


def _metadata(path, **changes):
    with quantlab.gguf.open(path) as f:
        md = f.metadata.copy()
    for k, v in changes.items():
        md[k] = v
    return md


def test_unsupported_architecture_is_refused_naming_it(arch_models, tmp_path):
    """A byte-level BPE file of an architecture quantlab does not run: one ModelError naming the
    architecture and what is supported."""
    p = tmp_path / "mamba.gguf"
    quantlab.gguf.write(p, _metadata(arch_models["qwen3-tiny"], **{"general.architecture": "mamba"}), {})
    with pytest.raises(ModelError) as e:
        qm.load(p)
    msg = str(e.value)
    assert "'mamba'" in msg and "llama" in msg and "\n" not in msg


def test_unsupported_architecture_is_refused_before_the_tokenizer(arch_models, tmp_path):
    """Issue 15: a Gemma-3-like file was refused with a message about its tokenizer; the architecture is
    checked first, whatever the vocabulary."""
    p = tmp_path / "mamba-spm.gguf"
    md = _metadata(arch_models["qwen3-tiny"], **{"general.architecture": "mamba", "tokenizer.ggml.model": "llama"})
    quantlab.gguf.write(p, md, {})
    with pytest.raises(ModelError) as e:
        qm.load(p)
    msg = str(e.value)
    assert "'mamba'" in msg and "tokenizer" not in msg.lower(), msg
    for arch in ("llama", "qwen2", "qwen3", "gemma3", "phi3"):
        assert arch in msg, msg
