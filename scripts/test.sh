#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: bash scripts/test.sh [pytest args]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
ruff check rope_interp tests examples benchmarks
python -m pytest "$@"
# The TransformerBridge (TransformerLens 4) suite, in its own environment .venv-tl4.
bash "$(dirname "${BASH_SOURCE[0]}")/test_tl4.sh"
