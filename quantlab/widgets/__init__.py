"""ipywidgets apps used by the notebooks, one module per app. The logic is importable and testable
without a kernel; a notebook shows an app in one line, e.g. ``quantlab.widgets.size_calculator.app()``.

* ``size_calculator``  (00) parameters x format -> bytes, GB, GiB
* ``float_explorer``   (01) FP32/FP16/BF16/FP8/FP4/E8M0 bit fields, and a tensor against each grid
* ``scale_zero``       (02) symmetric vs asymmetric integer quantization, clipping, Δ/√12
* ``group_size``       (03) per-tensor / per-channel / per-group scales, the error-vs-bpw frontier
* ``block_inspector``  (04) every ggml format: bytes -> fields -> weights, and error vs bpw
* ``jpeg_quality``     (06) JPEG on a weight matrix vs ggml formats on the rate-distortion plane
* ``gguf_hex``         (05) a GGUF file's bytes, each coloured by the field it belongs to
* ``model_ladder``     (07) a whole model quantized: error per tensor and format, the quality ladder
* ``mixes``            (08) llama.cpp file types per tensor (SmolLM2 vs llama-7B), imatrix, the bit-budget optimizer
* ``qat``              (09) post-training quantization vs quantization-aware training on real data
* ``bench_view``       (10) a benchmark table: operation and peers to show
"""

import importlib

_APPS = (
    "size_calculator",
    "float_explorer",
    "scale_zero",
    "group_size",
    "block_inspector",
    "jpeg_quality",
    "toyquant",
    "qat",
    "gguf_hex",
    "model_ladder",
    "bench_view",
    "mixes",
)


def __getattr__(name):
    if name in _APPS:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
