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
# Tests that need etcd or beacond fail instead of skipping when the binary is missing.
export BEACON_TEST_REQUIRE_SERVERS=1
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
# The CI tier of the fault-injection suite (network namespaces: needs root, as CI has).
if [ "$(id -u)" -eq 0 ]; then
  echo "== jepsen-tests CI tier"; scripts/jepsen-ci.sh
else
  echo "== jepsen-tests CI tier skipped: needs root (run sudo -E scripts/jepsen-ci.sh)" >&2
fi
