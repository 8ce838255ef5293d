#!/bin/bash
# candidate.sh - runs picket as the "candidate" of the shared mTLS HTTP/2 bench
# (../shared/bench, README "Candidate contract"). bench.sh starts it with
# BENCH_* in the environment; it writes a picket config and a policy into
# $BENCH_RUN_DIR and execs `picket run -c CONF` (so the started PID is picket).
#
#   PICKET_BIN             picket binary (default: <repo>/build-release/picket)
#   PICKET_BENCH_UPSTREAM  h2c (default) or h1: which app port picket forwards to
#   PICKET_BENCH_LOG       log level (default warn)
#   PICKET_BENCH_AUDIT     audit log (default $BENCH_RUN_DIR/audit.log: the
#                          figures are with every decision audited, as deployed;
#                          /dev/null to measure without the file write)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${PICKET_BIN:-$ROOT/build-release/picket}
if [ ! -x "$BIN" ]; then
  echo "candidate.sh: picket binary not found: $BIN (run tests/bench/run.sh, or set PICKET_BIN)" >&2
  exit 1
fi

for v in BENCH_LISTEN BENCH_UPSTREAM_H2C BENCH_UPSTREAM_H1 BENCH_TLS_CERT BENCH_TLS_KEY \
         BENCH_CLIENT_CA BENCH_TRUST_DOMAIN BENCH_ALLOWED_IDS BENCH_WORKERS BENCH_RUN_DIR; do
  if [ -z "${!v:-}" ]; then
    echo "candidate.sh: $v is not set (run me from bench.sh --candidate)" >&2
    exit 1
  fi
done

# JSON string literal (escapes backslash, quote and control characters).
json_str() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\r'/\\r}
  s=${s//$'\t'/\\t}
  printf '"%s"' "$s"
}

case ${PICKET_BENCH_UPSTREAM:-h2c} in
  h2c) upstream="h2c://$BENCH_UPSTREAM_H2C" ;;
  h1) upstream="http://$BENCH_UPSTREAM_H1" ;;
  *) echo "candidate.sh: PICKET_BENCH_UPSTREAM must be h2c or h1" >&2; exit 1 ;;
esac

mkdir -p "$BENCH_RUN_DIR"
dir=$(cd "$BENCH_RUN_DIR" && pwd)
conf=$dir/picket.json
policy=$dir/policy.json

ids=
for id in $BENCH_ALLOWED_IDS; do
  ids+="${ids:+, }$(json_str "$id")"
done

cat > "$policy" <<JSON
{
  "revision": 1,
  "mode": "enforce",
  "default": "deny",
  "rules": [
    {"id": "bench-allow", "action": "allow", "from": [$ids]}
  ]
}
JSON

# The bench holds 2000 idle h2 connections for at least 60 s and bursts 2000
# new connections: idle_timeout well above 60 s, max_connections above 4200.
cat > "$conf" <<JSON
{
  "node_id": "bench/candidate",
  "workers": ${BENCH_WORKERS},
  "identity": {
    "cert": $(json_str "$BENCH_TLS_CERT"),
    "key": $(json_str "$BENCH_TLS_KEY"),
    "trust_bundles": {$(json_str "$BENCH_TRUST_DOMAIN"): $(json_str "$BENCH_CLIENT_CA")}
  },
  "policy": {"file": $(json_str "$policy")},
  "listeners": [
    {"name": "inbound", "kind": "inbound", "bind": $(json_str "$BENCH_LISTEN"),
     "upstream": $(json_str "$upstream")}
  ],
  "log": {"level": $(json_str "${PICKET_BENCH_LOG:-warn}"),
          "audit": $(json_str "${PICKET_BENCH_AUDIT:-$dir/audit.log}")},
  "limits": {"max_connections": 10000, "idle_timeout": "300s", "header_timeout": "30s"}
}
JSON

echo "candidate.sh: $BIN run -c $conf (upstream $upstream, workers $BENCH_WORKERS)" >&2
exec "$BIN" run -c "$conf"
