#!/usr/bin/env bash
# Creates .venv and installs the project with its test extra. Safe to run again: pip skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "error: Python 3.10 or newer is needed as '$PYTHON' (set PYTHON=/path/to/python3.11)" >&2
    exit 2
fi
if [ ! -x .venv/bin/python ]; then
    if ! "$PYTHON" -m venv .venv; then
        rm -rf .venv
        echo "error: '$PYTHON -m venv' failed; on Debian or Ubuntu install the venv module: sudo apt install python3-venv" >&2
        exit 2
    fi
fi
# requirements.lock pins every package to the versions CI installs (pyproject.toml keeps the ranges). For torch
# pip picks the CPU or CUDA build of the pinned version that this machine offers.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e ".[test]"
touch .venv/.installed
echo "ready: source .venv/bin/activate (or ./scripts/activate_venv.sh)"
