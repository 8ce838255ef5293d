#!/bin/bash
# tests/bench/split.sh - where a sidecar core's time goes: the proxy's and the
# app's CPU per request, measured for picket and the bench's peers in turn,
# in the bench's sidecar layout (proxy and app, the bench's backend nginx,
# pinned to core 0; h2load alone on core 1). Runs alternate between targets
# (ROUNDS rounds), so a machine whose load drifts disturbs every target alike,
# which a bench run, where each target has its own minute, cannot promise.
#
#   bash tests/bench/split.sh [small|1m|h1] TARGET...
#     TARGET: a picket binary, "nghttpx" (h2c upstream, as the bench runs it)
#     or "nginx" (the bench's nginx proxy, HTTP/1.1 upstream)
#
# small: h2load -c32 -m10 -n200000 GET / (64 B); 1m: -c4 -m1 -n1200 GET /1m;
# h1: HTTP/1.1 clients, h2load --h1 -c32 -n100000 GET / (not a bench
# workload: the bench's clients speak h2). newconn: the bench's new
# connections, h2load -c2000 -n2000 -m1 (full mTLS handshakes), after one
# such burst untimed (BURST, 2000 unless set), as the bench's second and
# third repeats come after its first (nginx's first repeat is often at
# half the speed of the others). UPSTREAM=h1 has picket forward to
# the app's HTTP/1.1 port instead of its h2c one (as nginx and HAProxy do).
# BURST=N first opens and closes N connections (one GET each), as the
# bench's idle and newconn workloads do before its 1 MiB one. STEADY=N first
# sends N small requests (-c32 -m10), as the bench's steady workload does
# before its 1 MiB one (nginx moves 1 MiB bodies far faster after it). IDLE=N first
# runs the bench's idle workload itself (its helper holds N idle mTLS h2
# connections, then closes them), which the bench runs before steady.
# PERF=record or PERF=stat profiles the proxy during each timed run
# (perf_start below); PERF_ON=app profiles the app behind it instead.
# Prints req/s, proxy us/req (us/MiB for 1m, us/conn for newconn) and app
# us/req from /proc/PID/stat utime+stime, and the requests' p50 and p99 latency from
# h2load's per-request log (--log-file): alternating, a latency figure is
# not one target's minute against another's. Reuses the last tests/bench/run.sh run
# directory (BENCH_RUN_DIR picks another): its PKI, the candidate's config,
# the backend's and the nginx proxy's configs.
set -euo pipefail
wl=${1:?usage: split.sh small|1m|h1|newconn TARGET...}; shift
ROUNDS=${ROUNDS:-3}
d=${BENCH_RUN_DIR:-$(dirname "$(ls -t /tmp/h2bench.*/results.json | head -1)")}
BENCH_DIR=${BENCH_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../shared/bench" && pwd)}
case $wl in
  small) args=(-c32 -m10 -n200000); path=/; n=200000 ;;
  1m) args=(-c4 -m1 -n1200); path=/1m; n=1200 ;;
  h1) args=(--h1 -c32 -n100000); path=/; n=100000 ;;
  newconn) args=(-c2000 -n2000 -m1); path=/; n=2000; BURST=${BURST:-2000} ;;
  *) echo "split.sh: workload is small, 1m, h1 or newconn" >&2; exit 2 ;;
esac
if [ -n "${DURATION:-}" ]; then # the bench's way: -D seconds after a warm-up
  args=("${args[@]:0:${#args[@]}-1}" -D "$DURATION" --warm-up-time "${WARMUP:-1}")
fi
conf=$d/candidate/picket.json
if [ "${UPSTREAM:-h2c}" = h1 ]; then
  conf=$d/candidate/picket-h1up.json
  sed 's#"upstream": "h2c://127.0.0.1:24081"#"upstream": "http://127.0.0.1:24080"#' \
    "$d/candidate/picket.json" > "$conf"
  grep -q '"http://127.0.0.1:24080"' "$conf" || { echo "split.sh: UPSTREAM=h1: no h2c upstream to replace in $d/candidate/picket.json" >&2; exit 2; }
fi

cpu() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
children() { pgrep -P "$1" | tr '\n' ' '; }
# h2load on the load core, with the bench's client certificate
load() {
  LD_PRELOAD=$d/h2load_client_cert.so H2LOAD_CLIENT_CERT=$d/pki/client.crt \
    H2LOAD_CLIENT_KEY=$d/pki/client.key taskset -c 1 h2load "$@"
}

# Stops the app and waits for it to go (its ports free for the next round's).
stop_backend() {
  local b i
  b=$(cat "$d/backend.pid" 2>/dev/null) || return 0
  kill "$b" 2>/dev/null || return 0
  for i in $(seq 100); do kill -0 "$b" 2>/dev/null || return 0; sleep 0.1; done
  echo "split.sh: the app ($b) did not stop" >&2; exit 1
}

# PERF=record: perf record -e cpu-clock -g on the proxy's processes (the
# app's with PERF_ON=app) during the timed run; PERF=stat: perf stat of
# their syscalls, context switches and CPU. The data goes to $d/split-perf.<target>.<round>, and a summary (by
# library, or the syscalls per request / MiB) under the figures' line.
perf_pid=
perf_start() { # PIDS (the proxy's or the app's)
  [ -n "${PERF:-}" ] || return 0
  command -v perf >/dev/null || { echo "split.sh: PERF needs perf (Debian: linux-perf)" >&2; exit 2; }
  perf_out=$d/split-perf.$(basename "$t").$round
  local pids; pids=$(echo "$@" | tr -s ' ' ',' | sed 's/,$//')
  case $PERF in
    record) perf record -q -e cpu-clock -g -p "$pids" -o "$perf_out" 2>/dev/null & ;;
    stat) perf stat -e 'syscalls:sys_enter_*,context-switches,task-clock' -p "$pids" \
            -o "$perf_out" 2>/dev/null & ;;
    *) echo "split.sh: PERF is record or stat" >&2; exit 2 ;;
  esac
  perf_pid=$!
  sleep 0.5 # perf attaches
}
perf_end() { # after the timed run
  [ -n "$perf_pid" ] || return 0
  kill -INT "$perf_pid" 2>/dev/null; wait "$perf_pid" 2>/dev/null || true
  perf_pid=
}
unit() { case $wl in 1m) echo MiB ;; newconn) echo conn ;; *) echo req ;; esac; }
perf_show() { # under the figures' line
  [ -n "${PERF:-}" ] || return 0
  if [ "$PERF" = record ]; then
    perf report -i "$perf_out" --no-children --sort dso -g none 2>/dev/null |
      awk '!/^#/ && NF {printf "    %s %s\n", $1, $2; if (++k == 6) exit}'
  else
    awk -v n="$n" -v unit="$(unit)" '
      $1 + 0 > 0 && ($2 ~ /syscalls:/ || $2 == "context-switches") {
        sub("syscalls:sys_enter_", "", $2); printf "    %-18s %8.3f per %s\n", $2, $1 / n, unit }
      /task-clock/ {gsub(",", "", $1); printf "    %-18s %8.2f us per %s\n", "task-clock", $1 * 1000 / n, unit}' \
      "$perf_out" | sort -k2 -n -r | head -12
  fi
}

one() { # TARGET -> one line
  local t=$1 proxy app pid p0 a0 p1 a1 out tck
  taskset -c 0 nginx -c "$d/backend.conf" -p "$d"
  sleep 0.3
  app=$(children "$(cat "$d/backend.pid")")
  case $t in
    nghttpx)
      taskset -c 0 nghttpx --conf=/dev/null -f127.0.0.1,24090 "-b127.0.0.1,24081;;proto=h2" -n1 \
        --backlog=4096 --verify-client --verify-client-cacert="$d/pki/ca.crt" \
        --errorlog-file=/dev/null --frontend-http2-read-timeout=300s \
        --backend-http2-window-size=16777215 --backend-http2-connection-window-size=16777215 \
        --frontend-http2-connection-window-size=16777215 --no-ocsp \
        "$d/pki/server.key" "$d/pki/server.crt" 2>/dev/null &
      pid=$!; sleep 1.5; proxy="$pid $(children "$pid")" ;;
    nginx)
      sed '/^pid /d' "$d/nginx-proxy.conf" | sed "1i pid $d/split-nginx.pid;" > "$d/split-nginx.conf"
      taskset -c 0 nginx -c "$d/split-nginx.conf" -p "$d" -g "daemon off;" &
      pid=$!; sleep 1; proxy=$(children "$pid") ;;
    *)
      taskset -c 0 "$t" run -c "$conf" 2>/dev/null &
      pid=$!; sleep 1.5; proxy=$pid ;;
  esac
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "split.sh: $t did not start (the certificates of $d live one hour: run the bench again)" >&2
    exit 1
  fi
  if [ -n "${STEADY:-}" ]; then
    load -c32 -m10 -n"$STEADY" https://127.0.0.1:24090/ >/dev/null 2>&1
  fi
  if [ -n "${BURST:-}" ]; then
    load -c"$BURST" -n"$BURST" https://127.0.0.1:24090/ >/dev/null 2>&1
    sleep 1
  fi
  if [ -n "${IDLE:-}" ]; then
    coproc IDLER { taskset -c 1 /usr/bin/python3 "$BENCH_DIR/lib/idle_conns.py" --port 24090 \
      --ca "$d/pki/ca.crt" --cert "$d/pki/client.crt" --key "$d/pki/client.key" -n "$IDLE" --deadline 60; }
    read -r _ <&"${IDLER[0]}"             # WARM
    echo GO >&"${IDLER[1]}"; read -r _ <&"${IDLER[0]}"   # READY
    sleep 1
    echo CLOSE >&"${IDLER[1]}"; read -r _ <&"${IDLER[0]}" # DONE
    wait "$IDLER_PID" 2>/dev/null || true
    sleep 2
  fi
  # shellcheck disable=SC2086
  if [ "${PERF_ON:-proxy}" = app ]; then perf_start $app; else perf_start $proxy; fi
  # shellcheck disable=SC2086
  p0=$(cpu $proxy); a0=$(cpu $app)
  rm -f "$d/split-h2load.log"
  out=$(load "${args[@]}" \
        --log-file="$d/split-h2load.log" "https://127.0.0.1:24090$path" 2>&1)
  # shellcheck disable=SC2086
  p1=$(cpu $proxy); a1=$(cpu $app)
  perf_end
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  stop_backend
  tck=$(getconf CLK_TCK)
  # h2load's log: start time, status, duration in microseconds, per request
  lat=$(awk '{print $3}' "$d/split-h2load.log" 2>/dev/null | sort -n |
        awk '{v[NR] = $1}
             END {if (NR) {m = int((NR + 1) / 2); q = int(NR * 0.99); if (q < 1) q = 1
                           printf "p50 %.2f p99 %.2f ms", v[m] / 1000, v[q] / 1000}}')
  echo "$out" | awk -v t="$t" -v p=$((p1 - p0)) -v a=$((a1 - a0)) -v n="$n" -v k="$tck" -v unit="$(unit)" \
      -v lat="$lat" -v dur="${DURATION:-}" -v warm="${WARMUP:-1}" '
    /requests:/ {done = $2 + 0}
    /succeeded/ && (dur == "" ? $8 + 0 != n : $8 + 0 != $6 + 0) {bad = 1}
    /finished in/ {secs = $3 + 0}
    END {
      # with DURATION, n is what the measured seconds completed, and the CPU
      # (read around the whole run) is scaled to them: an estimate
      if (dur != "") { n = done; secs = dur; p = p * dur / (dur + warm); a = a * dur / (dur + warm) }
      printf "%-28s %8.0f %s/s  proxy %7.2f us/%s  app %7.2f us/%s  %s%s\n", t, n / secs, unit,
             p * 1e6 / k / n, unit, a * 1e6 / k / n, unit, lat, bad ? "  (NOT ALL SUCCEEDED)" : ""
    }'
  perf_show
}

trap stop_backend EXIT # a round that fails leaves no app behind
for round in $(seq "$ROUNDS"); do
  for t in "$@"; do one "$t"; done
done
