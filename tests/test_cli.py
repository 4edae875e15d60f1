"""The command line's contract (issue 18 items 4, 6, 7, 9; issue 19's CLI surface): a bad file or argument ends
in one line naming the file and the cause (exit 1, 2 for usage), never a traceback unless --debug; a signal
during ``quantize`` leaves no temporary file and an existing output intact (exit 128 + signal); ``inspect``
prints hostile names escaped on a strict UTF-8 stdout and refuses a FIFO; ``quantize --dry-run`` refuses what
the real run refuses; one shape order (llama.cpp's ne) everywhere."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import quantlab.gguf as qg
from quantlab.cli import main, printable

from .conftest import default_signals
from .gguf_build import build, gstr, kv, kv_str, kv_u32, tinfo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _smollm2():
    from quantlab.data import path
    from quantlab.errors import DataMissing

    try:
        return str(path("smollm2"))
    except DataMissing as e:
        pytest.skip(str(e))


def _run(*args, env=None, timeout=300, **kw):
    """``python -m quantlab.cli ARGS`` in a child: (returncode, stdout, stderr) as text."""
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([ROOT, e.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    e.update(env or {})
    p = subprocess.run(
        [sys.executable, "-m", "quantlab.cli", *map(str, args)],
        capture_output=True,
        env=e,
        timeout=timeout,
        check=False,
        **kw,
    )
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --------------------------------------------------------------------------- item 7: one line, exit 1 / 2


def test_imatrix_is_a_directory(tmp_path, capsys):
    rc = main(
        ["quantize", "--allow-requantize", "--imatrix", str(tmp_path), _smollm2(), str(tmp_path / "o.gguf"), "Q8_0"]
    )
    line = _one_line(capsys.readouterr().err)
    assert rc == 1 and line == f"quantlab quantize: error: {tmp_path}: is a directory", line
    assert not list(tmp_path.iterdir())


def test_eval_text_missing_and_not_utf8(tmp_path):
    # in a child: the real entry point, the real stderr (and eval loads the model, which is done once there)
    missing = tmp_path / "missing.txt"
    rc, _out, err = _run("eval", "--chunks", "1", "--text", missing)
    assert rc == 1 and _one_line(err) == f"quantlab eval: error: {missing}: no such file or directory", err
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\u00e9 cr\u00e8me".encode("latin-1"))
    rc, _out, err = _run("eval", "--chunks", "1", "--text", bad)
    line = _one_line(err)
    assert rc == 1 and line.startswith(
        f"quantlab eval: error: {bad}: not valid utf-8: invalid continuation byte at byte 3"
    ), line


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError):
        main(["inspect", "--debug", str(tmp_path / "nope.gguf")])
    with pytest.raises(FileNotFoundError):
        main(["--debug", "inspect", str(tmp_path / "nope.gguf")])


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["quantize"], "the following arguments are required"),
        (["quantize", "a.gguf", "b.gguf", "Q4_0", "two"], "invalid int value: 'two'"),
        (["inspect"], "the following arguments are required: file"),
        (["inspect", "a", "b"], "unrecognized arguments: b"),
        (["eval", "--ctx", "many"], "invalid int value"),
        (["imatrix", "--output-format", "xml"], "invalid choice"),
        (["generate"], "the following arguments are required: prompt"),
        (["generate", "-n", "-1", "hi"], "'-1' is not a number of tokens to generate (expected 0 or more)"),
        (["bench", "--size", "1e6"], "invalid int value"),
        (["formats", "--what"], "unrecognized arguments"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_usage_errors_exit_2_in_one_message(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert err.splitlines()[-1].startswith(f"quantlab{' ' + argv[0] if argv[0] != 'frobnicate' else ''}: error:")


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["quantize", "{m}", "{o}", "Q9_9"], "unknown file type 'Q9_9'"),
        (["quantize", "{m}", "{o}", "4"], "file type 4 (MOSTLY_Q4_1_SOME_F16) was removed"),
        (["quantize", "--allow-requantize", "--output-tensor-type", "Q7", "{m}", "{o}", "Q8_0"], "Q7"),
        (["quantize", "{missing}", "{o}", "Q8_0"], "no such file or directory"),
        (["quantize", "{m}", "{m}", "Q8_0"], "same file"),
        (["inspect", "{missing}"], "no such file or directory"),
        (["inspect", "{dir}"], "is a directory"),
    ],
)
def test_bad_values_exit_1_in_one_line(argv, needle, tmp_path, capsys):
    m = _smollm2()
    names = {"m": m, "o": str(tmp_path / "o.gguf"), "missing": str(tmp_path / "missing.gguf"), "dir": str(tmp_path)}
    rc = main([a.format(**names) for a in argv])
    line = _one_line(capsys.readouterr().err)
    assert rc == 1 and line.startswith(f"quantlab {argv[0]}: error: ") and needle.lower() in line.lower(), line
    assert sorted(os.listdir(tmp_path)) == []


# --------------------------------------------------------------------------- item 9


def test_inspect_and_quantize_refuse_a_fifo(tmp_path):
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    for args in (["inspect", fifo], ["quantize", fifo, tmp_path / "o.gguf", "Q8_0"]):
        rc, _out, err = _run(*args, timeout=60)  # before the fix: blocks in open() until a writer comes
        line = _one_line(err)
        assert rc == 1 and f"{fifo} is a FIFO, not a regular file" in line, line


def test_dry_run_refuses_like_the_real_run(tmp_path, capsys):
    m, o = _smollm2(), str(tmp_path / "o.gguf")
    for extra, ftype, needle in (
        ([], "Q4_K_M", "is already quantized (Q4_1)"),
        (["--allow-requantize"], "IQ2_XXS", "without an importance matrix"),
    ):
        for dry in ([], ["--dry-run"]):
            rc = main(["quantize", *dry, *extra, m, o, ftype])
            line = _one_line(capsys.readouterr().err)
            assert rc == 1 and needle in line, (dry, line)
    assert main(["quantize", "--dry-run", "--allow-requantize", m, o, "Q4_K_M"]) == 0
    out = capsys.readouterr().out
    assert "576x1536" in out and "Q4_K_M (Q4_K - Medium): 272 tensors" in out
    assert not os.path.exists(o)


# --------------------------------------------------------------------------- item 6: signals


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_signal_mid_write_leaves_no_temp_file_and_the_old_output(sig, tmp_path):
    m = _smollm2()
    out = tmp_path / "o.gguf"
    old = b"the previous output, which must survive\n"
    out.write_bytes(old)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    p = subprocess.Popen(
        [sys.executable, "-m", "quantlab.cli", "quantize", "--allow-requantize", m, str(out), "Q8_0", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=default_signals,
    )
    try:
        deadline = time.monotonic() + 240
        tmp = None
        while time.monotonic() < deadline and p.poll() is None:  # wait until the temp file has data
            tmps = [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
            if tmps and os.path.getsize(tmp_path / tmps[0]) > (4 << 20):
                tmp = tmps[0]
                break
            time.sleep(0.005)
        assert tmp is not None and tmp.startswith(".o.gguf."), "the quantize finished before the signal"
        p.send_signal(sig)
        _stdout, stderr = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    err = stderr.decode()
    assert p.returncode == 128 + sig, (p.returncode, err)
    assert "Traceback" not in err and err.strip().splitlines()[-1] == f"quantlab quantize: stopped by {sig.name}", err
    assert sorted(os.listdir(tmp_path)) == ["o.gguf"]
    assert out.read_bytes() == old


def test_stopped_unwinds_the_writer_in_process(tmp_path, monkeypatch, capsys):
    """The mechanism without a child: a Stopped raised from inside the write (as the signal handler does)
    reaches main's handler after the writer removed its temporary file."""
    from quantlab import cli
    from quantlab.recipes import pipeline

    real = pipeline._quantize_tensor
    calls = []

    def stop_at_third(*a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise cli.Stopped(signal.SIGTERM)
        return real(*a, **kw)

    monkeypatch.setattr(pipeline, "_quantize_tensor", stop_at_third)
    rc = main(["quantize", "--allow-requantize", "--no-progress", _smollm2(), str(tmp_path / "o.gguf"), "Q8_0"])
    assert rc == 128 + signal.SIGTERM
    assert capsys.readouterr().err.strip().splitlines()[-1] == "quantlab quantize: stopped by SIGTERM"
    assert os.listdir(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored after the command


# --------------------------------------------------------------------------- item 4: hostile names

ESC_TITLE = b"\x1b]0;pwned\x07"
CLEAR = b"\x1b[2J\x1b[H"


def _hostile_file(tmp_path):
    data = np.arange(8, dtype="<f4").tobytes() + bytes(32 - 32 % 32)
    kvs = [
        kv_str("general.architecture", "llama"),
        kv(b"evil.key\xff" + ESC_TITLE, 8, gstr(b"value " + CLEAR + b"\xfe\xfd end")),
        kv(b"general.name", 8, gstr("bidi \u202eexe.txt".encode())),
        kv_u32("general.file_type", 15),
    ]
    tensors = [tinfo(b"blk.0.\xff\x1b[31mred", [8, 1], 0, 0)]
    p = tmp_path / "hostile.gguf"
    p.write_bytes(build(kvs, tensors, data))
    return p


def test_inspect_hostile_names_on_strict_utf8_stdout(tmp_path):
    p = _hostile_file(tmp_path)
    rc, out, err = _run("inspect", p, env={"PYTHONIOENCODING": "utf-8"})
    assert rc == 0 and err == "", err
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "evil.key\\xff\\x1b]0;pwned\\x07" in out
    assert "value \\x1b[2J\\x1b[H\\xfe\\xfd end" in out
    assert "bidi \\u202eexe.txt" in out
    assert "blk.0.\\xff\\x1b[31mred" in out
    assert "file type Q4_K_M (Q4_K - Medium)" in out
    rc, out, err = _run("inspect", "--json", p, env={"PYTHONIOENCODING": "utf-8"})
    assert rc == 0 and "\x1b" not in out
    js = json.loads(out)
    assert js["file_type"] == {"value": 15, "name": "Q4_K_M", "description": "Q4_K - Medium"}


def test_printable_escapes_every_non_printable():
    assert printable("blk.0.attn_q.weight") == "blk.0.attn_q.weight"
    assert printable("a\x1b[2Jb\x07\x9b\x7f") == "a\\x1b[2Jb\\x07\\x9b\\x7f"
    assert printable("x\udcff\udc80y") == "x\\xff\\x80y"  # bytes kept by surrogateescape
    assert printable("\u202e\u200b\u2028") == "\\u202e\\u200b\\u2028"
    assert printable("tab\tnl\n") == "tab\\tnl\\n"
    assert printable("caf\u00e9 \u65e5\u672c") == "caf\u00e9 \u65e5\u672c"  # printable non-ASCII stays


# --------------------------------------------------------------------------- issue 19: parity, version, help


def test_one_shape_order_llama_cpp_ne(tmp_path, capsys):
    p = tmp_path / "s.gguf"
    qg.write(p, {"general.architecture": "llama"}, {"blk.0.attn_k.weight": np.ones((192, 576), np.float32)})
    with qg.open(p) as f:
        assert f.tensors["blk.0.attn_k.weight"].ne == (576, 192)
    assert main(["inspect", str(p)]) == 0
    out = capsys.readouterr().out
    assert "576x192" in out and "192x576" not in out
    from quantlab.gguf.anatomy import Anatomy

    with qg.open(p) as f:
        assert Anatomy(f).tensor_table()[0]["shape"] == "576x192"


def test_quantize_help_lists_file_types_with_bpw(capsys):
    with pytest.raises(SystemExit) as e:
        main(["quantize", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "  15  or  Q4_K_M    : Q4_K     4.500 bpw  Q4_K - Medium" in out
    assert "  19  or  IQ2_XXS   : IQ2_XXS  2.062 bpw, needs --imatrix" in out
    assert "   7  or  Q8_0      : Q8_0     8.500 bpw" in out


def test_version_and_help_description():
    import quantlab

    rc, out, _err = _run("--version")
    assert rc == 0 and out.strip() == f"quantlab {quantlab.__version__}"
    rc, out, _err = _run("--help")
    assert rc == 0 and "``" not in out and "Each sub-command lives" not in out
    assert "quantize, inspect, benchmark and run GGUF models" in " ".join(out.split())


def test_shipped_model_by_name_and_why_q4_k_m_is_larger(tmp_path, capsys):
    """The README's example on the shipped model: `quantlab quantize --allow-requantize smollm2 OUT Q4_K_M`.
    SmolLM2's rows are 576 wide, not a multiple of Q4_K's 256-weight super-blocks: most matrices fall back to
    Q5_0 (5.5 bits per weight) -- more than the Q4_1 (5.0) they come from -- so the file grows."""
    _smollm2()
    assert main(["inspect", "smollm2"]) == 0
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in capsys.readouterr().out
    assert main(["quantize", "--dry-run", "--allow-requantize", "smollm2", str(tmp_path / "o.gguf"), "Q4_K_M"]) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert "92.10 MiB -> 98.87 MiB" in summary and "Q5_0 x166" in summary and "180 fallback(s)" in summary
