#!/usr/bin/python3
"""The listeners picket owns besides the data path (issue 20, item 4): the admin
listener, `picket control serve` and `picket inject serve`. All three are libevent evhttp
servers behind proxy/http_listen.c; each must

  - pause on accept failures instead of spinning: with RLIMIT_NOFILE lowered and more
    connections than descriptors, picket's CPU over a 3 s window stays under 30% of the
    wall time and its log grows by a few lines (one "accept_failed" per 200 ms pause),
    not megabytes (before: 3.0 CPU seconds in 3 s and 34-46 MB of log); once the
    connections go away the listener serves again;
  - cap open connections: at the cap it stops accepting ("listener_full"), new clients
    wait in the kernel's queue and are served once a connection closes;
  - cut off a client that trickles its request: a request not complete within the
    listener's deadline closes the connection ("request_timeout"), although every byte
    arrives well within evhttp's per-read timeout.

The admin listener keeps 4 descriptors in reserve, so probes still work while the data
path has used every descriptor of the process; past the reserve it pauses like the
others, and the reserve is back once its connections close.

    PICKET_BIN=build/picket /usr/bin/python3 tests/integration/test_listeners.py [-k PATTERN]
"""
import http.client
import os
import socket
import ssl
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import picket_test as pt  # noqa: E402

NOFILE = 64
FLOOD = 100          # plain TCP connections: more than NOFILE
WINDOW = 3.0         # seconds of measurement while out of descriptors
MAX_CPU_SHARE = 0.3  # of the wall time, over the window
MAX_LOG_BYTES = 64 * 1024  # log growth over the window (one line per pause is ~4 KB)
ADMIN_RESERVE = 4    # PX_ADMIN_RESERVE_FDS


def log_bytes(p):
    return os.path.getsize(p.err_path)


def count_in_log(p, needle, since=0):
    """Occurrences of the bytes `needle` in p's stderr from byte `since` (no JSON parsing:
    the spinning bug writes megabytes a second of libevent warnings)."""
    n = 0
    with open(p.err_path, "rb") as f:
        f.seek(since)
        while True:
            b = f.read(1 << 22)
            if not b:
                return n
            n += b.count(needle)


def event_needle(event, listener):
    # px_log writes ts, level, event, then the fields in call order: listener first
    return ('"event":"%s","listener":"%s"' % (event, listener)).encode()


def wait_for(fn, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(step)


def flood(port, n=FLOOD):
    """n plain TCP connections to port, kept open (the caller closes them)."""
    socks = []
    for _ in range(n):
        socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
    return socks


def close_all(socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass
    socks.clear()


def trickle_until_closed(sock, first, every, limit):
    """Sends `first`, then one byte every `every` seconds until the peer closes the
    connection. Returns the seconds it took, or None if still open after `limit`."""
    t0 = time.monotonic()
    sock.settimeout(every)
    try:
        sock.sendall(first)
    except OSError:
        return time.monotonic() - t0
    while time.monotonic() - t0 < limit:
        try:
            data = sock.recv(4096)
            if not data:
                return time.monotonic() - t0
        except socket.timeout:
            pass
        except (OSError, ssl.SSLError):
            return time.monotonic() - t0
        try:
            sock.sendall(b"x")
        except (OSError, ssl.SSLError):
            return time.monotonic() - t0
    return None


class Window:
    """CPU seconds and log bytes of a process over a stretch of wall time."""

    def __init__(self, p):
        self.p = p
        self.t0, self.c0, self.l0 = time.monotonic(), pt.cpu_seconds(p.pid), log_bytes(p)

    def close(self):
        self.wall = time.monotonic() - self.t0
        self.cpu = pt.cpu_seconds(self.p.pid) - self.c0
        self.log = log_bytes(self.p) - self.l0
        return self


class ListenerCase(pt.TestCase):

    def assert_quiet(self, w, what):
        """The window's CPU share and log growth are bounds load can only make easier."""
        pt.log("%s: %.2f CPU s in %.2f s (%.0f%%), log +%d bytes"
               % (what, w.cpu, w.wall, 100 * w.cpu / w.wall, w.log))
        self.assertLess(w.cpu / w.wall, MAX_CPU_SHARE,
                        "%s: %.2f CPU seconds in %.2f s: the listener spins" % (what, w.cpu, w.wall))
        self.assertLess(w.log, MAX_LOG_BYTES, "%s: log grew by %d bytes in %.1f s"
                        % (what, w.log, w.wall))

    def measure(self, p, seconds=WINDOW, during=None):
        w = Window(p)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if during is not None:
                during()
            time.sleep(0.1)
        self.assertTrue(p.alive(), "picket died during the window")
        return w.close()


class KeepAlive:
    """Admin connections that each send GET /healthz (keep-alive) every second, so the
    admin listener's request deadline never closes them. accepted() tells which have been
    answered at least once."""

    REQ = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

    def __init__(self):
        self.socks, self.answered = [], []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def add(self, port):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.setblocking(False)
        with self.lock:
            self.socks.append(s)
            self.answered.append(0)
            s.send(self.REQ)
        return len(self.socks) - 1

    def _run(self):
        while not self.stop.is_set():
            with self.lock:
                for i, s in enumerate(self.socks):
                    try:
                        while True:
                            b = s.recv(65536)
                            if not b:
                                break
                            self.answered[i] += b.count(b"HTTP/1.1 200")
                    except (BlockingIOError, OSError):
                        pass
                    try:
                        if self.answered[i]:
                            s.send(self.REQ)
                    except OSError:
                        pass
            self.stop.wait(1.0)

    def close(self):
        self.stop.set()
        self.t.join(5)
        with self.lock:
            close_all(self.socks)


class AdminListener(ListenerCase):
    """The daemon's admin listener, with the data path out of descriptors."""

    def start(self, nofile=NOFILE):
        up = self.upstream("h2c")
        path, cfg, port, admin = self.config(pt.upstream_url("h2c", up), workers=1,
                                             limits={"handshake_timeout": "60s"})
        p = self.picket(path, inbound_port=port, admin_port=admin, nofile=nofile)
        return p, port, admin

    def exhaust_data_path(self, p, port):
        socks = flood(port)
        self.addCleanup(close_all, socks)
        self.assertTrue(wait_for(lambda: count_in_log(p, event_needle("accept_failed", "inbound")),
                                 30), "the data path never ran out of descriptors:\n"
                        + p.stderr()[-2000:])
        return socks

    def probe(self, admin, path="/healthz", timeout=15.0):
        st, _, body = pt.http_get_plain(admin, path, timeout=timeout)
        return st, body

    def test_probes_while_data_path_exhausted(self):
        p, port, admin = self.start()
        socks = self.exhaust_data_path(p, port)
        # probes, each on a new connection, while every descriptor is taken: served with
        # a reserved descriptor, which comes back when the probe's connection closes
        results = []
        w = Window(p)
        for _ in range(8):
            results.append(self.probe(admin))
            time.sleep(0.3)
        w.close()
        self.assertEqual([st for st, _ in results], [200] * 8, results)
        self.assert_quiet(w, "admin probes with the data path out of descriptors")
        self.assertTrue(p.alive())
        close_all(socks)
        self.assertEqual(self.probe(admin)[0], 200)

    def test_admin_pauses_past_its_reserve(self):
        p, port, admin = self.start()
        socks = self.exhaust_data_path(p, port)
        hogs = KeepAlive()
        self.addCleanup(hogs.close)
        # Admin connections that stay open take the reserve, one by one; the next one
        # finds no descriptor: the admin listener pauses.
        pausing = event_needle("accept_failed", "admin")
        pending = None
        for _ in range(ADMIN_RESERVE + 6):
            i = hogs.add(admin)
            if not wait_for(lambda: hogs.answered[i] > 0, 5):
                pending = i
                break
        self.assertIsNotNone(pending, "every admin connection was served: descriptors "
                             "were not exhausted")
        self.assertTrue(wait_for(lambda: count_in_log(p, pausing + b',"error":"Too many open files",'
                                                      b'"msg":"pausing'), 30),
                        "no accept_failed for the admin listener:\n" + p.stderr()[-2000:])
        since = log_bytes(p)
        w = self.measure(p)
        self.assert_quiet(w, "admin listener out of descriptors")
        lines = count_in_log(p, pausing, since)
        self.assertLessEqual(lines, w.wall / 0.2 + 3, "more accept_failed lines than pauses")
        self.assertEqual(hogs.answered[pending], 0)
        # descriptors come back: the waiting connection is served
        close_all(socks)
        self.assertTrue(wait_for(lambda: hogs.answered[pending] > 0, 30),
                        "the waiting admin connection was not served once descriptors freed")
        hogs.close()
        # the reserve is refilled once its connections are gone: probes work under a
        # second exhaustion of the data path
        self.assertEqual(self.probe(admin)[0], 200)
        socks2 = self.exhaust_data_path(p, port)
        time.sleep(0.5)
        self.assertEqual(self.probe(admin)[0], 200, "reserve not refilled")
        close_all(socks2)

    def test_admin_trickled_request_cut_off(self):
        p, port, admin = self.start(nofile=None)
        s = socket.create_connection(("127.0.0.1", admin), timeout=10)
        self.addCleanup(s.close)
        took = trickle_until_closed(s, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ", 1.0, 60)
        self.assertIsNotNone(took, "a request trickled at 1 byte/s kept its connection 60 s")
        self.assertTrue(wait_for(lambda: count_in_log(p, event_needle("request_timeout",
                                                                      "admin")), 10))
        self.assertEqual(self.probe(admin)[0], 200)
        m = pt.scrape_metrics(admin)
        self.assertGreaterEqual(pt.metric(m, "picket_listener_request_timeouts_total", 0,
                                          listener="admin"), 1)

    def test_admin_connection_cap(self):
        p, port, admin = self.start(nofile=None)
        base = pt.open_fds(p.pid)
        idle = flood(admin, 70)  # PX_ADMIN_MAX_CONNS is 64
        self.addCleanup(close_all, idle)
        self.assertTrue(wait_for(lambda: count_in_log(p, event_needle("listener_full", "admin")),
                                 30), "no listener_full:\n" + p.stderr()[-2000:])
        fds = pt.open_fds(p.pid)
        self.assertLessEqual(fds - base, 64, "%d descriptors for 70 connections" % (fds - base))
        # a probe waits in the queue until the idle connections' deadline frees a slot
        self.assertEqual(self.probe(admin, timeout=60)[0], 200)
        self.assertTrue(count_in_log(p, event_needle("request_timeout", "admin")))


class ServeCase(ListenerCase):
    """`picket control serve` / `picket inject serve` started as pt.Picket."""

    SERVE_NAME = None

    def serve(self, args, nofile=None):
        port = pt.free_port()
        args = [a.replace("PORT", str(port)) for a in args]
        p = pt.Picket(self.tmp, None, inbound_port=port, pki=self.pki, name=self.SERVE_NAME,
                      args=args, nofile=nofile)
        self.addCleanup(self._stop, p)
        p.start()
        p.port = port
        return p

    def _stop(self, p):
        rc = p.stop()
        if self.failed() or pt.VERBOSE or p.hung:
            pt.log("%s pid %d exit %s; stderr tail:\n%s" % (self.SERVE_NAME, p.pid, rc,
                                                            p.stderr()[-3000:]))
        problems = p.stop_problems(expect_exit=None if p.killed and not p.hung else 0)
        if problems:
            self.fail("\n".join(problems))

    def get(self, port, path, timeout=30.0, client_cert=True):
        ctx = pt.tls_context(self.pki, "client", alpn=("http/1.1",))
        if not client_cert:
            ctx = ssl.create_default_context(cafile=self.pki.ca)
        c = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=timeout)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def tls_socket(self, port, client_cert=True):
        ctx = pt.tls_context(self.pki, "client", alpn=("http/1.1",))
        if not client_cert:
            ctx = ssl.create_default_context(cafile=self.pki.ca)
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        return ctx.wrap_socket(raw, server_hostname="localhost")

    # the three behaviours, for both servers

    def check_out_of_descriptors(self, p, path, client_cert=True):
        needle = event_needle("accept_failed", self.SERVE_NAME)
        socks = flood(p.port)
        self.addCleanup(close_all, socks)
        self.assertTrue(wait_for(lambda: count_in_log(p, needle), 30),
                        "no accept_failed with RLIMIT_NOFILE %d:\n%s" % (NOFILE,
                                                                        p.stderr()[-2000:]))
        since = log_bytes(p)
        w = self.measure(p)
        self.assert_quiet(w, "%s out of descriptors" % self.SERVE_NAME)
        lines = count_in_log(p, needle, since)
        self.assertLessEqual(lines, w.wall / 0.2 + 3, "more accept_failed lines than pauses")
        self.assertGreaterEqual(lines, 1, "the listener stopped retrying")
        # descriptors come back: served again
        close_all(socks)
        self.assertEqual(self.get(p.port, path, client_cert=client_cert)[0], 200)

    def check_connection_cap(self, p, path, cap, client_cert=True):
        base = pt.open_fds(p.pid)
        socks = flood(p.port, cap + 6)
        self.addCleanup(close_all, socks)
        self.assertTrue(wait_for(lambda: count_in_log(p, event_needle("listener_full",
                                                                      self.SERVE_NAME)), 30),
                        "no listener_full:\n" + p.stderr()[-2000:])
        late = {}

        def fetch():
            try:
                late["r"] = self.get(p.port, path, timeout=120, client_cert=client_cert)
            except Exception as e:  # noqa: BLE001 (reported below)
                late["r"] = e
        t = threading.Thread(target=fetch, daemon=True)
        t.start()
        w = self.measure(p, 2.0)
        self.assert_quiet(w, "%s at its connection cap" % self.SERVE_NAME)
        fds = pt.open_fds(p.pid)
        self.assertLessEqual(fds - base, cap, "%d descriptors for %d connections with a cap of "
                             "%d" % (fds - base, cap + 7, cap))
        self.assertNotIn("r", late, "a client past the cap was served while the cap was full")
        close_all(socks)
        t.join(120)
        self.assertEqual(late.get("r", (None,))[0], 200, late)

    def check_trickle(self, p, first, client_cert=True):
        s = self.tls_socket(p.port, client_cert)
        self.addCleanup(s.close)
        took = trickle_until_closed(s, first, 1.0, 60)
        self.assertIsNotNone(took, "a request trickled at 1 byte/s kept its connection 60 s")
        self.assertTrue(wait_for(lambda: count_in_log(p, event_needle("request_timeout",
                                                                      self.SERVE_NAME)), 10))
        pt.log("%s: trickled request cut off after %.1f s" % (self.SERVE_NAME, took))


class ControlListener(ServeCase):
    SERVE_NAME = "control"

    def control(self, extra=(), nofile=None):
        d = os.path.join(self.tmp, "bundles")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "b.json"), "w") as f:
            f.write('{"any": "bytes"}\n')
        return self.serve(["control", "serve", "--dir", d, "--bind", "127.0.0.1:PORT",
                           "--cert", self.pki.cert("server"), "--key", self.pki.key("server"),
                           "--bundle", self.pki.ca] + list(extra), nofile=nofile)

    def test_control_out_of_descriptors(self):
        # a cap above the descriptor limit, so accept() is what fails
        p = self.control(["--max-connections", "1000", "--header-timeout", "60s"], nofile=NOFILE)
        self.check_out_of_descriptors(p, "/b.json")

    def test_control_connection_cap(self):
        p = self.control(["--max-connections", "4", "--header-timeout", "60s"])
        self.check_connection_cap(p, "/b.json", 4)

    def test_control_trickled_request_cut_off(self):
        p = self.control(["--header-timeout", "3s"])
        self.check_trickle(p, b"GET /b.json HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        self.assertEqual(self.get(p.port, "/b.json")[0], 200)


class InjectListener(ServeCase):
    SERVE_NAME = "inject"

    def webhook(self, extra=(), nofile=None):
        return self.serve(["inject", "serve", "--bind", "127.0.0.1:PORT",
                           "--cert", self.pki.cert("server"), "--key", self.pki.key("server"),
                           "--image", "picket:test"] + list(extra), nofile=nofile)

    def test_inject_out_of_descriptors(self):
        p = self.webhook(["--max-connections", "1000", "--header-timeout", "60s"], nofile=NOFILE)
        self.check_out_of_descriptors(p, "/healthz", client_cert=False)

    def test_inject_connection_cap(self):
        p = self.webhook(["--max-connections", "4", "--header-timeout", "60s"])
        self.check_connection_cap(p, "/healthz", 4, client_cert=False)

    def test_inject_trickled_request_cut_off(self):
        # the headers arrive at once, the body one byte a second
        p = self.webhook(["--header-timeout", "3s"])
        self.check_trickle(p, b"POST /inject HTTP/1.1\r\nHost: localhost\r\n"
                           b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
                           client_cert=False)
        self.assertEqual(self.get(p.port, "/healthz", client_cert=False)[0], 200)


if __name__ == "__main__":
    pt.main(timeout=600)
