"""Where numba keeps quantlab's compiled kernels — one place for every way quantlab starts.

numba compiles a ``cache=True`` kernel on its first call and then loads it from a cache directory. It
reads that directory from ``NUMBA_CACHE_DIR`` *when numba is imported*; without it, it writes next to
the source file (``__pycache__``, read-only in a shared install) or in a per-user fallback. So that
``make lab``, ``jupyter lab`` started by hand, a hub's kernels, the CLI and ``python -m
quantlab.warmup`` all meet the same warm kernels, ``quantlab/__init__.py`` imports this module before
anything that imports numba, and it sets ``NUMBA_CACHE_DIR`` (only when unset) to

    $NUMBA_CACHE_DIR  if set (the user's choice wins)
    $XDG_CACHE_HOME/quantlab/numba  or  ~/.cache/quantlab/numba   otherwise

**A shared, read-only cache** (a workshop hub: warmed once by the instructor, read by every student)
cannot be given to numba directly: numba only uses a cache directory it can write to, and silently
falls back to another (empty) one otherwise — every student would compile every kernel. Name it in
``QUANTLAB_SHARED_NUMBA_CACHE`` instead: each file of it is linked (a symlink) into the user's own cache
directory, so numba loads the shared compiled kernels and writes anything new (a kernel the shared
cache lacks) into the user's directory. numba replaces an index file atomically (a new file renamed over
the link), so the shared files are never written.

**Kernels are cached per source fingerprint.** numba decides whether a cached kernel is stale from its own
source file's timestamp only. A kernel that inlines an intrinsic or a jitted helper from another module
(every row kernel uses ``kernels/simd.py``'s) is *not* recompiled when that module changes, and silently
computes with the old code: seen when FMA accumulation landed in ``simd.py`` (9 byte-exact checks failed
on a warm cache, all passed on a fresh one). So numba is pointed at ``<cache>/quantlab-src-<hash>``, the
hash of every numba source module's text (:data:`NUMBA_SOURCES`; a test checks no module that imports
numba is missing from it): a change anywhere in them starts a fresh, complete cache.

**BLAS threads of a ``quantlab quantize`` process.** numpy's OpenBLAS starts its thread pool when numpy is
imported (one spinning thread per core): about 70 ms of CPU in a process that never calls BLAS (the
format kernels are numba loops; the quantize command hides scipy's BLAS from numba too). So, before
anything imports numpy, :func:`configure_blas` sets ``OPENBLAS_NUM_THREADS=1`` (only when unset) for a
process whose command line is ``quantlab quantize ...`` (console script or ``python -m quantlab.cli``),
and for no other process: the library, the notebooks and the commands that multiply matrices keep
OpenBLAS's default.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import sys

SHARED_ENV = "QUANTLAB_SHARED_NUMBA_CACHE"
PACKAGE = pathlib.Path(__file__).resolve().parent
# the modules whose text numba compiles (globs relative to the package); tests/test_warmup.py checks that every
# quantlab module importing numba or llvmlite matches one of them
NUMBA_SOURCES = ("kernels/*.py", "model/*.py")
SRC_PREFIX = "quantlab-src-"


def source_fingerprint() -> str:
    """A short hash of the text of every numba source module (:data:`NUMBA_SOURCES`)."""
    h = hashlib.blake2b(digest_size=8)
    for pattern in NUMBA_SOURCES:
        for p in sorted(PACKAGE.glob(pattern)):
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def default_numba_cache_dir() -> pathlib.Path:
    """The per-user default: $XDG_CACHE_HOME/quantlab/numba, or ~/.cache/quantlab/numba."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "quantlab" / "numba"


def numba_cache_dir() -> pathlib.Path:
    """quantlab's numba cache: NUMBA_CACHE_DIR if set, else the default. The kernels themselves live in
    its :func:`kernel_cache_dir` subdirectory. (A NUMBA_CACHE_DIR that already names a fingerprint
    subdirectory, inherited from a parent quantlab process, stands for its parent.)"""
    env = os.environ.get("NUMBA_CACHE_DIR")
    if not env:
        return default_numba_cache_dir()
    p = pathlib.Path(env)
    return p.parent if p.name.startswith(SRC_PREFIX) else p


def kernel_cache_dir() -> pathlib.Path:
    """Where numba reads and writes the compiled kernels of these sources."""
    return numba_cache_dir() / (SRC_PREFIX + source_fingerprint())


def link_shared(shared: pathlib.Path, own: pathlib.Path) -> int:
    """Symlink every file of the read-only cache ``shared`` into ``own`` where ``own`` has no such file;
    returns how many links were made. A missing or unreadable ``shared`` links nothing."""
    made = 0
    shared, own = pathlib.Path(shared), pathlib.Path(own)
    if not shared.is_dir() or shared.resolve() == own.resolve():
        return 0
    for dirpath, _dirs, files in os.walk(shared):
        rel = pathlib.Path(dirpath).relative_to(shared)
        for name in files:
            if name.startswith("."):  # stamps (.quantlab-warm), not numba's files
                continue
            dest = own / rel / name
            if dest.exists() or dest.is_symlink():
                continue
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(pathlib.Path(dirpath) / name, dest)
                made += 1
            except OSError:  # a concurrent process made it, or own is not writable
                pass
    return made


def configure() -> pathlib.Path:
    """Set NUMBA_CACHE_DIR (when unset) before numba is imported, and link a shared cache in."""
    d = numba_cache_dir()
    k = kernel_cache_dir()
    os.environ["NUMBA_CACHE_DIR"] = str(k)
    numba = sys.modules.get("numba")
    if numba is not None and numba.config.CACHE_DIR in ("", str(d)):
        # numba was imported first (and read NUMBA_CACHE_DIR then): its locators read config.CACHE_DIR
        # when a kernel is decorated, which quantlab's modules have not done yet.
        numba.config.CACHE_DIR = str(k)
    shared = os.environ.get(SHARED_ENV)
    if shared:
        link_shared(pathlib.Path(shared), d)
    return d


# commands whose process does no BLAS work (see the module docstring)
NO_BLAS_COMMANDS = frozenset({"quantize"})


def cli_command(orig_argv: list[str] | None = None) -> str | None:
    """The quantlab command this process was started to run, when it is the ``quantlab`` program (the
    console script, or ``python -m quantlab.cli``); None otherwise. Read from the interpreter's own
    command line (``sys.orig_argv``), before any argument parsing: a hint for start-up settings only."""
    argv = list(getattr(sys, "orig_argv", ()) if orig_argv is None else orig_argv)
    rest = None
    for i, w in enumerate(argv):
        if w == "-m" and i + 1 < len(argv):
            rest = argv[i + 2 :] if argv[i + 1] == "quantlab.cli" else None
            break
        if i > 0 and not w.startswith("-"):  # the script the interpreter runs
            rest = argv[i + 1 :] if os.path.basename(w) == "quantlab" else None
            break
    if not rest:
        return None
    return next((w for w in rest if not w.startswith("-")), None)


def configure_blas() -> None:
    """OPENBLAS_NUM_THREADS=1 (when unset, and only when numpy is not imported yet) in a process started
    for one of :data:`NO_BLAS_COMMANDS`."""
    if "numpy" in sys.modules or "OPENBLAS_NUM_THREADS" in os.environ:
        return
    if cli_command() in NO_BLAS_COMMANDS:
        os.environ["OPENBLAS_NUM_THREADS"] = "1"


CACHE_DIR = configure()
configure_blas()
