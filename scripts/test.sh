#!/usr/bin/env bash
# Runs every test of the project: unit tests, the integration suite (TPC-H differential,
# sqllogictest files, separate processes, error cases) and doctests, then prints one
# closing line with the totals.
set -euo pipefail
cd "$(dirname "$0")/.."
# Reuse one build directory across clones and runs: DataFusion takes minutes to build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/quiver-target}"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace "$@" 2>&1 | tee "$log" || status=$?
passed=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s+=$1} END {print s+0}')
echo
echo "tests: ${passed} passed, ${failed} failed"
exit "$status"
