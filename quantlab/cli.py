"""``quantlab`` on the command line. Each sub-command lives in the module that owns its logic and
exposes ``register(subparsers)``; this file only lists them (one place to add a command)."""
from __future__ import annotations

import argparse
import gc
import importlib
import sys

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


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or with ``only`` of that one command (importing only its module:
    ``quantlab quantize`` does not pay for importing the model code)."""
    p = argparse.ArgumentParser(prog="quantlab", description=__doc__.split("\n")[0].strip("`"))
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
    return p


def main(argv=None) -> int:
    from .errors import QuantlabError

    words = sys.argv[1:] if argv is None else list(argv)
    p = build_parser(words[0] if words and words[0] in COMMANDS else None)
    args = p.parse_args(argv)
    if not getattr(args, "func", None):
        p.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except QuantlabError as e:
        print(f"quantlab {args.command}: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. piped into head
        return 0
    finally:
        if argv is None:
            # the program is about to exit: without this, the interpreter's teardown walks every object
            # numba created once more (measured 0.5-0.6 s after `quantlab quantize` was done)
            gc.freeze()


if __name__ == "__main__":
    sys.exit(main())
