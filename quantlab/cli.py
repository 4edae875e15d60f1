"""``quantlab`` on the command line. Each sub-command lives in the module that owns its logic and
exposes ``register(subparsers)``; this file only lists them (one place to add a command) and holds the rule
every command follows:

- a bad file or argument ends in one line on stderr naming the file and the cause, exit status 1 (2 for a
  usage error, from argparse), no traceback unless ``--debug``: quantlab's own errors, ``OSError`` and
  ``UnicodeError`` are caught here, once, for every command;
- a signal that would end the process (SIGINT, SIGTERM, SIGHUP, ...) is turned into an exception, so the
  command unwinds like on any error (a half-written output is removed by the writer), then one line and
  exit status 128 + the signal's number.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import signal
import stat
import sys
import threading

from . import __version__
from .errors import GGUFError, QuantlabError

DESCRIPTION = (
    "quantlab: quantize, inspect, benchmark and run GGUF models the way llama.cpp does, "
    "on quantlab's own kernels (byte-identical to ggml)."
)

# command name -> module defining register(subparsers)
COMMANDS = {
    "formats": "quantlab.cli_formats",
    "inspect": "quantlab.gguf.cli",
    "bench": "quantlab.bench",
    "quantize": "quantlab.recipes",
    "eval": "quantlab.model.cli",
    "generate": "quantlab.model.cli",
    "imatrix": "quantlab.model.cli",
}

# signals whose default action ends the process: each becomes a Stopped exception while a command runs
_STOP_SIGNALS = tuple(
    getattr(signal, n)
    for n in (
        "SIGINT",
        "SIGTERM",
        "SIGHUP",
        "SIGQUIT",
        "SIGUSR1",
        "SIGUSR2",
        "SIGALRM",
        "SIGXCPU",
        "SIGVTALRM",
        "SIGPROF",
    )
    if hasattr(signal, n)
)


class Stopped(BaseException):
    """A signal asked the process to end (a BaseException, like KeyboardInterrupt: cleanup code that catches
    Exception lets it through, ``except BaseException: abort(); raise`` handlers run)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"


class _signals_stop:
    """While active, every ending signal whose handler is still the default raises Stopped in the main thread;
    the first one only: a second signal while the command unwinds must not cut its cleanup short."""

    def _raise_stopped(self, signum, frame):
        if self.stopped:
            return
        self.stopped = True
        raise Stopped(signum)

    def __enter__(self):
        self.saved = {}
        self.stopped = False
        if threading.current_thread() is not threading.main_thread():
            return self
        for s in _STOP_SIGNALS:
            old = signal.getsignal(s)
            if old in (signal.SIG_DFL, signal.default_int_handler):
                self.saved[s] = old
                signal.signal(s, self._raise_stopped)
        return self

    def __exit__(self, *exc):
        for s, old in self.saved.items():
            signal.signal(s, old)
        return False


def error_line(e: BaseException) -> str:
    """One line for an expected failure: the file (when known) and the cause."""
    if isinstance(e, OSError) and not _is_quantlab(e):
        where = [os.fspath(f) for f in (e.filename, e.filename2) if f is not None]
        cause = e.strerror or str(e)
        cause = cause[:1].lower() + cause[1:]
        return f"{' -> '.join(map(str, where))}: {cause}" if where else cause
    if isinstance(e, UnicodeDecodeError):
        where = getattr(e, "filename", None)
        cause = f"not valid {e.encoding}: {e.reason} at byte {e.start} ({e.object[e.start : e.start + 4]!r})"
        return f"{where}: {cause}" if where else cause
    if isinstance(e, UnicodeError):
        where = getattr(e, "filename", None)
        return f"{where}: {e}" if where else str(e)
    return str(e)


def _is_quantlab(e) -> bool:
    return isinstance(e, QuantlabError)


def printable(s) -> str:
    """``s`` safe to print on any terminal and any stdout encoding: every character that is not printable
    (control characters such as ESC, which would let a file retitle the window or clear the screen; bidi and
    other format characters; bytes that were not UTF-8, kept by the reader as surrogate escapes) is shown as
    a Python-style escape (``\\x1b``, ``\\u202e``, ``\\xff``). Every line the commands print about a file's
    contents goes through here."""
    s = str(s)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else _escape(c) for c in s)


def _escape(c: str) -> str:
    o = ord(c)
    if 0xDC80 <= o <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape): show the byte
        return f"\\x{o - 0xDC00:02x}"
    if o < 0x100:
        return {"\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(c, f"\\x{o:02x}")
    return f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}"


SHIPPED = ("smollm2",)  # model names the commands take in place of a path (the packaged models)


def model_file(p) -> str:
    """``p``, or the path of the shipped model it names ('smollm2') when no such file exists here."""
    if p in SHIPPED and not os.path.exists(p):
        # lazy: quantlab.data (importlib.metadata, ~20 ms) only for a command given a model name
        from .data import path

        return str(path(p))
    return os.fspath(p)


def regular_file(path, what: str = "a GGUF file") -> str:
    """``path`` if it names a regular file; a FIFO, socket or device would block or cannot be mapped, so it is
    refused with one line (a missing file or a directory raises the usual OSError)."""
    p = os.fspath(path)
    mode = os.stat(p).st_mode
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):  # a directory: open() says "is a directory"
        return p
    kind = (
        "a FIFO"
        if stat.S_ISFIFO(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "a character device"
        if stat.S_ISCHR(mode)
        else "a block device"
        if stat.S_ISBLK(mode)
        else "not a regular file"
    )
    raise GGUFError(
        f"{printable(p)} is {kind}, not a regular file: {what} is read from a regular file (mapped into memory)"
    )


def read_text(path) -> str:
    """A UTF-8 text file's contents; a decoding error names the file (``error_line`` prints it)."""
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        e.filename = os.fspath(path)
        raise


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or with ``only`` of that one command (importing only its module:
    ``quantlab quantize`` does not pay for importing the model code)."""
    p = argparse.ArgumentParser(
        prog="quantlab", description=DESCRIPTION, epilog="Run 'quantlab COMMAND --help' for a command's options."
    )
    p.add_argument("--version", action="version", version=f"quantlab {__version__}")
    p.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    seen = set()
    for name, modname in COMMANDS.items():
        if modname in seen or (only is not None and name != only):
            continue
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name and modname.startswith(e.name):
                continue  # that part of quantlab is not there yet
            raise
        if hasattr(mod, "register"):
            mod.register(sub)
            seen.add(modname)
    p.commands = sub.choices  # name -> sub-parser (main reports a stray argument with its usage)
    for sp in sub.choices.values():  # --debug after the command name too (SUPPRESS: no default overrides)
        sp.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="show the Python traceback of an error"
        )
    return p


def main(argv=None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    command = next((w for w in words if not w.startswith("-")), None)
    p = build_parser(command if command in COMMANDS else None)
    args, extra = p.parse_known_args(argv)
    if extra:
        (p.commands.get(getattr(args, "command", None)) or p).error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        p.print_help()
        return 2
    prefix = f"quantlab {args.command}"
    if argv is None:  # a real process: whatever a command prints, a strict stdout encoding cannot kill it
        for stream in (sys.stdout, sys.stderr):
            if hasattr(stream, "reconfigure"):
                stream.reconfigure(errors="backslashreplace")
    try:
        with _signals_stop():
            return int(args.func(args) or 0)
    except BrokenPipeError:  # e.g. piped into head
        if argv is None:  # nothing more may reach the closed pipe when the interpreter flushes at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (QuantlabError, OSError, UnicodeError) as e:
        if args.debug:
            raise
        print(f"{prefix}: error: {printable(error_line(e))}", file=sys.stderr)
        return 1
    except (Stopped, KeyboardInterrupt) as e:
        if args.debug:
            raise
        signum = e.signum if isinstance(e, Stopped) else signal.SIGINT
        name = e.name if isinstance(e, Stopped) else "SIGINT"
        print(f"{prefix}: stopped by {name}", file=sys.stderr)
        # the work cut short can leave half-built objects whose finalizers fail as they are freed (seen: a
        # SIGTERM during a numba compile, llvmlite's ModuleRef.__del__ "Exception ignored ... Traceback"
        # after this line): the program is ending on purpose, so that noise is not reported
        if argv is None:
            sys.unraisablehook = lambda _unraisable: None
        return 128 + int(signum)
    finally:
        if argv is None:
            # the program is about to exit: without this, the interpreter's teardown walks every object
            # numba created once more (measured 0.5-0.6 s after `quantlab quantize` was done)
            gc.freeze()


if __name__ == "__main__":
    sys.exit(main())
