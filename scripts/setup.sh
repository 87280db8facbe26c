#!/usr/bin/env bash
# Creates .venv (TransformerLens 4: TransformerBridge, what `pip install transformer-lens` gives
# today) from requirements/tl4.txt if missing, and activates it. Sourced by scripts/report.sh
# and scripts/test.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
make_venv .venv requirements/tl4.txt
