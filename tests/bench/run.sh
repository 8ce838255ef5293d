#!/bin/bash
# tests/bench/run.sh - builds picket in Release (build-release/) and runs the
# shared bench (../shared/bench/bench.sh) with picket as the candidate.
# Arguments are passed to bench.sh, e.g.:
#   bash tests/bench/run.sh --targets direct-tls,nghttpx
#   bash tests/bench/run.sh --workloads steady,large --repeat 3
# BENCH_DIR overrides the bench location (default: <repo>/../shared/bench).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
BENCH_DIR=${BENCH_DIR:-$ROOT/../shared/bench}
if [ ! -x "$BENCH_DIR/bench.sh" ] && [ ! -f "$BENCH_DIR/bench.sh" ]; then
  echo "bench/run.sh: bench not found at $BENCH_DIR (set BENCH_DIR)" >&2
  exit 2
fi
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)

bash deploy/install-deps.sh
cmake -S . -B build-release -DPICKET_SANITIZE=OFF -DCMAKE_BUILD_TYPE=Release -DPICKET_TESTS=OFF
cmake --build build-release -j"${PICKET_JOBS:-2}" --target picket
export PICKET_BIN=$ROOT/build-release/picket

# The same check bench.sh makes; ask it to apt-get its packages only if one is missing.
install=()
for c in nginx haproxy nghttpx h2load openssl curl cc python3 taskset; do
  command -v "$c" >/dev/null 2>&1 || install=(--install-deps)
done
[ -f /usr/include/openssl/ssl.h ] || install=(--install-deps)

exec bash "$BENCH_DIR/bench.sh" "${install[@]}" --candidate "$ROOT/tests/bench/candidate.sh" "$@"
