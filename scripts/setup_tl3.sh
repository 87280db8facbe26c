#!/usr/bin/env bash
# Creates .venv-tl3 (TransformerLens 3.9: HookedTransformer) from requirements/tl3.txt if
# missing, and activates it. Sourced by scripts/test.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
make_venv .venv-tl3 requirements/tl3.txt
