#!/bin/bash
# install-deps.sh - install the Debian 12 packages needed to build and test
# picket. Idempotent: when every package is already installed it returns at
# once without touching apt. Run as root (or with sudo available).
#
#   deploy/install-deps.sh            # build, unit and integration tests (deploy/quickstart.sh)
#   deploy/install-deps.sh --test     # that, plus the container test's tools (tests/run.sh)
#   deploy/install-deps.sh --check [--test]   # only report; exit 1 if something is missing
set -euo pipefail

check=0
with_test=0
for arg in "$@"; do
  case "$arg" in
    --check) check=1 ;;
    --test) with_test=1 ;;
    *) echo "install-deps: unknown argument $arg (use --test, --check)" >&2; exit 2 ;;
  esac
done

PKGS=(
  # build
  build-essential cmake pkg-config
  # libraries (DESIGN.md "Dependencies")
  libssl-dev libevent-dev libnghttp2-dev libjsmn-dev libhttp-parser-dev check
  # the SPIFFE Workload API's protobuf messages: the library, and protoc-c at build time
  libprotobuf-c-dev protobuf-c-compiler
  # test clients and PKI
  openssl curl nghttp2-client
  # rendering the manual page picket.1 (ctest man_page)
  groff-base
  # integration test peers (run with /usr/bin/python3)
  python3 python3-h2 python3-grpcio python3-yaml python3-jsonpatch python3-cryptography systemd nginx
  # opaque TCP and WebSocket peers (issue 18): redis-server and redis-cli through
  # tcp_inbound/tcp_outbound (test_tcp.py starts its own redis-server on a free
  # loopback port, never the system service), python3-websockets client and server
  redis-server redis-tools python3-websockets
  # the machine's non-loopback address, to scrape metrics.bind from (test_scrape.py)
  iproute2
)
# Only for the test command (tests/run.sh passes --test), never for the
# quickstart: tests/container/ builds deploy/Dockerfile and runs the image.
# podman with runc (crun fails on cgroup v1 hosts), the pieces of podman's
# Recommends a pod needs (catatonit for the pause image, the CNI plugins and
# iptables for its network), debootstrap for the local Debian base images.
TEST_PKGS=(
  podman runc catatonit containernetworking-plugins iptables debootstrap
)
if [ "$with_test" = 1 ]; then
  PKGS+=("${TEST_PKGS[@]}")
fi

missing=()
for p in "${PKGS[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$status" = installed ] || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages installed" >&2
  exit 0
fi
echo "install-deps: missing: ${missing[*]}" >&2
if [ "$check" = 1 ]; then
  exit 1
fi

SUDO=
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=sudo
  else
    echo "install-deps: not root and no sudo; install as root: apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
# Packages like nginx and redis-server start a system service on install;
# tests start their own instances on loopback ports, so tell invoke-rc.d not
# to start anything (the usual policy-rc.d convention), unless the machine
# already has a policy. (A service started later, e.g. at boot, is harmless:
# it holds nginx's port 80 or redis's 6379, and tests use free ephemeral ports.)
policy_rc=
if [ ! -e /usr/sbin/policy-rc.d ]; then
  policy_rc=/usr/sbin/policy-rc.d
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy_rc" >/dev/null
  $SUDO chmod 755 "$policy_rc"
  trap '$SUDO rm -f "$policy_rc"' EXIT
fi
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: installed ${missing[*]}" >&2
