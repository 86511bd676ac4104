#!/usr/bin/env bash
# Publishing captures into a replicated stream (issue H): a 3-server JetStream cluster on
# 127.0.0.1 (three nats-server processes routed to each other), the capture sink
# (stream/examples/publish_bench) publishing into a stream with 1 copy and with 3 copies,
# and the NATS project's Python client (benches/nats_peer.py) publishing messages of the
# sink's block size into a stream of 3 copies, interleaved in every round; medians.
# All servers share this machine's CPUs and disk: what R3 costs here is the upper bound of
# what it costs across hosts with their own disks, less the network between them.
#
#   benches/stream_cluster.sh                  (needs nats-server; pip install nats-py for the peer)
#   ROUNDS=5 PUBLISH=200000 benches/stream_cluster.sh
#   PIN=1 benches/stream_cluster.sh            (servers on CPU 1, the publishers on CPU 0)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
ROUNDS=${ROUNDS:-5}
PUBLISH=${PUBLISH:-200000}
SERVERS=() CLIENT=()
if [ "${PIN:-0}" = 1 ]; then SERVERS=(taskset -c 1) CLIENT=(taskset -c 0); fi
command -v nats-server > /dev/null || { echo "needs nats-server (apt-get install nats-server)"; exit 2; }
start_work stream-cluster

cargo build --release -q -p tapedeck-stream --example publish_bench
mkdir -p "$WORK/logs"
ROUTES=nats://127.0.0.1:16261,nats://127.0.0.1:16262,nats://127.0.0.1:16263
for n in 1 2 3; do
    "${SERVERS[@]}" nats-server -js -a 127.0.0.1 -p "1426$n" -sd "$WORK/js$n" --server_name "n$n" \
        --cluster_name tapedeck --cluster "nats://127.0.0.1:1626$n" --routes "$ROUTES" \
        2> "$WORK/logs/nats$n.log" &
    PIDS+=($!)
done
# The cluster has a JetStream leader once a stream can be made.
for _ in $(seq 100); do
    if ./target/release/examples/publish_bench nats://127.0.0.1:14261/WARMUP 1000 > /dev/null 2>&1; then
        break
    fi
    sleep 0.3
done
have_peer=0
python3 -c 'import nats' 2> /dev/null && have_peer=1

RESULTS="$WORK/results.txt"
: > "$RESULTS"
for round in $(seq "$ROUNDS"); do
    for replicas in 1 3; do
        out=$(REPLICAS=$replicas "${CLIENT[@]}" ./target/release/examples/publish_bench \
            "nats://127.0.0.1:14261/R${replicas}x$round" "$PUBLISH" | grep acknowledged)
        echo "$out"
        blocks=$(echo "$out" | awk '{print $4}')
        secs=$(echo "$out" | awk '{print $8}')
        mbs=$(echo "$out" | awk '{for (i = 1; i <= NF; i++) if ($i == "MB/s") print $(i-1)}')
        rate=$(echo "$out" | awk '{for (i = 1; i <= NF; i++) if ($i == "exchanges/s,") print $(i-1)}')
        echo "sink$replicas $round $mbs $rate" | tee -a "$RESULTS"
    done
    if [ "$have_peer" = 1 ]; then
        bytes=$(echo "$mbs * $secs * 1000000 / ($blocks + ($blocks == 0))" | bc)
        peer=$(REPLICAS=3 "${CLIENT[@]}" python3 benches/nats_peer.py nats://127.0.0.1:14261 "PEER$round" "$blocks" "$bytes")
        echo "$peer"
        echo "peer3 $round $(echo "$peer" | awk '{print $(NF-1)}') 0" | tee -a "$RESULTS"
    fi
done

python3 - "$RESULTS" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    p = line.split()
    rows.setdefault(p[0], []).append((float(p[2]), float(p[3])))
med = lambda k, i: statistics.median(r[i] for r in rows[k])
print("\n| publishing into a 3-server cluster | MB/s acknowledged (median) | exchanges/s |")
print("|---|---:|---:|")
print(f"| sink, stream of 1 copy | {med('sink1', 0):.1f} | {med('sink1', 1):,.0f} |")
print(f"| sink, stream of 3 copies | {med('sink3', 0):.1f} | {med('sink3', 1):,.0f} |")
if "peer3" in rows:
    print(f"| nats-py, stream of 3 copies, same message size | {med('peer3', 0):.1f} | |")
print(f"\nR3 / R1 (sink): {med('sink3', 0) / med('sink1', 0):.2f}x")
if "peer3" in rows:
    print(f"sink / nats-py at R3: {med('sink3', 0) / med('peer3', 0):.2f}x")
PY
