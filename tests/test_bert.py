"""quantlab.model.bert: the numpy all-MiniLM-L6-v2 encoder.

No reference implementation runs here (no torch / sentence-transformers), so the checks are properties a
correct sentence encoder must have, plus hand-computed pieces: the tokenizer's ids, LayerNorm and GELU
against their formulas, the mask (padding must not change an embedding), unit norms, and paraphrases
scoring higher than unrelated sentences.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from quantlab.errors import ModelError
from quantlab.model import bert


@pytest.fixture(scope="module")
def enc():
    return bert.load()


def test_tokenizer_ids(enc):
    ids, mask = enc.tokenize(["Hello world", "a"])
    # bert-base-uncased vocabulary: [CLS]=101, hello=7592, world=2088, [SEP]=102, a=1037, [PAD]=0
    assert ids.tolist() == [[101, 7592, 2088, 102], [101, 1037, 102, 0]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    long_ids, _ = enc.tokenize(["word " * 400])
    assert long_ids.shape[1] == bert.MAX_SEQ_LENGTH and long_ids[0, -1] == 102


def test_layer_norm_and_gelu_formulas():
    x = np.array([[1.0, 2.0, 4.0, -1.0]], np.float32)
    w = np.array([1.0, 0.5, 2.0, 1.0], np.float32)
    b = np.array([0.0, 1.0, 0.0, -1.0], np.float32)
    mu = sum(x[0]) / 4
    sd = math.sqrt(sum((v - mu) ** 2 for v in x[0]) / 4 + 1e-12)
    want = [(v - mu) / sd * ww + bb for v, ww, bb in zip(x[0], w, b)]
    assert np.allclose(bert._layer_norm(x, w, b)[0], want, rtol=1e-6)
    z = np.array([-3.0, -0.5, 0.0, 0.7, 2.5], np.float32)
    assert np.allclose(bert._gelu(z), [v / 2 * (1 + math.erf(v / math.sqrt(2))) for v in z], rtol=1e-6)


def test_embeddings_behave(enc):
    s = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "A monkey is playing drums.",
        "The weather is lovely today.",
        "It's so sunny outside!",
    ]
    e = enc.encode(s)
    assert e.shape == (5, 384) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-6)
    sim = e @ e.T
    assert sim[0, 1] > 0.5 and sim[3, 4] > 0.5  # paraphrases
    unrelated = [sim[0, 2], sim[0, 3], sim[1, 4], sim[2, 3], sim[2, 4]]
    assert max(unrelated) < min(sim[0, 1], sim[3, 4]) - 0.3
    # padding: a short sentence encoded alone, and inside a batch padded to a longer one, is the same
    alone = enc.encode(s[2:3])
    assert np.array_equal(alone[0], e[2])
    # batching does not matter either
    assert np.array_equal(enc.encode(s, batch_size=2), e)
    # order of words matters (it is not a bag of words): position embeddings are used
    assert float(enc.encode(["dog bites man"])[0] @ enc.encode(["man bites dog"])[0]) < 0.9999


def test_quantized_copy(enc):
    s = ["A man is eating food.", "The weather is lovely today."]
    ref = enc.encode(s)
    q8 = enc.quantized("Q8_0")
    q2 = enc.quantized("Q2_K")
    assert set(q8.last_formats.values()) == {"Q8_0"}
    # 384-long rows cannot be Q2_K (256-blocks): llama.cpp's fallback is Q4_0; 1536-long rows stay Q2_K
    assert q2.last_formats["encoder.layer.0.attention.self.query.weight"] == "Q4_0"
    assert q2.last_formats["encoder.layer.0.output.dense.weight"] == "Q2_K"
    c8 = (q8.encode(s) * ref).sum(axis=1)
    c2 = (q2.encode(s) * ref).sum(axis=1)
    assert np.all(c8 > c2) and np.all(c8 < 1.0) and np.all(c8 > 0.99)
    # the fp32 encoder is untouched
    assert np.array_equal(enc.encode(s), ref)


def test_errors(enc):
    with pytest.raises(ModelError, match="not a BERT"):
        bert.BertEncoder({"x": np.zeros(3)})
    with pytest.raises(ModelError, match="no sentences"):
        enc.encode([])
    with pytest.raises(ModelError, match="cannot replace"):
        enc.with_weights({"encoder.layer.0.attention.self.query.weight": np.zeros((2, 2), np.float32)})
    no_tok = bert.BertEncoder(enc.weights, None)
    with pytest.raises(ModelError, match="no tokenizer"):
        no_tok.encode(["hi"])
