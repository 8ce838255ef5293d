#!/bin/bash
# tests/hardening/compare.sh - the attack table of tests/hardening/attacks.py for
# picket, nghttpx, HAProxy and nginx side by side, each configured the way the
# shared bench (../shared/bench) configures it, behind the bench's own backend.
#
#   bash tests/hardening/compare.sh [attacks.py args, e.g. --only h2_rapid_reset,tls_1_1_only]
#
# What it does (everything on 127.0.0.1, on free ports below the ephemeral range):
#   - makes a run directory (mktemp -d /tmp/picket-compare.XXXXXX) and the bench PKI
#     in it with ../shared/bench/pki.sh (ECDSA P-256, valid 60 min);
#   - renders ../shared/bench/conf/backend-nginx.conf.in, haproxy.cfg.in and
#     nginx-proxy.conf.in with the substitutions ../shared/bench/lib/bench.py makes,
#     and uses bench.py's nghttpx command line; starts the backend (nginx: / = 64 B,
#     /1m = 1 MiB) once for all servers;
#   - starts picket (build-release/picket, built in Release if needed) through
#     tests/bench/candidate.sh, i.e. with the config the bench gives picket
#     (workers 1, h2c upstream, header_timeout 30s, idle_timeout 300s);
#   - for each server in turn: starts it (one worker/thread, like the bench), waits
#     for GET / and GET /1m over mTLS h2, runs
#       /usr/bin/python3 tests/hardening/attacks.py --target ... --pid <server pid>
#         --path / --slow-path / --big-path /1m --json RUN/<server>.json
#     then stops it; finally prints the combined tables (also in RUN/compare.txt).
#
# Pinning (as the bench's sidecar layout): servers and backend on core 0, attacks.py
# and its probe on core 1; COMPARE_NO_PIN=1 (or a 1-core machine) pins nothing.
#
# Environment:
#   COMPARE_SERVERS  comma list, any of picket,nghttpx,haproxy,nginx (default: all four)
#   COMPARE_NO_PIN   1: no taskset
#   PICKET_BIN       picket binary (default: build-release/picket, configured and
#                    built incrementally with cmake -DCMAKE_BUILD_TYPE=Release)
#   BENCH_DIR        the shared bench (default: <repo>/../shared/bench)
#
# Every process this script starts is stopped by its PID on exit (trap). The run
# directory is kept (logs, rendered configs, per-server JSON and tables).
# Exit status: 0 only when every server ran and picket's row has no ACCEPTED, crashed
# or error verdict; 1 when a server failed to start, attacks.py produced no table for
# one, or picket accepted an attack, crashed, or an attack against it broke (the table
# is the evidence for picket's claims, so it must not pass on such a row). The peers'
# ACCEPTED rows are findings about them, listed in the report, not failures of this
# script (attacks.py's own status per server is in RUN/<s>.rc).
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
BENCH_DIR=${BENCH_DIR:-$ROOT/../shared/bench}
if [ ! -f "$BENCH_DIR/pki.sh" ] || [ ! -d "$BENCH_DIR/conf" ]; then
  echo "compare.sh: shared bench not found at $BENCH_DIR (set BENCH_DIR)" >&2
  exit 2
fi
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
CONF=$BENCH_DIR/conf
PY=/usr/bin/python3
HOST=127.0.0.1
TRUST_DOMAIN=example.org
ALLOWED_IDS="spiffe://$TRUST_DOMAIN/ns/default/sa/client"
# bench.py's SMALL_BODY ("\n" written as the two characters nginx unescapes): 64 bytes
SMALL_BODY='bench-backend-fixed-64-byte-body:0123456789abcdefghijklmnopqrst\n'
SMALL_LEN=64
IFS=, read -r -a SERVERS <<< "${COMPARE_SERVERS:-picket,nghttpx,haproxy,nginx}"
ATTACK_ARGS=("$@")

log() { echo "[compare $(date -u +%H:%M:%S)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for c in nginx haproxy nghttpx openssl curl taskset cmake; do
  command -v "$c" >/dev/null 2>&1 || die "$c not found (apt-get install nginx haproxy nghttp2-proxy nghttp2-client curl cmake)"
done
"$PY" -c 'import hpack' 2>/dev/null || die "$PY has no hpack module (apt-get install python3-hpack)"

# ---------------------------------------------------------------- processes
PIDS=()   # every server we started, in start order

alive() { # PID: running and not a zombie
  local st
  [ -r "/proc/$1/stat" ] || return 1
  st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$st" ] && [ "$st" != Z ]
}

tree_pids() { # PID and its descendants
  local c
  echo "$1"
  # shellcheck disable=SC2013  # the file is a space-separated list of PIDs
  for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do tree_pids "$c"; done
}

stop_pid() { # SIGTERM the PID, wait 5 s, then SIGTERM/SIGKILL what is left of its tree
  local pid=$1 all p i sig left
  alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
  all=$(tree_pids "$pid")
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 50); do alive "$pid" || break; sleep 0.1; done
  for sig in TERM KILL; do
    left=
    for p in $all; do alive "$p" && left+=" $p"; done
    [ -z "$left" ] && break
    # shellcheck disable=SC2086
    kill -"$sig" $left 2>/dev/null || true
    sleep 1
  done
  wait "$pid" 2>/dev/null || true
}

ATTACK_PID=
# shellcheck disable=SC2317  # called by the trap
cleanup() {
  local rc=$? i
  trap - EXIT INT TERM
  if [ -n "$ATTACK_PID" ]; then stop_pid "$ATTACK_PID"; fi
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
  exit "$rc"
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT
trap 'log terminated; exit 143' TERM

if [ "${COMPARE_NO_PIN:-0}" != 1 ] && [ "$(nproc)" -ge 2 ]; then
  SRV_PIN=(taskset -c 0); ATK_PIN=(taskset -c 1); PIN_NOTE="servers + backend on core 0, attacks.py + probe on core 1"
else
  SRV_PIN=(); ATK_PIN=(); PIN_NOTE="not pinned"
fi

start() { # NAME ARGV... -> sets STARTED_PID (log in RUN/logs/NAME.out)
  local name=$1; shift
  log "start $name: $*"
  "${SRV_PIN[@]}" "$@" >"$RUN/logs/$name.out" 2>&1 </dev/null &
  STARTED_PID=$!
  PIDS+=("$STARTED_PID")
}

free_port() { # a port free on 127.0.0.1, below the ephemeral range (clients never take it)
  "$PY" - <<'EOF'
import random, socket
lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for _ in range(1000):
    p = random.randint(20000, min(lo, 32768) - 1)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    print(p)
    break
else:
    raise SystemExit("no free port")
EOF
}

render() { # TEMPLATE OUT KEY=VALUE... (bench.py's render: @KEY@ -> VALUE, none may be left)
  local tpl=$CONF/$1 out=$2 s kv left; shift 2
  s=$(<"$tpl")
  for kv in "$@"; do s=${s//"@${kv%%=*}@"/"${kv#*=}"}; done
  left=$(grep -oE '@[A-Z0-9_]+@' <<<"$s" | sort -u | tr '\n' ' ' || true)
  [ -z "$left" ] || die "unrendered placeholders in $tpl: $left"
  printf '%s\n' "$s" > "$out"
}

uri_san_hex() { # DER of a URI GeneralName (tag 0x86, short length), upper-case hex
  local id=$1
  [ "${#id}" -lt 128 ] || die "SPIFFE ID too long: $id"
  printf '86%02X%s' "${#id}" "$(printf '%s' "$id" | od -An -tx1 | tr -d ' \n' | tr a-f A-F)"
}

ready() { # PORT PID: GET / (64 B) and GET /1m (1 MiB) over mTLS h2 answer 200, within 15 s
  local port=$1 pid=$2 i a b
  for i in $(seq 150); do
    alive "$pid" || return 1
    a=$(curl -s -o /dev/null -w '%{http_code} %{size_download} %{http_version}' --http2 --max-time 2 \
          --resolve "localhost:$port:$HOST" --cacert "$PKI/ca.crt" --cert "$PKI/client.crt" \
          --key "$PKI/client.key" "https://localhost:$port/" 2>/dev/null || true)
    if [ "$a" = "200 $SMALL_LEN 2" ]; then
      b=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' --http2 --max-time 5 \
            --resolve "localhost:$port:$HOST" --cacert "$PKI/ca.crt" --cert "$PKI/client.crt" \
            --key "$PKI/client.key" "https://localhost:$port/1m" 2>/dev/null || true)
      [ "$b" = "200 1048576" ] && return 0
    fi
    sleep 0.1
  done
  return 1
}

# ---------------------------------------------------------------- setup
RUN=$(mktemp -d /tmp/picket-compare.XXXXXX)
PKI=$RUN/pki
mkdir -p "$RUN/tmp" "$RUN/www" "$RUN/logs"
head -c 1048576 /dev/urandom > "$RUN/www/1m"
log "run dir $RUN ($PIN_NOTE)"

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)   # bench.py: min(65536, hard limit)
if [ "$NOFILE" = unlimited ] || [ "$NOFILE" -gt 65536 ]; then NOFILE=65536; fi
USER_LINE=
if [ "$(id -u)" = 0 ]; then USER_LINE="user root;"; fi

bash "$BENCH_DIR/pki.sh" "$PKI" ec >&2

if [[ " ${SERVERS[*]} " == *" picket "* ]]; then
  if [ -z "${PICKET_BIN:-}" ]; then
    [ -f build-release/CMakeCache.txt ] || \
      cmake -S . -B build-release -DPICKET_SANITIZE=OFF -DCMAKE_BUILD_TYPE=Release -DPICKET_TESTS=OFF >&2
    # the commit the binary is built from (the tree may move on during the run)
    PICKET_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
    git -C "$ROOT" diff --quiet HEAD -- proxy CMakeLists.txt 2>/dev/null || PICKET_REV+=" + uncommitted changes"
    cmake --build build-release -j"${PICKET_JOBS:-2}" --target picket >&2
    PICKET_BIN=$ROOT/build-release/picket
  fi
  [ -x "$PICKET_BIN" ] || die "picket binary not found: $PICKET_BIN"
fi

# backend: the bench's nginx app (h1 and h2c ports; its own mTLS port is not used here)
H1_PORT=$(free_port); H2C_PORT=$(free_port); TLS_PORT=$(free_port)
render backend-nginx.conf.in "$RUN/backend.conf" "USER_LINE=$USER_LINE" "RUN=$RUN" "NOFILE=$NOFILE" \
  "WORKER_CONNS=$((NOFILE / 2))" "H1_PORT=$H1_PORT" "H2C_PORT=$H2C_PORT" "TLS_PORT=$TLS_PORT" \
  "PKI=$PKI" "SMALL_BODY=$SMALL_BODY" "SMALL_LEN=$SMALL_LEN"
start backend nginx -p "$RUN/" -e "$RUN/logs/backend-error.log" -c "$RUN/backend.conf" -g "daemon off;"
BACKEND_PID=$STARTED_PID
for i in $(seq 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://$HOST:$H1_PORT/1m" || true)" = 200 ] && break
  alive "$BACKEND_PID" || die "backend exited: $(tail -5 "$RUN/logs/backend.out")"
  sleep 0.1
done

# ---------------------------------------------------------------- servers
start_server() { # NAME PORT -> STARTED_PID
  local name=$1 port=$2 listen="$HOST:$2" id rules ids lua_load='' lua_init='' lua_access=''
  case $name in
    picket)
      mkdir -p "$RUN/picket"
      start picket env PICKET_BIN="$PICKET_BIN" BENCH_LISTEN_ADDR="$HOST" BENCH_LISTEN_PORT="$port" \
        BENCH_LISTEN="$listen" BENCH_UPSTREAM_H1="$HOST:$H1_PORT" BENCH_UPSTREAM_H2C="$HOST:$H2C_PORT" \
        BENCH_TLS_CERT="$PKI/server.crt" BENCH_TLS_KEY="$PKI/server.key" BENCH_TLS_CERT_KEY="$PKI/server.pem" \
        BENCH_CLIENT_CA="$PKI/ca.crt" BENCH_TRUST_DOMAIN="$TRUST_DOMAIN" BENCH_ALLOWED_IDS="$ALLOWED_IDS" \
        BENCH_SERVER_ID="spiffe://$TRUST_DOMAIN/ns/default/sa/server" BENCH_WORKERS=1 BENCH_CPU= \
        BENCH_RUN_DIR="$RUN/picket" bash "$ROOT/tests/bench/candidate.sh" ;;
    nghttpx)   # bench.py peer_argv("nghttpx"): h2c upstream
      start nghttpx nghttpx --conf=/dev/null "-f$HOST,$port" "-b$HOST,$H2C_PORT;;proto=h2" \
        -n1 --backlog=4096 --verify-client "--verify-client-cacert=$PKI/ca.crt" \
        "--errorlog-file=$RUN/logs/nghttpx-error.log" \
        --frontend-http2-read-timeout=300s --frontend-keep-alive-timeout=300s \
        --backend-keep-alive-timeout=300s --backend-http2-window-size=16777215 \
        --backend-http2-connection-window-size=16777215 \
        --frontend-http2-connection-window-size=16777215 \
        --no-ocsp "--pid-file=$RUN/logs/nghttpx.pid" "$PKI/server.key" "$PKI/server.crt" ;;
    haproxy)   # bench.py peer_argv("haproxy"): HTTP/1.1 upstream, SPIFFE ID byte match
      rules=
      for id in $ALLOWED_IDS; do
        rules+="${rules:+$'\n'}    tcp-request session set-var(sess.spiffe_id) str($id) if { ssl_c_der,hex -m sub $(uri_san_hex "$id") }"
      done
      render haproxy.cfg.in "$RUN/haproxy.cfg" "MAXCONN=$((NOFILE / 2 - 100))" "LISTEN=$listen" "PKI=$PKI" \
        "SPIFFE_RULES=$rules" "UPSTREAM_SERVER=app $HOST:$H1_PORT"
      start haproxy haproxy -db -f "$RUN/haproxy.cfg" ;;
    nginx)     # bench.py peer_argv("nginx"): HTTP/1.1 upstream, Lua SPIFFE check if the module is there
      if [ -f /usr/lib/nginx/modules/ngx_http_lua_module.so ]; then
        lua_load="load_module /usr/lib/nginx/modules/ndk_http_module.so;"$'\n'"load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;"
        ids=
        for id in $ALLOWED_IDS; do ids+="${ids:+, }\"$id\""; done
        lua_init="    init_by_lua_block { ALLOWED_IDS = { $ids }; dofile(\"$CONF/nginx-spiffe.lua\") }"
        lua_access="            access_by_lua_block { spiffe_check() }"
      else
        log "libnginx-mod-http-lua not installed: nginx checks the CA chain only"
      fi
      render nginx-proxy.conf.in "$RUN/nginx-proxy.conf" "USER_LINE=$USER_LINE" "RUN=$RUN" "NOFILE=$NOFILE" \
        "WORKER_CONNS=$((NOFILE / 2))" "UPSTREAM_H1=$HOST:$H1_PORT" "LISTEN=$listen" "PKI=$PKI" \
        "LUA_LOAD=$lua_load" "LUA_INIT=$lua_init" "LUA_ACCESS=$lua_access"
      start nginx nginx -p "$RUN/" -e "$RUN/logs/nginx-proxy-error.log" -c "$RUN/nginx-proxy.conf" -g "daemon off;" ;;
    *) die "unknown server $name (picket, nghttpx, haproxy, nginx)" ;;
  esac
}

FAILED=()
T0=$(date +%s)
for s in "${SERVERS[@]}"; do
  port=$(free_port)
  start_server "$s" "$port"
  spid=$STARTED_PID
  if ! ready "$port" "$spid"; then
    log "$s did not become ready on $port; last output:"
    tail -15 "$RUN/logs/$s.out" >&2 || true
    FAILED+=("$s")
    stop_pid "$spid"
    continue
  fi
  log "$s ready on $HOST:$port (pid $spid); running attacks.py"
  t1=$(date +%s)
  "${ATK_PIN[@]}" "$PY" "$ROOT/tests/hardening/attacks.py" --target "$HOST:$port" \
    --cert "$PKI/client.crt" --key "$PKI/client.key" --ca "$PKI/ca.crt" --pid "$spid" \
    --servername localhost --path / --slow-path / --big-path /1m --json "$RUN/$s.json" \
    "${ATTACK_ARGS[@]}" >"$RUN/$s.table" &
  ATTACK_PID=$!
  rc=0
  wait "$ATTACK_PID" || rc=$?
  ATTACK_PID=
  echo "$rc" > "$RUN/$s.rc"
  echo "$(( $(date +%s) - t1 ))" > "$RUN/$s.secs"
  alive "$spid" && echo alive > "$RUN/$s.state" || echo gone > "$RUN/$s.state"
  log "$s: attacks.py exit status $rc after $(cat "$RUN/$s.secs") s ($(cat "$RUN/$s.state") at the end)"
  stop_pid "$spid"
done

# ---------------------------------------------------------------- report
{
  echo "picket $("${PICKET_BIN:-$ROOT/build-release/picket}" version 2>/dev/null | awk '{print $2}')" \
    "(${PICKET_REV:-${PICKET_BIN:-not run}})"
  echo "nghttpx $(nghttpx --version 2>&1 | awk '{print $2}' | sed 's|.*/||')"
  echo "haproxy $(haproxy -v 2>&1 | awk 'NR==1{print $3}')"
  echo "nginx $(nginx -v 2>&1 | sed 's|.*nginx/||')$([ -f /usr/lib/nginx/modules/ngx_http_lua_module.so ] && echo ' (+lua)')"
  echo "openssl $(openssl version | awk '{print $2}')"
} > "$RUN/versions.txt"

"$PY" - "$RUN" "$(IFS=,; echo "${SERVERS[*]}")" "$PIN_NOTE" "$(( $(date +%s) - T0 ))" <<'EOF' | tee "$RUN/compare.txt"
import json, os, sys, time
run, servers, pin, took = sys.argv[1], sys.argv[2].split(","), sys.argv[3], int(sys.argv[4])
res, secs, rcs = {}, {}, {}
for s in servers:
    try:
        with open(os.path.join(run, s + ".json")) as f:
            res[s] = {r["attack"]: r for r in json.load(f)}
        secs[s] = open(os.path.join(run, s + ".secs")).read().strip()
        rcs[s] = open(os.path.join(run, s + ".rc")).read().strip()
    except OSError:
        res[s] = None
order = []
for s in servers:
    for a in (res[s] or {}):
        if a not in order:
            order.append(a)
versions = open(os.path.join(run, "versions.txt")).read().split("\n")
print("attacks.py side by side, run %s - %s (%d s)" % (
    time.strftime("%Y-%m-%d %H:%M", time.gmtime(time.time() - took)), time.strftime("%H:%M UTC", time.gmtime()),
    took))
print("pinning: %s" % pin)
print("versions: " + "; ".join(v for v in versions if v))
print("config: the shared bench's, 1 worker each; upstream: picket h2c, nghttpx h2c, haproxy http/1.1,")
print("        nginx http/1.1; picket via tests/bench/candidate.sh")
print("attacks.py --path / --slow-path / --big-path /1m")
print("per server: " + "; ".join("%s %s s, exit %s" % (s, secs[s], rcs[s]) if res[s] is not None
                                 else "%s NOT RUN" % s for s in servers))
aw = max([len("attack")] + [len(a) for a in order])

def mib(k):
    if k is None:
        return "-"
    m = k / 1024.0
    return "%+.1f" % m if abs(m) < 99.95 else "%+.0f" % m

def table(title, sub, cell, cw):
    print()
    print(title)
    print(("%-*s | %s" % (aw, "", " | ".join(s.center(cw) for s in servers))).rstrip())
    print(("%-*s | %s" % (aw, "attack", " | ".join(sub.ljust(cw) for _ in servers))).rstrip())
    print("-" * aw + "-+-" + "-+-".join("-" * cw for _ in servers))
    for a in order:
        cells = []
        for s in servers:
            r = (res[s] or {}).get(a)
            cells.append(("-" if r is None else cell(r)).ljust(cw))
        print(("%-*s | %s" % (aw, a, " | ".join(cells))).rstrip())

table("Verdict, RSS growth (MiB, server + its children) and server CPU seconds during the attack",
      "verdict     RSS CPU s",
      lambda r: "%-8s %6s %5s" % (r["verdict"], mib(r["rss_growth_kib"]),
                                 "-" if r["cpu_s"] is None else "%.2f" % r["cpu_s"]), 21)
table("Probe (fresh mTLS h2 GET / every 100 ms during the attack): ok/total, p99; attack duration",
      "  probe    p99    dur",
      lambda r: "%7s %6s %6s" % ("%d/%d" % (r["probe_ok"], r["probe_total"]),
                                 "-" if r["probe_p99_ms"] is None else "%.0fms" % r["probe_p99_ms"],
                                 "%.1fs" % r["seconds"]), 21)
print()
print("Verdict counts:")
for s in servers:
    if res[s] is None:
        print("  %-8s not run" % s)
        continue
    c = {}
    for r in res[s].values():
        c[r["verdict"]] = c.get(r["verdict"], 0) + 1
    print("  %-8s %s" % (s, ", ".join("%d %s" % (c[v], v) for v in
          ("ACCEPTED", "crashed", "error", "survived", "ended", "refused", "n/a") if v in c)))
print()
print("Details (attacks.py's detail column):")
nw = max(len(s) for s in servers)
for a in order:
    print(a)
    for s in servers:
        r = (res[s] or {}).get(a)
        if r is not None:
            print("  %-*s %-8s %s" % (nw, s, r["verdict"], r["detail"]))
print()
print("run dir: %s (per-server tables: <server>.table, rows: <server>.json, logs: logs/)" % run)
# The verdict: picket must have run, with no row ACCEPTED, crashed or error; every other
# server that was asked for must have produced its table.
bad = []
for s in servers:
    if res[s] is None:
        bad.append("%s: no results (attacks.py exit %s)" % (s, rcs.get(s, "not run")))
    elif s == "picket":
        for r in res[s].values():
            if r["verdict"] in ("ACCEPTED", "crashed", "error"):
                bad.append("picket %s: %s (%s)" % (r["attack"], r["verdict"], r["detail"]))
peers = ["%s %s" % (s, r["attack"]) for s in servers if s != "picket" and res[s]
         for r in res[s].values() if r["verdict"] in ("ACCEPTED", "crashed")]
if peers:
    print("findings about the peers (not failures of this run): " + ", ".join(peers))
print("VERDICT: " + ("FAIL: " + "; ".join(bad) if bad else "PASS"))
with open(os.path.join(run, "verdict"), "w") as f:
    f.write("FAIL\n" if bad else "PASS\n")
EOF

[ ${#FAILED[@]} -eq 0 ] || { log "not run: ${FAILED[*]}"; exit 1; }
[ "$(cat "$RUN/verdict" 2>/dev/null)" = PASS ] || { log "verdict: FAIL (see $RUN/compare.txt)"; exit 1; }
exit 0
