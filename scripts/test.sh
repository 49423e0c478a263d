#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, integration and etcdctl compatibility tests.
# Installs missing system packages first. Build cache: $CARGO_TARGET_DIR (default ~/.cache/beacon/target).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$BEACON_ROOT"
scripts/install-deps.sh
echo "== cargo fmt"; cargo fmt --all -- --check
echo "== cargo clippy"; cargo clippy --workspace --all-targets -- -D warnings
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
