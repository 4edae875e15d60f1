"""llama.cpp's KL-divergence base files (``llama-perplexity --kl-divergence-base FILE``): read, write,
and compare a model against one.

``llama-perplexity -m base.gguf -f text --kl-divergence-base F`` stores the base model's distribution for
every scored token; ``llama-perplexity -m q.gguf --kl-divergence-base F --kl-divergence`` compares another
model with it (tools/perplexity/perplexity.cpp, ``perplexity`` and ``kl_divergence``). The file, all
little-endian::

    offset  size                  field
    0       8                     magic "_logits_"
    8       4   uint32            n_ctx
    12      4   int32             n_vocab
    16      4   int32             n_chunk
    20      4*n_chunk*n_ctx int32 the evaluation tokens, chunk after chunk, as tokenized (the BOS that
                                  replaces each chunk's first token when the vocab adds BOS is not stored)
    then, per chunk, one record per scored token: positions first = n_ctx/2 .. n_ctx-2 predict tokens
    first+1 .. n_ctx-1, so n_ctx - 1 - n_ctx/2 records of nv = 2*((n_vocab+1)/2) + 4 uint16:
        +0  float32 scale          (max_logit - min_logit) / 65535
        +4  float32 min_log_prob   min_logit - max_logit - log(sum exp(logit - max_logit))
        +8  uint16[n_vocab] q      round((logit - min_logit) / scale) if logit > min_logit else 0
            (uint16 padding to an even n_vocab)
    where min_logit = max(min(logits), max_logit - 16): log-probabilities more than 16 below the top
    are all stored as 0 = the floor, so ``log p_v = scale * q_v + min_log_prob``, to ~2.4e-4.

The comparison is llama.cpp's: per token NLL of the true next token under both, KLD = sum over the
base's tokens with log p_base > -16 of p_base (log p_base - log p), same top-1 (argmax of the model's
logits vs argmax of the stored q), dp = p(token) - p_base(token).
"""

from __future__ import annotations

import os
import pathlib
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import ModelError
from .eval import LOGIT_ROWS, EvalResult, tokens_for
from .llama import Model
from .llama import threads as _threads

MAGIC = b"_logits_"
HEADER = struct.Struct("<8sIii")
FLOOR = 16.0  # log-probabilities more than this below the top are stored as the floor
_U16_MAX = np.float32(65535.0)


def record_length(n_vocab: int) -> int:
    """uint16 values per scored token: 4 for the two floats, the vocabulary rounded up to even."""
    return 2 * ((n_vocab + 1) // 2) + 4


@dataclass
class BaseChunk:
    """The stored distributions of one chunk: ``n = n_ctx - 1 - n_ctx/2`` scored tokens."""

    tokens: np.ndarray  # int32 [n_ctx], as stored (no BOS substitution)
    scale: np.ndarray  # float32 [n]
    min_log_prob: np.ndarray  # float32 [n]
    q: np.ndarray  # uint16 [n, n_vocab]

    @property
    def targets(self) -> np.ndarray:
        """The true next token of every scored position."""
        n_ctx = len(self.tokens)
        return self.tokens[n_ctx // 2 + 1 :]

    def log_probs(self, rows=slice(None)) -> np.ndarray:
        """log p (float32 like llama.cpp) for the given scored rows."""
        return self.scale[rows, None] * self.q[rows].astype(np.float32) + self.min_log_prob[rows, None]

    def nll(self) -> np.ndarray:
        """-log p_base of the true next token, per scored token (float64)."""
        i = np.arange(len(self.scale))
        q_t = self.q[i, self.targets].astype(np.float32)
        return -(self.scale * q_t + self.min_log_prob).astype(np.float64)

    def top1(self) -> np.ndarray:
        """The base's most likely token per scored position (first of equal maxima, like llama.cpp)."""
        return self.q.argmax(axis=1)


class BaseLogits:
    """A llama.cpp ``--kl-divergence-base`` file, checked against its header, memory-mapped lazily."""

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as f:
                head = f.read(HEADER.size)
        except OSError as e:
            raise ModelError(f"{self.path}: cannot read the KL-divergence base file: {e.strerror}") from None
        if len(head) < HEADER.size or head[:8] != MAGIC:
            raise ModelError(
                f"{self.path}: not a llama.cpp KL-divergence base file (expected the magic "
                f"'_logits_' and a 20-byte header, found {head[:8]!r})"
            )
        _, self.n_ctx, self.n_vocab, self.n_chunk = HEADER.unpack(head)
        if self.n_ctx < 4 or self.n_ctx % 2 or self.n_ctx > 1 << 24:
            raise ModelError(
                f"{self.path}: n_ctx = {self.n_ctx} in the header; expected an even number "
                f">= 4 (the context llama-perplexity ran with)"
            )
        if not 0 < self.n_vocab < 1 << 24 or not 0 < self.n_chunk < 1 << 24:
            raise ModelError(
                f"{self.path}: header says n_vocab = {self.n_vocab}, n_chunk = {self.n_chunk}; expected positive counts"
            )
        self.nv = record_length(self.n_vocab)
        self.n_scored = self.n_ctx - 1 - self.n_ctx // 2
        self._tok_off = HEADER.size
        self._rec_off = self._tok_off + 4 * self.n_chunk * self.n_ctx
        want = self._rec_off + 2 * self.n_chunk * self.n_scored * self.nv
        if size != want:
            raise ModelError(
                f"{self.path}: {size} bytes, but a base file of {self.n_chunk} chunks of "
                f"{self.n_ctx} tokens over {self.n_vocab} tokens takes {want} bytes "
                f"(truncated, or not written by llama-perplexity --kl-divergence-base)"
            )
        self.tokens = np.fromfile(
            self.path, dtype="<i4", count=self.n_chunk * self.n_ctx, offset=self._tok_off
        ).reshape(self.n_chunk, self.n_ctx)
        if self.tokens.size and (self.tokens.min() < 0 or self.tokens.max() >= self.n_vocab):
            raise ModelError(
                f"{self.path}: token ids outside 0..{self.n_vocab - 1} (found {self.tokens.min()}..{self.tokens.max()})"
            )
        self._mm = None

    def _records(self) -> np.ndarray:
        if self._mm is None:
            self._mm = np.memmap(
                self.path, dtype="<u2", mode="r", offset=self._rec_off, shape=(self.n_chunk, self.n_scored, self.nv)
            )
        return self._mm

    def chunk(self, i: int) -> BaseChunk:
        if not 0 <= i < self.n_chunk:
            raise IndexError(f"chunk {i} of {self.n_chunk}")
        r = np.asarray(self._records()[i])
        head = np.ascontiguousarray(r[:, :4]).view("<f4")
        return BaseChunk(
            tokens=self.tokens[i],
            scale=head[:, 0].astype(np.float32),
            min_log_prob=head[:, 1].astype(np.float32),
            q=r[:, 4 : 4 + self.n_vocab],
        )

    def __repr__(self):
        return f"BaseLogits({self.path.name}: {self.n_chunk} chunks x n_ctx {self.n_ctx}, n_vocab {self.n_vocab})"


def read_base(path: str | os.PathLike) -> BaseLogits:
    return BaseLogits(path)


def encode_log_probs(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of logits -> (uint16 records [n, nv], log-sum-exp per row), as llama-perplexity stores them
    (float32 arithmetic, sum of exponentials in double, round half to even)."""
    lg = np.ascontiguousarray(logits, dtype=np.float32)
    n, n_vocab = lg.shape
    mx = lg.max(axis=1)
    mn = np.maximum(lg.min(axis=1), mx - np.float32(FLOOR))
    s = np.exp(lg - mx[:, None]).sum(axis=1, dtype=np.float64)
    lse = np.log(s).astype(np.float32)
    min_log_prob = (mn - mx) - lse
    scale = (mx - mn) / _U16_MAX
    out = np.zeros((n, record_length(n_vocab)), dtype="<u2")
    out[:, :4] = np.stack([scale, min_log_prob], axis=1).astype("<f4").view("<u2")
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(scale > 0, np.float32(1) / scale, np.float32(0)).astype(np.float32)
        v = np.rint(inv[:, None] * (lg - mn[:, None]))
    out[:, 4 : 4 + n_vocab] = np.where(lg > mn[:, None], v, 0).astype("<u2")
    return out, mx.astype(np.float64) + lse.astype(np.float64)


def _raw_chunks(model, text, n_ctx, n_chunks):
    tokens, n = tokens_for(model, text, n_ctx, n_chunks)
    return tokens[: n * n_ctx].reshape(n, n_ctx).astype(np.int32)


def _with_bos(model, toks: np.ndarray) -> np.ndarray:
    c = np.asarray(toks, dtype=np.int64).copy()
    if model.tokenizer.add_bos and model.tokenizer.bos_id is not None:
        c[0] = model.tokenizer.bos_id
    return c


def _chunk_logits(model, toks, n_ctx, rows):
    """Yield (r0, r1, float32 logits) of the scored positions of one chunk, ``rows`` at a time."""
    first = n_ctx // 2
    h = model.forward(toks, model.new_cache(n_ctx), outputs=np.arange(first, n_ctx), logits=False)
    n_sc = n_ctx - 1 - first
    for r0 in range(0, n_sc, rows):
        r1 = min(n_sc, r0 + rows)
        yield r0, r1, np.asarray(model.logits(h[r0:r1]), dtype=np.float32)


def save_base(
    model: Model,
    path: str | os.PathLike,
    text: str | None = None,
    n_ctx: int = 512,
    n_chunks: int | None = 20,
    threads: int | None = None,
    progress: Callable[[int, int], object] | None = None,
) -> pathlib.Path:
    """Write ``model``'s distributions on ``text`` as a llama.cpp KL-divergence base file (what
    ``llama-perplexity --kl-divergence-base`` writes), atomically. Returns the path."""
    path = pathlib.Path(path)
    chunks = _raw_chunks(model, text, n_ctx, n_chunks)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
    try:
        with os.fdopen(fd, "wb") as f, _threads(threads):
            f.write(HEADER.pack(MAGIC, n_ctx, model.n_vocab, len(chunks)))
            chunks.astype("<i4").tofile(f)
            for ci, toks in enumerate(chunks):
                for _, _, lg in _chunk_logits(model, _with_bos(model, toks), n_ctx, LOGIT_ROWS):
                    rec, _ = encode_log_probs(lg)
                    rec.tofile(f)
                if progress is not None:
                    progress(ci + 1, len(chunks))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _mean_err(v: np.ndarray) -> tuple[float, float]:
    """llama.cpp's mean_and_uncertainty: mean, sqrt(var / (n-1)) (0 for 10 values or fewer)."""
    n = len(v)
    if n < 1:
        return 0.0, 0.0
    m = float(v.mean())
    var = float((v * v).mean()) - m * m
    return m, (float(np.sqrt(var / (n - 1))) if var > 0 and n > 10 else 0.0)


def compare(
    model: Model,
    base: str | os.PathLike | BaseLogits,
    threads: int | None = None,
    n_chunks: int | None = None,
    progress: Callable[[int, int, float], object] | None = None,
    stream: bool = True,
) -> EvalResult:
    """Run ``model`` on the tokens of the base file ``base`` (a path or :class:`BaseLogits`) and compare
    its distributions with the stored ones, like ``llama-perplexity --kl-divergence``. Returns an
    :class:`~quantlab.model.eval.EvalResult` with ``base_ppl``, KLD, top-1 agreement and RMS dp."""
    b = base if isinstance(base, BaseLogits) else BaseLogits(base)
    n_vocab = model.n_vocab
    if b.n_vocab != n_vocab:
        raise ModelError(
            f"{b.path}: the base file has n_vocab = {b.n_vocab}, the model has {n_vocab}: "
            f"KL divergence needs the same vocabulary"
        )
    n = b.n_chunk if n_chunks is None or n_chunks < 0 else min(int(n_chunks), b.n_chunk)
    if n < 1:
        raise ModelError("n_chunks must be at least 1")
    nll, nll_b, kld, dp, same, amax_all = [], [], [], [], [], []
    t0 = time.perf_counter()
    was = model.stream
    model.stream = stream
    try:
        with _threads(threads):
            for ci in range(n):
                c = b.chunk(ci)
                tg = c.targets.astype(np.int64)
                for r0, r1, lg in _chunk_logits(model, _with_bos(model, c.tokens), b.n_ctx, LOGIT_ROWS):
                    k = np.arange(r1 - r0)
                    mx = lg.max(axis=1)
                    amax = lg.argmax(axis=1)
                    lse = mx.astype(np.float64) + np.log(np.exp(lg - mx[:, None]).sum(axis=1, dtype=np.float64))
                    v = lse - lg[k, tg[r0:r1]].astype(np.float64)
                    lpb = c.log_probs(slice(r0, r1))
                    vb = -lpb[k, tg[r0:r1]].astype(np.float64)
                    keep = lpb > np.float32(-FLOOR)
                    pb = np.where(keep, np.exp(lpb.astype(np.float64)), 0.0)
                    logp = lg.astype(np.float64) - lse[:, None]
                    kld.append(np.einsum("ij,ij->i", pb, np.where(keep, lpb - logp, 0.0)))
                    nll.append(v)
                    nll_b.append(vb)
                    dp.append(np.exp(-v) - np.exp(-vb))
                    same.append(amax == c.q[r0:r1].argmax(axis=1))
                    amax_all.append(amax)
                if progress is not None:
                    progress(ci + 1, n, float(np.exp(np.concatenate(nll).mean())))
    finally:
        model.stream = was
    v, vb = np.concatenate(nll), np.concatenate(nll_b)
    k, d = np.concatenate(kld), np.concatenate(dp)
    m, e = _mean_err(v)
    mb, _ = _mean_err(vb)
    r = EvalResult(
        ppl=float(np.exp(m)),
        ppl_err=float(np.exp(m) * e),
        n_chunks=n,
        n_ctx=b.n_ctx,
        n_scored=len(v),
        nll=v,
        seconds=time.perf_counter() - t0,
        argmax=np.concatenate(amax_all),
    )
    r.base_ppl = float(np.exp(mb))
    r.nll_base = vb
    r.kld, r.dp = k, d
    r.kld_mean, r.kld_err = _mean_err(k)
    r.kld_median = float(np.median(k))
    r.kld_p99 = float(np.percentile(k, 99))
    r.kld_max = float(k.max())
    r.top1 = float(np.concatenate(same).mean())
    r.dp_rms = float(np.sqrt((d * d).mean()))
    r.base_file = str(b.path)
    return r
