"""IQ2_XXS, IQ2_XS, IQ2_S, IQ1_S, IQ1_M beyond the parity suite: real weights, inspect_block, errors.

Real weights: all-MiniLM-L6-v2 (fp32) with its real importance matrix (quantlab/assets/minilm_imatrix.npz) and a few
SmolLM2 tensors, flattened to rows of 256*k; the numba kernels are compared with ggml byte for byte, the
numpy reference on a few blocks per tensor.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import quantlab
import quantlab.data
from quantlab.errors import ImatrixRequired, QuantizationError
from quantlab.formats import get

from .cases import GGML_ABORTS, float_cases
from .oracle import oracle

FORMATS = ["IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ1_S", "IQ1_M"]
MINILM = [
    "encoder.layer.0.attention.self.query.weight",
    "encoder.layer.2.intermediate.dense.weight",
    "encoder.layer.5.output.dense.weight",
]
SMOLLM = ["blk.0.attn_q.weight", "blk.3.ffn_down.weight", "blk.7.attn_v.weight"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _eq(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    if not np.array_equal(a, b):
        bad = np.argwhere(a != b)
        raise AssertionError(f"{what}: {len(bad)} bytes differ, first at {tuple(bad[0])}")


def _rows(w: np.ndarray, im: np.ndarray | None, max_rows: int):
    """Flatten a weight matrix into rows of a multiple of 256 that is also a multiple of its input width,
    so the imatrix (one value per input column) tiles exactly; keep the first ``max_rows`` rows."""
    cols = w.shape[-1]
    width = int(np.lcm(cols, 256))
    flat = np.ascontiguousarray(w, dtype=np.float32).reshape(-1)
    n = (flat.size // width) * width
    x = flat[:n].reshape(-1, width)[:max_rows]
    return np.ascontiguousarray(x), (None if im is None else np.tile(im, width // cols).astype(np.float32))


@pytest.fixture(scope="module")
def minilm():
    ts = quantlab.data.tensors("minilm")
    ims = np.load(quantlab.data.asset("minilm_imatrix.npz"))
    return [(k, *_rows(ts[k], ims[k], 48)) for k in MINILM]


@pytest.fixture(scope="module")
def smollm():
    ts = quantlab.data.tensors("smollm2")
    rng = np.random.default_rng(11)
    out = []
    for k in SMOLLM:
        w = ts[k]
        # no SmolLM2 imatrix ships with the data: a positive, uneven stand-in with the right length
        im = (rng.gamma(0.7, 1.0, w.shape[-1]) + 1e-3).astype(np.float32)
        out.append((k, *_rows(w, im, 24)))
    return out


def _check_real(tensors, name):
    f = get(name)
    g = oracle()
    for key, x, im in tensors:
        for imx in [im, None] if not f.requires_imatrix else [im]:
            tag = f"{name} {key} {'imatrix' if imx is not None else 'no imatrix'}"
            want = g.quantize(x, f.id, imx)
            got = quantlab.quantize(x, f, imatrix=imx)
            _eq(got, want, f"{tag}: numba quantize")
            dq = quantlab.dequantize(got, f)
            _eq(dq.view(np.uint32), g.dequantize(want, f.id, x.shape[1]).view(np.uint32), f"{tag}: dequantize")
            # the reference is slow: two blocks of 256 of the first row
            xs = np.ascontiguousarray(x[:1, :512])
            ims = None if imx is None else np.ascontiguousarray(imx[:512])
            _eq(
                quantlab.quantize(xs, f, imatrix=ims, impl="reference"),
                g.quantize(xs, f.id, ims),
                f"{tag}: reference quantize",
            )
            # sanity of the result itself: the reconstruction is correlated with the weights
            c = np.corrcoef(dq.reshape(-1), x.reshape(-1))[0, 1]
            assert c > 0.5, f"{tag}: correlation of the reconstruction only {c:.3f}"


@pytest.mark.parametrize("name", FORMATS)
def test_minilm_weights_match_ggml(minilm, name):
    _check_real(minilm, name)


@pytest.mark.parametrize("name", FORMATS)
def test_smollm2_weights_match_ggml(smollm, name):
    _check_real(smollm, name)


# ----------------------------------------------------------------------------------------------------
# inspect_block
# ----------------------------------------------------------------------------------------------------


def _f16(b0, b1):
    return np.array([int(b0) | (int(b1) << 8)], dtype=np.uint16).view(np.float16).astype(np.float32)[0]


@pytest.mark.parametrize("name", FORMATS)
def test_inspect_block_decodes_the_bytes(name):
    f = get(name)
    rng = np.random.default_rng(5)
    x = (rng.standard_t(4, size=(2, 512)) * 0.05).astype(np.float32)
    im = (rng.random(512) + 0.2).astype(np.float32)
    q = quantlab.quantize(x, f, imatrix=im)
    deq = quantlab.dequantize(q, f)
    from quantlab.formats._iqgrid import lattice

    for i in range(4):
        info = quantlab.inspect_block(q, f, i)
        blk = q.reshape(-1)[i * f.type_size : (i + 1) * f.type_size]
        assert info["format"] == name and info["index"] == i
        _eq(info["bytes"], blk, "bytes")
        _eq(info["values"].view(np.uint32), deq.reshape(-1)[i * 256 : (i + 1) * 256].view(np.uint32), "values")
        gi = info["grid_indices"]
        if name.startswith("IQ2"):
            assert info["d"] == _f16(blk[0], blk[1])
            grid = {"IQ2_XXS": "iq2xxs", "IQ2_XS": "iq2xs", "IQ2_S": "iq2s"}[name]
            nb = 8 if name == "IQ2_XXS" else 16
            assert gi.shape == (nb, 4 if name == "IQ2_XXS" else 2)
            _eq(info["grid_values"], lattice(grid).values[gi].astype(np.int32), "grid values")
            # reconstruct every weight from the decoded fields, independently of the dequantizer
            db = info["block_scales"]
            assert np.array_equal(
                db,
                ((info["d"] * (np.float32(0.5) + info["scales"].astype(np.float32))) * np.float32(0.25)).astype(
                    np.float32
                ),
            )
            vals = info["grid_values"].reshape(nb, -1).astype(np.float32)
            y = (db[:, None] * vals).reshape(-1) * info["signs"].astype(np.float32)
            _eq(y.astype(np.float32).view(np.uint32), info["values"].view(np.uint32), "fields -> values")
            if name != "IQ2_S":  # 7 stored sign bits: an even number of minus signs per group of 8
                assert (
                    np.unpackbits(info["sign_masks"].astype(np.uint8)[..., None], axis=-1).sum(axis=-1) % 2 == 0
                ).all()
            if name == "IQ2_XXS":
                _eq(gi.reshape(-1), blk[2:66].reshape(8, 8)[:, :4].reshape(-1), "index bytes")
            if name == "IQ2_S":
                _eq(gi.reshape(-1) & 255, blk[2:34], "low index bytes")
                _eq(info["sign_masks"].reshape(-1), blk[34:66], "sign bytes")
        else:
            nb = 8 if name == "IQ1_S" else 16
            assert gi.shape[0] == nb and (gi < 2048).all()
            assert set(np.unique(info["grid_values"])) <= {-1, 0, 1}
            dl = info["block_scales"]
            assert np.array_equal(dl, (info["d"] * (2 * info["scales"] + 1).astype(np.float32)))
            deltas = info["deltas"]
            assert set(np.unique(np.abs(deltas))) == {np.float32(0.125)}
            vals = info["grid_values"].astype(np.float32)  # (nb, groups, 8)
            dlt = deltas if deltas.ndim == 2 else np.repeat(deltas[:, None], vals.shape[1], axis=1)
            y = dl[:, None, None] * (vals + dlt[:, :, None])
            _eq(y.astype(np.float32).reshape(-1).view(np.uint32), info["values"].view(np.uint32), "fields -> values")
            if name == "IQ1_S":
                assert info["d"] == _f16(blk[0], blk[1])
                _eq(gi.reshape(-1) & 255, blk[2:34], "low index bytes")
            else:
                _eq(gi.reshape(-1) & 255, blk[0:32], "low index bytes")


def test_inspect_block_of_zeros():
    for name in FORMATS:
        f = get(name)
        q = quantlab.quantize(np.zeros((1, 256), np.float32), f, imatrix=np.ones(256, np.float32))
        assert not q.any(), f"{name}: an all-zero block is all-zero bytes in ggml"
        info = quantlab.inspect_block(q, f)
        assert info["d"] == 0 and not info["values"].any()


# ----------------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["IQ2_XXS", "IQ2_XS", "IQ1_S"])
@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_imatrix_required_message(name, impl):
    x = np.random.default_rng(0).standard_normal((2, 512)).astype(np.float32)
    with pytest.raises(ImatrixRequired) as ei:
        quantlab.quantize(x, name, impl=impl)
    msg = str(ei.value)
    assert msg.startswith(f"{name} cannot be quantized without an importance matrix")
    assert "imatrix=" in msg and "512" in msg and "quantlab.model.compute_imatrix" in msg
    # with one, it works
    q = quantlab.quantize(x, name, imatrix=np.ones(512, np.float32), impl=impl)
    assert q.shape == (2, get(name).row_bytes(512))


@pytest.mark.parametrize("name", ["IQ2_S", "IQ1_M"])
def test_no_imatrix_allowed_where_ggml_allows_it(name):
    x = np.random.default_rng(1).standard_normal((3, 512)).astype(np.float32)
    _eq(quantlab.quantize(x, name), oracle().quantize(x, get(name).id, None), f"{name} without imatrix")


def _ggml_subprocess(name, x, im):
    """Run ggml's quantizer on x in a child process; returns (returncode, stderr)."""
    code = textwrap.dedent(f"""
        import sys, numpy as np
        sys.path.insert(0, {ROOT!r})
        from quantlab.peers import ggml
        d = np.load(sys.argv[1])
        im = d["im"] if d["im"].size else None
        ggml(required=True).quantize(d["x"], {get(name).id}, im)
        print("finished")
    """)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        p = os.path.join(tmp, "in.npz")
        np.savez(p, x=x, im=np.zeros(0, np.float32) if im is None else im)
        env = dict(os.environ, GGML_NO_BACKTRACE="1")
        r = subprocess.run([sys.executable, "-c", code, p], capture_output=True, text=True, env=env, timeout=120)
    return r.returncode, r.stderr + r.stdout


@pytest.mark.parametrize("fmt_case", sorted(c for c in GGML_ABORTS if c[0] in FORMATS))
def test_ggml_aborts_where_quantlab_raises(fmt_case):
    name, cname = fmt_case
    x = dict(float_cases(512))[cname]
    im = np.linspace(0.5, 2, 512, dtype=np.float32)
    rc, out = _ggml_subprocess(name, x, im)
    assert rc != 0 and "finished" not in out, f"ggml did not abort on {fmt_case}: the GGML_ABORTS entry is stale"
    assert "GGML_ASSERT" in out
    for impl in ("fast", "reference"):
        with pytest.raises(QuantizationError) as ei:
            quantlab.quantize(x, name, imatrix=im, impl=impl)
        msg = str(ei.value)
        assert name in msg and "aborts" in msg and "Rescale" in msg


def test_threads_and_row_order_do_not_matter():
    rng = np.random.default_rng(9)
    x = (rng.standard_normal((6, 768)) * 0.1).astype(np.float32)
    im = (rng.random(768) + 0.1).astype(np.float32)
    for name in FORMATS:
        whole = quantlab.quantize(x, name, imatrix=im)
        parts = np.concatenate([quantlab.quantize(x[i : i + 1], name, imatrix=im, threads=1) for i in range(6)])
        _eq(whole, parts, f"{name}: row by row")


# Very large weights: ggml's float32 sums overflow somewhere between 1e10 and 1e20 depending on the type;
# where ggml still finishes, the bytes must match (these exercise inf/NaN paths of the searches).
# (the first IQ1 call in a process is slow on ggml's side: ggml_quantize_init builds the 2048-point
# neighbour map, ~40 s here; our lattice is built in ~1.5 s)
@pytest.mark.parametrize(
    "name,mag,use_im", [("IQ1_M", 1e10, True), ("IQ1_S", 1e15, True), ("IQ1_M", 1e35, False), ("IQ2_XXS", 1e10, True)]
)
def test_extreme_magnitudes_match_ggml(name, mag, use_im):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 512)) * mag).astype(np.float32)
    im = (rng.random(512) * 2 + 0.1).astype(np.float32) if use_im else None
    want = oracle().quantize(x, get(name).id, im)
    for impl in ("fast", "reference"):
        _eq(quantlab.quantize(x, name, imatrix=im, impl=impl), want, f"{name} x{mag:g} {impl}")


def test_iq2_xxs_overflow_abort_matches_ggml():
    # at 1e15 IQ2_XXS's neighbour errors overflow (ggml asserts); at 1e19 its sums are inf/NaN early enough
    # that every block is skipped, and ggml finishes (same bytes, covered above for 1e10)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 512)) * 1e15).astype(np.float32)
    im = (rng.random(512) * 2 + 0.1).astype(np.float32)
    rc, out = _ggml_subprocess("IQ2_XXS", x, im)
    assert rc != 0 and "GGML_ASSERT" in out
    for impl in ("fast", "reference"):
        with pytest.raises(QuantizationError):
            quantlab.quantize(x, "IQ2_XXS", imatrix=im, impl=impl)
