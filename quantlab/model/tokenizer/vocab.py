"""What llama.cpp decides about a vocabulary from its GGUF metadata (``llama_vocab::impl::load``).

Read in this order, as the C++ does:

1. **kind** from ``tokenizer.ggml.model``: ``llama`` -> SPM, ``bert`` -> WPM, ``gpt2`` / ``gemma4`` -> BPE;
   each kind's default special ids (SPM: BOS 1, EOS 2, UNK 0; WPM: CLS-as-BOS 101, UNK 100, SEP 102; BPE:
   BOS = EOS = 11 (!); gemma4: none).
2. **pre-tokenizer** (BPE only) from ``tokenizer.ggml.pre`` (absent -> ``default``), with the switches
   llama.cpp sets for that name: ``ignore_merges``, default ``add_bos`` (Llama 3, Tekken, Chameleon), the
   detokenizer's ``clean_spaces``, ``▁`` escaping (Gemma 4). SPM: ``add_space_prefix`` and ``add_bos``
   default to true; WPM: ``add_bos`` and ``add_sep``.
3. ``tokenizer.ggml.add_space_prefix`` / ``add_bos_token`` / ``add_eos_token`` / ``add_sep_token`` override
   those defaults *only when present* (Gemma 4 always adds BOS).
4. the special ids from their keys (a key out of range keeps the default), then the EOT / EOM / FIM ids
   found by their text when no key names them, which also makes those tokens CONTROL; control tokens
   named "unused" become UNUSED; the end-of-generation set.
5. the special-token cache: CONTROL, USER_DEFINED and UNKNOWN tokens, longest text first; Phi-3 files
   (``general.name``) strip white space to the right of their special tokens (RSTRIP).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...errors import ModelError
from .pretokenizers import NOT_MAPPED, PRE_NAMES, PRE_TYPES, PreName, PreType

# token types (tokenizer.ggml.token_type) and llama.cpp's attribute bits (llama_token_attr)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
A_UNKNOWN, A_UNUSED, A_NORMAL, A_CONTROL, A_USER_DEFINED, A_BYTE = 1, 2, 4, 8, 16, 32
A_LSTRIP, A_RSTRIP = 1 << 7, 1 << 8
_TYPE_ATTR = np.zeros(256, dtype=np.int32)
for _t, _a in [
    (UNKNOWN, A_UNKNOWN),
    (UNUSED, A_UNUSED),
    (NORMAL, A_NORMAL),
    (CONTROL, A_CONTROL),
    (USER_DEFINED, A_USER_DEFINED),
    (BYTE, A_BYTE),
]:
    _TYPE_ATTR[_t] = _a

SPM, BPE, WPM = "SPM", "BPE", "WPM"
#: tokenizer.ggml.model -> kind
MODELS = {"llama": SPM, "gpt2": BPE, "gemma4": BPE, "bert": WPM}
_REFUSED_MODELS = {
    "t5": "UGM (T5 / XLM-RoBERTa unigram)",
    "rwkv": "RWKV world",
    "plamo2": "PLaMo-2",
    "no_vocab": "no vocabulary",
    "none": "no vocabulary",
    "hybriddna": "HybridDNA k-mers",
    "whitespace": "white-space word list",
    "test": "llama.cpp's test hash",
}
SUPPORTED = (
    "tokenizer models 'llama' (SentencePiece BPE), 'gpt2' (byte-level BPE), 'gemma4', 'bert' (WordPiece)"
    " and the BPE pre-tokenizers " + ", ".join(sorted(PRE_NAMES))
)

_DEFAULT_IDS = {
    SPM: dict(bos=1, eos=2, unk=0),
    WPM: dict(bos=101, unk=100, sep=102, pad=0, mask=103),
    BPE: dict(bos=11, eos=11),
    "gemma4": {},
}
# (attribute, key) in llama.cpp's order: the deprecated prefix/suffix/middle keys come last and win
_ID_KEYS = [
    ("bos", "bos"),
    ("eos", "eos"),
    ("eot", "eot"),
    ("eom", "eom"),
    ("unk", "unknown"),
    ("sep", "seperator"),
    ("pad", "padding"),
    ("mask", "mask"),
    ("fim_pre", "fim_pre"),
    ("fim_suf", "fim_suf"),
    ("fim_mid", "fim_mid"),
    ("fim_pad", "fim_pad"),
    ("fim_rep", "fim_rep"),
    ("fim_sep", "fim_sep"),
    ("fim_pre", "prefix"),
    ("fim_suf", "suffix"),
    ("fim_mid", "middle"),
]
# ids found by their text when no key gives them (llama-vocab.cpp "auto-detect special tokens by text")
_BY_TEXT = {
    "eot": [
        "<|eot_id|>",
        "<|im_end|>",
        "<|end|>",
        "<end_of_turn>",
        "<|endoftext|>",
        "<|end_of_text|>",
        "<EOT>",
        "_<EOT>",
        "[EOT]",
        "<｜end▁of▁sentence｜>",
        "<end_of_utterance>",
    ],
    "eom": ["<|eom_id|>"],
    "fim_pre": [
        "<|fim_prefix|>",
        "<fim-prefix>",
        "<fim_prefix>",
        "<｜fim▁begin｜>",
        "<PRE>",
        "▁<PRE>",
        "<|code_prefix|>",
        "<|prefix|>",
    ],
    "fim_suf": [
        "<|fim_suffix|>",
        "<fim-suffix>",
        "<fim_suffix>",
        "<｜fim▁hole｜>",
        "<SUF>",
        "▁<SUF>",
        "<|code_suffix|>",
        "<|suffix|>",
    ],
    "fim_mid": [
        "<|fim_middle|>",
        "<fim-middle>",
        "<fim_middle>",
        "<｜fim▁end｜>",
        "<MID>",
        "▁<MID>",
        "<|code_middle|>",
        "<|middle|>",
    ],
    "fim_pad": ["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
    "fim_rep": ["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"],
    "fim_sep": ["<|file_sep|>"],
}
_EOG_TEXTS = [
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
]


@dataclass
class Vocab:
    """A vocabulary as llama.cpp loads it (see the module docstring)."""

    model: str
    kind: str
    pre_name: str | None
    pre: PreType | None
    tokens: list
    token_type: np.ndarray
    attr: np.ndarray
    token_to_id: dict
    scores: np.ndarray | None
    merges: list | None
    ids: dict = field(default_factory=dict)
    add_bos: bool = False
    add_eos: bool = False
    add_sep: bool = False
    add_space_prefix: bool = False
    ignore_merges: bool = False
    clean_spaces: bool = False
    escape_whitespaces: bool = False
    lowercase: bool = True
    strip_accents: bool = True
    eog: frozenset = frozenset()
    special: list = field(default_factory=list)

    @classmethod
    def from_metadata(cls, md) -> Vocab:
        """The vocabulary as llama.cpp's ``llama_vocab::load`` sets it up from GGUF metadata, in its phases:
        the tokenizer model and pre-tokenizer, the token arrays, the switches of the kind and pre-tokenizer,
        the special ids, the add_* keys, the normalizer, the specials found by their text."""
        model, kind = _tokenizer_model(md)
        pre_name, pre, flags = _pre_tokenizer(md, model, kind)
        tokens, merges = _token_arrays(md, kind)
        n = len(tokens)
        types, attr, scores = _token_types_and_scores(md, n)
        v = cls(
            model=model,
            kind=kind,
            pre_name=pre_name,
            pre=pre,
            tokens=tokens,
            token_type=types,
            attr=attr,
            token_to_id=dict(zip(tokens, range(n))),
            scores=scores,
            merges=merges,
        )
        v._set_switches(md, flags)
        v.ids = _special_ids(md, model, kind, flags, n)
        for a in ("add_bos", "add_eos", "add_sep"):  # only when present
            val = md.get(f"tokenizer.ggml.{a}_token")
            if val is not None:
                setattr(v, a, bool(val))
        if pre is not None and pre.name == "GEMMA4":
            v.add_bos = True
        v.lowercase = bool(md.get("tokenizer.ggml.normalizer.lowercase", True))
        v.strip_accents = bool(md.get("tokenizer.ggml.normalizer.strip_accents", v.lowercase))
        v._special_by_text(md)
        return v

    def _set_switches(self, md, flags: PreName) -> None:
        """add_bos / add_sep / space prefix / clean-up as the kind (and a BPE pre-tokenizer's name) sets them."""
        if self.kind == SPM:
            self.add_space_prefix, self.add_bos = True, True
        elif self.kind == WPM:
            self.add_bos, self.add_sep, self.clean_spaces = True, True, True
        else:
            self.ignore_merges, self.add_bos, self.add_sep = flags.ignore_merges, flags.add_bos, flags.add_sep
            self.clean_spaces, self.escape_whitespaces = flags.clean_spaces, flags.escape_whitespaces
        self.add_space_prefix = bool(md.get("tokenizer.ggml.add_space_prefix", self.add_space_prefix))

    def _special_by_text(self, md) -> None:
        ids, attr, t2i = self.ids, self.attr, self.token_to_id

        def found(texts):
            # llama.cpp takes the first candidate its unordered_map yields (libstdc++ hash order); the first in
            # its list agrees on every vocabulary of the suite (<|eot_id|> over <|end_of_text|>, <|im_end|>
            # over <|endoftext|>, <|end|> over <|endoftext|>), and only eot_id itself depends on it
            return next((t for t in texts if t in t2i), None)

        for a, texts in _BY_TEXT.items():
            if ids[a] is None:
                t = found(texts)
                if t is not None:
                    ids[a] = t2i[t]
                    attr[ids[a]] |= A_CONTROL
        for i in np.nonzero(attr & A_CONTROL)[0]:
            if "unused" in self.tokens[i] and t2i.get(self.tokens[i]) == i:
                attr[i] |= A_UNUSED
        eog = {ids[a] for a in ("fim_pad", "fim_rep", "fim_sep") if ids[a] is not None}
        for t in _EOG_TEXTS:
            if t in t2i:
                eog.add(t2i[t])
                attr[t2i[t]] |= A_CONTROL
        for t in ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"):  # gpt-oss: always rendered
            if t in t2i:
                attr[t2i[t]] = A_USER_DEFINED
        eog |= {ids[a] for a in ("eos", "eot", "eom") if ids[a] is not None}
        texts = {self.tokens[i]: i for i in eog if 0 <= i < len(self.tokens)}
        if "<|end|>" in texts and (
            ("<|return|>" in texts and ("<|call|>" in texts or "<|calls|>" in texts))
            or (("<|call|>" in texts or "<|calls|>" in texts) and "<|flush|>" in texts)
        ):
            eog.discard(texts["<|end|>"])
            attr[texts["<|end|>"]] = A_USER_DEFINED
        if "</s>" in texts and ("<|tool_response>" in texts or "<|plamo:eos|>" in texts):
            eog.discard(texts["</s>"])
            attr[texts["</s>"]] = A_NORMAL
        self.eog = frozenset(int(i) for i in eog)
        # 5. special-token cache (longest text first; llama.cpp's sort is unstable, ties keep id order here)
        special = [int(i) for i in np.nonzero(attr & (A_CONTROL | A_USER_DEFINED | A_UNKNOWN))[0]]
        special.sort(key=lambda i: -len(self.tokens[i].encode("utf-8")))
        self.special = special
        name = str(md.get("general.name", "")).lower()
        pre = str(md.get("tokenizer.ggml.pre", ""))
        arch = str(md.get("general.architecture", ""))
        if any(s in pre for s in ("jina-v2-de", "jina-v2-es", "jina-v2-code")) or any(
            s in arch for s in ("nomic-bert-moe", "jina-bert-v3")
        ):
            if "<mask>" in t2i:
                attr[t2i["<mask>"]] |= A_LSTRIP
        elif "phi-3" in name or "phi3" in name:
            for i in special:
                attr[i] |= A_RSTRIP
            for t, on in [("</s>", True), ("<unk>", False), ("<s>", False), ("<|endoftext|>", False)]:
                if t in t2i:
                    attr[t2i[t]] = attr[t2i[t]] | A_RSTRIP if on else attr[t2i[t]] & ~A_RSTRIP
        elif "modern-bert" in name and "[MASK]" in t2i:
            attr[t2i["[MASK]"]] |= A_LSTRIP


def _tokenizer_model(md) -> tuple:
    """(tokenizer.ggml.model, its kind: SPM, BPE, WPM ...); a model quantlab does not run is refused by name."""
    model = md.get("tokenizer.ggml.model")
    if model not in MODELS:
        what = _REFUSED_MODELS.get(model)
        raise ModelError(
            f"tokenizer model {model!r} (tokenizer.ggml.model{', ' + what if what else ''}) is not "
            f"supported; quantlab runs {SUPPORTED}"
        )
    return model, MODELS[model]


def _pre_tokenizer(md, model, kind) -> tuple:
    """(tokenizer.ggml.pre name, its regex set, its flags) of a BPE vocabulary; (None, None, defaults) else."""
    if kind != BPE:
        return None, None, PreName("DEFAULT")
    pre_name = "gemma4" if model == "gemma4" else (md.get("tokenizer.ggml.pre") or "default")
    if pre_name not in PRE_NAMES:
        why = (
            f"llama.cpp runs it through {NOT_MAPPED[pre_name]}, not a regex"
            if pre_name in NOT_MAPPED
            else "llama.cpp 0.3.36 does not know it either"
        )
        raise ModelError(
            f"pre-tokenizer {pre_name!r} (tokenizer.ggml.pre) is not supported ({why}); quantlab runs {SUPPORTED}"
        )
    flags = PRE_NAMES[pre_name]
    return pre_name, PRE_TYPES[flags.type], flags


def _token_arrays(md, kind) -> tuple:
    """(tokens, merges: BPE only) as lists of str; an empty token gets llama.cpp's ``[EMPTY_i]`` name."""
    try:
        tokens = list(md["tokenizer.ggml.tokens"])
        merges = list(md["tokenizer.ggml.merges"]) if kind == BPE else None
    except KeyError as e:
        raise ModelError(f"the GGUF metadata has no {e.args[0]}: cannot build the tokenizer") from None
    for what, arr in (("tokenizer.ggml.tokens", tokens), ("tokenizer.ggml.merges", merges or [])):
        if not all(isinstance(t, str) for t in arr):
            raise ModelError(f"{what} must be an array of strings")
    if "" in tokens:
        tokens = [t if t else f"[EMPTY_{i}]" for i, t in enumerate(tokens)]
    return tokens, merges


def _token_types_and_scores(md, n: int) -> tuple:
    """(token types, their attributes, scores or None) for ``n`` tokens; a shorter array is refused."""
    types = md.get("tokenizer.ggml.token_type")
    types = np.asarray(types, dtype=np.int32) if types is not None else np.full(n, NORMAL, dtype=np.int32)
    if len(types) < n:
        raise ModelError(f"tokenizer.ggml.token_type has {len(types)} entries for {n} tokens")
    types = types[:n]
    attr = np.where((types >= 0) & (types < 256), _TYPE_ATTR[np.clip(types, 0, 255)], 0).astype(np.int32)
    scores = md.get("tokenizer.ggml.scores")
    scores = np.asarray(scores, dtype=np.float32)[:n] if scores is not None else None
    if scores is not None and len(scores) < n:
        raise ModelError(f"tokenizer.ggml.scores has {len(scores)} entries for {n} tokens")
    return types, attr, scores


def _special_ids(md, model, kind, flags: PreName, n: int) -> dict:
    """bos/eos/... ids: the kind's defaults (disabled when out of range), then the metadata's keys."""
    ids = {a: None for a, _ in _ID_KEYS}
    ids.update(_DEFAULT_IDS["gemma4" if model == "gemma4" else kind])
    if flags.no_bos:
        ids["bos"] = None
    for a, key in _ID_KEYS:
        if ids[a] is not None and ids[a] >= n:
            ids[a] = None
        val = md.get(f"tokenizer.ggml.{key}_token_id")
        if val is not None and not isinstance(val, (int, np.integer)):
            raise ModelError(f"tokenizer.ggml.{key}_token_id must be an integer, got {val!r}")
        if val is not None and 0 <= int(val) < n:
            ids[a] = int(val)
    return ids
