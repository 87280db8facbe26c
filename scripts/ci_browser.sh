#!/usr/bin/env bash
# Installs headless Chromium for tests/test_browser.py (the HTML report in a real browser).
# A no-op when Chromium is already there; installs only when running as root (CI containers).
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
    || command -v google-chrome >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "ci_browser: installing chromium for the browser test..." >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
    echo "ci_browser: chromium missing and not root: tests/test_browser.py will be skipped" >&2
fi
