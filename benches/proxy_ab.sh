#!/usr/bin/env bash
# A/B of two tapedeck builds as a proxy, in one run, interleaved: did a change cost
# throughput? Both run capture off and with 100% capture (scrubbed), in front of the same
# nginx `return 200` (1 KiB) upstream, beside nginx proxy_pass as the peer; wrk drives each
# target in turn, ROUNDS times; medians and new/old ratios are printed.
#
#   OLD=/path/to/old/tapedeck benches/proxy_ab.sh          (NEW defaults to this tree's release build)
#   git worktree add /tmp/old REV && (cd /tmp/old && cargo build --release --bin tapedeck)
#   OLD=/tmp/old/target/release/tapedeck ROUNDS=7 DURATION=8s benches/proxy_ab.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
: "${OLD:?set OLD to the tapedeck binary of the other build}"
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-8s}
CONNS=${CONNS:-32}
for tool in nginx wrk python3; do
    command -v "$tool" > /dev/null || { echo "needs $tool (apt-get install nginx-light wrk)"; exit 2; }
done
start_work ab
if [ -z "${NEW:-}" ]; then
    cargo build --release -q --bin tapedeck
    NEW=./target/release/tapedeck
fi
mkdir -p "$WORK/logs"
BODY=$(head -c 1024 < /dev/zero | tr '\0' 'x')
start_nginx_http "
    upstream backend { server 127.0.0.1:18281; keepalive 64; }
    server { listen 127.0.0.1:18281; location / { default_type text/plain; return 200 \"$BODY\"; } }
    server {
        listen 127.0.0.1:18282;
        location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
    }"
proxy() { # BIN PORT [capture flags]
    local bin=$1 port=$2
    shift 2
    "$bin" proxy --listen "127.0.0.1:$port" --upstream http://127.0.0.1:18281 --admin off "$@" \
        2> "$WORK/logs/$port.log" &
    PIDS+=($!)
}
proxy "$OLD" 18283
proxy "$NEW" 18284
proxy "$OLD" 18285 --capture-dir "$WORK/caps-old"
proxy "$NEW" 18286 --capture-dir "$WORK/caps-new"
sleep 1
for port in 18282 18283 18284 18285 18286; do
    curl -sf -o /dev/null "http://127.0.0.1:$port/" || { echo "port $port is not serving"; cat "$WORK"/logs/*; exit 1; }
done
RESULTS="$WORK/results.txt"
: > "$RESULTS"
for round in $(seq "$ROUNDS"); do
    for target in nginx:18282 old-off:18283 new-off:18284 old-capture:18285 new-capture:18286; do
        read -r rps _ p99 _ < <(wrk_row -t2 -c"$CONNS" -d"$DURATION" "http://127.0.0.1:${target##*:}/")
        echo "$round ${target%%:*} $rps $p99" | tee -a "$RESULTS"
    done
done
PYTHONPATH=benches python3 - "$RESULTS" <<'PY'
import statistics, sys
from stats import ms
rows = {}
for line in open(sys.argv[1]):
    p = line.split()
    if len(p) == 4:
        rows.setdefault(p[1], []).append((float(p[2]), ms(p[3])))
med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for k, v in rows.items()}
print("\n| target | requests/s (median) | vs nginx | p99 ms |")
print("|---|---:|---:|---:|")
for k in ["nginx", "old-off", "new-off", "old-capture", "new-capture"]:
    print(f"| {k} | {med[k][0]:,.0f} | {med[k][0] / med['nginx'][0]:.2f}x | {med[k][1]:.2f} |")
for mode in ["off", "capture"]:
    ratios = [n[0] / o[0] for n, o in zip(rows[f"new-{mode}"], rows[f"old-{mode}"])]
    print(f"new/old, {mode}: median of per-round ratios {statistics.median(ratios):.3f} (rounds: {', '.join(f'{r:.2f}' for r in ratios)})")
PY
