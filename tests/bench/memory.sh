#!/bin/bash
# tests/bench/memory.sh - the memory-budget benchmark (limits.memory_budget):
# the zero-window attack (8 connections x 100 streams of 1 MiB, HTTP/2 window 0,
# held 10 s) and the mix (the same plus 100 idle TCP connections, 20 HTTP/1.1
# slowloris clients and 4 normal clients making GETs throughout), against picket
# and, side by side, nghttpx, HAProxy and nginx configured as the shared bench
# configures them (tests/hardening/compare.sh does the setup).
#
#   bash tests/bench/memory.sh                    # picket, nghttpx, haproxy, nginx
#   COMPARE_SERVERS=picket PICKET_BIN=/path/to/old/picket bash tests/bench/memory.sh
#
# Columns: RSS growth = peak VmRSS during the attack minus VmRSS before (the
# server and its children); probe = a fresh mTLS h2 GET every 100 ms from a
# separate process (successes, p99 including the handshake); the mix's detail
# also gives the normal clients' success and p99. A benchmark, not a test: it
# prints figures and asserts nothing.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
exec bash "$ROOT/tests/hardening/compare.sh" --only "${MEMORY_ATTACKS:-h2_zero_window_800,memory_mix,h2_hpack_bomb_64k}" "$@"
