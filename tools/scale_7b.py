"""Scale check: quantize a Llama-2-7B-shaped F16 GGUF to Q4_K_M with quantlab and with llama-quantize.

    .venv/bin/python tools/scale_7b.py                 # ~13.5 GB input + 2 x ~3.9 GB outputs, deleted after
    .venv/bin/python tools/scale_7b.py --dir /big/disk --threads 2 --ftype Q4_K_M

What it does, in order:

1. refuses (one line, exit 2) unless the directory has ``--min-free-gb`` (30) GB free;
2. writes ``llama-7b-shape-F16.gguf``: Llama-2-7B's shapes (32 layers, n_embd 4096, n_ff 11008, 32 heads,
   vocab 32000; token_embd and output untied), F16 matrices, F32 norms, the order convert_hf_to_gguf.py
   writes. The values are N(0, 0.02) from a seeded generator (``--seed``): a pool of 2^25 normals drawn
   once, each block of rows a slice of it at a seeded random offset (drawing 6.7e9 fresh normals would
   take minutes of CPU on this machine and changes nothing for either quantizer). It is *streamed*
   tensor by tensor through :class:`quantlab.gguf.GGUFWriter` (each tensor a callable, produced only when
   written): this process never holds more than one tensor. The tokenizer is metadata only
   (``tokenizer.ggml.model`` = llama, 32000 placeholder tokens, scores, types): llama-quantize loads the
   hyper-parameters but not the vocabulary;
3. runs ``llama-quantize IN OUT Q4_K_M T`` (.cache/oracle: the AVX2 build of llama.cpp, not the native
   AVX-512 one) and ``quantlab quantize IN OUT Q4_K_M T``, one after the other, each under
   ``/usr/bin/time`` (wall, user+system CPU, ``ru_maxrss``) while a thread samples ``/proc/PID/status``
   every 0.2 s for the split of the resident set into RssAnon (heap, numpy arrays) and RssFile (pages of
   mapped files: both tools ``mmap`` the input, and every page touched counts in RSS until unmapped,
   dropped with ``madvise(MADV_DONTNEED)``, or reclaimed);
4. compares the two outputs by sha256; if they differ, names the first tensor whose bytes differ;
5. deletes every file it wrote — also on an error or ctrl-C (SIGTERM too).

Prints one table (and ``--json`` writes it) with ``uptime``'s load before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from quantlab.gguf import ArrayOf, GGUFWriter, Value, ValueType  # noqa: E402
from quantlab.recipes.pipeline import file_sha256  # noqa: E402

BIN = ROOT / ".cache/oracle/bin"
LIB = ROOT / ".cache/oracle/lib"

# Llama-2-7B (meta-llama/Llama-2-7b-hf config.json)
N_LAYER, N_EMBD, N_FF, N_HEAD, N_VOCAB, N_CTX = 32, 4096, 11008, 32, 32000, 4096
POOL = 1 << 25  # normals drawn once (64 MiB as F16)
CHUNK_ROWS = 1024  # rows produced at a time (<= 22 MiB of F16 for ffn_down)


def layout():
    """(name, numpy shape, format) in convert_hf_to_gguf.py's order."""
    t = [("token_embd.weight", (N_VOCAB, N_EMBD), "F16")]
    for i in range(N_LAYER):
        b = f"blk.{i}."
        t += [
            (b + "attn_norm.weight", (N_EMBD,), "F32"),
            (b + "attn_q.weight", (N_EMBD, N_EMBD), "F16"),
            (b + "attn_k.weight", (N_EMBD, N_EMBD), "F16"),
            (b + "attn_v.weight", (N_EMBD, N_EMBD), "F16"),
            (b + "attn_output.weight", (N_EMBD, N_EMBD), "F16"),
            (b + "ffn_norm.weight", (N_EMBD,), "F32"),
            (b + "ffn_gate.weight", (N_FF, N_EMBD), "F16"),
            (b + "ffn_up.weight", (N_FF, N_EMBD), "F16"),
            (b + "ffn_down.weight", (N_EMBD, N_FF), "F16"),
        ]
    t += [("output_norm.weight", (N_EMBD,), "F32"), ("output.weight", (N_VOCAB, N_EMBD), "F16")]
    return t


def metadata():
    u32 = lambda v: Value(v, ValueType.UINT32)  # noqa: E731
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tokens += [f"tok{i}" for i in range(N_VOCAB - len(tokens))]
    types = np.ones(N_VOCAB, np.int32)
    types[:3] = (2, 3, 3)
    types[3:259] = 6
    return {
        "general.architecture": "llama",
        "general.name": "llama-7b-shape (random weights, quantlab tools/scale_7b.py)",
        "llama.context_length": u32(N_CTX),
        "llama.embedding_length": u32(N_EMBD),
        "llama.block_count": u32(N_LAYER),
        "llama.feed_forward_length": u32(N_FF),
        "llama.rope.dimension_count": u32(N_EMBD // N_HEAD),
        "llama.attention.head_count": u32(N_HEAD),
        "llama.attention.head_count_kv": u32(N_HEAD),
        "llama.attention.layer_norm_rms_epsilon": Value(1e-5, ValueType.FLOAT32),
        "general.file_type": u32(1),  # LLAMA_FTYPE_MOSTLY_F16
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": Value(tokens, ArrayOf(ValueType.STRING)),
        "tokenizer.ggml.scores": Value(np.zeros(N_VOCAB, np.float32), ArrayOf(ValueType.FLOAT32)),
        "tokenizer.ggml.token_type": Value(types, ArrayOf(ValueType.INT32)),
        "tokenizer.ggml.bos_token_id": u32(1),
        "tokenizer.ggml.eos_token_id": u32(2),
    }


def write_model(path: str, seed: int) -> int:
    """Stream the 7B-shaped model to ``path``; returns its size."""
    rng = np.random.default_rng(seed)
    pool = (rng.standard_normal(POOL, dtype=np.float32) * 0.02).astype(np.float16)

    def produce(shape, fmt):
        def make():
            if fmt == "F32":
                return np.ones(shape, np.float32)
            rows, cols = shape
            out = np.empty(shape, np.float16)
            for r in range(0, rows, CHUNK_ROWS):
                n = min(CHUNK_ROWS, rows - r) * cols
                o = int(rng.integers(0, POOL - n))
                out[r : r + n // cols] = pool[o : o + n].reshape(-1, cols)
            return out

        return make

    w = GGUFWriter(path, metadata(), fsync=False)
    try:
        for name, shape, fmt in layout():
            w.add_tensor(name, produce(shape, fmt), shape=shape, format=fmt)
        w.write_tensors()
        w.close()
    except BaseException:
        w.abort()
        raise
    return os.path.getsize(path)


def _status_kb(pid: int) -> dict:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    out[k] = int(v.split()[0])
    except (OSError, ValueError):
        pass
    return out


def _child_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            kids = fh.read().split()
        return int(kids[0]) if kids else None
    except (OSError, ValueError):
        return None


def run_timed(cmd, env, log_path) -> dict:
    """Run ``cmd`` under ``/usr/bin/time``: wall, user+system CPU and peak RSS (``ru_maxrss`` of the
    command itself: measured from this Python process, a forked child would count the parent's pages it
    shares until ``exec``), plus the largest RssAnon / RssFile sampled from /proc every 0.2 s."""
    tfile = log_path + ".time"
    with open(log_path, "w") as log:
        t0 = time.perf_counter()
        p = subprocess.Popen(
            ["/usr/bin/time", "-o", tfile, "-f", "%e %U %S %M", *cmd], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        peak = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
        done = threading.Event()

        def sample():
            kid = None
            while not done.wait(0.2):
                kid = kid or _child_of(p.pid)
                s = _status_kb(kid) if kid else {}
                for k in peak:
                    peak[k] = max(peak[k], s.get(k, 0))

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        try:
            rc = p.wait()
        except BaseException:
            kid = _child_of(p.pid)
            if kid:
                os.kill(kid, signal.SIGKILL)
            p.kill()
            p.wait()
            raise
        finally:
            done.set()
            th.join()
        wall = time.perf_counter() - t0
    with open(tfile) as f:
        e, u, s, m = f.read().split()[-4:]
    os.unlink(tfile)
    return {
        "rc": rc,
        "wall_s": float(e),
        "cpu_s": float(u) + float(s),
        "user_s": float(u),
        "sys_s": float(s),
        "maxrss_mib": int(m) / 1024,
        "peak_anon_mib": peak["RssAnon"] / 1024,
        "peak_file_mib": peak["RssFile"] / 1024,
        "outer_wall_s": wall,
    }


def first_difference(a: str, b: str) -> str:
    from quantlab import gguf

    fa, fb = gguf.open(a), gguf.open(b)
    try:
        if list(fa.tensors) != list(fb.tensors):
            return "tensor lists differ"
        for name, ta in fa.tensors.items():
            tb = fb.tensors[name]
            if ta.format.name != tb.format.name:
                return f"{name}: {ta.format.name} vs {tb.format.name}"
            if not np.array_equal(ta.data, tb.data):
                return f"{name} ({ta.format.name}): bytes differ"
        return "tensor data identical: header/metadata differ"
    finally:
        fa.close()
        fb.close()


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default=str(ROOT / ".cache/scale7b"), help="where the files go (deleted after)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ftype", default="Q4_K_M")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--min-free-gb", type=float, default=30.0)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--only", choices=("both", "quantlab", "llama"), default="both")
    args = ap.parse_args(argv)

    d = pathlib.Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    free_gb = shutil.disk_usage(d).free / 1e9
    if free_gb < args.min_free_gb:
        print(
            f"scale_7b: {d} has {free_gb:.1f} GB free; needs {args.min_free_gb:.0f} GB (13.5 GB F16 input + "
            f"two ~3.9 GB outputs + headroom): refused",
            file=sys.stderr,
        )
        return 2
    exe = BIN / "llama-quantize"
    if args.only != "quantlab" and not exe.exists():
        print(f"scale_7b: {exe} is missing (build it with tools/build_llama_cpp.sh)", file=sys.stderr)
        return 2

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    inp = d / "llama-7b-shape-F16.gguf"
    outs = {
        "llama": d / f"llama-7b-shape-{args.ftype}.llama.gguf",
        "quantlab": d / f"llama-7b-shape-{args.ftype}.quantlab.gguf",
    }
    made = [inp, *outs.values()]
    res = {
        "ftype": args.ftype,
        "threads": args.threads,
        "llama_build": "AVX2 (.cache/oracle, GGML_AVX512=OFF)",
        "load_start": uptime(),
    }
    try:
        t0 = time.perf_counter()
        c0 = time.process_time()
        res["input_bytes"] = write_model(str(inp), args.seed)
        res["write_s"], res["write_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
        print(
            f"wrote {inp} ({res['input_bytes'] / 1e9:.2f} GB) in {res['write_s']:.0f} s "
            f"({res['write_cpu_s']:.0f} s CPU); {uptime()}",
            flush=True,
        )
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = str(LIB) + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
        env.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".cache/numba"))
        env["PYTHONPATH"] = str(ROOT) + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        cmds = {
            "llama": [str(exe), str(inp), str(outs["llama"]), args.ftype, str(args.threads)],
            "quantlab": [
                sys.executable,
                "-m",
                "quantlab.cli",
                "quantize",
                "--no-progress",
                str(inp),
                str(outs["quantlab"]),
                args.ftype,
                str(args.threads),
            ],
        }
        for who in ("llama", "quantlab") if args.only == "both" else (args.only,):
            r = run_timed(cmds[who], env, str(d / f"{who}.log"))
            r["load_after"] = uptime()
            res[who] = r
            print(f"{who}: {json.dumps(r)}", flush=True)
            if r["rc"] != 0:
                tail = (d / f"{who}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{who} exited with {r['rc']}:\n{tail}")
        if args.only == "both":
            ha, hb = file_sha256(outs["llama"]), file_sha256(outs["quantlab"])
            res["sha256"] = {"llama": ha, "quantlab": hb}
            res["identical"] = ha == hb
            if ha != hb:
                res["first_difference"] = first_difference(str(outs["llama"]), str(outs["quantlab"]))
            q, ll = res["quantlab"], res["llama"]
            print(f"\n{args.ftype}, {args.threads} threads, llama-quantize = AVX2 build; load {res['load_start']}")
            print("| | wall s | CPU s | peak RSS MiB (ru_maxrss) | sampled RssAnon / RssFile MiB |")
            print("|---|---|---|---|---|")
            for who, r in (("llama-quantize", ll), ("quantlab", q)):
                print(
                    f"| {who} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['maxrss_mib']:.0f} | "
                    f"{r['peak_anon_mib']:.0f} / {r['peak_file_mib']:.0f} |"
                )
            print(
                f"| quantlab / llama | {q['wall_s'] / ll['wall_s']:.2f} | {q['cpu_s'] / ll['cpu_s']:.2f} | "
                f"{q['maxrss_mib'] / ll['maxrss_mib']:.2f} | |"
            )
            print(f"identical: {res['identical']}" + ("" if res["identical"] else f" ({res['first_difference']})"))
        res["load_end"] = uptime()
        print(res["load_end"])
        return 0
    finally:
        for f in made:
            try:
                f.unlink()
            except FileNotFoundError:
                pass
        for f in d.glob(".llama-7b-shape-*.tmp"):  # our writers' temporary files left by a killed run
            f.unlink(missing_ok=True)
        if args.json:
            pathlib.Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    sys.exit(main())
