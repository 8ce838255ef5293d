#!/bin/bash
# tests/bench/instructions.sh - instructions picket executes per small request,
# counted by valgrind's callgrind: a figure that, unlike req/s or CPU time,
# does not move with the load of a shared machine (repeat runs agree within
# about 2%). It serves N1 and then N2 small requests (h2load, -c4 -m10, the
# bench's GET / -> 64 B through its h2c backend) and prints
# (Ir(N2) - Ir(N1)) / (N2 - N1), so start-up and TLS handshakes cancel out.
#
#   bash tests/bench/instructions.sh BIN [BIN...]
#
# BIN "nghttpx" measures nghttpx the way the bench runs it (one worker, h2c to
# the same backend, client certificates verified), every process it starts
# counted: the peer's figure for the same requests.
#
# APP=1 counts the app's instructions instead (the bench's backend nginx, its
# master and worker, under callgrind; the proxy runs natively): what the
# requests a proxy forwards cost the app it shares a core with.
#
# It reuses the run directory of the last tests/bench/run.sh (the bench's PKI,
# the candidate's config and the backend's nginx config; BENCH_RUN_DIR picks
# another); the certificates there live one hour, so run the bench first.
set -euo pipefail
N1=${N1:-2000}
N2=${N2:-12000}
d=${BENCH_RUN_DIR:-$(dirname "$(ls -t /tmp/h2bench.*/results.json | head -1)")}
command -v valgrind >/dev/null || { echo "instructions.sh: needs valgrind" >&2; exit 2; }

count() { # BIN N -> total Ir of the picket (or nghttpx) processes
  local out vg=() app=(); out=$(mktemp -d)
  if [ -n "${APP:-}" ]; then
    app=(valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$out/cg.%p")
  else
    vg=(valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$out/cg.%p")
  fi
  "${app[@]}" nginx -c "$d/backend.conf" -p "$d" 2>/dev/null
  [ -z "${APP:-}" ] || for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/24081) 2>/dev/null && break; sleep 0.3; done
  if [ "$1" = nghttpx ]; then
    "${vg[@]}" nghttpx --conf=/dev/null -f127.0.0.1,24090 "-b127.0.0.1,24081;;proto=h2" -n1 \
      --verify-client --verify-client-cacert="$d/pki/ca.crt" --errorlog-file=/dev/null \
      --backend-http2-window-size=16777215 --backend-http2-connection-window-size=16777215 \
      --frontend-http2-connection-window-size=16777215 --no-ocsp \
      "$d/pki/server.key" "$d/pki/server.crt" 2>/dev/null &
  else
    "${vg[@]}" "$1" run \
      -c "$d/candidate/picket.json" 2>/dev/null &
  fi
  local pid=$!
  for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/24090) 2>/dev/null && break; sleep 0.3; done
  LD_PRELOAD=$d/h2load_client_cert.so H2LOAD_CLIENT_CERT=$d/pki/client.crt \
    H2LOAD_CLIENT_KEY=$d/pki/client.key h2load -c4 -m10 -n"$2" https://127.0.0.1:24090/ \
    >/dev/null 2>&1
  if [ "$1" = nghttpx ]; then kill -QUIT $pid; else kill -INT $pid; fi
  wait $pid 2>/dev/null || true
  local bp; bp=$(cat "$d/backend.pid")
  kill -QUIT "$bp"
  for _ in $(seq 100); do kill -0 "$bp" 2>/dev/null || break; sleep 0.1; done
  cat "$out"/cg.* | awk '/^summary:/ {s += $2} END {print s}'
  rm -rf "$out"
}

for bin in "$@"; do
  a=$(count "$bin" "$N1"); b=$(count "$bin" "$N2")
  echo "$bin: $(( (b - a) / (N2 - N1) )) instructions per request${APP:+ in the app}"
done
