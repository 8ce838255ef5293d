#!/usr/bin/python3
"""picket soak: steady h2load traffic through a Release picket for SOAK_SECONDS while
the SVID rotates, the policy bundle changes, the config reloads (SIGHUP, with log
rotation) and, once mid-run, a second picket takes over the port (SO_REUSEPORT) and
the first one drains (SIGTERM). Run it through tests/bench/soak.sh.

Environment (defaults in brackets):
  SOAK_SECONDS [600]   length of the load phase
  SOAK_BURST [10]      seconds per h2load burst (bursts run back to back): a burst is a
                       fixed number of requests (h2load -n), SOAK_CLIENTS x SOAK_RPS x
                       SOAK_BURST, or SOAK_BURST_REQUESTS when SOAK_RPS is 0, so every
                       request h2load starts must finish: one started and not done is a
                       failure (with -D, h2load dropped the requests in flight at the
                       deadline and they went uncounted)
  SOAK_CLIENTS [16]    h2load -c
  SOAK_STREAMS [10]    h2load -m
  SOAK_RPS [100]       h2load --rps (per client; 0 = unlimited)
  SOAK_BURST_REQUESTS [20000] requests per burst when SOAK_RPS is 0
  SOAK_EVENT_EVERY [25] seconds between rotation/policy/SIGHUP rounds
  SOAK_WORKERS [1]     picket workers
  SOAK_HANDOVER [1]    0 = skip the mid-run drain handover
  SOAK_NOTICE_DELAY [SOAK_BURST + 5] limits.drain_notice_delay of the drained
                       picket, in seconds. h2load gives up every request it has not
                       sent yet, on every connection, as soon as it sees any GOAWAY (even
                       the RFC 9113 shutdown notice) and never reconnects within a run;
                       with a delay longer than a burst, its connections end with their
                       burst and the next burst lands on the new process. 0 = notice at
                       once (the default of picket itself): h2load then reports the
                       requests it declined to send after the notice as failed.
  SOAK_RUN_DIR         run directory [new /tmp/picket-soak.XXXXXX]
  PICKET_BIN, SOAK_SHIM (set by soak.sh)

Everything listens on 127.0.0.1 (free ports), every process is stopped by PID, and
every wait is bounded. Exit status: 0 SOAK PASS, 1 SOAK FAIL, 2 setup error.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

CLIENT_ID = "spiffe://example.org/ns/default/sa/client"
SERVER_ID = "spiffe://example.org/ns/default/sa/picket"
MIB = 1024 * 1024


def env_int(name, default):
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        sys.exit("soak: %s must be an integer" % name)


SECONDS = env_int("SOAK_SECONDS", 600)
BURST = env_int("SOAK_BURST", 10)
CLIENTS = env_int("SOAK_CLIENTS", 16)
STREAMS = env_int("SOAK_STREAMS", 10)
RPS = env_int("SOAK_RPS", 100)
BURST_REQUESTS = env_int("SOAK_BURST_REQUESTS", 20000)
EVENT_EVERY = env_int("SOAK_EVENT_EVERY", 25)
WORKERS = env_int("SOAK_WORKERS", 1)
HANDOVER = env_int("SOAK_HANDOVER", 1)
NOTICE_DELAY = env_int("SOAK_NOTICE_DELAY", BURST + 5)
PICKET = os.environ.get("PICKET_BIN") or sys.exit("soak: PICKET_BIN not set")
SHIM = os.environ.get("SOAK_SHIM") or sys.exit("soak: SOAK_SHIM not set")

T0 = None
LOCK = threading.Lock()
STOP = threading.Event()
PROBLEMS = []          # strings; any entry fails the soak
EVENTS = []            # (t, text)
PROCS = []             # every Popen we started, for cleanup by PID


def now():
    return time.monotonic() - T0 if T0 is not None else 0.0


def say(msg):
    line = "[soak %6.1fs] %s" % (now(), msg)
    print(line, flush=True)


def problem(msg):
    with LOCK:
        PROBLEMS.append("%.1fs: %s" % (now(), msg))
    say("PROBLEM: " + msg)


def event(msg):
    with LOCK:
        EVENTS.append((now(), msg))
    say(msg)


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def run(cmd, timeout=30, **kw):
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout, **kw)
    if r.returncode != 0:
        raise RuntimeError("%s: exit %d: %s" % (" ".join(cmd), r.returncode,
                                                 r.stderr.decode(errors="replace")[-500:]))
    return r.stdout.decode(errors="replace")


def start(argv, name, run_dir, env=None):
    out = open(os.path.join(run_dir, name + ".out"), "ab")
    p = subprocess.Popen(argv, cwd=run_dir, stdin=subprocess.DEVNULL, stdout=out,
                         stderr=subprocess.STDOUT, env=env, start_new_session=True)
    out.close()
    p.name = name
    with LOCK:
        PROCS.append(p)
    return p


def stop(p, timeout=5.0):
    """SIGTERM, then SIGKILL of that PID after `timeout` (and of its process group)."""
    if p.poll() is None:
        try:
            p.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
    return p.returncode


def http_get(port, path, timeout=3.0):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=timeout) as r:
        return r.status, r.read().decode(errors="replace")


def wait_until(pred, timeout, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            v = pred()
        except Exception:  # noqa: BLE001 - keep polling
            v = None
        if v:
            return v
        time.sleep(step)
    return None


def metric_sum(admin_port, name, label_sub=""):
    _, body = http_get(admin_port, "/metrics")
    total = 0.0
    for line in body.splitlines():
        if line.startswith(name) and (line[len(name):len(name) + 1] in ("{", " ")) and label_sub in line:
            total += float(line.rsplit(None, 1)[1])
    return total


# --------------------------------------------------------------------------
# PKI and the Kubernetes-style SVID directory

class Pki:
    def __init__(self, run_dir):
        self.dir = os.path.join(run_dir, "pki")
        self.ca_dir = os.path.join(self.dir, "ca")
        os.makedirs(self.ca_dir)
        run([PICKET, "cert", "init", "--trust-domain", "example.org", "--out", self.ca_dir])
        self.ca = os.path.join(self.ca_dir, "ca.pem")
        run([PICKET, "cert", "issue", "--ca", self.ca_dir, "--spiffe-id", CLIENT_ID,
             "--ttl", "2h", "--out", self.dir, "--name", "client"])
        self.client_cert = os.path.join(self.dir, "client.pem")
        self.client_key = os.path.join(self.dir, "client.key")
        # /var/run/secrets/svid as the kubelet writes it: ..data -> ..<ts>/, files -> ..data/
        self.svid = os.path.join(run_dir, "svid")
        os.makedirs(self.svid)
        self.gen = 0
        self.rotate()
        for f in ("svid.pem", "svid.key"):
            os.symlink(os.path.join("..data", f), os.path.join(self.svid, f))
        self.cert = os.path.join(self.svid, "svid.pem")
        self.key = os.path.join(self.svid, "svid.key")

    def rotate(self):
        """Writes a new SVID pair into a fresh timestamped dir and swaps ..data atomically.
        Returns the new serial (uppercase hex)."""
        self.gen += 1
        ts = "..%s_%04d" % (time.strftime("%Y_%m_%d_%H_%M_%S"), self.gen)
        tmp = os.path.join(self.svid, ts + ".tmp")
        os.makedirs(tmp)
        run([PICKET, "cert", "issue", "--ca", self.ca_dir, "--spiffe-id", SERVER_ID,
             "--ttl", "2h", "--out", tmp, "--name", "svid", "--dns", "localhost",
             "--ip", "127.0.0.1"])
        final = os.path.join(self.svid, ts)
        os.rename(tmp, final)
        link_tmp = os.path.join(self.svid, "..data_tmp")
        if os.path.lexists(link_tmp):
            os.unlink(link_tmp)
        os.symlink(ts, link_tmp)
        old = os.readlink(os.path.join(self.svid, "..data")) if os.path.lexists(
            os.path.join(self.svid, "..data")) else None
        os.rename(link_tmp, os.path.join(self.svid, "..data"))
        if old:
            shutil.rmtree(os.path.join(self.svid, old), ignore_errors=True)
        serial = run(["openssl", "x509", "-in", os.path.join(final, "svid.pem"), "-noout",
                      "-serial"]).strip().split("=", 1)[1]
        return serial.upper().lstrip("0") or "0"


def served_serial(port):
    try:
        r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
                            "-servername", "localhost"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=5)
    except subprocess.TimeoutExpired:
        return None
    m = re.search(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", r.stdout, re.S)
    if not m:
        return None
    p = subprocess.run(["openssl", "x509", "-noout", "-serial"], input=m.group(0),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=5)
    if p.returncode != 0:
        return None
    return p.stdout.decode().strip().split("=", 1)[1].upper().lstrip("0") or "0"


# --------------------------------------------------------------------------
# processes

def write_policy(path, revision):
    """A bundle that allows the load's identity; one rule's shape changes per revision."""
    pol = {"revision": revision, "mode": "enforce", "default": "deny", "rules": [
        {"id": "soak-load", "action": "allow", "from": [CLIENT_ID]},
        {"id": "soak-churn-%d" % revision, "action": "deny",
         "from": ["spiffe://example.org/ns/churn/*"], "paths": ["/r%d/**" % revision]},
    ]}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(pol, f)
        f.write("\n")
    os.replace(tmp, path)


def nginx_conf(run_dir, port):
    d = os.path.join(run_dir, "nginx")
    for sub in ("logs", "tmp"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    conf = os.path.join(d, "nginx.conf")
    body = "x" * 63
    with open(conf, "w") as f:
        f.write("""daemon off;
master_process off;
worker_processes 1;
pid %(d)s/nginx.pid;
error_log %(d)s/logs/error.log warn;
worker_rlimit_nofile 4096;
events { worker_connections 2048; }
http {
    access_log off;
    server_tokens off;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
    client_body_temp_path %(d)s/tmp/body;
    proxy_temp_path %(d)s/tmp/proxy;
    fastcgi_temp_path %(d)s/tmp/fastcgi;
    uwsgi_temp_path %(d)s/tmp/uwsgi;
    scgi_temp_path %(d)s/tmp/scgi;
    http2_max_requests 1000000000;
    server {
        listen 127.0.0.1:%(port)d http2 backlog=4096;
        location / { default_type text/plain; return 200 "%(body)s\\n"; }
    }
}
""" % {"d": d, "port": port, "body": body})
    return conf


def picket_config(run_dir, name, pki, port, admin, upstream_port, policy):
    cfg = {
        "node_id": "soak/" + name,
        "workers": WORKERS,
        "identity": {"cert": pki.cert, "key": pki.key,
                     "trust_bundles": {"example.org": pki.ca},
                     "reload_interval": "1s"},
        "policy": {"file": policy},
        "listeners": [{"name": "inbound", "kind": "inbound", "bind": "127.0.0.1:%d" % port,
                       "upstream": "h2c://127.0.0.1:%d" % upstream_port}],
        "admin": {"bind": "127.0.0.1:%d" % admin},
        "log": {"level": "info",
                "access": os.path.join(run_dir, "logs", name + "-access.jsonl"),
                "audit": os.path.join(run_dir, "logs", name + "-audit.jsonl")},
        "limits": {"drain_timeout": "%ds" % (NOTICE_DELAY + 10), "idle_timeout": "60s",
                   "drain_notice_delay": "%ds" % NOTICE_DELAY},
    }
    path = os.path.join(run_dir, name + ".json")
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)
    return path


class Picket:
    def __init__(self, run_dir, name, conf, admin):
        self.name, self.conf, self.admin = name, conf, admin
        self.p = start([PICKET, "run", "-c", conf], name, run_dir)
        self.pid = self.p.pid
        self.log_dir = os.path.join(run_dir, "logs")
        self.samples = []   # (t, rss_kib, fds)
        ok = wait_until(lambda: self.p.poll() is None and http_get(admin, "/readyz")[0] == 200, 15)
        if not ok:
            raise RuntimeError("picket %s not ready in 15 s (exit %s)" % (name, self.p.poll()))

    def alive(self):
        return self.p.poll() is None

    def rss_fds(self):
        try:
            rss = None
            with open("/proc/%d/status" % self.pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1])
                    if line.startswith("State:") and "Z" in line.split()[1]:
                        return None
            fds = len(os.listdir("/proc/%d/fd" % self.pid))
            return rss, fds
        except OSError:
            return None


ACCESS = {}  # status -> count, over every access log line picket wrote


def scan_access_log(path):
    """Adds the statuses of an access log (rotated or final) to ACCESS."""
    pat = re.compile(rb'"status":(\d+)')
    with open(path, "rb") as f:
        for line in f:
            m = pat.search(line)
            if m:
                k = int(m.group(1))
                with LOCK:
                    ACCESS[k] = ACCESS.get(k, 0) + 1


# --------------------------------------------------------------------------
# h2load bursts

H2_REQ = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                    r"(\d+) failed, (\d+) errored, (\d+) timeout")
H2_ST = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")


def h2load_burst(run_dir, port, idx, seconds):
    env = dict(os.environ, LD_PRELOAD=SHIM, H2LOAD_CLIENT_CERT=os.environ["_SOAK_CC"],
               H2LOAD_CLIENT_KEY=os.environ["_SOAK_CK"])
    # A request count, not a duration: with -D h2load gives up what is in flight at the
    # deadline, so "started but not done" could not tell a lost request from a dropped one.
    n = CLIENTS * RPS * seconds if RPS > 0 else BURST_REQUESTS
    argv = ["h2load", "-t", "1", "-c", str(CLIENTS), "-m", str(STREAMS), "-n", str(max(n, CLIENTS))]
    if RPS > 0:
        argv += ["--rps", str(RPS)]
    argv.append("https://127.0.0.1:%d/" % port)
    path = os.path.join(run_dir, "h2load", "burst-%04d.txt" % idx)
    t = now()
    with open(path, "wb") as out:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             env=env, start_new_session=True)
        with LOCK:
            PROCS.append(p)
        try:
            rc = p.wait(seconds * 3 + 60)
        except subprocess.TimeoutExpired:
            stop(p, 1)
            rc = "killed"
    text = open(path, errors="replace").read()
    r = {"idx": idx, "t": t, "rc": rc, "file": path}
    m, s = H2_REQ.search(text), H2_ST.search(text)
    if not m or not s:
        r["parse_error"] = True
        return r
    total, started, done, ok, failed, errored, tmo = map(int, m.groups())
    c2, c3, c4, c5 = map(int, s.groups())
    r.update(total=total, started=started, done=done, succeeded=ok, failed=failed,
             errored=errored, timeout=tmo, s2xx=c2, non2xx=c3 + c4 + c5,
             # asked for but never answered (not started, or started and not done): with a
             # request count every one must be answered, so each of these is a failure
             lost=max(0, total - done))
    if rc != 0:
        r["lost"] = max(r["lost"], 1)  # h2load itself failed or was killed
    return r


# --------------------------------------------------------------------------

def main():
    global T0
    if os.environ.get("SOAK_RUN_DIR"):
        run_dir = os.environ["SOAK_RUN_DIR"]
        os.makedirs(run_dir, exist_ok=True)
    else:
        run_dir = tempfile.mkdtemp(prefix="picket-soak.")
    for d in ("logs", "h2load"):
        os.makedirs(os.path.join(run_dir, d), exist_ok=True)
    print("soak: run dir %s; %d s, bursts of %d s, h2load -c %d -m %d --rps %s, events every %d s,"
          " drain_notice_delay %d s"
          % (run_dir, SECONDS, BURST, CLIENTS, STREAMS, RPS or "off", EVENT_EVERY, NOTICE_DELAY),
          flush=True)

    pki = Pki(run_dir)
    os.environ["_SOAK_CC"], os.environ["_SOAK_CK"] = pki.client_cert, pki.client_key
    port, admin_a, admin_b, up_port = free_ports(4)
    policy = os.path.join(run_dir, "policy.json")
    revision = 1
    write_policy(policy, revision)

    nginx = start(["nginx", "-p", os.path.join(run_dir, "nginx"), "-c",
                   nginx_conf(run_dir, up_port)], "nginx", run_dir)
    if not wait_until(lambda: socket.create_connection(("127.0.0.1", up_port), 0.5).close() or True, 10):
        raise RuntimeError("nginx did not listen on %d" % up_port)

    conf_a = picket_config(run_dir, "picket-a", pki, port, admin_a, up_port, policy)
    conf_b = picket_config(run_dir, "picket-b", pki, port, admin_b, up_port, policy)
    pickets = [Picket(run_dir, "picket-a", conf_a, admin_a)]
    cur = {"p": pickets[0]}
    say("picket-a pid %d on 127.0.0.1:%d (admin %d), nginx h2c pid %d on %d"
        % (pickets[0].pid, port, admin_a, nginx.pid, up_port))

    T0 = time.monotonic()
    end_at = SECONDS
    # mid-run and mid-burst, so the drained process has live connections
    handover_at = SECONDS * 0.5 + BURST * 0.4
    samples = []  # (t, {name: (rss, fds)})

    def sampler():
        while not STOP.is_set():
            snap = {}
            for pk in list(pickets):
                v = pk.rss_fds() if pk.alive() else None
                if v:
                    snap[pk.name] = v
            with LOCK:
                samples.append((now(), snap))
            STOP.wait(2.0)

    def events():
        nonlocal revision
        next_t, handed_over, rounds = EVENT_EVERY, False, 0
        while not STOP.is_set() and now() < end_at - 5:
            if HANDOVER and not handed_over and now() >= handover_at:
                handed_over = True
                old = cur["p"]
                event("handover: starting picket-b on the same port")
                try:
                    new = Picket(run_dir, "picket-b", conf_b, admin_b)
                except RuntimeError as e:
                    problem(str(e))
                    return
                pickets.append(new)
                cur["p"] = new
                time.sleep(1.0)
                try:
                    active = int(metric_sum(old.admin, "picket_connections_active"))
                except Exception:  # noqa: BLE001
                    active = -1
                event("handover: picket-b pid %d ready; SIGTERM picket-a pid %d (%d connections "
                      "active on it)" % (new.pid, old.pid, active))
                t1 = time.monotonic()
                old.p.send_signal(signal.SIGTERM)
                try:
                    rc = old.p.wait(NOTICE_DELAY + 15)
                except subprocess.TimeoutExpired:
                    rc = None
                if rc != 0:
                    problem("picket-a did not drain and exit 0 within %d s (status %s)"
                            % (NOTICE_DELAY + 15, rc))
                else:
                    event("handover: picket-a exited 0 after %.3f s of drain" % (time.monotonic() - t1))
                continue
            if now() < next_t:
                STOP.wait(min(0.5, max(0.05, next_t - now())))
                continue
            next_t = now() + EVENT_EVERY
            rounds += 1
            pk = cur["p"]
            # 1. SVID rotation (..data symlink swap); reload_interval is 1 s
            serial = pki.rotate()
            if wait_until(lambda: served_serial(port) == serial, 8, 0.5):
                event("round %d: SVID rotated, serving serial %s" % (rounds, serial))
            else:
                problem("round %d: new SVID serial %s not served within 8 s" % (rounds, serial))
            # 2. policy bundle with a higher revision
            revision += 1
            write_policy(policy, revision)
            if wait_until(lambda: json.loads(http_get(pk.admin, "/policy")[1]).get("revision") == revision, 8, 0.3):
                event("round %d: policy revision %d in force" % (rounds, revision))
            else:
                problem("round %d: policy revision %d not in force within 8 s" % (rounds, revision))
            # 3. log rotation + SIGHUP (config, certificates, policy, log files)
            before = metric_sum(pk.admin, "picket_reloads_total", 'result="ok"')
            for kind in ("access", "audit"):
                f = os.path.join(run_dir, "logs", "%s-%s.jsonl" % (pk.name, kind))
                if os.path.exists(f):
                    os.replace(f, f + ".1")
            pk.p.send_signal(signal.SIGHUP)
            if wait_until(lambda: metric_sum(pk.admin, "picket_reloads_total", 'result="ok"') > before, 8, 0.2):
                event("round %d: SIGHUP reload ok (logs rotated)" % rounds)
            else:
                problem("round %d: SIGHUP reload not counted ok within 8 s" % rounds)
            for kind in ("access", "audit"):
                f = os.path.join(run_dir, "logs", "%s-%s.jsonl" % (pk.name, kind))
                if not wait_until(lambda: os.path.exists(f), 5):
                    problem("round %d: %s log not reopened after SIGHUP" % (rounds, kind))
                if os.path.exists(f + ".1"):
                    if kind == "access":
                        scan_access_log(f + ".1")
                    os.unlink(f + ".1")
            refused = metric_sum(pk.admin, "picket_reloads_total", 'result="refused"')
            if refused:
                problem("round %d: %s counts %d refused reloads" % (rounds, pk.name, refused))

    th = [threading.Thread(target=sampler, daemon=True), threading.Thread(target=events, daemon=True)]
    for t in th:
        t.start()

    bursts = []
    idx = 0
    while now() < end_at - 1:
        secs = max(1, min(BURST, int(end_at - now())))
        r = h2load_burst(run_dir, port, idx, secs)
        idx += 1
        bursts.append(r)
        if r.get("parse_error"):
            problem("burst %d: h2load output not parsed (exit %s), see %s" % (r["idx"], r["rc"], r["file"]))
            time.sleep(1)
            continue
        bad = r["failed"] + r["errored"] + r["timeout"] + r["non2xx"] + r["lost"]
        say("burst %d: %d of %d done, %d 2xx, %d failed, %d errored, %d timeout, %d non-2xx, "
            "%d never answered%s"
            % (r["idx"], r["done"], r["total"], r["s2xx"], r["failed"], r["errored"], r["timeout"],
               r["non2xx"], r["lost"], "" if not bad else "  <-- FAILURES"))
        if bad:
            problem("burst %d had %d failed/errored/timeout/non-2xx/unanswered requests (%s)"
                    % (r["idx"], bad, r["file"]))
        if not cur["p"].alive():
            problem("%s died (status %s)" % (cur["p"].name, cur["p"].p.returncode))
            break
    STOP.set()
    for t in th:
        t.join(40)
    load_end = now()

    # ---------------------------------------------------------------- report
    ok_bursts = [b for b in bursts if not b.get("parse_error")]
    total = sum(b["done"] for b in ok_bursts)
    s2xx = sum(b["s2xx"] for b in ok_bursts)
    failed = sum(b["failed"] + b["errored"] + b["timeout"] for b in ok_bursts)
    unanswered = sum(b["lost"] for b in ok_bursts)
    for f in sorted(os.listdir(os.path.join(run_dir, "logs"))):
        if "-access.jsonl" in f:
            scan_access_log(os.path.join(run_dir, "logs", f))
    picket_total = sum(ACCESS.values())
    # 499 (the client went away) is a failure too: with request counts no client leaves
    picket_bad = sum(v for k, v in ACCESS.items() if k != 200)
    non2xx = sum(b["non2xx"] for b in ok_bursts)

    # per minute: the last sample with exactly one live picket at or before each mark
    def at(t_mark):
        best = None
        for t, snap in samples:
            if t <= t_mark + 1 and len(snap) == 1:
                best = (t, snap)
        return best

    def fd_window(t_mark):
        """max fd count over single-picket samples in the 10 s up to the mark."""
        vals = [list(snap.values())[0][1] for t, snap in samples
                if t_mark - 10 <= t <= t_mark + 1 and len(snap) == 1]
        return max(vals) if vals else None

    marks = list(range(60, int(load_end) + 1, 60))
    if not marks or load_end - marks[-1] > 5:
        marks.append(int(load_end) - 1)
    rows = []
    for m in marks:
        s = at(m)
        if s is None:
            continue
        name, (rss, fds) = list(s[1].items())[0]
        rows.append((m, s[0], name, rss, fd_window(m) or fds))

    print()
    print("=" * 72)
    print("SOAK SUMMARY (run dir %s)" % run_dir)
    print("load: %d s in %d h2load bursts of %d s (-c %d -m %d --rps %s)"
          % (round(load_end), len(bursts), BURST, CLIENTS, STREAMS, RPS or "off"))
    print("total requests:  %d done, %d 2xx (%.0f req/s)" % (total, s2xx, total / max(1, load_end)))
    print("failed requests: %d (h2load failed+errored+timeout), non-2xx: %d, never answered: %d"
          % (failed, non2xx, unanswered))
    print("picket access logs: %d requests, statuses %s; %d other than 200"
          % (picket_total, dict(sorted(ACCESS.items())), picket_bad))
    bad_bursts = [b for b in ok_bursts
                  if b["failed"] + b["errored"] + b["timeout"] + b["non2xx"] + b["lost"]]
    print("bursts with failures: %d of %d%s" % (len(bad_bursts), len(bursts),
          "".join("\n  burst %d at %.0fs: %d failed %d errored %d timeout %d non-2xx %d unanswered"
                  % (b["idx"], b["t"], b["failed"], b["errored"], b["timeout"], b["non2xx"], b["lost"])
                  for b in bad_bursts)))
    print("events: %d" % len(EVENTS))
    for t, e in EVENTS:
        print("  %6.1fs %s" % (t, e))
    print("minute  t(s)   process    RSS(KiB)  open fds")
    for m, t, name, rss, fds in rows:
        label = str(m // 60) if m % 60 == 0 else "end"
        print("%6s  %6.1f  %-9s %9d  %8d" % (label, t, name, rss, fds))

    verdict = True
    reasons = []
    if PROBLEMS:
        verdict = False
        reasons.append("%d problems" % len(PROBLEMS))
    if failed or non2xx or unanswered or picket_bad:
        verdict = False
        reasons.append("failed or unanswered requests")
    if total == 0:
        verdict = False
        reasons.append("no requests")
    if len(rows) >= 2:
        rss1, rssN = rows[0][3], rows[-1][3]
        lim = rss1 * 1.10 + 2 * 1024
        fd1, fdN = rows[0][4], rows[-1][4]
        fdlim = fd1 + max(8, fd1 // 10)
        print("RSS: minute 1 %d KiB, last %d KiB, limit %d KiB -> %s"
              % (rss1, rssN, lim, "flat" if rssN <= lim else "GROWING"))
        print("fds: minute 1 %d, last %d, limit %d -> %s"
              % (fd1, fdN, fdlim, "flat" if fdN <= fdlim else "GROWING"))
        if rssN > lim:
            verdict = False
            reasons.append("RSS grew")
        if fdN > fdlim:
            verdict = False
            reasons.append("fds grew")
    else:
        print("RSS/fds: fewer than 2 samples after warm-up (run at least 120 s for the check)")
        if SECONDS >= 120:
            verdict = False
            reasons.append("not enough samples")
    if PROBLEMS:
        print("problems:")
        for p in PROBLEMS:
            print("  " + p)
    print("SOAK PASS" if verdict else "SOAK FAIL (%s)" % ", ".join(reasons))
    return 0 if verdict else 1


def cleanup():
    STOP.set()
    with LOCK:
        procs = list(PROCS)
    for p in reversed(procs):
        if p.poll() is None:
            stop(p, 12 if getattr(p, "name", "").startswith("picket") else 3)


if __name__ == "__main__":
    def on_term(signum, frame):
        cleanup()
        sys.exit(3)
    signal.signal(signal.SIGTERM, on_term)
    # hard bound: the run plus generous slack, then everything is stopped
    guard = threading.Timer(SECONDS + 180, lambda: (print("soak: overran, stopping", flush=True),
                                                    cleanup(), os._exit(2)))
    guard.daemon = True
    guard.start()
    try:
        rc = main()
    except Exception as e:  # noqa: BLE001
        print("soak: setup error: %s" % e, flush=True)
        rc = 2
    finally:
        cleanup()
    sys.exit(rc)
