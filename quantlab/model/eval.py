"""Perplexity and KL divergence, the way ``llama-perplexity`` measures them; and a speed benchmark.

Perplexity (``llama-perplexity -c n_ctx``): the text is tokenized once (BOS only if the model asks for
it, special-token text not parsed), cut into ``n_ctx``-token chunks; each chunk is run from an empty
cache and only its second half is scored — token i+1 is predicted from logits i for i in
[n_ctx/2, n_ctx - 1), so every scored token has at least n_ctx/2 tokens of context::

    nll_i = log(sum_v exp(logit_v)) - logit_{token}     PPL = exp(mean nll)
    PPL error = PPL * sqrt((mean(nll^2) - mean(nll)^2) / (N - 1))

Against a base model (same tokens, same chunks), per scored token (llama-perplexity
``--kl-divergence``): KLD = sum_v p_base log(p_base / p), top-1 agreement (same argmax), and
dp = p(token) - p_base(token), summarised as mean/median/99th percentile KLD, fraction of equal
top-1 and RMS(dp). quantlab computes the base distribution exactly in float64; llama-perplexity
stores it as 16-bit log-probabilities and drops terms below e^-16, which changes KLD in the 4th digit.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import time
from dataclasses import dataclass, field

import numpy as np

from ..data import text as default_text
from ..errors import ModelError
from ..progress import Progress, callback
from .llama import Model, load
from .llama import threads as _threads

LOGIT_ROWS = 32  # logits are produced this many rows at a time (a chunk's 256 x 49152 would be 50 MB)


@dataclass
class EvalResult:
    ppl: float
    ppl_err: float
    n_chunks: int
    n_ctx: int
    n_scored: int
    nll: np.ndarray = field(repr=False)  # per scored token
    seconds: float = 0.0
    base_ppl: float | None = None
    kld_mean: float | None = None
    kld_err: float | None = None
    kld_median: float | None = None
    kld_p99: float | None = None
    top1: float | None = None
    dp_rms: float | None = None
    kld: np.ndarray | None = field(default=None, repr=False)
    dp: np.ndarray | None = field(default=None, repr=False)
    argmax: np.ndarray | None = field(default=None, repr=False)  # the model's top-1 id per scored token
    nll_base: np.ndarray | None = field(default=None, repr=False)
    kld_max: float | None = None
    base_file: str | None = None  # a llama.cpp --kl-divergence-base file

    def summary(self) -> str:
        s = (
            f"PPL = {self.ppl:.4f} +/- {self.ppl_err:.5f}  ({self.n_chunks} chunks of {self.n_ctx}, "
            f"{self.n_scored} scored tokens, {self.seconds:.1f} s)"
        )
        base, top1, dp = self.base_ppl, self.top1, self.dp_rms  # set together when there was a base
        if self.kld_mean is not None and base is not None and top1 is not None and dp is not None:
            s += (
                f"\nbase PPL = {base:.4f}   KLD mean {self.kld_mean:.6f} +/- {self.kld_err:.6f}, "
                f"median {self.kld_median:.6f}, 99% {self.kld_p99:.6f}   same top-1 {100 * top1:.3f} %   "
                f"RMS dp {100 * dp:.3f} %   PPL - base PPL {self.ppl - base:+.4f}"
            )
        return s


def _log_softmax_stats(logits: np.ndarray):
    """Per row: log-sum-exp (exp in float32, sum in float64, like llama-perplexity) and argmax."""
    mx = logits.max(axis=1)
    e = np.exp(logits - mx[:, None])
    lse = mx.astype(np.float64) + np.log(e.sum(axis=1, dtype=np.float64))
    return lse, logits.argmax(axis=1)


def _trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def tokens_for(model: Model, text: str | None, n_ctx: int, n_chunks: int | None) -> tuple[np.ndarray, int]:
    """The text's tokens as llama-perplexity takes them (BOS only if the model asks for it, special-token
    text not parsed) and how many ``n_ctx`` chunks will be scored."""
    if n_ctx < 4 or n_ctx % 2:
        raise ModelError(f"n_ctx must be an even number >= 4, got {n_ctx}")
    if text is None:
        text = default_text()
    tokens = np.asarray(model.tokenize(text, add_special=True, parse_special=False), dtype=np.int64)
    if len(tokens) < 2 * n_ctx:
        raise ModelError(
            f"the text is too short: it has {len(tokens)} tokens, perplexity with n_ctx={n_ctx} "
            f"needs at least {2 * n_ctx} (like llama-perplexity); give more text or a smaller n_ctx"
        )
    n_max = len(tokens) // n_ctx
    n = n_max if n_chunks is None or n_chunks < 0 else min(int(n_chunks), n_max)
    if n < 1:
        raise ModelError("n_chunks must be at least 1")
    _trim()  # give the tokenizer's working memory back to the OS before the model runs
    return tokens, n


def chunks_of(model: Model, text: str | None, n_ctx: int, n_chunks: int | None) -> list[np.ndarray]:
    """The token chunks llama-perplexity would score (each chunk's first token replaced by BOS when the
    vocabulary adds BOS, as llama-perplexity does per chunk)."""
    tokens, n = tokens_for(model, text, n_ctx, n_chunks)
    out = []
    for i in range(n):
        c = tokens[i * n_ctx : (i + 1) * n_ctx].copy()
        if model.tokenizer.add_bos and model.tokenizer.bos_id is not None:
            c[0] = model.tokenizer.bos_id
        out.append(c)
    return out


@contextlib.contextmanager
def _restore_stream(models, was):
    try:
        yield
    finally:
        for x, w in zip(models, was):
            x.stream = w


def evaluate(
    model: Model,
    text: str | None = None,
    n_ctx: int = 512,
    n_chunks: int | None = 20,
    base: Model | None = None,
    threads: int | None = None,
    progress: Progress = True,
    stream: bool = True,
) -> EvalResult:
    """Perplexity of ``model`` on ``text`` (default: :func:`quantlab.data.text`) like llama-perplexity;
    with ``base`` (another loaded model with the same vocabulary) also KL divergence, top-1
    agreement and RMS of delta-p. ``progress``: a bar (True, see :mod:`quantlab.progress`), nothing
    (False), or ``progress(i, n, ppl_so_far)`` called after every chunk.
    ``stream``: read weights with pread per batch rather than through the map (see Model.stream)."""
    if base is not None and not model.tokenizer.same_vocabulary(base.tokenizer):
        raise ModelError(
            f"the base model has a different vocabulary ({base.tokenizer.n_vocab} tokens vs "
            f"{model.tokenizer.n_vocab}): KL divergence needs the same tokens"
        )
    chunks = chunks_of(model, text, n_ctx, n_chunks)

    progress = callback(progress, len(chunks), "perplexity", "chunk", value="PPL")
    first = n_ctx // 2
    out_rows = np.arange(first, n_ctx)
    acc = _Scores()
    t0 = time.perf_counter()
    models = [model] + ([base] if base is not None else [])
    was = [x.stream for x in models]
    for x in models:
        x.stream = stream
    with _threads(threads), _restore_stream(models, was):
        for ci, toks in enumerate(chunks):
            # Model.forward's `outputs` takes "last", "all" or indices (llama.py is not annotated yet)
            h = model.forward(toks, model.new_cache(n_ctx), outputs=out_rows, logits=False)  # pyright: ignore[reportArgumentType]
            hb = (
                base.forward(toks, base.new_cache(n_ctx), outputs=out_rows, logits=False)  # pyright: ignore[reportArgumentType]
                if base is not None
                else None
            )
            targets = toks[first + 1 :]
            n_sc = n_ctx - 1 - first  # scored tokens of a chunk
            for r0 in range(0, n_sc, LOGIT_ROWS):
                rows = slice(r0, min(n_sc, r0 + LOGIT_ROWS))
                acc.add(model, h[rows], targets[rows], base, None if hb is None else hb[rows])
            if progress is not None:
                progress(ci + 1, len(chunks), float(np.exp(np.concatenate(acc.nll).mean())))
    return acc.result(len(chunks), n_ctx, time.perf_counter() - t0, base is not None)


@dataclass
class _Scores:
    """Per scored token, collected block by block: NLL and argmax of the model; against a base, its NLL,
    KL divergence, delta-p and whether the argmax agrees."""

    nll: list = field(default_factory=list)
    amaxes: list = field(default_factory=list)
    nll_base: list = field(default_factory=list)
    kld: list = field(default_factory=list)
    dp: list = field(default_factory=list)
    same: list = field(default_factory=list)

    def add(self, model: Model, h, tgt, base: Model | None, hb) -> None:
        """Score the hidden states ``h`` (and the base's ``hb``) of rows whose next tokens are ``tgt``."""
        lg = model.logits(h)
        lse, amax = _log_softmax_stats(lg)
        rows = np.arange(len(tgt))
        lt = lg[rows, tgt].astype(np.float64)
        self.nll.append(lse - lt)
        self.amaxes.append(amax)
        if base is None or hb is None:
            return
        lb = base.logits(hb)
        lse_b, amax_b = _log_softmax_stats(lb)
        logp_b = lb.astype(np.float64) - lse_b[:, None]
        logp = lg.astype(np.float64) - lse[:, None]
        self.kld.append(np.einsum("ij,ij->i", np.exp(logp_b), logp_b - logp))
        ltb = lb[rows, tgt].astype(np.float64)
        self.nll_base.append(lse_b - ltb)
        self.dp.append(np.exp(lt - lse) - np.exp(ltb - lse_b))
        self.same.append(amax == amax_b)

    def result(self, n_chunks: int, n_ctx: int, seconds: float, with_base: bool) -> EvalResult:
        v = np.concatenate(self.nll)
        m = v.mean()
        ppl = float(np.exp(m))
        var = (v * v).mean() - m * m
        err = float(ppl * np.sqrt(var / (len(v) - 1))) if var > 0 and len(v) > 1 else float("nan")
        r = EvalResult(
            ppl=ppl,
            ppl_err=err,
            n_chunks=n_chunks,
            n_ctx=n_ctx,
            n_scored=len(v),
            nll=v,
            seconds=seconds,
            argmax=np.concatenate(self.amaxes),
        )
        if with_base:
            k = np.concatenate(self.kld)
            d = np.concatenate(self.dp)
            r.nll_base = np.concatenate(self.nll_base)
            r.base_ppl = float(np.exp(r.nll_base.mean()))
            r.kld_max = float(k.max())
            r.kld, r.dp = k, d
            r.kld_mean = float(k.mean())
            r.kld_err = float(np.sqrt(max(0.0, (k * k).mean() - k.mean() ** 2) / max(1, len(k) - 1)))
            r.kld_median = float(np.percentile(k, 50))
            r.kld_p99 = float(np.percentile(k, 99))
            r.top1 = float(np.concatenate(self.same).mean())
            r.dp_rms = float(np.sqrt((d * d).mean()))
        return r


def bench(
    model_path: str | os.PathLike | Model, n_prompt: int = 512, n_gen: int = 32, threads: int = 2, reps: int = 1
) -> dict:
    """Speed like llama-bench: prompt processing of ``n_prompt`` tokens in one batch (pp, tok/s) and
    generation of ``n_gen`` tokens one at a time with the KV cache (tg, tok/s). Warms up first
    (kernels compiled/loaded) and reports the best of ``reps`` runs."""
    m = model_path if isinstance(model_path, Model) else load(model_path)
    rng = np.random.default_rng(0)
    toks = rng.integers(0, m.n_vocab, size=n_prompt + n_gen)
    with _threads(threads):
        m.forward(toks[:8], m.new_cache(16))  # warm-up: kernels loaded
        m.forward(toks[:1], m.new_cache(16))
        pp = tg = pp_cpu = tg_cpu = float("inf")
        for _ in range(max(1, reps)):
            cache = m.new_cache(n_prompt + n_gen + 1)
            t0, c0 = time.perf_counter(), time.process_time()
            m.forward(toks[:n_prompt], cache)
            pp, pp_cpu = min(pp, time.perf_counter() - t0), min(pp_cpu, time.process_time() - c0)
            cache = m.new_cache(n_gen + 1)
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(n_gen):
                m.forward(toks[i : i + 1], cache)
            tg, tg_cpu = min(tg, time.perf_counter() - t0), min(tg_cpu, time.process_time() - c0)
    # wall-clock rates are what llama-bench reports; CPU seconds show how much of the wall time this
    # process actually ran (on a shared machine the difference is time spent waiting for a core)
    return {
        "model": str(getattr(m, "path", model_path)),
        "threads": threads,
        "n_prompt": n_prompt,
        "n_gen": n_gen,
        "pp_tok_s": n_prompt / pp,
        "tg_tok_s": n_gen / tg,
        "pp_seconds": pp,
        "tg_seconds": tg,
        "pp_cpu_seconds": pp_cpu,
        "tg_cpu_seconds": tg_cpu,
    }
