#!/usr/bin/env bash
# The CI tier of the Jepsen-style suite (jepsen-tests/README.md): a handful of 45 s scenarios on 3
# nodes in network namespaces (about 7 minutes once built), plus the negative control — a beacond built with
# the deliberately broken `unsafe-stale-reads` feature, which the suite must catch (exit 1).
# Needs root (namespaces, veths, nftables). CI pins the seed (JEPSEN_SEED, default 1) so that a CI
# run's fault schedule is repeatable and the negative control is known to be caught; the soak tier
# (scripts/jepsen-soak.sh) draws random seeds.
# Run directories: $JEPSEN_OUT (default /tmp/beacon-jepsen/ci); data is kept for failed runs.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$BEACON_ROOT"
if [ "$(id -u)" -ne 0 ]; then
  echo "jepsen-ci: needs root (network namespaces, veth pairs, a bridge, nftables); run it with sudo -E" >&2
  exit 1
fi
scripts/install-deps.sh
broken_target="${JEPSEN_BROKEN_TARGET_DIR:-${CARGO_TARGET_DIR}-broken}"
echo "== jepsen-ci: building beacond, jepsen-tests and the broken beacond ($broken_target)"
cargo build -q -p beacon-server --bin beacond
cargo build -q -p jepsen-tests
CARGO_TARGET_DIR="$broken_target" cargo build -q -p beacon-server --bin beacond --features unsafe-stale-reads
jepsen="$CARGO_TARGET_DIR/debug/jepsen-tests"
beacond="$CARGO_TARGET_DIR/debug/beacond"
broken="$broken_target/debug/beacond"
out="${JEPSEN_OUT:-/tmp/beacon-jepsen/ci}"
time="${JEPSEN_TIME:-45}"
seed_args=(--seed "${JEPSEN_SEED:-1}")

failures=()
# scenario NAME EXPECTED_EXIT ARGS...
scenario() {
  local name="$1" expected="$2"
  shift 2
  echo "== jepsen-ci: $name (expect exit $expected)"
  local status=0
  "$jepsen" --nodes 3 --time "$time" --rate 50 --out-dir "$out" "${seed_args[@]}" "$@" || status=$?
  if [ "$status" -ne "$expected" ]; then
    echo "jepsen-ci: $name: exit $status, expected $expected" >&2
    failures+=("$name (exit $status, expected $expected)")
  else
    echo "jepsen-ci: $name: ok"
  fi
}

scenario "register + partition" 0 --beacond "$beacond" --workload register --nemesis partition --interval 8
scenario "set + kill" 0 --beacond "$beacond" --workload set --nemesis kill --interval 8
scenario "register + pause" 0 --beacond "$beacond" --workload register --nemesis pause --interval 8
scenario "set + partition, loss" 0 --beacond "$beacond" --workload set --nemesis partition,loss --interval 8
scenario "register + kill, clock" 0 --beacond "$beacond" --workload register --nemesis kill,clock --interval 8
scenario "watch + partition, kill" 0 --beacond "$beacond" --workload watch --nemesis partition,kill --interval 8
scenario "lease + kill" 0 --beacond "$beacond" --workload lease --nemesis kill --interval 8
scenario "catalog + partition" 0 --beacond "$beacond" --workload catalog --nemesis partition --interval 8
# Negative control: stale "linearizable" reads from a partitioned or lagging node must be caught.
scenario "broken build + partition" 1 --beacond "$broken" --workload register --nemesis partition --interval 5

if [ ${#failures[@]} -ne 0 ]; then
  echo "jepsen-ci: FAILED: ${failures[*]}" >&2
  exit 1
fi
echo "jepsen-ci: all scenarios behaved as expected"
