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
cargo test --locked
