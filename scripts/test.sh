#!/usr/bin/env bash
# Runs every test of the project: Rust unit tests, the integration suite (TPC-H and
# TPC-DS differential, sqllogictest files, separate processes, error cases), the benchmark
# harness in quick mode, doctests, and the Python ADBC client tests; then prints one
# closing line with the totals. Tests over object stores start an S3-compatible server
# (moto) from the virtual environment this script makes first; the web UI's tests drive
# Debian's Chromium, which scripts/browser-env.sh installs when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# Reuse one build directory across clones and runs: DataFusion takes minutes to build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/quiver-target}"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# The Python clients and the S3-compatible test server (moto) live in .venv; the Rust
# object-store tests start that server too.
scripts/python-env.sh
scripts/browser-env.sh
# TPC-DS at scale factor 0.01 and its 99 queries, from DuckDB's tpcds extension (PyPI).
.venv/bin/python scripts/gen-tpcds.py
cargo test --workspace "$@" 2>&1 | tee "$log" || status=$?
passed=$( (grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' "$log" || true) | awk '{s+=$4} END {print s+0}')
failed=$( (grep -Eo '[0-9]+ failed;' "$log" || true) | awk '{s+=$1} END {print s+0}')

# Python clients against real `quiver` processes.
: > "$log"
QUIVER_BIN="$CARGO_TARGET_DIR/debug/quiver" .venv/bin/python -m unittest discover \
  -s client/tests/python -p 'test_*.py' -v 2>&1 | tee "$log" || status=$?
ran=$( (grep -Eo '^Ran [0-9]+ test' "$log" || true) | awk '{s+=$2} END {print s+0}')
py_failed=$( (grep -Eo '(failures|errors)=[0-9]+' "$log" || true) | cut -d= -f2 | awk '{s+=$1} END {print s+0}')
passed=$((passed + ${ran:-0} - py_failed))
failed=$((failed + py_failed))

echo
echo "tests: ${passed} passed, ${failed} failed"
exit "$status"
