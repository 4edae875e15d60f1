"""quantlab's tokenizer against llama.cpp's own tokenizer test suite (``tests/test-tokenizer-0.cpp``).

The vocabularies are ``vendor/llama.cpp/models/ggml-vocab-*.gguf`` of the llama-cpp-python 0.3.36 sdist that
``tools/build_llama_cpp.sh`` unpacks into ``.cache/llama-cpp-python`` (nothing of llama.cpp is committed).
Each ``.gguf.inp`` holds the texts, cut at ``\\n__ggml_vocab_test__\\n``; the matching line of ``.gguf.out``
the ids llama.cpp gives with ``add_special=false, parse_special=false``. Missing sdist: the tests fail under
``CI=true`` and are skipped otherwise.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import sys

import pytest

from quantlab.errors import ModelError
from quantlab.gguf import open as open_gguf
from quantlab.model import tokenizer as tkmod
from quantlab.model.tokenizer import Tokenizer
from quantlab.model.tokenizer.pretokenizers import NOT_MAPPED, PRE_NAMES, PRE_TYPES

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests/data/tokenizer_llama_cpp.json"
LLAMA_CPP = ROOT / ".cache/llama-cpp-python/llama_cpp_python-0.3.36/vendor/llama.cpp"
MODELS = LLAMA_CPP / "models"
SEP = "\n__ggml_vocab_test__\n"
# every vocabulary of the suite that has cases (15), as tools/make_tokenizer_fixtures.py recorded them;
# test_the_suite_has_these_vocabularies checks them against the directory
DATA = json.loads(FIXTURE.read_text(encoding="utf-8"))
VOCABS = list(DATA["vocabs"])


def need_sdist():
    if not (MODELS / "ggml-vocab-gpt-2.gguf").exists():
        msg = f"llama.cpp's vocabularies are missing ({MODELS}); `make test` unpacks them (tools/build_llama_cpp.sh)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)


_META = {}


def metadata(name):
    need_sdist()
    if name not in _META:
        _META[name] = open_gguf(MODELS / f"ggml-vocab-{name}.gguf").metadata
    return _META[name]


_TOK = {}


def tokenizer(name):
    if name not in _TOK:
        _TOK[name] = Tokenizer(metadata(name))
    return _TOK[name]


def edited(name, **changes):
    """The vocabulary's metadata with keys changed (value None: key removed)."""
    md = metadata(name).copy()
    for k, val in changes.items():
        key = "tokenizer.ggml." + k
        if val is None:
            md.pop(key, None)
        else:
            md[key] = val
    return md


def cases(name):
    """(text, ids) pairs exactly as read_tests() in test-tokenizer-0.cpp reads them."""
    raw = (MODELS / f"ggml-vocab-{name}.gguf.inp").read_bytes().decode("utf-8")
    outs = (MODELS / f"ggml-vocab-{name}.gguf.out").read_text(encoding="utf-8").split("\n")
    if outs and outs[-1] == "":
        outs.pop()  # std::getline: no line after the final newline
    texts, pos = [], 0
    while pos < len(raw):
        nxt = raw.find(SEP, pos)
        if nxt < 0:
            texts.append(raw[pos:])
            break
        texts.append(raw[pos:nxt])
        pos = nxt + len(SEP)
    assert len(texts) == len(outs), f"{name}: {len(texts)} inputs, {len(outs)} outputs"
    return [(t, [int(x) for x in o.strip().split()]) for t, o in zip(texts, outs)]


def test_the_suite_has_these_vocabularies():
    need_sdist()
    have = sorted(p.name[len("ggml-vocab-") : -len(".gguf.inp")] for p in MODELS.glob("ggml-vocab-*.gguf.inp"))
    assert have == VOCABS


@pytest.mark.parametrize("name", VOCABS)
def test_llama_cpp_vocab_cases(name):
    tk = tokenizer(name)
    cs = cases(name)
    assert len(cs) >= 46
    bad = []
    for text, want in cs:
        got = tk.tokenize(text, add_special=False, parse_special=False)
        if got != want:
            bad.append(f"{text!r}: got {got[:20]} want {want[:20]}")
    assert not bad, f"{name}: {len(bad)}/{len(cs)} cases differ from llama.cpp:\n" + "\n".join(bad[:10])


@pytest.mark.parametrize("name", [v for v in VOCABS if v != "bert-bge"])
def test_detokenize_round_trip_on_the_cases(name):
    """llama_detokenize(tokenize(text)) gives the text back where llama.cpp's rules keep it: not for the
    WordPiece vocabulary (it lower-cases and drops white space), nor where a BPE vocabulary's clean-up
    applies (" ," -> ",")."""
    tk = tokenizer(name)
    clean = re.compile(r" [?!.,']")
    n = 0
    for text, want in cases(name):
        if tk.vocab.clean_spaces and clean.search(text):
            continue
        assert tk.detokenize(want) == text, (name, text)
        n += 1
    assert n >= 30


@pytest.mark.parametrize("name", VOCABS)
def test_against_llama_tokenize(name):
    """Special tokens written in the text, BOS/EOS as llama-tokenize adds them (add_special = the model's
    add_bos, unless --no-bos), recorded from libllama by tools/make_tokenizer_fixtures.py; two of the strings
    are checked live against the llama-tokenize binary when it is built (`make peers`)."""
    tk = tokenizer(name)
    bad = []
    for r in DATA["vocabs"][name]:
        text = DATA["strings"][r["string"]]
        got = tk.tokenize(text, add_special=tk.add_bos and not r["no_bos"], parse_special=r["parse_special"])
        if got != r["ids"]:
            bad.append(f"{text!r} no_bos={r['no_bos']} parse_special={r['parse_special']}: {got} != {r['ids']}")
    assert not bad, "\n".join(bad[:8])
    sys.path.insert(0, str(ROOT / "tools"))
    import make_model_fixtures as fx

    if fx.have_tools("llama-tokenize") and name in ("gpt-2", "llama-spm", "bert-bge"):
        for text in DATA["strings"][2:4]:  # (a binary run per string: a few, on small vocabularies)
            for parse in (True, False):
                want = fx.llama_tokenize(MODELS / f"ggml-vocab-{name}.gguf", text, parse_special=parse)
                assert tk.tokenize(text, add_special=tk.add_bos, parse_special=parse) == want, (name, text, parse)


@pytest.mark.parametrize("name", VOCABS)
def test_vocab_settings_are_libllamas(name):
    """add_bos/add_eos/add_sep, the special ids, the end-of-generation set and every token's attributes
    (CONTROL given by text, UNUSED, Phi-3's RSTRIP ...) as libllama sets them up (fixture)."""
    want = DATA["settings"][name]
    tk = tokenizer(name)
    v = tk.vocab
    assert (tk.add_bos, tk.add_eos, tk.add_sep) == (want["add_bos"], want["add_eos"], want["add_sep"])
    for k, i in want["ids"].items():  # (eot by text: llama.cpp's hash-map order, our list order: same here)
        assert (v.ids[k] if v.ids[k] is not None else -1) == i, k
    assert sorted(v.eog) == want["eog"]
    attr = [4] * tk.n_vocab
    for first, last, a in want["attr_runs"]:
        attr[first : last + 1] = [a] * (last - first + 1)
    assert [int(a) for a in v.attr] == attr


def _pre_combos():
    """tokenizer.ggml.pre names grouped by what they change in tokenization (regexes, ignore_merges)."""
    groups = {}
    for name, pn in sorted(PRE_NAMES.items()):
        pre = PRE_TYPES[pn.type]
        groups.setdefault((pre.regexes, pre.byte_encode, pn.ignore_merges), []).append(name)
    return list(groups.values())


@pytest.mark.parametrize("names", _pre_combos(), ids=lambda names: names[0])
def test_every_pre_tokenizer_name_against_libllama(names):
    """Each of the 85 tokenizer.ggml.pre names, written into the gpt-2 vocabulary (gemma-4's for the
    SPM-style ones), tokenizes the suite's inputs + 150 random strings as libllama does (fixture: one sha256
    of the ids per name); names that share regexes and ignore_merges are computed once."""
    import hashlib

    want = DATA["pre_tokenizers"]
    src = want[names[0]]["vocab"]
    tk = Tokenizer(edited(src, pre=names[0], model="gpt2"))
    ids = [tk.tokenize(s, add_special=False, parse_special=False) for s in DATA["pre_strings"]]
    got = hashlib.sha256(json.dumps(ids).encode()).hexdigest()
    for name in names:
        assert want[name]["vocab"] == src and want[name]["sha256"] == got, name


def test_every_pre_tokenizer_name_is_tested():
    assert sorted(DATA["pre_tokenizers"]) == sorted(PRE_NAMES)


def test_llama3_ignore_merges_and_bos_default():
    """Llama 3: a piece that is a token is kept whole (ignore_merges), and BOS is added although the file
    has no tokenizer.ggml.add_bos_token (llama.cpp's default for the llama-bpe pre-tokenizer)."""
    tk = tokenizer("llama-bpe")
    assert "tokenizer.ggml.add_bos_token" not in metadata("llama-bpe")
    assert tk.tokenize("Cửa Việt", add_special=False) == [34, 91163, 101798]
    assert tk.tokenize("Cửa Việt") == [128000, 34, 91163, 101798]
    no_bos = Tokenizer(edited("llama-bpe", add_bos_token=False))
    assert no_bos.tokenize("Cửa Việt") == [34, 91163, 101798]


def suite_ids(name, text):
    """llama.cpp's ids for ``text`` (add_special=false) from the vocabulary's .out file."""
    return dict(cases(name))[text]


@pytest.mark.parametrize(
    "name, before, after",
    [
        ("llama-spm", [1], []),  # SPM: BOS (1) by default
        ("phi-3", [1], []),
        ("gpt-2", [], []),  # BPE: nothing unless the file or the pre-tokenizer asks
        ("qwen2", [], []),
        ("command-r", [5], []),  # add_bos_token = true in the file
        ("llama-bpe", [128000], []),  # no key: the llama-bpe default
        ("bert-bge", [101], [102]),  # WPM: CLS ... SEP always
        ("gemma-4", [2], []),  # Gemma 4: BOS always
    ],
)
def test_bos_eos_as_llama_cpp_adds_them(name, before, after):
    hello = suite_ids(name, "Hello world")
    assert tokenizer(name).tokenize("Hello world") == before + hello + after
    assert tokenizer(name).tokenize("Hello world", add_special=False) == hello


def test_bos_eos_keys_and_defaults():
    # SPM without any key: BOS 1 added, EOS 2 not
    spm = Tokenizer(edited("llama-spm", add_bos_token=None, add_eos_token=None, bos_token_id=None, eos_token_id=None))
    assert (spm.add_bos, spm.add_eos, spm.bos_id, spm.eos_id) == (True, False, 1, 2)
    hello = suite_ids("llama-spm", "Hello")
    assert spm.tokenize("Hello") == [1] + hello
    eos = Tokenizer(edited("llama-spm", add_eos_token=True))
    assert eos.tokenize("Hello") == [1] + hello + [2]
    off = Tokenizer(edited("llama-spm", add_bos_token=False))
    assert off.tokenize("Hello") == hello
    # BPE: BOS = EOS = 11 by default when no id key; an out-of-range key keeps the default
    bpe = Tokenizer(edited("gpt-2", bos_token_id=None, eos_token_id=None, add_bos_token=True))
    assert bpe.bos_id == 11 and bpe.tokenize("Hello") == [11] + suite_ids("gpt-2", "Hello")
    bad = Tokenizer(edited("gpt-2", bos_token_id=10**6, add_bos_token=True))
    assert bad.bos_id == 11
    # Gemma 4 adds BOS even when the file says not to (llama.cpp's override)
    assert Tokenizer(edited("gemma-4", add_bos_token=False)).tokenize("Hello") == [2] + suite_ids("gemma-4", "Hello")


def test_end_of_generation_tokens():
    l3 = tokenizer("llama-bpe")
    eot = l3.vocab.token_to_id["<|eot_id|>"]
    assert l3.is_eog(128001) and l3.is_eog(eot) and not l3.is_eog(128000)
    q = tokenizer("qwen2")
    assert q.is_eog(q.vocab.token_to_id["<|im_end|>"]) and q.is_eog(151643)
    g = tokenizer("gemma-4")
    assert g.is_eog(1) and g.is_eog(g.vocab.token_to_id["<turn|>"])


def test_special_tokens_parsed_and_stripped():
    # parse_special: control tokens in the text become tokens; without it only user-defined ones
    q = tokenizer("qwen2")
    im_start = q.vocab.token_to_id["<|im_start|>"]
    assert q.tokenize("<|im_start|>user", add_special=False)[0] == im_start
    assert im_start not in q.tokenize("<|im_start|>user", add_special=False, parse_special=False)
    # Phi-3 (general.name "Phi3"): special tokens eat the white space on their right (RSTRIP)
    p = tokenizer("phi-3")
    user = p.vocab.token_to_id["<|user|>"]
    assert p.tokenize("<|user|>\nHello", add_special=False) == [user] + suite_ids("phi-3", "Hello")
    # SPM: the text after a special token gets the leading space again
    s = tokenizer("llama-spm")
    assert s.tokenize("</s>Hello", add_special=False) == [2] + suite_ids("llama-spm", "Hello")


def test_detokenize_rules():
    s = tokenizer("llama-spm")
    hello = suite_ids("llama-spm", "Hello")  # [▁Hello]
    assert s.detokenize(hello) == "Hello"  # the first piece's leading space is dropped
    assert s.detokenize([1] + hello) == "<s> Hello"  # ... only the very first token's
    assert s.detokenize([1] + hello, remove_special=True) == " Hello"
    assert s.detokenize([1] + hello, special=False) == " Hello"
    g = tokenizer("gpt-2")  # clean_spaces: " ," " !" " 's" lose the space
    assert g.detokenize(g.tokenize("Hello , world ! it 's")) == "Hello, world! it's"
    q = tokenizer("qwen2")  # qwen2: no clean-up
    assert q.detokenize(q.tokenize("Hello , world !")) == "Hello , world !"
    assert s.detokenize(s.tokenize("🦙 x", add_special=False)) == "🦙 x"  # <0xXX> byte tokens


@pytest.mark.parametrize("name", ["llama-spm", "gpt-2", "gemma-4"])
def test_long_text_segments_change_nothing(name, monkeypatch):
    import quantlab.data

    text = quantlab.data.text()[:200_000]
    tk = tokenizer(name)
    cut = tk.tokenize(text, parse_special=False)
    monkeypatch.setattr(tkmod, "SEGMENT", 1 << 30)
    assert tk.tokenize(text, parse_special=False) == cut


def test_describe():
    assert tokenizer("llama-bpe").describe() == (
        "byte-level BPE, pre-tokenizer 'llama-bpe', whole-word tokens kept "
        "(ignore_merges); 128256 tokens (256 special); adds BOS "
        "'<|begin_of_text|>'"
    )
    assert tokenizer("llama-spm").describe() == (
        "SentencePiece BPE (tokenizer.ggml.model 'llama'); 32000 tokens "
        "(3 special); adds BOS '<s>'; a space before the text"
    )
    assert "adds BOS '[CLS]' and SEP '[SEP]'" in tokenizer("bert-bge").describe()
    assert tokenizer("gpt-2").describe().endswith("adds nothing")


def test_refusals_name_what_is_supported():
    need_sdist()
    with pytest.raises(ModelError, match=r"tokenizer model 't5'.*UGM.*'llama'.*'gpt2'"):
        Tokenizer(open_gguf(MODELS / "ggml-vocab-nomic-bert-moe.gguf").metadata)
    with pytest.raises(ModelError, match=r"pre-tokenizer 'nonesuch'.*llama-bpe"):
        Tokenizer(edited("gpt-2", pre="nonesuch"))
    with pytest.raises(ModelError, match=r"pre-tokenizer 'kimi-k2'.*hand-written"):
        Tokenizer(edited("gpt-2", pre="kimi-k2"))
    with pytest.raises(ModelError, match=r"lone surrogate"):
        tokenizer("gpt-2").tokenize("a\ud800b")


def _cpp_pre_regexes(src: str) -> dict:
    """LLAMA_VOCAB_PRE_TYPE_* -> (regex strings, byte_encode) as llm_tokenizer_bpe's constructor lists them."""
    body = src[src.index("struct llm_tokenizer_bpe : llm_tokenizer {") :]
    body = body[: body.index("std::vector<std::string> regex_exprs;")]
    out, pending = {}, []
    unescape = {"n": "\n", "r": "\r", "t": "\t"}
    for block in re.split(r"\n\s*(?=case LLAMA_VOCAB_PRE_TYPE_|default:)", body):
        names = (
            ["DEFAULT"]
            if block.lstrip().startswith("default:")
            else re.findall(r"case LLAMA_VOCAB_PRE_TYPE_(\w+):", block)
        )
        if "regex_exprs" not in block:
            pending += names
            continue
        code = "\n".join(ln for ln in block.split("\n") if not ln.strip().startswith("//"))
        code = code[code.index("regex_exprs = {") : code.index("};")]
        rx = tuple(
            re.sub(r"\\(.)", lambda m: unescape.get(m.group(1), m.group(1)), lit)
            for lit in re.findall(r'"((?:[^"\\]|\\.)*)"', code)
        )
        for n in pending + names:
            out[n] = (rx, "byte_encode = false" not in block)
        pending = []
    return out


def test_pre_tokenizer_registry_is_llama_cpps():
    """Every pre-tokenizer type's regexes are llama.cpp's strings, and every tokenizer.ggml.pre name
    llama.cpp knows is mapped or refused by name."""
    need_sdist()
    src = (LLAMA_CPP / "src/llama-vocab.cpp").read_text(encoding="utf-8")
    cpp = _cpp_pre_regexes(src)
    for name, pre in PRE_TYPES.items():
        assert cpp[name] == (pre.regexes, pre.byte_encode), name
    unmapped = set(cpp) - set(PRE_TYPES)
    assert unmapped == {"TINY_AYA", "KIMI_K2", "SUPERBPE", "AFMOE", "WHITESPACE"}
    load = src[src.index("void llama_vocab::impl::load(") :]
    load = load[load.index('tokenizer_pre == "default"') : load.index("unknown pre-tokenizer type")]
    names = set(re.findall(r'tokenizer_pre == "([^"]+)"', load))
    assert names == set(PRE_NAMES) | set(NOT_MAPPED)
