"""The ggml oracle for tests: llama.cpp's libggml-base through ctypes (see quantlab.peers).

The suite fails loudly when it is missing (OracleMissing); it never skips silently.
"""
from quantlab.peers import ggml


def oracle():
    return ggml(required=True)
