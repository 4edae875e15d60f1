"""Record what llama.cpp's ``llama-tokenize`` (its tokenize call, run in-process) gives for tricky strings on
every vocabulary of its test suite (parse_special on and off, with and without --no-bos: llama-tokenize's
add_special is the model's add_bos), and how libllama sets each vocabulary up (add_bos/eos/sep, special ids,
end-of-generation tokens, token attributes other than NORMAL) -> tests/data/tokenizer_llama_cpp.json.

The suite's own .inp/.out cases only cover add_special=false, parse_special=false; these cover special
tokens written in the text, BOS/EOS defaults, and the differences a differential fuzz against libllama found
(non-ASCII white space in deepseek's literal ranges, a byte without a token in falcon, llama.cpp's own NFD
in WordPiece). Needs `make peers` (libllama) and the unpacked sdist (its models/ and llama_cpp/ ctypes bindings).
Usage: .venv/bin/python tools/make_tokenizer_fixtures.py
"""

from __future__ import annotations

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import make_model_fixtures as fx  # noqa: E402

MODELS = ROOT / ".cache/llama-cpp-python/llama_cpp_python-0.3.36/vendor/llama.cpp/models"
OUT = ROOT / "tests/data/tokenizer_llama_cpp.json"
# every vocabulary of the suite that has cases (tests/test_tokenizer_suite.py takes its list from the output)
VOCABS = sorted(p.name[len("ggml-vocab-") : -len(".gguf.inp")] for p in MODELS.glob("ggml-vocab-*.gguf.inp"))
STRINGS = [
    "Hello world",
    " Cửa Việt  x",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<s>[INST] hi [/INST]</s>\n<|user|>\nHello<|end|>\n<|assistant|>",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
    "<bos><start_of_turn>user\nhi<end_of_turn>\n<|turn>x<turn|> <unk>",
    "[CLS] Hello [SEP] [MASK] <|endoftext|> <｜begin▁of▁sentence｜>x",
    "\n\x0b 're \t\x0c\r\n   \n\n\n\n  x",
    "✅\u2009✅ 日\u3000本 a\u00a0b\u1680c\u2028d",
    "İ▁d국 ー▁e8 ά3▁ı ÉCOLE naïve ﬁ Straße",
    "    def f(x):\n        return x ** 2  # 1234567 3.14159\n",
    "🦙🤖😶‍🌫️ ✅ x² ½ ٣ 。，’“",
]
MODES = [(False, True), (False, False), (True, True)]  # (--no-bos, parse_special)


def main():
    lib = LlamaVocabs()
    out = {
        "llama_cpp": "llama-cpp-python 0.3.36 (vendor/llama.cpp): libllama's llama_tokenize as llama-tokenize "
        "calls it (add_special = the model's add_bos and not --no-bos)",
        "strings": STRINGS,
        "vocabs": {},
        "settings": {},
    }
    for name in VOCABS:
        vocab = lib.load(MODELS / f"ggml-vocab-{name}.gguf")
        rows = []
        for k, s in enumerate(STRINGS):
            for no_bos, parse in MODES:
                add = lib.L.llama_vocab_get_add_bos(vocab) and not no_bos
                rows.append(
                    {"string": k, "no_bos": no_bos, "parse_special": parse, "ids": lib.tokenize(vocab, s, add, parse)}
                )
        out["vocabs"][name] = rows
        L = lib.L
        n = L.llama_vocab_n_tokens(vocab)
        attrs = [L.llama_vocab_get_attr(vocab, i) for i in range(n)]
        out["settings"][name] = {
            "add_bos": bool(L.llama_vocab_get_add_bos(vocab)),
            "add_eos": bool(L.llama_vocab_get_add_eos(vocab)),
            "add_sep": bool(L.llama_vocab_get_add_sep(vocab)),
            "ids": {
                k: getattr(L, f"llama_vocab_{k}")(vocab)
                for k in (
                    "bos",
                    "eos",
                    "eot",
                    "sep",
                    "pad",
                    "fim_pre",
                    "fim_suf",
                    "fim_mid",
                    "fim_pad",
                    "fim_rep",
                    "fim_sep",
                )
            },
            "eog": [i for i in range(n) if L.llama_vocab_is_eog(vocab, i)],
            "attr_runs": runs(attrs),
        }
        print(name, len(rows), flush=True)
    out["pre_strings"], out["pre_tokenizers"] = pre_tokenizer_hashes(lib)
    lines = [
        "{",
        f'"llama_cpp": {json.dumps(out["llama_cpp"])},',
        f'"strings": {json.dumps(STRINGS, ensure_ascii=False)},',
        '"vocabs": {',
    ]
    for k, name in enumerate(VOCABS):  # one row per line: small, readable diffs
        rows = ",\n".join(json.dumps(r, ensure_ascii=False) for r in out["vocabs"][name])
        lines.append(f'"{name}": [\n{rows}\n]' + ("," if k + 1 < len(VOCABS) else ""))
    lines += ["},", '"settings": {']
    for k, name in enumerate(VOCABS):
        lines.append(f'"{name}": {json.dumps(out["settings"][name])}' + ("," if k + 1 < len(VOCABS) else ""))
    lines += [
        "},",
        f'"pre_strings": {json.dumps(out["pre_strings"], ensure_ascii=False)},',
        f'"pre_tokenizers": {json.dumps(out["pre_tokenizers"])}',
        "}",
    ]
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("wrote", OUT)


# for every tokenizer.ggml.pre name quantlab maps: the suite's inputs + random strings on the gpt-2 vocabulary
# (gemma-4's for the SPM-style BPE ones) with that name written in, tokenized by libllama (add_special=false,
# parse_special=false), one sha256 of the ids per name
PRE_POOL = list("abcdeXYZ  \t\n\r'.,!?-_()[]{}<>|/\\\"0123456789") + [
    "\u00a0",
    "\u3000",
    "\u0085",
    "\u2009",
    "é",
    "É",
    "ü",
    "ß",
    "\u0301",
    "\u0308",
    "İ",
    "ﬁ",
    "ώ",
    "ф",
    "日",
    "本",
    "한",
    "국",
    "ア",
    "ー",
    "🦙",
    "😶‍🌫️",
    "✅",
    "²",
    "½",
    "٣",
    "۔",
    "…",
    "。",
    "，",
    "’",
    "\u200b",
    "\x00",
    "'s",
    "'LL",
    " 're",
    "\n\n",
    "▁",
    "\u0e01",
    "\u0915\u093f",
    "\u1680",
    "★",
    "€",
    "\u3001",
    "\uff01",
    "IMGIMGABZ",
    "<sentinel:12>",
    "1234567",
    "    ",
    "ぁ",
    "가",
    "ㄱ",
    "ㄅ",
    "：",
    "'S",
    "ǅ",
    "ÀB",
    "aB",
    "Ab",
]


def pre_tokenizer_hashes(lib):
    import hashlib
    import random
    import tempfile

    from quantlab.gguf import open as open_gguf
    from quantlab.gguf import write
    from quantlab.model.tokenizer.pretokenizers import PRE_NAMES, PRE_TYPES

    rng = random.Random(5)
    strings = sorted(
        {t for p in MODELS.glob("*.inp") for t in p.read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")}
    )
    strings += ["".join(rng.choice(PRE_POOL) for _ in range(rng.randint(1, 40))) for _ in range(150)]
    hashes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, pn in sorted(PRE_NAMES.items()):
            src = "gpt-2" if PRE_TYPES[pn.type].byte_encode else "gemma-4"
            md = open_gguf(MODELS / f"ggml-vocab-{src}.gguf").metadata.copy()
            md["tokenizer.ggml.pre"] = name
            md["tokenizer.ggml.model"] = "gpt2"
            path = write(pathlib.Path(tmp) / f"{name}.gguf", md, {})
            vocab = lib.load(path)
            ids = [lib.tokenize(vocab, s, False, False) for s in strings]
            hashes[name] = {"vocab": src, "sha256": hashlib.sha256(json.dumps(ids).encode()).hexdigest()}
    return strings, hashes


def runs(values) -> list:
    """[first, last, value] for each run of equal values other than NORMAL (4)."""
    out = []
    for i, a in enumerate(values):
        if out and out[-1][2] == a and out[-1][1] == i - 1:
            out[-1][1] = i
        elif a != 4:
            out.append([i, i, a])
    return out


class LlamaVocabs:
    """libllama (.cache/oracle/lib, `make peers`) through the sdist's own ctypes bindings: one process for all
    vocabularies (llama-tokenize reloads a 262k-token vocabulary for every string: ~8 s each)."""

    def __init__(self):
        import importlib.util
        import os
        import types

        os.environ["LLAMA_CPP_LIB_PATH"] = str(fx.LIB)
        sdist = MODELS.parent.parent.parent
        pkg = types.ModuleType("llama_cpp")
        pkg.__path__ = [str(sdist / "llama_cpp")]
        sys.modules["llama_cpp"] = pkg
        spec = importlib.util.spec_from_file_location("llama_cpp.llama_cpp", sdist / "llama_cpp/llama_cpp.py")
        self.L = importlib.util.module_from_spec(spec)
        sys.modules["llama_cpp.llama_cpp"] = self.L
        spec.loader.exec_module(self.L)
        self.L.llama_backend_init()

    def load(self, path):
        p = self.L.llama_model_default_params()
        p.vocab_only = True
        model = self.L.llama_model_load_from_file(str(path).encode(), p)
        if not model:
            sys.exit(f"libllama cannot load {path}")
        return self.L.llama_model_get_vocab(model)

    def tokenize(self, vocab, text, add_special, parse_special):
        b = text.encode("utf-8")
        n = len(b) + 8
        buf = (self.L.llama_token * n)()
        k = self.L.llama_tokenize(vocab, b, len(b), buf, n, add_special, parse_special)
        assert k >= 0, k
        return list(buf[:k])


if __name__ == "__main__":
    main()
