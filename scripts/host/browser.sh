#!/usr/bin/env bash
# Debian's chromium + chromedriver for the widget's browser test (no browser download at run time).
# Best effort: without root/apt the browser test is skipped with a reason.
set -uo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then exit 0; fi
if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
  echo "[browser] installing chromium and chromium-driver (Debian)" >&2
  apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
    || echo "[browser] install failed; the browser test will be skipped" >&2
else
  echo "[browser] chromium/chromedriver missing and not root: the browser test will be skipped" >&2
fi
exit 0
