"""Quantization-aware training (QAT) vs post-training quantization (PTQ), for real, in numpy.

A small MLP is trained on a real dataset that ships inside an installed package (scikit-learn's
8x8 handwritten digits, 1,797 images). Then:

* **PTQ** – quantize the trained float weights once (no retraining) and measure test accuracy;
* **QAT** – keep float "latent" weights, but run the forward pass with *fake-quantized* weights
  (quantize -> dequantize), and in the backward pass let the gradient through the rounding as if it
  were the identity (the straight-through estimator, STE). The network learns weights that survive
  rounding.

Fake quantization is symmetric absmax integer quantization with ``bits`` bits, either per tensor (one
scale for the whole matrix) or per group of ``group`` consecutive input weights (like a ggml block).

Everything is seeded: the same call gives the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["load_digits", "fake_quant", "MLP", "train", "accuracy", "compare", "QATResult"]


def load_digits(seed: int = 0, test_fraction: float = 0.3):
    """The digits dataset (from scikit-learn's package data, no download): features in [0, 1]."""
    # scikit-learn (~1.5 s): only for the digits data
    from sklearn.datasets import load_digits as _ld

    d = _ld()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(x))
    n_test = int(len(x) * test_fraction)
    te, tr = idx[:n_test], idx[n_test:]
    return x[tr], y[tr], x[te], y[te]


def fake_quant(w: np.ndarray, bits: int, group: int | None = None) -> np.ndarray:
    """Symmetric absmax quantize -> dequantize of ``w`` (out, in) along the input axis.

    ``group=None``: one scale per tensor; otherwise one scale per ``group`` consecutive inputs of a row.
    Levels are the integers in [-(2**(bits-1) - 1), 2**(bits-1) - 1] (so 2 bits = {-1, 0, 1}).
    """
    if bits >= 32:
        return w
    qmax = 2 ** (bits - 1) - 1
    if group is None:
        amax = np.max(np.abs(w))
        d = amax / qmax if amax > 0 else 1.0
        return (np.clip(np.round(w / d), -qmax, qmax) * d).astype(w.dtype)
    o, i = w.shape
    if i % group:
        raise ValueError(f"group size {group} must divide the input width {i}")
    g = w.reshape(o, i // group, group)
    amax = np.max(np.abs(g), axis=-1, keepdims=True)
    d = np.where(amax > 0, amax / qmax, 1.0)
    return (np.clip(np.round(g / d), -qmax, qmax) * d).reshape(o, i).astype(w.dtype)


@dataclass
class MLP:
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray

    @classmethod
    def init(cls, n_in=64, n_hidden=64, n_out=10, seed=0):
        rng = np.random.default_rng(seed)
        return cls(
            (rng.standard_normal((n_hidden, n_in)) * np.sqrt(2 / n_in)).astype(np.float32),
            np.zeros(n_hidden, np.float32),
            (rng.standard_normal((n_out, n_hidden)) * np.sqrt(2 / n_hidden)).astype(np.float32),
            np.zeros(n_out, np.float32),
        )

    def copy(self):
        return MLP(self.w1.copy(), self.b1.copy(), self.w2.copy(), self.b2.copy())

    def quantized(self, bits, group=None):
        """A copy whose weight matrices are fake-quantized (biases stay float, as in ggml models)."""
        return MLP(fake_quant(self.w1, bits, group), self.b1.copy(), fake_quant(self.w2, bits, group), self.b2.copy())

    def logits(self, x):
        h = np.maximum(x @ self.w1.T + self.b1, 0)
        return h @ self.w2.T + self.b2


def accuracy(m: MLP, x, y) -> float:
    return float(np.mean(np.argmax(m.logits(x), axis=1) == y))


def train(m: MLP, x, y, epochs=60, lr=0.05, batch=64, seed=0, bits=None, group=None) -> list:
    """Mini-batch SGD with momentum on cross-entropy. With ``bits`` set this is QAT: the forward pass
    uses fake-quantized weights and the straight-through estimator passes their gradient to the float
    latent weights unchanged. Returns the per-epoch training loss."""
    rng = np.random.default_rng(seed)
    vel = [np.zeros_like(p) for p in (m.w1, m.b1, m.w2, m.b2)]
    losses = []
    for _ in range(epochs):
        idx = rng.permutation(len(x))
        tot = 0.0
        for s in range(0, len(x), batch):
            b = idx[s : s + batch]
            xb, yb = x[b], y[b]
            w1 = fake_quant(m.w1, bits, group) if bits else m.w1
            w2 = fake_quant(m.w2, bits, group) if bits else m.w2
            z1 = xb @ w1.T + m.b1
            h = np.maximum(z1, 0)
            z2 = h @ w2.T + m.b2
            z2 = z2 - z2.max(axis=1, keepdims=True)
            p = np.exp(z2)
            p /= p.sum(axis=1, keepdims=True)
            tot += float(-np.log(p[np.arange(len(yb)), yb] + 1e-12).sum())
            g2 = p
            g2[np.arange(len(yb)), yb] -= 1
            g2 /= len(yb)
            gw2 = g2.T @ h  # STE: d(fake_quant(w))/dw taken as 1
            gb2 = g2.sum(0)
            gh = g2 @ w2
            gz1 = gh * (z1 > 0)
            gw1 = gz1.T @ xb
            gb1 = gz1.sum(0)
            for k, (p_, g_) in enumerate(zip((m.w1, m.b1, m.w2, m.b2), (gw1, gb1, gw2, gb2))):
                vel[k] = 0.9 * vel[k] - lr * g_
                p_ += vel[k].astype(np.float32)
        losses.append(tot / len(x))
    return losses


@dataclass
class QATResult:
    bits: int
    group: int | None
    float_acc: float
    ptq_acc: float
    qat_acc: float

    @property
    def granularity(self):
        return "per-tensor" if self.group is None else f"per-group {self.group}"


def compare(bits_list=(8, 4, 3, 2), groups=(None, 16), epochs=60, qat_epochs=30, seed=0):
    """Train one float model, then for each (bits, granularity): PTQ accuracy and QAT accuracy
    (QAT fine-tunes a copy of the float model with fake quantization). Returns (float_model, results)."""
    xtr, ytr, xte, yte = load_digits(seed)
    base = MLP.init(seed=seed)
    train(base, xtr, ytr, epochs=epochs, seed=seed)
    facc = accuracy(base, xte, yte)
    out = []
    for bits in bits_list:
        for g in groups:
            ptq = accuracy(base.quantized(bits, g), xte, yte)
            m = base.copy()
            train(m, xtr, ytr, epochs=qat_epochs, lr=0.02, seed=seed + 1, bits=bits, group=g)
            qat = accuracy(m.quantized(bits, g), xte, yte)
            out.append(QATResult(bits, g, facc, ptq, qat))
    return base, out
