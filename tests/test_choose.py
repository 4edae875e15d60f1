"""quantlab.choose: the fit / speed / energy arithmetic of notebook 11, checked against llama.cpp's own figures."""

from __future__ import annotations

import pathlib

import pytest

from quantlab import choose, sizes
from quantlab.errors import FormatError, ShapeError

VENDOR = (
    pathlib.Path(__file__).resolve().parents[1] / ".cache/llama-cpp-python/llama_cpp_python-0.3.36/vendor/llama.cpp"
)


def test_kv_cache_formula():
    # Llama-2-7B: 32 layers x 4096 positions x (K and V) x 32 KV heads x 128 dims x 2 bytes
    assert choose.kv_cache_bytes("Llama-2-7B", 4096, "f16") == 32 * 4096 * 2 * 32 * 128 * 2
    # grouped-query attention: Llama-3-8B has 8 KV heads; q8_0 stores 32 values in 34 bytes, q4_0 in 18
    assert choose.kv_cache_bytes("Llama-3-8B", 8192, "q8_0") == 32 * 8192 * 2 * 8 * 128 * 34 / 32
    assert choose.kv_cache_bytes("Llama-3-8B", 8192, "q4_0") == 32 * 8192 * 2 * 8 * 128 * 18 / 32
    with pytest.raises(FormatError):
        choose.kv_cache_bytes("Llama-2-7B", 10, "q3_k")
    with pytest.raises(ShapeError):
        choose.kv_cache_bytes("no-such-model", 10)


def test_sizes_match_llama_cpp_published_table():
    """quantlab's per-tensor recipes give Llama-3-8B file sizes within 0.02 GiB of llama.cpp's own table."""
    for ft, (gib, _ppl, _kld) in choose.LLAMA_CPP_LADDER.items():
        assert choose.weights_bytes("Llama-3-8B", ft) / 2**30 == pytest.approx(gib, abs=0.02), ft


@pytest.mark.skipif(not (VENDOR / "tools/perplexity/README.md").exists(), reason="llama.cpp sources not unpacked")
def test_ladder_is_the_published_one():
    text = (VENDOR / "tools/perplexity/README.md").read_text()
    for ft, (gib, ppl, kld) in choose.LLAMA_CPP_LADDER.items():
        rows = [[c.strip() for c in l.strip().strip("|").split("|")] for l in text.splitlines() if l.startswith("| ")]
        cells = next(c for c in rows if c[0].lower() == ft.lower() and c[1] == "None")
        row = " | ".join(cells)
        assert float(cells[2]) == gib and float(cells[3].split()[0]) == ppl and float(cells[5].split()[0]) == kld, row


def test_fit_speed_energy():
    r = choose.fit("Llama-2-7B", "Q4_K_M", n_ctx=4096, os_gb=3.0, device_gb=8.0)
    assert r["total GB"] == pytest.approx(r["weights GB"] + r["KV GB"] + 3.0) and not r["fits"]
    rows = choose.fit_table("Llama-2-7B", ("Q8_0", "Q2_K"), n_ctx=512, os_gb=0.0)
    assert rows[0]["8 GB laptop"] == "fits" and rows[1]["8 GB laptop"] == "fits"
    bw = choose.BANDWIDTHS["laptop DDR5-5600, 2 channels"][0]
    assert bw == pytest.approx(89.6)
    tps = choose.decode_tokens_per_s("Llama-2-7B", "Q4_K_M", bw)
    assert tps == pytest.approx(
        89.6e9 / sizes.file_size(sizes.llama_tensors(**sizes.LLAMA2_7B), "Q4_K_M", sizes.LLAMA2_7B)["bytes"]
    )
    assert choose.ridge_batch(100e12, 1000.0, 8.0) == pytest.approx(50.0)
    e8, e4 = choose.energy_per_token("Llama-2-7B", "Q8_0"), choose.energy_per_token("Llama-2-7B", "Q4_K_M")
    assert e4["total J"] < e8["total J"] and e8["memory share"] > 0.99
    assert e8["memory J"] == pytest.approx(e8["GB read"] * 1e9 * 160e-12)


def test_mix_names():
    rows = {r["ftype"]: r for r in choose.mix_names("Llama-2-7B")}
    assert rows["Q3_K_S"]["bpw"] < rows["Q3_K_M"]["bpw"] < rows["Q3_K_L"]["bpw"]
    assert rows["Q4_K_S"]["bpw"] < rows["Q4_K_M"]["bpw"] and 80 < rows["Q4_K_M"]["% in base"] < 90
