"""Whole-model quantization the way llama-quantize does it: file types, per-tensor plans, the pipeline.

    >>> from quantlab import recipes
    >>> plan = recipes.plan("model.gguf", "Q4_K_M")          # which format each tensor gets, and why
    >>> print(plan.table())
    >>> recipes.quantize_model("model.gguf", "out.gguf", "Q4_K_M", imatrix="imatrix.gguf")

* :mod:`.ftypes`   llama.cpp's file types (Q4_K_M, IQ2_XXS, ...) and their default formats
* :mod:`.select`   the per-tensor selection rules, as pure functions, each choice with its rule
* :mod:`.pipeline` the whole-model quantizer (streaming, byte-identical to llama-quantize)
* :mod:`.optimize` beyond llama.cpp: a format per tensor minimising imatrix-weighted error under a budget
* :mod:`.imatrix`  importance-matrix files read as llama-quantize reads them
* :mod:`.cli`      ``quantlab quantize`` (llama-quantize's options)
"""

from __future__ import annotations

import argparse
import os

from ..gguf import GGUFFile
from .cli import register as _register
from .ftypes import ALIASES, FILE_TYPES, FileType, all_file_types, file_type
from .imatrix import ImatrixData, load_imatrix_file
from .optimize import DEFAULT_CANDIDATES, OptimizeResult, optimize
from .pipeline import QuantizeResult, RecipeError, plan_model, quantize_model
from .select import (
    ModelInfo,
    Options,
    Plan,
    TensorChoice,
    TensorSpec,
    allows_quantization,
    category,
    fallback,
    loader_order,
    make_plan,
    requires_imatrix,
    use_more_bits,
)

__all__ = [
    "FileType",
    "FILE_TYPES",
    "ALIASES",
    "file_type",
    "all_file_types",
    "ModelInfo",
    "Options",
    "Plan",
    "TensorChoice",
    "TensorSpec",
    "make_plan",
    "loader_order",
    "use_more_bits",
    "category",
    "allows_quantization",
    "fallback",
    "requires_imatrix",
    "quantize_model",
    "plan_model",
    "QuantizeResult",
    "RecipeError",
    "ImatrixData",
    "load_imatrix_file",
    "register",
    "optimize",
    "OptimizeResult",
    "DEFAULT_CANDIDATES",
]


def register(subparsers: argparse._SubParsersAction) -> None:
    """``quantlab quantize`` (see :mod:`quantlab.recipes.cli`)."""
    _register(subparsers)


def plan(model: str | os.PathLike | GGUFFile, ftype: str | int | FileType, **kw) -> Plan:
    """Shortcut for :func:`plan_model`: the plan of a GGUF file for ``ftype``."""
    return plan_model(model, ftype, **kw)
