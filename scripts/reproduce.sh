#!/usr/bin/env bash
# Regenerate experiments/results.md and experiments/figures/ (16 seeds per env and baseline).
set -euo pipefail
cd "$(dirname "$0")/.."
python scripts/reproduce.py --seeds 16 "$@"
