#!/usr/bin/env bash
# Regenerates testdata/tpch/sf0.01 (TPC-H at scale factor 0.01 as Parquet) with tpchgen.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/quiver-target}"
rm -rf testdata/tpch/sf0.01
cargo run -p quiver-benches -- gen --sf 0.01 --out testdata/tpch/sf0.01 --files 2 --row-group-rows 4096
