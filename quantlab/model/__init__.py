"""Run a GGUF model with quantlab's own kernels: tokenizer, llama forward, perplexity / KL divergence,
importance matrices, speed.

    >>> m = quantlab.model.load(quantlab.data.path("smollm2"))
    >>> m.generate("The capital of France is", n_predict=8)
    >>> r = quantlab.model.evaluate(m, n_ctx=512, n_chunks=4); r.ppl, r.ppl_err
    >>> im = quantlab.model.compute_imatrix(m, quantlab.data.text(), n_chunks=2); im.save("imatrix.gguf")
    >>> quantlab.model.bench(quantlab.data.path("smollm2"), threads=2)
"""
from .eval import EvalResult, bench, evaluate
from .imatrix import Imatrix, compute_imatrix, load_imatrix, save_imatrix
from .llama import Config, KVCache, Linear, Model, load, threads
from .tokenizer import Tokenizer

__all__ = ["load", "Model", "Config", "KVCache", "Linear", "Tokenizer", "threads", "evaluate", "EvalResult",
           "compute_imatrix", "Imatrix", "save_imatrix", "load_imatrix", "bench"]
