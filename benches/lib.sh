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

# start_nginx DIR PORT BODY [CONTENT_TYPE]: nginx on 127.0.0.1:PORT answering every request
# `200 BODY`, one worker, keep-alive without limit, no access log; pid and temp files in
# DIR (kill "$(cat DIR/nginx.pid)" to stop it).
start_nginx() {
    local dir=$1 port=$2 body=$3 type=${4:-text/plain}
    # nginx run as root hands its temp directories to its worker user: a directory of their
    # own, so that $dir stays private (tapedeck refuses to write tapes in a shared one).
    mkdir -p "$dir/nginx-tmp"
    cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    default_type $type;
    client_body_temp_path $dir/nginx-tmp; proxy_temp_path $dir/nginx-tmp; fastcgi_temp_path $dir/nginx-tmp;
    uwsgi_temp_path $dir/nginx-tmp; scgi_temp_path $dir/nginx-tmp;
    server { listen 127.0.0.1:$port; location / { return 200 '$body'; } }
}
CONF
    nginx -p "$dir" -c "$dir/nginx.conf"
}

# start_nginx_http HTTP: nginx (a worker per CPU, no access log; pid, logs and temp files
# under $WORK) serving the `http { }` block's contents HTTP; stopped by stop_work.
start_nginx_http() {
    mkdir -p "$WORK/logs" "$WORK/nginx-tmp"
    cat > "$WORK/nginx.conf" <<CONF
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/logs/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx-tmp; proxy_temp_path $WORK/nginx-tmp; fastcgi_temp_path $WORK/nginx-tmp;
    uwsgi_temp_path $WORK/nginx-tmp; scgi_temp_path $WORK/nginx-tmp;
$1
}
CONF
    nginx -p "$WORK" -c "$WORK/nginx.conf"
}

# start_work NAME: a fresh $WORK directory under /tmp and an empty $PIDS list. On exit the
# processes in $PIDS and an nginx started in $WORK are stopped, the script's `on_exit`
# runs if it defines one, and $WORK is removed (kept with KEEP_WORK=1).
start_work() {
    WORK=$(mktemp -d "/tmp/tapedeck-$1.XXXXXX")
    PIDS=()
    trap stop_work EXIT
}

stop_work() {
    for p in "${PIDS[@]}"; do kill "$p" 2> /dev/null || true; done
    [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2> /dev/null || true
    sleep 0.5
    if declare -F on_exit > /dev/null; then on_exit; fi
    [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
}

# wrk_row WRK_ARGS...: runs `wrk --latency WRK_ARGS...` and prints one line:
# "REQUESTS/S P50 P99 [errors…]" (wrk's units).
wrk_row() {
    local out rps p50 p99 errors
    out=$(wrk --latency "$@")
    rps=$(echo "$out" | awk '/^Requests\/sec:/ {print $2}')
    p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
    p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
    errors=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
    echo "$rps $p50 $p99 $errors"
}
