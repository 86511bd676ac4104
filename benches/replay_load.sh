#!/usr/bin/env bash
# Replayer benchmarks, against real servers on 127.0.0.1:
#
#   1. Max rate: `tapedeck replay --speed max --concurrency C` vs wrk (and oha, if
#      installed: cargo install oha) against the same nginx (`return 200`), same
#      connection count. Medians over ROUNDS, interleaved.
#   2. Timing fidelity at 1k, 5k and 20k requests/s (`--rate`): the replayer's own lag
#      (actual send - intended) and, at the target (examples/arrival_log, which logs the
#      monotonic arrival time of every request), the error of each arrival gap against
#      the intended one. Medians over ROUNDS.
#   3. Memory: peak RSS replaying a ~1 GB tape (benches/reader_memory.sh's) flat out.
#
# Replays run with --no-compare: wrk and oha only send, and what comparing responses costs
# is measured by benches/compare_load.sh.
#
#   benches/replay_load.sh            (needs nginx and wrk: apt-get install nginx-light wrk)
#   ROUNDS=5 SECONDS_PER_RUN=5 CONNS=64 SKIP_MEMORY=1 benches/replay_load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
ROUNDS=${ROUNDS:-3}
SECS=${SECONDS_PER_RUN:-5}
CONNS=${CONNS:-64}
WORK=$(mktemp -d /tmp/tapedeck-replay-bench.XXXXXX)
for tool in nginx wrk python3 curl; do
    command -v "$tool" > /dev/null || { echo "needs $tool (apt-get install nginx-light wrk curl)"; exit 2; }
done
PIDS=()
cleanup() {
    [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2> /dev/null || true
    for p in "${PIDS[@]}"; do kill "$p" 2> /dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --release -q --bin tapedeck
cargo build --release -q -p tapedeck-replayer --example bench_tape --example arrival_log
BIN=./target/release/tapedeck
echo "machine: $(nproc) CPUs, $(uname -r); tapedeck $(git describe --always --dirty 2> /dev/null || echo "?")"

start_nginx "$WORK" 18191 '{"ok":true}'
./target/release/examples/arrival_log 127.0.0.1:18192 2> /dev/null &
PIDS+=($!)
sleep 0.5

# A tape of independent GETs, long enough for every run below.
./target/release/examples/bench_tape "$WORK/tape" 400000 5000 2> /dev/null

echo
echo "== max rate: $CONNS connections, ${SECS}s per run, $ROUNDS rounds =="
HAVE_OHA=$(command -v oha > /dev/null && echo 1 || echo 0)
for r in $(seq "$ROUNDS"); do
    wrk -t"$(nproc)" -c"$CONNS" -d"${SECS}s" http://127.0.0.1:18191/seq/1 \
        | awk -v r="$r" '/Requests\/sec/ { print "wrk", r, $2 }' >> "$WORK/max.txt"
    if [ "$HAVE_OHA" = 1 ]; then
        oha -z "${SECS}s" -c "$CONNS" --no-tui --output-format json http://127.0.0.1:18191/seq/1 2> /dev/null \
            | python3 -c "import json,sys; print('oha', $r, json.load(sys.stdin)['summary']['requestsPerSec'])" >> "$WORK/max.txt"
    fi
    # Enough requests for about SECS seconds at 60k/s; the report gives the achieved rate.
    $BIN replay "$WORK/tape" --allow-unscrubbed --target http://127.0.0.1:18191 --speed max --concurrency "$CONNS" \
        --limit $((SECS * 60000)) --no-progress --no-compare --force --report "$WORK/max.json" > /dev/null
    python3 -c "import json; print('tapedeck', $r, json.load(open('$WORK/max.json'))['achieved_rps'])" >> "$WORK/max.txt"
done
python3 - "$WORK/max.txt" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    tool, _, rps = line.split()
    runs.setdefault(tool, []).append(float(rps))
med = {k: statistics.median(v) for k, v in runs.items()}
print("| tool | requests/s (median) | runs | tapedeck vs tool |")
print("|---|---:|---|---:|")
for k in ["wrk", "oha", "tapedeck"]:
    if k in med:
        print(f"| {k} | {med[k]:,.0f} | {', '.join(f'{v:,.0f}' for v in runs[k])} | {med['tapedeck'] / med[k]:.2f}x |")
PY

echo
echo "== timing fidelity: --rate N for ${SECS}s, $ROUNDS rounds =="
for rate in 1000 5000 20000; do
    for r in $(seq "$ROUNDS"); do
        curl -s http://127.0.0.1:18192/dump > /dev/null
        $BIN replay "$WORK/tape" --allow-unscrubbed --target http://127.0.0.1:18192 --rate "$rate" --limit $((rate * SECS)) \
            --no-progress --no-compare --force --report "$WORK/rate.json" > /dev/null
        curl -s http://127.0.0.1:18192/dump > "$WORK/arrivals.txt"
        python3 - "$rate" "$WORK/rate.json" "$WORK/arrivals.txt" >> "$WORK/fidelity.txt" <<'PY'
import json, sys
rate, report, arrivals = float(sys.argv[1]), json.load(open(sys.argv[2])), sys.argv[3]
t = dict()
for line in open(arrivals):
    n, ns = line.split()
    t[int(n)] = int(ns)
ids = sorted(t)
interval = 1e9 / rate
gaps = sorted(abs((t[b] - t[a]) - (b - a) * interval) / 1e6 for a, b in zip(ids, ids[1:]))
q = lambda v, p: v[min(len(v) - 1, int(p * len(v)))]
lag = report["lag"]
print(int(rate), report["achieved_rps"], lag["ms"]["p50"], lag["ms"]["p99"], lag["ms"]["max"],
      lag["late_over_1ms"] / report["sent"] * 100, q(gaps, 0.5), q(gaps, 0.99), len(ids), report["sent"])
PY
    done
done
python3 - "$WORK/fidelity.txt" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    v = line.split()
    rows.setdefault(int(v[0]), []).append([float(x) for x in v[1:]])
print("| intended rps | achieved rps | send lag p50 ms | send lag p99 ms | send lag max ms | late > 1 ms | arrival-gap error p50 ms | arrival-gap error p99 ms | arrived / sent |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for rate, runs in sorted(rows.items()):
    m = [statistics.median(col) for col in zip(*runs)]
    print(f"| {rate:,} | {m[0]:,.0f} | {m[1]:.3f} | {m[2]:.3f} | {m[3]:.2f} | {m[4]:.2f}% | {m[5]:.3f} | {m[6]:.3f} | {m[7]:,.0f} / {m[8]:,.0f} |")
PY

if [ "${SKIP_MEMORY:-0}" != 1 ]; then
    echo
    echo "== memory: replaying a ~1 GB tape flat out =="
    BIG=$(big_tape)
    du -sh "$BIG"
    for extra in "" "--results $WORK/results"; do
        echo "replay $BIG --speed max --concurrency 256 $extra"
        # shellcheck disable=SC2086
        /usr/bin/time -f "%M KiB peak RSS, %e s wall" $BIN replay "$BIG" --allow-unscrubbed --target http://127.0.0.1:18191 \
            --speed max --concurrency 256 --no-progress --no-compare --force --report "$WORK/big.json" $extra 2>&1 > /dev/null | tail -1
        python3 -c "import json; r = json.load(open('$WORK/big.json')); print(f\"{r['sent']:,} requests, {r['completed']:,} answered, {r['achieved_rps']:,.0f}/s, {r['results_written']:,} results written\")"
        rm -rf "$WORK/results"
    done
fi
