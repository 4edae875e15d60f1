"""Record llama.cpp's answers for tests/test_model.py, so the tests can check against them when the
llama.cpp tools are not built.

    .venv/bin/python tools/make_model_fixtures.py            # tokens + perplexity (about 10 minutes on 2 cores)
    .venv/bin/python tools/make_model_fixtures.py --tokens   # only the tokenizer fixture (seconds)

Needs ``make peers`` (llama-tokenize, llama-perplexity in .cache/oracle/bin). Writes
tests/data/model_tokens.json and tests/data/model_ppl.json. Both record the model file they were made
with; the texts come from quantlab.data.text() and TRICKY_STRINGS below.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BIN = ROOT / ".cache/oracle/bin"
LIB = ROOT / ".cache/oracle/lib"
DATA = ROOT / "tests/data"

TRICKY_STRINGS = [
    "Hello world",
    "Hello  world   with    runs     of      spaces",
    "   leading spaces and trailing spaces   ",
    "tabs\tand\nnewlines\n\n\nand\r\ncrlf\r\n",
    "\n\n\n",
    "digits 1234567890 and 3.14159, 1,000,000 and 007",
    "unicode: héllo wörld, naïve café, Ελληνικά, русский, 日本語のテキスト, 한국어, עברית",
    "emoji 🤖🚀👍🏽 and symbols ©®™ ∑∫√ ←→ and math x² + y³",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "special tokens glued:<|endoftext|><|im_end|>text<repo_name>x",
    "contractions: don't, I'm, we've, they'll, she'd, it's, You're, DON'T",
    "code: def f(x):\n    return x ** 2  # comment\n\tif a != b: pass",
    "",
    " ",
    "a",
]


def _env(lib=LIB):
    e = dict(os.environ)
    e["LD_LIBRARY_PATH"] = str(lib) + (":" + e["LD_LIBRARY_PATH"] if e.get("LD_LIBRARY_PATH") else "")
    return e


def have_tools(*names) -> bool:
    return all((BIN / n).exists() for n in names)


def run_tool(name, *args, bin_dir=BIN, lib=LIB) -> str:
    """A llama.cpp tool's stdout + stderr; a failure raises RuntimeError with the log's tail."""
    r = subprocess.run([str(bin_dir / name), *map(str, args)], capture_output=True, text=True, env=_env(lib))
    log = r.stdout + r.stderr
    if r.returncode:
        raise RuntimeError(f"{name} {' '.join(map(str, args))} failed ({r.returncode}):\n{log[-3000:]}")
    return log


def kld_base(model, text, base, *extra, n_ctx=512, n_chunks=1, bin_dir=BIN, lib=LIB) -> str:
    """llama-perplexity on `text` (-t 1, --no-escape, `extra` options) with its --kl-divergence-base file
    `base`: written, or compared against when `extra` holds --kl-divergence. Returns the log."""
    args = ["-m", model, "-f", text, "-c", n_ctx, "--chunks", n_chunks, "-t", 1, "--no-escape", *extra]
    return run_tool("llama-perplexity", *args, "--kl-divergence-base", base, bin_dir=bin_dir, lib=lib)


def llama_tokenize(model_path, text: str, parse_special: bool = True) -> list[int]:
    """Token ids from llama-tokenize (text passed verbatim through a file, no escape processing)."""
    with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as f:
        f.write(text.encode("utf-8"))
        name = f.name
    try:
        cmd = [str(BIN / "llama-tokenize"), "-m", str(model_path), "-f", name, "--ids", "--log-disable", "--no-escape"]
        if not parse_special:
            cmd.append("--no-parse-special")
        out = subprocess.run(cmd, capture_output=True, text=True, env=_env(), check=True).stdout
    finally:
        os.unlink(name)
    line = [ln for ln in out.strip().splitlines() if ln.startswith("[")][-1]
    return list(ast.literal_eval(line))


def ids_digest(ids) -> str:
    return hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()


def llama_perplexity(model_path, text: str, n_ctx: int, n_chunks: int, threads: int = 2) -> dict:
    with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as f:
        f.write(text.encode("utf-8"))
        name = f.name
    try:
        cmd = [
            str(BIN / "llama-perplexity"),
            "-m",
            str(model_path),
            "-f",
            name,
            "-c",
            str(n_ctx),
            "--chunks",
            str(n_chunks),
            "-t",
            str(threads),
            "--no-escape",
        ]
        r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), check=True)
    finally:
        os.unlink(name)
    log = r.stdout + r.stderr
    running = [float(v) for v in re.findall(r"\[\d+\](\d+\.\d+),", log)]
    m = re.search(r"Final estimate: PPL = (\d+\.\d+) \+/- (\d+\.\d+)", log)
    return {
        "n_ctx": n_ctx,
        "n_chunks": n_chunks,
        "running_ppl": running,
        "ppl": float(m.group(1)),
        "ppl_err": float(m.group(2)),
    }


def main():
    import quantlab.data

    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", action="store_true", help="only the tokenizer fixture")
    ap.add_argument("--chunks", type=int, default=20)
    args = ap.parse_args()
    if not have_tools("llama-tokenize", "llama-perplexity"):
        sys.exit("build the llama.cpp tools first: make peers")
    model = quantlab.data.path("smollm2")
    text = quantlab.data.text()
    DATA.mkdir(parents=True, exist_ok=True)
    ids = llama_tokenize(model, text, parse_special=False)
    fx = {
        "model": model.name,
        "tool": "llama-tokenize --ids --no-escape (llama-cpp-python 0.3.36)",
        "strings": [{"text": s, "ids": llama_tokenize(model, s) if s else []} for s in TRICKY_STRINGS],
        "strings_no_parse_special": [
            {"text": s, "ids": llama_tokenize(model, s, parse_special=False)} for s in TRICKY_STRINGS if "<" in s
        ],
        "default_text": {"n_tokens": len(ids), "sha256": ids_digest(ids), "head": ids[:512], "parse_special": False},
    }
    (DATA / "model_tokens.json").write_text(json.dumps(fx, ensure_ascii=False, indent=1) + "\n")
    print(f"tokens: {len(ids)} for the default text, {len(TRICKY_STRINGS)} strings")
    if args.tokens:
        return
    ppl = llama_perplexity(model, text, 512, args.chunks)
    ppl["model"] = model.name
    ppl["tool"] = f"llama-perplexity -c 512 --chunks {args.chunks} -t 2 --no-escape (llama-cpp-python 0.3.36)"
    (DATA / "model_ppl.json").write_text(json.dumps(ppl, indent=1) + "\n")
    print(f"perplexity: {ppl['ppl']} +/- {ppl['ppl_err']}")


if __name__ == "__main__":
    main()
