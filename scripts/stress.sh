#!/usr/bin/env bash
# The release stress run: the long versions of the reliability tests CI runs small.
#   - the kill loops (tests/gpulayers/test_saving_kill.py) with hundreds of SIGKILLs and SIGTERMs,
#   - the hostile-file tests (tests/gpulayers/test_saving_hostile.py) with thousands of mutants,
#   - the deep fuzz (tests/gpulayers/test_fuzz.py) with 500 examples per property.
# Each runs through scripts/test.sh (which sets up .venv); the counts can be overridden from the environment.
# Every part runs even if an earlier one fails; the exit status says whether all passed.
# Extra arguments go to each pytest run, e.g. `scripts/stress.sh -x`.
set -uo pipefail
cd "$(dirname "$0")/.."

failed=()
run() {  # run NAME VAR=VALUE TEST_FILE [pytest args]
    local name=$1 setting=$2 file=$3
    shift 3
    echo "== $name: $setting pytest $file"
    if ! env "$setting" bash scripts/test.sh -q -p no:cacheprovider "$file" "$@"; then
        failed+=("$name")
    fi
}

run "kill loops" "GPULAYERS_STRESS_KILLS=${GPULAYERS_STRESS_KILLS:-300}" tests/gpulayers/test_saving_kill.py "$@"
run "hostile files" "GPULAYERS_STRESS_MUTANTS=${GPULAYERS_STRESS_MUTANTS:-5000}" tests/gpulayers/test_saving_hostile.py "$@"
run "deep fuzz" "GPULAYERS_FUZZ_EXAMPLES=${GPULAYERS_FUZZ_EXAMPLES:-500}" tests/gpulayers/test_fuzz.py "$@"

if [ ${#failed[@]} -ne 0 ]; then
    echo "stress run FAILED: ${failed[*]}"
    exit 1
fi
echo "stress run passed"
