"""What a GGUF model file is, in a few lines: ``quantlab.model.describe(path)``.

    >>> d = quantlab.model.describe(quantlab.data.path("smollm2"))
    >>> print(d)          # architecture, parameters, file type, bits per weight, tokenizer, context ...
    >>> d.runnable, d.reason

Everything comes from the file (its metadata and tensor table; nothing is computed from the weights),
and "can quantlab run it" is answered by trying: :func:`quantlab.model.load` either opens it or raises
the one-line :class:`~quantlab.errors.ModelError` that ``reason`` repeats.
"""

from __future__ import annotations

import os
import pathlib
from collections import Counter
from dataclasses import dataclass, field

from ..errors import GGUFError, ModelError, QuantlabError
from .llama import load


@dataclass
class Description:
    path: pathlib.Path
    architecture: str | None
    name: str | None
    n_params: int
    file_bytes: int
    tensor_bytes: int
    file_type: str  # llama.cpp's name of general.file_type ("Q4_K_M"), or why there is none
    formats: dict = field(repr=False)  # ggml type -> number of weights stored in it
    tokenizer_model: str | None = None
    tokenizer_pre: str | None = None
    n_vocab: int | None = None
    context_length: int | None = None
    n_layer: int | None = None
    n_embd: int | None = None
    runnable: bool = False
    reason: str | None = None  # why quantlab cannot run it (one line), None when it can

    @property
    def bpw(self) -> float:
        """Bits per weight over the tensor data (the metadata, e.g. the vocabulary, not counted)."""
        return 8.0 * self.tensor_bytes / self.n_params if self.n_params else float("nan")

    def __str__(self) -> str:
        share = (
            ", ".join(
                f"{k} {100 * v / self.n_params:.3g}%" for k, v in sorted(self.formats.items(), key=lambda kv: -kv[1])
            )
            if self.n_params
            else "-"
        )
        tok = self.tokenizer_model or "none"
        if self.tokenizer_pre:
            tok += f" (pre-tokenizer {self.tokenizer_pre})"
        lines = [
            f"{self.path.name}" + (f"  -  {self.name}" if self.name else ""),
            f"  architecture    {self.architecture or '(none: general.architecture missing)'}"
            + (f", {self.n_layer} layers x {self.n_embd}" if self.n_layer and self.n_embd else ""),
            f"  parameters      {_count(self.n_params)} ({self.n_params:,})",
            f"  file type       {self.file_type}",
            f"  bits per weight {self.bpw:.3f} ({self.tensor_bytes / 1e6:.1f} MB of tensors; "
            f"file {self.file_bytes / 1e6:.1f} MB)",
            f"  stored as       {share}",
            f"  tokenizer       {tok}, {self.n_vocab if self.n_vocab is not None else '?'} tokens",
            f"  context length  {self.context_length if self.context_length else '(not stated)'}",
            "  quantlab        " + ("runs it" if self.runnable else f"cannot run it: {self.reason}"),
        ]
        return "\n".join(lines)

    def _repr_pretty_(self, p, cycle):  # IPython / Jupyter show the text, not the dataclass repr
        p.text(str(self))


def _count(n: int) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit}" if n < 100 * div else f"{n / div:.0f}{unit}"
    return str(n)


def _file_type(md, formats: Counter) -> str:
    # upward (model -> recipes, PENDING in tests/test_architecture.py): lazy until file_type's names move below model
    from ..recipes import file_type

    v = md.get("general.file_type")
    if v is None:
        top = formats.most_common(1)[0][0] if formats else "?"
        return f"not stated (general.file_type missing; most weights are {top})"
    try:
        return file_type(int(v)).name
    except (QuantlabError, TypeError, ValueError):
        return f"general.file_type = {v!r}, which is not a llama.cpp file type"


def describe(path: str | os.PathLike) -> Description:
    """Describe the GGUF file at ``path`` (see the module docstring). A file that is not a readable GGUF
    raises :class:`~quantlab.errors.GGUFError`; one quantlab cannot run is described with the reason."""
    # lazy: quantlab.gguf is ~20 ms that `import quantlab.model` does not pay
    from ..gguf import open as open_gguf

    p = pathlib.Path(path)
    if not p.is_file():
        raise ModelError(f"no such model file: {p}")
    with open_gguf(p) as f:
        md = f.metadata
        arch = md.get("general.architecture")
        formats = Counter()
        for t in f.tensors.values():
            formats[t.format.name] += t.n_elements
        toks = md.get("tokenizer.ggml.tokens")

        def arch_key(k):
            return md.get(f"{arch}.{k}") if arch else None

        d = Description(
            path=p,
            architecture=arch,
            name=md.get("general.name"),
            n_params=f.n_params,
            file_bytes=f.file_size,
            tensor_bytes=f.tensor_bytes,
            file_type=_file_type(md, formats),
            formats=dict(formats),
            tokenizer_model=md.get("tokenizer.ggml.model"),
            tokenizer_pre=md.get("tokenizer.ggml.pre"),
            n_vocab=len(toks) if toks is not None else None,
            context_length=arch_key("context_length"),
            n_layer=arch_key("block_count"),
            n_embd=arch_key("embedding_length"),
        )
    try:
        m = load(p)
    except GGUFError:
        raise
    except QuantlabError as e:
        d.reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    else:
        d.runnable = True
        close = getattr(m, "close", None)
        if close is not None:
            close()
    return d
