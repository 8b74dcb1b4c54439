#!/usr/bin/env bash
# One command for a lent GPU machine: the test suite on the cupy backend, then
# the GPU benchmark. Uses only what that machine has (python3 with cupy, numpy,
# torch, pytest, hypothesis, h5py, scikit-image, matplotlib): nothing is
# installed, nothing is downloaded, and gpulayers need not be installed (the
# repository root goes on PYTHONPATH).
#
#   scripts/gpu_check.sh            # from anywhere; outputs in ${OUT:-docs/benchmarks}
#   scripts/gpu_check.sh --repeats 30 --only conv3x3s1,train   # arguments go to bench_gpu.py
#
# Phases, each with a time cap so the whole run stays under 6 minutes
# (GPU_CHECK_BUDGET_S, default 330 s; the benchmark's time is kept free):
#   1. preflight: versions, and a clear stop when no CUDA GPU is usable;
#   2. the GPU tests (pytest -m gpu): CupyOps against NumpyOps, im2col chunks,
#      layers, a training run, GPU against host emulation;
#   3. the rest of the suite with GPULAYERS_BACKEND=cupy (-m "not gpu and not kernels");
#   4. scripts/bench_gpu.py, writing gpu.md;
#   5. the kernel checks that need no GPU (-m "kernels and not gpu": NVRTC
#      compile check, host emulation; CI runs them too), which skip with
#      their reason where their tools (NVRTC, g++) are missing here.
# Writes gpu_check.log (everything), pytest-*.xml (JUnit) and gpu.md to the
# output folder. Exits non-zero if any phase failed or ran out of time.
set -uo pipefail
cd "$(dirname "$0")/.."

out=${OUT:-docs/benchmarks}
mkdir -p "$out"
log="$out/gpu_check.log"
: > "$log"
py=${PYTHON:-python3}
deadline=$((SECONDS + ${GPU_CHECK_BUDGET_S:-330}))

export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export GPULAYERS_BACKEND=cupy
export MPLBACKEND=Agg
export PYTHONUNBUFFERED=1
# The kernel checks fail instead of skipping under CI; here they may skip.
unset CI GPULAYERS_REQUIRE_KERNEL_CHECK

say() { echo "$*" | tee -a "$log"; }

status=0
summary=()

# run NAME CAP_SECONDS RESERVE_SECONDS COMMAND...: runs under `timeout`
# (capped so that RESERVE_SECONDS of the budget stay for later phases), tees
# its output to the log, records pass/FAIL/TIMEOUT.
run() {
    local name=$1 cap=$2 reserve=$3
    shift 3
    local left=$((deadline - SECONDS - reserve))
    if [ "$left" -lt 15 ]; then
        say "=== $name: SKIPPED, the time budget is spent"
        summary+=("$name: skipped (no time left)")
        status=1
        return
    fi
    [ "$cap" -gt "$left" ] && cap=$left
    say ""
    say "=== $name (at most ${cap}s): $*"
    local t0=$SECONDS rc
    # SIGINT first so pytest still prints its summary; SIGKILL 15 s later.
    timeout -s INT -k 15 "$cap" "$@" 2>&1 | tee -a "$log"
    rc=${PIPESTATUS[0]}
    local took=$((SECONDS - t0)) what
    case $rc in
        0) what="passed" ;;
        124 | 137 | 130) what="TIMEOUT after ${took}s (cap ${cap}s)"; status=1 ;;
        *) what="FAILED (exit $rc)"; status=1 ;;
    esac
    say "=== $name: $what in ${took}s"
    summary+=("$name: $what, ${took}s")
}

commit="not a git checkout"
if git rev-parse --git-dir > /dev/null 2>&1; then
    commit="commit $(git rev-parse --short HEAD 2>/dev/null)"
    git diff --quiet HEAD 2>/dev/null || commit="$commit (with uncommitted changes)"
fi
say "gpu_check.sh  $(date -u '+%Y-%m-%d %H:%M:%S UTC')  $commit"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$log"

# ---------------------------------------------------------------- preflight
"$py" - << 'EOF' 2>&1 | tee -a "$log"
import platform, sys
print("python", platform.python_version())
for name in ("numpy", "cupy", "torch", "pytest", "hypothesis", "h5py", "skimage", "matplotlib"):
    try:
        mod = __import__(name)
        print(f"{name} {getattr(mod, '__version__', '?')}")
    except Exception as exc:
        print(f"{name}: not importable ({type(exc).__name__}: {exc})")
try:
    from cupy_backends.cuda.libs import nvrtc
    print("NVRTC", ".".join(map(str, nvrtc.getVersion())))
except Exception as exc:
    print(f"NVRTC: not loadable ({type(exc).__name__}: {exc})")
EOF
if ! "$py" -c '
import sys, backends
ok, why = backends.cupy_status()
if ok:
    from backends.cupy_ops import CupyOps
    print("gpulayers will run on:", CupyOps().device_name())
else:
    print("gpu_check.sh: no usable CUDA GPU here, so there is nothing to check:", why, file=sys.stderr)
sys.exit(0 if ok else 3)
' 2>&1 | tee -a "$log"; then
    say "gpu_check.sh: stopped at the preflight (see above)."
    exit 3
fi

pytest_args=(-q -p no:cacheprovider -o console_output_style=classic --durations=10)

# ------------------------------------------------------- tests, benchmark
run "GPU tests" 110 150 "$py" -m pytest "${pytest_args[@]}" -m gpu --junitxml="$out/pytest-gpu.xml"
run "suite on cupy" 120 120 "$py" -m pytest "${pytest_args[@]}" -m "not gpu and not kernels" --junitxml="$out/pytest-suite.xml"
run "benchmark" 150 0 "$py" scripts/bench_gpu.py --out "$out" "$@"
run "kernel checks" 45 0 "$py" -m pytest "${pytest_args[@]}" -m "kernels and not gpu" --junitxml="$out/pytest-kernels.xml"

say ""
say "=== summary ($SECONDS s in all)"
for line in "${summary[@]}"; do say "  $line"; done
say "outputs: $out/gpu_check.log, $out/pytest-*.xml, $out/gpu.md"
exit $status
