#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite on both TransformerLens hosts:
#   bash scripts/test.sh [pytest args]
# Builds .venv-tl3 (TransformerLens 3.9, HookedTransformer) and .venv (TransformerLens 4.3,
# TransformerBridge: what the README installs), then ruff and mypy (the package's types), the
# suite in .venv (including the report's cross-host comparison, which runs the report in
# .venv-tl3 too), and the suite in .venv-tl3.
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
(source "$here/setup_tl3.sh")
(
    source "$here/setup.sh"
    ruff check rope_interp tests examples benchmarks scripts
    mypy
    python -m pytest "$@"
)
(
    source "$here/setup_tl3.sh"
    python -m pytest "$@"
)
