"""llama.cpp's WordPiece pre-processing (``llm_tokenizer_wpm_session::preprocess``), written out because it
is *not* HF's ``BertNormalizer``: llama.cpp replaces every code point by the first code point of its NFD
form (so "국" becomes the jamo "ᄀ" and "İ" becomes "I", where HF keeps all of the decomposition), lower-cases
with the one-to-one Unicode mapping ("İ" -> "i", not "i̇"), and only then drops accents and controls.

Per code point, after that replacement: white space ends a word; NUL, U+FFFD and control / format /
private-use code points (``\\p{C}`` but unassigned) are dropped, and so are marks (``\\p{M}``) when accents
are stripped; punctuation, ASCII symbols and CJK ideographs are words of their own; anything else is
appended, lower-cased. The words then go to HF's ``WordPiece`` model as they are (``is_pretokenized``).
"""

from __future__ import annotations

import unicodedata
from functools import cache

DROP, SPACE, ALONE, APPEND = 0, 1, 2, 3
_WHITE = {
    0x09,
    0x0A,
    0x0B,
    0x0C,
    0x0D,
    0x20,
    0x85,
    0xA0,
    0x1680,
    0x2028,
    0x2029,
    0x202F,
    0x205F,
    0x3000,
    *range(0x2000, 0x200B),
}
_CJK = [
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B920, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
]  # llama.cpp's list (0x2B920: as in HF's Rust)


def _lower(c: str) -> str:
    low = c.lower()
    return low if len(low) == 1 else c if c != "\u0130" else "i"


@cache
def classify(c: str, lowercase: bool, strip_accents: bool) -> tuple[int, str]:
    """(what to do, text to emit) for one input character."""
    if strip_accents:
        c = unicodedata.normalize("NFD", c)[0]
    cpt = ord(c)
    if cpt in _WHITE:
        return SPACE, ""
    cat = unicodedata.category(c)
    if cpt == 0 or cpt == 0xFFFD or cat in ("Cc", "Cf", "Co", "Cs"):
        return DROP, ""
    if strip_accents and cat[0] == "M":
        return DROP, ""
    s = _lower(c) if lowercase else c
    if cat[0] == "P" or (cpt < 0x7F and cat[0] == "S") or any(a <= cpt <= b for a, b in _CJK):
        return ALONE, s
    return APPEND, s


def words(text: str, lowercase: bool, strip_accents: bool) -> list[str]:
    out, cur = [], []
    for ch in text:
        kind, s = classify(ch, lowercase, strip_accents)
        if kind == APPEND:
            cur.append(s)
        elif kind in (SPACE, ALONE):
            if cur:
                out.append("".join(cur))
                cur = []
            if kind == ALONE:
                out.append(s)
    if cur:
        out.append("".join(cur))
    return out
