"""The registry against ggml's own type traits: one record per id 0..42, sizes from the oracle."""
import numpy as np
import pytest

import quantlab
from quantlab.errors import FormatError, RemovedTypeError
from quantlab.formats import FORMATS, get

from .oracle import oracle


def test_one_record_per_ggml_type():
    g = oracle()
    assert [f.id for f in FORMATS] == list(range(g.type_count)) == list(range(43))


@pytest.mark.parametrize("f", FORMATS, ids=lambda f: f.name)
def test_sizes_match_ggml(f):
    g = oracle()
    assert g.blck_size(f.id) == f.block_size
    assert g.type_size(f.id) == f.type_size
    assert g.requires_imatrix(f.id) == f.requires_imatrix
    if f.removed:
        assert f.block_size == 0
    else:
        assert g.type_name(f.id).upper() == f.name


def test_q8_1_is_36_bytes_not_gguf_py_40():
    import gguf

    assert get("Q8_1").type_size == 36
    assert gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_1][1] == 40  # gguf-py's table is wrong


def test_lookup_by_name_id_and_gguf_enum():
    import gguf

    assert get("q4_k") is get("Q4_K") is get(12) is get(gguf.GGMLQuantizationType.Q4_K)
    assert get(" iq2_xxs ").bpw == 2.0625
    assert get("Q4_K").row_bytes(512) == 288


@pytest.mark.parametrize("bad", ["Q4_7", "", None, 99, -1, 3.5j])
def test_unknown_formats_are_named_errors(bad):
    with pytest.raises(FormatError):
        get(bad)


@pytest.mark.parametrize("tid", [4, 5, 31, 32, 33, 36, 37, 38])
def test_removed_ids_are_known_but_refused(tid):
    f = get(tid)
    assert f.removed
    with pytest.raises(RemovedTypeError, match="no longer a valid tensor type"):
        quantlab.quantize(np.zeros(32, np.float32), tid)
    with pytest.raises(RemovedTypeError):
        quantlab.dequantize(np.zeros(18, np.uint8), tid)
