#!/usr/bin/env bash
# The million-connection benchmark: `corecast up` (gateway + dispatcher, one process) and
# `corecast loadtest` on one machine, on loopback.
#
#   1. hold: N idle TCP connections (ramp as fast as the tester goes, hold 20 s); memory is
#      sampled every second: gateway RSS, tester RSS, kernel slab, TCP sockets in use.
#   2. goim's shape: the same N connections in one room, 40 pushes/s through the dispatcher's
#      HTTP API, for HOLD; messages received per second, loss, latency. The bodies are
#      `{"seq":N,"ts":T}` (35 bytes, where goim's are `{"test":1}`) so loss, order and latency
#      are checked.
#
# Usage (as root: it raises the sysctls it needs and lists each one it changed):
#   benches/million.sh [N=1000000] [HOLD=60s]
# Writes benches/results/<date>-<host>-million-<N>/ (configs, reports, samples, charts) and
# prints the summary it writes to benches/results/<date>-<host>-million-<N>.md.
# The load tester's source addresses spread over 127.0.1.1 upwards, 2,000 connections each.
set -euo pipefail
N=${1:-1000000}
HOLD=${2:-60s}
cd "$(dirname "$0")/.."
BIN=target/release/corecast
[ -x "$BIN" ] || cargo build --release --bin corecast
HOST=$(hostname -s)
DAY=$(date +%F)
OUT=benches/results/$DAY-$HOST-million-$N
mkdir -p "$OUT"
# Ports: a free block from 23100 (the defaults 3101.. may be taken on a shared machine).
BASE=${BASE:-23100}
TCP=$((BASE + 1)) WS=$((BASE + 2)) HTTP=$((BASE + 11)) LINK=$((BASE + 19)) METRICS=$((BASE + 20))
for p in $TCP $WS $HTTP $LINK $METRICS; do
    if (echo >/dev/tcp/127.0.0.1/$p) 2>/dev/null; then
        echo "port $p is taken; set BASE=<another base port>" >&2
        exit 1
    fi
done

# Sysctls: raise what is below what N connections need; every change is listed.
benches/sysctls.sh "$N" "$OUT/sysctls.md"

# Phase 2's backlog: two cores cannot deliver 40 pushes/s to a million connections (40 M
# messages/s) in real time while also running the tester, so messages queue. The gateway merges
# a room's batches that queue up behind a slow fan-out, so a backlog costs a few queue entries
# per connection, and the defaults hold: a 256 KiB outbound cap, slow consumers disconnected
# (counted, never a silent drop). The tester keeps receiving for up to DRAIN after the pushes
# until every expected message arrived. Override with CAP=... SLOW=drop-oldest DRAIN=...
CAP=${CAP:-262144}
SLOW=${SLOW:-disconnect}
DRAIN=${DRAIN:-300s}
cat >"$OUT/gateway.toml" <<EOF
id = "gw-million"
tcp_bind = "127.0.0.1:$TCP"
ws_bind = "127.0.0.1:$WS"
metrics_bind = "127.0.0.1:$METRICS"

[limits]
outbound_cap_bytes = $CAP
slow_consumer = "$SLOW"
EOF
cat >"$OUT/dispatcher.toml" <<EOF
http_bind = "127.0.0.1:$HTTP"
link_bind = "127.0.0.1:$LINK"
EOF

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
slab_kb() { awk '/^Slab:/ {print $2}' /proc/meminfo; }
tcp_inuse() { awk '/^TCP:/ {print $3}' /proc/net/sockstat; }

"$BIN" up --gateway-config "$OUT/gateway.toml" --dispatcher-config "$OUT/dispatcher.toml" \
    >"$OUT/up.log" 2>&1 &
UP=$!
LT=
cleanup() {
    [ -n "$LT" ] && kill "$LT" 2>/dev/null || true
    kill "$UP" 2>/dev/null || true
    wait "$UP" 2>/dev/null || true
}
trap cleanup EXIT
until (echo >/dev/tcp/127.0.0.1/$HTTP) 2>/dev/null; do sleep 0.2; done
sleep 1
SLAB0=$(slab_kb)
GW0=$(rss_kb $UP)
TCP0=$(tcp_inuse)

LOADTEST=("$BIN" loadtest --tcp "$N" --tcp-addr "127.0.0.1:$TCP" --room live://1000
    --recv-buffers 256 --heartbeat-secs 30)

echo "phase 1: holding $N connections" >&2
"${LOADTEST[@]}" --duration 20s --report "$OUT/hold.json" 2>"$OUT/hold.log" &
LT=$!
echo "secs,tcp_inuse,slab_kb,gateway_rss_kb,tester_rss_kb" >"$OUT/hold-samples.csv"
PLATEAU=
t=0
while kill -0 "$LT" 2>/dev/null; do
    row="$t,$(tcp_inuse),$(slab_kb),$(rss_kb $UP),$(rss_kb $LT)"
    echo "$row" >>"$OUT/hold-samples.csv"
    # Every connection is up once both its sockets are counted; sample 3 s later.
    if [ -z "$PLATEAU" ] && [ "$(tcp_inuse)" -ge $((TCP0 + 2 * N)) ]; then
        PLATEAU=$((t + 3))
    fi
    if [ -n "$PLATEAU" ] && [ "$t" -eq "$PLATEAU" ]; then
        echo "$row" >"$OUT/plateau.csv"
    fi
    sleep 1
    t=$((t + 1))
done
wait "$LT" || true
LT=
sleep 5 # the gateway closes what the tester left

echo "phase 2: goim's shape over $N connections for $HOLD" >&2
"${LOADTEST[@]}" --publish "127.0.0.1:$HTTP" --push-rate 40 --duration "$HOLD" --drain "$DRAIN" \
    --report "$OUT/goim-shape.json" --out "$OUT/goim-shape" 2>"$OUT/goim-shape.log" &
LT=$!
echo "secs,tcp_inuse,slab_kb,gateway_rss_kb,tester_rss_kb" >"$OUT/goim-shape-samples.csv"
t=0
while kill -0 "$LT" 2>/dev/null; do
    echo "$t,$(tcp_inuse),$(slab_kb),$(rss_kb $UP),$(rss_kb $LT)" >>"$OUT/goim-shape-samples.csv"
    sleep 1
    t=$((t + 1))
done
wait "$LT" || true
LT=
python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' \
    "http://127.0.0.1:$METRICS/metrics" >"$OUT/gateway-metrics.txt" 2>/dev/null || true

python3 - "$OUT" "$N" "$SLAB0" "$GW0" "$HOLD" "$DAY" >"$OUT.md" <<'PY'
import json, sys, platform, os
out, n, slab0, gw0, hold, day = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = int(next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal"))) / 1048576
hold_r = json.load(open(f"{out}/hold.json"))
shape = json.load(open(f"{out}/goim-shape.json"))
print(f"# million — {day}\n")
print(f"Command: `benches/million.sh {n} {hold}` (gateway `[limits]`: see `{out}/gateway.toml`)\n")
print(f"Machine: {cpu} ({os.cpu_count()} cores, {mem:.0f} GiB, Linux {platform.release()}), gateway (`corecast up`) and load tester sharing it.\n")
print("## 1. Holding the connections\n")
try:
    t, inuse, slab, gw, lt = map(int, open(f"{out}/plateau.csv").read().strip().split(","))
    print("| connections authenticated | connect rate (auths/s) | gateway RSS growth per connection | tester RSS per connection | kernel slab per connection (both sockets) |")
    print("|---|---|---|---|---|")
    print(f"| {hold_r['authenticated']} of {n} | {hold_r['auth_rate']:.0f} | {(gw - gw0) * 1024 / n:.0f} B | {lt * 1024 / n:.0f} B | {(slab - slab0) * 1024 / n:.0f} B |")
    print(f"\nSampled {t} s into the run, 3 s after every connection's two sockets were counted in `/proc/net/sockstat` (RSS from `/proc/PID/status` VmRSS; slab from `/proc/meminfo`, less its value before the run; every sample in `hold-samples.csv`).")
except FileNotFoundError:
    print(f"Not every connection came up: {hold_r['authenticated']} of {n} authenticated; connect errors {hold_r['connect_errors']}, errors {hold_r['errors']}.")
print("\nSysctls changed (the rest were already enough):\n")
rows = open(f"{out}/sysctls.md").read().strip()
print("| sysctl | before | after |\n|---|---|---|\n" + rows if rows else "none")
print("\n## 2. goim's shape: one room, 40 pushes/s (bodies `{\"seq\":N,\"ts\":T}` for loss, order and latency)\n")
p = shape.get("publish", {})
secs = shape["messages_per_sec"]
steady = secs[2:-2] if len(secs) > 6 else secs
rate = sum(steady) / max(len(steady), 1)
print("| connections | pushes ok | messages expected | received | missing | received per second (steady, mean) | closed by server | tester CPU s / run s |")
print("|---|---|---|---|---|---|---|---|")
print(f"| {shape['authenticated']} | {p.get('ok')} | {shape.get('expected_messages')} | {shape['messages']} | {shape.get('missing_messages')} | {rate:,.0f} | {shape['closed_by_server']} {shape['close_reasons']} | {shape['worker_cpu_secs']:.0f} / {shape['elapsed_secs']:.0f} |")
o, l = shape["order"], shape.get("latency_us")
d = shape.get("drained_secs")
print(f"\nDrain: {'every expected message arrived %.1f s after the hold' % d if d is not None else 'messages were still missing when the drain ran out'}.")
print(f"\nOrder: {o['checked']} checked, {o['gaps']} gaps, {o['duplicates']} duplicates, {o['reorders']} reorders.")
if l:
    print(f"\nLatency, publish to arrival (ms): p50 {l['p50']/1000:.0f}, p90 {l['p90']/1000:.0f}, p99 {l['p99']/1000:.0f}, p99.9 {l['p999']/1000:.0f}, max {l['max']/1000:.0f} ({l['samples']} samples).")
print(f"\nReport, charts and samples: `{out}/`.")
PY
cat "$OUT.md"
