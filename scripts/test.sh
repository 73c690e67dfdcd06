#!/usr/bin/env bash
# The whole test suite: installs what the tests need when missing, then runs every test.
# Tests start their own servers on ephemeral loopback ports and stop them.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cc >/dev/null || need_apt+=(build-essential)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest

# The connection tests open tens of thousands of loopback connections: make sure the kernel
# lets them (each line is also in tuning/sysctl/laptop.conf, with its reason).
if [ "$(id -u)" = 0 ]; then
  sysctl -q -w net.core.somaxconn=65535 >/dev/null 2>&1 || true
  sysctl -q -w net.ipv4.tcp_max_syn_backlog=65535 >/dev/null 2>&1 || true
  sysctl -q -w net.ipv4.ip_local_port_range="1024 65000" >/dev/null 2>&1 || true
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --profile ci -- -D warnings
cargo nextest run --workspace --cargo-profile ci --no-fail-fast "$@"
