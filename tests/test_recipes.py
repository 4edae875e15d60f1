"""quantlab.recipes against llama-quantize: the per-tensor plan for every file type (recorded from the
real binary into tests/data/recipes_smollm2.json by tools/make_recipe_fixture.py), the rules on
synthetic models, errors, and whole-model byte identity (sha256 of the output file)."""

from __future__ import annotations

import json
import pathlib
import re

import pytest

from quantlab import recipes
from quantlab.errors import FormatError, QuantlabError
from quantlab.recipes import ModelInfo, Options, make_plan, use_more_bits

DATA = pathlib.Path(__file__).parent / "data"
FIXTURE = json.loads((DATA / "recipes_smollm2.json").read_text())

# SmolLM2-135M as llama-quantize sees it: names, ggml shapes and source types of the Q4_1 file.
SMOL_META = {
    "general.architecture": "llama",
    "llama.block_count": 30,
    "llama.attention.head_count": 9,
    "llama.attention.head_count_kv": 3,
}


def _smol_tensors():
    out = []
    for name in FIXTURE["tensors"]:
        if name.endswith("_norm.weight"):
            out.append((name, (576,), "F32"))
        elif name == "token_embd.weight":
            out.append((name, (576, 49152), "Q8_0"))
        elif "ffn_down" in name:
            out.append((name, (1536, 576), "Q4_1"))
        elif "ffn_" in name:
            out.append((name, (576, 1536), "Q4_1"))
        elif "attn_k." in name or "attn_v." in name:
            out.append((name, (576, 192), "Q4_1"))
        else:
            out.append((name, (576, 576), "Q4_1"))
    return out


def _options(opts):
    kw, tts, i = {}, [], 0
    while i < len(opts):
        o = opts[i]
        if o == "--pure":
            kw["pure"] = True
        elif o == "--token-embedding-type":
            i += 1
            kw["token_embedding_type"] = opts[i]
        elif o == "--output-tensor-type":
            i += 1
            kw["output_tensor_type"] = opts[i]
        elif o == "--tensor-type":
            i += 1
            tts.append(opts[i])
        else:
            raise AssertionError(o)
        i += 1
    return Options(allow_requantize=True, tensor_types=tuple(tts), **kw)


@pytest.mark.parametrize("key", sorted(FIXTURE["plans"]))
def test_plan_matches_llama_quantize(key):
    rec = FIXTURE["plans"][key]
    ts = _smol_tensors()
    opts = _options(rec["options"])
    if "error" in rec:
        with pytest.raises(FormatError, match="no fallback"):
            make_plan(ts, rec["ftype"], SMOL_META, opts, has_imatrix=rec["imatrix"])
        return
    plan = make_plan(ts, rec["ftype"], SMOL_META, opts, has_imatrix=rec["imatrix"])
    assert [t.name for t in plan] == FIXTURE["tensors"], "tensor order differs from llama-quantize"
    want = rec["types"].split()
    got = [t.fmt.name for t in plan]
    diff = [(n, g, w) for n, g, w in zip(FIXTURE["tensors"], got, want) if g != w]
    assert not diff, f"{key}: {len(diff)} tensors differ, first: {diff[:3]}"


def test_plan_explains_itself():
    plan = make_plan(_smol_tensors(), "Q4_K_M", SMOL_META)
    t = plan["blk.5.attn_v.weight"]
    assert "use_more_bits(5, 30)" in t.rule and t.rule.endswith("Q6_K")
    assert t.fmt.name == "Q8_0" and "576" in t.fallback  # 576 is not a multiple of 256
    t = plan["blk.4.ffn_down.weight"]
    assert t.fmt.name == "Q4_K" and "not use_more_bits(4, 30)" in t.rule and t.fallback is None
    assert plan["output_norm.weight"].action == "copy" and not plan["output_norm.weight"].quantizable
    assert plan["token_embd.weight"].action == "copy"  # Q8_0 already: bytes copied as they are
    assert plan.n_fallback == 180
    # llama-quantize --dry-run prints "quant size = 98.87 MiB (6.17 BPW)" for this plan
    assert f"{plan.nbytes / 2**20:.2f}" == "98.87" and f"{plan.bpw:.2f}" == "6.17"


def test_use_more_bits():
    n = 32
    more = [i for i in range(n) if use_more_bits(i, n)]
    # first and last eighth, and every third layer in between
    assert more == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]


def _dense(n_layer=32, n_head=32, n_head_kv=8, d=4096, ff=14336, tied=False, arch="llama"):
    ts = [("token_embd.weight", (d, 32000), "F16"), ("output_norm.weight", (d,), "F32")]
    if not tied:
        ts.append(("output.weight", (d, 32000), "F16"))
    kvd = d * n_head_kv // n_head
    for i in range(n_layer):
        p = f"blk.{i}."
        ts += [
            (p + "attn_q.weight", (d, d), "F16"),
            (p + "attn_k.weight", (d, kvd), "F16"),
            (p + "attn_v.weight", (d, kvd), "F16"),
            (p + "attn_output.weight", (d, d), "F16"),
            (p + "ffn_gate.weight", (d, ff), "F16"),
            (p + "ffn_up.weight", (d, ff), "F16"),
            (p + "ffn_down.weight", (ff, d), "F16"),
            (p + "attn_norm.weight", (d,), "F32"),
        ]
    meta = {
        "general.architecture": arch,
        f"{arch}.block_count": n_layer,
        f"{arch}.attention.head_count": n_head,
        f"{arch}.attention.head_count_kv": n_head_kv,
    }
    return ts, meta


def test_dense_llama_mixes():
    ts, meta = _dense()
    p = make_plan(ts, "Q4_K_M", meta)
    assert p["output.weight"].fmt.name == "Q6_K" and p["token_embd.weight"].fmt.name == "Q4_K"
    v = [p[f"blk.{i}.attn_v.weight"].fmt.name for i in range(32)]
    assert v == ["Q6_K" if use_more_bits(i, 32) else "Q4_K" for i in range(32)]
    # n_gqa = 4: IQ4_XS gives attn_v Q5_K, IQ2_XXS gives it Q4_K
    assert make_plan(ts, "IQ4_XS", meta)["blk.0.attn_v.weight"].fmt.name == "Q5_K"
    p2 = make_plan(ts, "IQ2_XXS", meta, has_imatrix=True)
    assert p2["blk.0.attn_v.weight"].fmt.name == "Q4_K"
    assert p2["output.weight"].fmt.name == "Q5_K" and p2["token_embd.weight"].fmt.name == "Q2_K"
    assert [p2[f"blk.{i}.ffn_down.weight"].fmt.name for i in range(5)] == ["Q2_K"] * 4 + ["IQ2_XXS"]
    p3 = make_plan(ts, "Q3_K_M", meta)
    assert [p3[f"blk.{i}.attn_v.weight"].fmt.name for i in range(3)] == ["Q5_K", "Q5_K", "Q4_K"]
    assert [p3[f"blk.{i}.ffn_down.weight"].fmt.name for i in range(3)] == ["Q5_K", "Q5_K", "Q4_K"]
    assert p3["blk.0.attn_output.weight"].fmt.name == "Q4_K"
    # 70B llama (80 layers, GQA): attn_v gets Q5_K where it would get Q3_K/Q4_K
    ts70, meta70 = _dense(n_layer=80, n_head=64, n_head_kv=8, d=1024, ff=2048)
    assert make_plan(ts70, "Q3_K_S", meta70)["blk.5.attn_v.weight"].fmt.name == "Q5_K"
    # F16 file type: no heuristics, every quantizable tensor F16; norms stay F32
    pf = make_plan(ts, "F16", meta)
    assert {t.fmt.name for t in pf} == {"F16", "F32"} and pf["output_norm.weight"].fmt.name == "F32"


def test_model_info_reads_per_layer_arrays_and_refuses_bad_values():
    """issue 18 #2: the reader gives per-layer values as numpy arrays (TypeError before), and mistyped
    values raised bare ValueErrors. Per-layer arrays of block_count values are read like llama.cpp's
    loader (layer 0 drives the rules); anything else is a ModelError naming key, value and expectation."""
    from quantlab.errors import ModelError

    base = {"general.architecture": "llama", "llama.block_count": 2}
    m = ModelInfo.from_metadata(
        {
            **base,
            "llama.attention.head_count": np.array([9, 3], np.int32),
            "llama.attention.head_count_kv": np.array([3, 1], np.uint32),
        }
    )
    assert (m.n_head, m.n_head_kv, m.n_gqa) == (9, 3, 3)
    m = ModelInfo.from_metadata(
        {**base, "llama.attention.head_count": (8, 8), "llama.attention.head_count_kv": [np.int64(2), 2]}
    )
    assert m.n_gqa == 4
    m = ModelInfo.from_metadata(
        {
            **base,
            "llama.block_count": np.uint32(80),
            "llama.attention.head_count": 64,
            "llama.attention.head_count_kv": 8,
        }
    )
    assert m.is_70b and m.n_layer == 80
    bad = [
        ({"llama.block_count": "abc"}, "block_count is 'abc'.*expected an unsigned integer"),
        ({"llama.block_count": 2.0}, "block_count is 2.0"),
        ({"llama.block_count": True}, "block_count is True"),
        ({"llama.block_count": -1}, "block_count is -1.*32-bit"),
        ({"llama.block_count": [2, 2]}, "block_count is an array.*expected a scalar"),
        ({"llama.attention.head_count_kv": float("nan")}, "head_count_kv is nan"),
        ({"llama.attention.head_count_kv": np.array([np.nan, 1.0])}, "head_count_kv element 0 is nan"),
        ({"llama.attention.head_count": np.array([9, 3, 3])}, "array of 3 values.*one per layer \\(2"),
        ({"llama.attention.head_count": np.zeros((2, 2), np.int32)}, "shape \\(2, 2\\)"),
        ({"llama.attention.head_count": []}, "array of 0 values"),
        ({"llama.expert_count": 1 << 40}, "expert_count is 1099511627776"),
        ({"general.architecture": 7}, "general.architecture is 7"),
    ]
    for extra, msg in bad:
        with pytest.raises(ModelError, match=msg):
            ModelInfo.from_metadata({**base, **extra})


def test_options():
    ts, meta = _dense(n_layer=8)
    p = make_plan(ts, "Q4_K_M", meta, Options(pure=True))
    assert {t.fmt.name for t in p if t.quantizable} == {"Q4_K"}
    p = make_plan(ts, "Q4_K_M", meta, Options(leave_output_tensor=True))
    assert p["output.weight"].fmt.name == "F16" and not p["output.weight"].quantizable
    p = make_plan(
        ts,
        "Q4_K_M",
        meta,
        Options(
            tensor_types=["attn_(q|k)=q8_0", "blk\\.7\\.=iq4_nl"],
            output_tensor_type="q8_0",
            token_embedding_type="Q4_0",
        ),
    )
    assert p["blk.3.attn_q.weight"].fmt.name == "Q8_0" and "--tensor-type" in p["blk.3.attn_q.weight"].rule
    assert p["blk.7.attn_q.weight"].fmt.name == "Q8_0"  # first matching pattern wins
    assert p["blk.7.ffn_up.weight"].fmt.name == "IQ4_NL"
    assert p["output.weight"].fmt.name == "Q8_0" and p["token_embd.weight"].fmt.name == "Q4_0"


def test_fallback_to_f16_and_errors():
    ts = [("blk.0.ffn_down.weight", (100, 64), "F32")]  # 100 is not a multiple of 32
    p = make_plan(ts, "Q4_K_M", {"llama.block_count": 1})
    assert p["blk.0.ffn_down.weight"].fmt.name == "F16" and "F16" in p["blk.0.ffn_down.weight"].fallback
    with pytest.raises(FormatError, match="unknown file type"):
        recipes.file_type("Q4_K_XL")
    with pytest.raises(FormatError, match="NVFP4"):
        recipes.file_type(39)
    with pytest.raises(FormatError, match="PATTERN=TYPE"):
        Options(tensor_types=["attn_v"])
    with pytest.raises(QuantlabError, match="not a valid regular expression"):
        Options(tensor_types=["attn_v(=q8_0"])
    assert recipes.file_type("q4_k").name == "Q4_K_M" and recipes.file_type(15).name == "Q4_K_M"


def test_every_file_type_has_a_registered_default():
    for ft in recipes.all_file_types():
        assert ft.default.name == ft.default_name and not ft.default.removed
    assert len(recipes.all_file_types()) == 35  # llama-quantize lists 35 (+ aliases, COPY)


# ---------------------------------------------------------------------------------------------------
# the pipeline on a small synthetic model (seconds), checked tensor by tensor against ggml
# ---------------------------------------------------------------------------------------------------

import hashlib  # noqa: E402

import numpy as np  # noqa: E402

from quantlab import gguf  # noqa: E402
from quantlab.errors import ImatrixError, ImatrixRequired  # noqa: E402

from .oracle import oracle  # noqa: E402

N_LAYER, D, FF = 2, 256, 512


def _tiny_model(path, rng=None):
    rng = rng or np.random.default_rng(7)
    md = {
        "general.architecture": "llama",
        "general.name": "tiny",
        "llama.block_count": N_LAYER,
        "llama.embedding_length": D,
        "llama.attention.head_count": 4,
        "llama.attention.head_count_kv": 2,
        "general.file_type": 0,
    }
    ts = {
        "token_embd.weight": rng.standard_normal((64, D)).astype(np.float32) * 0.05,
        "output_norm.weight": np.ones(D, np.float32),
        "output.weight": rng.standard_normal((64, D)).astype(np.float32) * 0.05,
    }
    for i in range(N_LAYER):
        for nm, shp in (
            ("attn_q", (D, D)),
            ("attn_k", (D // 2, D)),
            ("attn_v", (D // 2, D)),
            ("attn_output", (D, D)),
            ("ffn_gate", (FF, D)),
            ("ffn_up", (FF, D)),
            ("ffn_down", (D, FF)),
        ):
            ts[f"blk.{i}.{nm}.weight"] = (rng.standard_normal(shp) * rng.uniform(0.01, 0.1)).astype(np.float32)
        ts[f"blk.{i}.attn_norm.weight"] = np.ones(D, np.float32)
    gguf.write(path, md, ts)
    return ts


def _tiny_imatrix(ts, rng=None):
    rng = rng or np.random.default_rng(3)
    return {
        k: rng.uniform(0.0, 2.0, v.shape[-1]).astype(np.float32)
        for k, v in ts.items()
        if k.startswith("blk.") and v.ndim == 2
    }


def _sha(p):
    return hashlib.sha256(pathlib.Path(p).read_bytes()).hexdigest()


@pytest.mark.parametrize("ftype,with_im", [("Q4_K_M", True), ("Q3_K_S", False), ("Q5_0", True), ("IQ4_XS", False)])
def test_pipeline_matches_ggml_tensor_by_tensor(tmp_path, ftype, with_im):
    src = tmp_path / "tiny.gguf"
    ts = _tiny_model(src)
    im = _tiny_imatrix(ts) if with_im else None
    out = tmp_path / "out.gguf"
    r = recipes.quantize_model(src, out, ftype, imatrix=im, verbose=False, progress=False)
    g = oracle()
    with gguf.open(out) as f:
        assert f.metadata["general.file_type"] == recipes.file_type(ftype).value
        assert f.metadata.type_of("general.file_type") == gguf.ValueType.UINT32
        keys = list(f.metadata)
        tail = keys[keys.index("general.quantization_version") :]
        # a mapping imatrix has no file name, dataset or chunk count: only the entry count is recorded
        assert tail == ["general.quantization_version", "general.file_type"] + (
            ["quantize.imatrix.entries_count"] if im is not None else []
        )
        assert list(f.tensors) == [t.name for t in r.plan]
        for t in r.plan:
            got = f.tensors[t.name]
            assert got.format.name == t.fmt.name
            x = ts[t.name]
            if t.fmt.name == "F32":
                want = x.reshape(-1).view(np.uint8)
            else:
                w = None if im is None else im.get(t.name)
                want = g.quantize(x.reshape(-1, x.shape[-1]), t.fmt.id, w).reshape(-1)
            assert np.array_equal(np.asarray(got.data).reshape(-1), want), f"{t.name} ({t.fmt.name}) differs from ggml"
    if im is not None:
        with gguf.open(out) as f:
            assert f.metadata["quantize.imatrix.entries_count"] == len(im)


def test_pipeline_options_and_metadata(tmp_path):
    src = tmp_path / "tiny.gguf"
    _tiny_model(src)
    out = tmp_path / "o.gguf"
    r = recipes.quantize_model(
        src,
        out,
        "Q4_K_M",
        pure=True,
        output_tensor_type="q8_0",
        tensor_types=["ffn_down=q5_k"],
        verbose=False,
        progress=False,
        threads=1,
    )
    with gguf.open(out) as f:
        types = {n: t.format.name for n, t in f.tensors.items()}
        keys = list(f.metadata)
    assert types["output.weight"] == "Q8_0" and types["blk.1.ffn_down.weight"] == "Q5_K"
    assert types["blk.0.attn_v.weight"] == "Q4_K" and types["output_norm.weight"] == "F32"
    assert keys[-2:] == ["general.quantization_version", "general.file_type"]
    assert r.nbytes == out.stat().st_size and r.bpw == pytest.approx(r.plan.bpw)


def test_bad_input_never_touches_the_model(tmp_path):
    src = tmp_path / "tiny.gguf"
    ts = _tiny_model(src)
    before = _sha(src)
    out = tmp_path / "out.gguf"
    with pytest.raises(FormatError, match="unknown file type"):
        recipes.quantize_model(src, out, "Q4_K_XXL", verbose=False, progress=False)
    with pytest.raises(ImatrixRequired, match="importance matrix"):
        recipes.quantize_model(src, out, "IQ1_S", verbose=False, progress=False)
    with pytest.raises(ImatrixRequired):
        recipes.quantize_model(src, out, "IQ2_XXS", verbose=False, progress=False)
    # SmolLM2's imatrix names tensors of the same names but 576 columns: another model
    with pytest.raises(ImatrixError, match="another model"):
        recipes.quantize_model(src, out, "Q4_K_M", imatrix=DATA / "smollm2-imatrix.gguf", verbose=False, progress=False)
    with pytest.raises(ImatrixError, match="another model"):
        recipes.quantize_model(
            src, out, "Q4_K_M", imatrix={"enc.layer.0.w": np.ones(8, np.float32)}, verbose=False, progress=False
        )
    bad = _tiny_imatrix(ts)
    bad["blk.0.ffn_up.weight"] = np.full(D, np.nan, np.float32)
    with pytest.raises(ImatrixError, match="non-finite"):
        recipes.quantize_model(src, out, "Q4_K_M", imatrix=bad, verbose=False, progress=False)
    with pytest.raises(recipes.RecipeError, match="same file"):
        recipes.quantize_model(src, src, "Q4_K_M", verbose=False, progress=False)
    with pytest.raises(recipes.RecipeError, match="same file"):
        recipes.quantize_model(src, tmp_path / "." / "tiny.gguf", "Q8_0", verbose=False, progress=False)
    with pytest.raises(recipes.RecipeError, match="does not exist"):
        recipes.quantize_model(tmp_path / "missing.gguf", out, "Q8_0", verbose=False, progress=False)
    assert _sha(src) == before
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["tiny.gguf"]
    # requantizing needs to be asked for
    q = tmp_path / "q.gguf"
    recipes.quantize_model(src, q, "Q4_0", verbose=False, progress=False)
    with pytest.raises(recipes.RecipeError, match="allow_requantize"):
        recipes.quantize_model(q, out, "Q8_0", verbose=False, progress=False)
    assert not out.exists()


def test_failure_midway_leaves_no_file(tmp_path, monkeypatch):
    """A tensor that fails to quantize, or a write that fails on the write-behind thread, stops the run
    with that error; neither the output nor a temporary file is left behind."""
    import errno
    import os

    import quantlab.gguf.writer as gw
    from quantlab.recipes import pipeline

    src = tmp_path / "tiny.gguf"
    _tiny_model(src)
    out = tmp_path / "out.gguf"
    real = pipeline._quantize_tensor
    calls = []

    def fails_on_the_fourth(t, *a):
        calls.append(t.name)
        if len(calls) == 4:
            raise RuntimeError("kernel failed")
        return real(t, *a)

    monkeypatch.setattr(pipeline, "_quantize_tensor", fails_on_the_fourth)
    with pytest.raises(RuntimeError, match="kernel failed"):
        recipes.quantize_model(src, out, "Q4_K_M", verbose=False, progress=False)
    assert len(calls) == 4 and sorted(q.name for q in tmp_path.iterdir()) == ["tiny.gguf"]
    monkeypatch.setattr(pipeline, "_quantize_tensor", real)
    real_writev, n = os.writev, []

    def disk_full_after_the_header(fd, bufs):
        n.append(1)
        if len(n) > 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_writev(fd, bufs)

    monkeypatch.setattr(gw.os, "writev", disk_full_after_the_header)
    with pytest.raises(gguf.GGUFError, match="No space left"):
        recipes.quantize_model(src, out, "Q4_K_M", verbose=False, progress=False)
    assert sorted(q.name for q in tmp_path.iterdir()) == ["tiny.gguf"]


def _gguf_py_model(path, ts, md, endian):
    """The tiny model written by gguf-py, in either byte order (what ``convert_hf_to_gguf --bigendian``
    makes). Metadata values are given as (value, gguf-py type) to pin the types."""
    import gguf as gp

    w = gp.GGUFWriter(str(path), md["general.architecture"], endianess=endian)
    for k, v in md.items():
        if k == "general.architecture":
            continue
        if isinstance(v, str):
            w.add_string(k, v)
        elif isinstance(v, list):
            w.add_array(k, v)
        else:
            w.add_uint32(k, v)
    for k, v in ts.items():
        w.add_tensor(k, v)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_big_endian_model_quantizes_to_what_the_little_endian_one_gives(tmp_path):
    """issue 18 #1: a big-endian input was copied raw and read as '<f4' (norms of 8.8e-44, attn_q of zeros,
    exit 0). Now its values are decoded in the file's byte order and the output is the little-endian file
    that the little-endian twin gives (byte for byte); llama.cpp's own reader (gguf.cpp, what
    llama-quantize opens the model with) refuses the big-endian file, so that is the only output to match."""
    import ctypes as C

    import gguf as gp

    rng = np.random.default_rng(11)
    ts = {
        "token_embd.weight": rng.standard_normal((64, D)).astype(np.float32),
        "blk.0.attn_q.weight": np.ones((4, D), np.float32),
        "blk.0.attn_k.weight": rng.standard_normal((D // 2, D)).astype(np.float16),
        "blk.0.attn_norm.weight": np.linspace(0.5, 1.5, D).astype(np.float32),
        "blk.0.ffn_down.weight": (rng.standard_normal((D, FF)) * 1e-2).astype(np.float32),
    }
    md = {
        "general.architecture": "llama",
        "general.name": "tiny-be",
        "llama.block_count": 1,
        "llama.attention.head_count": 4,
        "llama.attention.head_count_kv": [2],
        "tokenizer.ggml.tokens": ["a", "bc", "déf"] * 10,
    }
    be, le = tmp_path / "be.gguf", tmp_path / "le.gguf"
    _gguf_py_model(be, ts, md, gp.GGUFEndian.BIG)
    _gguf_py_model(le, ts, md, gp.GGUFEndian.LITTLE)
    for ftype in ("Q8_0", "Q4_K_M"):
        r_be = recipes.quantize_model(be, tmp_path / f"be-{ftype}.gguf", ftype, verbose=False, progress=False)
        r_le = recipes.quantize_model(le, tmp_path / f"le-{ftype}.gguf", ftype, verbose=False, progress=False)
        assert r_be.sha256() == r_le.sha256(), f"{ftype}: the big-endian input gives another file"
    with gguf.open(tmp_path / "be-Q8_0.gguf") as f:
        assert f.byte_order == "little"
        assert np.array_equal(f.tensors["blk.0.attn_norm.weight"].numpy(), ts["blk.0.attn_norm.weight"])
        q = f.tensors["blk.0.attn_q.weight"]
        assert np.array_equal(q.data, oracle().quantize(ts["blk.0.attn_q.weight"], q.format.id))
        assert np.abs(q.dequantize() - 1).max() < 1e-3  # not the zeros of the raw copy
        assert f.metadata["tokenizer.ggml.tokens"] == tuple(md["tokenizer.ggml.tokens"])
    # llama.cpp (little-endian host) refuses the big-endian file and reads the little-endian one
    lib = oracle().lib

    class InitParams(C.Structure):
        _fields_ = [("no_alloc", C.c_bool), ("ctx", C.c_void_p)]

    lib.gguf_init_from_file.argtypes = [C.c_char_p, InitParams]
    lib.gguf_init_from_file.restype = C.c_void_p
    lib.gguf_free.argtypes = [C.c_void_p]
    assert not lib.gguf_init_from_file(str(be).encode(), InitParams(True, None))
    ctx = lib.gguf_init_from_file(str(tmp_path / "be-Q8_0.gguf").encode(), InitParams(True, None))
    assert ctx
    lib.gguf_free(ctx)
    # a big-endian file with quantized tensors: refused before anything is written
    q = tmp_path / "be-q.gguf"
    w = gp.GGUFWriter(str(q), "llama", endianess=gp.GGUFEndian.BIG)
    w.add_block_count(1)
    w.add_tensor("blk.0.attn_q.weight", np.zeros((4, 34), np.uint8), raw_dtype=gp.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(recipes.RecipeError, match="big-endian GGUF file with 1 quantized tensor"):
        recipes.quantize_model(q, tmp_path / "x.gguf", "Q4_0", allow_requantize=True, verbose=False, progress=False)
    assert not (tmp_path / "x.gguf").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_big_endian_against_llama_quantize(tmp_path):
    """With llama.cpp's tools built (.cache/oracle/bin, `make peers`): llama-quantize refuses the
    big-endian file (exit 1, 'mismatch between the host and model endianness', nothing written), and
    quantlab's output for it is byte for byte llama-quantize's for the little-endian twin."""
    import os
    import subprocess

    import gguf as gp

    root = pathlib.Path(__file__).resolve().parent.parent / ".cache/oracle"
    tool = root / "bin/llama-quantize"
    if not tool.exists():
        pytest.skip("llama-quantize is not built (make peers)")
    rng = np.random.default_rng(11)
    ts = {
        "token_embd.weight": rng.standard_normal((64, D)).astype(np.float32),
        "blk.0.attn_q.weight": np.ones((D, D), np.float32),
        "blk.0.attn_k.weight": rng.standard_normal((D // 2, D)).astype(np.float16),
        "blk.0.attn_norm.weight": np.linspace(0.5, 1.5, D).astype(np.float32),
    }
    paths = {}
    for e, endian in (("be", gp.GGUFEndian.BIG), ("le", gp.GGUFEndian.LITTLE)):
        w = gp.GGUFWriter(str(tmp_path / f"{e}.gguf"), "llama", endianess=endian)
        w.add_block_count(1)
        w.add_head_count(4)
        w.add_head_count_kv(2)
        w.add_context_length(64)
        w.add_embedding_length(D)
        w.add_feed_forward_length(FF)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_rope_dimension_count(64)
        for k, v in ts.items():
            w.add_tensor(k, v)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        paths[e] = tmp_path / f"{e}.gguf"
    env = {**os.environ, "LD_LIBRARY_PATH": str(root / "lib")}
    p = subprocess.run(
        [str(tool), str(paths["be"]), str(tmp_path / "be-llq.gguf"), "Q4_K_M"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert p.returncode == 1 and "endianness" in p.stderr + p.stdout
    assert not (tmp_path / "be-llq.gguf").exists()
    p = subprocess.run(
        [str(tool), str(paths["le"]), str(tmp_path / "le-llq.gguf"), "Q4_K_M"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    r = recipes.quantize_model(paths["be"], tmp_path / "be-ql.gguf", "Q4_K_M", verbose=False, progress=False)
    assert r.sha256() == _sha(tmp_path / "le-llq.gguf")


def test_cli_quantize(tmp_path, capsys):
    from quantlab.cli import main

    src = tmp_path / "tiny.gguf"
    _tiny_model(src)
    out = tmp_path / "o.gguf"
    assert main(["quantize", "--tensor-type", "attn_q=q8_0", "--no-progress", str(src), str(out), "Q4_K_S", "1"]) == 0
    text = capsys.readouterr().out
    assert "blk.0.attn_q.weight" in text and "--tensor-type attn_q=Q8_0" in text and "quant size" in text
    # the time of the quantization, then of the whole process so far (which includes it)
    took = float(re.search(r"(?m)^time +=\s*([0-9.]+) s", text).group(1))
    whole = float(re.search(r"(?m)^process +=\s*([0-9.]+) s since", text).group(1))
    assert whole >= took - 0.03  # both at 10 ms resolution
    with gguf.open(out) as f:
        assert f.tensors["blk.0.attn_q.weight"].format.name == "Q8_0"
    assert main(["quantize", str(src), str(tmp_path / "x.gguf"), "Q9_K"]) == 1
    assert "unknown file type" in capsys.readouterr().err
    assert main(["quantize", str(src), str(src), "Q4_0"]) == 1
    assert "same file" in capsys.readouterr().err


def test_cli_starts_numba_without_importing_scipy_linalg():
    """`quantlab quantize` imports numba with scipy, yaml, cffi and scipy.linalg hidden (optional for numba,
    unused by the kernels, a third of its start-up) and puts them back at once: gguf-py (which imports yaml;
    the IQ grids come from it) imports inside, BLAS and scipy work after."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, quantlab\n"
        "from quantlab.recipes.cli import quick_numba_start\n"
        "with quick_numba_start():\n"
        "    hidden = sorted(m for m in ('scipy', 'yaml', 'cffi', 'scipy.linalg') if m in sys.modules)\n"
        "    quantlab.quantize(np.ones((1, 32), np.float32), 'Q8_0', threads=1)\n"
        "    print(hidden, 'scipy.linalg.cython_blas' in sys.modules)\n"
        "    import gguf\n"
        "import numba, scipy.linalg, yaml, cffi\n"
        "dot = numba.njit(lambda a, b: np.dot(a, b))\n"
        "a, m, y = np.arange(6.0).reshape(2, 3), np.array([[2.0, 1.0], [1.0, 3.0]]), np.array([1.0, 2.0])\n"
        "print(np.array_equal(dot(a, a.T), a @ a.T), np.allclose(m @ scipy.linalg.solve(m, y), y))\n"
    )
    for _ in range(2):  # the first run compiles Q8_0's kernel when the cache lacks it (and so sets numba up)
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
    lines = p.stdout.splitlines()
    assert lines[0] == "[] False"  # numba running, none of them imported
    assert lines[1] == "True True"  # BLAS, scipy, yaml, cffi still there after


def test_decode_ahead_overlaps_and_reports_its_errors(tmp_path, monkeypatch):
    """The next tensor is decoded on the decode-ahead thread while the current one is quantized: the same
    bytes as decoding in turn, and a decoding that fails there stops the run with its error (raised in the
    caller's thread), no output and no temporary file left."""
    import threading

    from quantlab.recipes import pipeline

    src = tmp_path / "tiny.gguf"
    _tiny_model(src)
    monkeypatch.setattr(pipeline, "_DECODE_AHEAD", False)
    one = recipes.quantize_model(src, tmp_path / "one.gguf", "Q4_K_M", verbose=False, progress=False)
    monkeypatch.setattr(pipeline, "_DECODE_AHEAD", True)
    real, where = pipeline._decode, []

    def decode(t, *a):
        where.append(threading.current_thread().name)
        return real(t, *a)

    monkeypatch.setattr(pipeline, "_decode", decode)
    two = recipes.quantize_model(src, tmp_path / "two.gguf", "Q4_K_M", verbose=False, progress=False)
    assert one.sha256() == two.sha256()
    assert any(w.startswith("quantlab-decode") for w in where)  # decoded ahead, off the caller's thread

    def fails_on_the_third(t, *a):
        where.append(t.name)
        if len(where) == 3:
            raise RuntimeError("decoding failed")
        return real(t, *a)

    where.clear()
    monkeypatch.setattr(pipeline, "_decode", fails_on_the_third)
    with pytest.raises(RuntimeError, match="decoding failed"):
        recipes.quantize_model(src, tmp_path / "three.gguf", "Q4_K_M", verbose=False, progress=False)
    assert sorted(q.name for q in tmp_path.iterdir()) == ["one.gguf", "tiny.gguf", "two.gguf"]


def test_quick_numba_start_loads_cached_kernels_without_numba_s_compiler():
    """Inside quick_numba_start a cached kernel is loaded without numba's typing/lowering registries (the
    ~0.1 s numba's own loading spends setting them up) and computes the same bytes; a kernel that is not
    cached still compiles there (numba's compiler sets its registries up itself); numba's loader is back
    after."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, numba, quantlab\n"
        "from numba.core import caching\n"
        "from quantlab.recipes.cli import quick_numba_start\n"
        "x = np.linspace(-3, 3, 4 * 256, dtype=np.float32).reshape(4, 256)\n"
        "own = caching.Cache.load_overload\n"
        "with quick_numba_start():\n"
        "    q = quantlab.quantize(x, 'Q4_K', threads=1)\n"
        "    print('numba.np.arraymath' in sys.modules, caching.Cache.load_overload is own)\n"
        "    f = numba.njit(lambda v: (v * v).sum())\n"  # not cached: numba compiles it here
        "    print(f(np.arange(4)) == 14, 'numba.np.arraymath' in sys.modules)\n"
        "print(caching.Cache.load_overload is own)\n"
        "print(np.array_equal(q, quantlab.quantize(x, 'Q4_K', impl='reference')))\n"
    )
    run = lambda: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)  # noqa: E731
    p = run()  # compiles Q4_K's kernel when the cache does not have it yet
    assert p.returncode == 0, p.stderr[-2000:]
    p = run()  # now it is cached
    assert p.returncode == 0, p.stderr[-2000:]
    lines = p.stdout.splitlines()
    assert lines[0] == "False False"  # loaded without numba's registries, through quantlab's loader
    assert lines[1] == "True True"  # a fresh njit function compiled (numba set its registries up) and ran
    assert lines[2:] == ["True", "True"]  # numba's loader is back; the same bytes as the reference


def test_imatrix_file_loader():
    im = recipes.load_imatrix_file(DATA / "smollm2-imatrix.gguf")
    assert len(im) == 210 and im.chunk_count == 40 and im.datasets
    with gguf.open(DATA / "smollm2-imatrix.gguf") as f:
        s = f.tensors["blk.0.ffn_down.weight.in_sum2"].numpy().reshape(-1)
        c = f.tensors["blk.0.ffn_down.weight.counts"].numpy().reshape(-1)
    assert np.array_equal(im["blk.0.ffn_down.weight"], (s / np.float32(round(float(c[0])))).astype(np.float32))


# ---------------------------------------------------------------------------------------------------
# whole SmolLM2 (requantized from Q4_1): sha256 of the file == llama-quantize's
# ---------------------------------------------------------------------------------------------------

RUNS = {r["key"]: r for r in FIXTURE.get("runs", [])}


@pytest.mark.slow
@pytest.mark.parametrize("key", ["Q8_0", "Q4_K_M"])
def test_whole_model_sha256_matches_llama_quantize(tmp_path, key, monkeypatch):
    from quantlab import data

    rec = RUNS[key]
    monkeypatch.chdir(pathlib.Path(__file__).parent.parent)  # the imatrix path is stored as given
    out = tmp_path / "out.gguf"
    r = recipes.quantize_model(
        data.path("smollm2"),
        out,
        rec["ftype"],
        allow_requantize=True,
        imatrix=FIXTURE["imatrix"] if rec["imatrix"] else None,
        verbose=False,
        progress=False,
    )
    assert r.nbytes == rec["size"]
    assert r.sha256() == rec["sha256"], f"{key}: output differs from llama-quantize's"


# ---------------------------------------------------------------------------------------------------
# the optimizer (beyond llama.cpp)
# ---------------------------------------------------------------------------------------------------

CANDS = ("Q4_0", "Q5_0", "Q8_0", "Q4_K", "Q6_K")  # a few, to keep the test quick


def test_optimize_under_budget_and_writes_its_choice(tmp_path):
    src = tmp_path / "tiny.gguf"
    ts = _tiny_model(src)
    im = _tiny_imatrix(ts)
    r = recipes.optimize(src, "Q4_K_M", imatrix=im, max_rows=None, threads=1, candidates=CANDS)
    base = make_plan(
        [(n, tuple(reversed(v.shape)), "F32") for n, v in ts.items()],
        "Q4_K_M",
        {"llama.block_count": N_LAYER, "llama.attention.head_count": 4, "llama.attention.head_count_kv": 2},
        has_imatrix=True,
    )
    assert r.budget == base.nbytes and r.nbytes <= r.budget
    # every tensor with an imatrix entry is optimized; the rest (embeddings, norms) keep the base plan
    assert set(r.choice) == set(im)
    assert r.error <= r.base_error()
    # the frontier is what a Lagrangian sweep gives: more bytes never cost more error
    fr = sorted(r.frontier, key=lambda p: (p["bytes"], p["error"]))
    assert all(b["error"] <= a["error"] + 1e-9 * abs(a["error"]) for a, b in zip(fr, fr[1:]) if b["bytes"] > a["bytes"])
    # the errors are measured, not guessed: recompute one
    n, fmt = next(iter(r.choice.items()))
    x = ts[n]
    q = recipes_quant_dequant(x, fmt, im[n])
    want = float((((x.astype(np.float64) - q) ** 2).sum(axis=0) * im[n]).sum())
    assert r.errors[n][fmt.name] == pytest.approx(want, rel=1e-9)
    # written with the base file type plus one --tensor-type override per tensor
    out = tmp_path / "opt.gguf"
    res = recipes.quantize_model(src, out, "Q4_K_M", imatrix=im, options=r.options(), verbose=False, progress=False)
    with gguf.open(out) as f:
        assert {k: f.tensors[k].format.name for k in r.choice} == {k: v.name for k, v in r.choice.items()}
    assert res.plan.nbytes == r.nbytes
    assert r.llama_quantize_args()[:2] == [
        "--tensor-type",
        f"{r.tensor_types()[0][0]}={r.tensor_types()[0][1].name.lower()}",
    ]
    # a tighter budget gives a smaller model with more error
    r2 = recipes.optimize(src, 4.6, imatrix=im, max_rows=None, threads=1, candidates=CANDS)
    assert r2.nbytes <= r2.budget < r.budget and r2.error > r.error


def recipes_quant_dequant(x, fmt, w):
    import quantlab

    return quantlab.dequantize(quantlab.quantize(x, fmt, imatrix=w if fmt.uses_imatrix else None), fmt).astype(
        np.float64
    )
