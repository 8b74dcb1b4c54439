#!/usr/bin/env bash
# One command for a lent GPU machine: preflight, the GPU tests, the benchmark
# against PyTorch, the kernel checks. Uses only what that machine has (python3
# with cupy, numpy, torch, pytest, hypothesis, h5py, scikit-image,
# matplotlib): nothing is installed, nothing is downloaded, and gpulayers need
# not be installed (the repository root goes on PYTHONPATH).
#
#   scripts/gpu_check.sh            # from anywhere; outputs in ${OUT:-docs/benchmarks}
#   scripts/gpu_check.sh --repeats 30 --only conv3x3s1,train   # arguments go to bench_gpu.py
#
# Phases, in this order, each under its own time cap and independent of the
# others (a failed phase is reported and the next one runs); the whole run
# stays inside GPU_CHECK_BUDGET_S (default 450 s, under the 8 minutes a
# check may take):
#   1. preflight (scripts/gpu_preflight.py): versions, cupy sees the device,
#      every kernel module compiles with NVRTC, one GEMM agrees with numpy;
#   2. the GPU tests, by path (collection needs nothing but numpy, pytest and
#      cupy), with CUDA_LAUNCH_BLOCKING=1 so a kernel fault names its launch;
#   3. scripts/bench_gpu.py against PyTorch;
#   4. the NVRTC compile check of every kernel for sm_80 and sm_90 with this
#      machine's NVRTC (no spills, no warnings; CI runs it and the host
#      emulation too).
# Always writes gpu.md (the phases, what was measured, what failed, and the
# device-operation counts of the training step), gpu_check.log and
# pytest-*.xml to the output folder, and prints a short summary last. Exits
# non-zero if any phase failed or ran out of time.
set -uo pipefail
cd "$(dirname "$0")/.."

out=${OUT:-docs/benchmarks}
mkdir -p "$out"
log="$out/gpu_check.log"
: > "$log"
py=${PYTHON:-python3}
budget=${GPU_CHECK_BUDGET_S:-450}
deadline=$((SECONDS + budget))
bench_md=$(mktemp)

export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export GPULAYERS_BACKEND=cupy
export MPLBACKEND=Agg
export PYTHONUNBUFFERED=1
# The kernel checks fail instead of skipping under CI; here they may skip.
unset CI GPULAYERS_REQUIRE_KERNEL_CHECK

say() { echo "$*" | tee -a "$log"; }

status=0
rows=()    # markdown rows of the phase table
summary=() # one line per phase

# run NAME CAP_SECONDS RESERVE_SECONDS COMMAND...: runs under `timeout`
# (capped so that RESERVE_SECONDS of the budget stay for later phases), tees
# its output to the log, records passed/FAILED/TIMEOUT.
run() {
    local name=$1 cap=$2 reserve=$3
    shift 3
    local left=$((deadline - SECONDS - reserve))
    if [ "$left" -lt 15 ]; then
        say "=== $name: SKIPPED, the time budget is spent"
        summary+=("$name: skipped (no time left)")
        rows+=("| $name | skipped: no time left | 0 |")
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
    rows+=("| $name | $what | $took |")
}

commit="not a git checkout"
if git rev-parse --git-dir > /dev/null 2>&1; then
    commit="commit $(git rev-parse --short HEAD 2>/dev/null)"
    git diff --quiet HEAD 2>/dev/null || commit="$commit (with uncommitted changes)"
fi
card="no nvidia-smi"
command -v nvidia-smi > /dev/null && card=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)
started=$(date -u '+%Y-%m-%d %H:%M:%S UTC')

# gpu.md is written however the run ends (a failed phase, the budget, Ctrl-C).
write_report() {
    {
        echo "# GPU check"
        echo
        echo "- $started, $commit"
        echo "- device: $card"
        echo "- \`scripts/gpu_check.sh\`: $SECONDS s of a ${budget} s budget; the full log is gpu_check.log"
        echo
        echo "| phase | result | seconds |"
        echo "|---|---|---|"
        for row in "${rows[@]}"; do echo "$row"; done
        echo
        if [ -s "$bench_md" ]; then
            sed 's/^#/##/' "$bench_md"  # its headings one level down
        else
            echo "## GPU benchmark"
            echo
            echo "No figures this run: the benchmark phase did not finish (see the table above and gpu_check.log)."
        fi
        echo
        echo "## Device operations per training step"
        echo
        echo "Counted without a GPU (tests/kernels/test_step_budget.py, the counting stand-in for cupy);"
        echo "history in gpu_step_counts.md."
        echo
        grep '^|' docs/benchmarks/gpu_step_counts.md 2>/dev/null | head -2
        grep '^|' docs/benchmarks/gpu_step_counts.md 2>/dev/null | tail -2
    } > "$out/gpu.md"
    rm -f "$bench_md"
}
trap write_report EXIT

say "gpu_check.sh  $started  $commit"
say "device: $card"

pytest_args=(-q -p no:cacheprovider -o console_output_style=classic --durations=10)
gpu_tests=(tests/backends/test_cupy_kernels_gpu.py tests/backends/test_ops_cupy.py tests/gpulayers/test_data_adapters.py)
kernel_tests=(tests/backends/test_kernels_compile.py)

run "preflight" 90 300 "$py" scripts/gpu_preflight.py
run "GPU tests" 150 150 env CUDA_LAUNCH_BLOCKING=1 "$py" -m pytest "${pytest_args[@]}" -m gpu "${gpu_tests[@]}" --junitxml="$out/pytest-gpu.xml"
run "benchmark" 170 45 "$py" scripts/bench_gpu.py --report "$bench_md" "$@"
run "kernel checks" 45 0 "$py" -m pytest "${pytest_args[@]}" -m "kernels and not gpu" "${kernel_tests[@]}" --junitxml="$out/pytest-kernels.xml"

say ""
say "=== summary ($SECONDS s in all)"
for line in "${summary[@]}"; do say "  $line"; done
say "outputs: $out/gpu.md, $out/gpu_check.log, $out/pytest-*.xml"
exit $status
