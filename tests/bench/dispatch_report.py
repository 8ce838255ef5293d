#!/usr/bin/python3
"""Table for bench_dispatch.sh: reads RUN/NAME.*.h2load.txt and RUN/NAME.*.log (one
h2load process per client connection, --log-file) and RUN/NAME.metrics.before/after
(picket /metrics) for each NAME given,
prints req/s, p50/p99, status counts, authorization checks per request, and ratios to
the first NAME (the local rule).

    dispatch_report.py RUN_DIR local warm cold
"""
import glob
import os
import re
import sys

NUM = r"([0-9.]+)(us|ms|s)"


def parse_h2load(text):
    r = {}
    m = re.search(r"finished in ([0-9.]+)(us|ms|s), ([0-9.]+) req/s", text)
    if m:
        r["req_s"] = float(m.group(3))
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", text)
    if m:
        r["done"], r["succeeded"], r["failed"] = int(m.group(3)), int(m.group(4)), int(m.group(5))
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if m:
        r["s2xx"], r["s4xx"], r["s5xx"] = int(m.group(1)), int(m.group(3)), int(m.group(4))
    return r


def percentiles(paths):
    vals = []
    for path in paths:
        with open(path) as f:
            for line in f:
                p = line.split("\t")
                if len(p) >= 3 and p[1].lstrip("-").isdigit() and int(p[1]) > 0:
                    vals.append(int(p[2]))
    if not vals:
        return {}
    vals.sort()
    n = len(vals)
    q = lambda x: vals[min(n - 1, int(x * n))] / 1000.0  # noqa: E731
    return {"p50": q(0.50), "p99": q(0.99), "samples": n}


def metrics(path):
    out = {}
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("picket_dispatch_"):
                    k, _, v = line.rpartition(" ")
                    try:
                        out[k] = float(v)
                    except ValueError:
                        pass
    except OSError:
        pass
    return out


def delta(before, after, prefix):
    return sum(v - before.get(k, 0.0) for k, v in after.items() if k.startswith(prefix))


def main(argv):
    run, names = argv[1], argv[2:]
    rows = []
    for n in names:
        r = {}
        outs = sorted(glob.glob(os.path.join(run, n + ".*.h2load.txt")))
        for path in outs:
            with open(path) as f:
                for k, v in parse_h2load(f.read()).items():
                    r[k] = r.get(k, 0) + v  # req/s and counts add up over the processes
        r["procs"] = len(outs)
        r.update(percentiles(sorted(glob.glob(os.path.join(run, n + ".*.log")))))
        b = metrics(os.path.join(run, n + ".metrics.before"))
        a = metrics(os.path.join(run, n + ".metrics.after"))
        r["checks"] = delta(b, a, "picket_dispatch_checks_total")
        r["hits"] = delta(b, a, 'picket_dispatch_cache_total{service="authz",result="hit"}')
        r["coalesced"] = delta(b, a, "picket_dispatch_coalesced_total")
        r["errors"] = delta(b, a, 'picket_dispatch_checks_total{service="authz",result="error"}') + \
            delta(b, a, 'picket_dispatch_checks_total{service="authz",result="timeout"}')
        r["name"] = n
        rows.append(r)
    base = rows[0]
    hdr = "%-6s %10s %8s %9s %9s %8s %8s %8s %8s %11s %10s %10s" % (
        "path", "req/s", "x local", "p50 ms", "p99 ms", "x p50", "2xx", "non-2xx", "checks",
        "checks/req", "cache hits", "coalesced")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        done = r.get("done", 0) or 1
        non2xx = r.get("s4xx", 0) + r.get("s5xx", 0) + r.get("failed", 0)
        print("%-6s %10.0f %8.2f %9.2f %9.2f %8.2f %8d %8d %8d %11.3f %10d %10d" % (
            r["name"], r.get("req_s", 0), r.get("req_s", 0) / max(base.get("req_s", 1), 1e-9),
            r.get("p50", 0), r.get("p99", 0), r.get("p50", 0) / max(base.get("p50", 1), 1e-9),
            r.get("s2xx", 0), non2xx, r["checks"], r["checks"] / done, r["hits"], r["coalesced"]))
    for r in rows:
        if r["errors"]:
            print("WARNING /%s: %d checks failed or timed out (answered 403)" % (r["name"], r["errors"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
