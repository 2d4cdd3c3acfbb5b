#!/usr/bin/env bash
# `source scripts/activate_venv.sh` activates .venv in this shell; `./scripts/activate_venv.sh` opens a
# new shell with it active (exit to leave).
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ ! -f "$root/.venv/bin/activate" ]; then
    echo "error: no .venv in $root; run ./scripts/setup_venv.sh first" >&2
    return 2 2>/dev/null || exit 2
fi
if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    source "$root/.venv/bin/activate"
else
    exec bash --rcfile <(echo "[ -f ~/.bashrc ] && source ~/.bashrc; source '$root/.venv/bin/activate'") -i
fi
