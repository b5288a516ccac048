#!/usr/bin/env bash
# Runs every test of the project: unit tests, the integration suite (TPC-H differential,
# sqllogictest files, separate processes, error cases) and doctests.
set -euo pipefail
cd "$(dirname "$0")/.."
# Reuse one build directory across clones and runs: DataFusion takes minutes to build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/quiver-target}"
cargo test --workspace "$@"
