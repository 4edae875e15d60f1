"""quantlab.model.kld: llama.cpp's --kl-divergence-base files, read, written and compared against."""

from __future__ import annotations

import pathlib
import struct
import sys

import numpy as np
import pytest

import quantlab.data
import quantlab.model as qm
from quantlab.errors import ModelError
from quantlab.model import kld

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import make_model_fixtures as llama  # noqa: E402

BIN = llama.BIN


@pytest.fixture(scope="module")
def model():
    return qm.load(quantlab.data.path("smollm2"))


def test_encode_log_probs_layout():
    """One record: two float32 (scale, min log p), then round((l - min_logit) / scale), 0 below the floor;
    decoding gives log-softmax to within scale/2, and the record is padded to an even vocabulary."""
    rng = np.random.default_rng(0)
    lg = (rng.standard_normal((3, 7)) * 6).astype(np.float32)
    lg[1] = 0.0  # flat row: scale 0, every q 0
    rec, lse = kld.encode_log_probs(lg)
    assert rec.shape == (3, kld.record_length(7)) == (3, 12)
    head = rec[:, :4].copy().view("<f4")
    scale, mlp = head[:, 0], head[:, 1]
    want = lg.astype(np.float64) - lse[:, None]
    got = scale[:, None] * rec[:, 4:11].astype(np.float32) + mlp[:, None]
    for i in (0, 2):
        keep = lg[i] > max(lg[i].min(), lg[i].max() - 16)
        assert np.all(np.abs(got[i][keep] - want[i][keep]) <= scale[i] * 0.5 + 1e-5)
        assert rec[i, 4 + int(lg[i].argmax())] == 65535
    assert scale[1] == 0 and np.all(rec[1, 4:] == 0) and mlp[1] == pytest.approx(-np.log(7), abs=1e-6)


def test_round_trip_against_quantlab_itself(model, tmp_path):
    """quantlab's own logits written in llama.cpp's format and read back: the same distributions, so KLD
    is only the 16-bit storage: each stored log p is off by at most scale/2 = 8/65535 (the top is 16 above
    the floor), which moves a token's KLD by at most that much and averages out (|mean| < 1e-5); the same
    top-1 everywhere and the same PPL."""
    p = kld.save_base(model, tmp_path / "base.kld", n_ctx=128, n_chunks=2, threads=2)
    b = kld.read_base(p)
    assert (b.n_ctx, b.n_vocab, b.n_chunk) == (128, model.n_vocab, 2)
    assert p.stat().st_size == 20 + 4 * 2 * 128 + 2 * 2 * 63 * kld.record_length(model.n_vocab)
    assert not list(tmp_path.glob("*.tmp"))
    r = kld.compare(model, p, threads=2)
    ref = qm.evaluate(model, n_ctx=128, n_chunks=2, threads=2)
    assert r.n_scored == ref.n_scored == 2 * 63
    assert r.ppl == pytest.approx(ref.ppl, rel=1e-9)
    assert abs(r.base_ppl / r.ppl - 1) < 1e-4
    assert abs(r.kld_mean) < 1e-5 and np.abs(r.kld).max() < 8 / 65535
    assert r.top1 == 1.0
    assert np.array_equal(r.argmax, ref.argmax)
    assert np.array_equal(b.chunk(1).top1(), ref.argmax[63:])
    assert np.abs(b.chunk(0).nll() - ref.nll[:63]).max() < 3e-4


def test_bad_base_files(model, tmp_path):
    p = tmp_path / "x.kld"
    p.write_bytes(b"GGUF" + bytes(40))
    with pytest.raises(ModelError, match=r"not a llama\.cpp KL-divergence base file"):
        kld.read_base(p)
    p.write_bytes(struct.pack("<8sIii", b"_logits_", 8, 5, 1) + bytes(4 * 8))  # records missing
    with pytest.raises(ModelError, match="truncated"):
        kld.read_base(p)
    p.write_bytes(struct.pack("<8sIii", b"_logits_", 7, 5, 1))
    with pytest.raises(ModelError, match="even number"):
        kld.read_base(p)
    n = 8
    body = np.full(n, 9, dtype="<i4").tobytes() + bytes(2 * 3 * kld.record_length(5))
    p.write_bytes(struct.pack("<8sIii", b"_logits_", n, 5, 1) + body)
    with pytest.raises(ModelError, match="outside"):
        kld.read_base(p)
    p.write_bytes(struct.pack("<8sIii", b"_logits_", n, 5, 1) + bytes(4 * n) + bytes(2 * 3 * kld.record_length(5)))
    with pytest.raises(ModelError, match="n_vocab = 5"):
        kld.compare(model, p)


def test_cli_eval_llama_style(tmp_path, capsys):
    from quantlab.cli import main

    text = tmp_path / "t.txt"
    text.write_text(quantlab.data.text()[:20000])
    out = tmp_path / "b.kld"
    assert (
        main(["eval", "-m", "smollm2", "-f", str(text), "-c", "128", "--chunks", "1", "--save-kld-base", str(out)]) == 0
    )
    assert main(["eval", "-m", "smollm2", "--kl-divergence-base", str(out), "--kl-divergence"]) == 0
    s = capsys.readouterr().out
    assert "KLD mean" in s and "same top-1 100.000 %" in s and "1 chunks of 128" in s


@pytest.mark.skipif(not (BIN / "llama-perplexity").exists(), reason="llama-perplexity not built (make peers)")
def test_against_llama_perplexity_logits_f32(tmp_path):
    """SmolLM2's weights as F32 (llama-quantize): no activation quantization, so llama.cpp and quantlab
    should agree to float rounding. Measured: KLD < 1e-6, top-1 100%, PPL ratio 1.00006."""
    text = tmp_path / "t.txt"
    text.write_bytes(quantlab.data.text().encode())
    f32 = tmp_path / "f32.gguf"
    llama.run_tool("llama-quantize", "--allow-requantize", quantlab.data.path("smollm2"), f32, "F32", "1")
    base = tmp_path / "llama.kld"
    llama.kld_base(f32, text, base)
    r = kld.compare(qm.load(f32), base, threads=2)
    assert r.n_scored == 255
    assert r.kld_mean < 1e-4, r.summary()
    assert r.top1 >= 0.99, r.summary()
    assert abs(r.ppl / r.base_ppl - 1) < 1e-3, r.summary()


@pytest.mark.skipif(not (BIN / "llama-perplexity").exists(), reason="llama-perplexity not built (make peers)")
def test_against_llama_perplexity_logits(model, tmp_path):
    """The shipped Q4_1 file against llama-perplexity's default run (flash attention on): the issue's bar,
    KLD <= 1e-4 and the same top-1 on >= 99 % of the tokens. Every product quantizes its activations to
    8 bits, so a one-ulp float difference anywhere flips roundings downstream (llama.cpp differs from itself
    by KLD 0.0036, top-1 98.0 %, between flash attention on and off); quantlab meets the bar because it
    computes what ggml computes (tests/test_forward_ops.py). Measured: KLD ~1e-7, top-1 100 %, PPL ratio
    1.00000."""
    text = tmp_path / "t.txt"
    text.write_bytes(quantlab.data.text().encode())
    base = tmp_path / "llama.kld"
    llama.kld_base(quantlab.data.path("smollm2"), text, base)
    r = kld.compare(model, base, threads=2)
    assert r.n_scored == 255
    assert r.kld_mean <= 1e-4, r.summary()
    assert r.top1 >= 0.99, r.summary()
    assert abs(r.ppl / r.base_ppl - 1) < 1e-4, r.summary()
