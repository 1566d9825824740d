#!/usr/bin/env bash
# The test command: pytest inside a fresh network namespace that has only loopback, so the tests (a local
# Ray cluster among them) can reach nothing but 127.0.0.1 and nothing downloads at run time.
# Creating the namespace needs root; elsewhere the tests run with the host network and say so.
# Usage: bash tools/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then
  exec unshare -n sh -c 'ip link set lo up && exec .venv/bin/python -m pytest -q "$@"' sh "$@"
fi
echo "warning: cannot create a network namespace here (needs root); running the tests with the host network" >&2
exec .venv/bin/python -m pytest -q "$@"
