#!/usr/bin/env bash
# Creates .venv with the Python clients the tests use (ADBC Flight SQL driver, pyarrow).
set -euo pipefail
cd "$(dirname "$0")/.."
requirements=client/tests/python/requirements.txt
if [ ! -x .venv/bin/python ] || ! cmp -s "$requirements" .venv/.requirements; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" .venv/.requirements
fi
