#!/usr/bin/env bash
# The test command: installs the third-party clients and servers the tests drive (stomp.py
# from PyPI, PostgreSQL from Debian's packages), then runs every test. Safe to run again. ACTORMQ_SOAK=1 adds the soak test
# (tests/soak.rs; ACTORMQ_SOAK_SECS sets its length, 180 by default).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c "import stomp" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check "stomp.py==9.0.0"
fi
# PostgreSQL's server, for the master/slave tests on a database (each test starts a private
# one with initdb in a temporary folder; see tests/common/postgres.rs).
# systemd-analyze, to verify deploy/actormq.service (tests/deploy.rs).
packages=()
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  packages+=(postgresql)
fi
if ! command -v systemd-analyze >/dev/null 2>&1; then
  packages+=(systemd)
fi
if [ ${#packages[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" != "0" ]; then sudo="sudo"; fi
  echo "installing ${packages[*]} from Debian's packages for the tests" >&2
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${packages[@]}"
fi
# Said here, where it shows: whether the Dockerfile is built or only checked.
if docker info >/dev/null 2>&1; then
  echo "a Docker engine answers: tests/deploy.rs builds the image" >&2
else
  echo "no Docker engine answers here: tests/deploy.rs checks the Dockerfile without building it" >&2
fi
cargo test "$@"
# The soak (minutes of mixed abuse and restarts) runs only when asked for.
if [ "${ACTORMQ_SOAK:-}" = "1" ]; then
  cargo test --test soak -- --ignored --nocapture
fi
