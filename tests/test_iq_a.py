"""IQ4_NL, IQ4_XS, IQ3_XXS, IQ3_S beyond the shared parity test: real weights, inspect_block, the inputs
on which ggml aborts (checked in a forked child process), layout quirks, and the IQ4 nearest-entry search."""

from __future__ import annotations

import faulthandler
import os

import numpy as np
import pytest

import quantlab
import quantlab.data
from quantlab.errors import NonFiniteError, QuantizationError
from quantlab.formats import get
from quantlab.formats import iq4 as ref4
from quantlab.formats._iqgrid import ksigns, kvalues_iq4nl, lattice

from .cases import GGML_ABORTS, float_cases, imatrix_cases
from .oracle import oracle

NAMES = ["IQ4_NL", "IQ4_XS", "IQ3_XXS", "IQ3_S"]
IMPLS = ["reference", "fast"]


def _eq(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    if not np.array_equal(a, b):
        bad = np.argwhere(a != b)
        raise AssertionError(
            f"{what}: {len(bad)} elements differ, first at {tuple(bad[0])}: "
            f"{a[tuple(bad[0])]} != oracle {b[tuple(bad[0])]}"
        )


# ----------------------------------------------------------------------------------------------------
# real weights
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    t = quantlab.data.tensors("minilm")
    ffn_out = t["encoder.layer.2.output.dense.weight"]  # (384, 1536): rows of 6*256
    # stand-in imatrix for ffn_out's 1536 inputs (the intermediate neurons): the mean square of each
    # neuron's incoming weights (larger rows -> larger activations), a real, uneven spread
    im = np.mean(np.square(t["encoder.layer.2.intermediate.dense.weight"]), axis=1).astype(np.float32)
    # other tensors, flattened into rows of 768 = 3*256
    flat = np.concatenate(
        [
            t["encoder.layer.0.attention.self.query.weight"].reshape(-1),
            t["encoder.layer.5.attention.output.dense.weight"].reshape(-1),
            t["embeddings.word_embeddings.weight"][1000:1400].reshape(-1),
        ]
    ).reshape(-1, 768)
    im768 = (10.0 ** np.random.default_rng(11).uniform(-3, 1, 768)).astype(np.float32)
    return [
        ("ffn_out", np.ascontiguousarray(ffn_out[:48]), im),
        ("flattened q/o/embeddings", np.ascontiguousarray(flat[::12][:64]), im768),
    ]


@pytest.fixture(scope="module")
def smollm2():
    t = quantlab.data.tensors("smollm2")
    down = t["blk.3.ffn_down.weight"]  # (576, 1536)
    q = t["blk.7.attn_q.weight"].reshape(-1, 768)  # 576*576 = 432 rows of 768
    im = np.mean(np.square(t["blk.3.ffn_up.weight"]), axis=1).astype(np.float32)  # (1536,)
    return [
        ("ffn_down", np.ascontiguousarray(down[:32]), im),
        ("attn_q flattened", np.ascontiguousarray(q[::16][:24]), None),
    ]


@pytest.mark.parametrize("name", NAMES)
def test_real_weights_fast_vs_ggml(name, minilm, smollm2):
    f, g = get(name), oracle()
    for what, x, im in minilm + smollm2:
        for imv in (None, im) if im is not None else (None,):
            got = quantlab.quantize(x, f, imatrix=imv, impl="fast")
            _eq(got, g.quantize(x, f.id, imv), f"{name} fast {what} imatrix={imv is not None}")
            _eq(
                quantlab.dequantize(got, f).view(np.uint32),
                g.dequantize(got, f.id, x.shape[1]).view(np.uint32),
                f"{name} dequantize {what}",
            )
        if im is not None:
            assert not np.array_equal(quantlab.quantize(x, f, imatrix=im), quantlab.quantize(x, f)), (
                f"{name}: the imatrix should change the bytes"
            )


@pytest.mark.parametrize("name", NAMES)
def test_real_weights_reference_subsample(name, minilm, smollm2):
    f, g = get(name), oracle()
    for what, x, im in minilm + smollm2:
        xs = np.ascontiguousarray(x[::8][:4])
        for imv in (None, im) if im is not None else (None,):
            _eq(
                quantlab.quantize(xs, f, imatrix=imv, impl="reference"),
                g.quantize(xs, f.id, imv),
                f"{name} reference {what} imatrix={imv is not None}",
            )


@pytest.mark.parametrize("name", NAMES)
def test_quantization_error_is_sensible(name, minilm):
    """Not a bit-exactness check: the quantized real weights are close to the originals."""
    _, x, im = minilm[0]
    y = quantlab.dequantize(quantlab.quantize(x, name, imatrix=im), name)
    rel = np.sqrt(np.mean((y - x) ** 2) / np.mean(x**2))
    bound = {"IQ4_NL": 0.12, "IQ4_XS": 0.12, "IQ3_XXS": 0.25, "IQ3_S": 0.22}[name]
    assert rel < bound, f"{name}: relative RMS error {rel:.3f}"


@pytest.mark.parametrize("name", NAMES)
def test_imatrix_lowers_weighted_error(name, minilm):
    """With an importance matrix the error weighted by that matrix goes down (what it is for)."""
    _, x, im = minilm[0]

    def werr(y):
        return float(np.sum(im * (y - x) ** 2) / np.sum(im * x**2))

    with_im = werr(quantlab.dequantize(quantlab.quantize(x, name, imatrix=im), name))
    without = werr(quantlab.dequantize(quantlab.quantize(x, name), name))
    assert with_im < without, f"{name}: weighted error {with_im:.5f} with imatrix vs {without:.5f} without"


# ----------------------------------------------------------------------------------------------------
# where ggml aborts: quantlab raises QuantizationError (and ggml really aborts, checked in a subprocess)
# ----------------------------------------------------------------------------------------------------

_WARM: set = set()


def _ggml_in_subprocess(tmp_path, t, x, im):
    """(aborted, bytes or None): ggml_quantize_chunk run in a forked child (an abort kills only the
    child; forking reuses the loaded library, so a probe costs milliseconds, not a Python start-up)."""
    g = oracle()
    if t not in _WARM:  # let ggml build its grid tables once here, so that every child inherits them
        g.quantize(np.ones((1, 256), np.float32), t, None)
        _WARM.add(t)
    x = np.ascontiguousarray(x, dtype=np.float32)
    err = tmp_path / f"stderr-{os.getpid()}.txt"
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: quantize, send the bytes, exit
        code = 3
        try:
            os.close(rfd)
            faulthandler.disable()  # the abort is expected: no Python crash dump
            os.environ["GGML_NO_BACKTRACE"] = "1"  # no gdb backtrace on abort
            fd = os.open(str(err), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 2)
            data = g.quantize(x, t, im).tobytes()
            with os.fdopen(wfd, "wb") as w:
                w.write(data)
            code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as r:
        data = r.read()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert "GGML_ASSERT" in err.read_text(errors="replace"), err.read_text(errors="replace")[-2000:]
        return True, None
    assert os.WEXITSTATUS(status) == 0
    return False, np.frombuffer(data, dtype=np.uint8).reshape(x.shape[0], -1)


def _scaled(scale, n=256, rows=2, seed=0):
    return (np.random.default_rng(seed).standard_normal((rows, n)) * scale).astype(np.float32)


ABORT_PROBES = [  # (label, x, imatrix): measured boundaries of ggml's overflow
    ("gauss 1e30 (tests/cases 'huge')", _scaled(1e30), None),
    ("gauss 1e30, imatrix", _scaled(1e30), np.ones(256, np.float32)),
    ("gauss 1e13, no imatrix", _scaled(1e13), None),
    ("gauss 1e13, imatrix (no abort)", _scaled(1e13), np.ones(256, np.float32)),
    ("gauss 1e12.5 (no abort)", _scaled(10**12.5), None),
    ("gauss 1e16, imatrix", _scaled(1e16), np.ones(256, np.float32)),
    ("one outlier 1e14 in small weights", np.where(np.arange(256) == 5, np.float32(1e14), _scaled(0.1)), None),
]


@pytest.mark.parametrize("name", ["IQ3_XXS", "IQ3_S"])
def test_raises_exactly_where_ggml_aborts(name, tmp_path):
    f = get(name)
    n_abort = 0
    for label, x, im in ABORT_PROBES:
        aborted, want = _ggml_in_subprocess(tmp_path, f.id, x, im)
        for impl in IMPLS:
            if aborted:
                with pytest.raises(QuantizationError, match=r"row \d+ .*aborts.*Rescale"):
                    quantlab.quantize(x, f, imatrix=im, impl=impl)
            else:
                _eq(quantlab.quantize(x, f, imatrix=im, impl=impl), want, f"{name} {impl} {label}")
        n_abort += aborted
    assert 0 < n_abort < len(ABORT_PROBES)  # the probes straddle the boundary


@pytest.mark.parametrize("name", ["IQ3_XXS", "IQ3_S"])
def test_parity_abort_cases_really_abort(name, tmp_path):
    """Every (format, case) listed in tests/cases.GGML_ABORTS for these types aborts ggml, for every
    imatrix case of the parity test."""
    f = get(name)
    n = 512
    cases = dict(float_cases(n))
    for fmt, cname in GGML_ABORTS:
        if fmt != name:
            continue
        for iname, im in imatrix_cases(n):
            aborted, _ = _ggml_in_subprocess(tmp_path, f.id, cases[cname].reshape(-1, n), im)
            assert aborted, f"{name} {cname} {iname}: ggml did not abort; remove it from GGML_ABORTS"


@pytest.mark.parametrize("name", ["IQ4_NL", "IQ4_XS"])
@pytest.mark.parametrize("impl", IMPLS)
def test_iq4_extreme_magnitudes_never_abort(name, impl):
    """IQ4 has no asserts: even 1e38 weights (sums overflow to inf, NaN scales) give ggml's bytes."""
    g = oracle()
    x = np.concatenate([_scaled(1e37, 512), _scaled(1e19, 512), _scaled(1e-38, 512)])
    x[0, 3] = np.float32(3.4e38)
    x[1, 300] = np.float32(-3.4e38)
    for im in (None, np.linspace(0, 2, 512, dtype=np.float32)):
        _eq(
            quantlab.quantize(x, name, imatrix=im, impl=impl), g.quantize(x, get(name).id, im), f"{name} {impl} extreme"
        )


@pytest.mark.parametrize("name", NAMES)
def test_non_finite_input_is_refused(name):
    x = _scaled(1.0)
    x[1, 17] = np.nan
    with pytest.raises(NonFiniteError, match="row 1, column 17"):
        quantlab.quantize(x, name)


# ----------------------------------------------------------------------------------------------------
# layout quirks and edge blocks, against ggml
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_iq3_s_zero_block_shifts_later_blocks(impl):
    """ggml's IQ3_S quantizer does not advance its qs/signs write position over an all-zero block of 32:
    later blocks' indices and signs move up, the tail stays zero. quantlab reproduces the bytes."""
    g = oracle()
    x = _scaled(1.0, 256, rows=3, seed=4)
    x[0, 64:96] = 0  # block 2 of row 0
    x[1, 0:32] = 0  # block 0 of row 1
    x[1, 224:256] = 0  # and the last block
    q = quantlab.quantize(x, "IQ3_S", impl=impl)
    _eq(q, g.quantize(x, 21), f"IQ3_S {impl} zero blocks")
    assert not q[0, 2 + 56 : 2 + 64].any() and not q[0, 74 + 28 : 74 + 32].any()
    assert not q[1, 2 + 48 : 2 + 64].any() and q[2, 2 + 56 : 2 + 64].any()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("impl", IMPLS)
def test_edge_blocks_match_ggml(name, impl):
    """Blocks below the type's epsilon next to live ones, a single non-zero weight, sign-parity flips."""
    g = oracle()
    f = get(name)
    x = _scaled(1.0, 512, rows=6, seed=9)
    x[0, 32:64] *= 1e-9  # below IQ3_XXS's 1e-8 threshold
    x[1, :] = 0
    x[1, 300] = -2.0  # one weight in an otherwise zero row
    x[2, :256] = -np.abs(x[2, :256])  # all negative: parity flips everywhere in IQ3_XXS
    x[3, ::2] = 0.5  # repeated values / ties
    x[4] = np.float32(1e-20) * np.sign(x[4])  # tiny but non-zero
    for im in (None, np.abs(_scaled(1.0, 512, rows=1, seed=1))[0]):
        _eq(quantlab.quantize(x, f, imatrix=im, impl=impl), g.quantize(x, f.id, im), f"{name} {impl} edges")


# ----------------------------------------------------------------------------------------------------
# inspect_block
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_blocks():
    x = _scaled(0.05, 512, rows=2, seed=21)
    return {name: (x, quantlab.quantize(x, name)) for name in NAMES}


def test_inspect_iq4_nl(sample_blocks):
    x, q = sample_blocks["IQ4_NL"]
    for i in (0, 5, 31):
        info = quantlab.inspect_block(q, "IQ4_NL", i)
        b = info["bytes"]
        assert info["d_bits"] == int(b[0]) | int(b[1]) << 8
        assert np.array_equal(info["codes"][:16], b[2:] & 15) and np.array_equal(info["codes"][16:], b[2:] >> 4)
        assert np.array_equal(info["levels"], kvalues_iq4nl()[info["codes"]])
        vals = (info["d"] * info["levels"].astype(np.float32)).astype(np.float32)
        _eq(vals.view(np.uint32), info["values"].view(np.uint32), "IQ4_NL values from fields")
        xb = x.reshape(-1, 32)[i]
        assert np.max(np.abs(info["values"] - xb)) < 0.2 * np.max(np.abs(xb))


def test_inspect_iq4_xs(sample_blocks):
    _x, q = sample_blocks["IQ4_XS"]
    info = quantlab.inspect_block(q, "IQ4_XS", 1)
    assert info["scales"].shape == (8,) and info["scales"].min() >= 0 and info["scales"].max() <= 63
    assert np.array_equal(info["multipliers"], info["scales"] - 32)
    # the block with the largest scale gets multiplier -32 exactly (d = -max_scale/32)
    assert (info["multipliers"] == -32).any()
    bs = (info["d"] * info["multipliers"].astype(np.float32)).astype(np.float32)
    _eq(bs.view(np.uint32), info["block_scales"].view(np.uint32), "IQ4_XS block scales")
    vals = (np.repeat(bs, 32) * kvalues_iq4nl()[info["codes"]].astype(np.float32)).astype(np.float32)
    _eq(vals.view(np.uint32), info["values"].view(np.uint32), "IQ4_XS values from fields")


def test_inspect_iq3_xxs(sample_blocks):
    x, q = sample_blocks["IQ3_XXS"]
    info = quantlab.inspect_block(q, "IQ3_XXS", 1)
    lat = lattice("iq3xxs")
    assert info["grid_indices"].shape == (8, 8)
    assert np.array_equal(info["grid_values"], lat.values[info["grid_indices"]])
    assert np.array_equal(info["sign_masks"], ksigns()[info["sign_indices"]])
    # even number of minus signs in every group of 8 (the 8th sign is implied)
    assert np.all((info["signs"].reshape(32, 8) < 0).sum(axis=1) % 2 == 0)
    db = ((info["d"] * (np.float32(0.5) + info["scales"].astype(np.float32))) * np.float32(0.5)).astype(np.float32)
    _eq(db.view(np.uint32), info["block_scales"].view(np.uint32), "IQ3_XXS block scales")
    vals = (np.repeat(db, 32) * info["grid_values"].reshape(256).astype(np.float32)) * info["signs"].astype(np.float32)
    _eq(vals.astype(np.float32).view(np.uint32), info["values"].view(np.uint32), "IQ3_XXS values from fields")
    # signs agree with the weights except where the parity fix flipped the least important one
    xb = x.reshape(-1, 256)[1]
    agree = np.sign(xb) == info["signs"]
    assert agree.mean() > 0.9


def test_inspect_iq3_s(sample_blocks):
    x, q = sample_blocks["IQ3_S"]
    info = quantlab.inspect_block(q, "IQ3_S", 2)
    lat = lattice("iq3s")
    assert info["grid_indices"].max() < 512
    assert np.array_equal(info["grid_values"], lat.values[info["grid_indices"]])
    db = (info["d"] * (1 + 2 * info["scales"]).astype(np.float32)).astype(np.float32)
    _eq(db.view(np.uint32), info["block_scales"].view(np.uint32), "IQ3_S block scales")
    vals = (np.repeat(db, 32) * info["grid_values"].reshape(256).astype(np.float32)) * info["signs"].astype(np.float32)
    _eq(vals.astype(np.float32).view(np.uint32), info["values"].view(np.uint32), "IQ3_S values from fields")
    # IQ3_S stores every sign: they are exactly the weights' signs (no zero weights here)
    xb = x.reshape(-1, 256)[2]
    assert np.array_equal(np.sign(xb).astype(np.int32), info["signs"])


# ----------------------------------------------------------------------------------------------------
# the IQ4 nearest-entry search
# ----------------------------------------------------------------------------------------------------


def _best_index_c(vals, x):
    """ggml's best_index_int8, literally (binary search), one float at a time."""
    if x <= vals[0]:
        return 0
    if x >= vals[-1]:
        return len(vals) - 1
    ml, mu = 0, len(vals) - 1
    while mu - ml > 1:
        mav = (ml + mu) // 2
        if x < vals[mav]:
            mu = mav
        else:
            ml = mav
    return mu - 1 if np.float32(x - vals[mu - 1]) < np.float32(vals[mu] - x) else mu


def test_best_index_matches_binary_search():
    from numba import njit

    from quantlab.kernels import iq4 as k4

    vals = kvalues_iq4nl().astype(np.float32)
    cnt = k4._counts(kvalues_iq4nl())
    bi = k4.best_index

    @njit
    def many(xs, out):
        for i in range(xs.size):
            out[i] = bi(vals, xs[i], cnt)

    rng = np.random.default_rng(0)
    mids = (vals[:-1] + vals[1:]) / 2
    xs = np.concatenate(
        [
            rng.uniform(-140, 130, 4000).astype(np.float32),
            vals,
            mids.astype(np.float32),
            np.nextafter(mids, np.float32(np.inf)).astype(np.float32),
            np.nextafter(mids, np.float32(-np.inf)).astype(np.float32),
            np.nextafter(vals, np.float32(np.inf)),
            np.nextafter(vals, np.float32(-np.inf)),
            np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30], np.float32),
        ]
    ).astype(np.float32)
    want = np.array([_best_index_c(vals, np.float32(v)) for v in xs])
    out = np.empty(xs.size, np.int64)
    many(xs, out)
    assert np.array_equal(out, want)
    assert np.array_equal(ref4.best_index_int8(kvalues_iq4nl(), xs), want)
