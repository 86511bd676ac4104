#!/usr/bin/env bash
# Comparison benchmark, against nginx on 127.0.0.1: how much of the replayer's max rate
# comparing every response costs. The target answers a ~2 KiB JSON document. Three
# interleaved modes, medians over ROUNDS: `--no-compare`; comparing against a recording
# of the same document (every answer equal: the common case, which hashes and byte-
# compares); and against a recording with one value changed (every answer differs: walked
# token by token on both sides, the difference counted — the worst case short of answers
# whose shape changed too). Then peak RSS replaying a ~1 GB tape with comparison.
#
#   benches/compare_load.sh                (needs nginx: apt-get install nginx-light)
#   ROUNDS=5 SECONDS_PER_RUN=5 CONNS=64 SKIP_MEMORY=1 benches/compare_load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
ROUNDS=${ROUNDS:-5}
SECS=${SECONDS_PER_RUN:-5}
CONNS=${CONNS:-64}
WORK=$(mktemp -d /tmp/tapedeck-compare-bench.XXXXXX)
for tool in nginx python3; do
    command -v "$tool" > /dev/null || { echo "needs $tool (apt-get install nginx-light)"; exit 2; }
done
cleanup() {
    [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2> /dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --release -q --bin tapedeck
cargo build --release -q -p tapedeck-replayer --example bench_tape
BIN=./target/release/tapedeck
echo "machine: $(nproc) CPUs, $(uname -r); tapedeck $(git describe --always --dirty 2> /dev/null || echo "?")"

# A product listing: 12 items of 8 fields, ~2 KiB; the recording has another price for the
# middle item (a difference halfway through the document: the walk covers half of it).
python3 - "$WORK" <<'PY'
import json, sys
items = [{"id": i, "sku": f"SKU-{i:05d}", "name": f"Item {i}", "price_cents": 999 + i, "in_stock": i % 3 != 0,
          "tags": ["home", "office"], "rating": 4.5, "updated_at": "2025-06-01T12:00:00Z"} for i in range(12)]
doc = {"version": 2, "page": 1, "items": items}
open(f"{sys.argv[1]}/target.json", "w").write(json.dumps(doc, separators=(",", ":")))
doc["items"][6]["price_cents"] += 100
open(f"{sys.argv[1]}/recorded.json", "w").write(json.dumps(doc, separators=(",", ":")))
PY
start_nginx "$WORK" 18193 "$(cat "$WORK/target.json")" application/json
sleep 0.3
./target/release/examples/bench_tape "$WORK/tape" 400000 5000 "$WORK/recorded.json" 2> /dev/null
./target/release/examples/bench_tape "$WORK/tape-equal" 400000 5000 "$WORK/target.json" 2> /dev/null
echo "response: $(wc -c < "$WORK/target.json") bytes of JSON; in the 'differs' tape one value halfway through differs"

echo
echo "== max rate: $CONNS connections, ${SECS}s per run, $ROUNDS rounds =="
for r in $(seq "$ROUNDS"); do
    for mode in off equal differ; do
        flag=$([ "$mode" = off ] && echo "--no-compare" || true)
        tape=$([ "$mode" = equal ] && echo "$WORK/tape-equal" || echo "$WORK/tape")
        # shellcheck disable=SC2086
        $BIN replay "$tape" --allow-unscrubbed --target http://127.0.0.1:18193 --speed max --concurrency "$CONNS" \
            --limit $((SECS * 50000)) --no-progress --report "$WORK/max.json" $flag > /dev/null || true
        python3 -c "import json; r = json.load(open('$WORK/max.json')); c = r.get('compare') or {}; print('$mode', $r, r['achieved_rps'], c.get('differing', 0))" >> "$WORK/max.txt"
    done
done
python3 - "$WORK/max.txt" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    mode, _, rps, differing = line.split()
    runs.setdefault(mode, []).append((float(rps), int(differing)))
med = {k: statistics.median(r for r, _ in v) for k, v in runs.items()}
print("| comparison | requests/s (median) | runs | vs --no-compare | responses found differing (last run) |")
print("|---|---:|---|---:|---:|")
names = {"off": "off (`--no-compare`)", "equal": "on, every answer equal", "differ": "on, every answer differs"}
for k in ["off", "equal", "differ"]:
    ratio = med[k] / med["off"]
    print(f"| {names[k]} | {med[k]:,.0f} | {', '.join(f'{r:,.0f}' for r, _ in runs[k])} | {ratio:.3f} ({100 * (ratio - 1):+.1f}%) | {runs[k][-1][1]:,} |")
PY

if [ "${SKIP_MEMORY:-0}" != 1 ]; then
    echo
    echo "== memory: replaying a ~1 GB tape flat out, comparing =="
    BIG=$(big_tape)
    du -sh "$BIG"
    /usr/bin/time -f "%M KiB peak RSS, %e s wall" $BIN replay "$BIG" --allow-unscrubbed --target http://127.0.0.1:18193 \
        --speed max --concurrency 256 --no-progress --report "$WORK/big.json" 2>&1 > /dev/null | tail -1
    python3 -c "import json; r = json.load(open('$WORK/big.json')); c = r['compare']; print(f\"{r['sent']:,} requests, {c['compared']:,} compared, {len(r['routes'])} routes, {r['achieved_rps']:,.0f}/s\")"
fi
