#!/bin/bash
# tests/bench/soak.sh - the soak benchmark: SOAK_SECONDS (default 600) of steady,
# rate-limited h2load traffic through a Release picket while, every ~25 s, the SVID
# rotates (Kubernetes-style ..data symlink swap, reload_interval 1s), the policy file
# gets a higher revision, and the config reloads (SIGHUP, with the access and audit
# logs rotated); once mid-run a second picket binds the same port (SO_REUSEPORT) and
# the first one drains (SIGTERM). Upstream: nginx h2c. Everything on 127.0.0.1.
#
#   SOAK_SECONDS=120 bash tests/bench/soak.sh        # short run
#   bash tests/bench/soak.sh                          # 10 minutes
#
# Knobs (environment): SOAK_SECONDS [600], SOAK_BURST [10] (h2load runs back to back,
# so a drained connection ends only its burst; failures are counted per burst),
# SOAK_CLIENTS [16], SOAK_STREAMS [10], SOAK_RPS [100 per client; 0 = unlimited],
# SOAK_NOTICE_DELAY [SOAK_BURST+5 s: the drained picket's limits.drain_notice_delay],
# SOAK_EVENT_EVERY [25], SOAK_WORKERS [1], SOAK_HANDOVER [1; 0 = no drain handover],
# SOAK_RUN_DIR [/tmp/picket-soak.XXXXXX],
# PICKET_BIN [build-release/picket, built if missing].
#
# Prints total and failed requests, RSS (VmRSS of the live picket) and open fds at
# each minute, and "SOAK PASS" (exit 0) or "SOAK FAIL" (exit 1). PASS needs: no failed,
# errored, timed-out, non-2xx or unanswered request in any burst (a burst is a request
# count, h2load -n, so every request it starts must be answered); every rotation, policy
# change and reload seen in force; the drained process exiting 0; no status other than
# 200 in picket's access logs (499, a client gone, included); RSS at the last minute within
# 10% + 2 MiB of minute 1, and the fd count within max(8, 10%) of minute 1.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH_DIR=${BENCH_DIR:-$ROOT/../shared/bench}

for c in h2load nginx openssl gcc; do
  if ! command -v "$c" >/dev/null 2>&1; then
    echo "soak.sh: $c not found (apt-get install nghttp2-client nginx openssl gcc libssl-dev)" >&2
    exit 2
  fi
done

if [ -z "${PICKET_BIN:-}" ]; then
  PICKET_BIN=$ROOT/build-release/picket
  if [ ! -x "$PICKET_BIN" ]; then
    cmake -S "$ROOT" -B "$ROOT/build-release" -DPICKET_SANITIZE=OFF -DCMAKE_BUILD_TYPE=Release -DPICKET_TESTS=OFF >/dev/null
    cmake --build "$ROOT/build-release" -j"${PICKET_JOBS:-2}" --target picket
  fi
fi
export PICKET_BIN

shim_dir=$(mktemp -d /tmp/picket-soak-shim.XXXXXX)
trap 'rm -rf "$shim_dir"' EXIT
gcc -shared -fPIC -O2 "$BENCH_DIR/lib/h2load_client_cert.c" -o "$shim_dir/shim.so" -ldl -lssl -lcrypto
export SOAK_SHIM=$shim_dir/shim.so

# h2load bursts plus picket's fds: give this tree room.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

/usr/bin/python3 "$ROOT/tests/bench/soak_run.py"
