"""Notebook 07: a real model quantized, tensor by tensor and as a whole.

* :func:`fit_table` — which registry formats can store rows of 576 / 1536 weights, and llama.cpp's
  fallback (:func:`quantlab.recipes.fallback`) where they cannot;
* :func:`error_grid` / :func:`plot_heatmap` — relative error of every weight matrix of SmolLM2 (layer x
  tensor kind) in each format;
* :func:`ladder` / :func:`plot_ladder` — whole-model quantization with :func:`quantlab.recipes.quantize_model`
  into a temporary directory, then perplexity, KL divergence and top-1 agreement against the shipped
  model (:func:`quantlab.model.evaluate`), and the file size;
* :func:`embedding_study` — all-MiniLM-L6-v2 (fp32) through each format: cosine of the sentence
  embeddings to the fp32 ones (:mod:`quantlab.model.bert`);
* :class:`ModelLadder` — pick a format, a layer and a tensor kind: its error, in numbers and as a histogram.

``quick_default()`` is True when ``QUANTLAB_QUICK=1`` or ``CI=true``: the notebook then uses a sample of
rows and layers, two file types and short contexts so that it runs in tests in well under a minute of
compute; the full run quantizes every weight.
"""

from __future__ import annotations

import os
import tempfile
import time

import ipywidgets as W
import numpy as np

from .. import data, metrics, recipes
from ..api import dequantize, quantize
from ..errors import FormatError
from ..formats import all_formats, get
from ..progress import callback, steps
from ..recipes import fallback
from ._common import App, contained, html_table, new_figure, quick_default, show_figure  # noqa: F401 (quick_default: used by the notebooks)

#: the tensor kinds of a llama block, in graph order
KINDS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
#: formats of the per-tensor heatmap (one per family / bit width)
HEATMAP_FORMATS = ("Q8_0", "Q6_K", "Q5_K", "Q4_K", "IQ4_XS", "Q4_0", "Q3_K", "Q2_K")
QUICK_HEATMAP_FORMATS = ("Q8_0", "Q4_K", "Q4_0", "Q2_K")
#: llama.cpp file types of the model-level ladder
MAIN_FTYPES = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "IQ4_XS", "Q4_0", "Q3_K_M", "Q2_K")
QUICK_FTYPES = ("Q8_0", "Q4_0")


def _impl(f, prefer: str) -> str:
    for k in (prefer, "reference" if prefer == "fast" else "fast"):
        if f.has_impl(k, "quantize") and f.has_impl(k, "dequantize"):
            return k
    raise ValueError(f"{f.name} has no implementation yet")


# --------------------------------------------------------------------------------------------- fits


def fit_table(widths=(576, 1536), formats=None) -> list[dict]:
    """For each storable quantized format: block size, bpw, whether rows of each width are whole blocks,
    and what llama.cpp stores instead when they are not (``recipes.fallback``)."""
    fs = (
        formats if formats is not None else [f.name for f in all_formats(include_activation=False, quantized_only=True)]
    )
    rows = []
    for f in map(get, fs):
        r = {"format": f.name, "block": f.block_size, "bpw": f.bpw}
        for w in widths:
            r[f"fits {w}"] = "yes" if w % f.block_size == 0 else "no"
            try:
                fb, _ = fallback(w, f)
                r[f"stored as ({w})"] = fb.name
            except FormatError:
                r[f"stored as ({w})"] = "(no fallback)"
        rows.append(r)
    return rows


# ------------------------------------------------------------------------------------- tensor errors


def matrix_names(n_layer: int, layers=None) -> list[tuple[int, str, str]]:
    """(layer, kind, tensor name) for the weight matrices of the given layers (default: all)."""
    ls = range(n_layer) if layers is None else layers
    return [(i, k, f"blk.{i}.{k}.weight") for i in ls for k in KINDS]


def tensor_error(x: np.ndarray, fmt, impl: str = "fast", imatrix=None) -> dict:
    """Quantize ``x`` (2-D) to ``fmt`` — or to llama.cpp's fallback when its rows do not fit — and back.
    Returns format (asked), used (stored), fallback (bool), bpw (of the stored format), rel_error,
    sqnr_db, rmse, max_error, and the dequantized array ``y``."""
    f = get(fmt)
    used, why = fallback(x.shape[1], f)
    kind = _impl(used, impl)
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = dequantize(quantize(x, used, imatrix=imatrix, impl=kind), used, impl=kind).reshape(x.shape)
    return {
        "format": f.name,
        "used": used.name,
        "fallback": why is not None,
        "bpw": used.bpw,
        "rel_error": metrics.relative_error(x, y),
        "sqnr_db": metrics.sqnr_db(x, y),
        "rmse": metrics.rmse(x, y),
        "max_error": metrics.max_error(x, y),
        "y": y,
    }


def sample_rows(x: np.ndarray, rows: int | None = None, step: int | None = None) -> np.ndarray:
    """The rows of ``x`` a measurement uses: all of them (default), the first ``rows``, or every ``step``-th
    row (a fixed sample spread over the whole matrix, always the same rows)."""
    if step is not None and step > 1:
        x = x[::step]
    if rows is not None:
        x = x[:rows]
    return x


def error_grid(
    tensors,
    n_layer: int,
    formats=HEATMAP_FORMATS,
    layers=None,
    rows: int | None = None,
    step: int | None = None,
    impl: str = "fast",
    progress=True,
) -> dict:
    """Relative error of each weight matrix (layer x kind) in each format.

    ``tensors``: name -> float32 array (e.g. ``quantlab.data.tensors("smollm2")``). ``step``: only every
    ``step``-th row of each matrix; ``rows``: only the first ``rows`` of those (see :func:`sample_rows`).
    Returns a dict with ``layers``, ``kinds``, ``formats``, ``rel`` (format -> array [layer, kind]),
    ``used`` (format -> kind -> stored format), ``weights`` (number of weights quantized per format),
    ``rows``, ``step`` and ``seconds``. ``progress``: see :mod:`quantlab.progress` (callable: ``(i, n)``)."""
    names = matrix_names(n_layer, layers)
    progress = callback(progress, len(names), "error grid", "matrix")
    ls = sorted({i for i, _, _ in names})
    rel = {f: np.full((len(ls), len(KINDS)), np.nan) for f in formats}
    used = {f: {} for f in formats}
    n = 0
    t0 = time.perf_counter()
    for j, (i, k, name) in enumerate(names):
        x = np.ascontiguousarray(sample_rows(tensors[name], rows, step), dtype=np.float32)
        for f in formats:
            r = tensor_error(x, f, impl=impl)
            rel[f][ls.index(i), KINDS.index(k)] = r["rel_error"]
            used[f][k] = r["used"]
        n += x.size
        if progress is not None:
            progress(j + 1, len(names))
    return {
        "layers": ls,
        "kinds": KINDS,
        "formats": tuple(formats),
        "rel": rel,
        "used": used,
        "weights": n,
        "rows": rows,
        "step": step,
        "seconds": time.perf_counter() - t0,
    }


def describe_sample(grid: dict) -> str:
    """In words: which rows of each matrix ``grid`` measured."""
    step, rows = grid.get("step") or 1, grid.get("rows")
    if step > 1 and rows:
        return f"the first {rows} of one row in every {step} of each matrix"
    if step > 1:
        return f"one row in every {step} of each matrix"
    return f"the first {rows} rows of each matrix" if rows else "every weight"


def sample_check(full: dict, sample: dict) -> list[dict]:
    """Per format present in both grids, over the layers ``full`` measured (they must be in ``sample`` too):
    the mean relative error per kind measured on every weight and on the row sample, and the largest
    relative difference between the two estimates of one matrix."""
    missing = sorted(set(full["layers"]) - set(sample["layers"]))
    if missing:
        raise ValueError(f"layers {missing} are in the every-weight grid but not in the sample")
    pick = [sample["layers"].index(i) for i in full["layers"]]
    out = []
    for f in full["formats"]:
        if f not in sample["formats"]:
            continue
        a, b = full["rel"][f], sample["rel"][f][pick]
        ok = np.isfinite(a) & np.isfinite(b)
        for j, k in enumerate(full["kinds"]):
            out.append(
                {
                    "format": f,
                    "kind": k,
                    "every weight": float(np.nanmean(a[:, j])),
                    "sample": float(np.nanmean(b[:, j])),
                    "max |sample/full - 1| (one matrix)": float(np.max(np.abs(b[ok[:, j], j] / a[ok[:, j], j] - 1))),
                }
            )
    return out


def plot_heatmap(fig, grid: dict) -> None:
    """One panel per format: layer (rows) x tensor kind (columns), colour = relative error (log scale,
    the same scale for every panel); a kind stored in a fallback format is marked with '*'."""
    # matplotlib: lazily, like _common.new_figure
    from matplotlib.colors import LogNorm

    fig.clear()
    fs = grid["formats"]
    allv = np.concatenate([grid["rel"][f].ravel() for f in fs])
    allv = allv[np.isfinite(allv) & (allv > 0)]
    norm = LogNorm(vmin=allv.min(), vmax=allv.max())
    ncol = min(4, len(fs))
    nrow = -(-len(fs) // ncol)
    fig.set_layout_engine("constrained")  # titles clear of the rotated labels of the row above
    axes = fig.subplots(nrow, ncol, squeeze=False)
    im = None
    for a, f in zip(axes.ravel(), fs):
        im = a.imshow(grid["rel"][f], aspect="auto", cmap="viridis", norm=norm, interpolation="nearest")
        labels = [k + ("*" if grid["used"][f].get(k, f) != f else "") for k in grid["kinds"]]
        a.set_xticks(range(len(labels)), labels, rotation=60, fontsize=10)
        step = max(1, len(grid["layers"]) // 6)
        a.set_yticks(
            range(0, len(grid["layers"]), step),
            [grid["layers"][i] for i in range(0, len(grid["layers"]), step)],
            fontsize=10,
        )
        fb = sorted({v for v in grid["used"][f].values() if v != f})
        a.set_title(f + (f" (* = {', '.join(fb)})" if fb else ""), fontsize=10)
    for a in axes.ravel()[len(fs) :]:
        a.axis("off")
    axes[0, 0].set_ylabel("layer", fontsize=10)
    if im is not None:
        cb = fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8)
        cb.set_label("relative error ||w - q(w)|| / ||w||", fontsize=10)
        cb.ax.tick_params(labelsize=10)


def grid_table(grid: dict) -> list[dict]:
    """Per format: mean relative error per kind, and over everything."""
    out = []
    for f in grid["formats"]:
        r = {"format": f}
        m = grid["rel"][f]
        for j, k in enumerate(grid["kinds"]):
            r[k] = float(np.nanmean(m[:, j]))
        r["all"] = float(np.nanmean(m))
        out.append(r)
    return out


# ------------------------------------------------------------------------------------ model ladder


def ladder(
    model_path,
    ftypes=MAIN_FTYPES,
    outdir=None,
    n_ctx: int = 256,
    n_chunks: int = 2,
    text=None,
    keep: tuple = (),
    log=None,
    progress=True,
) -> dict:
    """Quantize the GGUF ``model_path`` into each llama.cpp file type of ``ftypes`` (in ``outdir``, a
    temporary directory by default) with :func:`quantlab.recipes.quantize_model`, then evaluate each against
    the input model on ``text`` with :func:`quantlab.model.evaluate` (perplexity, KL divergence, top-1).

    Returns ``{"rows": [...], "base": EvalResult of the input model, "models": {ftype: Model} for the
    ftypes in ``keep``, "outdir": ...}``. Files written to a temporary directory (``outdir=None``) are
    deleted once evaluated (kept models stay usable: they hold a memory map of their file). Each row: ftype, bpw, MB (file size), ppl, ppl_err, kld, kld_err, kld_p99,
    top1, fallbacks, quantize_s, eval_s. ``progress``: a bar over the file types (see :mod:`quantlab.progress`)."""
    # the model code starts numba (~0.25 s): only the ladder run
    from .. import model as qmodel

    say = log or (lambda s: None)
    own_dir = outdir is None
    outdir = outdir or tempfile.mkdtemp(prefix="quantlab-ladder-")
    base = qmodel.load(model_path)
    ref = _RememberedForward(base)  # the base's pass over each chunk runs once, not once per file type
    t = time.perf_counter()
    base_eval = qmodel.evaluate(ref, text=text, n_ctx=n_ctx, n_chunks=n_chunks, progress=False)
    shipped = f"{base.file.tensors['blk.0.attn_q.weight'].format.name} (shipped)"
    bpw = 8.0 * base.file.tensor_bytes / base.file.n_params
    rows = [_rung(shipped, bpw, os.path.getsize(model_path), base_eval, 0, 0.0, time.perf_counter() - t)]
    models = {}
    for ft in steps(progress, ftypes, "ladder", "file type"):
        out = os.path.join(outdir, f"model-{ft}.gguf")
        t = time.perf_counter()
        res = recipes.quantize_model(model_path, out, ft, allow_requantize=True, verbose=False, progress=False)
        tq = time.perf_counter() - t
        m = qmodel.load(out)
        t = time.perf_counter()
        e = qmodel.evaluate(m, text=text, n_ctx=n_ctx, n_chunks=n_chunks, base=ref, progress=False)
        rows.append(_rung(ft, res.bpw, res.nbytes, e, res.plan.n_fallback, tq, time.perf_counter() - t))
        say(f"{ft}: {rows[-1]['bpw']:.2f} bpw, PPL {e.ppl:.3f}, KLD {e.kld_mean:.4f}, top-1 {100 * e.top1:.1f} %")
        if ft in keep:
            models[ft] = m
        if own_dir:
            _unlink(out)  # a temporary file: the model keeps its memory map (POSIX), the disk is freed
    if own_dir:
        try:
            os.rmdir(outdir)
        except OSError:
            pass
    return {
        "rows": rows,
        "base": base_eval,
        "base_model": base,
        "models": models,
        "outdir": outdir,
        "n_ctx": n_ctx,
        "n_chunks": n_chunks,
        "n_scored": base_eval.n_scored,
    }


def _rung(ftype: str, bpw: float, nbytes: int, e, fallbacks: int, quantize_s: float, eval_s: float) -> dict:
    """One row of the ladder from its evaluation ``e``; the input model (no base) is its own reference:
    KLD 0, top-1 1."""
    base = e.kld is None
    return {
        "ftype": ftype,
        "bpw": bpw,
        "MB": nbytes / 1e6,
        "ppl": e.ppl,
        "ppl_err": e.ppl_err,
        "kld": 0.0 if base else e.kld_mean,
        "kld_err": 0.0 if base else e.kld_err,
        "kld_p99": 0.0 if base else e.kld_p99,
        "top1": 1.0 if base else e.top1,
        "fallbacks": fallbacks,
        "quantize_s": quantize_s,
        "eval_s": eval_s,
    }


class _RememberedForward:
    """A loaded model whose forward pass from an empty cache is remembered per (tokens, outputs): the ladder
    scores every file type on the same chunks against the same base model, so the base's hidden states for
    a chunk are computed once and reused. Everything else (tokenizer, logits, ...) is the model's own."""

    def __init__(self, model):
        self._model = model
        self._memo = {}

    def forward(self, tokens, cache, outputs="last", logits: bool = True):
        if cache.n != 0:  # a continuation depends on the cache: not remembered
            return self._model.forward(tokens, cache, outputs=outputs, logits=logits)
        key = (
            np.asarray(tokens, dtype=np.int64).tobytes(),
            outputs if isinstance(outputs, str) else np.asarray(outputs, dtype=np.int64).tobytes(),
            logits,
        )
        if key not in self._memo:
            self._memo[key] = self._model.forward(tokens, cache, outputs=outputs, logits=logits)
        return self._memo[key]

    @property
    def stream(self) -> bool:
        return self._model.stream

    @stream.setter
    def stream(self, on: bool) -> None:
        self._model.stream = on

    def __getattr__(self, name):
        return getattr(self._model, name)


def _unlink(path) -> None:
    try:
        os.remove(path)
    except OSError:  # e.g. Windows cannot delete a mapped file: it stays in the temporary directory
        pass


def plot_ladder(axes, lad: dict) -> None:
    """Two panels against bits per weight: KL divergence to the shipped model (log), and perplexity."""
    rows = lad["rows"]
    a0, a1 = axes
    for a in axes:
        a.clear()
        a.grid(alpha=0.3)
        a.tick_params(labelsize=10)
    q = [r for r in rows if r["kld"] > 0]
    a0.plot([r["bpw"] for r in q], [r["kld"] for r in q], "o-", color="#d9534f")
    for r in q:
        a0.annotate(r["ftype"], (r["bpw"], r["kld"]), fontsize=10, xytext=(3, 3), textcoords="offset points")
    a0.set_yscale("log")
    a0.set_xlabel("bits per weight", fontsize=10)
    a0.set_ylabel("mean KL divergence to the shipped model", fontsize=10)
    a1.errorbar(
        [r["bpw"] for r in rows],
        [r["ppl"] for r in rows],
        yerr=[r["ppl_err"] for r in rows],
        fmt="o",
        color="#2a7ab0",
        ms=4,
        capsize=2,
    )
    for r in rows:
        a1.annotate(r["ftype"], (r["bpw"], r["ppl"]), fontsize=10, xytext=(3, 3), textcoords="offset points")
    a1.set_xlabel("bits per weight", fontsize=10)
    a1.set_ylabel(f"perplexity ({lad['n_chunks']} x {lad['n_ctx']} tokens)", fontsize=10)


# ------------------------------------------------------------------------------------- MiniLM study

#: sentence pairs for the embedding study: (a, b) with b a paraphrase of a, plus unrelated ones
SENTENCES = (
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The weather is lovely today.",
    "It's so sunny outside!",
    "He drove to the stadium.",
    "A monkey is playing drums.",
    "Quantization stores each weight with fewer bits.",
    "The model weights are compressed to four bits.",
)


def embedding_study(enc, sentences=SENTENCES, formats=HEATMAP_FORMATS, impl: str = "fast", progress=True) -> dict:
    """Each format applied to every weight matrix of the fp32 encoder ``enc``: cosine of each sentence
    embedding to its fp32 embedding, and how far the sentence-similarity matrix moves. ``progress``: a bar
    over the formats (see :mod:`quantlab.progress`)."""
    ref = enc.encode(list(sentences))
    sim_ref = ref @ ref.T
    rows = []
    for f in steps(progress, formats, "embedding study", "format"):
        q = enc.quantized(f, impl=impl)
        e = q.encode(list(sentences))
        cos = (e * ref).sum(axis=1)
        sim = e @ e.T
        used = sorted(set(q.last_formats.values()))
        rows.append(
            {
                "format": f,
                "stored as": "+".join(used),
                "bpw": float(np.mean([get(u).bpw for u in used])),
                "cos mean": float(cos.mean()),
                "cos min": float(cos.min()),
                "similarity max change": float(np.abs(sim - sim_ref).max()),
            }
        )
    return {"rows": rows, "reference": ref, "similarity": sim_ref, "sentences": tuple(sentences)}


# ------------------------------------------------------------------------------------------ the app


class ModelLadder(App):
    """Pick a format, a layer and a tensor kind of SmolLM2: relative error, SQNR, the format actually stored
    (fallback), and the histogram of the weight errors."""

    def __init__(
        self,
        tensors=None,
        n_layer: int | None = None,
        formats=HEATMAP_FORMATS,
        rows: int | None = 64,
        impl: str = "fast",
        fmt: str = "Q4_K",
    ):
        if tensors is None:
            tensors = data.tensors("smollm2")
        self.tensors = tensors
        if n_layer is None:
            n_layer = 1 + max(int(k.split(".")[1]) for k in tensors if k.startswith("blk."))
        self.rows, self.impl = rows, impl
        self.fmt = W.Dropdown(options=list(formats), value=fmt if fmt in formats else formats[0], description="format")
        self.layer = W.IntSlider(value=0, min=0, max=n_layer - 1, description="layer", continuous_update=False)
        self.kind = W.Dropdown(options=list(KINDS), value="attn_q", description="tensor")
        self.summary = W.HTML()
        self.out = W.Output()
        self.fig, self.ax = new_figure(6.5, 2.6)
        self.result: dict = {}
        for w in (self.fmt, self.layer, self.kind):
            w.observe(self.update, names="value")
        self.box = W.VBox([W.HBox([self.fmt, self.layer, self.kind]), self.summary, self.out])
        self.update()

    @property
    def name(self) -> str:
        return f"blk.{self.layer.value}.{self.kind.value}.weight"

    @contained
    def update(self, change=None):
        x = self.tensors[self.name]
        if self.rows is not None:
            x = x[: self.rows]
        r = tensor_error(x, self.fmt.value, impl=self.impl)
        y = r.pop("y")
        self.result = {**r, "name": self.name, "shape": tuple(x.shape)}
        fb = (
            f" &rarr; stored as <b>{r['used']}</b> (rows of {x.shape[1]} are not whole {r['format']} blocks; "
            f"llama.cpp's fallback)"
            if r["fallback"]
            else ""
        )
        self.summary.value = (
            f"<div class='ql-ladder-summary' style='font-size:13px'><b>{self.name}</b> "
            f"({x.shape[0]} x {x.shape[1]} weights) in <b>{r['format']}</b>{fb}: {r['bpw']:.4g} bits/weight, "
            f"relative error {100 * r['rel_error']:.3f} %, SQNR {r['sqnr_db']:.2f} dB, "
            f"max |error| {r['max_error']:.4g}</div>"
        )
        err = (y.astype(np.float64) - x).ravel()
        ax = self.ax
        ax.clear()
        lim = float(np.abs(err).max()) or 1.0
        ax.hist(err, bins=101, range=(-lim, lim), color="#2a7ab0")
        ax.set_yscale("log")
        ax.set_xlabel("q(w) - w", fontsize=10)
        ax.set_ylabel("weights", fontsize=10)
        ax.tick_params(labelsize=10)
        ax.set_title(f"{self.name} in {r['used']}: error histogram", fontsize=10)
        self.fig.tight_layout()
        show_figure(self.out, self.fig)


def app(
    tensors=None, n_layer: int | None = None, rows: int | None = 64, impl: str = "fast", fmt: str = "Q4_K"
) -> ModelLadder:
    return ModelLadder(tensors, n_layer, rows=rows, impl=impl, fmt=fmt)
