"""python -m quantlab.kernels.warmup: the job list, one line per job, and the exit status."""
from __future__ import annotations

import re

from quantlab.formats.registry import all_formats
from quantlab.kernels import matmul as mm
from quantlab.kernels import warmup


def test_jobs_cover_every_fast_kernel_the_api_can_call():
    jobs = warmup.jobs()
    fmts = {n for k, n in jobs if k == "format"}
    assert fmts == {f.name for f in all_formats()
                    if f.has_impl("fast", "quantize") or f.has_impl("fast", "dequantize")}
    assert {n for k, n in jobs if k == "matmul"} == set(mm.INT_KERNELS)
    assert ("model", warmup.MODEL_JOB) in jobs
    assert len(jobs) == len(set(jobs))


def test_one_line_per_job_and_exit_status(capsys, monkeypatch):
    assert warmup.main(["--only", "Q8_0,matmul Q8_0", "--jobs", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [re.fullmatch(r"(.*\S) +\d+\.\d s", line).group(1) for line in out[:2]] == ["matmul Q8_0", "Q8_0"]
    assert re.fullmatch(r"total +\d+\.\d s \(2 jobs, 1 processes\)", out[2]) and len(out) == 3

    monkeypatch.setattr(warmup, "jobs", lambda: [("format", "Q8_0"), ("format", "NO_SUCH_FORMAT")])
    assert warmup.main(["--jobs", "1"]) == 1
    cap = capsys.readouterr()
    assert "NO_SUCH_FORMAT" in cap.out and "FAILED" in cap.out
    assert "NO_SUCH_FORMAT failed" in cap.err

    assert warmup.main(["--only", "not a job"]) == 2
