"""Bad input gets a named quantlab error (a ValueError) that says what was expected and what was found."""
import numpy as np
import pytest

import quantlab
from quantlab.errors import (ImatrixError, ImatrixRequired, NonFiniteError, QuantlabError, ShapeError)


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


@pytest.mark.parametrize("arr", [np.ones(32, np.int32), np.ones(32, bool), np.array(["a"] * 32),
                                 np.ones(32, np.complex64)])
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


@pytest.mark.parametrize("im,exc", [(np.ones(31, np.float32), "expected shape"),
                                    (np.ones((2, 32), np.float32), "expected shape"),
                                    (np.full(32, np.nan, np.float32), "finite"),
                                    (-np.ones(32, np.float32), ">= 0"),
                                    (np.array(["x"] * 32), "numeric")])
def test_bad_imatrix(im, exc):
    with pytest.raises(ImatrixError, match=exc):
        quantlab.quantize(np.ones((2, 32), np.float32), "Q4_0", imatrix=im)


@pytest.mark.parametrize("fmt", ["IQ2_XXS", "IQ2_XS", "IQ1_S"])
def test_imatrix_required(fmt):
    with pytest.raises(ImatrixRequired, match="importance matrix") as e:
        quantlab.quantize(np.ones((1, 256), np.float32), fmt)
    assert "quantlab.model.imatrix" in str(e.value)


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
