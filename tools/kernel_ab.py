"""Same-process A/B of one kernel module: the version at a git revision against the working tree.

    PYTHONPATH=$PWD NUMBA_CACHE_DIR=$PWD/.cache/numba .venv/bin/python tools/kernel_ab.py REV MODULE FMT [FMT ...]

MODULE is a module of quantlab/kernels (kquants, legacy, iq1, ..., matmul). The old file (``git show
REV:quantlab/kernels/MODULE.py``) is written next to the new one as ``_ab_old_MODULE.py`` (so its relative
imports resolve; removed at exit) and both are imported in this process. For each format: (1) the output
bytes must be identical, (2) with AB_ASM=1 (compiles everything afresh in a temporary numba cache:
cached kernels cannot be inspected) every kernel both modules compiled is compared as machine code
(numba's ``inspect_asm``, symbol names and comments stripped; AB_DUMP=DIR writes differing pairs), (3) CPU time (``time.process_time``), one thread,
best of N (``AB_N``, default 15), old and new interleaved (``AB_OPS=dequantize``: only the dequantizers,
whose old copies compile in seconds). Family modules run quantize_<key> and
dequantize_<key> on 16 x 4096 weights (with an importance matrix where the format requires one);
``matmul`` runs the integer product ``matmul_int`` of a 256 x 4096 matrix with 4 activation rows.
Shared helpers (``_search``, ``_c``, ``_fp``) are the working tree's on both sides.
"""

import importlib
import os
import pathlib
import re
import subprocess
import sys
import time

if os.environ.get("AB_ASM"):  # machine code is only inspectable for kernels compiled here, not cached
    import tempfile

    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="kernel_ab_")

import numpy as np
from numba.core.registry import CPUDispatcher

from quantlab.formats import get, registry
from quantlab.kernels._rows import use_threads

rev, mod, *fmts = sys.argv[1:]
N = int(os.environ.get("AB_N", "15"))
path = f"quantlab/kernels/{mod}.py"
old_path = f"quantlab/kernels/_ab_old_{mod}.py"
src = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True, check=True).stdout
with open(old_path, "w") as fh:
    fh.write(src)
try:
    new = importlib.import_module(f"quantlab.kernels.{mod}")
    # AB_ALIAS="iq4:_nearest_int=_c:nearest_int": give a shared module back a helper the old copy imports
    aliases = [a.split("=") for a in os.environ.get("AB_ALIAS", "").split(",") if a]
    for dst, src in aliases:
        (dm, dn), (sm, sn) = dst.split(":"), src.split(":")
        setattr(
            importlib.import_module(f"quantlab.kernels.{dm}"),
            dn,
            getattr(importlib.import_module(f"quantlab.kernels.{sm}"), sn),
        )
    _register = registry.register
    registry.register = lambda *a, **k: None  # the old copy must not register its functions
    try:
        old = importlib.import_module(f"quantlab.kernels._ab_old_{mod}")
    finally:
        registry.register = _register
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 4096)).astype(np.float32)
    im = rng.random(4096).astype(np.float32) + np.float32(0.1)
    cases = []
    for name in fmts:
        f = get(name)
        if mod == "matmul":
            from quantlab import quantize
            from quantlab.kernels.act import quantize_activations

            W = quantize(rng.standard_normal((256, 4096)).astype(np.float32), f, imatrix=im, impl="reference")
            act = quantize_activations(rng.standard_normal((4, 4096)).astype(np.float32), f.vec_dot())
            calls = [
                (
                    f"matmul_int {name}",
                    lambda m, W=W, act=act, n=name: m.matmul_int(
                        W, n, act, np.empty((4, 256), np.float32), parallel=False
                    ),
                )
            ]
        else:
            imx = im if f.requires_imatrix else None
            q = f.impl("reference", "quantize")(x, imx)  # the same bytes (parity tests), no compile
            calls = [
                (f"quantize_{f.key}", lambda m, k=f.key, imx=imx: getattr(m, f"quantize_{k}")(x, imx)),
                (f"dequantize_{f.key}", lambda m, k=f.key, q=q: getattr(m, f"dequantize_{k}")(q, x.shape[1])),
            ]
            ops = os.environ.get("AB_OPS", "quantize,dequantize").split(",")
            calls = [c for c in calls if c[0].split("_")[0] in ops]
        for label, call in calls:
            with use_threads(1):
                a, b = call(old), call(new)
            assert a.tobytes() == b.tobytes(), f"{label}: the output differs"
            cases.append((label, call))

    def norm(s):
        # the old module's name differs ('_ab_old_' prefix): it appears in mangled symbols, in error
        # strings and in the .size of those strings; instructions and their operands stay
        s = re.sub(r"_ZN[\w$.]+", "SYM", s.replace(f"_ab_old_{mod}", mod))
        return [
            ln
            for ln in s.splitlines()
            if ln.strip() and not ln.lstrip().startswith((".file", "#", ".ident", ".loc", ".size"))
        ]

    same, differ = 0, []
    for attr in dir(new) if os.environ.get("AB_ASM") else ():
        dn, do = getattr(new, attr), getattr(old, attr, None)
        if isinstance(dn, CPUDispatcher) and isinstance(do, CPUDispatcher):
            for sig in dn.signatures:
                if sig in do.signatures:
                    a, b = do.inspect_asm(sig), dn.inspect_asm(sig)
                    if norm(a) == norm(b):
                        same += 1
                    else:
                        differ.append(attr)
                        if os.environ.get("AB_DUMP"):
                            for tag, text in (("old", a), ("new", b)):
                                with open(f"{os.environ['AB_DUMP']}/{mod}.{attr}.{len(differ)}.{tag}.s", "w") as fh:
                                    fh.write(text)
    if os.environ.get("AB_ASM"):
        print(f"{mod}: machine code of {same} compiled kernels identical, {len(differ)} differ {differ}")
    for label, call in cases:
        to, tn = [], []
        with use_threads(1):
            for _ in range(N):
                for m, acc in ((old, to), (new, tn)):
                    t0 = time.process_time()
                    call(m)
                    acc.append(time.process_time() - t0)
        print(
            f"{mod}.{label:24s} old {min(to) * 1e3:8.3f} ms  new {min(tn) * 1e3:8.3f} ms  "
            f"new/old {min(tn) / min(to):.3f}  (CPU, 1 thread, best of {N})"
        )
    print("load average:", " ".join(pathlib.Path("/proc/loadavg").read_text().split()[:3]))
finally:
    if os.path.exists(old_path):
        os.remove(old_path)
