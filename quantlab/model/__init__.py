"""Run a GGUF model with quantlab's own kernels: tokenizer, the forward pass of the llama, qwen2, qwen3,
gemma3 and phi3 families (``SUPPORTED_ARCHS``; any other architecture is refused with a ModelError
naming it), perplexity / KL divergence, importance matrices, speed.

    >>> m = quantlab.model.load(quantlab.data.path("smollm2"))
    >>> m.generate("The capital of France is", n_predict=8)
    >>> r = quantlab.model.evaluate(m, n_ctx=512, n_chunks=4); r.ppl, r.ppl_err
    >>> im = quantlab.model.compute_imatrix(m, quantlab.data.text(), n_chunks=2); im.save("imatrix.gguf")
    >>> quantlab.model.bench(quantlab.data.path("smollm2"), threads=2)
    >>> print(quantlab.model.describe("any.gguf"))      # what a file is, and whether quantlab runs it
"""

from .arch import SUPPORTED_ARCHS, Arch
from .describe import Description, describe
from .eval import EvalResult, bench, evaluate
from .imatrix import Imatrix, compute_imatrix, load_imatrix, save_imatrix
from .llama import Config, KVCache, Linear, Model, load, threads
from .tokenizer import Tokenizer

__all__ = [
    "load",
    "Model",
    "Config",
    "Arch",
    "SUPPORTED_ARCHS",
    "KVCache",
    "Linear",
    "Tokenizer",
    "threads",
    "evaluate",
    "EvalResult",
    "compute_imatrix",
    "Imatrix",
    "save_imatrix",
    "load_imatrix",
    "bench",
    "describe",
    "Description",
]
