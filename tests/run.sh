#!/bin/bash
# tests/run.sh - the one test command: installs the Debian dependencies if
# missing (with the container test's podman, runc and debootstrap), builds
# picket with ASan+UBSan (build-test/), and runs every unit, integration and
# container test under ctest. Exit status is non-zero if anything fails.
#
#   bash tests/run.sh                 # everything
#   bash tests/run.sh -R integration  # extra arguments go to ctest
#   bash tests/run.sh -LE container   # everything but the container image
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

JOBS=${PICKET_JOBS:-2}
BUILD=${PICKET_TEST_BUILD_DIR:-build-test}

bash deploy/install-deps.sh --test

cmake -S . -B "$BUILD" -DPICKET_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
cmake --build "$BUILD" -j"$JOBS"

# Integration tests start their own servers on free loopback ports; a proxy
# from the environment must never be used for them.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY

# ctest's own timeout per test is set in tests/CMakeLists.txt (300 s for
# integration tests); --timeout is only the default for tests without one.
ctest --test-dir "$BUILD" --output-on-failure --timeout 600 "$@"
