#!/usr/bin/env bash
# Memory of the proxy when its tape writer is stalled for 60 s under load: the capture
# queue is bounded (10,000 exchanges / 256 MiB by default), so RSS must level off while
# captures are dropped (counted) and every request is still served.
#
#   benches/stalled_writer.sh          (needs nginx and wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
STALL=${STALL:-60}
WORK=$(mktemp -d /tmp/tapedeck-stall.XXXXXX)
cleanup() {
    [ -n "${PID:-}" ] && kill -INT "$PID" 2> /dev/null || true
    [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2> /dev/null || true
    sleep 1
    rm -rf "$WORK"
}
trap cleanup EXIT
cargo build --release -q -p tapedeck-proxy --example stalled_writer
BODY=$(head -c 1024 < /dev/zero | tr '\0' 'x')
mkdir -p "$WORK/logs"
cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/logs/error.log;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:18081; location / { default_type text/plain; return 200 "$BODY"; } } }
CONF
nginx -p "$WORK" -c "$WORK/nginx.conf"
./target/release/examples/stalled_writer 127.0.0.1:18085 http://127.0.0.1:18081 "$WORK/caps" "$STALL" 2> "$WORK/logs/proxy.log" &
PID=$!
sleep 1
wrk -t1 -c32 -d"$((STALL - 5))s" http://127.0.0.1:18085/ > "$WORK/wrk.txt" &
WRK=$!
echo "seconds  rss_kib  queue_depth  dropped_queue_full"
for t in $(seq 5 5 "$((STALL - 5))"); do
    sleep 5
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$PID/status")
    m=$(curl -s http://127.0.0.1:18095/metrics)
    depth=$(echo "$m" | awk '/^tapedeck_capture_queue_depth / {print $2}')
    dropped=$(echo "$m" | awk '/^tapedeck_capture_dropped_total\{reason="queue_full"\}/ {print $2}')
    echo "$t  $rss  $depth  $dropped"
done
wait "$WRK"
grep -E "Requests/sec|requests in|Non-2xx|Socket errors" "$WORK/wrk.txt" || true
echo "peak RSS: $(awk '/VmHWM/ {print $2}' "/proc/$PID/status") KiB"
