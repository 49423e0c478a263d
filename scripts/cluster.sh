#!/usr/bin/env bash
# Builds and runs a local Beacon cluster on loopback from cluster-config/<name>/.
#   scripts/cluster.sh start [local-3|local-5]   build, start every member, wait for a leader
#   scripts/cluster.sh stop                      stop the members (SIGTERM)
#   scripts/cluster.sh status                    endpoint status of every member
# Each member also serves metrics and health over HTTP (the configs' [http] listen: 2381, 12381, …).
# Data and logs live in .local-cluster/<member>/ in the repository.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$BEACON_ROOT"
state_dir="$BEACON_ROOT/.local-cluster"
beacond="$CARGO_TARGET_DIR/debug/beacond"
beacon="$CARGO_TARGET_DIR/debug/beacon"

endpoints_of() {
  for config in "cluster-config/$1"/node*.toml; do
    awk '/^\[client\]/{c=1;next} /^\[/{c=0} c && /^listen/{gsub(/"/,"",$3); print $3}' "$config"
  done | paste -sd, -
}

dns_of() {
  for config in "cluster-config/$1"/node*.toml; do
    awk '/^\[dns\]/{c=1;next} /^\[/{c=0} c && /^listen/{gsub(/"/,"",$3); print $3}' "$config"
  done | paste -sd' ' -
}

http_of() {
  for config in "cluster-config/$1"/node*.toml; do
    awk '/^\[http\]/{c=1;next} /^\[/{c=0} c && /^listen/{gsub(/"/,"",$3); print $3}' "$config"
  done | paste -sd' ' -
}

start() {
  local cluster="${1:-local-3}"
  [ -d "cluster-config/$cluster" ] || { echo "no such cluster config: cluster-config/$cluster" >&2; exit 2; }
  scripts/install-deps.sh
  cargo build --quiet -p beacon-server -p beacon-cli --bins
  mkdir -p "$state_dir"
  echo "$cluster" > "$state_dir/cluster"
  for config in "cluster-config/$cluster"/node*.toml; do
    local name; name=$(basename "$config" .toml)
    local pidfile="$state_dir/$name.pid"
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "$name already running (pid $(cat "$pidfile"))"; continue
    fi
    mkdir -p "$state_dir/$name"
    nohup "$beacond" --config "$config" --data-dir "$state_dir/$name/data" \
      >>"$state_dir/$name/beacond.log" 2>&1 &
    echo $! > "$pidfile"
    echo "started $name (pid $!), log: $state_dir/$name/beacond.log"
  done
  local endpoints; endpoints=$(endpoints_of "$cluster")
  echo -n "waiting for a leader"
  for _ in $(seq 1 100); do
    if "$beacon" --endpoints "$endpoints" endpoint status -o json 2>/dev/null | grep -q '"is_leader": *true'; then
      echo; "$beacon" --endpoints "$endpoints" endpoint status
      cat <<USAGE

The cluster is up. Talk to it with:
  export PATH="$CARGO_TARGET_DIR/debug:\$PATH" BEACON_ENDPOINTS=$endpoints
  beacon put greeting hello && beacon get greeting
  ETCDCTL_API=3 etcdctl --endpoints $endpoints get greeting
DNS (every member; $(dns_of "$cluster")):
  beacon service register web --address 127.0.0.1 --port 8080
  dig @127.0.0.1 -p 8600 web.service.beacon SRV
Metrics and health (every member; $(http_of "$cluster")):
  curl -s 127.0.0.1:2381/metrics | grep ^beacon_server
  curl -s 127.0.0.1:2381/health; curl -s 127.0.0.1:2381/readyz
Stop it with: scripts/cluster.sh stop
USAGE
      return 0
    fi
    echo -n "."; sleep 0.2
  done
  echo; echo "no leader after 20 s; see the logs in $state_dir/*/beacond.log" >&2
  exit 1
}

stop() {
  [ -d "$state_dir" ] || return 0
  for pidfile in "$state_dir"/*.pid; do
    [ -f "$pidfile" ] || continue
    local pid; pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
      echo "stopped $(basename "$pidfile" .pid)"
    fi
    rm -f "$pidfile"
  done
}

status() {
  local cluster; cluster=$(cat "$state_dir/cluster" 2>/dev/null || echo local-3)
  "$beacon" --endpoints "$(endpoints_of "$cluster")" endpoint status
}

case "${1:-}" in
  start) start "${2:-local-3}" ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start [local-3|local-5] | stop | status" >&2; exit 2 ;;
esac
