"""The hardening contract, checked on a seeded generator of bad input (issue 18, "close the class").

Four surfaces: malformed and hostile GGUF files, API arguments, CLI arguments and signals, model
metadata. For every case the outcome must be a correct result or a named quantlab error, and never:
another exception, a crash, more than 2 s of CPU (or a hang: 60 s of wall time), more memory than the
budget (RLIMIT_AS at the address-space size before the case + 2 x the file's size + 64 MB), a partial
file left next to an output, or an existing output changed by a run that failed.

All cases run in one child process (a crash or a hang kills only the child; the parent starts a new one
after the case that did it), generated from ``SEED`` (about 2,300 cases, well under a minute). Cases
whose fix lands on another branch carry a ``cause``; they are left out of the surface tests and checked
by one ``xfail(strict=True)`` test per cause: when the fix is merged, that test passes and the strict
xfail fails, which says to drop the mark.

``python -m tests.test_contract`` prints the table of surfaces x outcomes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import traceback
import warnings
import zlib
from collections import Counter

import numpy as np
import pytest

from .conftest import default_signals
from .gguf_build import small_gguf

SEED = 20261207
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MB = 1 << 20
CPU_LIMIT = 2.0
WALL_LIMIT = 60.0

# cause -> (who fixes it, what). Cases tagged with a cause are checked by test_fixed_elsewhere[cause].
ELSEWHERE: dict[str, str] = {}


# ============================================================================ the cases


def _rng(*k):
    return np.random.default_rng([SEED, *k])


def _base_gguf(path):
    return small_gguf(path, repeats=4, k_quant=True)


def _gguf_cases(work):
    """Byte-level mutations of a small valid file, hostile counts, and hand-made structures."""
    base = _base_gguf(os.path.join(work, "base.gguf"))
    rng = _rng(1)
    out = []

    def add(kind, b):
        p = os.path.join(work, f"g{len(out):04d}.gguf")
        with open(p, "wb") as fh:
            fh.write(b)
        out.append({"surface": "gguf", "kind": kind, "path": p})

    n = len(base)
    for _ in range(300):  # overwrite 1-8 bytes
        b = bytearray(base)
        at = int(rng.integers(0, n))
        k = int(rng.integers(1, 9))
        b[at : at + k] = rng.integers(0, 256, min(k, n - at), dtype=np.uint8).tobytes()
        add("overwrite", bytes(b))
    for _ in range(150):  # an interesting value in a length/count field
        b = bytearray(base)
        at = int(rng.integers(0, n - 8))
        vals = [0, 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 1 << 16, (1 << 16) + 1, n, n + 1, 10**9]
        v = vals[int(rng.integers(len(vals)))]
        b[at : at + 8] = struct.pack("<Q", v)
        add("field", bytes(b))
    for _ in range(100):  # truncated
        add("truncate", base[: int(rng.integers(0, n))])
    for i in range(100):  # inserted / deleted bytes
        at = int(rng.integers(0, n))
        k = int(rng.integers(1, 40))
        if i % 2:
            add("insert", base[:at] + rng.integers(0, 256, k, dtype=np.uint8).tobytes() + base[at:])
        else:
            add("delete", base[:at] + base[at + k :])
    # hostile but well formed: counts at and past the limits, nesting, long strings, many strings
    from quantlab.gguf.reader import MAX_RECORDS, MAX_TENSORS

    def head(nt, nkv):
        return b"GGUF" + struct.pack("<IQQ", 3, nt, nkv)

    def kvpair(key, t, payload):
        kb = key.encode()
        return struct.pack("<Q", len(kb)) + kb + struct.pack("<I", t) + payload

    for n_in in (10, 1000, MAX_RECORDS - 1, MAX_RECORDS, 200_000):
        add("hostile", head(0, 1) + kvpair("x", 9, struct.pack("<IQ", 9, n_in) + struct.pack("<IQ", 4, 0) * n_in))
    for nkv in (MAX_RECORDS, MAX_RECORDS + 1, 300_000):
        add("hostile", head(0, nkv) + kvpair("k", 0, b"\x01") * nkv)
    for nt in (1000, MAX_TENSORS + 1, 300_000):
        rec = b"".join(struct.pack("<Q", 8) + b"t%07d" % i + struct.pack("<IQIQ", 1, 0, 0, 0) for i in range(nt))
        body = head(nt, 0) + rec
        add("hostile", body + bytes((-len(body)) % 32))
    for depth in (15, 16, 17, 1000):
        add("hostile", head(0, 1) + kvpair("d", 9, struct.pack("<IQ", 9, 1) * depth + struct.pack("<IQ", 4, 0)))
    for k in (0, 1, 7, 8, 9):
        s = [b"", b"\x00" * k, b"x" * k]
        items = b"".join(struct.pack("<Q", len(x)) + x for x in s * 20000)
        add("hostile", head(0, 1) + kvpair("s", 9, struct.pack("<IQ", 8, 60000) + items))
    add("hostile", head(0, 1) + kvpair("e", 9, struct.pack("<IQ", 8, 400_000) + bytes(8 * 400_000)))
    add("hostile", head(0, 1) + kvpair("long", 8, struct.pack("<Q", 3 << 20) + b"a" * (3 << 20)))
    return out


def _api_cases():
    """quantize / dequantize / inspect_block / row_bytes with good and bad arguments of every kind."""
    rng = _rng(2)
    fast_fmts = ["F16", "Q8_0", "Q4_0", "Q4_K", "IQ4_NL"]
    names = [f.name for f in __import__("quantlab").all_formats()]
    fmts = (
        names
        + fast_fmts * 4
        + [
            "q4_k",
            " Q8_0 ",
            "Q9_9",
            "",
            "Q4_2",
            "Q4_0_4_4",
            2.9,
            True,
            None,
            8,
            4,
            31,
            43,
            -1,
            10**20,
            b"Q8_0",
            ["Q8_0"],
            "F32\x00",
        ]
    )
    xs = [
        "ok32",
        "ok256",
        "ok512x3",
        "nan",
        "inf",
        "big1e5",
        "big1e9",
        "big1e30",
        "tiny",
        "zeros",
        "int",
        "bool",
        "str",
        "ragged",
        "scalar",
        "empty_rows",
        "empty_cols",
        "odd33",
        "f64",
        "f16",
        "obj",
        "3d",
        "noncontig",
        "list",
    ]
    ims = ["none", "none", "ones", "short", "nan", "neg", "str", "2d", "zeros"]
    impls = ["reference", "reference", "fast", "turbo", None]
    threads = [None, None, 1, 2, 0, -1, 2.5, "2", True]
    out = []
    for _ in range(800):
        op = rng.choice(["quantize"] * 6 + ["dequantize"] * 2 + ["inspect", "row_bytes"])
        fmt = fmts[int(rng.integers(len(fmts)))]
        impl = impls[int(rng.integers(len(impls)))]
        if impl == "fast" and fmt not in fast_fmts:
            impl = "reference"
        x = xs[int(rng.integers(len(xs)))]
        if impl != "fast" and x in ("ok512x3", "3d"):
            x = "ok256"  # the numpy reference is for reading, not speed
        out.append(
            {
                "surface": "api",
                "kind": op,
                "op": op,
                "fmt": fmt if not isinstance(fmt, bytes) else {"bytes": fmt.decode()},
                "x": x,
                "im": ims[int(rng.integers(len(ims)))],
                "impl": impl,
                "threads": threads[int(rng.integers(len(threads)))],
                "i": int(rng.integers(-3, 5)),
                "n": int(rng.choice([0, 32, 256, 33, -32])),
            }
        )
    return out


def _tiny_model(path, md_extra=None, drop=(), dtype=np.float32):
    import quantlab.gguf as qg

    md = {
        "general.architecture": "llama",
        "general.name": "tiny",
        "llama.block_count": 2,
        "llama.embedding_length": 64,
        "llama.attention.head_count": 4,
        "llama.attention.head_count_kv": 2,
        "llama.feed_forward_length": 128,
        "llama.context_length": 64,
        "llama.attention.layer_norm_rms_epsilon": 1e-5,
        "general.file_type": 0,
    }
    md.update(md_extra or {})
    for k in drop:
        md.pop(k, None)
    rng = np.random.default_rng(3)
    ts = {
        "token_embd.weight": rng.standard_normal((16, 64)).astype(dtype) * 0.1,
        "output_norm.weight": np.ones(64, np.float32),
    }
    for i in range(2):
        for nm, shp in (
            ("attn_q", (64, 64)),
            ("attn_k", (32, 64)),
            ("attn_v", (32, 64)),
            ("attn_output", (64, 64)),
            ("ffn_gate", (128, 64)),
            ("ffn_up", (128, 64)),
            ("ffn_down", (64, 128)),
        ):
            ts[f"blk.{i}.{nm}.weight"] = (rng.standard_normal(shp) * 0.05).astype(dtype)
        ts[f"blk.{i}.attn_norm.weight"] = np.ones(64, np.float32)
        ts[f"blk.{i}.ffn_norm.weight"] = np.ones(64, np.float32)
    qg.write(path, md, ts)


_BAD_VALUES = [
    "abc",
    "",
    2.0,
    2.5,
    float("nan"),
    float("inf"),
    -1,
    0,
    1,
    2,
    3,
    4,
    80,
    2**40,
    True,
    [2, 2],
    [4, 4],
    [4],
    [],
    [1.5, 2],
    ["a", "b"],
    "arr_u32",
    "arr_i64",
    "arr_f32",
    "arr_2d",
]
_HPARAMS = [
    "block_count",
    "attention.head_count",
    "attention.head_count_kv",
    "expert_count",
    "embedding_length",
    "feed_forward_length",
    "attention.layer_norm_rms_epsilon",
    "rope.dimension_count",
    "attention.key_length",
    "context_length",
    "rope.freq_base",
]


def _value(v):
    if v == "arr_u32":
        return np.array([4, 2], np.uint32)
    if v == "arr_i64":
        return np.array([4, 2], np.int64)
    if v == "arr_f32":
        return np.array([4.0, 2.0], np.float32)
    if v == "arr_2d":
        return np.ones((2, 2), np.int32)
    return v


def _metadata_cases(work):
    """Model hyper-parameters of every wrong kind: recipes' ModelInfo (and a whole quantize through it on a
    tiny GGUF), and the model runtime's Config."""
    rng = _rng(3)
    out = []
    for i in range(260):
        md = {"general.architecture": "llama", "llama.block_count": 2, "llama.attention.head_count": 4}
        for _ in range(int(rng.integers(1, 3))):
            md[f"llama.{_HPARAMS[int(rng.integers(4))]}"] = _BAD_VALUES[int(rng.integers(len(_BAD_VALUES)))]
        if i % 13 == 0:
            md["general.architecture"] = _BAD_VALUES[int(rng.integers(len(_BAD_VALUES)))]
        out.append({"surface": "metadata", "kind": "ModelInfo", "md": md})
    for i in range(60):  # end to end: quantize a tiny model with that metadata
        key = _HPARAMS[int(rng.integers(4))]
        v = _BAD_VALUES[int(rng.integers(len(_BAD_VALUES)))]
        if isinstance(v, str) and v.startswith("arr_"):
            v = [4, 2]
        out.append(
            {
                "surface": "metadata",
                "kind": "quantize_model",
                "key": f"llama.{key}",
                "v": v,
                "ftype": str(rng.choice(["Q8_0", "Q4_0", "Q4_K_M"])),
                "dir": os.path.join(work, f"m{i}"),
            }
        )
    for _ in range(160):
        md = {
            "general.architecture": "llama",
            "llama.block_count": 2,
            "llama.embedding_length": 64,
            "llama.attention.head_count": 4,
            "llama.attention.head_count_kv": 2,
            "llama.feed_forward_length": 128,
            "llama.attention.layer_norm_rms_epsilon": 1e-5,
        }
        for _ in range(int(rng.integers(1, 3))):
            md[f"llama.{_HPARAMS[int(rng.integers(len(_HPARAMS)))]}"] = _BAD_VALUES[int(rng.integers(len(_BAD_VALUES)))]
        out.append({"surface": "metadata", "kind": "Config", "md": md, "cause": "arch-3-config"})
    return out


def _cli_cases(work, gguf_cases):
    """quantlab's commands with bad arguments and files (in the child process, through cli.main)."""
    rng = _rng(4)
    tiny = os.path.join(work, "tiny.gguf")
    _tiny_model(tiny)
    d = os.path.join(work, "cli")
    os.makedirs(d, exist_ok=True)
    esc = os.path.join(work, "escapes.gguf")
    bad_utf8 = os.path.join(work, "badutf8.gguf")
    _write_named(esc, "k\x1b]0;pwned\x07\x1b[2J", "v\x1b[31m")
    _write_named(bad_utf8, "k\udcff", "v\udcfe")
    fifo = os.path.join(work, "fifo.gguf")
    if not os.path.exists(fifo):
        os.mkfifo(fifo)
    txt_bad = os.path.join(work, "bad.txt")
    with open(txt_bad, "wb") as fh:
        fh.write(b"ok \xff\xfe bad")
    out = []

    def add(argv, cause=None, keep=None, kind=None, stdout_strict=False):
        out.append(
            {
                "surface": "cli",
                "kind": kind or argv[0],
                "argv": argv,
                "cause": cause,
                "keep": keep,
                "strict": stdout_strict,
            }
        )

    for c in gguf_cases[::6]:  # inspect every 6th malformed file, two ways
        cause = "surface-4-inspect-output" if _has_nonprintables(c["path"]) else None
        add(["inspect", c["path"]], cause=cause)
        add(["inspect", "--json", c["path"]], cause=cause)
    add(["inspect", tiny])
    add(["inspect", os.path.join(work, "missing.gguf")])
    add(["inspect", work])  # a directory
    for p in (esc, bad_utf8):
        for extra in ([], ["--json"]):
            add(["inspect", *extra, p], cause="surface-4-inspect-output", kind="inspect-escapes")
            add(["inspect", *extra, p], cause="surface-4-inspect-output", kind="inspect-escapes", stdout_strict=True)
    out.append(
        {
            "surface": "cli",
            "kind": "inspect-fifo",
            "argv": ["inspect", fifo],
            "cause": "surface-9-cli-minor",
            "keep": None,
            "strict": False,
            "subprocess": True,
        }
    )
    ftypes = ["Q8_0", "Q4_0", "q4_k_m", "Q9_K", "", "7", "1000", "-1", "COPY", "IQ2_XXS", "F16"]
    for i in range(120):
        ft = ftypes[int(rng.integers(len(ftypes)))]
        o = os.path.join(d, f"o{i}.gguf")
        argv = ["quantize", "--no-progress"]
        r = int(rng.integers(10))
        if r == 0:
            argv += ["--imatrix", os.path.join(work, "missing.dat")]
        elif r == 1:
            argv += ["--tensor-type", str(rng.choice(["attn_q=q8_0", "=q8_0", "attn_q=", "([=q8_0", "x=Q99"]))]
        elif r == 2:
            argv += ["--output-tensor-type", str(rng.choice(["q8_0", "nope", "2.5"]))]
        inp = (
            tiny
            if rng.random() < 0.7
            else str(
                rng.choice(
                    [os.path.join(work, "missing.gguf"), work, gguf_cases[int(rng.integers(len(gguf_cases)))]["path"]]
                )
            )
        )
        outp = o if rng.random() < 0.85 else str(rng.choice([os.path.join(work, "nodir", "o.gguf"), d, tiny]))
        argv += [inp, outp, ft]
        if rng.random() < 0.2:
            argv.append(str(rng.choice(["1", "0", "-2", "x", "2.5"])))
        add(argv, keep=outp if outp == o and i % 2 else None)
    add(
        ["quantize", "--no-progress", "--imatrix", work, tiny, os.path.join(d, "im.gguf"), "Q4_K_M"],
        cause="surface-7-cli-oserrors",
        kind="quantize-imatrix-dir",
    )
    add(
        ["quantize", "--dry-run", tiny, os.path.join(d, "dry.gguf"), "IQ2_XXS"],
        cause="surface-9-cli-minor",
        kind="dry-run-imatrix",
    )
    try:
        from quantlab import data

        smol = str(data.path("smollm2"))
        for t in (os.path.join(work, "missing.txt"), txt_bad, work):
            out.append(
                {
                    "surface": "cli",
                    "kind": "eval-text",
                    "argv": ["eval", smol, "--text", t, "--chunks", "1", "-c", "64"],
                    "cause": "surface-7-cli-oserrors",
                    "keep": None,
                    "strict": False,
                    "path": smol,
                }
            )
    except Exception:  # noqa: BLE001 - the model is not installed: no such cases
        pass
    for extra in ([], ["--no-such-flag"], ["formats", "--bogus"]):
        add(["quantize", *extra] if extra != ["formats", "--bogus"] else extra, kind="usage")
    add(["formats"])
    add(["nosuchcommand"], kind="usage")
    return out


def _has_nonprintables(path) -> bool:
    """Whether a file that opens holds a key, a string or a tensor name with control characters or
    invalid UTF-8 (what `quantlab inspect` must escape)."""
    import quantlab.gguf as qg
    from quantlab.errors import GGUFError

    def bad(s):
        return isinstance(s, str) and any(ord(ch) < 32 or ord(ch) == 127 or 0xDC80 <= ord(ch) <= 0xDCFF for ch in s)

    try:
        with qg.open(path) as f:
            for k in f.metadata:
                v = f.metadata[k]
                if bad(k) or bad(v) or (isinstance(v, tuple) and any(bad(x) for x in v)):
                    return True
            return any(bad(n) for n in f.tensors)
    except GGUFError:
        return False


def _write_named(path, key, value):
    import quantlab.gguf as qg

    qg.write(path, {"general.architecture": "llama", key: value}, {"t\x1b[1m\udcff": np.ones(32, np.float32)})


def _signal_cases(work):
    return [
        {
            "surface": "cli",
            "kind": f"signal-{s}",
            "sig": s,
            "cause": "surface-6-signals",
            "dir": os.path.join(work, f"sig{s}"),
        }
        for s in ("SIGTERM", "SIGHUP", "SIGINT")
    ]


def make_cases(work):
    g = _gguf_cases(work)
    cases = g + _api_cases() + _metadata_cases(work) + _cli_cases(work, g) + _signal_cases(work)
    for i, c in enumerate(cases):
        c["id"] = f"{c['surface']}-{i:04d}-{c['kind']}"
        c.setdefault("cause", None)
    return cases


# ============================================================================ running one case (child)


def _x(name, rng):
    if name == "ok32":
        return rng.standard_normal((2, 32)).astype(np.float32)
    if name == "ok256":
        return rng.standard_normal((1, 256)).astype(np.float32)
    if name == "ok512x3":
        return rng.standard_normal((3, 512)).astype(np.float32)
    if name in ("nan", "inf"):
        a = rng.standard_normal((2, 256)).astype(np.float32)
        a[1, 7] = np.nan if name == "nan" else np.inf
        return a
    if name.startswith("big"):
        return (rng.standard_normal((2, 256)) * float(name[3:])).astype(np.float32)
    return {
        "tiny": lambda: np.full((1, 256), 1e-30, np.float32),
        "zeros": lambda: np.zeros((2, 256), np.float32),
        "int": lambda: np.ones((2, 256), np.int32),
        "bool": lambda: np.ones((2, 256), bool),
        "str": lambda: "weights",
        "ragged": lambda: [[1.0] * 32, [1.0] * 31],
        "scalar": lambda: np.float32(1),
        "empty_rows": lambda: np.zeros((0, 256), np.float32),
        "empty_cols": lambda: np.zeros((2, 0), np.float32),
        "odd33": lambda: np.ones((2, 33), np.float32),
        "f64": lambda: rng.standard_normal((2, 256)),
        "f16": lambda: rng.standard_normal((2, 256)).astype(np.float16),
        "obj": lambda: np.array([object()] * 32),
        "3d": lambda: rng.standard_normal((2, 2, 256)).astype(np.float32),
        "noncontig": lambda: rng.standard_normal((256, 4)).astype(np.float32).T,
        "list": lambda: [0.5] * 256,
    }[name]()


def _im(name, n):
    return {
        "none": None,
        "ones": np.ones(n, np.float32),
        "short": np.ones(max(n - 1, 0), np.float32),
        "nan": np.full(n, np.nan, np.float32),
        "neg": -np.ones(n, np.float32),
        "str": "imatrix",
        "2d": np.ones((2, n), np.float32),
        "zeros": np.zeros(n, np.float32),
    }[name]


def _run_api(c):
    import quantlab
    from quantlab.formats import get

    rng = np.random.default_rng(zlib.crc32(c["id"].encode()))
    fmt = c["fmt"]["bytes"].encode() if isinstance(c["fmt"], dict) else c["fmt"]
    x = _x(c["x"], rng)
    n = np.shape(x)[-1] if isinstance(x, np.ndarray) and x.ndim else 256
    kw = {} if c["impl"] is None else {"impl": c["impl"]}
    kw_bad_impl = dict(kw) if c["impl"] is not None else {"impl": None}
    if c["op"] == "quantize":
        out = quantlab.quantize(x, fmt, imatrix=_im(c["im"], n), threads=c["threads"], **kw_bad_impl)
        f = get(fmt)
        a = np.asarray(x)
        assert out.dtype == np.uint8 and out.shape == (*a.shape[:-1], f.row_bytes(a.shape[-1])), "wrong shape"
        if kw_bad_impl.get("impl") == "fast" and f.has_impl("reference", "quantize"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = quantlab.quantize(x, fmt, imatrix=_im(c["im"], n), impl="reference")
            assert np.array_equal(out, ref), "fast and reference differ"
        return "ok"
    if c["op"] == "dequantize":
        try:
            f = get(fmt)
            rb = f.row_bytes(256) if f.block_size else 18
        except Exception:  # noqa: BLE001 - the API call below must name the error itself
            rb = 18
        data = {
            "ok32": np.zeros((2, rb), np.uint8),
            "str": "bytes",
            "f64": np.zeros((2, rb)),
            "odd33": np.zeros((2, rb + 1), np.uint8),
            "list": [0] * rb,
            "scalar": np.uint8(0),
        }.get(c["x"], rng.integers(0, 256, (2, rb), dtype=np.uint8))
        y = quantlab.dequantize(data, fmt, threads=c["threads"], **kw_bad_impl)
        assert y.dtype == np.float32
        return "ok"
    if c["op"] == "inspect":
        q = np.zeros((2, 34), np.uint8) if c["x"] != "str" else "bytes"
        quantlab.inspect_block(q, fmt, c["i"] if c["x"] != "f64" else 1.5)
        return "ok"
    quantlab.row_bytes(fmt, c["n"])
    return "ok"


def _run_metadata(c, work):
    from quantlab.recipes import ModelInfo

    if c["kind"] == "ModelInfo":
        md = {k: _value(v) for k, v in c["md"].items()}
        m = ModelInfo.from_metadata(md)
        assert isinstance(m.n_layer, int) and isinstance(m.n_head, int) and isinstance(m.n_head_kv, int)
        assert m.n_layer >= 0 and m.n_head >= 0 and m.n_head_kv >= 0
        return "ok"
    if c["kind"] == "Config":
        from quantlab.model.llama import Config

        md = {k: _value(v) for k, v in c["md"].items()}
        cfg = Config.from_metadata(md, 16)
        ints = (cfg.n_embd, cfg.n_layer, cfg.n_head, cfg.n_head_kv, cfg.n_ff, cfg.head_dim, cfg.n_rot)
        assert all(isinstance(v, int) and v > 0 for v in ints), f"accepted {ints}"
        assert cfg.n_head % cfg.n_head_kv == 0 and cfg.n_rot <= cfg.head_dim and cfg.n_rot % 2 == 0
        assert np.isfinite(cfg.eps) and cfg.eps > 0 and np.isfinite(cfg.rope_base) and cfg.rope_base > 0
        return "ok"
    from quantlab import recipes

    os.makedirs(c["dir"], exist_ok=True)
    src = os.path.join(c["dir"], "in.gguf")
    from quantlab.gguf import ArrayOf, Value, ValueType

    _tiny_model(src, {c["key"]: c["v"] if c["v"] != [] else Value([], ArrayOf(ValueType.INT32))})
    out = os.path.join(c["dir"], "out.gguf")
    with open(out, "wb") as fh:
        fh.write(b"KEEP")
    try:
        recipes.quantize_model(src, out, c["ftype"], verbose=False, progress=False, threads=1)
    except BaseException:
        with open(out, "rb") as fh:
            assert fh.read() == b"KEEP", "a failed run changed the existing output"
        raise
    import quantlab.gguf as qg

    with qg.open(out) as f, qg.open(src) as g:
        assert sorted(f.tensors) == sorted(g.tensors), "tensors lost"
        assert f.metadata["general.file_type"] == recipes.file_type(c["ftype"]).value
    return "ok"


class _StrictOut(io.TextIOWrapper):
    def __init__(self):
        super().__init__(io.BytesIO(), encoding="utf-8", errors="strict")


def _run_cli(c):
    from quantlab.cli import main

    keep = c.get("keep")
    if keep:
        with open(keep, "wb") as fh:
            fh.write(b"KEEP")
    out = _StrictOut() if c.get("strict") else io.StringIO()
    err = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(c["argv"])
        except SystemExit as e:  # argparse: usage errors exit 2
            rc = e.code if isinstance(e.code, int) else 2
    if isinstance(out, io.TextIOWrapper):
        out.flush()
        text = out.buffer.getvalue().decode("utf-8")
    else:
        text = out.getvalue()
    e = err.getvalue()
    assert rc in (0, 1, 2), f"exit code {rc}"
    assert "Traceback" not in e, "a traceback on stderr"
    bad = [ch for ch in text + e if (ord(ch) < 32 and ch not in "\n\t") or ch == "\x7f"]
    assert not bad, f"control characters in the output: {bad[:3]!r}"
    if rc:
        lines = [ln for ln in e.splitlines() if ln.strip() and "usage:" not in ln and not ln.startswith(" ")]
        assert lines, "failed without a message"
    if c["kind"] == "dry-run-imatrix":
        # the tiny model's rows (64, 128) are not multiples of 256: every IQ2_XXS tensor falls back (IQ4_NL,
        # Q4_0, Q8_0), so no tensor needs an imatrix. llama-quantize 0.3.36 accepts this file too (checked:
        # "14 of 20 tensor(s) required fallback quantization", exit 0); the dry run must agree with the real run
        assert rc == 0, "--dry-run refused what the real run (and llama-quantize) accepts"
    if keep and rc:
        with open(keep, "rb") as fh:
            assert fh.read() == b"KEEP", "a failed run changed the existing output"
    return "ok" if rc == 0 else ("usage" if rc == 2 else "error")


def _run_gguf(c):
    import quantlab.gguf as qg

    with qg.open(c["path"]) as f:
        for k in f.metadata:
            f.metadata[k]
            f.metadata.type_of(k)
        for t in f.tensors.values():
            if t.nbytes <= 1 << 16:
                if t.swappable:
                    t.dequantize(impl="reference")
            else:
                _ = t.data
    return "ok"


def _run_signal(c):
    """`quantlab quantize` in its own process, signalled once its temporary output exists."""
    os.makedirs(c["dir"], exist_ok=True)
    src = os.path.join(c["dir"], "in.gguf")
    import quantlab.gguf as qg

    rng = np.random.default_rng(5)
    qg.write(
        src,
        {"general.architecture": "llama", "llama.block_count": 1},
        {f"blk.0.ffn_{k}.weight": rng.standard_normal((1024, 2048)).astype(np.float32) for k in ("up", "gate", "down")},
    )
    out = os.path.join(c["dir"], "out.gguf")
    with open(out, "wb") as fh:
        fh.write(b"KEEP")
    p = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from quantlab.cli import main; sys.exit(main())",
            "quantize",
            "--no-progress",
            src,
            out,
            "Q4_K_S",
            "1",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
        preexec_fn=default_signals,
    )
    t0 = time.monotonic()
    while time.monotonic() - t0 < WALL_LIMIT and p.poll() is None:
        if any(n.endswith(".tmp") for n in os.listdir(c["dir"])):
            break
        time.sleep(0.01)
    p.send_signal(getattr(signal, c["sig"]))
    try:
        _, e = p.communicate(timeout=WALL_LIMIT)
    except subprocess.TimeoutExpired:
        p.kill()
        raise AssertionError("did not stop after the signal") from None
    left = [n for n in os.listdir(c["dir"]) if n.endswith(".tmp")]
    assert not left, f"left {left}"
    with open(out, "rb") as fh:
        assert fh.read() == b"KEEP", "the existing output was changed"
    assert "Traceback" not in e, "a traceback"
    assert len([ln for ln in e.splitlines() if ln.strip()]) <= 1, f"{len(e.splitlines())} lines on stderr"
    return "ok"


def _run_cli_process(c, timeout=5.0):
    """A command that might block (a FIFO): in its own process, killed after ``timeout`` seconds."""
    p = subprocess.Popen(
        [sys.executable, "-c", "import sys; from quantlab.cli import main; sys.exit(main())", *c["argv"]],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    try:
        _, e = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise AssertionError(f"still running after {timeout} s") from None
    assert p.returncode in (0, 1, 2) and "Traceback" not in e, f"exit {p.returncode}: {e[-200:]}"
    return "ok" if p.returncode == 0 else "error"


def _file_size(c):
    p = c.get("path")
    return os.path.getsize(p) if p and os.path.exists(p) and not os.path.isdir(p) else 0


def _run_one(c, work):
    from quantlab.errors import QuantlabError

    from .budget import MB as _MB
    from .budget import cpu, within

    before = {n for n in os.listdir(os.path.dirname(c["path"]) if c.get("path") else work)}
    t0 = cpu()
    try:
        budget = (
            contextlib.nullcontext()
            if c["kind"].startswith("signal") or c.get("subprocess")  # own process
            else within(2 * _file_size(c) + 64 * _MB)
        )
        with budget, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if c["surface"] == "gguf":
                res = _run_gguf(c)
            elif c["surface"] == "api":
                res = _run_api(c)
            elif c["surface"] == "metadata":
                res = _run_metadata(c, work)
            elif c["kind"].startswith("signal"):
                res = _run_signal(c)
            elif c.get("subprocess"):
                res = _run_cli_process(c)
            else:
                res = _run_cli(c)
    except QuantlabError as e:
        res = "error"
        detail = f"{type(e).__name__}: {e}"[:200]
    except MemoryError:
        res, detail = "violation", "memory budget exceeded"
    except AssertionError as e:
        res, detail = "violation", f"contract: {e}"[:200]
    except BaseException as e:  # noqa: BLE001 - anything else breaks the contract
        res, detail = "violation", f"{type(e).__name__}: {e}"[:200] + " | " + traceback.format_exc(limit=-2)[-300:]
    else:
        detail = ""
    t = cpu() - t0
    if res != "violation" and t > CPU_LIMIT and not c["kind"].startswith("signal"):
        res, detail = "violation", f"{t:.2f} s of CPU"
    d = os.path.dirname(c["path"]) if c.get("path") else work
    left = [n for n in os.listdir(d) if n.endswith(".tmp") and n not in before]
    for root, _, files in os.walk(work):
        left += [os.path.join(root, n) for n in files if n.endswith(".tmp") and n.startswith(".")]
    if left and res != "violation":
        res, detail = "violation", f"partial files left: {left[:2]}"
    for n in left:
        with contextlib.suppress(OSError):
            os.unlink(n if os.path.isabs(n) else os.path.join(d, n))
    return res, detail, t


def _warm_up(work):
    """Imports, numba kernels and thread pools before any budget (they map libraries: not the case's)."""
    import quantlab
    import quantlab.gguf
    import quantlab.model.llama
    from quantlab import recipes
    from quantlab.cli import build_parser

    build_parser()
    x = np.ones((4, 512), np.float32)
    for f in ("F16", "Q8_0", "Q4_0", "Q4_K", "IQ4_NL", "Q4_1", "Q5_K", "Q6_K", "Q2_K", "Q3_K", "Q5_0", "Q5_1"):
        for threads in (1, 2):
            quantlab.dequantize(quantlab.quantize(x, f, threads=threads), f, threads=threads)
    src = os.path.join(work, "warm.gguf")
    _tiny_model(src)
    for ft in ("Q8_0", "Q4_0", "Q4_K_M"):
        recipes.quantize_model(src, os.path.join(work, "warm-out.gguf"), ft, verbose=False, progress=False, threads=1)


def _child(work, start):
    os.environ.setdefault("MALLOC_ARENA_MAX", "2")
    import faulthandler

    from .budget import cpu

    t0 = cpu()
    cases = make_cases(work)
    t1 = cpu()
    _warm_up(work)
    print("READY", len(cases), f"cases {t1 - t0:.1f} s, warm-up {cpu() - t1:.1f} s of CPU", flush=True)
    for i in range(start, len(cases)):
        c = cases[i]
        print("START", i, flush=True)
        faulthandler.dump_traceback_later(WALL_LIMIT, exit=True)
        res, detail, t = _run_one(c, work)
        faulthandler.cancel_dump_traceback_later()
        print("RESULT", json.dumps({"i": i, "res": res, "detail": detail, "cpu": round(t, 4)}), flush=True)


# ============================================================================ the parent


def run_all(work):
    """Every case's outcome: {index: (case, outcome, detail, cpu)}; a crash or hang is that case's
    violation, and the run goes on from the next case in a new child."""
    sys.path.insert(0, ROOT)
    env = {**os.environ, "PYTHONPATH": ROOT, "MALLOC_ARENA_MAX": "2", "GGML_NO_BACKTRACE": "1"}
    results, start, n = {}, 0, None
    while n is None or start < n:
        code = f"from tests.test_contract import _child; _child({work!r}, {start})"
        p = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=1800
        )
        last = None
        for line in p.stdout.splitlines():
            if line.startswith("READY"):
                n = int(line.split()[1])
                print(line, file=sys.stderr)
            elif line.startswith("START"):
                last = int(line.split()[1])
            elif line.startswith("RESULT"):
                r = json.loads(line[7:])
                results[r["i"]] = (r["res"], r["detail"], r["cpu"])
                last = None
        if n is None:
            raise RuntimeError("the contract child did not start:\n" + p.stderr[-3000:])
        if last is not None:
            how = f"crash (signal {-p.returncode})" if p.returncode < 0 else "hang or exit " + str(p.returncode)
            results[last] = ("violation", f"{how}: {p.stderr[-300:]}", None)
            start = last + 1
        else:
            start = n
    cases = make_cases_light(work)
    return {i: (cases[i], *results[i]) for i in range(n)}


def make_cases_light(work):
    """The case list again, in the parent (same seed: same cases; the files exist already)."""
    return make_cases(work)


def table(outcomes) -> str:
    t = Counter()
    for c, res, _, _ in outcomes.values():
        t[(c["surface"], "fixed elsewhere: " + res if c["cause"] in ELSEWHERE and res == "violation" else res)] += 1
    cols = sorted({k[1] for k in t})
    rows = ["surface   " + "".join(f"{c:>34}" for c in cols) + "     total"]
    for s in ("gguf", "api", "cli", "metadata"):
        rows.append(f"{s:<10}" + "".join(f"{t[(s, c)]:>34}" for c in cols) + f"{sum(t[(s, c)] for c in cols):>10}")
    return "\n".join(rows)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    return run_all(str(tmp_path_factory.mktemp("contract")))


def _violations(outcomes, pred):
    return [(c["id"], d) for c, res, d, _ in outcomes.values() if pred(c) and res == "violation"]


def test_enough_cases(outcomes):
    n = Counter(c["surface"] for c, *_ in outcomes.values())
    print("\n" + table(outcomes))
    assert sum(n.values()) >= 2000 and min(n.values()) >= 100, n


@pytest.mark.parametrize("surface", ["gguf", "api", "cli", "metadata"])
def test_contract_holds(outcomes, surface):
    bad = _violations(outcomes, lambda c: c["surface"] == surface and c["cause"] not in ELSEWHERE)
    assert not bad, f"{len(bad)} violations, first: {bad[:5]}"


if ELSEWHERE:  # every fix has landed: the tagged cases are checked with their surface

    @pytest.mark.parametrize(
        "cause", [pytest.param(k, marks=pytest.mark.xfail(strict=True, reason=v)) for k, v in ELSEWHERE.items()]
    )
    def test_fixed_elsewhere(outcomes, cause):
        bad = _violations(outcomes, lambda c: c["cause"] == cause)
        assert not bad, f"{len(bad)} violations, first: {bad[:3]}"


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        t0 = time.time()
        res = run_all(d)
        print(table(res))
        print(f"{len(res)} cases in {time.time() - t0:.1f} s")
        cpu_by = Counter()
        for c, r, det, t in res.values():
            cpu_by[(c["surface"], c["kind"])] += t or 0
            if r == "violation":
                print(
                    c["id"],
                    c["cause"],
                    det[:160],
                    {k: v for k, v in c.items() if k in ("fmt", "x", "impl", "im", "threads", "argv", "md")},
                )
        print("CPU by kind:", [(k, round(v, 1)) for k, v in cpu_by.most_common(12)])
