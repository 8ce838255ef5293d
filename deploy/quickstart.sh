#!/bin/bash
# quickstart.sh - the README's first command: install what is missing,
# build picket (Release, in build-release/), and run the local dev gateway
# (`picket dev`): a dev CA and short-lived certificates in .picket-dev/, a
# starter policy, a built-in demo upstream, and a printed curl line.
#
#   bash deploy/quickstart.sh                              # demo upstream
#   bash deploy/quickstart.sh --upstream http://127.0.0.1:3000   # your app
#
# Extra arguments go to `picket dev` (--upstream URL, --state DIR, --port N).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

bash deploy/install-deps.sh
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DPICKET_TESTS=OFF -DPICKET_WERROR=OFF >/dev/null
cmake --build build-release -j"$(nproc)" --target picket man >/dev/null
echo "quickstart: built $ROOT/build-release/picket" >&2
exec build-release/picket dev "$@"
