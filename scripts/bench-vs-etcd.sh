#!/usr/bin/env bash
# Benchmarks a 3-node etcd and a 3-node Beacon on loopback with the same program (`beacon bench`,
# which speaks only the etcd v3 API) and the same flags, one cluster after the other, then prints
# one comparison table.
#
#   scripts/bench-vs-etcd.sh [--etcd-only] [--quick]
#     --etcd-only   skip Beacon (columns show "-")
#     --quick       10x fewer requests per case (a smoke test of the script itself)
#
# Writes go to the leader only (a follower would add a forwarding hop that is not what we are
# measuring); reads are spread over all three members, as etcd's own benchmark tool does.
# Watch cases: latency (one watcher on the leader), fan-out (1,000 watchers of one key over 10
# connections spread over all members, puts to the leader; time to the last watcher), capacity
# (100,000 watches of distinct keys over 1,000 streams on 100 connections, all on the leader; the
# leader's VmRSS is read before and while they are held, giving bytes per watch, everything
# included: watches, streams, connections).
# Everything started here is stopped on exit, including on failure or Ctrl-C.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$BEACON_ROOT"

etcd_only=false
scale=1
for argument in "$@"; do
  case "$argument" in
    --etcd-only) etcd_only=true ;;
    --quick) scale=10 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown argument: $argument (see --help)" >&2; exit 2 ;;
  esac
done

beacon="$CARGO_TARGET_DIR/debug/beacon"
etcd_endpoints="127.0.0.1:32379,127.0.0.1:32479,127.0.0.1:32579"
beacon_endpoints="127.0.0.1:2379,127.0.0.1:12379,127.0.0.1:22379"
work_dir="$(mktemp -d -t bench-vs-etcd.XXXXXX)"
etcd_pids=()
beacon_started=false

cleanup() {
  local status=$?
  # A second Ctrl-C (or the INT trap's own exit) must not cut the cleanup short.
  trap '' INT TERM
  stop_etcd
  if $beacon_started; then scripts/cluster.sh stop >/dev/null 2>&1 || true; fi
  rm -rf "$work_dir"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_etcd() {
  local pid
  for pid in "${etcd_pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  # etcd may take a while to stop once its peers are gone; give it 5 s, then SIGKILL.
  local deadline=$((SECONDS + 5))
  for pid in "${etcd_pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  etcd_pids=()
}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

install_tools() {
  local packages=()
  command -v etcd >/dev/null || packages+=(etcd-server)
  command -v jq >/dev/null || packages+=(jq)
  if [ ${#packages[@]} -gt 0 ]; then
    echo "installing ${packages[*]} with apt-get"
    as_root apt-get update -qq
    as_root apt-get install -y -qq "${packages[@]}"
  fi
}

build() {
  if $etcd_only; then
    cargo build --quiet -p beacon-cli --bins
  else
    cargo build --quiet -p beacon-server -p beacon-cli --bins
  fi
}

# Waits (up to 30 s) until every endpoint answers a linearizable read.
wait_healthy() {
  local endpoints=$1 deadline=$((SECONDS + 30))
  until "$beacon" --endpoints "$endpoints" --timeout 1s endpoint health >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      echo "cluster $endpoints not healthy after 30 s" >&2
      "$beacon" --endpoints "$endpoints" --timeout 1s endpoint health >&2 || true
      return 1
    fi
    sleep 0.2
  done
}

start_etcd() {
  local cluster="" index name
  for index in 0 1 2; do
    cluster+="${cluster:+,}e$index=http://127.0.0.1:$((32380 + 100 * index))"
  done
  for index in 0 1 2; do
    name="e$index"
    local client="http://127.0.0.1:$((32379 + 100 * index))"
    local peer="http://127.0.0.1:$((32380 + 100 * index))"
    etcd --name "$name" --data-dir "$work_dir/$name" \
      --listen-client-urls "$client" --advertise-client-urls "$client" \
      --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
      --initial-cluster "$cluster" --initial-cluster-state new \
      --initial-cluster-token bench-vs-etcd >"$work_dir/$name.log" 2>&1 &
    etcd_pids+=($!)
  done
  wait_healthy "$etcd_endpoints"
}

# PID of the member serving client endpoint $2 of system $1.
member_pid() {
  local system=$1 port=${2##*:}
  if [ "$system" = etcd ]; then
    echo "${etcd_pids[$(((port - 32379) / 100))]}"
  else
    cat "$BEACON_ROOT/.local-cluster/node$((port / 10000 + 1)).pid"
  fi
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# watch-capacity against one member, sampling its RSS before the watches exist and while they
# are held; prints the bench's JSON report extended with the RSS figures and bytes per watch.
capacity_case() {
  local system=$1 target=$2 watches=$3 streams=$4 pid before held report
  pid=$(member_pid "$system" "$target")
  before=$(rss_kb "$pid")
  "$beacon" --endpoints "$target" -o json bench watch-capacity --watches "$watches" \
    --streams "$streams" --conns $((streams / 10 > 0 ? streams / 10 : 1)) --hold 5s \
    >"$work_dir/capacity.out" 2>"$work_dir/capacity.err" &
  local bench_pid=$!
  until grep -q '^holding' "$work_dir/capacity.err"; do
    kill -0 "$bench_pid" 2>/dev/null || break
    sleep 0.1
  done
  sleep 1 # let the member finish any allocation that follows the last creation
  held=$(rss_kb "$pid")
  wait "$bench_pid" || { cat "$work_dir/capacity.err" >&2; return 1; }
  jq -c --argjson before "$before" --argjson held "$held" --argjson watches "$watches" \
    '. + {rss_before_kb: $before, rss_held_kb: $held,
          bytes_per_watch: (($held - $before) * 1024 / $watches)}' "$work_dir/capacity.out"
}

leader_of() {
  "$beacon" --endpoints "$1" endpoint status -o json | jq -r '.[] | select(.is_leader) | .endpoint'
}

# Runs every case against one cluster; appends "system case json" lines to $work_dir/results.
run_cases() {
  local system=$1 endpoints=$2 leader
  leader=$(leader_of "$endpoints")
  [ -n "$leader" ] || { echo "$system: no leader among $endpoints" >&2; return 1; }
  echo "== $system (leader $leader)" >&2
  "$beacon" --endpoints "$leader" put bench-key bench-value >/dev/null
  local -a cases=(
    "sequential put|$leader|put --conns 1 --clients 1 --total $((2000 / scale)) --key-space 100000"
    "put, 64 in flight|$leader|put --conns 8 --clients 64 --total $((20000 / scale)) --key-space 100000"
    "linearizable range, 64 in flight|$endpoints|range --consistency l --conns 8 --clients 64 --total $((20000 / scale)) --key bench-key"
    "serializable range, 64 in flight|$endpoints|range --consistency s --conns 8 --clients 64 --total $((20000 / scale)) --key bench-key"
  )
  local entry label target flags report
  for entry in "${cases[@]}"; do
    IFS='|' read -r label target flags <<<"$entry"
    # shellcheck disable=SC2086 # $flags is a list of words
    report=$("$beacon" --endpoints "$target" -o json bench $flags)
    echo "   $label: $report" >&2
    printf '%s\t%s\t%s\n' "$system" "$label" "$report" >>"$work_dir/results"
  done
  # Leader first: watch benches put to the first endpoint and spread watchers from there.
  local ordered="$leader" endpoint
  for endpoint in ${endpoints//,/ }; do
    [ "$endpoint" = "$leader" ] || ordered+=",$endpoint"
  done
  local -a watch_cases=(
    "watch latency|$leader|watch-latency --total $((2000 / scale))"
    "watch fan-out|$ordered|watch-fanout --watchers 1000 --conns 10 --total $((200 / scale))"
  )
  for entry in "${watch_cases[@]}"; do
    IFS='|' read -r label target flags <<<"$entry"
    # shellcheck disable=SC2086 # $flags is a list of words
    report=$("$beacon" --endpoints "$target" -o json bench $flags)
    echo "   $label: $report" >&2
    printf '%s\t%s\t%s\n' "$system" "$label" "$report" >>"$work_dir/results"
  done
  report=$(capacity_case "$system" "$leader" $((100000 / scale)) $((1000 / scale)))
  echo "   watch capacity: $report" >&2
  printf '%s\t%s\t%s\n' "$system" "watch capacity" "$report" >>"$work_dir/results"
}

field() { # system case jq-field
  awk -F'\t' -v s="$1" -v c="$2" '$1 == s && $2 == c { print $3 }' "$work_dir/results" |
    jq -r "$3 // empty" 2>/dev/null || true
}

print_table() {
  local labels=("sequential put" "put, 64 in flight" "linearizable range, 64 in flight" "serializable range, 64 in flight")
  local format="%-34s | %10s | %9s | %9s | %12s | %11s | %11s | %5s\n"
  echo
  # shellcheck disable=SC2059 # the format string is ours
  printf "$format" case "etcd req/s" "etcd p50" "etcd p99" "beacon req/s" "beacon p50" "beacon p99" ratio
  local label
  for label in "${labels[@]}"; do
    local etcd_rate etcd_p50 etcd_p99 beacon_rate beacon_p50 beacon_p99 ratio="-"
    etcd_rate=$(field etcd "$label" .requests_per_second)
    etcd_p50=$(field etcd "$label" .p50_ms)
    etcd_p99=$(field etcd "$label" .p99_ms)
    beacon_rate=$(field beacon "$label" .requests_per_second)
    beacon_p50=$(field beacon "$label" .p50_ms)
    beacon_p99=$(field beacon "$label" .p99_ms)
    if [ -n "$etcd_rate" ] && [ -n "$beacon_rate" ]; then
      ratio=$(awk -v b="$beacon_rate" -v e="$etcd_rate" 'BEGIN { printf "%.2f", b / e }')
    fi
    rate() { [ -n "$1" ] && awk -v v="$1" 'BEGIN { printf "%.0f", v }' || echo -; }
    ms() { [ -n "$1" ] && awk -v v="$1" 'BEGIN { printf "%.2fms", v }' || echo -; }
    # shellcheck disable=SC2059
    printf "$format" "$label" "$(rate "$etcd_rate")" "$(ms "$etcd_p50")" "$(ms "$etcd_p99")" \
      "$(rate "$beacon_rate")" "$(ms "$beacon_p50")" "$(ms "$beacon_p99")" "$ratio"
  done

  # Watch rows: one metric per row; ratio is beacon / etcd (lower is better for every row).
  local watch_format="%-44s | %10s | %10s | %5s | %s\n"
  echo
  # shellcheck disable=SC2059
  printf "$watch_format" "watch metric" etcd beacon ratio target
  local -a rows=(
    "watch latency p50|watch latency|.p50_ms|ms|"
    "watch latency p99|watch latency|.p99_ms|ms|<= etcd"
    "fan-out 1000 watchers/10 conns, last p50|watch fan-out|.p50_ms|ms|"
    "fan-out 1000 watchers/10 conns, last p99|watch fan-out|.p99_ms|ms|<= etcd / 2"
    "create first 10k watches|watch capacity|.create_10k_seconds|s|< 1 s"
    "create all watches (100k over 1000 streams)|watch capacity|.create_all_seconds|s|"
    "member memory per watch|watch capacity|.bytes_per_watch|B|<= 500 B"
  )
  local row metric case_label jq_field unit target etcd_value beacon_value
  for row in "${rows[@]}"; do
    IFS='|' read -r metric case_label jq_field unit target <<<"$row"
    etcd_value=$(field etcd "$case_label" "$jq_field")
    beacon_value=$(field beacon "$case_label" "$jq_field")
    ratio="-"
    if [ -n "$etcd_value" ] && [ -n "$beacon_value" ]; then
      ratio=$(awk -v b="$beacon_value" -v e="$etcd_value" 'BEGIN { if (e > 0) printf "%.2f", b / e; else print "-" }')
    fi
    value() {
      if [ -z "$1" ]; then echo -; return; fi
      case "$unit" in
        ms) awk -v v="$1" 'BEGIN { printf "%.2fms", v }' ;;
        s) awk -v v="$1" 'BEGIN { printf "%.3fs", v }' ;;
        B) awk -v v="$1" 'BEGIN { printf "%.0f B", v }' ;;
      esac
    }
    # shellcheck disable=SC2059
    printf "$watch_format" "$metric" "$(value "$etcd_value")" "$(value "$beacon_value")" "$ratio" "$target"
  done
}

install_tools
build
: >"$work_dir/results"

start_etcd
run_cases etcd "$etcd_endpoints"
stop_etcd

if ! $etcd_only; then
  beacon_started=true
  scripts/cluster.sh start local-3 >&2
  wait_healthy "$beacon_endpoints"
  run_cases beacon "$beacon_endpoints"
  scripts/cluster.sh stop >&2
  beacon_started=false
fi

print_table
