"""quantlab.model.describe: what a GGUF file is, and whether quantlab runs it."""

from __future__ import annotations

import pytest

import quantlab.data
import quantlab.gguf
import quantlab.model as qm
from quantlab.errors import GGUFError, ModelError


def test_describe_the_shipped_model():
    p = quantlab.data.path("smollm2")
    d = qm.describe(p)
    with quantlab.gguf.open(p) as f:
        n, nbytes = f.n_params, f.tensor_bytes
    assert d.architecture == "llama" and d.runnable and d.reason is None
    assert d.n_params == n and d.bpw == pytest.approx(8 * nbytes / n)
    assert d.file_type == "Q4_1" and d.tokenizer_model == "gpt2" and d.tokenizer_pre == "smollm"
    assert d.n_vocab == 49152 and d.context_length == 8192 and d.n_layer == 30 and d.n_embd == 576
    assert set(d.formats) == {"Q4_1", "Q8_0", "F32"} and sum(d.formats.values()) == n
    s = str(d)
    assert "architecture    llama" in s and "135M (134,515,008)" in s and "Q4_1" in s and "runs it" in s


def test_describe_what_quantlab_cannot_run(tmp_path):
    with quantlab.gguf.open(quantlab.data.path("smollm2")) as f:
        md = f.metadata.copy()
    md["general.architecture"] = "mamba"
    del md["general.file_type"]
    p = tmp_path / "mamba.gguf"
    quantlab.gguf.write(p, md, {})
    d = qm.describe(p)
    assert not d.runnable and "'mamba'" in d.reason and "\n" not in d.reason
    assert d.architecture == "mamba" and d.n_params == 0 and d.file_type.startswith("not stated")
    assert "cannot run it: " in str(d)


def test_describe_bad_paths(tmp_path):
    with pytest.raises(ModelError, match="no such model file"):
        qm.describe(tmp_path / "nope.gguf")
    p = tmp_path / "x.gguf"
    p.write_bytes(b"not a gguf at all")
    with pytest.raises(GGUFError):
        qm.describe(p)
