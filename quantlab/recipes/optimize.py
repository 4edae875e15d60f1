"""Beyond llama.cpp: choose a format per tensor to minimise importance-weighted error under a size budget.

llama.cpp's file types are hand-made rules ("attn_v gets more bits on these layers"). Here the choice is
measured instead. For every tensor W and every candidate format f we quantize (a sample of rows of) W and
measure the error it causes on the layer's *output*, weighting each input column by the importance
matrix (the mean squared activation a_j^2 that multiplies it)::

    E_W(f) = sum_rows sum_j  imatrix_j * (W_rj - deq(quant_f(W))_rj)^2        ~  E || (W - W_f) a ||^2

and its size S_W(f) in bytes. Then we pick one format per tensor minimising sum E under sum S <= budget:

* **Lagrangian sweep**: for a price lambda per byte, every tensor independently takes
  argmin_f E_W(f) + lambda * S_W(f). Sweeping lambda traces the lower convex frontier of
  (total size, total error); the cheapest point not over budget is kept;
* **greedy fill**: the bytes left are spent on the upgrades with the best error drop per byte.

The result can be written by :func:`quantlab.recipes.quantize_model` — and by llama-quantize itself:
it is a base file type plus one ``--tensor-type ^name$=TYPE`` override per tensor.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .. import gguf
from ..api import dequantize, quantize
from ..errors import FormatError, ImatrixRequired
from ..formats.registry import get as get_format
from .ftypes import FileType
from .imatrix import ImatrixSource, as_imatrix
from .select import ModelInfo, Options, Plan, TensorSpec, make_plan

__all__ = ["optimize", "OptimizeResult", "DEFAULT_CANDIDATES"]

DEFAULT_CANDIDATES = (
    "Q2_K",
    "IQ3_XXS",
    "Q3_K",
    "IQ3_S",
    "IQ4_XS",
    "Q4_0",
    "IQ4_NL",
    "Q4_K",
    "Q4_1",
    "Q5_0",
    "Q5_K",
    "Q5_1",
    "Q6_K",
    "Q8_0",
)


@dataclass
class OptimizeResult:
    """The chosen format per tensor, the measured errors and the frontier explored."""

    base: Plan  # the base file type's plan (fixed tensors come from it)
    choice: dict  # tensor name -> Format (optimized tensors only)
    errors: dict  # tensor name -> {format name: imatrix-weighted squared error}
    sizes: dict  # tensor name -> {format name: bytes}
    budget: int  # bytes allowed for all tensors
    frontier: list = field(default_factory=list)  # dicts: lambda, bytes, bpw, error (Lagrangian points)
    seconds: float = 0.0

    @property
    def fixed_nbytes(self) -> int:
        return sum(t.nbytes for t in self.base if t.name not in self.choice)

    @property
    def nbytes(self) -> int:
        return self.fixed_nbytes + sum(self.sizes[n][f.name] for n, f in self.choice.items())

    @property
    def bpw(self) -> float:
        return 8.0 * self.nbytes / max(1, self.base.n_elements)

    @property
    def error(self) -> float:
        return float(sum(self.errors[n][f.name] for n, f in self.choice.items()))

    def base_error(self) -> float:
        """The same error measure for the base file type's choices (where measured)."""
        tot = 0.0
        for n in self.choice:
            f = self.base[n].fmt.name
            if f not in self.errors[n]:
                return float("nan")
            tot += self.errors[n][f]
        return tot

    def tensor_types(self) -> list:
        """``[(regex, Format)]``: one exact-name override per optimized tensor."""
        return [("^" + re.escape(n) + "$", f) for n, f in self.choice.items()]

    def options(self, **kw) -> Options:
        """Options that make :func:`quantize_model` (with the base file type) write this choice."""
        return Options(tensor_types=tuple(self.tensor_types()), **kw)

    def llama_quantize_args(self) -> list:
        """The same choice for llama-quantize: ``--tensor-type PATTERN=TYPE`` arguments."""
        out = []
        for pat, f in self.tensor_types():
            out += ["--tensor-type", f"{pat}={f.name.lower()}"]
        return out

    def counts(self) -> dict:
        out: dict = {}
        for f in self.choice.values():
            out[f.name] = out.get(f.name, 0) + 1
        return out

    def summary(self) -> str:
        mix = ", ".join(f"{k} x{v}" for k, v in sorted(self.counts().items(), key=lambda kv: -kv[1]))
        return (
            f"optimized {len(self.choice)} tensors for {self.nbytes / 2**20:.2f} MiB "
            f"({self.bpw:.3f} bpw; budget {self.budget / 2**20:.2f} MiB): weighted error "
            f"{self.error:.6g} vs {self.base_error():.6g} for {self.base.ftype.name}; {mix}"
        )


def _sample_rows(n_rows: int, max_rows: int | None) -> np.ndarray:
    if not max_rows or n_rows <= max_rows:
        return np.arange(n_rows)
    return np.unique(np.linspace(0, n_rows - 1, max_rows).round().astype(np.int64))


def _weighted_error(x, fmt, w, threads, impl) -> float:
    q = quantize(x, fmt, imatrix=w if fmt.uses_imatrix else None, impl=impl, threads=threads)
    y = dequantize(q, fmt, impl=impl, threads=threads)
    d = x.astype(np.float64) - y.astype(np.float64)
    return float(((d * d).sum(axis=0) * w.astype(np.float64)).sum())


def _frontier_choice(names, errors, sizes, lam):
    pick = {}
    for n in names:
        pick[n] = min(errors[n], key=lambda f: (errors[n][f] + lam * sizes[n][f], sizes[n][f]))
    return pick


def optimize(
    model: str | os.PathLike | gguf.GGUFFile,
    target_bpw: float | str | None = None,
    *,
    imatrix: ImatrixSource,
    base: str | int | FileType = "Q4_K_M",
    budget_bytes: int | None = None,
    candidates: Sequence[str] = DEFAULT_CANDIDATES,
    max_rows: int | None = 256,
    options: Options | None = None,
    threads: int | None = None,
    impl: str = "fast",
    progress: Callable[[int, int, str], object] | None = None,
) -> OptimizeResult:
    """Pick one format per tensor of ``model`` (a GGUF path or open file) minimising the
    imatrix-weighted error under a size budget.

    ``target_bpw``: bits per weight over the whole model (all tensors, as llama-quantize reports), or a
    file type name (``"Q4_K_M"``: the size llama.cpp's recipe gives this model). ``budget_bytes``
    overrides both. ``base``: the file type for everything not optimized (tensors without an imatrix
    entry such as the token embeddings, norms) and for ``general.file_type``. ``max_rows``: rows sampled
    per tensor to measure errors (None: all). ``progress(i, n, name)`` is called per tensor.
    """
    t0 = time.perf_counter()
    f = gguf.open(os.fspath(model)) if isinstance(model, (str, os.PathLike)) else model
    im = as_imatrix(imatrix)
    if im is None:
        raise ImatrixRequired("optimize needs an importance matrix: the error it minimises is weighted by it")
    opts = options or Options(allow_requantize=True)
    specs = [TensorSpec(n, t.ne, t.format) for n, t in f.tensors.items()]
    info = ModelInfo.from_metadata(f.metadata)
    base_plan = make_plan(specs, base, info, opts, has_imatrix=True)
    if budget_bytes is None:
        budget_bytes = _budget(specs, info, opts, base_plan, target_bpw)
    todo = [
        t
        for t in base_plan
        if t.quantizable and t.name in im and im[t.name].size == t.ne[0] and (len(t.ne) < 3 or t.ne[2] == 1)
    ]
    cands = [get_format(c) for c in candidates]
    errors, sizes = _measure(f, todo, im, cands, max_rows, threads, impl, progress)
    names = [t.name for t in todo]
    fixed = sum(t.nbytes for t in base_plan if t.name not in errors)
    smallest = sum(min(sizes[n].values()) for n in names)
    if smallest > budget_bytes - fixed:
        raise FormatError(
            f"the budget ({budget_bytes / 2**20:.2f} MiB) is below the smallest possible model "
            f"({(smallest + fixed) / 2**20:.2f} MiB with these candidates)"
        )
    pick, frontier = _lagrangian_sweep(names, errors, sizes, fixed, budget_bytes, base_plan.n_elements)
    _greedy_fill(pick, names, errors, sizes, fixed, budget_bytes)
    return OptimizeResult(
        base_plan,
        {n: get_format(pick[n]) for n in names},
        errors,
        sizes,
        int(budget_bytes),
        frontier,
        time.perf_counter() - t0,
    )


def _budget(specs, info, opts, base_plan, target_bpw) -> int:
    """Bytes allowed: a file type's size for this model (its name; default: the base's), or bits per weight."""
    target = base_plan.ftype.name if target_bpw is None else target_bpw
    if isinstance(target, str):
        return make_plan(specs, target, info, opts, has_imatrix=True).nbytes
    return int(float(target) * base_plan.n_elements / 8.0)


def _measure(f, todo, im, cands, max_rows, threads, impl, progress) -> tuple[dict, dict]:
    """{tensor: {format: imatrix-weighted error}}, {tensor: {format: bytes}} of every candidate that can
    hold each tensor, the error measured on up to ``max_rows`` sampled rows and scaled to the tensor."""
    errors, sizes = {}, {}
    for i, t in enumerate(todo):
        if progress is not None:
            progress(i, len(todo), t.name)
        n_rows = t.n_elements // t.ne[0]
        rows = _sample_rows(n_rows, max_rows)
        x = np.ascontiguousarray(f.tensors[t.name].dequantize().reshape(n_rows, t.ne[0])[rows], dtype=np.float32)
        w = np.asarray(im[t.name], dtype=np.float32)
        scale = n_rows / len(rows)
        errors[t.name], sizes[t.name] = {}, {}
        for c in cands:
            if t.ne[0] % c.block_size or not c.has_impl(impl, "quantize"):
                continue
            try:
                e = _weighted_error(x, c, w, threads, impl) * scale
            except FormatError:
                continue  # e.g. a lattice search that cannot represent this tensor
            errors[t.name][c.name] = e
            sizes[t.name][c.name] = c.row_bytes(t.ne[0]) * n_rows
        if not errors[t.name]:
            raise FormatError(f"no candidate format fits {t.name} (row of {t.ne[0]})")
    return errors, sizes


def _lagrangian_sweep(names, errors, sizes, fixed: int, budget: int, n_elements: int) -> tuple[dict, list]:
    """Prices per byte spanning every error/size trade-off present: for each, every tensor's cheapest
    format at that price. Returns the best pick within the budget (or the smallest formats, when even the
    highest price overshoots) and the frontier of distinct (bytes, error) points."""
    slopes = []
    for n in names:
        fs = sorted(sizes[n], key=lambda k: sizes[n][k])
        for a, b in zip(fs, fs[1:]):
            ds = sizes[n][b] - sizes[n][a]
            de = errors[n][a] - errors[n][b]
            if ds > 0 and de > 0:
                slopes.append(de / ds)
    lams = sorted(set([0.0] + slopes + [max(slopes, default=1.0) * 2]))
    if len(lams) > 400:
        lams = list(np.quantile(lams, np.linspace(0, 1, 400)))
    frontier, best, seen = [], None, set()
    for lam in lams:
        pick = _frontier_choice(names, errors, sizes, lam)
        nb = fixed + sum(sizes[n][pick[n]] for n in names)
        err = sum(errors[n][pick[n]] for n in names)
        if (nb, err) in seen:
            continue
        seen.add((nb, err))
        frontier.append({"lambda": float(lam), "bytes": int(nb), "bpw": 8.0 * nb / n_elements, "error": float(err)})
        if nb <= budget and (best is None or err < best[0]):
            best = (err, pick)
    frontier.sort(key=lambda p: p["bytes"])
    if best is None:
        return {n: min(sizes[n], key=lambda k: (sizes[n][k], errors[n][k])) for n in names}, frontier
    return dict(best[1]), frontier


def _greedy_fill(pick: dict, names, errors, sizes, fixed: int, budget: int) -> None:
    """Spend the bytes the sweep left: the best error drop per byte first, until nothing fits (in place)."""
    used = fixed + sum(sizes[n][pick[n]] for n in names)
    while True:
        best_up = None
        for n in names:
            cur = pick[n]
            for c, s in sizes[n].items():
                ds = s - sizes[n][cur]
                de = errors[n][cur] - errors[n][c]
                if de <= 0 or used + max(ds, 0) > budget:
                    continue
                gain = de / ds if ds > 0 else float("inf")
                if best_up is None or gain > best_up[0]:
                    best_up = (gain, n, c, ds)
        if best_up is None:
            return
        _, n, c, ds = best_up
        pick[n] = c
        used += ds
