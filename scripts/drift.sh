#!/usr/bin/env bash
# See dependency drift coming: re-resolve both lock files to the newest releases (into a temporary
# folder; the committed locks are untouched), show what changed, then build .venv-drift from the
# newest TransformerLens 4 lock and run the test suite in it.
#   bash scripts/drift.sh [pytest args]
# If it passes, adopt the new versions with: bash scripts/lock.sh --upgrade
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
newest=$(mktemp -d)
# The newest TransformerLens of each major line too, not only the tested releases.
ROPE_INTERP_LOCK_DIR="$newest" ROPE_INTERP_HOSTS='tl4:>=4,<5 tl3:>=3.5,<4' \
    bash scripts/lock.sh --upgrade
for name in tl4 tl3; do
    echo "== requirements/$name.txt -> newest releases:"
    diff <(grep '==' "requirements/$name.txt") <(grep '==' "$newest/$name.txt") || true
done
source scripts/venv.sh
mkdir -p .venv-drift
cp "$newest/tl4.txt" .venv-drift/lock.txt
make_venv .venv-drift .venv-drift/lock.txt
python -m pytest "$@"
