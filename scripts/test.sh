#!/usr/bin/env bash
# The test command: installs the third-party clients the tests drive (stomp.py, from
# PyPI), then runs every test. Safe to run again. ACTORMQ_SOAK=1 adds the soak test
# (tests/soak.rs; ACTORMQ_SOAK_SECS sets its length, 180 by default).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c "import stomp" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check "stomp.py==9.0.0"
fi
cargo test "$@"
# The soak (minutes of mixed abuse and restarts) runs only when asked for.
if [ "${ACTORMQ_SOAK:-}" = "1" ]; then
  cargo test --test soak -- --ignored --nocapture
fi
