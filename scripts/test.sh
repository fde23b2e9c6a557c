#!/usr/bin/env bash
# The test command: installs the third-party clients the tests drive (stomp.py, from
# PyPI), then runs every test. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c "import stomp" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check "stomp.py==9.0.0"
fi
cargo test "$@"
