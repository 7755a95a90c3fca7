#!/usr/bin/env bash
# The whole test suite: installs what the build and tests need, checks formatting and
# lints, then runs every unit and integration test.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

if cargo fmt --version >/dev/null 2>&1; then
  cargo fmt --all -- --check
fi
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --locked --all-targets -- -D warnings
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --locked 2>&1 | tee "$log"
# One closing line for the whole suite.
awk '/^test result:/ { p += $4; f += $6; s += $8 } END { printf "fusegate: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
