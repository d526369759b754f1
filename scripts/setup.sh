#!/usr/bin/env bash
# Set up .venv from poetry.lock with pip (idempotent: a second run with the same lock is instant).
# Poetry is installed into the venv to run the scripts (`poetry run ...`); pip does the installing
# because poetry's default source cannot be reached from every network.
# DOMAIN_GAP_EXTRAS="ray" also installs the locked optional extras named (`make test` does).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
"$PYTHON" - <<'PY' || { echo "error: Python 3.11 is required (torch 2.14.1 wheels are cp311)" >&2; exit 2; }
import sys
sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)
PY

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.installed
extras=${DOMAIN_GAP_EXTRAS:-}
want=$( (cat poetry.lock pyproject.toml scripts/setup.sh; echo "extras: $extras") | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

# pip, quietly: its full output is shown only when it fails (some machines' pip configs name
# local index folders that print a warning per package otherwise).
pip_q() {
  local log
  log=$(mktemp)
  if ! .venv/bin/python -m pip install --quiet "$@" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
}

echo "setting up .venv from poetry.lock${extras:+ with extras: $extras} (first run: a few minutes)"
req=.venv/requirements.lock.txt
# shellcheck disable=SC2086  # extras are words
.venv/bin/python scripts/lock_tools.py requirements poetry.lock $extras > "$req"
pip_q --upgrade "pip>=24.2"
pip_q -r "$req"
pip_q -c "$req" "poetry==2.5.1"
pip_q --no-deps --no-build-isolation -e . || pip_q --no-deps -e .
echo "$want" > "$stamp"
echo "setup done"
