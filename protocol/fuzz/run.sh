#!/usr/bin/env bash
# Runs every cargo-fuzz target of corecast-protocol for N seconds each (default 30), one after
# the other; scripts/test.sh runs it with 10 seconds each at the end of the suite.
#
#   protocol/fuzz/run.sh [SECONDS] [TARGET...]
#
# Targets: frame_split (goim frames), ws_frame (WebSocket frames), ws_handshake (the HTTP
# upgrade), token (auth tokens, open and hmac), link (internal link messages), batch (op-9
# batches), http_query (goim's HTTP API query parameters), history (Recover bodies and
# replies, room offsets numbered into frames).
#
# cargo-fuzz needs nightly features; the stable toolchain is unlocked with RUSTC_BOOTSTRAP=1.
# cargo-fuzz is installed when missing. Targets are built with AddressSanitizer and debug
# assertions on (cargo-fuzz's defaults); with no TARGET given, all of them in one build first.
# The committed seeds in corpus/<target>/ are only read; new inputs go to a working corpus under
# target/fuzz-corpus/<target>/ (ignored by git, kept between runs), so a run never dirties the
# tree. A crash leaves its input under artifacts/<target>/ and makes the script exit non-zero
# after the remaining targets have run.
set -euo pipefail

cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1

secs="${1:-30}"
shift || true
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=(frame_split ws_frame ws_handshake token link batch http_query history)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
if [ "$#" -eq 0 ]; then
    cargo fuzz build
fi

failed=()
for t in "${targets[@]}"; do
    work="target/fuzz-corpus/$t"
    mkdir -p "$work" "corpus/$t"
    echo "=== fuzz $t for ${secs}s"
    if ! cargo fuzz run "$t" "$work" "corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1; then
        failed+=("$t")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz targets that failed: ${failed[*]}" >&2
    exit 1
fi
echo "all ${#targets[@]} fuzz targets ran ${secs}s without a crash"
