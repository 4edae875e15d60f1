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
* **WPM** (``bert``): the words cut by :mod:`.wpm` (llama.cpp's normalisation, not HF's), then greedy
  longest-match word pieces (``WordPiece``) where llama.cpp's ``▁word`` is HF's ``word`` and any token
  ``piece`` HF's ``##piece``.
"""

from __future__ import annotations

import numpy as np

from .pretokenizers import onig
from .vocab import BPE, SPM, Vocab

DROPPED = "<quantlab: a byte without a token>"


def _bpe_model(vocab: dict, pairs: list, **kw):
    # HF tokenizers (~20 ms): only when a model's tokenizer is built
    from tokenizers import models

    try:
        return models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, **kw)
    except Exception:  # noqa: BLE001 - tokenizers raises a bare Exception. HF refuses a merge whose halves or result are not tokens (llama.cpp would merge and
        # then spell the non-token out byte by byte); such merges are left out - no vocabulary of the suite has one
        keep = [(a, b) for a, b in pairs if a in vocab and b in vocab and a + b in vocab]
        return models.BPE(vocab=vocab, merges=keep, fuse_unk=False, **kw)


def merge_pairs(merges: list) -> list:
    """``tokenizer.ggml.merges`` entries "a b" split at the first space after the first character."""
    out = []
    for m in merges:
        k = m.find(" ", 1)
        out.append((m[:k], m[k + 1 :]) if k > 0 else ("", ""))
    return out


def spm_merges(v: Vocab) -> list:
    """Every pair of tokens whose concatenation is a token, best score of the result first (ties by id)."""
    t2i = v.token_to_id
    ids, cuts = [], []
    for t, i in t2i.items():
        for k in range(1, len(t)):
            if t[k:] in t2i and t[:k] in t2i:
                ids.append(i)
                cuts.append(k)
    ids, cuts = np.asarray(ids, dtype=np.int64), np.asarray(cuts, dtype=np.int64)
    score = v.scores[ids] if v.scores is not None else np.zeros(len(ids), dtype=np.float32)
    order = np.lexsort((cuts, ids, -score))
    toks = v.tokens
    return [(toks[i][:k], toks[i][k:]) for i, k in zip(ids[order].tolist(), cuts[order].tolist())]


def build(v: Vocab):
    """The HF tokenizer for one raw-text piece of this vocabulary."""
    # HF tokenizers (~20 ms): only when a model's tokenizer is built
    from tokenizers import Regex, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    if v.kind == BPE:
        pairs = merge_pairs(v.merges)
        if v.pre.byte_encode:
            # a byte with no token stays in llama.cpp's symbol list (blocking merges across it) and is dropped
            # at the end; HF would drop it first, so it becomes an UNK with an id past the vocabulary that
            # the caller removes (DROPPED)
            vocab = dict(v.token_to_id)
            vocab[DROPPED] = len(v.tokens)
            tk = HFTokenizer(_bpe_model(vocab, pairs, ignore_merges=v.ignore_merges, unk_token=DROPPED))
            steps = [pre_tokenizers.Split(Regex(onig(rx)), behavior="isolated") for rx in v.pre.regexes]
            steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False))
            tk.pre_tokenizer = pre_tokenizers.Sequence(steps)
        else:  # Gemma 4: the caller cuts newline runs and writes spaces as ▁
            tk = HFTokenizer(_bpe_model(v.token_to_id, pairs, byte_fallback=True, ignore_merges=v.ignore_merges))
        return tk
    if v.kind == SPM:
        unk = v.ids.get("unk")
        kw = {"unk_token": v.tokens[unk]} if unk is not None else {}
        return HFTokenizer(_bpe_model(v.token_to_id, spm_merges(v), byte_fallback=True, **kw))
    # WPM
    # llama.cpp matches in "▁" + word: at the start only "▁..." tokens fit (HF: the bare word); later any
    # token, "▁..." ones too when the word itself holds a "▁" (HF: "##" + the token as written)
    wp = {"##" + t: i for t, i in v.token_to_id.items()}
    wp.update({t[1:]: i for t, i in v.token_to_id.items() if t.startswith("▁") and len(t) > 1})
    unk = v.ids.get("unk")
    unk_text = next((k for k, i in wp.items() if i == unk), "[UNK]") if unk is not None else "[UNK]"
    return HFTokenizer(
        models.WordPiece(vocab=wp, unk_token=unk_text, continuing_subword_prefix="##", max_input_chars_per_word=1 << 30)
    )
