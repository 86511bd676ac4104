# Helpers shared by the load scripts (sourced, not run).

# big_tape: prints the path of the ~1 GB, 2.3 M-exchange tape of reader_memory.sh
# ($BIG_TAPE, default /tmp/tapedeck-1g), writing it first if it is not there.
big_tape() {
    local big=${BIG_TAPE:-/tmp/tapedeck-1g}
    if [ ! -d "$big" ]; then
        cargo build --release -q -p tapedeck-captures --example synth_tape
        ./target/release/examples/synth_tape "$big" 2300000 2048 >&2
    fi
    echo "$big"
}
