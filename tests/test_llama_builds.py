"""Which llama.cpp build a benchmark ran: tools/build_llama_cpp.sh's flavours, reported by quantlab.bench."""

from __future__ import annotations

import pathlib
import subprocess

import pytest

import quantlab.bench as qb
from quantlab.errors import QuantlabError

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_build_script_knows_both_flavours():
    sh = ROOT / "tools/build_llama_cpp.sh"
    r = subprocess.run(["bash", str(sh), "--flavour", "avx512"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown flavour 'avx512'" in r.stderr
    r = subprocess.run(["bash", str(sh), "--flavour", "native"], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr
    text = sh.read_text()
    assert ".cache/llama-build-native" in text and ".cache/oracle-native" in text and "-DGGML_NATIVE=ON" in text


def test_build_info_from_build_file(tmp_path):
    (tmp_path / "bin").mkdir()
    exe = tmp_path / "bin" / "llama-bench"
    exe.write_text("")
    (tmp_path / "BUILD").write_text("flavour=native\nGGML_NATIVE=ON\nGGML_OPENMP=ON\n")
    info = qb.llama_build_info(exe)
    assert info["flavour"] == "native" and info["openmp"] is True and info["isa"] is None
    assert info["label"] == "native build [ISA unknown, OpenMP]"


def test_unknown_flavour_is_refused():
    with pytest.raises(QuantlabError, match="flavour 'avx9'"):
        qb.llama_bench_binary("avx9")


@pytest.mark.parametrize("flavour", ["avx2", "native"])
def test_real_build_reports_its_isa(flavour):
    exe = qb.llama_bench_binary(flavour)
    if exe is None:
        pytest.skip(f"the {flavour} llama.cpp build is not there (tools/build_llama_cpp.sh --flavour {flavour})")
    info = qb.llama_build_info(exe)
    isa = (info["isa"] or "").split()
    assert info["flavour"] == flavour and "AVX2" in isa, info
    if flavour == "avx2":
        assert "AVX512" not in isa, info  # built with -DGGML_AVX512=OFF
