#!/usr/bin/env bash
# The main job: sets up .venv from a fresh clone (Python >= 3.10 and pip are
# all it needs), installs gpulayers with its demo extra, and trains the face /
# non-face CNN. Arguments go to the demo: --epochs, --backend, --output-dir.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
stamp=.venv/.gpulayers-demo-installed
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[demo]"
    echo "$want" > "$stamp"
fi
exec .venv/bin/python -m gpulayers.demo "$@"
