"""Run a GGUF model with quantlab's own kernels: tokenizer, llama forward, perplexity / KL divergence,
importance matrices.

    >>> m = quantlab.model.load(quantlab.data.path("smollm2"))
    >>> m.generate("The capital of France is", n_predict=8)
    >>> r = quantlab.model.evaluate(m, n_ctx=512, n_chunks=4); r.ppl, r.ppl_err
    >>> im = quantlab.model.imatrix(m, quantlab.data.text(), n_chunks=2)
"""
from .llama import Config, KVCache, Linear, Model, load, threads
from .tokenizer import Tokenizer

__all__ = ["load", "Model", "Config", "KVCache", "Linear", "Tokenizer", "threads", "evaluate", "EvalResult",
           "imatrix", "Imatrix", "save_imatrix", "load_imatrix", "bench"]


def __getattr__(name):
    if name in ("evaluate", "EvalResult"):
        from . import eval as _e
        return getattr(_e, name)
    if name in ("imatrix", "Imatrix", "save_imatrix", "load_imatrix"):
        from . import imatrix as _i
        return getattr(_i, name)
    if name == "bench":
        from .eval import bench
        return bench
    raise AttributeError(name)
