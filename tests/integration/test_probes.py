#!/usr/bin/python3
"""The app's own probes through picket (issue 17, item 1): probes.bind,
probes.targets, probes.timeout and PICKET_APP_PROBES.

`GET` or `HEAD /app-health/NAME` on the probes listener runs target NAME against a
real app and answers 200 or 503:

  - http targets against upstream.py (2xx and 3xx pass, 4xx and 5xx fail, a closed
    port fails, an app that holds the request answers 503 once the target's timeout
    is over) and against a raw TCP app written here (the status line after an
    interim 100 passes; a body that never ends is not waited for; garbage, a close
    without an answer and an app that accepts and never answers fail; the request
    carries the target's headers and Host; the app's status, headers and body are
    never relayed);
  - tcp targets (an open port passes, a closed one fails);
  - grpc targets against grpc_app.py's grpc.health.v1.Health (SERVING passes;
    NOT_SERVING, NOT_FOUND, a server that hangs and a port that is not gRPC fail);
  - unknown names and path tricks (dot segments, escapes, a query, a trailing
    slash, case, absolute form) are 404, other methods 405;
  - requests for a target whose probe is running join it: the app sees one probe;
  - PICKET_APP_PROBES adds targets; a bad one stops picket with exit status 2;
  - a reload (SIGHUP) changes the targets.

    PICKET_BIN=$PWD/build-test/picket /usr/bin/python3 tests/integration/test_probes.py [-k NAME]
"""
import http.client
import json
import os
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import picket_test as pt  # noqa: E402


class RawApp:
    """A TCP app on 127.0.0.1 with one behaviour for every connection:

    "capture"  reads the request head, keeps it, answers 200 with a body and a header
               that must not reach the prober;
    "interim"  answers "100 Continue" then "204";
    "endless"  answers a 200 status line and then a body, one byte at a time, until the
               client closes (noted in self.closed);
    "garbage"  answers a line that is not HTTP;
    "close"    closes without answering;
    "silent"   reads the request and never answers (until stop()).
    """

    def __init__(self, mode):
        self.mode = mode
        self.heads = []
        self.closed = threading.Event()
        self.stopping = threading.Event()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopping.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _read_head(self, c):
        buf = b""
        c.settimeout(10)
        while b"\r\n\r\n" not in buf:
            d = c.recv(4096)
            if not d:
                break
            buf += d
        return buf

    def _serve(self, c):
        try:
            if self.mode == "close":
                c.close()
                return
            head = self._read_head(c)
            self.heads.append(head)
            if self.mode == "capture":
                c.sendall(b"HTTP/1.1 200 OK\r\nX-App-Secret: s3cret\r\nContent-Length: 12\r\n\r\n"
                          b"app's secret")
            elif self.mode == "interim":
                c.sendall(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
            elif self.mode == "garbage":
                c.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
            elif self.mode == "endless":
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
                c.settimeout(0.05)
                while not self.stopping.is_set():
                    try:
                        c.sendall(b"x")
                        if c.recv(1) == b"":
                            break
                    except socket.timeout:
                        continue
                    except OSError:
                        break
                self.closed.set()
            elif self.mode == "silent":
                self.stopping.wait()
        except OSError:
            pass

    def stop(self):
        self.stopping.set()
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
        self.thread.join(5)


def raw_get(port, target, method="GET", timeout=30.0):
    """One HTTP/1.1 request with the exact request target `target`; (status, headers,
    body)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        c.putheader("Host", "10.1.2.3:15021")
        c.endheaders()
        r = c.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
    finally:
        c.close()


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class ProbesTest(pt.TestCase):
    def raw_app(self, mode):
        a = RawApp(mode)
        self.addCleanup(a.stop)
        return a

    def start(self, targets, timeout=None, env=None, expect_exit=None, wait=True):
        """picket with probes.bind on a free loopback port; returns (picket, probes_port)."""
        up = self.upstream("h1")
        probes = {"bind": "127.0.0.1:%d" % pt.free_port(), "targets": targets}
        if timeout:
            probes["timeout"] = timeout
        path, cfg, inbound, admin = self.config(pt.upstream_url("h1", up))
        cfg["probes"] = probes
        pt.write_config(path, cfg)
        self.conf_path, self.cfg = path, cfg
        p = self.picket(path, admin_port=admin, env_extra=env, expect_exit=expect_exit,
                        wait=wait)
        self.admin = admin
        port = int(probes["bind"].rsplit(":", 1)[1])
        if wait:
            self.assertTrue(pt.wait_port(port, 10, p.popen), "probes listener not open")
        return p, port

    def assertProbe(self, port, name, status, method="GET"):
        st, hdrs, body = raw_get(port, "/app-health/" + name, method)
        self.assertEqual(st, status, "%s %s: %d %r" % (method, name, st, body))
        if method == "GET":
            self.assertEqual(body, {200: b"ok\n", 503: b"probe failed\n",
                                    404: b"not found\n"}[status])
        return hdrs

    # ---- http ------------------------------------------------------------------------

    def test_http_targets(self):
        up = self.upstream("h1", name="the-app")
        base = "http://127.0.0.1:%d" % up
        p, port = self.start({
            "web/livez": {"http": base + "/status/200"},
            "web/nocontent": {"http": base + "/status/204"},
            "web/redirect": {"http": base + "/status/302"},
            "web/readyz": {"http": base + "/status/503"},
            "web/missing": {"http": base + "/status/404"},
            "web/query": {"http": base + "/status/200?probe=1&x=%2F"},
            "web/down": {"http": "http://127.0.0.1:%d/healthz" % closed_port()},
        })
        hdrs = self.assertProbe(port, "web/livez", 200)
        self.assertNotIn("x-upstream-name", hdrs)  # the app's fields are not relayed
        self.assertProbe(port, "web/livez", 200, method="HEAD")
        self.assertProbe(port, "web/nocontent", 200)
        self.assertProbe(port, "web/redirect", 200)
        self.assertProbe(port, "web/readyz", 503)
        self.assertProbe(port, "web/readyz", 503, method="HEAD")
        self.assertProbe(port, "web/missing", 503)
        self.assertProbe(port, "web/query", 200)
        self.assertProbe(port, "web/down", 503)
        self.wait_upstream_request(up, "/status/200?probe=1&x=%2F")
        s = pt.scrape_metrics(self.admin)
        self.assertEqual(pt.metric(s, "picket_app_probes_total", probe="web/livez",
                                   result="pass"), 2)
        self.assertEqual(pt.metric(s, "picket_app_probes_total", probe="web/readyz",
                                   result="fail"), 2)
        ev = pt.wait_log_event(p, "app_probe", pred=lambda o: o.get("probe") == "web/readyz")
        self.assertIsNotNone(ev)
        self.assertEqual((ev.get("result"), ev.get("detail")), ("fail", "status 503"))

    def test_http_request_and_answers(self):
        capture = self.raw_app("capture")
        interim = self.raw_app("interim")
        endless = self.raw_app("endless")
        garbage = self.raw_app("garbage")
        close = self.raw_app("close")
        p, port = self.start({
            "capture": {"http": "http://127.0.0.1:%d/ready?full=1" % capture.port,
                        "headers": {"X-Probe-Token": "abc def", "Host": "app.local"}},
            "interim": {"http": "http://127.0.0.1:%d/" % interim.port},
            "endless": {"http": "http://127.0.0.1:%d/" % endless.port},
            "garbage": {"http": "http://127.0.0.1:%d/" % garbage.port},
            "close": {"http": "http://127.0.0.1:%d/" % close.port},
        })
        hdrs = self.assertProbe(port, "capture", 200)
        self.assertNotIn("x-app-secret", hdrs)
        head = capture.heads[0].decode()
        lines = head.split("\r\n")
        self.assertEqual(lines[0], "GET /ready?full=1 HTTP/1.1")
        fields = [ln.lower() for ln in lines[1:] if ln]
        self.assertIn("x-probe-token: abc def", fields)
        self.assertIn("host: app.local", fields)
        self.assertEqual(sum(f.startswith("host:") for f in fields), 1, head)
        self.assertProbe(port, "interim", 200)
        self.assertProbe(port, "endless", 200)
        self.assertTrue(endless.closed.wait(20), "picket kept reading an endless body")
        self.assertProbe(port, "garbage", 503)
        self.assertProbe(port, "close", 503)
        ev = pt.wait_log_event(p, "app_probe", pred=lambda o: o.get("probe") == "garbage")
        self.assertEqual(ev.get("detail"), "not an HTTP/1.x answer")

    def test_hanging_app_times_out(self):
        up = self.upstream("h1")
        silent = self.raw_app("silent")
        p, port = self.start({
            "held": {"http": "http://127.0.0.1:%d/hold/app" % up},
            "silent": {"http": "http://127.0.0.1:%d/" % silent.port, "timeout": "500ms"},
        }, timeout="1s")
        for name in ("held", "silent"):
            t0 = time.monotonic()
            self.assertProbe(port, name, 503)
            # not a speed check: the answer comes from the timeout, not from the app or
            # the client giving up (30 s)
            self.assertLess(time.monotonic() - t0, 15)
            ev = pt.wait_log_event(p, "app_probe", pred=lambda o, n=name: o.get("probe") == n)
            self.assertEqual(ev.get("detail"), "timeout")
        self.release_hold("app")
        self.assertProbe(port, "held", 200)

    def test_concurrent_requests_share_one_probe(self):
        up = self.upstream("h1")
        p, port = self.start({"held": {"http": "http://127.0.0.1:%d/hold/one" % up,
                                       "timeout": "60s"}})
        results = []

        def ask():
            results.append(raw_get(port, "/app-health/held", timeout=90)[0])
        threads = [threading.Thread(target=ask) for _ in range(8)]
        for t in threads:
            t.start()
        self.wait_upstream_request(up, "/hold/one")
        deadline = time.monotonic() + 30
        while pt.metric(self.admin, "picket_app_probes_waiting") != 8:
            self.assertLess(time.monotonic(), deadline, "8 requests never waited at once")
            time.sleep(0.02)
        self.release_hold("one")
        for t in threads:
            t.join(60)
        self.assertEqual(results, [200] * 8)
        seen = [r for r in pt.upstream_requests(self._upstreams[up]) if r[1] == "/hold/one"]
        self.assertEqual(len(seen), 1, "the app saw %d probes for 8 requests" % len(seen))
        s = pt.scrape_metrics(self.admin)
        self.assertEqual(pt.metric(s, "picket_app_probes_total", probe="held", result="pass"), 1)
        self.assertEqual(pt.metric(s, "picket_app_probes_waiting"), 0)

    def test_client_gone_while_waiting(self):
        """A requester that hangs up while its probe runs is dropped, not answered on a
        freed connection; the run goes on for the others and the listener still works."""
        up = self.upstream("h1")
        p, port = self.start({"held": {"http": "http://127.0.0.1:%d/hold/gone" % up,
                                       "timeout": "60s"}})
        socks = []
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET /app-health/held HTTP/1.1\r\nHost: x\r\n\r\n")
            socks.append(s)
        self.wait_upstream_request(up, "/hold/gone")
        deadline = time.monotonic() + 30
        while pt.metric(self.admin, "picket_app_probes_waiting") != 3:
            self.assertLess(time.monotonic(), deadline, "3 requests never waited")
            time.sleep(0.02)
        for s in socks[:2]:
            s.close()
        while pt.metric(self.admin, "picket_app_probes_waiting") != 1:
            self.assertLess(time.monotonic(), deadline, "closed requests still waiting")
            time.sleep(0.02)
        self.release_hold("gone")
        socks[2].settimeout(30)
        self.assertTrue(socks[2].recv(4096).startswith(b"HTTP/1.1 200 "))
        socks[2].close()
        self.assertProbe(port, "held", 200)
        self.assertEqual(pt.metric(self.admin, "picket_app_probes_waiting"), 0)

    # ---- tcp and grpc ----------------------------------------------------------------

    def test_tcp_targets(self):
        up = self.upstream("h1")
        p, port = self.start({
            "db": {"tcp": "127.0.0.1:%d" % up},
            "db-down": {"tcp": "127.0.0.1:%d" % closed_port()},
            "db-name": {"tcp": "localhost:%d" % up},
        })
        self.assertProbe(port, "db", 200)
        self.assertProbe(port, "db-down", 503)
        self.assertProbe(port, "db-name", 200)

    def test_grpc_targets(self):
        g = self.grpc_app()
        up = self.upstream("h1")
        target = "127.0.0.1:%d" % g
        p, port = self.start({
            "grpc/server": {"grpc": target},
            "grpc/echo": {"grpc": target, "service": "picket.test.Echo"},
            "grpc/down": {"grpc": target, "service": "down"},
            "grpc/unknown": {"grpc": target, "service": "no.such.Service"},
            "grpc/hang": {"grpc": target, "service": "hang", "timeout": "500ms"},
            "grpc/not-grpc": {"grpc": "127.0.0.1:%d" % up},
            "grpc/closed": {"grpc": "127.0.0.1:%d" % closed_port()},
        })
        self.assertProbe(port, "grpc/server", 200)
        self.assertProbe(port, "grpc/echo", 200)
        self.assertProbe(port, "grpc/down", 503)
        self.assertProbe(port, "grpc/unknown", 503)
        self.assertProbe(port, "grpc/hang", 503)
        self.assertProbe(port, "grpc/not-grpc", 503)
        self.assertProbe(port, "grpc/closed", 503)
        self.assertProbe(port, "grpc/server", 200)  # the pooled connection still works
        for name, detail in (("grpc/down", "NOT_SERVING"), ("grpc/unknown", "grpc-status 5"),
                             ("grpc/hang", "timeout")):
            ev = pt.wait_log_event(p, "app_probe", pred=lambda o, n=name: o.get("probe") == n)
            self.assertEqual(ev.get("detail"), detail, ev)

    # ---- what else the listener answers ------------------------------------------------

    def test_unknown_names_and_path_tricks(self):
        up = self.upstream("h1")
        p, port = self.start({"web/livez": {"http": "http://127.0.0.1:%d/status/200" % up}})
        self.assertProbe(port, "web/livez", 200)
        for target in ("/app-health/nope", "/app-health/", "/app-health", "/app-health/web",
                       "/app-health/web/livez/", "/app-health/web/livez?x=1",
                       "/app-health/web/./livez", "/app-health/web/x/../livez",
                       "/app-health/./web/livez", "/app-health//web/livez",
                       "/app-health/web%2Flivez", "/app-health/web/live%7a",
                       "/app-health/web/livez%00", "/app-health/web/livez#x",
                       "/app-health/WEB/LIVEZ", "/APP-HEALTH/web/livez",
                       "/x/../app-health/web/livez", "//app-health/web/livez",
                       "http://127.0.0.1/app-health/web/livez", "*", "/", "/metrics",
                       "/policy", "/readyz", "/healthz", "/status/200"):
            st, _, body = raw_get(port, target)
            self.assertEqual(st, 404, "%s: %d %r" % (target, st, body))
        for m in ("POST", "PUT", "DELETE", "OPTIONS"):
            st, _, _ = raw_get(port, "/app-health/web/livez", method=m)
            self.assertEqual(st, 405, m)
        # none of them reached the app: only the one real probe did
        self.assertEqual([r for r in pt.upstream_requests(self._upstreams[up])],
                         [("GET", "/status/200")])

    # ---- PICKET_APP_PROBES and reload ----------------------------------------------------

    def test_env_targets(self):
        up = self.upstream("h1")
        env = {"PICKET_APP_PROBES": json.dumps({
            "app/livez": {"http": "http://127.0.0.1:%d/status/200" % up, "timeout": "2s"},
            "app/readyz": {"http": "http://127.0.0.1:%d/status/500" % up}})}
        p, port = self.start({"db": {"tcp": "127.0.0.1:%d" % up}}, env=env)
        self.assertProbe(port, "app/livez", 200)
        self.assertProbe(port, "app/readyz", 503)
        self.assertProbe(port, "db", 200)

    def test_env_targets_only_and_default_timeout(self):
        # no probes section at all: PICKET_APP_PROBES alone starts the listener, at
        # --probes-bind (the injector's flag)
        up = self.upstream("h1")
        port = pt.free_port()
        path, cfg, inbound, admin = self.config(pt.upstream_url("h1", up))
        env = {"PICKET_APP_PROBES": json.dumps({
            "app/livez": {"tcp": "127.0.0.1:%d" % up}})}
        p = pt.Picket(self.tmp, path, admin_port=admin, pki=self.pki, env_extra=env,
                      args=["run", "-c", path, "--probes-bind", "127.0.0.1:%d" % port])
        p.start()
        self.addCleanup(p.stop_and_check)
        self.assertTrue(pt.wait_port(port, 10, p.popen))
        self.assertProbe(port, "app/livez", 200)
        ev = pt.wait_log_event(p, "started")
        self.assertEqual(ev.get("probes"), "127.0.0.1:%d" % port)

    def test_bad_env_targets_refused(self):
        up = self.upstream("h1")
        cases = [
            ("not json", "PICKET_APP_PROBES:"),
            ('["a"]', "expected an object"),
            ('{"x": {"exec": "true"}}', "probes.targets.x"),
            ('{"../x": {"tcp": "127.0.0.1:1"}}', "bad name"),
            ('{"db": {"tcp": "127.0.0.1:1"}}', "defined twice"),
            ('{"x": {"http": "ftp://a/"}}', "probes.targets.x.http"),
            ('{"x": {"http": "http://a/", "headers": {"Content-Length": "1"}}}',
             "picket's to write"),
        ]
        for value, want in cases:
            path, cfg, inbound, admin = self.config(pt.upstream_url("h1", up))
            cfg["probes"] = {"bind": "127.0.0.1:%d" % pt.free_port(),
                             "targets": {"db": {"tcp": "127.0.0.1:%d" % up}}}
            pt.write_config(path, cfg)
            p = pt.Picket(self.tmp, path, admin_port=admin, pki=self.pki,
                          env_extra={"PICKET_APP_PROBES": value})
            p.start(wait=False)
            rc = p.wait(30)
            self.assertEqual(rc, 2, "%r: exit %s: %s" % (value, rc, p.stderr()[-500:]))
            self.assertIn(want, p.stderr(), value)
            self.assertEqual(p.stop_problems(2), [], value)

    def test_reload_changes_targets(self):
        up = self.upstream("h1")
        p, port = self.start({"a": {"http": "http://127.0.0.1:%d/status/200" % up}})
        self.assertProbe(port, "a", 200)
        self.assertProbe(port, "b", 404)
        self.cfg["probes"]["targets"] = {"b": {"http": "http://127.0.0.1:%d/status/503" % up}}
        pt.write_config(self.conf_path, self.cfg)
        since = len(p.stderr())
        p.signal(signal.SIGHUP)
        self.assertIsNotNone(pt.wait_log_event(p, "reloaded", since=since),
                             p.stderr()[since:])
        self.assertProbe(port, "a", 404)
        self.assertProbe(port, "b", 503)
        # moving the listener needs a restart: refused, the running one kept
        self.cfg["probes"]["bind"] = "127.0.0.1:%d" % pt.free_port()
        pt.write_config(self.conf_path, self.cfg)
        since = len(p.stderr())
        p.signal(signal.SIGHUP)
        self.assertIsNotNone(pt.wait_log_event(p, "reload_refused", since=since))
        self.assertProbe(port, "b", 503)


if __name__ == "__main__":
    pt.main()
