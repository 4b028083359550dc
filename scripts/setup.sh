#!/usr/bin/env bash
# Install ppl (editable) with its test extra. torch==2.13.0 first: a CPU build, no CUDA downloads.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[test]"
