#!/usr/bin/env bash
# Chaos: the proxy under the faults a sidecar meets, each scenario a few seconds of
# load with wrk, reporting what clients saw (requests, non-2xx, socket errors) and what
# capture did (written, dropped by reason, deleted), and how long recovery took.
#
#   sudo benches/chaos.sh          (root: mounts a small tmpfs for the disk scenarios;
#                                   needs nginx, wrk, python3: apt-get install nginx-light wrk)
#
# Scenarios: kill -9 mid-load; disk full (tmpfs) and back; the open .partial deleted;
# the capture directory read-only and back; dead, garbage-speaking and slow upstreams;
# slowloris heads and trickled bodies beside normal clients.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
SECS=${SECS:-5}
for tool in nginx wrk python3; do
    command -v "$tool" > /dev/null || { echo "needs $tool (apt-get install nginx-light wrk)"; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "needs root (mounts a tmpfs)"; exit 2; }

start_work chaos
on_exit() { if mountpoint -q "$WORK/tmpfs"; then umount "$WORK/tmpfs"; fi; }
cargo build --release -q --bin tapedeck
TD=./target/release/tapedeck
UP=18451 PX=18452 ADMIN=18453
start_nginx "$WORK" "$UP" "$(head -c 1024 /dev/zero | tr '\0' x)"

# proxy DIR [FLAGS…]: starts the proxy capturing into DIR; sets PX_PID.
proxy() {
    local dir=$1
    shift
    $TD proxy --listen 127.0.0.1:$PX --upstream "${UPSTREAM:-http://127.0.0.1:$UP}" --admin 127.0.0.1:$ADMIN \
        --capture-dir "$dir" --no-scrub "$@" 2>> "$WORK/proxy.log" &
    PX_PID=$!
    PIDS+=("$PX_PID")
    for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$ADMIN/healthz" && return; sleep 0.1; done
    echo "proxy did not start"; tail -3 "$WORK/proxy.log"; exit 1
}
stop_proxy() { kill -TERM "$PX_PID" 2> /dev/null || true; wait "$PX_PID" 2> /dev/null || true; }
metric() { curl -s "http://127.0.0.1:$ADMIN/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
capture_line() {
    printf '    capture: written %s, dropped queue_full %s disk_full %s write_error %s, deleted %s\n' \
        "$(metric tapedeck_capture_written_total)" "$(metric 'tapedeck_capture_dropped_total{reason="queue_full"}')" \
        "$(metric 'tapedeck_capture_dropped_total{reason="disk_full"}')" \
        "$(metric 'tapedeck_capture_dropped_total{reason="write_error"}')" "$(metric tapedeck_capture_deleted_total)"
}
# load SECONDS: wrk against the proxy; prints requests, non-2xx and socket errors.
load() {
    wrk -t 2 -c 16 -d "${1}s" "http://127.0.0.1:$PX/" 2>&1 | awk '
        /requests in/ { r = $1 } /Non-2xx/ { n = $NF } /Socket errors/ { s = $0 }
        END { printf "    clients: %s requests, %s non-2xx, %s\n", r, (n == "" ? 0 : n), (s == "" ? "no socket errors" : s) }'
}

echo "== kill -9 mid-load"
proxy "$WORK/k9"
wrk -t 2 -c 16 -d 3s "http://127.0.0.1:$PX/" > /dev/null 2>&1 &
sleep 2
served=$(metric 'tapedeck_requests_total{class="2xx"}')
kill -9 "$PX_PID"
wait 2> /dev/null || true
readable=$($TD inspect "$WORK/k9" --json 2> /dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"]["exchanges"])')
echo "    served before the kill: about $served; readable afterwards: $readable (the open block and the queue are lost)"

echo "== disk full (an 8 MiB tmpfs filled up), then space again"
mkdir -p "$WORK/tmpfs" && mount -t tmpfs -o size=8m tmpfs "$WORK/tmpfs"
proxy "$WORK/tmpfs/caps"
cat /dev/zero > "$WORK/tmpfs/filler" 2> /dev/null || true
load "$SECS"
capture_line
rm -f "$WORK/tmpfs/filler"
before=$(metric tapedeck_capture_written_total)
load 3
after=$(metric tapedeck_capture_written_total)
echo "    space freed: written grew by $((after - before)) in the next 3 s"
capture_line
stop_proxy

echo "== the open .partial deleted mid-load"
rm -rf "$WORK/tmpfs/caps"
proxy "$WORK/del"
wrk -t 2 -c 16 -d "${SECS}s" "http://127.0.0.1:$PX/" > "$WORK/wrk-del.txt" 2>&1 &
sleep 2
rm -f "$WORK"/del/*.partial
wait $! || true
awk '/requests in/ { r = $1 } /Non-2xx/ { n = $NF } END { printf "    clients: %s requests, %s non-2xx\n", r, (n == "" ? 0 : n) }' "$WORK/wrk-del.txt"
capture_line
stop_proxy
echo "    readable afterwards: $($TD inspect "$WORK/del" --json 2> /dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"]["exchanges"])')"

echo "== capture directory read-only (tmpfs remounted), then writable"
# A remount needs no file open for writing: let the segment close (1 s old, idle), then
# flip the mount and load again; new segments cannot be created.
mkdir -p "$WORK/tmpfs/ro"
proxy "$WORK/tmpfs/ro" --segment-max-age 1s
load 2 > /dev/null
for _ in $(seq 50); do mount -o remount,ro "$WORK/tmpfs" 2> /dev/null && break; sleep 0.2; done
load "$SECS"
capture_line
mount -o remount,rw "$WORK/tmpfs"
before=$(metric tapedeck_capture_written_total)
load 3
echo "    writable again: written grew by $(( $(metric tapedeck_capture_written_total) - before )) in the next 3 s"
stop_proxy

echo "== upstreams that fail"
python3 - "$WORK" <<'PY' &
import socket, sys, threading, time
def serve(port, handler):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", port)); s.listen(512)
    while True:
        c, _ = s.accept()
        threading.Thread(target=handler, args=(c,), daemon=True).start()
def garbage(c):
    try:
        c.recv(65536); c.sendall(b"\x00\x01garbage that is not HTTP\r\n\r\n"); c.close()
    except OSError: pass
def slow(c):
    try:
        c.recv(65536); time.sleep(30); c.close()
    except OSError: pass
threading.Thread(target=serve, args=(18461, garbage), daemon=True).start()
threading.Thread(target=serve, args=(18462, slow), daemon=True).start()
time.sleep(120)
PY
PIDS+=($!)
disown
sleep 0.5
for case in "dead 18469" "garbage 18461" "slow 18462"; do
    set -- $case
    UPSTREAM=http://127.0.0.1:$2 proxy "$WORK/up-$1" --upstream-timeout 1s
    start=$(date +%s.%N)
    codes=$(for _ in $(seq 20); do curl -s -o /dev/null -w '%{http_code}\n' "http://127.0.0.1:$PX/"; done | sort | uniq -c | tr '\n' ' ')
    printf '    %-8s upstream: 20 requests answered %s in %.1f s; upstream_errors %s\n' "$1" "$codes" \
        "$(echo "$(date +%s.%N) - $start" | bc)" \
        "$(curl -s "http://127.0.0.1:$ADMIN/metrics" | awk '/^tapedeck_upstream_errors_total/ && $2 > 0 { printf "%s ", $0 }')"
    stop_proxy
done

echo "== slowloris heads and trickled bodies beside normal clients"
proxy "$WORK/slow" --header-timeout 3s --body-timeout 3s
python3 - "$PX" "$SECS" <<'PY' &
import socket, sys, threading, time
port, secs = int(sys.argv[1]), float(sys.argv[2])
def loris():
    s = socket.create_connection(("127.0.0.1", port)); s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n")
    end = time.time() + secs + 2
    while time.time() < end:
        try: s.sendall(b"X-a: b\r\n"); time.sleep(0.5)
        except OSError: return
def trickle():
    s = socket.create_connection(("127.0.0.1", port)); s.sendall(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n")
    end = time.time() + secs + 2
    while time.time() < end:
        try: s.sendall(b"x"); time.sleep(0.1)
        except OSError: return
for f in [loris] * 100 + [trickle] * 100:
    threading.Thread(target=f, daemon=True).start()
time.sleep(secs + 2)
PY
LORIS=$!
sleep 1
wrk -t 2 -c 16 -d "${SECS}s" --latency "http://127.0.0.1:$PX/" 2>&1 | awk '
    /requests in/ { r = $1 } /Non-2xx/ { n = $NF } / 99%/ { p = $2 }
    END { printf "    normal clients beside 100 slowloris + 100 trickled bodies: %s requests, %s non-2xx, p99 %s\n", r, (n == "" ? 0 : n), p }'
wait "$LORIS" || true
printf '    cut off: header_timeout %s, client_errors body_timeout %s\n' \
    "$(metric 'tapedeck_connection_errors_total{reason="header_timeout"}')" \
    "$(metric 'tapedeck_client_errors_total{kind="body_timeout"}')"
stop_proxy
