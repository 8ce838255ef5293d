#!/bin/bash
# tests/bench/bench_dispatch.sh - what a dispatch rule costs, in one run on 127.0.0.1.
#
# Starts nginx (the app, h2c), tests/integration/authz_app.py (the authorization
# service, mTLS, h2 by default) and a Release picket (1 worker) whose policy has
#   /local  allow rule                         (decided locally)
#   /warm   dispatch, service says max-age=60  (one check, then the worker's cache)
#   /cold   dispatch, service sends no max-age (every request checks; h2load walks
#           distinct query strings, so identical checks are never in flight together
#           and coalescing does not hide the cost)
# then h2load (mTLS through ../shared/bench/lib/h2load_client_cert.c) against each,
# and prints req/s, p50/p99, statuses, checks per request (from picket's metrics) and
# ratios to /local.
#
#   bash tests/bench/bench_dispatch.sh
#   DURATION=4 CLIENTS=16 STREAMS=10 SERVICE=h2|h1 COLD_KEYS_PER_CLIENT=20000 REBUILD=1 KEEP=1
#
# Layout (2 cores): picket on CPU 0, h2load on CPU 1, nginx and the Python service
# unpinned. The Python service is the limit of /cold: its figure is the price of a
# slow authorization service plus picket's check path, not picket alone.
# Release build: build-release/picket is reused when present (REBUILD=1: incremental
# build first); else configured with -DCMAKE_BUILD_TYPE=Release -DPICKET_TESTS=OFF.
# Everything is stopped by PID; the whole run is capped at 150 s.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
BENCH_DIR=${BENCH_DIR:-$ROOT/../shared/bench}
PY=/usr/bin/python3
DURATION=${DURATION:-4}
CLIENTS=${CLIENTS:-16}
STREAMS=${STREAMS:-10}
SERVICE=${SERVICE:-h2}
COLD_KEYS_PER_CLIENT=${COLD_KEYS_PER_CLIENT:-20000}
WARMUP_N=${WARMUP_N:-2000}

missing=
for c in h2load nginx cc openssl curl taskset cmake; do
  command -v "$c" >/dev/null 2>&1 || missing="$missing $c"
done
[ -f "$BENCH_DIR/lib/h2load_client_cert.c" ] || missing="$missing $BENCH_DIR/lib/h2load_client_cert.c"
if [ -n "$missing" ]; then
  echo "bench_dispatch: missing:$missing (apt-get install nghttp2-client nginx gcc libssl-dev openssl curl util-linux cmake)" >&2
  exit 2
fi

# ---- Release build -----------------------------------------------------------------
if [ ! -x build-release/picket ] || [ "${REBUILD:-0}" = 1 ]; then
  [ -f build-release/CMakeCache.txt ] ||
    cmake -S . -B build-release -DPICKET_SANITIZE=OFF -DCMAKE_BUILD_TYPE=Release -DPICKET_TESTS=OFF >/dev/null
  cmake --build build-release -j"${PICKET_JOBS:-2}" --target picket >/dev/null
fi
PICKET=$ROOT/build-release/picket

RUN=$(mktemp -d /tmp/bench-dispatch.XXXXXX)
PIDS=()
WD=
cleanup() {
  local pid
  if [ -n "$WD" ]; then kill "$WD" 2>/dev/null || true; fi
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    local alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then echo "bench_dispatch: kept $RUN" >&2; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# the cap: a watchdog whose sleep is stopped with it (so nothing holds our stdout open)
( trap 'kill $s 2>/dev/null; exit 0' TERM
  sleep 150 >/dev/null 2>&1 & s=$!
  wait $s && { echo "bench_dispatch: 150 s cap reached, stopping" >&2; kill -TERM $$; } ) &
WD=$!

read -r UP_PORT AUTHZ_PORT PX_PORT ADMIN_PORT < <($PY -c '
import socket
ss = [socket.socket() for _ in range(4)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])
for s in ss: s.close()')

# ---- PKI (picket's own dev CA tooling) --------------------------------------------------
TD=example.org
$PICKET cert init --trust-domain $TD --out "$RUN/ca" >/dev/null
$PICKET cert issue --ca "$RUN/ca" --spiffe-id spiffe://$TD/ns/default/sa/picket --ttl 1h --out "$RUN/pki" --name server --dns localhost --ip 127.0.0.1 >/dev/null
$PICKET cert issue --ca "$RUN/ca" --spiffe-id spiffe://$TD/ns/default/sa/client --ttl 1h --out "$RUN/pki" --name client >/dev/null
$PICKET cert issue --ca "$RUN/ca" --spiffe-id spiffe://$TD/ns/default/sa/authz --ttl 1h --out "$RUN/pki" --name authz --dns localhost --ip 127.0.0.1 >/dev/null
cc -O2 -Wall -shared -fPIC -o "$RUN/h2load_client_cert.so" "$BENCH_DIR/lib/h2load_client_cert.c" -ldl -lssl

# ---- the app: nginx, h2c ----------------------------------------------------------------
mkdir -p "$RUN/nginx/tmp"
USER_LINE=; [ "$(id -u)" = 0 ] && USER_LINE="user root;"
cat > "$RUN/nginx/nginx.conf" <<EOF
worker_processes 1;
$USER_LINE
pid $RUN/nginx/nginx.pid;
error_log $RUN/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    server_tokens off;
    tcp_nodelay on;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
    client_body_temp_path $RUN/nginx/tmp/body;
    proxy_temp_path $RUN/nginx/tmp/proxy;
    fastcgi_temp_path $RUN/nginx/tmp/fastcgi;
    uwsgi_temp_path $RUN/nginx/tmp/uwsgi;
    scgi_temp_path $RUN/nginx/tmp/scgi;
    server {
        listen 127.0.0.1:$UP_PORT http2 backlog=4096;
        location / { default_type text/plain; return 200 "hello from upstream\n"; }
    }
}
EOF
nginx -p "$RUN/nginx/" -e "$RUN/nginx/error.log" -c "$RUN/nginx/nginx.conf" -g "daemon off;" \
  >"$RUN/nginx.out" 2>&1 &
PIDS+=($!)

# ---- the authorization service ----------------------------------------------------------
SVC_ARGS=(--quiet --max-age-for /check/warm=60)
[ "$SERVICE" = h2 ] && SVC_ARGS+=(--h2)
$PY "$ROOT/tests/integration/authz_app.py" --port "$AUTHZ_PORT" --cert "$RUN/pki/authz.pem" \
  --key "$RUN/pki/authz.key" --ca "$RUN/ca/ca.pem" "${SVC_ARGS[@]}" >"$RUN/authz.out" 2>"$RUN/authz.err" &
PIDS+=($!)

# ---- picket -----------------------------------------------------------------------------
cat > "$RUN/policy.json" <<EOF
{"revision": 1, "default": "deny", "rules": [
  {"id": "local", "action": "allow", "paths": ["/local"]},
  {"id": "warm", "action": "dispatch", "dispatch": "authz", "paths": ["/warm"]},
  {"id": "cold", "action": "dispatch", "dispatch": "authz", "paths": ["/cold"]}]}
EOF
cat > "$RUN/picket.json" <<EOF
{
  "node_id": "bench/picket",
  "workers": 1,
  "identity": {"cert": "$RUN/pki/server.pem", "key": "$RUN/pki/server.key",
               "trust_bundles": {"$TD": "$RUN/ca/ca.pem"}},
  "policy": {"file": "$RUN/policy.json"},
  "dispatch": {"authz": {"url": "https://127.0.0.1:$AUTHZ_PORT/check",
                         "server_id": "spiffe://$TD/ns/default/sa/authz",
                         "timeout": "2s", "cache_entries": 10000, "headers": ["x-tenant"]}},
  "listeners": [{"name": "inbound", "kind": "inbound", "bind": "127.0.0.1:$PX_PORT",
                 "upstream": "h2c://127.0.0.1:$UP_PORT"}],
  "admin": {"bind": "127.0.0.1:$ADMIN_PORT"},
  "log": {"level": "warn"}
}
EOF
taskset -c 0 "$PICKET" run -c "$RUN/picket.json" >"$RUN/picket.out" 2>"$RUN/picket.err" &
PICKET_PID=$!
PIDS+=("$PICKET_PID")

wait_ok() { # URL-ish check command, what
  for _ in $(seq 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "bench_dispatch: not ready: $*" >&2; tail -5 "$RUN"/*.err >&2 || true; exit 1
}
wait_ok curl -fsS "http://127.0.0.1:$ADMIN_PORT/healthz"
wait_ok grep -q ready "$RUN/authz.out"
wait_ok $PY -c "import socket; socket.create_connection(('127.0.0.1', $UP_PORT), 1)"

CURL=(curl -sS --http2 --noproxy '*' --cacert "$RUN/ca/ca.pem" --cert "$RUN/pki/client.pem"
      --key "$RUN/pki/client.key" --resolve "localhost:$PX_PORT:127.0.0.1" -H 'x-tenant: acme'
      -o /dev/null -w '%{http_code}')
for p in local warm cold; do
  st=$("${CURL[@]}" "https://localhost:$PX_PORT/$p" || true)
  if [ "$st" != 200 ]; then echo "bench_dispatch: GET /$p answered $st, expected 200" >&2; exit 1; fi
done
st=$("${CURL[@]}" -H 'x-tenant: evil' "https://localhost:$PX_PORT/cold" || true)
[ "$st" = 401 ] || { echo "bench_dispatch: denied tenant got $st, expected 401" >&2; exit 1; }

# One h2load process per client connection (-c 1 each): h2load walks an -i URI list in the
# same order on every connection of one process, which would make the "cold" requests
# identical and in flight together (coalesced into one check). Each process gets its own
# keys; the same harness is used for all three paths so the figures compare.
$PY -c "
for c in range($CLIENTS):
    with open('$RUN/cold.%d.uris' % c, 'w') as f:
        for j in range($COLD_KEYS_PER_CLIENT):
            f.write('https://127.0.0.1:$PX_PORT/cold?k=%d\\n' % (c * $COLD_KEYS_PER_CLIENT + j))"

h2l() { # h2load with the client certificate, on the load CPU
  LD_PRELOAD="$RUN/h2load_client_cert.so" H2LOAD_CLIENT_CERT="$RUN/pki/client.pem" \
  H2LOAD_CLIENT_KEY="$RUN/pki/client.key" \
    timeout 60 taskset -c 1 h2load -t 1 -H 'x-tenant: acme' "$@"
}
target() { # path, client index
  if [ "$1" = cold ]; then echo "-i $RUN/cold.$2.uris"; else echo "https://127.0.0.1:$PX_PORT/$1"; fi
}
for p in local warm cold; do
  # warm-up (not measured): connections, pools, the warm entry
  # shellcheck disable=SC2046
  h2l -c "$CLIENTS" -m "$STREAMS" -n "$WARMUP_N" $(target "$p" 0) >"$RUN/$p.warmup.txt" 2>&1 || true
  curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics" >"$RUN/$p.metrics.before"
  LOADS=()
  for c in $(seq 0 $((CLIENTS - 1))); do
    # shellcheck disable=SC2046
    h2l -c 1 -m "$STREAMS" -D "$DURATION" --log-file="$RUN/$p.$c.log" $(target "$p" "$c") \
      >"$RUN/$p.$c.h2load.txt" 2>&1 &
    LOADS+=($!); PIDS+=($!)
  done
  for pid in "${LOADS[@]}"; do
    wait "$pid" || { echo "bench_dispatch: an h2load for /$p failed:" >&2; tail -3 "$RUN"/$p.*.h2load.txt >&2; exit 1; }
  done
  curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics" >"$RUN/$p.metrics.after"
done

echo "== bench_dispatch: $CLIENTS x h2load -c1 -m$STREAMS -D${DURATION}s over mTLS h2; picket $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') Release, 1 worker on CPU 0; h2load CPU 1; nginx h2c app; authz_app.py ($SERVICE) unpinned"
echo "   /local allow rule; /warm dispatch + max-age=60; /cold dispatch, no max-age, distinct query strings; latency = h2load per-request time"
$PY "$ROOT/tests/bench/dispatch_report.py" "$RUN" local warm cold
if ! kill -0 "$PICKET_PID" 2>/dev/null; then echo "bench_dispatch: picket died during the run" >&2; exit 1; fi
