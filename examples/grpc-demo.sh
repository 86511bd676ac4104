#!/usr/bin/env bash
# gRPC behind the sidecar, end to end, on this machine:
#   a production gRPC service (tonic: shop.Orders, real protobuf), tapedeck proxy in front of
#   it capturing and scrubbing by field name, a client making 20 calls through the proxy,
#   then a replay against a staging copy that charges more for orders whose id ends in 7.
#
#   examples/grpc-demo.sh            # builds what it needs (release), ~1 minute the first time
#
# Everything listens on 127.0.0.1 and stops when the script ends; the files stay in the
# directory it prints.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${TAPEDECK:-}" || -z "${GRPC_ECHO:-}" ]]; then
    cargo build --release -q --bin tapedeck
    cargo build --release -q -p tapedeck-proxy --example grpc_echo
fi
TAPEDECK=${TAPEDECK:-target/release/tapedeck}
GRPC_ECHO=${GRPC_ECHO:-target/release/examples/grpc_echo}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tapedeck-grpc-demo.XXXXXX")
chmod 700 "$WORK"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# Starts `$2...` in the background, logging to $WORK/$1.log.
launch() {
    local log="$WORK/$1.log"; shift
    "$@" > "$log" 2>&1 &
    PIDS+=($!)
}

# The address the process logging to $WORK/$1.log says it listens on.
address_of() {
    local log="$WORK/$1.log"
    for _ in $(seq 1 100); do
        local addr
        addr=$(grep -oE '(serving on |listening on )?127\.0\.0\.1:[0-9]+' "$log" | head -1 | grep -oE '127\.0\.0\.1:[0-9]+' || true)
        if [[ -n "$addr" ]]; then echo "$addr"; return; fi
        sleep 0.1
    done
    echo "$1 did not start:" >&2; cat "$log" >&2; exit 2
}

echo "== work directory: $WORK"
"$GRPC_ECHO" descriptor "$WORK/shop.pb"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$WORK/scrub.key"
chmod 600 "$WORK/scrub.key"

launch production "$GRPC_ECHO" serve 127.0.0.1:0
launch staging "$GRPC_ECHO" serve 127.0.0.1:0 --drifted
production=$(address_of production)
staging=$(address_of staging)
launch proxy "$TAPEDECK" proxy --listen 127.0.0.1:0 --upstream "http://$production" \
    --capture-dir "$WORK/captures" --scrub-key-file "$WORK/scrub.key" \
    --proto-descriptor "$WORK/shop.pb" --admin off
proxy=$(address_of proxy)
echo "== production gRPC on $production, staging on $staging, tapedeck proxy on $proxy"

"$GRPC_ECHO" client "http://$proxy" 20
kill -TERM "${PIDS[2]}"; wait "${PIDS[2]}" || true

echo "== one captured call, scrubbed by field name (tapedeck cat --proto-descriptor):"
"$TAPEDECK" cat "$WORK/captures" --proto-descriptor "$WORK/shop.pb" --limit 1 \
    | grep -oE '"messages":\[[^]]*\]' | sed -e '1s/^/  asked:    /' -e '2s/^/  answered: /'
"$TAPEDECK" scrub --check "$WORK/captures" --proto-descriptor "$WORK/shop.pb"

echo "== replay against staging:"
status=0
"$TAPEDECK" replay "$WORK/captures" --target "http://$staging" --speed max \
    --proto-descriptor "$WORK/shop.pb" --gate 'diff_rate==0' --report "$WORK/report.json" || status=$?
echo "== replay exit code $status (1: a gate failed, as it should: staging charges more for A-7 and A-17)"
