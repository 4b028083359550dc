#!/usr/bin/env bash
# Set up, then run the main demo (writes demo.png).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python examples/demo.py demo.png
