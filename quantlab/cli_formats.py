"""``quantlab formats``: the registry as a table."""

from __future__ import annotations

from .formats import FORMATS


def run(args) -> int:
    print(f"{'id':>3}  {'name':<9} {'block':>5} {'bytes':>5} {'bpw':>7}  {'family':<8} notes")
    for f in FORMATS:
        if f.removed and not args.all:
            continue
        notes = []
        if f.removed:
            notes.append("removed")
        if f.requires_imatrix:
            notes.append("needs imatrix")
        elif f.uses_imatrix:
            notes.append("imatrix-aware")
        if f.activation_only:
            notes.append("activations only")
        print(
            f"{f.id:>3}  {f.name:<9} {f.block_size:>5} {f.type_size:>5} {f.bpw:>7.4f}  {f.family:<8} {', '.join(notes)}"
        )
    return 0


def register(sub):
    p = sub.add_parser("formats", help="list every ggml type: block size, bytes, bits per weight")
    p.add_argument("--all", action="store_true", help="include removed type ids")
    p.set_defaults(func=run)
