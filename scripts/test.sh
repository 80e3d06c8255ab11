#!/usr/bin/env bash
# Runs every test: formatting, lints, the Rust unit and integration tests, and the official
# SDK suites (scripts/sdk-tests.sh) when present. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace
if [ -x scripts/sdk-tests.sh ]; then
  echo "== official SDK suites"
  scripts/sdk-tests.sh
fi
if [ -x scripts/bench.sh ]; then
  echo "== benchmark harness (tiny, no timing assertions)"
  scripts/bench.sh --tiny
fi
echo "== all tests passed"
