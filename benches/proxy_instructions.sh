#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind (user space only; repeatable on a
# noisy machine where requests/s are not): the proxy runs under valgrind with one worker in
# front of nginx `return 200`, serves N1 and then N2 requests (h2load --h1, 2 connections)
# in two runs, and (Ir(N2) - Ir(N1)) / (N2 - N1) is printed, start-up cancelled out. Give
# several builds to compare them.
#
#   benches/proxy_instructions.sh ./target/release/tapedeck /tmp/old/target/release/tapedeck
#   MODES="off capture" N1=200 N2=2200 benches/proxy_instructions.sh BIN...
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
MODES=${MODES:-off capture}
N1=${N1:-200}
N2=${N2:-2200}
for tool in nginx h2load valgrind; do
    command -v "$tool" > /dev/null || { echo "needs $tool (apt-get install nginx-light nghttp2-client valgrind)"; exit 2; }
done
[ $# -gt 0 ] || { echo "usage: benches/proxy_instructions.sh TAPEDECK_BINARY..."; exit 2; }
start_work instructions
start_nginx_http "    server { listen 127.0.0.1:18481; location / { default_type text/plain; return 200 \"$(head -c 128 < /dev/zero | tr '\0' 'x')\"; } }"
instructions() { # BIN N MODE
    local out="$WORK/cg.$RANDOM" extra=()
    rm -rf "$WORK/caps"
    [ "$3" = capture ] && extra=(--capture-dir "$WORK/caps")
    valgrind --tool=callgrind --callgrind-out-file="$out" "$1" proxy --listen 127.0.0.1:18482 \
        --upstream http://127.0.0.1:18481 --admin off --workers 1 "${extra[@]}" 2> /dev/null &
    local pid=$!
    for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:18482/ && break; sleep 0.2; done
    h2load --h1 -n "$2" -c 2 http://127.0.0.1:18482/x > /dev/null
    kill -TERM "$pid"
    wait "$pid" 2> /dev/null || true
    awk '/^(summary|totals):/ {print $2; exit}' "$out"
}
echo "| binary | mode | instructions per request |"
echo "|---|---|---:|"
for bin in "$@"; do
    for mode in $MODES; do
        a=$(instructions "$bin" "$N1" "$mode")
        b=$(instructions "$bin" "$N2" "$mode")
        echo "| $bin | $mode | $(( (b - a) / (N2 - N1) )) |"
    done
done
