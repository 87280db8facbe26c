#!/usr/bin/env bash
# Set up (if needed) and run the main job on the built-in model and corpus: writes ONE
# self-contained HTML report (default out/report.html; open it in any browser).
#   bash scripts/report.sh [rope-interp report options, e.g. --out my.html --tokens 8192]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
rope-interp report "$@"
