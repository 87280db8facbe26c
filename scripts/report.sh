#!/usr/bin/env bash
# Set up (if needed) and run the main job on the built-in model and corpus:
#   bash scripts/report.sh [rope-interp report options]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
rope-interp summary "$@"
