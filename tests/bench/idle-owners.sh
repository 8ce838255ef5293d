#!/bin/bash
# tests/bench/idle-owners.sh - what an idle mTLS h2 connection holds, by
# owner: picket under valgrind's massif, a detailed heap snapshot before and
# one while the bench's idle helper holds N connections (one GET each), and
# the difference per connection given to the first library on each block's
# allocation stack outside the allocator wrappers (OpenSSL, nghttp2,
# libevent, or picket's own file), then the largest sites.
#
#   bash tests/bench/idle-owners.sh BIN [N]     (N: connections, default 300)
#   bash tests/bench/idle-owners.sh nginx [N]   the same for the bench's nginx
#                                               peer (its config, one process)
#
# With nginx, its own blocks are "nginx" (Debian's binary has no symbols:
# the largest sites show its allocator's functions). BIN is a picket
# binary, best built with -g (symbols for picket's own
# sites): cmake -S . -B /tmp/build-g -DCMAKE_BUILD_TYPE=Release
# -DCMAKE_C_FLAGS=-g -DPICKET_TESTS=OFF. Blocks picket's per-thread allocator
# keeps after the burst of N connections (tmalloc.c, bounded per class) are
# counted at the site that made them. Reuses the last tests/bench/run.sh run
# directory (its PKI, the candidate's config and the app's config;
# BENCH_RUN_DIR picks another); its certificates live one hour.
set -euo pipefail
bin=${1:?usage: idle-owners.sh BIN [N]}
n=${2:-300}
d=${BENCH_RUN_DIR:-$(dirname "$(ls -t /tmp/h2bench.*/results.json | head -1)")}
BENCH_DIR=${BENCH_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../shared/bench" && pwd)}
for c in valgrind vgdb; do
  command -v $c >/dev/null || { echo "idle-owners.sh: needs $c (Debian: valgrind)" >&2; exit 2; }
done
out=$(mktemp -d)
pid= app=
cleanup() {
  [ -z "$pid" ] || kill -INT "$pid" 2>/dev/null || true
  [ -z "$pid" ] || wait "$pid" 2>/dev/null || true
  [ -z "$app" ] || kill -QUIT "$(cat "$d/backend.pid")" 2>/dev/null || true
  rm -rf "$out"
}
trap cleanup EXIT

massif=(valgrind --tool=massif --vgdb=yes --threshold=0.0 --depth=40 --massif-out-file="$out/massif.out")
nginx -c "$d/backend.conf" -p "$d" 2>/dev/null && app=1
if [ "$bin" = nginx ]; then
  # the bench's nginx peer in one process (no master: massif follows no
  # fork), its pid file in $out
  sed -e 's/^worker_processes 1;/worker_processes 1; master_process off; daemon off;/' \
      -e "s#^pid .*#pid $out/nginx.pid;#" "$d/nginx-proxy.conf" > "$out/nginx.conf"
  "${massif[@]}" nginx -c "$out/nginx.conf" -p "$d" 2>"$out/vg.err" &
else
  "${massif[@]}" "$bin" run -c "$d/candidate/picket.json" 2>"$out/vg.err" &
fi
pid=$!
for _ in $(seq 200); do (echo > /dev/tcp/127.0.0.1/24090) 2>/dev/null && break; sleep 0.3; done
coproc H { /usr/bin/python3 "$BENCH_DIR/lib/idle_conns.py" --port 24090 --ca "$d/pki/ca.crt" \
  --cert "$d/pki/client.crt" --key "$d/pki/client.key" -n "$n" --timeout 60 --deadline 300; }
read -r line <&"${H[0]}"                       # WARM
sleep 2; vgdb --pid="$pid" detailed_snapshot "$out/before" >/dev/null 2>&1
echo GO >&"${H[1]}"; read -r line <&"${H[0]}"  # READY ok=... failed=...
echo "idle-owners.sh: $line"
sleep 2; vgdb --pid="$pid" detailed_snapshot "$out/held" >/dev/null 2>&1
echo CLOSE >&"${H[1]}"; read -r line <&"${H[0]}" || true

/usr/bin/python3 - "$out/before" "$out/held" "$n" <<'PY'
import collections, re, sys
# allocator wrappers: a block belongs to whoever called them
WRAP = re.compile(r'(malloc|calloc|realloc|px_t\w+|px_h2_\w+|mem_\w+|own_\w+|CRYPTO_\w*alloc|'
                  r'CRYPTO_realloc|CRYPTO_clear_realloc|CRYPTO_memdup|CRYPTO_strn?dup|'
                  r'event_mm_\w+|block_alloc)$')
LIBS = (('libssl', 'OpenSSL'), ('libcrypto', 'OpenSSL'), ('libnghttp2', 'nghttp2'),
        ('libevent', 'libevent'), ('libc.so', 'libc'), ('ld-linux', 'ld.so'),
        ('/nginx', 'nginx'))

def owner(frame):
    m = re.search(r'\(in ([^)]+)\)', frame)
    if m:
        return next((o for k, o in LIBS if k in m.group(1)), m.group(1))
    m = re.search(r'\(([^:()]+\.c):\d+\)', frame)
    return 'picket (%s)' % m.group(1) if m else '?'

def parse(path):
    lines = open(path).read().split('\n')
    i = max(k for k, l in enumerate(lines) if l.startswith('heap_tree=detailed'))
    extra = int([l for l in lines[:i] if l.startswith('mem_heap_extra_B=')][-1].split('=')[1])
    by, sites, stack = collections.Counter(), collections.Counter(), []
    for l in lines[i + 1:]:
        m = re.match(r'^( *)n(\d+): (\d+) (.*)$', l)
        if not m:
            continue
        depth, kids, size, text = len(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4)
        stack = stack[:depth] + [text]
        if kids or depth == 0:
            continue
        who, site = '(below threshold)', ''
        for f in stack[1:]:
            fn = re.search(r': (\S+) \(', f)
            name = fn.group(1) if fn else '???'
            if WRAP.match(name) or 'vg_replace' in f:
                continue
            who = owner(f)
            site = name
            break
        who = 'picket' if who.startswith('picket') else who
        by[who] += size
        sites[(who, site)] += size
    return by, sites, extra

b0, s0, e0 = parse(sys.argv[1])
b1, s1, e1 = parse(sys.argv[2])
n = int(sys.argv[3])
total = 0
print('bytes per idle connection, by owner (%d connections):' % n)
for k in sorted(set(b0) | set(b1), key=lambda k: -(b1[k] - b0[k])):
    v = (b1[k] - b0[k]) / n
    total += v
    if abs(v) >= 1:
        print('  %-20s %8.0f' % (k, v))
print('  %-20s %8.0f' % ('in use', total))
print('  %-20s %8.0f' % ("glibc's overhead", (e1 - e0) / n))
print('largest sites:')
for k in sorted(set(s0) | set(s1), key=lambda k: -(s1[k] - s0[k]))[:20]:
    v = (s1[k] - s0[k]) / n
    if v >= 16:
        print('  %-10s %7.0f  %s' % (k[0], v, k[1]))
PY
