#!/usr/bin/env bash
# Peak memory of reading a 1 GB tape: `inspect` (per-segment summary) and `cat` (merged,
# time-ordered stream). Memory must not grow with the tape.
#
#   benches/reader_memory.sh [DIR]        (default /tmp/tapedeck-1g; ~1 GB of disk)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-/tmp/tapedeck-1g}
COUNT=${COUNT:-2300000}

cargo build --release -q --bin tapedeck
cargo build --release -q -p tapedeck-captures --example synth_tape
if [ ! -d "$DIR" ]; then
    ./target/release/examples/synth_tape "$DIR" "$COUNT" 2048
fi
du -sh "$DIR"
for args in "inspect $DIR" "cat $DIR --format json" "cat $DIR --format har"; do
    printf '%-40s ' "tapedeck $args"
    # shellcheck disable=SC2086
    /usr/bin/time -f "%M KiB peak RSS, %e s" ./target/release/tapedeck $args > /dev/null
done
