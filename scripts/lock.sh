#!/usr/bin/env bash
# Writes the lock files requirements/tl4.txt and requirements/tl3.txt: exact versions of every
# package rope-interp's two test environments install (runtime, dev and docs extras), one per
# TransformerLens host, resolved by `uv pip compile` for CPython 3.11 on x86-64 Linux (CI's
# machine). torch is left out (scripts/venv.sh installs its pinned CPU build first).
#   bash scripts/lock.sh            re-resolve, keeping every version still allowed
#   bash scripts/lock.sh --upgrade  re-resolve to the newest releases (see scripts/drift.sh)
# Options are passed to uv (e.g. --upgrade-package transformers). ROPE_INTERP_HOSTS names the
# TransformerLens requirement of each lock (default: the tested releases, 4.3.0 and 3.9.0).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out_dir="${ROPE_INTERP_LOCK_DIR:-requirements}"
torch_version="${ROPE_INTERP_TORCH:-2.13.0}"
command -v uv >/dev/null || python3 -m pip install -q uv
mkdir -p "$out_dir"
for host in ${ROPE_INTERP_HOSTS:-"tl4:==4.3.0" "tl3:==3.9.0"}; do
    name=${host%%:*} tl=${host#*:}
    pins=$(mktemp -d)/pins.txt
    # torch's CPU build (local version +cpu) keeps the CUDA-only packages out of the resolution.
    printf 'transformer-lens%s\ntorch==%s+cpu\n' "$tl" "$torch_version" > "$pins"
    extra_links=()
    [ -d /opt/wheels ] && extra_links=(--find-links /opt/wheels)
    UV_PYTHON_DOWNLOADS=never uv pip compile pyproject.toml "$pins" \
        --extra dev --extra docs --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
        "${extra_links[@]}" --no-emit-package torch --no-emit-package rope-interp \
        --no-header --quiet "$@" -o "$out_dir/$name.txt"
    sed -i "s|-r $pins|the host and torch pins of scripts/lock.sh|" "$out_dir/$name.txt"
    rm -r "$(dirname "$pins")"
    sed -i "1i # Lock for .venv$( [ "$name" = tl4 ] || echo "-$name") (TransformerLens ${tl#==}): written by bash scripts/lock.sh; do not edit." "$out_dir/$name.txt"
    echo "lock: $out_dir/$name.txt ($(grep -c '==' "$out_dir/$name.txt") packages)" >&2
done
