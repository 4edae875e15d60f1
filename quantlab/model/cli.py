"""``quantlab eval | generate | imatrix``: run a GGUF model from the command line."""

from __future__ import annotations

import argparse
import sys

from ..cli import read_text
from ..data import path
from . import compute_imatrix, evaluate, load
from .kld import compare, save_base


def _token_count(s: str) -> int:
    """-n: 0 or more tokens (llama.cpp's -1, 'until end of text or context', is not offered: refused, not
    silently read as 0)."""
    try:
        n = int(s)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"{s!r} is not a number of tokens to generate (expected 0 or more)")
    return n


def _model_path(p):
    if p in (None, "smollm2"):
        return path("smollm2")
    return p


def _text(args):
    if getattr(args, "text", None):
        return read_text(args.text)
    return None


def _eval(args):
    if args.model_opt and args.model and args.model_opt != args.model:
        raise SystemExit(f"quantlab eval: two models given ({args.model} and -m {args.model_opt}); give one")
    if args.kld_base and args.base:
        raise SystemExit(
            "quantlab eval: --base (a model) and --kld-base (llama.cpp's logits file) both give the "
            "base distribution; give one"
        )
    m = load(_model_path(args.model_opt or args.model))
    chunks = 20 if args.chunks is None else args.chunks

    def progress(i, n, ppl=None):
        print(f"[{i}/{n}]" + (f" {ppl:.4f}" if ppl is not None else ""), file=sys.stderr, flush=True)

    if args.save_kld_base:
        p = save_base(
            m, args.save_kld_base, _text(args), n_ctx=args.ctx, n_chunks=chunks, threads=args.threads, progress=progress
        )
        print(f"log-probabilities of {m.path.name} written to {p} (llama-perplexity --kl-divergence-base format)")
        return 0
    if args.kld_base:
        r = compare(m, args.kld_base, threads=args.threads, n_chunks=args.chunks, progress=progress)
        print(f"against {args.kld_base} (llama.cpp --kl-divergence-base; its tokens, {r.n_chunks} chunks of {r.n_ctx})")
        print(r.summary())
        return 0
    base = load(_model_path(args.base)) if args.base else None
    # progress: a bar with the PPL so far and the ETA, on stderr (quantlab.progress)
    r = evaluate(m, _text(args), n_ctx=args.ctx, n_chunks=chunks, base=base, threads=args.threads, progress=True)
    print(r.summary())
    return 0


def _generate(args):
    m = load(_model_path(args.model))
    prompt = args.prompt
    if args.chat:
        prompt = f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"

    def show(tok, piece):
        sys.stdout.write(piece)
        sys.stdout.flush()

    if not args.chat:
        sys.stdout.write(args.prompt)
    m.generate(
        prompt,
        n_predict=args.n,
        temperature=args.temp,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        threads=args.threads,
        callback=show,
    )
    sys.stdout.write("\n")
    return 0


def _imatrix(args):
    m = load(_model_path(args.model))

    im = compute_imatrix(
        m,
        _text(args),
        n_ctx=args.ctx,
        n_chunks=args.chunks,
        threads=args.threads,
        process_output=args.process_output,
        dataset=args.text or "quantlab.data.text()",
        progress=True,
    )
    im.save(args.output, "dat" if args.output_format == "dat" else None)
    print(f"{len(im)} weights, {im.chunk_count} chunks of {im.chunk_size} -> {args.output}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    common = dict(help="GGUF model file (default: the shipped SmolLM2-135M-Instruct Q4_1)")
    p = sub.add_parser(
        "eval", help="perplexity (and KL divergence against --base or a llama.cpp logits file), like llama-perplexity"
    )
    p.add_argument("model", nargs="?", default=None, **common)
    p.add_argument("-m", "--model", dest="model_opt", default=None, help="the model, llama.cpp style")
    p.add_argument("--base", help="base model for KL divergence / top-1 / delta-p")
    p.add_argument(
        "--kld-base",
        "--kl-divergence-base",
        dest="kld_base",
        metavar="FILE",
        help="llama.cpp's --kl-divergence-base file: compare with the distributions it holds, on its "
        "tokens (KLD, same top-1, delta-p, PPL - base PPL)",
    )
    p.add_argument(
        "--kl-divergence",
        action="store_true",
        help="accepted for llama-perplexity compatibility (--kld-base already implies it)",
    )
    p.add_argument(
        "--save-kld-base",
        metavar="FILE",
        help="write this model's log-probabilities as a llama.cpp --kl-divergence-base file",
    )
    p.add_argument("--text", "-f", "--file", dest="text", help="UTF-8 text file (default: CPython's pydoc topics)")
    p.add_argument("-c", "--ctx", type=int, default=512)
    p.add_argument(
        "--chunks", type=int, default=None, help="chunks to score (default 20; with --kld-base every chunk of the file)"
    )
    p.add_argument("-t", "--threads", type=int, default=None)
    p.set_defaults(func=_eval)

    p = sub.add_parser("generate", help="continue a prompt (greedy, or sampled with --temp)")
    p.add_argument("prompt")
    p.add_argument("-m", "--model", default=None, **common)
    p.add_argument("-n", type=_token_count, default=64, help="tokens to generate")
    p.add_argument("--temp", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the ChatML template")
    p.add_argument("-t", "--threads", type=int, default=None)
    p.set_defaults(func=_generate)

    p = sub.add_parser("imatrix", help="collect an importance matrix, like llama-imatrix")
    p.add_argument("model", nargs="?", default=None, **common)
    p.add_argument("-o", "--output", default="imatrix.gguf")
    p.add_argument("--output-format", choices=["gguf", "dat"], default=None)
    p.add_argument("--text", help="UTF-8 text file (default: CPython's pydoc topics)")
    p.add_argument("-c", "--ctx", type=int, default=512)
    p.add_argument("--chunks", type=int, default=None)
    p.add_argument("--process-output", action="store_true")
    p.add_argument("-t", "--threads", type=int, default=None)
    p.set_defaults(func=_imatrix)
