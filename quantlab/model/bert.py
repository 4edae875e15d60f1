"""A BERT encoder in numpy: all-MiniLM-L6-v2 sentence embeddings, the way sentence-transformers makes them.

all-MiniLM-L6-v2 ships as fp32 weights (``quantlab.data.tensors("minilm")``): a true full-precision base,
so quantizing its matrices and comparing the sentence embeddings with the fp32 ones measures the damage
of a format against the real thing (SmolLM2's GGUF is itself Q4_1 already).

The model (``config.json``: 6 layers, width 384, 12 heads of 32, FFN 1536, GELU, LayerNorm eps 1e-12)::

    x = LayerNorm(word_emb[ids] + pos_emb[0..T) + type_emb[0])
    per layer:  a = softmax(Q K^T / sqrt(32) + mask) V      Q, K, V = x W^T + b, per head
                x = LayerNorm(x + a W_o^T + b_o)
                x = LayerNorm(x + gelu(x W_i^T + b_i) W_out^T + b_out)     gelu(z) = z/2 (1 + erf(z/sqrt 2))
    sentence = mean of x over the real (non-padding) tokens, then divided by its L2 norm

(sentence-transformers' modules.json: Transformer -> Pooling(mean) -> Normalize; max_seq_length 256.)
The tokenizer is the model's own ``tokenizer.json`` run by the ``tokenizers`` library (lower-casing
WordPiece, ``[CLS] ... [SEP]``). Everything is float32; matrix products go through numpy (BLAS).

    >>> enc = quantlab.model.bert.load()
    >>> e = enc.encode(["A man is eating food.", "A man is eating pasta."])     # (2, 384), unit norm
    >>> float(e[0] @ e[1])
    >>> q = enc.quantized("Q4_K")                   # every weight matrix through Q4_K (fallback where needed)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .. import data
from ..api import dequantize, quantize
from ..errors import ModelError
from ..formats.fallback import fallback

__all__ = ["BertEncoder", "load", "linear_names", "MAX_SEQ_LENGTH"]

MAX_SEQ_LENGTH = 256  # sentence_bert_config.json
LN_EPS = np.float32(1e-12)
N_HEAD = 12


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu = x.mean(axis=-1, keepdims=True)
    d = x - mu
    var = (d * d).mean(axis=-1, keepdims=True)
    return d / np.sqrt(var + LN_EPS) * w + b


def _gelu(x: np.ndarray) -> np.ndarray:
    # scipy.special (~0.4 s): only the BERT forward pass
    from scipy.special import erf  # exact GELU ("gelu" in config.json), not the tanh approximation

    return (np.float32(0.5) * x * (np.float32(1.0) + erf(x / np.float32(np.sqrt(2.0))))).astype(np.float32)


def linear_names(weights: Mapping) -> list[str]:
    """The encoder's weight matrices (the ones a quantized model stores in a ggml format): Q, K, V, attention
    output, FFN in and out of every layer."""
    return [k for k in weights if k.startswith("encoder.layer.") and k.endswith(".weight") and "LayerNorm" not in k]


class BertEncoder:
    """A BERT encoder over a mapping name -> float32 array (sentence-transformers / HF BertModel names)."""

    def __init__(self, weights: Mapping, tokenizer=None, max_seq_length: int = MAX_SEQ_LENGTH):
        need = [
            "embeddings.word_embeddings.weight",
            "embeddings.position_embeddings.weight",
            "embeddings.token_type_embeddings.weight",
            "embeddings.LayerNorm.weight",
        ]
        missing = [k for k in need if k not in weights]
        if missing:
            raise ModelError(f"not a BERT checkpoint: missing {', '.join(missing)}")
        self.weights = weights
        self.n_layer = 1 + max(int(k.split(".")[2]) for k in weights if k.startswith("encoder.layer."))
        self.width = int(weights["embeddings.word_embeddings.weight"].shape[1])
        if self.width % N_HEAD:
            raise ModelError(f"width {self.width} is not a multiple of {N_HEAD} heads")
        self.max_seq_length = int(max_seq_length)
        self.tokenizer = tokenizer
        self._w = {
            k: np.ascontiguousarray(weights[k], dtype=np.float32) for k in weights if k != "embeddings.position_ids"
        }

    # ------------------------------------------------------------------ tokens
    def tokenize(self, sentences) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and attention mask (int64, padded with 0 to the longest sentence)."""
        if isinstance(sentences, str):
            sentences = [sentences]
        if self.tokenizer is None:
            raise ModelError("this encoder has no tokenizer: pass token ids to forward()")
        ids = [self.tokenizer.encode(s).ids for s in sentences]
        T = max(len(i) for i in ids)
        out = np.zeros((len(ids), T), dtype=np.int64)
        mask = np.zeros((len(ids), T), dtype=np.int64)
        for r, i in enumerate(ids):
            out[r, : len(i)] = i
            mask[r, : len(i)] = 1
        return out, mask

    # ------------------------------------------------------------------ the network
    def forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Last hidden states, float32 (batch, tokens, width)."""
        w = self._w
        ids = np.asarray(ids, dtype=np.int64)
        B, T = ids.shape
        if w["embeddings.position_embeddings.weight"].shape[0] < T:
            raise ModelError(
                f"{T} tokens is more than the {w['embeddings.position_embeddings.weight'].shape[0]} "
                f"positions the model has"
            )
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:T]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        H, D = N_HEAD, self.width // N_HEAD
        # padded keys get a very negative score (HF uses the dtype's minimum), so softmax ignores them
        bias = np.where(np.asarray(mask)[:, None, None, :] > 0, np.float32(0), np.finfo(np.float32).min)
        scale = np.float32(1.0 / np.sqrt(D))
        for i in range(self.n_layer):
            p = f"encoder.layer.{i}."

            def lin(name, v, p=p):
                return v @ w[p + name + ".weight"].T + w[p + name + ".bias"]

            q = lin("attention.self.query", x).reshape(B, T, H, D).transpose(0, 2, 1, 3)
            k = lin("attention.self.key", x).reshape(B, T, H, D).transpose(0, 2, 1, 3)
            v = lin("attention.self.value", x).reshape(B, T, H, D).transpose(0, 2, 1, 3)
            s = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            s /= s.sum(axis=-1, keepdims=True)
            a = (s @ v).transpose(0, 2, 1, 3).reshape(B, T, H * D)
            x = _layer_norm(
                x + lin("attention.output.dense", a),
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
            )
            h = _gelu(lin("intermediate.dense", x))
            x = _layer_norm(
                x + lin("output.dense", h), w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]
            )
        return x.astype(np.float32, copy=False)

    def encode(self, sentences, normalize: bool = True, batch_size: int = 32) -> np.ndarray:
        """Sentence embeddings (n, width): mean of the token states over the mask, then L2-normalised."""
        if isinstance(sentences, str):
            sentences = [sentences]
        sentences = list(sentences)
        if not sentences:
            raise ModelError("no sentences to encode")
        out = []
        for b in range(0, len(sentences), batch_size):
            ids, mask = self.tokenize(sentences[b : b + batch_size])
            h = self.forward(ids, mask)
            m = mask[:, :, None].astype(np.float32)
            e = (h * m).sum(axis=1) / np.maximum(m.sum(axis=1), np.float32(1e-9))
            if normalize:
                e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), np.float32(1e-12))
            out.append(e.astype(np.float32))
        return np.concatenate(out)

    # ------------------------------------------------------------------ quantized copies
    def with_weights(self, replaced: Mapping) -> BertEncoder:
        """A copy with some weights replaced (same tokenizer)."""
        w = dict(self._w)
        for k, v in replaced.items():
            if k not in w or w[k].shape != np.shape(v):
                raise ModelError(f"cannot replace {k!r}: unknown name or shape {np.shape(v)}")
            w[k] = v
        return BertEncoder(w, self.tokenizer, self.max_seq_length)

    def quantized(self, fmt, names=None, imatrix=None, impl: str = "fast") -> BertEncoder:
        """A copy whose weight matrices went through ``fmt`` and back (quantize, dequantize). A matrix whose
        rows are not a multiple of the format's block gets llama.cpp's fallback format
        (:func:`quantlab.formats.fallback.fallback`); ``self.last_formats`` of the copy records each choice."""
        names = linear_names(self._w) if names is None else list(names)
        rep, used = {}, {}
        for k in names:
            a = self._w[k]
            f, _why = fallback(a.shape[1], fmt)
            kind = impl if f.has_impl(impl, "quantize") and f.has_impl(impl, "dequantize") else "reference"
            im = None if imatrix is None else imatrix.get(k)
            rep[k] = dequantize(quantize(a, f, imatrix=im, impl=kind), f, impl=kind).reshape(a.shape)
            used[k] = f.name
        enc = self.with_weights(rep)
        enc.last_formats = used
        return enc


def load(tokenizer: bool = True) -> BertEncoder:
    """all-MiniLM-L6-v2 (fp32) with its tokenizer, from the installed data package."""
    weights = data.tensors("minilm")
    tok = None
    if tokenizer:
        # HF tokenizers (~20 ms): only when a tokenizer is asked for
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(data.path("minilm-tokenizer")))
        tok.no_padding()  # tokenizer.json pads and truncates at 128; sentence-transformers pads to the
        tok.enable_truncation(MAX_SEQ_LENGTH)  # longest sentence and truncates at max_seq_length (256)
    return BertEncoder({k: weights[k] for k in weights}, tok)
