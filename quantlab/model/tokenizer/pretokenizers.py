"""llama.cpp's BPE pre-tokenizers (``src/llama-vocab.cpp``, ``llm_tokenizer_bpe``), one registry.

A pre-tokenizer is a list of regexes applied one after the other: each one cuts every piece left by the
previous ones into its matches *and* the text between them (HF ``Split(behavior="isolated")``). The
regexes below are llama.cpp's own strings (its "adapted" forms: ``(?i:'s|…)`` spelled ``'[sS]|…``), so
they can be read side by side with the C++. llama.cpp runs them three ways, and Oniguruma (the regex
engine of HF ``tokenizers``) reproduces each:

* hand-written splitters for the GPT-2, Llama-3, Qwen2 and Qwen3.5 patterns (``unicode.cpp``): the GPT-2
  one also ends a piece at a run of whitespace (``|\\s+``, missing from the string, is what the code
  does), so :func:`onig` appends it;
* ``std::regex`` over a "collapsed" text where every non-ASCII code point stands for its category
  (``\\p{L}``, ``\\p{N}``, ``\\p{P}``, ``\\p{S}``, ``\\p{M}``; other letters' cases are not told apart, which
  is why llama.cpp's Tekken / GPT-4o patterns use ``(?=[\\p{L}])([^a-z])`` instead of ``\\p{Lu}``: the same
  meaning in Oniguruma) and non-ASCII white space stands for ``\\v``: Unicode classes give the same cuts;
* ``std::wregex`` for patterns without categories (literal CJK ranges): the same in Oniguruma, with
  ``$`` meaning the end of the piece (``\\z``; Oniguruma's ``$`` would also match before a newline).

Not mapped (refused by name): pre-tokenizers llama.cpp runs through its own C++ code and not a regex
(``kimi-k2``, ``afmoe``, ``tiny_aya``/``cohere2moe`` digit grouping), ``superbpe`` (a zero-width
lookahead split), and the ``whitespace`` / ``hybriddna`` tokenizer models.
"""

from __future__ import annotations

from dataclasses import dataclass

GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
LLAMA3 = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)"
    r"|\s+"
)
QWEN2 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN35 = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
NEWLINES = r"[^\n]+|[\n]+"
_DEEPSEEK3 = (
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+"
    "| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"
)
_GPT4O_WORDS = (
    r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+" + _CONTRACTIONS + "?"
    r"|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*" + _CONTRACTIONS + "?"
)


@dataclass(frozen=True)
class PreType:
    """One ``LLAMA_VOCAB_PRE_TYPE_*``: its regexes, and whether pieces are GPT-2 byte-encoded before BPE
    (``False``: SPM-style BPE on raw UTF-8 with ``▁`` for spaces and ``<0xXX>`` byte tokens)."""

    name: str
    regexes: tuple
    byte_encode: bool = True


_TYPES = [
    PreType("DEFAULT", (r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]")),
    PreType("LLAMA3", (LLAMA3,)),
    PreType(
        "JAIS2",
        (
            _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
            r"|\s{512}(?!\S)|\s{256}(?!\S)|\s{128}(?!\S)|\s{64}(?!\S)|\s{32}(?!\S)|\s{16}(?!\S)"
            r"|\s{8}(?!\S)|\s{4}(?!\S)|\s{1,2}(?!\S)|\s{1}",
        ),
    ),
    PreType("DBRX", (LLAMA3,)),
    PreType("SMAUG", (LLAMA3,)),
    PreType(
        "DEEPSEEK_LLM",
        (  # (code points spelled out: some of them have canonical equivalents)
            "[\r\n]",
            "\\s?[A-Za-z\xb5\xc0-\xd6\xd8-\xf6\xf8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af\u0370-\u0373"
            "\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481"
            "\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf"
            "\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d"
            "\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4"
            "\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107"
            "\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139\u213c-\u213f"
            "\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d"
            "\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17"
            "\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3\U000104d8-\U000104fb"
            "\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df\U0001e900-\U0001e943]+",
            "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+",
            "\\s+$",
            "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+",
            r"\p{N}+",
        ),
    ),
    PreType("DEEPSEEK3_LLM", (r"\p{N}{1,3}", "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+", _DEEPSEEK3)),
    PreType(
        "SPARK2_5",
        (
            r"\p{N}{1,3}",
            "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
            "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?"
            "[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+|[\r\n]|\\s+(?!\\S)|\\s+",
            r"\p{N}",
        ),
    ),
    PreType(
        "YOUTU",
        (
            "[가-힣ㄱ-ㆎ]+|[！…“”‘’—：；，、-〿︰-﹏]+|[ㄅ-ㄯ]+|[一-龥぀-ゟ゠-ヿ]+",
            r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
            + _CONTRACTIONS
            + r"?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
            + _CONTRACTIONS
            + r"?|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ),
    ),
    PreType("DEEPSEEK_CODER", ("[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", "[一-龥ࠀ-一가-퟿]+", r"\p{N}")),
    PreType("FALCON", (r"[\p{P}\$\+<=>\^~\|`]+", GPT2, r"[0-9][0-9][0-9]")),
    PreType("STARCODER", (r"\p{N}", GPT2)),
    PreType("GPT2", (GPT2,)),
    PreType("QWEN2", (QWEN2,)),
    PreType("QWEN35", (QWEN35,)),
    PreType("PORO", (r" ?[^(\s|.,!?…。，、।۔،)]+",)),
    PreType("CHATGLM4", (LLAMA3,)),
    PreType("VIKING", (r" ?[^(\s|.,!?…。，、।۔،)]+", r"\p{N}")),
    PreType(
        "TEKKEN",
        (
            r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+"
            r"|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*"
            r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ),
    ),
    PreType(
        "CHAMELEON",
        (
            r"<sentinel:[0-9]+>",
            r"(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z",
            r"([\t\n]|    |  )",
            r"\p{N}",
            r"[\p{P}!-/:-@\[-`{-~]",
            GPT2,
        ),
    ),
    PreType("GPT4O", (_GPT4O_WORDS + r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",)),
    PreType(
        "GRANITE_EMB_MULTI",
        (
            _GPT4O_WORDS.replace(r"(?=[\p{L}])", r"(?=[\p{L}\p{M}])")
            + r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ),
    ),
    PreType(
        "BAILINGMOE",
        (
            r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
            r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+",
        ),
    ),
    PreType(
        "SEED_CODER",
        (
            _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+"
            r"|\s+(?!\S)|\s+",
        ),
    ),
    PreType("UFAKZEKA", (r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",)),
    PreType("LAGUNA", (NEWLINES, QWEN2)),
    PreType(
        "EXAONE_MOE",
        (
            _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}"
            r"| ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+",
        ),
    ),
    PreType("GEMMA4", (NEWLINES,), byte_encode=False),
    PreType("SARVAM_MOE", (NEWLINES,), byte_encode=False),
    PreType(
        "MINICPM5",
        (
            r"\p{N}{1,3}",
            _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*"
            r"|\s*[\r\n]+|\s+(?!\S)|\s+",
        ),
    ),
]
PRE_TYPES = {t.name: t for t in _TYPES}
for _alias, _same in [
    ("STARCODER", ["REFACT", "COMMAND_R", "SMOLLM", "CODESHELL", "EXAONE", "MINERVA", "MELLUM2"]),
    ("GPT2", ["MPT", "OLMO", "JAIS", "TRILLION", "GRANITE_DOCLING"]),
    ("QWEN2", ["STABLELM2", "HUNYUAN", "SOLAR_OPEN", "GROK_2"]),
    ("PORO", ["BLOOM", "GPT3_FINNISH"]),
    ("GPT4O", ["MINIMAX_M2"]),
    ("DEEPSEEK3_LLM", ["HUNYUAN_DENSE", "JOYAI_LLM", "HY_V4"]),
]:
    for _n in _same:
        PRE_TYPES[_n] = PreType(_n, PRE_TYPES[_alias].regexes, PRE_TYPES[_alias].byte_encode)


@dataclass(frozen=True)
class PreName:
    """What ``llama_vocab::impl::load`` sets for one ``tokenizer.ggml.pre`` value."""

    type: str
    ignore_merges: bool = False
    add_bos: bool = False  # default when tokenizer.ggml.add_bos_token is absent
    clean_spaces: bool = True  # llama_detokenize's " ," / " 's" clean-up
    escape_whitespaces: bool = False  # spaces become ▁ before BPE
    add_sep: bool = False
    no_bos: bool = False  # the BOS id is reset to none (ChatGLM)


def _names():
    L3 = dict(ignore_merges=True, add_bos=True)
    table = {
        "default": PreName("DEFAULT"),
        "minicpm5": PreName("MINICPM5", ignore_merges=True),
        **{
            n: PreName("LLAMA3", **L3)
            for n in (
                "llama3",
                "llama-v3",
                "llama-bpe",
                "falcon3",
                "falcon-h1",
                "pixtral",
                "midm-2.0",
                "lfm2",
                "jina-v5-nano",
            )
        },
        "deepseek-llm": PreName("DEEPSEEK_LLM", clean_spaces=False),
        "deepseek-coder": PreName("DEEPSEEK_CODER", clean_spaces=False),
        "deepseek-v3": PreName("DEEPSEEK3_LLM", clean_spaces=False),
        "spark2_5": PreName("SPARK2_5", clean_spaces=False),
        "youtu": PreName("YOUTU", clean_spaces=False, ignore_merges=True),
        "falcon": PreName("FALCON"),
        "mpt": PreName("MPT"),
        "starcoder": PreName("STARCODER"),
        **{
            n: PreName("GPT2")
            for n in (
                "gpt-2",
                "phi-2",
                "jina-es",
                "jina-de",
                "gigachat",
                "jina-v2-es",
                "jina-v2-de",
                "a.x-4.0",
                "mellum",
                "modern-bert",
                "exaone4",
            )
        },
        "jais-2": PreName("JAIS2"),
        "gemma4": PreName("GEMMA4", escape_whitespaces=True),
        "granite-embed-multi-311m": PreName("GEMMA4", escape_whitespaces=True),
        "sarvam-moe": PreName("SARVAM_MOE", escape_whitespaces=True, clean_spaces=False),
        **{n: PreName("GPT2", add_sep=True) for n in ("jina-v1-en", "jina-v2-code", "roberta-bpe")},
        "refact": PreName("REFACT"),
        "command-r": PreName("COMMAND_R", clean_spaces=False),
        **{n: PreName("QWEN2", clean_spaces=False) for n in ("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2")},
        "qwen35": PreName("QWEN35", clean_spaces=False),
        "stablelm2": PreName("STABLELM2"),
        "olmo": PreName("OLMO"),
        "dbrx": PreName("DBRX"),
        "smaug-bpe": PreName("SMAUG"),
        "poro-chat": PreName("PORO", clean_spaces=False),
        "chatglm-bpe": PreName("CHATGLM4", no_bos=True),
        "glm4": PreName("CHATGLM4", no_bos=True, ignore_merges=True),
        "glm5": PreName("CHATGLM4", no_bos=True, ignore_merges=True),
        "viking": PreName("VIKING", clean_spaces=False),
        "jais": PreName("JAIS"),
        "tekken": PreName("TEKKEN", clean_spaces=False, ignore_merges=True, add_bos=True),
        "smollm": PreName("SMOLLM", clean_spaces=False),
        "codeshell": PreName("CODESHELL"),
        "bloom": PreName("BLOOM"),
        "gpt3-finnish": PreName("GPT3_FINNISH"),
        "exaone": PreName("EXAONE"),
        "exaone-moe": PreName("EXAONE_MOE"),
        "chameleon": PreName("CHAMELEON", add_bos=True, clean_spaces=False),
        "minerva-7b": PreName("MINERVA"),
        "megrez": PreName("QWEN2"),
        **{n: PreName("GPT4O", clean_spaces=False) for n in ("gpt-4o", "llama4", "kanana2", "talkie")},
        "granite-embed-multi-97m": PreName("GRANITE_EMB_MULTI", clean_spaces=False, ignore_merges=True),
        "trillion": PreName("TRILLION", clean_spaces=False),
        "granite-docling": PreName("GRANITE_DOCLING", clean_spaces=False),
        **{n: PreName("BAILINGMOE", clean_spaces=False) for n in ("bailingmoe", "bailingmoe2", "llada-moe")},
        "seed-coder": PreName("SEED_CODER", clean_spaces=False),
        "hunyuan": PreName("HUNYUAN", clean_spaces=False),
        "hunyuan-dense": PreName("HUNYUAN_DENSE", clean_spaces=False),
        "hy_v4": PreName("HY_V4", clean_spaces=False),
        "joyai-llm": PreName("JOYAI_LLM", clean_spaces=False),
        "ufakzeka": PreName("UFAKZEKA", clean_spaces=False),
        "grok-2": PreName("GROK_2", clean_spaces=False),
        "laguna": PreName("LAGUNA", clean_spaces=False),
        "minimax-m2": PreName("MINIMAX_M2", clean_spaces=False),
        "solar-open": PreName("SOLAR_OPEN", clean_spaces=False),
        "mellum2": PreName("MELLUM2"),
    }
    for n, p in table.items():
        assert p.type in PRE_TYPES, (n, p.type)
    return table


#: tokenizer.ggml.pre -> what llama.cpp sets for it (every name llama.cpp 0.3.36 knows, minus NOT_MAPPED)
PRE_NAMES = _names()
#: names llama.cpp knows but runs through hand-written C++ code rather than a regex: refused by name
NOT_MAPPED = {
    "kimi-k2": "a hand-written splitter (Han runs + GPT-4o)",
    "afmoe": "a hand-written digit grouping",
    "tiny_aya": "a hand-written digit grouping",
    "cohere2moe": "a hand-written digit grouping",
    "superbpe": "a zero-width lookahead split",
    "whitespace": "the whitespace tokenizer model",
}


# non-ASCII white space: llama.cpp matches each of these as if it were "\v" (unicode_regex_split)
WIDE_SPACES = (0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F, 0x3000)


def _without_wide_spaces(regex: str) -> str:
    r"""Take the non-ASCII white-space code points out of literal ranges / characters in [...] classes: for
    llama.cpp they are "\v" when matched, so e.g. deepseek's [ࠀ-一] (U+0800-U+4E00) never takes U+3000,
    while "\s" (which Oniguruma's Unicode \s covers) does."""
    out, i, inside, n = [], 0, False, len(regex)
    while i < n:
        c = regex[i]
        if c == "\\":
            out.append(regex[i : i + 2])
            i += 2
            continue
        if not inside:
            inside = c == "["
            out.append(c)
            if inside and regex[i + 1 : i + 2] == "^":
                out.append("^")
                i += 1
            i += 1
            continue
        if c == "]":
            inside = False
            out.append(c)
            i += 1
            continue
        lo = hi = ord(c)
        if i + 2 < n and regex[i + 1] == "-" and regex[i + 2] not in "]\\":
            hi = ord(regex[i + 2])
            i += 3
        else:
            i += 1
        cuts = [w for w in WIDE_SPACES if lo <= w <= hi]
        start = lo
        for w in [*cuts, hi + 1]:
            if start <= w - 1:
                out.append(chr(start) if start == w - 1 else f"{chr(start)}-{chr(w - 1)}")
            start = w + 1
    return "".join(out)


def onig(regex: str) -> str:
    """llama.cpp's regex string as Oniguruma must read it to cut the same pieces."""
    if regex == GPT2:
        return GPT2 + r"|\s+"  # unicode_regex_split_custom_gpt2 also cuts a trailing white-space run
    if regex.endswith("$"):  # std::regex: the end of the piece (deepseek-llm's "\s+$")
        regex = regex[:-1] + r"\z"
    return _without_wide_spaces(regex)
