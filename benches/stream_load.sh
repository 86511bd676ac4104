#!/usr/bin/env bash
# The fleet path on NATS JetStream, measured on this machine (issue H):
#
#   1. proxy: wrk -> tapedeck proxy at 100% capture -> nginx (return 200, 1 KiB), capturing
#      into a local tape directory (disk) or publishing to a JetStream stream (sink), the
#      two interleaved in every round; requests/s and p99, medians, sink/disk ratio.
#   2. publish: the capture sink alone (stream/examples/publish_bench: synthetic JSON-API
#      exchanges encoded, compressed, published with acks) against the NATS project's
#      Python client publishing pre-made messages of the same size with acks
#      (benches/nats_peer.py), interleaved.
#   3. archive: `tapedeck archive --once` of what (2) published, exchanges/s.
#
#   benches/stream_load.sh          (needs nginx, wrk, nats-server; pip install nats-py for the peer)
#   ROUNDS=5 DURATION=10s CONNS=32 benches/stream_load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
THREADS=${THREADS:-2}
PUBLISH=${PUBLISH:-200000}
for tool in nginx wrk nats-server python3; do
    command -v "$tool" > /dev/null || { echo "needs $tool (apt-get install nginx-light wrk nats-server)"; exit 2; }
done
start_work stream

cargo build --release -q --bin tapedeck
cargo build --release -q -p tapedeck-stream --example publish_bench
BIN=./target/release/tapedeck
mkdir -p "$WORK/logs" "$WORK/js"
nats-server -js -a 127.0.0.1 -p 14250 -sd "$WORK/js" 2> "$WORK/logs/nats.log" &
PIDS+=($!)
BODY=$(head -c 1024 < /dev/zero | tr '\0' 'x')
start_nginx_http "server { listen 127.0.0.1:18181; location / { default_type text/plain; return 200 \"$BODY\"; } }"
$BIN proxy --listen 127.0.0.1:18183 --upstream http://127.0.0.1:18181 --capture-dir "$WORK/caps" \
    --admin off 2> "$WORK/logs/disk.log" &
PIDS+=($!)
$BIN proxy --listen 127.0.0.1:18184 --upstream http://127.0.0.1:18181 --sink nats://127.0.0.1:14250/CAPTURES \
    --create-stream --admin 127.0.0.1:18194 2> "$WORK/logs/sink.log" &
PIDS+=($!)
sleep 1
for port in 18181 18183 18184; do
    curl -sf -o /dev/null "http://127.0.0.1:$port/" || { echo "port $port is not serving"; cat "$WORK"/logs/*; exit 1; }
done

RESULTS="$WORK/results.txt"
: > "$RESULTS"
for round in $(seq "$ROUNDS"); do
    for target in disk:18183 sink:18184; do
        name=${target%%:*}
        port=${target##*:}
        read -r rps _ p99 _ < <(wrk_row -t"$THREADS" -c"$CONNS" -d"$DURATION" "http://127.0.0.1:$port/")
        echo "proxy $round $name $rps $p99" | tee -a "$RESULTS"
    done
done
curl -s http://127.0.0.1:18194/metrics | grep -E '^tapedeck_(captured_total|sink_records_total|sink_dropped_total|sink_bytes_total)' || true

for round in $(seq "$ROUNDS"); do
    out=$(./target/release/examples/publish_bench "nats://127.0.0.1:14250/BENCH$round" "$PUBLISH")
    echo "$out"
    enc=$(echo "$out" | awk '/alone/ {print $(NF-2)}')
    echo "encode $round $enc" | tee -a "$RESULTS"
    out=$(echo "$out" | grep acknowledged)
    blocks=$(echo "$out" | awk '{print $4}')
    secs=$(echo "$out" | awk '{print $8}')
    mbs=$(echo "$out" | awk '{for (i = 1; i <= NF; i++) if ($i == "MB/s") print $(i-1)}')
    rate=$(echo "$out" | awk '{for (i = 1; i <= NF; i++) if ($i == "exchanges/s,") print $(i-1)}')
    echo "publish $round sink $mbs $rate" | tee -a "$RESULTS"
    # The peer: as many messages, each the sink's mean block size.
    bytes=$(echo "$mbs * $secs * 1000000 / ($blocks + ($blocks == 0))" | bc)
    if python3 -c 'import nats' 2> /dev/null; then
        peer=$(python3 benches/nats_peer.py nats://127.0.0.1:14250 "PEER$round" "$blocks" "$bytes")
        echo "$peer"
        echo "publish $round peer $(echo "$peer" | awk '{print $(NF-1)}') 0" | tee -a "$RESULTS"
    fi
    start=$(date +%s.%N)
    archived=$($BIN archive "nats://127.0.0.1:14250/BENCH$round" -o "$WORK/archive$round" --once 2>&1 | tail -1)
    end=$(date +%s.%N)
    n=$(echo "$archived" | awk '{print $3}')
    echo "archive $round $(echo "$n / ($end - $start)" | bc -l)" | tee -a "$RESULTS"
    rm -rf "$WORK/archive$round"
done

PYTHONPATH=benches python3 - "$RESULTS" <<'PY'
import statistics, sys
from stats import ms
proxy, pub, arch = {}, {}, []
for line in open(sys.argv[1]):
    p = line.split()
    if p[0] == "proxy":
        proxy.setdefault(p[2], []).append((float(p[3]), ms(p[4])))
    elif p[0] == "publish":
        pub.setdefault(p[2], []).append((float(p[3]), float(p[4])))
    elif p[0] == "archive":
        arch.append(float(p[2]))
    elif p[0] == "encode":
        pub.setdefault("encode", []).append((float(p[2]), 0.0))
med = lambda xs: statistics.median(xs)
d, s = proxy["disk"], proxy["sink"]
print("\n| proxy, 100% capture | requests/s (median) | p99 ms (median) |")
print("|---|---:|---:|")
for k, v in [("--capture-dir (disk)", d), ("--sink nats:// (stream)", s)]:
    print(f"| {k} | {med(r for r, _ in v):,.0f} | {med(p for _, p in v):.2f} |")
print(f"\nsink / disk: {med(r for r, _ in s) / med(r for r, _ in d):.2f}x requests/s")
sink_mb = med(m for m, _ in pub["sink"])
print(f"\npublish: sink {sink_mb:.1f} MB/s compressed ({med(r for _, r in pub['sink']):,.0f} exchanges/s)", end="")
if "peer" in pub:
    peer_mb = med(m for m, _ in pub["peer"])
    print(f", nats-py {peer_mb:.1f} MB/s: {sink_mb / peer_mb:.2f}x")
else:
    print(" (no peer: pip install nats-py)")
print(f"encode+compress alone (the sink's work before the network): {med(m for m, _ in pub['encode']):.1f} MB/s")
print(f"archive: {med(arch):,.0f} exchanges/s")
PY
