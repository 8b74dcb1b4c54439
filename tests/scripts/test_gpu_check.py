"""scripts/gpu_check.sh and scripts/bench_gpu.py on a machine without a GPU.

The GPU machine is lent rarely and briefly, so what can be checked here is:
the benchmark's report code runs end to end (its CPU smoke mode), and the
check script always writes gpu.md, naming the phases it could not run.
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_gpu_smoke_run_writes_its_report(tmp_path):
    # In a subprocess: the smoke run selects the numpy backend for its process.
    report = tmp_path / "bench.md"
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_gpu.py"), "--smoke-cpu", "--no-torch",
         "--only", "maxpool,train,bandwidth", "--report", str(report)],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    text = report.read_text()
    for heading in ("## Layers", "## Training step", "## Memory-bound kernels"):
        assert heading in text
    assert "compile(jit_compile=True)" in text and "bias gradient" in text and "batch norm backward" in text


def test_gpu_check_always_writes_gpu_md(tmp_path):
    # A budget too small for any phase: every phase is reported as skipped, and gpu.md is still written.
    env = dict(os.environ, OUT=str(tmp_path), GPU_CHECK_BUDGET_S="10", PYTHON=sys.executable)
    run = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    text = (tmp_path / "gpu.md").read_text()
    for phase in ("preflight", "GPU tests", "benchmark", "kernel checks"):
        assert f"| {phase} | skipped: no time left |" in text
    assert "No figures this run" in text and "## Device operations per training step" in text
    assert run.stdout.rstrip().splitlines()[-1].startswith("outputs:")  # the summary comes last


def test_gpu_preflight_says_why_without_a_gpu():
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_preflight.py")], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if run.returncode == 0:  # a machine with a GPU: every check passed
        assert "FAIL" not in run.stdout
        return
    assert run.returncode == 3, run.stdout + run.stderr
    assert "FAIL no usable CUDA GPU" in run.stdout
