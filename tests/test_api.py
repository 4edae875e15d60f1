"""Bad input gets a named quantlab error (a ValueError) that says what was expected and what was found."""

import numpy as np
import pytest

import quantlab
from quantlab.errors import ImatrixError, ImatrixRequired, NonFiniteError, QuantlabError, ShapeError


def _implemented(name):
    return quantlab.format(name).has_impl("fast", "quantize")


def test_errors_are_value_errors():
    for cls in (ShapeError, NonFiniteError, ImatrixError, ImatrixRequired):
        assert issubclass(cls, ValueError) and issubclass(cls, QuantlabError)


@pytest.mark.parametrize("fmt,n", [("Q4_0", 33), ("Q8_0", 100), ("Q4_K", 576), ("IQ4_XS", 384), ("NVFP4", 96)])
def test_row_not_multiple_of_block(fmt, n):
    f = quantlab.format(fmt)
    with pytest.raises(ShapeError) as e:
        quantlab.quantize(np.ones((2, n), np.float32), fmt)
    msg = str(e.value)
    assert str(f.block_size) in msg and str(n) in msg
    if f.block_size == 256:
        assert "32-block" in msg


@pytest.mark.parametrize(
    "arr", [np.ones(32, np.int32), np.ones(32, bool), np.array(["a"] * 32), np.ones(32, np.complex64)]
)
def test_wrong_dtype(arr):
    with pytest.raises(ShapeError, match="dtype"):
        quantlab.quantize(arr, "Q8_0")


def test_scalar_input():
    with pytest.raises(ShapeError):
        quantlab.quantize(np.float32(1.0), "F16")


def test_buffer_length_not_fitting_the_format():
    with pytest.raises(ShapeError, match="18"):
        quantlab.dequantize(np.zeros(35, np.uint8), "Q4_0")
    with pytest.raises(ShapeError, match="uint8"):
        quantlab.dequantize(np.zeros(18, np.float32), "Q4_0")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("fmt", ["Q4_0", "Q8_0", "Q4_K", "IQ4_NL", "TQ1_0", "MXFP4", "I32"])
def test_non_finite_weights(fmt, bad):
    x = np.ones((3, 256), np.float32)
    x[1, 17] = bad
    with pytest.raises(NonFiniteError, match="row 1, column 17"):
        quantlab.quantize(x, fmt)


def test_float_types_keep_nan_and_inf():
    x = np.array([np.nan, np.inf, -np.inf, 1e30, -0.0, 1.0], np.float32)
    for fmt in ("F32", "F16", "BF16"):
        y = quantlab.dequantize(quantlab.quantize(x, fmt), fmt)
        assert np.isnan(y[0]) and y[1] == np.inf and y[2] == -np.inf


@pytest.mark.parametrize(
    "im,exc",
    [
        (np.ones(31, np.float32), "expected shape"),
        (np.ones((2, 32), np.float32), "expected shape"),
        (np.full(32, np.nan, np.float32), "finite"),
        (-np.ones(32, np.float32), ">= 0"),
        (np.array(["x"] * 32), "numeric"),
    ],
)
def test_bad_imatrix(im, exc):
    with pytest.raises(ImatrixError, match=exc):
        quantlab.quantize(np.ones((2, 32), np.float32), "Q4_0", imatrix=im)


@pytest.mark.parametrize("fmt", ["IQ2_XXS", "IQ2_XS", "IQ1_S"])
def test_imatrix_required(fmt):
    with pytest.raises(ImatrixRequired, match="importance matrix") as e:
        quantlab.quantize(np.ones((1, 256), np.float32), fmt)
    assert "quantlab.model.compute_imatrix" in str(e.value)


def test_bad_impl_name():
    with pytest.raises(quantlab.errors.FormatError, match="impl"):
        quantlab.quantize(np.ones(32, np.float32), "F16", impl="turbo")


def test_shapes_follow_gguf_quants_convention():
    x = np.random.default_rng(0).standard_normal((2, 3, 64)).astype(np.float32)
    q = quantlab.quantize(x, "F16")
    assert q.shape == (2, 3, 128) and q.dtype == np.uint8
    assert quantlab.dequantize(q, "F16").shape == x.shape
    assert quantlab.quantize(np.zeros((0, 64), np.float32), "F16").shape == (0, 128)
    for fmt in ("Q4_0", "Q4_K", "F16"):
        q = quantlab.quantize(np.zeros((3, 0), np.float32), fmt)
        assert q.shape == (3, 0)
        assert quantlab.dequantize(q, fmt).shape == (3, 0)
        assert quantlab.dequantize(np.zeros((0, 2, 0), np.uint8), fmt).shape == (0, 2, 0)


def test_inspect_block_bounds():
    q = quantlab.quantize(np.ones(4, np.float32), "F16")
    assert quantlab.inspect_block(q, "F16", 3)["values"][0] == 1.0
    with pytest.raises(ShapeError, match="out of range"):
        quantlab.inspect_block(q, "F16", 4)


# --------------------------------------------------------------------------- arguments (issue 18 #8)


@pytest.mark.parametrize("fmt", [2.9, 8.0, True, False, np.bool_(True), None, b"Q4_0", ["Q4_0"], 1j, object()])
def test_format_argument_is_a_name_an_int_a_format_or_a_gguf_enum(fmt):
    """quantize(x, 2.9) gave Q4_0 and True gave F16; now only names, ints, Format and gguf enums."""
    x = np.ones((2, 32), np.float32)
    with pytest.raises(quantlab.errors.FormatError, match="a format is a name"):
        quantlab.quantize(x, fmt)
    with pytest.raises(quantlab.errors.FormatError, match="a format is a name"):
        quantlab.dequantize(np.zeros((1, 34), np.uint8), fmt)


def test_format_argument_accepted_kinds():
    import gguf

    x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32)
    want = quantlab.quantize(x, "Q8_0")
    for fmt in ("q8_0", 8, np.int64(8), np.uint8(8), quantlab.format("Q8_0"), gguf.GGMLQuantizationType.Q8_0):
        assert np.array_equal(quantlab.quantize(x, fmt), want)
    assert quantlab.row_bytes(gguf.GGMLQuantizationType.Q4_K, 256) == 144


@pytest.mark.parametrize("threads", [2.5, "2", 0, -1, True, np.float32(2), [2]])
def test_threads_is_a_positive_int(threads):
    x = np.ones((2, 32), np.float32)
    with pytest.raises(quantlab.errors.ArgumentError, match="threads must be a positive integer"):
        quantlab.quantize(x, "Q8_0", threads=threads)
    with pytest.raises(quantlab.errors.ArgumentError, match="threads"):
        quantlab.dequantize(np.zeros((1, 34), np.uint8), "Q8_0", threads=threads)


def test_other_arguments():
    x = np.ones((2, 32), np.float32)
    assert quantlab.quantize(x, "Q8_0", threads=np.int32(1)).shape == (2, 34)
    with pytest.raises(ShapeError, match="must be an array"):
        quantlab.quantize([[1.0] * 32, [1.0] * 31], "Q8_0")  # ragged
    with pytest.raises(quantlab.errors.FormatError, match="impl"):
        quantlab.quantize(x, "Q8_0", impl=None)
    q = quantlab.quantize(x, "Q8_0")
    for i in (1.5, True, "0"):
        with pytest.raises(quantlab.errors.ArgumentError, match="block index"):
            quantlab.inspect_block(q, "Q8_0", i)
    for n in (32.0, -32, None):
        with pytest.raises(quantlab.errors.ArgumentError, match="n_per_row"):
            quantlab.row_bytes("Q8_0", n)


# --------------------------------------------------------------------------- magnitudes beyond a format's scales


def _patterns():
    rng = np.random.default_rng(0)
    out = []
    for b in (rng.standard_normal((4, 256)), rng.uniform(-1, 1, (4, 256)), rng.standard_normal((4, 256)) ** 3):
        out.append((b / np.abs(b).max(axis=1, keepdims=True)).astype(np.float32))
    return out


def _broken(x, y, bs):
    if (~np.isfinite(y) & np.isfinite(x)).any():
        return True
    return bool(((y.reshape(-1, bs) == 0).all(axis=1) & (x.reshape(-1, bs) != 0).any(axis=1)).any())


# where the breaking magnitude depends much on the weights, "broken for every pattern" needs more than 2x
_ABOVE = {"Q1_0": 16, "NVFP4": 4096, "BF16": 1.003}  # (BF16: 2x would overflow float32 itself)


@pytest.mark.parametrize("f", [f for f in quantlab.all_formats() if f.max_abs < float("inf")], ids=lambda f: f.name)
def test_max_abs_column_matches_what_happens(f):
    """issue 18 #8: large finite weights silently gave inf/NaN or all-zero blocks. The registry's max_abs:
    every weight pattern tried (with and without an imatrix) quantizes to sane blocks at 0.99 x max_abs,
    without a warning; at 2 x max_abs (more where _ABOVE says) every pattern decodes to inf/NaN or zero
    blocks (the bytes are ggml's: see the parity tests) and quantize warns, naming the format, the row
    and the limit."""
    import warnings

    from quantlab.errors import QuantizationWarning

    rng = np.random.default_rng(1)
    ims = [None] if not f.uses_imatrix else [np.ones(256, np.float32), rng.uniform(0, 2, 256).astype(np.float32)]
    if not f.requires_imatrix and f.uses_imatrix:
        ims.append(None)
    for base in _patterns():
        for im in ims:
            x = base * np.float32(f.max_abs * 0.99)
            with warnings.catch_warnings():
                warnings.simplefilter("error", QuantizationWarning)
                y = quantlab.dequantize(quantlab.quantize(x, f, imatrix=im, impl="reference"), f, impl="reference")
            assert not _broken(x, y, f.block_size), f"{f.name} breaks below its max_abs"
            x = base * np.float32(f.max_abs * _ABOVE.get(f.name, 2))
            x[0] = base[0] * np.float32(f.max_abs * 0.5)  # row 0 stays in range: the warning names row 1
            with pytest.warns(QuantizationWarning) as rec:
                q = quantlab.quantize(x, f, imatrix=im, impl="reference")
            ours = [str(w.message) for w in rec if w.category is QuantizationWarning]
            assert len(ours) == 1, ours
            msg = ours[0]
            assert msg.startswith(f"{f.name}: row ") and not msg.startswith(f"{f.name}: row 0 "), msg
            assert f"beyond the {f.max_abs:.4g}" in msg, msg
            y = quantlab.dequantize(q, f, impl="reference")
            assert _broken(x[1:], y[1:], f.block_size), f"{f.name} still fine at 2 x max_abs"


def test_every_format_has_a_max_abs():
    from quantlab.formats import FORMATS

    for f in FORMATS:
        if not f.removed:
            assert f.max_abs > 0
