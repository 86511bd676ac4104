#!/usr/bin/env bash
# gRPC unary throughput and latency through the proxy against its peer, nginx grpc_pass,
# all measured in one run on this machine with h2load (nghttp2), which speaks h2c:
#
#   direct            h2load -> tonic echo service
#   nginx             h2load -> nginx grpc_pass (upstream keepalive) -> service
#   tapedeck-off      h2load -> tapedeck proxy (no capture) -> service (h2c upstream)
#   tapedeck-capture  h2load -> tapedeck proxy (100% capture, default scrub policy) -> service
#
# The request is one gRPC frame holding a 330-byte protobuf message shaped like an order
# (names, an e-mail address, a phone number, items), the answer the same echoed. Targets
# are interleaved in every round; medians over ROUNDS, ratios against nginx.
#
#   benches/grpc_load.sh                       (needs nginx with grpc_pass and h2load:
#                                               apt-get install nginx-core nghttp2-client)
#   ROUNDS=7 REQUESTS=200000 CONNS=16 STREAMS=10 benches/grpc_load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
ROUNDS=${ROUNDS:-5}
REQUESTS=${REQUESTS:-100000}
CONNS=${CONNS:-16}
STREAMS=${STREAMS:-10}
THREADS=${THREADS:-2}
for tool in nginx h2load python3; do
    command -v "$tool" > /dev/null || { echo "needs $tool (apt-get install nginx-core nghttp2-client)"; exit 2; }
done

start_work grpc-bench

cargo build --release -q --bin tapedeck
cargo build --release -q -p tapedeck-proxy --example grpc_echo
BIN=./target/release/tapedeck
mkdir -p "$WORK/logs" "$WORK/nginx-tmp"

# One gRPC frame: flag 0, big-endian length, a protobuf order.
python3 - "$WORK/request.bin" <<'PY'
import struct, sys
def field(n, value):
    key = bytes([n << 3 | 2])
    length = len(value)
    out = b""
    while True:
        b = length & 0x7f
        length >>= 7
        out += bytes([b | (0x80 if length else 0)])
        if not length:
            break
    return key + out + value
customer = field(1, b"Ada Lovelace") + field(2, b"ada.lovelace@example.com") + field(3, b"+44 20 7946 0958") \
    + field(4, b"12 Harbour Road, Lisbon")
items = b"".join(field(6, field(1, f"SKU-{n:04d}".encode()) + field(2, b"blue ceramic mug, 350 ml")) for n in range(6))
message = field(1, b"ORD-10042") + field(2, customer) + items
open(sys.argv[1], "wb").write(b"\0" + struct.pack(">I", len(message)) + message)
PY

./target/release/examples/grpc_echo 127.0.0.1:18181 2> "$WORK/logs/echo.log" &
PIDS+=($!)
start_nginx_http "
    upstream grpc_backend { server 127.0.0.1:18181; keepalive 64; }
    server {
        listen 127.0.0.1:18182 http2;
        keepalive_requests 1000000;
        location / { grpc_pass grpc://grpc_backend; }
    }"
$BIN proxy --listen 127.0.0.1:18183 --upstream http://127.0.0.1:18181 --admin off 2> "$WORK/logs/off.log" &
PIDS+=($!)
KEY="$WORK/scrub.key"
head -c 32 /dev/urandom | base64 > "$KEY"
chmod 600 "$KEY"
$BIN proxy --listen 127.0.0.1:18184 --upstream http://127.0.0.1:18181 --capture-dir "$WORK/caps" \
    --scrub-key-file "$KEY" --admin 127.0.0.1:18194 2> "$WORK/logs/capture.log" &
PIDS+=($!)
CAP_PID=$!
sleep 1

load() {
    h2load -n "$1" -c "$CONNS" -m "$STREAMS" -t "$THREADS" -d "$WORK/request.bin" \
        -H 'content-type: application/grpc' -H 'te: trailers' "http://127.0.0.1:$2/test.Echo/Unary"
}
for port in 18181 18182 18183 18184; do
    out=$(load 100 "$port")
    echo "$out" | grep -q '100 succeeded' || { echo "port $port does not answer gRPC:"; echo "$out"; cat "$WORK"/logs/*; exit 1; }
done

RESULTS="$WORK/results.txt"
: > "$RESULTS"
for round in $(seq "$ROUNDS"); do
    for target in direct:18181 nginx:18182 tapedeck-off:18183 tapedeck-capture:18184; do
        name=${target%%:*}
        port=${target##*:}
        out=$(load "$REQUESTS" "$port")
        rps=$(echo "$out" | awk '/^finished in/ {print $4}')
        ok=$(echo "$out" | awk '/^requests:/ {print $8}')
        mean=$(echo "$out" | awk '/^time for request:/ {print $6}')
        echo "$round $name $rps $mean ok=$ok" | tee -a "$RESULTS"
    done
done
echo "peak RSS: tapedeck-capture $(awk '/VmHWM/ {print $2}' "/proc/$CAP_PID/status") KiB"
curl -s http://127.0.0.1:18194/metrics | grep -E '^tapedeck_(captured_total|capture_written_total|capture_dropped_total)' || true
sleep 2
"$BIN" cat "$WORK/caps" --limit 1 | python3 -c 'import json,sys; e=json.loads(sys.stdin.readline()); print("captured:", e["request"]["target"], "trailers", e["response"].get("trailers"), "request body", len(e["request"]["body"].get("data","")), "chars")'

PYTHONPATH=benches python3 - "$RESULTS" <<'PY'
import statistics, sys
from stats import ms
rows = {}
for line in open(sys.argv[1]):
    parts = line.split()
    if len(parts) < 4: continue
    rows.setdefault(parts[1], []).append((float(parts[2]), ms(parts[3])))
med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for k, v in rows.items()}
nginx = med["nginx"]
print("\n| target | calls/s (median) | vs nginx | mean ms per call |")
print("|---|---:|---:|---:|")
for k in ["direct", "nginx", "tapedeck-off", "tapedeck-capture"]:
    r, mean = med[k]
    print(f"| {k} | {r:,.0f} | {r / nginx[0]:.2f}x | {mean:.3f} |")
PY
