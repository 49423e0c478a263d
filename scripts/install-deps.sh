#!/usr/bin/env bash
# Installs the Debian packages Beacon needs to build and test, when they are missing.
#   build: protobuf-compiler (protoc), libclang-dev + clang (bindgen), librocksdb-dev (RocksDB)
#   tests: etcd-client (etcdctl compatibility tests), etcd-server (bench-vs-etcd),
#          bind9-dnsutils (dig: DNS tests), dnsperf (DNS benchmark)
#   jepsen-tests: nftables, iptables, iputils-ping, iproute2 (namespaces, partitions),
#                 faketime (clock skew), fiu-utils (disk faults)
set -euo pipefail
packages=(protobuf-compiler libclang-dev clang librocksdb-dev etcd-client etcd-server
  bind9-dnsutils dnsperf nftables iptables iputils-ping faketime fiu-utils iproute2)
missing=()
for package in "${packages[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "install-deps: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian's etcd-server package may start a system etcd on 2379; Beacon's local cluster needs it.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
  $sudo systemctl stop etcd || true
  $sudo systemctl disable etcd >/dev/null 2>&1 || true
fi
