#!/usr/bin/env bash
# The test command: sets up .venv from a fresh clone (Python >= 3.10 and pip
# are all it needs), installs gpulayers with its test extra, runs pytest.
# Extra arguments go to pytest, e.g. `scripts/test.sh -k conv -x`.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
# Reinstall only when the package metadata changed since the last install.
stamp=.venv/.gpulayers-installed
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
    echo "$want" > "$stamp"
fi
exec .venv/bin/python -m pytest "$@"
