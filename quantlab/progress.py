"""Progress bars for quantlab's long jobs, in one place: tqdm.auto, so a notebook gets a widget bar and a terminal
gets a text line with the rate and the ETA on stderr (never on stdout, which carries the results).

Every long job (``bench.formats``/``bench.model``, ``model.evaluate``, ``model.imatrix``, the model ladder,
the mix sweeps, the embedding study) takes a ``progress`` argument with the same meaning:

- ``True`` (the default): a bar -- in a Jupyter kernel always; elsewhere only when stderr is a terminal
  (logs, pipes and the test suite get no ``\\r`` noise);
- ``False`` / ``None``: nothing;
- a callable: called as the job documents it (e.g. ``progress(i, n)``); the caller draws its own.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

# The type of every long job's ``progress`` argument (see above): a bar or not, or a callable.
Progress = bool | None | Callable[..., object]


def in_kernel() -> bool:
    """True inside a Jupyter (ipykernel) kernel."""
    ip = sys.modules.get("IPython")
    try:
        shell = ip.get_ipython() if ip is not None else None
    except Exception:  # noqa: BLE001 - an odd IPython state is "not a kernel"
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


def bar(total: int | None, desc: str, unit: str = "it", enabled: bool = True, **kw):
    """A tqdm.auto bar: a widget in a kernel, else a line on stderr when stderr is a terminal (disabled
    otherwise, and when not ``enabled``). Use as a context manager or close it."""
    # tqdm.auto (~45 ms, ipywidgets in a kernel): only when a bar is shown
    from tqdm.auto import tqdm

    kernel = in_kernel()
    opts = {
        "total": total,
        "desc": desc,
        "unit": unit,
        "dynamic_ncols": True,
        "disable": True if not enabled else False if kernel else None,
    }
    if not kernel:
        opts["file"] = sys.stderr
    opts.update(kw)
    return tqdm(**opts)


def callback(progress, total: int, desc: str, unit: str = "it", value: str | None = None):
    """Turn a ``progress`` argument into ``f(i, n, *values)`` (or None for no progress): a callable is
    returned as it is; ``True`` gives a bar of ``total`` steps that ``f`` moves to step ``i`` (showing
    the first of ``values`` when given, labelled ``value``, e.g. the perplexity so far) and closes at the last."""
    if progress is None or progress is False:
        return None
    if callable(progress):
        return progress
    b = bar(total, desc, unit)

    def step(i, n, *values):
        if b.total != n:
            b.total = n
        if values:
            v = f"{values[0]:.4f}" if isinstance(values[0], float) else str(values[0])
            b.set_postfix_str(f"{value} {v}" if value else v, refresh=False)
        b.update(i - b.n)
        if i >= n:
            b.close()

    return step


def steps(progress, items, desc: str, unit: str = "it"):
    """Iterate over ``items`` with a bar (``progress`` True) or calling ``progress(i, n)`` after each item."""
    items = list(items)
    f = callback(progress, len(items), desc, unit)
    for i, x in enumerate(items):
        yield x
        if f is not None:
            f(i + 1, len(items))
