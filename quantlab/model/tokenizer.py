"""The tokenizer of a GGUF model, rebuilt from its ``tokenizer.ggml.*`` metadata with HF ``tokenizers``.

What llama.cpp does (``src/llama-vocab.cpp``), and how it maps onto ``tokenizers``:

1. **special-token partition** – the text is first cut around the text of every control / user-defined /
   unknown token (``<|im_start|>`` ...), which become tokens on their own; with ``parse_special=False``
   only user-defined tokens are cut out. -> ``AddedToken(special=True, normalized=False)``.
2. **pre-tokenizer** – each remaining piece is split by a list of regexes chosen by
   ``tokenizer.ggml.pre`` (SmolLM: digits one by one, then the GPT-2 pattern). -> ``Split`` +
   ``ByteLevel(use_regex=...)``.
3. **byte-level BPE** – every byte is mapped to a printable character (GPT-2's byte table) and pairs are
   merged by rank, lowest first, ``tokenizer.ggml.merges`` giving the ranks. -> ``models.BPE``.
4. BOS / EOS are added only when ``tokenizer.ggml.add_bos_token`` / ``add_eos_token`` say so.
"""
from __future__ import annotations

import re

import numpy as np

from ..errors import ModelError

# token types (tokenizer.ggml.token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# tokenizer.ggml.pre -> the regexes llama.cpp applies one after the other ("gpt2" = GPT-2's own pattern,
# which llama.cpp implements by hand including its trailing \s+ alternative)
PRE_TOKENIZERS = {
    "gpt2": ["gpt2"], "gpt-2": ["gpt2"], "mpt": ["gpt2"], "olmo": ["gpt2"], "jais": ["gpt2"],
    "smollm": [r"\p{N}", "gpt2"], "starcoder": [r"\p{N}", "gpt2"], "refact": [r"\p{N}", "gpt2"],
    "codeshell": [r"\p{N}", "gpt2"], "command-r": [r"\p{N}", "gpt2"], "exaone": [r"\p{N}", "gpt2"],
    "llama3": [_LLAMA3], "llama-bpe": [_LLAMA3], "llama-v3": [_LLAMA3], "smaug-bpe": [_LLAMA3],
    "dbrx": [_LLAMA3], "qwen2": [_QWEN2], "stablelm2": [_QWEN2],
}


# Long texts are encoded in segments (the HF encoder's working memory grows with the input: ~70 MB
# for the 400 KB default text). A cut just after a newline that sits between a non-space character and a
# letter changes nothing: every supported pre-tokenizer ends a piece at such a newline on both sides.
_SAFE_CUT = re.compile(r"(?<=[A-Za-z0-9.,:;)\]'\"`])\n(?=[A-Za-z])")
SEGMENT = 1 << 15


def _segments(text: str):
    if len(text) <= 2 * SEGMENT:
        if text:
            yield text
        return
    start = 0
    while len(text) - start > 2 * SEGMENT:
        m = _SAFE_CUT.search(text, start + SEGMENT)
        if m is None:
            break
        yield text[start:m.end()]
        start = m.end()
    yield text[start:]


def _byte_decoder() -> dict:
    """GPT-2's printable stand-in character for each byte, inverted (char -> byte)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


class Tokenizer:
    """Byte-level BPE tokenizer of a GGUF model (``tokenizer.ggml.model == "gpt2"``)."""

    def __init__(self, metadata):
        from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
        from tokenizers import Tokenizer as HFTokenizer

        kind = metadata.get("tokenizer.ggml.model")
        if kind != "gpt2":
            raise ModelError(f"only byte-level BPE tokenizers (tokenizer.ggml.model = 'gpt2') are supported, "
                             f"this model has {kind!r}")
        pre = metadata.get("tokenizer.ggml.pre", "default")
        if pre == "default":
            pre = "gpt2"
        if pre not in PRE_TOKENIZERS:
            raise ModelError(f"pre-tokenizer {pre!r} (tokenizer.ggml.pre) is not supported; known: "
                             f"{', '.join(sorted(PRE_TOKENIZERS))}")
        try:
            tokens = list(metadata["tokenizer.ggml.tokens"])
            merges = list(metadata["tokenizer.ggml.merges"])
        except KeyError as e:
            raise ModelError(f"the GGUF metadata has no {e.args[0]}: cannot build the tokenizer") from None
        types = metadata.get("tokenizer.ggml.token_type")
        self.token_type = (np.asarray(types, dtype=np.int32) if types is not None
                           else np.full(len(tokens), NORMAL, dtype=np.int32))
        self.tokens = tokens
        self.n_vocab = len(tokens)
        self.pre = pre
        self.bos_id = metadata.get("tokenizer.ggml.bos_token_id")
        self.eos_id = metadata.get("tokenizer.ggml.eos_token_id")
        self.eot_id = metadata.get("tokenizer.ggml.eot_token_id")
        self.add_bos = bool(metadata.get("tokenizer.ggml.add_bos_token", False))
        self.add_eos = bool(metadata.get("tokenizer.ggml.add_eos_token", False))
        self.chat_template = metadata.get("tokenizer.chat_template")

        vocab = {}
        for i, t in enumerate(tokens):
            vocab[t] = i                      # duplicates: the last id wins, as in llama.cpp's map
        pairs = [tuple(m.split(" ", 1)) for m in merges]

        steps = []
        for rx in PRE_TOKENIZERS[pre][:-1]:
            steps.append(pre_tokenizers.Split(Regex(rx), behavior="isolated"))
        last = PRE_TOKENIZERS[pre][-1]
        if last == "gpt2":
            steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True))
        else:
            steps.append(pre_tokenizers.Split(Regex(last), behavior="isolated"))
            steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False))

        special = [i for i, t in enumerate(self.token_type) if t in (CONTROL, UNKNOWN, USER_DEFINED)]
        user = [i for i in special if self.token_type[i] == USER_DEFINED]

        def build(added):
            tk = HFTokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False))
            tk.pre_tokenizer = pre_tokenizers.Sequence(steps)
            tk.decoder = decoders.ByteLevel()
            if added:
                tk.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False) for i in added])
            return tk

        self._build = build
        self._special_only = [i for i in special if self.token_type[i] != USER_DEFINED]
        self._user = user
        self._hf_special = build(special)     # parse_special=True: control tokens in the text are tokens
        self._hf_plain_ = None                # parse_special=False: only user-defined ones (built lazily)
        self._bytes = _byte_decoder()

    def __len__(self):
        return self.n_vocab

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        """Token ids of ``text``, as ``llama-tokenize`` prints them (``common_tokenize``): special tokens
        written in the text are parsed (unless ``parse_special=False``), BOS/EOS added only if the model
        asks for them and ``add_special``."""
        if not isinstance(text, str):
            raise ModelError(f"tokenize expects a str, got {type(text).__name__}")
        if parse_special or not any(self.tokens[i] in text for i in self._special_only):
            tk = self._hf_special             # (no control token text in it: both ways agree)
        else:
            if self._hf_plain_ is None:
                self._hf_plain_ = self._build(self._user)
            tk = self._hf_plain_
        ids = []
        for piece in _segments(text):
            ids.extend(tk.encode(piece, add_special_tokens=False).ids)
        if add_special and self.add_bos and self.bos_id is not None:
            ids = [int(self.bos_id)] + ids
        if add_special and self.add_eos and self.eos_id is not None:
            ids = ids + [int(self.eos_id)]
        return list(ids)

    def token_bytes(self, i: int, special: bool = True) -> bytes:
        t = int(self.token_type[i])
        text = self.tokens[i]
        if t in (CONTROL, UNKNOWN):
            return text.encode("utf-8") if special else b""
        if t == USER_DEFINED:
            return text.encode("utf-8")
        dec = self._bytes
        try:
            return bytes(dec[c] for c in text)
        except KeyError:
            return text.encode("utf-8")

    def detokenize(self, ids, special: bool = True) -> str:
        """Text of token ids (control tokens rendered as their text when ``special``); invalid UTF-8
        across a cut is replaced."""
        out = bytearray()
        for i in ids:
            i = int(i)
            if not 0 <= i < self.n_vocab:
                raise ModelError(f"token id {i} is outside the vocabulary (0..{self.n_vocab - 1})")
            out += self.token_bytes(i, special)
        return out.decode("utf-8", errors="replace")

    def is_eog(self, i: int) -> bool:
        """End of generation: EOS or EOT (and <|im_end|>-style control tokens named as such)."""
        return i in {x for x in (self.eos_id, self.eot_id) if x is not None} or \
            (self.token_type[i] == CONTROL and self.tokens[i] in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>"))

    def same_vocabulary(self, other: "Tokenizer") -> bool:
        return self.n_vocab == other.n_vocab and self.tokens == other.tokens
