#!/usr/bin/env bash
# Soak: the proxy at a steady load for a long time, 100% capture with scrubbing and
# segment rotation, sampled every 10 s. What must hold: RSS and open file descriptors
# flat (first vs last 5 minutes), no request failed, every capture written or counted
# as dropped.
#
#   benches/soak.sh                          (30 minutes; needs nginx and wrk:
#                                             apt-get install nginx-light wrk)
#   DURATION=300 benches/soak.sh             (seconds)
#
# Load: wrk, 8 connections, each waiting 1 ms between requests (a steady few thousand
# requests/s on 2 CPUs, not a saturating flood), against nginx returning a 1 KiB JSON
# body. Samples go to $WORK/samples.tsv; a summary is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
DURATION=${DURATION:-1800}
for tool in nginx wrk; do
    command -v "$tool" > /dev/null || { echo "needs $tool (apt-get install nginx-light wrk)"; exit 2; }
done

# The samples and logs stay; the captures (GBs of them) go.
KEEP_WORK=1
start_work soak
on_exit() { rm -rf "$WORK/caps"; }

cargo build --release -q --bin tapedeck
UP=18391 PX=18392 ADMIN=18393
BODY=$(python3 -c 'import json; print(json.dumps({"id": 1, "items": [{"sku": "SKU-%d" % i, "qty": i, "price": 9.99} for i in range(20)], "note": "x" * 200}))')
start_nginx "$WORK" "$UP" "$BODY" application/json
head -c 32 /dev/urandom | base64 > "$WORK/scrub.key"
./target/release/tapedeck proxy --listen 127.0.0.1:$PX --upstream http://127.0.0.1:$UP --admin 127.0.0.1:$ADMIN \
    --capture-dir "$WORK/caps" --scrub-key-file "$WORK/scrub.key" --segment-max-age 1m --segment-max-size 64MiB \
    2> "$WORK/proxy.log" &
PX_PID=$!
PIDS+=("$PX_PID")
sleep 1

cat > "$WORK/steady.lua" <<'LUA'
function delay() return 1 end
request = function()
    return wrk.format("POST", "/api/orders?email=ada%40example.com", {["Content-Type"] = "application/json",
        ["Cookie"] = "session=c2VjcmV0LXNlc3Npb24tdmFsdWUtMDAwMQ"}, '{"user": {"email": "ada@example.com", "name": "Ada Lovelace"}, "qty": 2}')
end
LUA
wrk -t 2 -c 8 -d "${DURATION}s" -s "$WORK/steady.lua" --latency "http://127.0.0.1:$PX/" > "$WORK/wrk.txt" 2>&1 &
WRK_PID=$!
PIDS+=("$WRK_PID")

metric() { curl -s "http://127.0.0.1:$ADMIN/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
printf 'secs\trss_kib\tfds\trequests_2xx\tcaptured\twritten\tdropped\tsegments\n' > "$WORK/samples.tsv"
start=$(date +%s)
while kill -0 "$WRK_PID" 2> /dev/null; do
    sleep 10
    now=$(( $(date +%s) - start ))
    rss=$(awk '/VmRSS/ { print $2 }' "/proc/$PX_PID/status")
    fds=$(ls "/proc/$PX_PID/fd" | wc -l)
    dropped=$(curl -s "http://127.0.0.1:$ADMIN/metrics" | awk '/^tapedeck_capture_dropped_total/ { s += $2 } END { print s + 0 }')
    segs=$(ls "$WORK/caps" | wc -l)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$now" "$rss" "$fds" "$(metric 'tapedeck_requests_total{class="2xx"}')" \
        "$(metric tapedeck_captured_total)" "$(metric tapedeck_capture_written_total)" "$dropped" "$segs" >> "$WORK/samples.tsv"
done
wait "$WRK_PID" || true
sleep 2
kill -TERM "$PX_PID"
wait "$PX_PID" || true

python3 - "$WORK" <<'PY'
import sys, statistics
work = sys.argv[1]
rows = [l.rstrip("\n").split("\t") for l in open(f"{work}/samples.tsv")][1:]
rows = [[float(x or 0) for x in r] for r in rows]
span = rows[-1][0]
first = [r for r in rows if r[0] <= 300]
last = [r for r in rows if r[0] >= span - 300]
med = lambda rs, i: statistics.median(r[i] for r in rs)
wrk = open(f"{work}/wrk.txt").read()
print(f"soak: {span:.0f} s, {len(rows)} samples ({work}/samples.tsv)")
print(f"  RSS  median first 5 min {med(first, 1)/1024:.1f} MiB, last 5 min {med(last, 1)/1024:.1f} MiB, max {max(r[1] for r in rows)/1024:.1f} MiB")
print(f"  fds  median first 5 min {med(first, 2):.0f}, last 5 min {med(last, 2):.0f}, max {max(r[2] for r in rows):.0f}")
c, w, d = rows[-1][4], rows[-1][5], rows[-1][6]
print(f"  captured {c:.0f}, written {w:.0f}, dropped {d:.0f} (unaccounted at the last sample: {c - w - d:.0f}, still queued or in the open block)")
for line in wrk.splitlines():
    if "requests in" in line or "Non-2xx" in line or "Socket errors" in line or "Requests/sec" in line or " 99%" in line:
        print("  wrk: " + line.strip())
print("  proxy log: " + open(f"{work}/proxy.log").read().strip().splitlines()[-1])
PY
