#!/usr/bin/env bash
# Set up the environment and run the end-to-end job on the embedded synthetic dataset:
# data -> lesion-grouped split -> offline balancing -> training -> evaluation -> report.
# Extra arguments go to `python -m utils reproduce` (e.g. --data-dir data/raw/HAM10000).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONHASHSEED=0
exec .venv/bin/python -m utils reproduce "$@"
