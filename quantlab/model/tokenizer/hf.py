"""The HF ``tokenizers`` pipelines that encode one piece of raw text (special tokens already cut out) as
llama.cpp's ``llm_tokenizer_{bpe,spm,wpm}_session::tokenize`` does.

* **BPE** (``gpt2``): llama.cpp's regexes as ``Split(isolated)`` steps, GPT-2's byte-to-character table
  (``ByteLevel``), merges ranked by their position in ``tokenizer.ggml.merges``; ``ignore_merges`` keeps a
  piece that is itself a token whole (Llama 3). Gemma 4 is BPE on raw UTF-8 with ``<0xXX>`` byte tokens
  (``byte_fallback``), its pieces cut by the caller.
* **SPM** (``llama``): llama.cpp merges adjacent symbols (UTF-8 characters, spaces written ``▁``) whose
  concatenation is a token, highest ``tokenizer.ggml.scores`` first, leftmost on ties; characters left
  unmerged that are not tokens become ``<0xXX>`` byte tokens. That is HF's ``BPE`` with ``byte_fallback``
  given every pair (a, b) whose halves and concatenation are tokens, ranked by the concatenation's score
  (:func:`spm_merges`). The one difference: HF ranks two pairs making tokens *of equal score* by rank,
  llama.cpp by position; Llama's vocabulary has equal scores only for its 16 runs of ``▁`` (score -1e9),
  which the tests cover.
* **WPM** (``bert``): lower-casing, accent stripping, splitting at white space / punctuation / CJK
  characters (``BertNormalizer`` + ``BertPreTokenizer``), then greedy longest-match word pieces where
  llama.cpp's ``▁word`` is HF's ``word`` and its bare ``piece`` HF's ``##piece``.
"""
from __future__ import annotations

from .pretokenizers import onig
from .vocab import BPE, SPM, Vocab


def _bpe_model(vocab: dict, pairs: list, **kw):
    from tokenizers import models
    try:
        return models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, **kw)
    except Exception:   # a merge naming a string that is not a token: llama.cpp never forms it either
        keep = [(a, b) for a, b in pairs if a in vocab and b in vocab and a + b in vocab]
        return models.BPE(vocab=vocab, merges=keep, fuse_unk=False, **kw)


def merge_pairs(merges: list) -> list:
    """``tokenizer.ggml.merges`` entries "a b" split at the first space after the first character."""
    out = []
    for m in merges:
        k = m.find(" ", 1)
        out.append((m[:k], m[k + 1:]) if k > 0 else ("", ""))
    return out


def spm_merges(v: Vocab) -> list:
    """Every pair of tokens whose concatenation is a token, best score of the result first (ties by id)."""
    t2i, scores = v.token_to_id, v.scores
    cand = []
    for t, i in t2i.items():
        if len(t) < 2:
            continue
        s = float(scores[i]) if scores is not None else 0.0
        for k in range(1, len(t)):
            a, b = t[:k], t[k:]
            if a in t2i and b in t2i:
                cand.append((-s, i, k, a, b))
    cand.sort()
    return [(a, b) for _, _, _, a, b in cand]


def build(v: Vocab):
    """The HF tokenizer for one raw-text piece of this vocabulary."""
    from tokenizers import Regex, models, normalizers, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    if v.kind == BPE:
        pairs = merge_pairs(v.merges)
        if v.pre.byte_encode:
            tk = HFTokenizer(_bpe_model(v.token_to_id, pairs, ignore_merges=v.ignore_merges))
            steps = [pre_tokenizers.Split(Regex(onig(rx)), behavior="isolated") for rx in v.pre.regexes]
            steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False))
            tk.pre_tokenizer = pre_tokenizers.Sequence(steps)
        else:   # Gemma 4: the caller cuts newline runs and writes spaces as ▁
            tk = HFTokenizer(_bpe_model(v.token_to_id, pairs, byte_fallback=True, ignore_merges=v.ignore_merges))
        return tk
    if v.kind == SPM:
        unk = v.ids.get("unk")
        kw = {"unk_token": v.tokens[unk]} if unk is not None else {}
        return HFTokenizer(_bpe_model(v.token_to_id, spm_merges(v), byte_fallback=True, **kw))
    # WPM
    wp = {}
    for t, i in v.token_to_id.items():
        wp[t[1:] if t.startswith("▁") else "##" + t] = i
    unk = v.ids.get("unk")
    unk_text = next((k for k, i in wp.items() if i == unk), "[UNK]") if unk is not None else "[UNK]"
    tk = HFTokenizer(models.WordPiece(vocab=wp, unk_token=unk_text, continuing_subword_prefix="##",
                                      max_input_chars_per_word=1 << 30))
    tk.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                               strip_accents=v.strip_accents, lowercase=v.lowercase)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tk
