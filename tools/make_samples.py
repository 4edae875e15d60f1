"""Build quantlab/assets/minilm_imatrix.npz: a real importance matrix for every linear layer of all-MiniLM-L6-v2.

An importance matrix holds, per input column of a weight matrix, the mean of the squared activations
that multiply that column on real text (what llama-imatrix collects). Here the activations come from
running the model (a plain numpy BERT forward: embeddings, 6 x [self-attention, LayerNorm, GELU FFN,
LayerNorm]) on the first chunks of quantlab.data.text() (CPython's pydoc topics).

Deterministic and small (about 50 KB): one float32 vector per weight matrix, keyed by tensor name.

    .venv/bin/python tools/make_samples.py          # rewrites quantlab/assets/minilm_imatrix.npz
"""

from __future__ import annotations

import math
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from quantlab import data  # noqa: E402

N_CHUNKS, CHUNK = 8, 128


def layer_norm(x, w, b, eps=1e-12):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def token_chunks():
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(data.path("minilm-tokenizer")))
    tok.no_truncation()
    tok.no_padding()
    ids = tok.encode(data.text(200_000), add_special_tokens=False).ids
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    body = CHUNK - 2
    return [[cls] + ids[i * body : (i + 1) * body] + [sep] for i in range(N_CHUNKS)]


def main() -> int:
    T = data.tensors("minilm")
    g = lambda k: T[k].astype(np.float64)  # noqa: E731
    sq: dict = {}
    count = 0

    def record(name, x):
        sq[name] = sq.get(name, 0.0) + (x**2).sum(0)

    for ids in token_chunks():
        n = len(ids)
        h = (
            g("embeddings.word_embeddings.weight")[ids]
            + g("embeddings.position_embeddings.weight")[:n]
            + g("embeddings.token_type_embeddings.weight")[0]
        )
        h = layer_norm(h, g("embeddings.LayerNorm.weight"), g("embeddings.LayerNorm.bias"))
        for L in range(6):
            p = f"encoder.layer.{L}."
            lin = lambda x, k: x @ g(p + k + ".weight").T + g(p + k + ".bias")  # noqa: E731
            for k in ("attention.self.query", "attention.self.key", "attention.self.value"):
                record(p + k + ".weight", h)
            q, k_, v = (
                lin(h, "attention.self." + k).reshape(n, 12, 32).transpose(1, 0, 2) for k in ("query", "key", "value")
            )
            s = q @ k_.transpose(0, 2, 1) / math.sqrt(32.0)
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            ctx = (s @ v).transpose(1, 0, 2).reshape(n, 384)
            record(p + "attention.output.dense.weight", ctx)
            h = layer_norm(
                h + lin(ctx, "attention.output.dense"),
                g(p + "attention.output.LayerNorm.weight"),
                g(p + "attention.output.LayerNorm.bias"),
            )
            record(p + "intermediate.dense.weight", h)
            inter = gelu(lin(h, "intermediate.dense"))
            record(p + "output.dense.weight", inter)
            h = layer_norm(
                h + lin(inter, "output.dense"), g(p + "output.LayerNorm.weight"), g(p + "output.LayerNorm.bias")
            )
        count += n
    out = {k: (v / count).astype(np.float32) for k, v in sq.items()}
    dest = ROOT / "quantlab" / "assets" / "minilm_imatrix.npz"
    np.savez_compressed(dest, **out)
    print(f"wrote {dest.relative_to(ROOT)}: {len(out)} tensors, {count} tokens, {dest.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
