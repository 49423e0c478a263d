#!/usr/bin/env bash
# The CI tier of the Jepsen-style suite (jepsen-tests/README.md): a handful of 45 s scenarios on 3
# nodes in network namespaces (about 10 minutes once built), plus two negative controls — one beacond
# built with the deliberately broken features `unsafe-stale-reads` and `unsafe-unconfirmed-critical`,
# which the suite must catch (exit 1, and for health checks by the health checker's safety check).
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
# One broken build for every negative control (each feature breaks something the others' workloads
# do not look at: stale reads show in any workload; unconfirmed critical verdicts only in health).
CARGO_TARGET_DIR="$broken_target" cargo build -q -p beacon-server --bin beacond \
  --features unsafe-stale-reads,unsafe-unconfirmed-critical
jepsen="$CARGO_TARGET_DIR/debug/jepsen-tests"
beacond="$CARGO_TARGET_DIR/debug/beacond"
broken="$broken_target/debug/beacond"
out="${JEPSEN_OUT:-/tmp/beacon-jepsen/ci}"
time="${JEPSEN_TIME:-45}"
seed_args=(--seed "${JEPSEN_SEED:-1}")

failures=()
# scenario NAME EXPECTED_EXIT [--anomaly TEXT] ARGS...: the run must exit EXPECTED_EXIT and, with
# --anomaly, report an anomaly containing TEXT in its results.json (so a negative control is caught
# by the checker it is meant for, not by another).
scenario() {
  local name="$1" expected="$2" anomaly=""
  shift 2
  if [ "${1:-}" = "--anomaly" ]; then
    anomaly="$2"
    shift 2
  fi
  echo "== jepsen-ci: $name (expect exit $expected${anomaly:+ and an anomaly \"$anomaly\"})"
  local status=0 log run_dir
  log="$(mktemp)"
  "$jepsen" --nodes 3 --time "$time" --rate 50 --out-dir "$out" "${seed_args[@]}" "$@" | tee "$log" || status=$?
  run_dir="$(sed -n 's/^jepsen-tests: run directory //p' "$log")"
  rm -f "$log"
  if [ "$status" -ne "$expected" ]; then
    echo "jepsen-ci: $name: exit $status, expected $expected" >&2
    failures+=("$name (exit $status, expected $expected)")
  elif [ -n "$anomaly" ] && ! grep -qF -- "$anomaly" "$run_dir/results.json"; then
    echo "jepsen-ci: $name: no anomaly \"$anomaly\" in $run_dir/results.json" >&2
    failures+=("$name (not caught by the expected check)")
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
# Membership changes under load (add a learner and promote it, remove a voter — the leader too —
# and restart it with its old data, replace a wiped member): no acknowledged add lost.
scenario "set + membership" 0 --beacond "$beacond" --workload set --nemesis membership --interval 6
# A follower cut off while filler writes push the log past the snapshot (threshold 200) and the
# purge: it must catch up by installing a snapshot (exit 2 if no install shows in its log).
scenario "register + snapshot-install" 0 --beacond "$beacond" --workload register --nemesis snapshot-install --interval 8
# The health workload is the catalog workload plus health checks (its checks include the catalog's).
scenario "health + partition" 0 --beacond "$beacond" --workload health --nemesis partition --interval 8
# Negative control: stale "linearizable" reads from a partitioned or lagging node must be caught.
scenario "broken build + partition" 1 --beacond "$broken" --workload register --nemesis partition --interval 5
# Negative control: without the second member's confirmation, a bad path from the owner alone turns
# an endpoint that never went down critical.
scenario "broken build + bad paths" 1 --anomaly "safety: jepsen-h/b" --beacond "$broken" --workload health --nemesis none

if [ ${#failures[@]} -ne 0 ]; then
  echo "jepsen-ci: FAILED: ${failures[*]}" >&2
  exit 1
fi
echo "jepsen-ci: all scenarios behaved as expected"
