#!/usr/bin/env bash
# Installs Debian's Chromium for the web UI's browser tests (test_web_ui.py drives it
# with Playwright from .venv), unless it is there already. Needs root, as CI has.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q chromium >/dev/null || {
  apt-get update -q >/dev/null
  apt-get install -y -q chromium >/dev/null
}
