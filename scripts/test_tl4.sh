#!/usr/bin/env bash
# Set up (if needed) .venv-tl4 (TransformerLens 4.x) and run the TransformerBridge suite:
#   bash scripts/test_tl4.sh [pytest args]
# --confcutdir keeps pytest from loading tests/conftest.py, whose HookedTransformer fixtures
# cannot import under TransformerLens 4; tests/bridge/conftest.py stands in for it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_tl4.sh"
python -m pytest tests/bridge -q --confcutdir=tests/bridge -p no:cacheprovider "$@"
