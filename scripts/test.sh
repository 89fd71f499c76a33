#!/usr/bin/env bash
# Set up the environment, lint, and run the whole test suite (notebooks and real-data tests
# included; real-data tests skip with a message where ../shared/data is absent).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONHASHSEED=0
exec .venv/bin/python -m pytest "$@"
