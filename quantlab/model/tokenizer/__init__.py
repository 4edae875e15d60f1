"""The tokenizer of a GGUF model, rebuilt from its ``tokenizer.ggml.*`` metadata as llama.cpp 0.3.36 runs
it (``src/llama-vocab.cpp``), the per-piece work done by HF ``tokenizers``.

``Tokenizer.tokenize(text, add_special, parse_special)`` = ``llama_tokenize``:

1. **settings** (:mod:`.vocab`): the kind (SPM / BPE / WPM), pre-tokenizer, special ids, BOS/EOS defaults
   and token attributes exactly as ``llama_vocab::impl::load`` decides them.
2. **special-token partition** (``tokenizer_st_partition``, here in Python): for each CONTROL /
   USER_DEFINED / UNKNOWN token, longest text first, every occurrence in the remaining raw text becomes that
   token (with ``parse_special=False`` only USER_DEFINED ones); LSTRIP / RSTRIP tokens eat the white space
   beside them.
3. **each raw piece** through the vocabulary's HF pipeline (:mod:`.hf`): SPM first gets a leading space
   (``add_space_prefix``; every raw piece follows a special token or starts the text) and spaces become
   ``▁``; Gemma 4 writes spaces as ``▁`` and keeps a run of newlines that is a token whole; WPM text is
   cut into normalised words first (:mod:`.wpm`).
4. BOS / EOS: SPM and BPE add BOS if ``add_bos`` and EOS if ``add_eos`` (when ``add_special``); WPM always
   wraps in BOS (CLS) ... SEP.

Written here rather than left to ``tokenizers``, because llama.cpp does it differently: the partition
(HF's added tokens match leftmost-longest in one pass; llama.cpp takes one special token at a time, longest
first, and strips C ``isspace`` for LSTRIP/RSTRIP), WordPiece's normalisation (:mod:`.wpm`), Gemma 4's
whole newline runs, and the detokenizer's clean-up.

``detokenize`` = ``llama_detokenize``: ``token_to_piece`` per token (GPT-2 byte table or ``▁`` -> space,
``<0xXX>`` bytes, control tokens only when ``special``), then for SPM the first token's leading space is
dropped and for most BPE vocabularies the " ," / " 's" clean-up (``clean_spaces``) is applied.
"""

from __future__ import annotations

import re

from ...errors import ModelError
from . import hf, wpm
from .pretokenizers import PRE_NAMES, PRE_TYPES
from .vocab import (
    A_BYTE,
    A_CONTROL,
    A_LSTRIP,
    A_NORMAL,
    A_RSTRIP,
    A_UNKNOWN,
    A_USER_DEFINED,
    BPE,
    BYTE,
    CONTROL,
    NORMAL,
    SPM,
    UNKNOWN,
    UNUSED,
    USER_DEFINED,
    WPM,
    Vocab,
)

__all__ = [
    "BYTE",
    "CONTROL",
    "NORMAL",
    "PRE_NAMES",
    "PRE_TYPES",
    "UNKNOWN",
    "UNUSED",
    "USER_DEFINED",
    "Tokenizer",
    "Vocab",
]

_C_SPACE = " \t\n\v\f\r"  # C isspace(): what LSTRIP / RSTRIP remove

# Long texts are encoded in segments (the HF encoder's working memory grows with the input: ~70 MB
# for the 400 KB default text). A cut just after a newline that sits between a non-space character and a
# letter changes nothing: every pre-tokenizer ends a piece at such a newline on both sides, and an SPM
# vocabulary is cut there only if none of its tokens holds a newline followed by a letter.
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
        yield text[start : m.end()]
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


_BYTES = _byte_decoder()


def _clean_spaces(t: bytearray) -> bytearray:
    """llama_detokenize's three clean-up passes, on the bytes, step for step as the C++ writes them."""
    if b" " not in t:
        return t
    sp, ap = 0x20, 0x27
    n = len(t)
    total = 1 if n else 0  # 1: " ?", " !", " .", " ," lose the space
    for i in range(1, n):
        x = t[i]
        if t[i - 1] == sp and x in b"?!.,":
            total -= 1
        t[total] = x
        total += 1
    n, total, i = total, (1 if total else 0), 1  # 2: a lone apostrophe between spaces loses both
    while i < n:
        x = t[i]
        if x == ap and i + 1 < n and t[i - 1] == sp and t[i + 1] == sp:
            total -= 1
            i += 1
            t[i] = 0
        t[total] = x
        total += 1
        i += 1
    n, total = total, (1 if total else 0)  # 3: " 's", " 'm", " 're", " 've" lose the space
    for i in range(1, n):
        x = t[i]
        if t[i - 1] == sp and x == ap and i + 1 < n:
            x1 = t[i + 1]
            if x1 in b"sm" or (x1 not in b"td" and i + 2 < n and ((x1, t[i + 2]) in ((0x72, 0x65), (0x76, 0x65)))):
                total -= 1
        t[total] = x
        total += 1
    del t[total:]
    return t


class Tokenizer:
    """A GGUF model's tokenizer, token for token as llama.cpp's (see the module docstring)."""

    def __init__(self, metadata):
        v = Vocab.from_metadata(metadata)
        self.vocab = v
        self.kind = v.kind
        self.tokens = v.tokens
        self.n_vocab = len(v.tokens)
        self.token_type = v.token_type
        self.pre = v.pre_name
        self.bos_id, self.eos_id, self.eot_id = v.ids["bos"], v.ids["eos"], v.ids["eot"]
        self.sep_id, self.unk_id = v.ids["sep"], v.ids["unk"]
        self.add_bos, self.add_eos, self.add_sep = v.add_bos, v.add_eos, v.add_sep
        self.add_space_prefix = v.add_space_prefix
        self.chat_template = metadata.get("tokenizer.chat_template")
        self._hf = hf.build(v)
        self._dropped = (
            v.kind == BPE and v.pre.byte_encode and any(c not in v.token_to_id for c in _BYTES)
        )  # some byte has no token (see hf.DROPPED)
        self._special = [
            (
                i,
                v.tokens[i],
                bool(v.attr[i] & (A_CONTROL | A_UNKNOWN)),
                bool(v.attr[i] & A_LSTRIP),
                bool(v.attr[i] & A_RSTRIP),
            )
            for i in v.special
        ]
        self._escape = v.kind == SPM or v.escape_whitespaces
        self._newline_runs = v.kind == BPE and not v.pre.byte_encode
        self._cut = not (v.kind == SPM and any(re.search(r"\n[A-Za-z]", t) for t in v.tokens if "\n" in t))
        self._pieces = None  # token_to_piece cache, built on first use

    def __len__(self):
        return self.n_vocab

    # -- tokenize ---------------------------------------------------------------------------------

    def _partition(self, text: str, parse_special: bool) -> list:
        """Raw text cut around special tokens: a list of str (raw) and int (token id) fragments."""
        frags = [text] if text else []
        for tid, ttext, ctrl, lstrip, rstrip in self._special:
            if ctrl and not parse_special:
                continue
            if not any(isinstance(f, str) and ttext in f for f in frags):
                continue
            out = []
            for f in frags:
                if isinstance(f, int) or ttext not in f:
                    out.append(f)
                    continue
                pos, end = 0, len(f)
                while True:
                    m = f.find(ttext, pos)
                    if m < 0:
                        if pos < end:
                            out.append(f[pos:])
                        break
                    left = f[pos:m]
                    if lstrip:
                        left = left.rstrip(_C_SPACE)
                    if left:
                        out.append(left)
                    out.append(tid)
                    pos = m + len(ttext)
                    if rstrip:
                        while pos < end and f[pos] in _C_SPACE:
                            pos += 1
                    if pos >= end:
                        break
            frags = out
        return frags

    def _pieces_of(self, raw: str) -> list:
        """What the HF pipeline is given for one raw fragment (strings; WPM: lists of words), or token ids
        kept whole."""
        if self.kind == WPM:
            words = wpm.words(raw, self.vocab.lowercase, self.vocab.strip_accents)
            return [words] if words else []
        if self.kind == SPM:
            raw = (" " + raw) if self.add_space_prefix else raw
        if self._escape:
            raw = raw.replace(" ", "▁")
        if self._newline_runs:  # Gemma 4: pieces are runs of newlines / of anything else
            out = []
            for p in re.findall(r"\n+|[^\n]+", raw):
                i = self.vocab.token_to_id.get(p) if p[0] == "\n" else None
                out.append(i if i is not None else p)
            return out
        return list(_segments(raw)) if self._cut else [raw]

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        """Token ids of ``text``, as ``llama_tokenize`` / ``llama-tokenize`` give them: special tokens written
        in the text are parsed (only user-defined ones with ``parse_special=False``), BOS/EOS added as the
        model's metadata and llama.cpp's defaults say when ``add_special``."""
        if not isinstance(text, str):
            raise ModelError(f"tokenize expects a str, got {type(text).__name__}")
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as e:
                raise ModelError(
                    f"the text is not valid Unicode: {text[e.start : e.end]!r} at position {e.start} "
                    f"(a lone surrogate) cannot be written as UTF-8"
                ) from None
        work = []  # int ids and str pieces, in order
        for f in self._partition(text, parse_special):
            work.extend([f] if isinstance(f, int) else self._pieces_of(f))
        encode, pre = self._hf.encode, self.kind == WPM  # (encode_batch's threads are slower on 2 busy cores)
        ids = []
        if add_special and (self.add_bos or self.kind == WPM):
            if self.bos_id is None:
                raise ModelError(
                    "this vocabulary asks for a BOS token (add_bos) but has none (tokenizer.ggml.bos_token_id)"
                )
            ids.append(int(self.bos_id))
        for w in work:
            ids.extend([w] if isinstance(w, int) else encode(w, add_special_tokens=False, is_pretokenized=pre).ids)
        if self._dropped:
            ids = [i for i in ids if i != self.n_vocab]
        if add_special and self.kind == WPM:
            if self.sep_id is None:
                raise ModelError("this WordPiece vocabulary has no SEP token (tokenizer.ggml.seperator_token_id)")
            ids.append(int(self.sep_id))
        elif add_special and self.add_eos:
            if self.eos_id is None:
                raise ModelError(
                    "this vocabulary asks for an EOS token (add_eos) but has none (tokenizer.ggml.eos_token_id)"
                )
            ids.append(int(self.eos_id))
        return ids

    # -- detokenize -------------------------------------------------------------------------------

    def _piece(self, i: int) -> bytes:
        """llama.cpp's token_to_piece(special=True) for token ``i``."""
        v, a, text = self.vocab, int(self.vocab.attr[i]), self.tokens[i]
        if a & (A_UNKNOWN | A_CONTROL | A_USER_DEFINED):
            return text.encode("utf-8")
        if a & A_NORMAL:
            if v.kind != BPE or v.escape_whitespaces:
                return text.replace("▁", " ").encode("utf-8")
            out = bytearray()
            for c in text:
                b = _BYTES.get(c)
                if b is None:  # not a GPT-2 byte character: llama_decode_text's marker
                    out += b"[UNK_BYTE_0x" + c.encode("utf-8").hex().encode() + text.encode("utf-8") + b"]"
                else:
                    out.append(b)
            return bytes(out)
        if a & A_BYTE:  # "<0xXX>"; strtol's reading of anything else (its hex prefix, or 0)
            hexpart = re.match(r"[0-9A-Fa-f]*", text[3:5]).group()
            return bytes([int(hexpart, 16) if hexpart else 0])
        return b""

    def token_bytes(self, i: int, special: bool = True) -> bytes:
        """The bytes token ``i`` stands for (``llama_token_to_piece``); control and unknown tokens give
        their text only when ``special``."""
        i = int(i)
        if not 0 <= i < self.n_vocab:
            raise ModelError(f"token id {i} is outside the vocabulary (0..{self.n_vocab - 1})")
        if not special and self.vocab.attr[i] & (A_UNKNOWN | A_CONTROL):
            return b""
        if self._pieces is None:
            self._pieces = {}
        p = self._pieces.get(i)
        if p is None:
            p = self._pieces[i] = self._piece(i)
        return p

    def detokenize(self, ids, special: bool = True, remove_special: bool = False) -> str:
        """Text of token ids as ``llama_detokenize`` gives it (``common_detokenize``): control tokens rendered
        as their text when ``special``; with ``remove_special`` a leading BOS / trailing EOS the model adds is
        dropped; an SPM vocabulary's first piece loses its leading space; most BPE vocabularies get the
        " ," / " 's" clean-up. Invalid UTF-8 across a cut is replaced."""
        ids = [int(i) for i in ids]
        for i in ids:
            if not 0 <= i < self.n_vocab:
                raise ModelError(f"token id {i} is outside the vocabulary (0..{self.n_vocab - 1})")
        remove_space = self.add_space_prefix
        if remove_special and self.add_bos and ids and ids[0] == self.bos_id:
            remove_space = False
            ids = ids[1:]
        if remove_special and self.add_eos and ids and ids[-1] == self.eos_id:
            ids = ids[:-1]
        out = bytearray()
        for k, i in enumerate(ids):
            p = self.token_bytes(i, special)
            if k == 0 and remove_space and p[:1] == b" ":
                p = p[1:]
            out += p
        if self.vocab.clean_spaces:
            out = _clean_spaces(out)
        return out.decode("utf-8", errors="replace")

    def describe(self) -> str:
        """One line saying what this tokenizer is, for a notebook or a CLI."""
        v = self.vocab
        if v.kind == SPM:
            what = "SentencePiece BPE (tokenizer.ggml.model 'llama')"
        elif v.kind == WPM:
            what = "WordPiece (tokenizer.ggml.model 'bert')"
        elif not v.pre.byte_encode:
            what = f"BPE on UTF-8 with byte fallback (tokenizer.ggml.model {v.model!r})"
        else:
            what = f"byte-level BPE, pre-tokenizer {v.pre_name!r}" + (
                ", whole-word tokens kept (ignore_merges)" if v.ignore_merges else ""
            )
        adds = []
        if self.add_bos or v.kind == WPM:
            adds.append(f"BOS {self.tokens[self.bos_id]!r}" if self.bos_id is not None else "BOS (missing!)")
        if v.kind == WPM:
            adds.append(f"SEP {self.tokens[self.sep_id]!r}" if self.sep_id is not None else "SEP (missing!)")
        elif self.add_eos:
            adds.append(f"EOS {self.tokens[self.eos_id]!r}" if self.eos_id is not None else "EOS (missing!)")
        return (
            f"{what}; {self.n_vocab} tokens ({len(v.special)} special); adds "
            f"{' and '.join(adds) if adds else 'nothing'}"
            + ("; a space before the text" if v.kind == SPM and v.add_space_prefix else "")
        )

    def is_eog(self, i: int) -> bool:
        """End of generation, as llama.cpp's ``llama_vocab_is_eog``: EOS, EOT, EOM, FIM pad/repo/sep and the
        control tokens llama.cpp recognises by text (``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>`` ...)."""
        return int(i) in self.vocab.eog

    def same_vocabulary(self, other: Tokenizer) -> bool:
        return self.n_vocab == other.n_vocab and self.tokens == other.tokens
