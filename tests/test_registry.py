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


def test_an_older_ggml_is_asked_which_types_it_has():
    """issue 18 #11: with ggml-python's older libggml (the dev extra installs it) bench handed it Q2_0,
    which it lacks, and ggml_quantize_chunk aborted the process (notebook 10's dead kernel). The library
    is now probed in a child process; calls for a type it lacks raise OracleMissing, and bench leaves
    that peer's column empty — in a child here, so an abort would show as a return code."""
    import os
    import subprocess
    import sys
    import textwrap

    from quantlab import peers

    spec = __import__("importlib.util").util.find_spec("ggml")
    assert spec is not None, "ggml-python (the dev extra) is not installed"
    old = os.path.join(spec.submodule_search_locations[0], "lib", "libggml-base.so")
    g = peers.GGML(old, "ggml-python")
    assert g.type_count == 42 and not g.supports(42) and g.supports(41) and g.supports(8)
    with pytest.raises(quantlab.errors.OracleMissing, match="has no Q2_0"):
        g.quantize(np.ones((1, 64), np.float32), 42)
    with pytest.raises(quantlab.errors.OracleMissing):
        g.type_size(42)
    assert not g.has_to_float(42) and not g.has_to_float(1000)
    assert np.array_equal(
        g.quantize(np.ones((1, 32), np.float32), 8), quantlab.quantize(np.ones((1, 32), np.float32), "Q8_0")
    )
    assert oracle().type_count == 43
    code = textwrap.dedent("""
        from quantlab import bench
        t = bench.formats(["Q2_0", "Q8_0"], size=1 << 12, n_per_row=256, reference=False, imatrix=False,
                          min_time=0.0, call_time=0.001)
        for r in t.rows:
            print(r["format"], r["op"], r.get("ggml-1t"))
    """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=root,
        env={**os.environ, "QUANTLAB_GGML_LIB": old, "PYTHONPATH": root},
    )
    assert p.returncode == 0, p.stderr[-2000:]
    rows = dict(((ln.split()[0], ln.split()[1]), ln.split()[2]) for ln in p.stdout.splitlines())
    assert rows[("Q2_0", "quantize")] == "None" and rows[("Q8_0", "quantize")] != "None"


# ------------------------------------------------------------------------------------ implementations


def _import_every_family():
    import importlib

    for f in quantlab.all_formats():
        importlib.import_module(f"quantlab.formats.{f.family}")
        importlib.import_module(f"quantlab.kernels.{f.family}")


def test_every_usable_format_registers_every_implementation():
    """A format missing any of reference quantize/dequantize/inspect or fast quantize/dequantize fails
    here, naming it (nothing is looked up by name: each family module registers its functions)."""
    from quantlab.formats.registry import OPS, registered

    _import_every_family()
    missing = [
        f"{f.name} {kind} {op}"
        for f in quantlab.all_formats()
        for kind, ops in OPS.items()
        for op in ops
        if (f.name, op) not in registered(kind)
    ]
    assert missing == []
    extra = {n for kind in OPS for (n, _op) in registered(kind)} - {f.name for f in quantlab.all_formats()}
    assert extra == set()
    for f in quantlab.all_formats():
        assert f.impl("reference", "quantize") is registered("reference")[(f.name, "quantize")]
        assert f.impl("fast", "dequantize") is registered("fast")[(f.name, "dequantize")]
        assert f.impl("fast", "inspect") is registered("reference")[(f.name, "inspect")]


def test_register_refuses_misnamed_unknown_and_duplicate_implementations():
    from quantlab.formats import registry

    def quantize_q4_0(x, imatrix=None):
        return x

    def quantize_q4_1(x, imatrix=None):  # a misnamed function cannot stand in for another format
        return x

    with pytest.raises(FormatError, match="Q4_0 quantize must be a function named quantize_q4_0"):
        registry.register("reference", "Q4_0", quantize=quantize_q4_1)
    with pytest.raises(FormatError, match="'Q9_K' is not a usable format"):
        registry.register("reference", "Q9_K", quantize=quantize_q4_0)
    with pytest.raises(FormatError, match="'Q4_2' is not a usable format"):
        registry.register("reference", "Q4_2", quantize=quantize_q4_0)
    with pytest.raises(FormatError, match="fast implementations are quantize, dequantize; got 'inspect'"):
        registry.register("fast", "Q4_0", inspect=quantize_q4_0)
    _import_every_family()
    with pytest.raises(FormatError, match="Q4_0 reference quantize is already registered"):
        registry.register("reference", "Q4_0", quantize=quantize_q4_0)


def test_a_format_without_a_registered_implementation_is_an_error(monkeypatch):
    """What parity tests see when a family forgets one: a FormatError (a failure), not a skip."""
    from quantlab.formats import registry

    _import_every_family()
    f = get("Q4_0")
    monkeypatch.delitem(registry._IMPLS, ("Q4_0", "fast", "quantize"))
    monkeypatch.delitem(f._cache, ("fast", "quantize"), raising=False)
    with pytest.raises(
        FormatError,
        match=r"quantize is not implemented for Q4_0 .fast implementation: "
        "quantlab.kernels.legacy registers none",
    ):
        f.impl("fast", "quantize")
    assert not f.has_impl("fast", "quantize")
