#!/usr/bin/env bash
# Proxy throughput and latency against its peer, nginx proxy_pass (upstream keepalive),
# all measured in one run on this machine with wrk:
#
#   direct            wrk -> nginx upstream (return 200, 1 KiB body): the limit
#   nginx             wrk -> nginx proxy_pass -> upstream
#   tapedeck-off      wrk -> tapedeck proxy (no capture) -> upstream
#   tapedeck-noscrub  wrk -> tapedeck proxy (100% capture to disk, --no-scrub) -> upstream
#   tapedeck-capture  wrk -> tapedeck proxy (100% capture, default scrub policy) -> upstream
#   with SHADOW=1 (issue I), two more:
#   tapedeck-shadow   as tapedeck-capture, plus --shadow to a second nginx (100% of requests
#                     mirrored and compared); that nginx is a process of its own at nice
#                     $CANARY_NICE (19): it stands for a canary on hosts of its own, taking only
#                     the CPU production's processes leave
#   tapedeck-stalled  as tapedeck-shadow, but the shadow accepts connections and never answers
#
# Targets are interleaved in every round so drift on a shared machine hits all alike;
# medians over ROUNDS are reported, with ratios against nginx.
#
#   benches/proxy_load.sh                      (needs nginx and wrk: apt-get install nginx-light wrk)
#   ROUNDS=7 DURATION=10s CONNS=32 benches/proxy_load.sh
#   SHADOW=1 benches/proxy_load.sh             (the live shadow's rows too)
#   SHADOW_SAMPLE=25% SHADOW=1 …               (tapedeck-shadow mirrors that share, not 100%)
#   ONLY="tapedeck-capture tapedeck-shadow" SHADOW=1 benches/proxy_load.sh   (those targets only)
#   RATE=8000 …                                (oha at a fixed 8,000 requests/s instead of wrk at
#                                               full speed: latency at a load production has room
#                                               for, corrected for coordinated omission)
#   BODY_KIND=echo benches/proxy_load.sh       (answers: a 2.5 KiB httpbin-shaped JSON echo of a
#                                               request with personal data, instead of 1 KiB of x)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
THREADS=${THREADS:-2}
EXTRA=${EXTRA:-}   # extra flags for the capturing tapedecks
BODY_KIND=${BODY_KIND:-text}
SHADOW=${SHADOW:-0}
CANARY_NICE=${CANARY_NICE:-19}
CANARY_IDLE=${CANARY_IDLE:-0}
SHADOW_SAMPLE=${SHADOW_SAMPLE:-100%}
ONLY=${ONLY:-}
RATE=${RATE:-}
OHA=${OHA:-oha}
[ -z "$RATE" ] || command -v "$OHA" > /dev/null || { echo "RATE needs oha (cargo install oha; or OHA=/path/to/oha)"; exit 2; }
for tool in nginx wrk python3; do
    command -v "$tool" > /dev/null || { echo "needs $tool (apt-get install nginx-light wrk)"; exit 2; }
done

start_work bench

cargo build --release -q --bin tapedeck
BIN=./target/release/tapedeck
BODY=$(head -c 1024 < /dev/zero | tr '\0' 'x')
mkdir -p "$WORK/logs" "$WORK/www"
UPSTREAM_LOCATION="location / { default_type text/plain; return 200 \"$BODY\"; }"
if [ "$BODY_KIND" = echo ]; then
    # What a debug endpoint or webhook log answers: the request quoted back, credentials,
    # cookies and personal data included, with the raw body as a JSON string.
    python3 - "$WORK/www/echo.json" <<'PY'
import json, sys
inner = {"customer": {"first_name": "Ada", "last_name": "Lovelace", "email": "ada.lovelace@example.com",
         "phone": "+44 20 7946 0958", "address": {"street": "12 Harbour Road", "city": "Lisbon"}},
         "order": {"id": "ORD-10042", "items": [{"sku": f"SKU-{n}", "qty": 1, "price": 12.5} for n in range(6)]},
         "password": "hunter2!#"}
doc = {"args": {"email": "ada.lovelace@example.com", "page": "2"}, "data": json.dumps(inner), "files": {}, "form": {},
       "headers": {"Accept": "application/json", "Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJl",
                   "Cookie": "session_id=c2VjcmV0LXNlc3Npb24tdmFsdWUt0042; csrftoken=Zk3pQ9xLm2Rt7Vb1Nc8Wd4Ye6Uf0Ah42",
                   "Content-Type": "application/json", "User-Agent": "Mozilla/5.0 (X11; Linux x86_64)",
                   "X-Forwarded-For": "203.0.113.195", "X-Request-Id": "3f2b8c1e-9a4d-4e6f-8b1a-2c3d4e5f6a7b"},
       "json": inner, "method": "POST", "origin": "203.0.113.195",
       "url": "https://api.example.com/anything?email=ada.lovelace%40example.com&page=2"}
open(sys.argv[1], "w").write(json.dumps(doc, indent=2))
PY
    # nginx's workers run as another user: let them reach the file.
    chmod o+x "$WORK"
    chmod o+rx "$WORK/www"
    chmod o+r "$WORK/www/echo.json"
    UPSTREAM_LOCATION="location / { default_type application/json; root $WORK/www; try_files /echo.json =404; }"
fi
start_nginx_http "
    upstream backend { server 127.0.0.1:18081; keepalive 64; }
    server { listen 127.0.0.1:18081; $UPSTREAM_LOCATION }
    server {
        listen 127.0.0.1:18082;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }"
$BIN proxy --listen 127.0.0.1:18083 --upstream http://127.0.0.1:18081 --admin off 2> "$WORK/logs/off.log" &
PIDS+=($!)
OFF_PID=$!
# shellcheck disable=SC2086
$BIN proxy --listen 127.0.0.1:18084 --upstream http://127.0.0.1:18081 --capture-dir "$WORK/caps" \
    --admin 127.0.0.1:18094 $EXTRA 2> "$WORK/logs/capture.log" &
PIDS+=($!)
CAP_PID=$!
# shellcheck disable=SC2086
$BIN proxy --listen 127.0.0.1:18086 --upstream http://127.0.0.1:18081 --capture-dir "$WORK/caps-raw" --no-scrub \
    --admin off $EXTRA 2> "$WORK/logs/noscrub.log" &
PIDS+=($!)
TARGETS="direct:18081 nginx:18082 tapedeck-off:18083 tapedeck-noscrub:18086 tapedeck-capture:18084"
PORTS="18081 18082 18083 18084 18086"
if [ "$SHADOW" = 1 ]; then
    # The canary: a second nginx answering alike, a process of its own at a lower priority
    # (a canary runs on hosts of its own). The stalled one: accepts, never answers.
    mkdir -p "$WORK/canary/logs"
    cat > "$WORK/canary/nginx.conf" <<CONF
worker_processes auto;
worker_priority $CANARY_NICE;
pid $WORK/canary/nginx.pid;
error_log $WORK/canary/logs/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx-tmp; proxy_temp_path $WORK/nginx-tmp; fastcgi_temp_path $WORK/nginx-tmp;
    uwsgi_temp_path $WORK/nginx-tmp; scgi_temp_path $WORK/nginx-tmp;
    server { listen 127.0.0.1:18087; $UPSTREAM_LOCATION }
}
CONF
    nginx -p "$WORK/canary" -c "$WORK/canary/nginx.conf"
    if [ "$CANARY_IDLE" = 1 ]; then
        # Closer still to hosts of its own: the canary runs only on CPU nothing else wants.
        sleep 0.3
        for pid in $(cat "$WORK/canary/nginx.pid") $(pgrep -P "$(cat "$WORK/canary/nginx.pid")"); do
            chrt --idle -p 0 "$pid"
        done
    fi
    on_exit() { [ -f "$WORK/canary/nginx.pid" ] && kill "$(cat "$WORK/canary/nginx.pid")" 2> /dev/null || true; }
    python3 -c '
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 18089)); s.listen(4096)
held = []
while True:
    c, _ = s.accept(); held.append(c)
' &
    PIDS+=($!)
    # shellcheck disable=SC2086
    $BIN proxy --listen 127.0.0.1:18088 --upstream http://127.0.0.1:18081 --capture-dir "$WORK/caps-shadow" \
        --admin 127.0.0.1:18098 --shadow http://127.0.0.1:18087 --shadow-sample "$SHADOW_SAMPLE" $EXTRA 2> "$WORK/logs/shadow.log" &
    PIDS+=($!)
    # shellcheck disable=SC2086
    $BIN proxy --listen 127.0.0.1:18090 --upstream http://127.0.0.1:18081 --capture-dir "$WORK/caps-stalled" \
        --admin 127.0.0.1:18099 --shadow http://127.0.0.1:18089 $EXTRA 2> "$WORK/logs/stalled.log" &
    PIDS+=($!)
    TARGETS="$TARGETS tapedeck-shadow:18088 tapedeck-stalled:18090"
    PORTS="$PORTS 18088 18090"
fi
sleep 1
for port in $PORTS; do
    curl -sf -o /dev/null "http://127.0.0.1:$port/" || { echo "port $port is not serving"; cat "$WORK"/logs/*; exit 1; }
done

RESULTS="$WORK/results.txt"
: > "$RESULTS"
for round in $(seq "$ROUNDS"); do
    for target in $TARGETS; do
        name=${target%%:*}
        port=${target##*:}
        if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then continue; fi
        if [ -n "$RATE" ]; then
            # oha's JSON: requests/s, and latency percentiles in seconds.
            out=$("$OHA" --no-tui --output-format json --latency-correction -q "$RATE" -c "$CONNS" \
                -z "$DURATION" "http://127.0.0.1:$port/")
            read -r rps p50 p99 errors < <(echo "$out" | python3 benches/stats.py oha-row)
        else
            read -r rps p50 p99 errors < <(wrk_row -t"$THREADS" -c"$CONNS" -d"$DURATION" "http://127.0.0.1:$port/")
        fi
        echo "$round $name $rps $p50 $p99 $errors" | tee -a "$RESULTS"
    done
done
rss() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
echo "peak RSS: tapedeck-off $(rss $OFF_PID) KiB, tapedeck-capture $(rss $CAP_PID) KiB"
curl -s http://127.0.0.1:18094/metrics | grep -E '^tapedeck_(captured_total|capture_written_total|capture_dropped_total)' || true
if [ "$SHADOW" = 1 ]; then
    for port in 18098 18099; do
        echo "shadow metrics (admin $port):"
        curl -s "http://127.0.0.1:$port/metrics" \
            | grep -E '^tapedeck_(shadow_((requests|answered|compared|errors|dropped)_total|cpu_wait_seconds)|capture_dropped_total)' || true
    done
fi

PYTHONPATH=benches python3 - "$RESULTS" <<'PY'
import statistics, sys
from stats import ms
rows = {}
for line in open(sys.argv[1]):
    parts = line.split()
    if len(parts) < 5: continue
    rows.setdefault(parts[1], []).append((float(parts[2]), ms(parts[3]), ms(parts[4])))
med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v), statistics.median(r[2] for r in v)) for k, v in rows.items()}
nginx = med.get("nginx")
print("\n| target | requests/s (median) | vs nginx | p50 ms | p99 ms | p99 added over direct, ms | p99 per round |")
print("|---|---:|---:|---:|---:|---:|---|")
for k in ["direct", "nginx", "tapedeck-off", "tapedeck-noscrub", "tapedeck-capture", "tapedeck-shadow", "tapedeck-stalled"]:
    if k not in med: continue
    r, p50, p99 = med[k]
    vs = f"{r / nginx[0]:.2f}x" if nginx else "-"
    added = f"{p99 - med['direct'][2]:+.3f}" if "direct" in med else "-"
    rounds = " ".join(f"{x[2]:.2f}" for x in rows[k])
    print(f"| {k} | {r:,.0f} | {vs} | {p50:.3f} | {p99:.3f} | {added} | {rounds} |")
if "tapedeck-capture" in med and "tapedeck-noscrub" in med:
    print(f"\nscrubbing costs {100 * (1 - med['tapedeck-capture'][0] / med['tapedeck-noscrub'][0]):.1f}% of capture throughput")
cap = med.get("tapedeck-capture")
for k, goal in [("tapedeck-shadow", "goal >= 0.8x requests/s, p99 <= 1.1x"), ("tapedeck-stalled", "goal: production unaffected")]:
    if k in med and cap:
        print(f"{k} / capture alone: {med[k][0] / cap[0]:.2f}x requests/s, p99 {med[k][2] / cap[2]:.2f}x ({goal})")
PY
