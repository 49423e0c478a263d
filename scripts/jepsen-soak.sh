#!/usr/bin/env bash
# The soak tier of the Jepsen-style suite: one long run, 5 nodes by default, kills and partitions,
# for as long as asked. Any jepsen-tests option may be given and overrides the defaults, e.g.
#   sudo -E scripts/jepsen-soak.sh --time 1800
#   sudo -E scripts/jepsen-soak.sh --time 7200 --workload set --nemesis all,snapshot --seed 42
# Exit code as jepsen-tests: 0 valid, 1 anomalies, 2 inconclusive, 3 harness error.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$BEACON_ROOT"
if [ "$(id -u)" -ne 0 ]; then
  echo "jepsen-soak: needs root (network namespaces, veth pairs, a bridge, nftables); run it with sudo -E" >&2
  exit 1
fi
scripts/install-deps.sh
cargo build -q -p beacon-server --bin beacond
cargo build -q -p jepsen-tests
# Later options win (clap keeps the last occurrence), so the caller's override these defaults.
exec "$CARGO_TARGET_DIR/debug/jepsen-tests" \
  --beacond "$CARGO_TARGET_DIR/debug/beacond" \
  --out-dir "${JEPSEN_OUT:-/tmp/beacon-jepsen/soak}" \
  --nodes 5 --time 1800 --workload register --nemesis kill,partition --interval 15 \
  "$@"
