#!/usr/bin/env bash
# Raises the sysctls that N loopback connections (client and server on this machine) need,
# where they are below that, and lists each change as a Markdown table row in LIST.
# Used by benches/million.sh, and before `corecast-bench suite --goim-conns 1000000`.
#
# Usage (as root): benches/sysctls.sh N [LIST=/dev/stdout]
set -euo pipefail
N=${1:?usage: benches/sysctls.sh N [LIST]}
LIST=${2:-/dev/stdout}
: >"$LIST"
at_least() { # key minimum...: raises each field that is below its minimum
    local key=$1
    shift
    local old new
    old=$(sysctl -n "$key" 2>/dev/null | tr -s '\t ' ' ') || return 0
    new=$(python3 -c 'import sys; o=sys.argv[1].split(); w=sys.argv[2:]; print(" ".join(str(max(int(a), int(b))) for a, b in zip(o, w)))' "$old" "$@")
    if [ "$old" != "$new" ]; then
        sysctl -qw "$key=$new"
        echo "| \`$key\` | $old | $new |" >>"$LIST"
    fi
}
# Two sockets per connection (client and server), each a struct file.
at_least fs.file-max $((2 * N + 200000))
at_least net.core.somaxconn 65535
at_least net.ipv4.tcp_max_syn_backlog 65535
# net.ipv4.tcp_mem is left alone on purpose: it is what bounds the kernel's socket buffers
# when pushes back up across a million connections (raising it lets them take all memory).
# Only if conntrack is loaded (it is not hooked on loopback here, but a table that fills drops SYNs).
at_least net.netfilter.nf_conntrack_max $((2 * N + 100000))

