#!/usr/bin/env bash
# `tapedeck mock` against peers, answering a recorded dependency with no added delay:
#   nginx          `return 200` with the same 1 KiB JSON body (a static answer: the ceiling)
#   mitmproxy      `mitmdump -S flows`: mitmproxy's server replay of the same recording
#   tapedeck-mock  `tapedeck mock TAPES --latency 0`
# The dependency (nginx) answers /items/N; 1,000 requests are recorded through `tapedeck
# proxy` (tapes) and through `mitmdump -w` (flows); then wrk asks each server for one of
# the recorded items, targets interleaved in every round, medians reported.
#
#   benches/mock_load.sh             (needs nginx, wrk, and mitmdump: pip install mitmproxy;
#                                     MITMDUMP=/path/to/mitmdump)
#   ROUNDS=5 DURATION=10s CONNS=32 benches/mock_load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
MITMDUMP=${MITMDUMP:-mitmdump}
for tool in nginx wrk curl "$MITMDUMP"; do
    command -v "$tool" > /dev/null || { echo "needs $tool (apt-get install nginx-light wrk curl; pip install mitmproxy)"; exit 2; }
done
start_work mock
cargo build --release -q --bin tapedeck
BIN=./target/release/tapedeck
BODY=$(python3 -c 'import json; print(json.dumps({"id": 7, "name": "x" * 980}))')
start_nginx_http "server { listen 127.0.0.1:18181; location / { default_type application/json; return 200 '$BODY'; } }"
wait_port() { for _ in $(seq 300); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done; echo "nothing on $1"; exit 1; }

# Record: through tapedeck proxy into tapes, through mitmdump into flows.
$BIN proxy --listen 127.0.0.1:18182 --upstream http://127.0.0.1:18181 --capture-dir "$WORK/tapes" \
    --admin 127.0.0.1:18183 2> "$WORK/proxy.log" &
proxy=$!
"$MITMDUMP" -q --mode reverse:http://127.0.0.1:18181 -p 18184 -w "$WORK/flows" > "$WORK/mitm-record.log" 2>&1 &
mitm=$!
wait_port 18182
wait_port 18184
for i in $(seq 1000); do
    curl -s -o /dev/null "http://127.0.0.1:18182/items/$i"
    curl -s -o /dev/null "http://127.0.0.1:18184/items/$i"
done
kill "$proxy" "$mitm"
wait "$proxy" "$mitm" 2> /dev/null || true

# Serve: the mock, mitmproxy's server replay (answers reused, nothing forwarded).
$BIN mock "$WORK/tapes" --listen 127.0.0.1:18185 --latency 0 2> "$WORK/mock.log" &
PIDS+=($!)
# Nothing listens on port 9: every answer comes from the flows (matched ignoring the host
# and port they were recorded for), none is forwarded.
"$MITMDUMP" -q --mode reverse:http://127.0.0.1:9 -p 18186 -S "$WORK/flows" --set connection_strategy=lazy \
    --set server_replay_reuse=true --set server_replay_extra=404 --set server_replay_ignore_host=true \
    --set server_replay_ignore_port=true > "$WORK/mitm-replay.log" 2>&1 &
PIDS+=($!)
wait_port 18185
wait_port 18186
for port in 18185 18186; do
    status=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/items/7")
    [ "$status" = 200 ] || { echo "port $port answers $status for a recorded item"; exit 1; }
done

RESULTS="$WORK/results.txt"
for round in $(seq "$ROUNDS"); do
    for target in nginx:18181 mitmproxy:18186 tapedeck-mock:18185; do
        name=${target%%:*}
        port=${target##*:}
        echo "$round $name $(wrk_row -t2 -c"$CONNS" -d"$DURATION" "http://127.0.0.1:$port/items/7")" | tee -a "$RESULTS"
    done
done
python3 - "$RESULTS" <<'PY'
import statistics, sys
sys.path.insert(0, "benches")
from stats import ms
rows = {}
for line in open(sys.argv[1]):
    p = line.split()
    rows.setdefault(p[1], []).append((float(p[2]), ms(p[4])))
med = {k: (statistics.median(r for r, _ in v), statistics.median(p for _, p in v)) for k, v in rows.items()}
print("\n| target | requests/s (median) | p99 ms | per round |")
print("|---|---:|---:|---|")
for k in ["nginx", "mitmproxy", "tapedeck-mock"]:
    print(f"| {k} | {med[k][0]:,.0f} | {med[k][1]:.2f} | {' '.join(f'{r:,.0f}' for r, _ in rows[k])} |")
m = med["tapedeck-mock"][0]
print(f"\ntapedeck mock: {m / med['nginx'][0]:.2f}x nginx (goal >= 0.5x), {m / med['mitmproxy'][0]:.1f}x mitmproxy (goal >= 10x)")
PY
