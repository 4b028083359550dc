#!/usr/bin/env bash
# Set up, then run the fast test suite (long statistical runs are marked slow: run them with `-m slow`),
# one pytest worker per core (each file on one worker, so a module's compiled targets are built once).
# pytest exits 5 when no test ran: that is a failure here too.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python -m pytest -q -n auto --dist loadfile -m "not slow" "$@"
