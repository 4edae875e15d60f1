"""Importance-matrix files as llama-quantize reads them (spec §9.6).

llama-imatrix writes, per weight matrix, the *sum* of squared activations per input column and how many
tokens it saw. llama-quantize hands the quantizer the *mean*: ``sum / count`` (float32 division; 1.0
where a matrix, or an expert of it, saw no token). Two file layouts exist:

* GGUF (default): ``<name>.in_sum2`` (F32, ne = [cols, n_mat]) and ``<name>.counts`` (F32, ne = [1, n_mat]),
  plus ``imatrix.datasets`` / ``imatrix.chunk_count`` / ``imatrix.chunk_size`` metadata (required);
* legacy ``.dat``: int32 n_entries; per entry int32 name length, name, int32 ncall, int32 nval,
  float32[nval] (already divided by count and multiplied by ncall); optional trailer int32 chunk count,
  int32 dataset name length, dataset name. Values are divided by ncall.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from ..errors import ImatrixError

if TYPE_CHECKING:
    from ..model.imatrix import Imatrix

__all__ = ["ImatrixData", "load_imatrix_file", "as_imatrix"]


@dataclass
class ImatrixData(Mapping):
    """``{tensor name: float32 mean squared activation per column}`` plus what the file says about itself."""

    entries: dict
    datasets: list = field(default_factory=list)
    chunk_count: int = 0
    path: str | None = None

    def __getitem__(self, k):
        return self.entries[k]

    def __iter__(self):
        return iter(self.entries)

    def __len__(self):
        return len(self.entries)

    def __repr__(self):
        return f"<ImatrixData {len(self)} entries, {self.chunk_count} chunks, datasets={self.datasets}>"


# What every ``imatrix=`` argument of quantlab.recipes takes (see :func:`as_imatrix`).
ImatrixSource = Union[str, os.PathLike, "ImatrixData", "Imatrix", Mapping[str, Any]]


def load_imatrix_file(path: str | os.PathLike) -> ImatrixData:
    """Read an imatrix file (GGUF or legacy .dat) exactly as llama-quantize does: the file is read by
    :func:`quantlab.model.load_imatrix` (the one reader), the entries are its per-column means."""
    # the model code starts numba (~0.25 s): `quantlab quantize` without --imatrix does not pay it
    from ..model.imatrix import load_imatrix

    p = os.fspath(path)
    if not os.path.exists(p):
        raise ImatrixError(f"imatrix file {p!r} does not exist")
    im = load_imatrix(p)
    return ImatrixData(im.as_dict(), list(im.datasets), int(im.chunk_count), p)


def as_imatrix(imatrix: ImatrixSource | None) -> ImatrixData | None:
    """Accept a path, an :class:`ImatrixData`, an object with ``.entries`` or ``.means`` (quantlab.model's
    imatrix), or a plain mapping name -> per-column values."""
    if imatrix is None:
        return None
    if isinstance(imatrix, ImatrixData):
        data = imatrix
    elif isinstance(imatrix, (str, os.PathLike)):
        data = load_imatrix_file(imatrix)
    else:
        ent: Mapping | None = None
        for attr in ("means", "entries", "data"):
            v = getattr(imatrix, attr, None)
            if isinstance(v, Mapping):
                ent = v
                break
        as_dict = getattr(imatrix, "as_dict", None)
        if ent is None and callable(as_dict):  # quantlab.model.Imatrix
            d = as_dict()
            ent = d if isinstance(d, Mapping) else None
        if ent is None and isinstance(imatrix, Mapping):
            ent = imatrix
        if ent is None:
            raise ImatrixError(
                f"an imatrix is a file path or a mapping tensor name -> values, got {type(imatrix).__name__}"
            )
        data = ImatrixData(
            {str(k): np.asarray(v, dtype=np.float32).reshape(-1) for k, v in ent.items()},
            list(getattr(imatrix, "datasets", []) or []),
            int(getattr(imatrix, "chunk_count", 0) or 0),
            None,
        )
    for k, v in data.entries.items():
        if not np.isfinite(v).all():
            bad = np.flatnonzero(~np.isfinite(v))[0]
            raise ImatrixError(
                f"imatrix entry {k} holds a non-finite value ({v[bad]} at column {bad}); "
                f"llama-quantize refuses such a file"
            )
    return data
