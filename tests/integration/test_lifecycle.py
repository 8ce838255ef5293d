#!/usr/bin/python3
"""picket's process lifecycle: SIGTERM drain, SIGHUP reload (good and broken
configs), config errors at start (exit 2 with file:line:col), admin endpoints.

Waits are on events, not on guessed delays: a request is "in flight" once the upstream
has its head (upstream.py --log-requests) and stays so until the test releases it
(GET /hold/NAME); a drain has begun once picket logs "draining" and its listener refuses
connections; a reload is done when picket logs "reloaded".

    /usr/bin/python3 tests/integration/test_lifecycle.py
"""
import json
import os
import resource
import re
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import picket_test as pt  # noqa: E402


class Lifecycle(pt.TestCase):

    def start(self, kind="h2c", **kw):
        up = self.upstream(kind, name="main")
        self.up_port = up
        path, cfg, port, admin = self.config(pt.upstream_url(kind, up), **kw)
        self.conf, self.cfg, self.port, self.admin = path, cfg, port, admin
        self.proc = self.picket(path, inbound_port=port, admin_port=admin)
        return port

    def bg_curl(self, path, http="2", timeout=20):
        """A request in the background; returns (Popen, out_path)."""
        out = os.path.join(self.tmp, "bg-%s-%d.out" % (http, int(time.monotonic() * 1000)))
        cmd = pt.curl_args(self.port, path, self.pki, http=http)
        cmd[1:1] = ["--max-time", str(timeout), "-o", out + ".body", "-w", "%{http_code}"]
        with open(out, "wb") as f:
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        self.addCleanup(lambda: p.poll() is None and (pt._kill_group(p), p.wait(5)))
        return p, out

    # -- SIGTERM --------------------------------------------------------

    def sigterm(self):
        """SIGTERM, then wait for picket's "draining" line. Returns the log offset."""
        since = len(self.proc.stderr())
        self.proc.signal(signal.SIGTERM)
        ev = pt.wait_log_event(self.proc, "draining", since=since, timeout=30)
        self.assertIsNotNone(ev, "no 'draining' line after SIGTERM:\n" + self.proc.stderr()[since:])
        return since

    def wait_refused(self, timeout=30.0):
        """Waits until a new TCP connection to the inbound port is refused (the workers
        closed their listeners)."""
        deadline = time.monotonic() + timeout
        while not pt.port_refuses(self.port):
            if time.monotonic() > deadline:
                self.fail("new connections still accepted %.0fs into the drain" % timeout)
            time.sleep(0.05)

    def test_sigterm_drains_in_flight(self):
        self.start(limits={"drain_timeout": "60s"})
        idle = pt.H2Client(self.port, self.pki)
        self.addCleanup(idle.close)
        self.assertEqual(idle.request("/")[0], 200)
        # requests that stay in flight (the upstream holds them) until the test says so
        inflight = []
        for h in pt.HTTP_VERSIONS:
            path = "/hold/drain-" + h.replace(".", "")
            inflight.append((path,) + self.bg_curl(path, http=h, timeout=120))
            self.wait_upstream_request(self.up_port, path)
        since = self.sigterm()
        # new connections are refused while the old requests finish
        self.wait_refused()
        ok, info = pt.tls_probe(self.port, self.pki)
        self.assertFalse(ok, "a new connection was served during the drain: %s" % info)
        # an idle h2 connection is told to go away
        self.assertTrue(idle.wait_goaway(30), "no GOAWAY / close on an idle h2 connection")
        # the held requests are still waiting, and picket with them
        for path, p, out in inflight:
            self.assertIsNone(p.poll(), "%s ended before it was released" % path)
        self.assertTrue(self.proc.alive(), "picket exited with requests in flight")
        for path, p, out in inflight:
            self.release_hold(path.rsplit("/", 1)[1])
        for path, p, out in inflight:
            rc = p.wait(60)
            with open(out) as f:
                status = f.read().strip()
            self.assertEqual((rc, status), (0, "200"), "in-flight %s during the drain" % path)
            with open(out + ".body", "rb") as f:
                self.assertEqual(f.read(), b"released\n")
        # with nothing left in flight picket exits 0, long before drain_timeout (60 s)
        rc = self.proc.wait(self.proc.drain_bound())
        self.assertIsNotNone(rc, "picket did not exit after its last request")
        self.assertEqual(rc, 0, "exit status after a clean drain")
        self.assertEqual(pt.log_events(self.proc, "drain_timeout", since=since), [],
                         "the drain ran into drain_timeout")

    def test_h2_stream_during_the_shutdown_notice(self):
        """SIGTERM: an HTTP/2 connection first gets the shutdown notice (a GOAWAY with
        the largest stream ID), then, a second later, the final GOAWAY. A client that
        opens a stream in that second is served, and the final GOAWAY still comes: the
        new stream does not cancel it (it did, as if it cancelled an idle timeout, and
        the connection stayed open without streams until drain_timeout). picket exits
        once the connection is done, long before drain_timeout."""
        sys.path.insert(0, os.path.join(pt.REPO, "tests", "hardening"))
        import attacks as A
        self.start(limits={"drain_timeout": "60s"})
        c = pt.H2Client(self.port, self.pki)
        self.addCleanup(c.close)
        self.assertEqual(c.request("/")[0], 200)
        since = len(self.proc.stderr())
        self.proc.signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while c.goaway is None and not c.closed and time.monotonic() < deadline:
            c._pump(0.05)
        self.assertIsNotNone(c.goaway, "no shutdown notice")
        self.assertEqual(c.goaway.last_stream_id, 2**31 - 1, "not the shutdown notice first")
        # at once, inside the notice's second; Python's h2 sends nothing after a
        # GOAWAY, so stream 3 and what follows are raw frames
        c.sock.sendall(A.frame(A.HEADERS, A.END_HEADERS | A.END_STREAM, 3, A.request_block("/")))
        buf, status, ended, last_ids = b"", None, False, []
        c.sock.settimeout(20)
        while True:
            while len(buf) < 9 or len(buf) < 9 + int.from_bytes(buf[:3], "big"):
                try:
                    d = c.sock.recv(65536)
                except (socket.timeout, OSError):
                    d = b""
                if not d:
                    break
                buf += d
            if len(buf) < 9 or len(buf) < 9 + int.from_bytes(buf[:3], "big"):
                break  # the connection ended
            n, ftype, flags = int.from_bytes(buf[:3], "big"), buf[3], buf[4]
            sid, payload, buf = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF, buf[9:9 + n], buf[9 + n:]
            if ftype == A.HEADERS and sid == 3:
                status = dict(c.conn.decoder.decode(payload, raw=True)).get(b":status")
                ended = ended or bool(flags & A.END_STREAM)
            elif ftype == A.DATA and sid == 3:
                ended = ended or bool(flags & A.END_STREAM)
            elif ftype == A.GOAWAY:
                last_ids.append(int.from_bytes(payload[:4], "big") & 0x7FFFFFFF)
        self.assertEqual((status, ended), (b"200", True), "the stream opened during the notice")
        # (nghttp2 sends the final GOAWAY again as it ends the session: each names 3)
        self.assertTrue(last_ids and set(last_ids) == {3},
                        "the final GOAWAY, naming the last stream: %r" % last_ids)
        rc = self.proc.wait(20)
        self.assertEqual(rc, 0)
        self.assertEqual(pt.log_events(self.proc, "drain_timeout", since=since), [])

    def test_sigterm_idle_exits_promptly(self):
        # drain_timeout 600 s: an idle picket that waited it out would still be running
        # when stop() gives up (60 s, a tenth of it) and the test would fail
        self.start(limits={"drain_timeout": "600s"})
        self.assertOK(self.curl(self.port, "/"))
        rc = self.proc.stop(timeout=60)
        self.assertFalse(self.proc.hung, "an idle picket waited out drain_timeout")
        self.assertEqual(rc, 0)
        self.assertEqual(pt.log_events(self.proc, "drain_timeout"), [])
        self.assertIsNotNone(pt.wait_log_event(self.proc, "stopped", timeout=0))

    def test_drain_notice_delay_keeps_connections_until_then(self):
        # With drain_notice_delay, open connections carry on untouched after SIGTERM
        # (new ones are refused); the GOAWAY comes when the delay ends, not before.
        self.start(limits={"drain_timeout": "60s", "drain_notice_delay": "10s"})
        c = pt.H2Client(self.port, self.pki)
        self.addCleanup(c.close)
        self.assertEqual(c.request("/")[0], 200)
        t0 = time.monotonic()
        self.sigterm()
        self.wait_refused()
        self.assertIsNone(c.goaway, "GOAWAY right after SIGTERM despite drain_notice_delay")
        self.assertEqual(c.request("/", timeout=30)[0], 200,
                         "request on an open connection during the delay")
        self.assertTrue(c.wait_goaway(60), "no GOAWAY after drain_notice_delay")
        # libevent's timers run on CLOCK_MONOTONIC_COARSE (one tick, up to
        # 4 ms, coarser than Python's clock): seen once at 9.9995 s
        self.assertGreaterEqual(time.monotonic() - t0, 9.95, "GOAWAY came before the delay ended")
        c.close()
        rc = self.proc.wait(self.proc.drain_bound())
        self.assertEqual(rc, 0, "exit status after a drain with a notice delay")

    def test_connection_accepted_before_sigterm_is_served(self):
        # A client that connected before the drain but had not started its TLS handshake
        # is served (then told to go), not dropped.
        import socket
        self.start(limits={"drain_timeout": "60s"})
        accepted0 = pt.metric(self.admin, "picket_connections_total", 0, listener="inbound")
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        self.addCleanup(raw.close)
        # accepted by picket (counted), handshake not started
        deadline = time.monotonic() + 30
        while pt.metric(self.admin, "picket_connections_total", 0, listener="inbound") <= accepted0:
            self.assertLess(time.monotonic(), deadline, "the connection was never accepted")
            time.sleep(0.02)
        self.sigterm()
        self.wait_refused()  # the workers are draining now
        ctx = pt.tls_context(self.pki, alpn=("http/1.1",))
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        self.assertTrue(data.startswith(b"HTTP/1.1 200"), data[:200])
        self.assertIn(b"connection: close", data.lower(), "a drained HTTP/1.1 answer closes")
        self.assertEqual(self.proc.wait(self.proc.drain_bound()), 0)

    def test_drain_notice_delay_must_be_shorter_than_drain_timeout(self):
        lines = self.good_lines()
        lines.append('  "limits": {"drain_timeout": "5s",\n             "drain_notice_delay": "5s"}')
        text = self.join(lines)
        n = len(text.splitlines()) - 1
        rc, err, conf = self.run_bad(text, "notice.json")
        self.assert_located(rc, err, conf, n, "drain_notice_delay must be shorter")

    def test_drain_timeout_bounds_shutdown(self):
        self.start(limits={"drain_timeout": "1s"})
        # a request in flight (the upstream has it) that is never released
        p, out = self.bg_curl("/hold/never", http="2", timeout=120)
        self.wait_upstream_request(self.up_port, "/hold/never")
        since = self.sigterm()
        # drain_timeout ends the drain: picket logs it, closes the connection, exits 0
        rc = self.proc.wait(self.proc.drain_bound())
        self.assertIsNotNone(rc, "picket still running %.0fs after SIGTERM with drain_timeout 1s"
                             % self.proc.drain_bound())
        self.assertEqual(rc, 0)
        self.assertEqual(len(pt.log_events(self.proc, "drain_timeout", since=since)), 1,
                         self.proc.stderr()[since:])
        self.assertIsNotNone(p.wait(60), "the client was not let go")
        with open(out) as f:
            self.assertNotEqual(f.read().strip(), "200", "request outliving drain_timeout cannot succeed")

    # -- SIGHUP ---------------------------------------------------------

    def wait_stderr(self, pattern, since, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.proc.stderr()[since:]
            if re.search(pattern, text):
                return text
            time.sleep(0.1)
        return None

    def test_sighup_broken_config_keeps_serving(self):
        self.start()
        self.assertOK(self.curl(self.port, "/"))
        with open(self.conf) as f:
            good = f.read()
        for broken in (good[: len(good) // 2],  # truncated JSON
                       good.replace('"node_id"', '"node_idd"', 1)):  # unknown key
            with open(self.conf, "w") as f:
                f.write(broken)
            mark = len(self.proc.stderr())
            self.proc.signal(signal.SIGHUP)
            text = self.wait_stderr(re.escape(os.path.basename(self.conf)) + r":\d+:\d+:", mark)
            self.assertIsNotNone(text, "reload refusal with file:line:col not logged; stderr since "
                                 "SIGHUP:\n%s" % self.proc.stderr()[mark:][-2000:])
            self.assertTrue(self.proc.alive(), "picket died on a broken reload")
            for http in pt.HTTP_VERSIONS:
                self.assertOK(self.curl(self.port, "/", http=http), "after broken reload")
            self.assertTrue(pt.tls_probe(self.port, self.pki)[0])
        with open(self.conf, "w") as f:
            f.write(good)
        self.sighup_reloaded()
        self.assertOK(self.curl(self.port, "/"))
        self.assertEqual(self.proc.stop(), 0)

    def sighup_reloaded(self):
        """SIGHUP, then wait for the "reloaded" line it causes (trigger sighup): from then
        on every worker has the new snapshot."""
        ok0 = pt.metric(self.admin, "picket_reloads_total", 0, result="ok")
        since = len(self.proc.stderr())
        self.proc.signal(signal.SIGHUP)
        ev = pt.wait_log_event(self.proc, "reloaded", since=since, timeout=30,
                               pred=lambda o: o.get("trigger") == "sighup")
        self.assertIsNotNone(ev, "no 'reloaded' line after SIGHUP:\n" + self.proc.stderr()[since:])
        self.assertEqual(pt.metric(self.admin, "picket_reloads_total", 0, result="ok") - ok0, 1)

    def test_sighup_reload_applies_new_routes(self):
        second = self.upstream("h1", name="second")
        self.start()
        self.assertEqual(self.curl(self.port, "/static/x").header("x-upstream-name"), "main")
        self.cfg["listeners"][0]["routes"] = [{"path_prefix": "/static/",
                                               "upstream": "http://127.0.0.1:%d" % second}]
        pt.write_config(self.conf, self.cfg)
        self.sighup_reloaded()
        # the new route from the first request on: a fresh connection gets the new snapshot
        for http in pt.HTTP_VERSIONS:
            self.assertEqual(self.curl(self.port, "/static/x", http=http).header("x-upstream-name"),
                             "second", "route added by SIGHUP reload not used")
            self.assertEqual(self.curl(self.port, "/headers", http=http).header("x-upstream-name"),
                             "main")

    # -- bad config at start ---------------------------------------------

    def run_bad(self, text, name="bad.json"):
        conf = os.path.join(self.tmp, name)
        with open(conf, "w") as f:
            f.write(text)
        p = pt.Picket(self.tmp, conf, pki=self.pki)
        p.start(wait=False)
        rc = p.wait(15)
        if rc is None:
            p.kill()
            self.fail("picket kept running with a bad config:\n%s" % text)
        p.check_sanitizers()
        return rc, p.stderr(), conf

    def good_lines(self, **override):
        """A valid config as text, one top-level key per line (line 1 is "{")."""
        up = pt.free_port()
        cfg = pt.make_config(self.pki, pt.free_port(), "h2c://127.0.0.1:%d" % up,
                             admin_port=pt.free_port(), workdir=self.tmp, workers=1)
        cfg.update(override)
        keys = ["node_id", "workers", "identity", "listeners", "admin", "log"] + \
            [k for k in cfg if k not in ("node_id", "workers", "identity", "listeners", "admin", "log")]
        lines = ["  %s: %s" % (json.dumps(k), json.dumps(cfg[k])) for k in keys]
        return lines

    def join(self, lines):
        return "{\n" + ",\n".join(lines) + "\n}\n"

    def assert_located(self, rc, err, conf, line, what):
        self.assertEqual(rc, 2, "exit status for %s; stderr:\n%s" % (what, err[-1500:]))
        base = re.escape(os.path.basename(conf))
        self.assertRegex(err, base + r":%d:\d+:" % line,
                         "%s: stderr must name %s:%d:col:" % (what, os.path.basename(conf), line))

    def test_bad_config_unknown_key_line_5(self):
        lines = self.good_lines()
        # line 1 "{", lines 2.. keys: put a typo'd key on line 5
        lines.insert(3, '  "listners": []')
        self.assertTrue(self.join(lines).splitlines()[4].startswith('  "listners"'))
        rc, err, conf = self.run_bad(self.join(lines))
        self.assert_located(rc, err, conf, 5, "unknown top-level key")
        m = re.search(re.escape(os.path.basename(conf)) + r":5:(\d+):", err)
        self.assertIn(int(m.group(1)), (2, 3, 4), "column of the key (1-based: 3 = the opening quote)")

    def test_bad_config_nested_and_values(self):
        # a typo inside "limits" on line 8
        lines = self.good_lines(limits={"upstream_timeout": "1s"})
        lines[-1] = '  "limits": {\n    "upstream_timout": "1s"\n  }'
        text = self.join(lines)
        n = [i + 1 for i, ln in enumerate(text.splitlines()) if "upstream_timout" in ln][0]
        rc, err, conf = self.run_bad(text, "nested.json")
        self.assert_located(rc, err, conf, n, "unknown key in limits")
        # a bad duration
        lines = self.good_lines()
        lines.append('  "limits": {"idle_timeout": "10 parsecs"}')
        text = self.join(lines)
        n = len(text.splitlines()) - 1
        rc, err, conf = self.run_bad(text, "duration.json")
        self.assert_located(rc, err, conf, n, "bad duration")
        # JSON syntax error (missing comma between lines 3 and 4)
        lines = self.good_lines()
        text = self.join(lines)
        tl = text.splitlines()
        tl[2] = tl[2].rstrip(",")
        rc, err, conf = self.run_bad("\n".join(tl) + "\n", "syntax.json")
        self.assertEqual(rc, 2, err)
        self.assertRegex(err, re.escape("syntax.json") + r":[34]:\d+:", "syntax error location")
        # admin listener must be loopback
        lines = self.good_lines(admin={"bind": "0.0.0.0:%d" % pt.free_port()})
        rc, err, conf = self.run_bad(self.join(lines), "admin.json")
        self.assertEqual(rc, 2, "admin bound to 0.0.0.0 must be refused: %s" % err[-500:])
        self.assertRegex(err, re.escape("admin.json") + r":\d+:\d+:")
        # missing file
        p = pt.Picket(self.tmp, os.path.join(self.tmp, "does-not-exist.json"), pki=self.pki)
        p.start(wait=False)
        rc = p.wait(15)
        self.assertIsNotNone(rc)
        self.assertNotEqual(rc, 0)
        self.assertIn("does-not-exist.json", p.stderr())
        p.check_sanitizers()

    def test_bad_identity_refused(self):
        """A config that parses but points at unusable identity material fails at start."""
        lines = self.good_lines(identity={"cert": os.path.join(self.tmp, "nope.pem"),
                                          "key": self.pki.key("server"),
                                          "trust_bundles": {pt.TRUST_DOMAIN: self.pki.ca}})
        rc, err, conf = self.run_bad(self.join(lines), "ident.json")
        self.assertNotEqual(rc, 0)
        self.assertIn("nope.pem", err)

    def test_worker_threads_that_cannot_start(self):
        """Worker threads that cannot be made (here: RLIMIT_STACK, glibc's default thread
        stack, far past what can be mapped) stop the start with exit status 1 and the
        message, every worker's memory given back (LeakSanitizer)."""
        cfg = pt.make_config(self.pki, pt.free_port(), "h2c://127.0.0.1:%d" % pt.free_port(),
                             workdir=self.tmp, workers=3)
        conf = pt.write_config(os.path.join(self.tmp, "threads.json"), cfg)
        p = pt.Picket(self.tmp, conf, pki=self.pki,
                      rlimits={resource.RLIMIT_STACK: 1 << 46})
        p.start(wait=False)
        rc = p.wait(30)
        if rc is None:
            p.kill()
            self.fail("picket started with no room for its worker threads")
        self.assertEqual(rc, 1, p.stderr()[-3000:])
        self.assertIn("cannot start worker threads", p.stderr())
        p.check_sanitizers()

    # -- admin ----------------------------------------------------------

    def test_admin_endpoints(self):
        pol = pt.write_policy(os.path.join(self.tmp, "policy.json"),
                              [{"id": "any", "action": "allow", "from": ["*"]}], revision=3)
        self.start(policy={"file": pol})
        for _ in range(3):
            self.assertOK(self.curl(self.port, "/"))
        st, hdrs, body = pt.http_get_plain(self.admin, "/healthz")
        self.assertEqual(st, 200)
        st, hdrs, body = pt.http_get_plain(self.admin, "/readyz")
        self.assertEqual(st, 200, body)
        st, hdrs, body = pt.http_get_plain(self.admin, "/metrics")
        self.assertEqual(st, 200)
        self.assertIn("text/plain", hdrs.get("content-type", ""))
        text = body.decode()
        samples = [ln for ln in text.splitlines() if ln.startswith("picket_")]
        self.assertTrue(samples, "no picket_ metrics:\n%s" % text[:2000])
        for ln in samples:
            self.assertRegex(ln, r"^picket_[a-zA-Z0-9_:]+(\{[^}]*\})? [-+0-9.eEInfaN]+( -?\d+)?$",
                             "not Prometheus text format: %r" % ln)
        st, hdrs, body = pt.http_get_plain(self.admin, "/policy")
        self.assertEqual(st, 200)
        pol = json.loads(body)
        self.assertEqual((pol["revision"], pol["mode"], pol["rules"]), (3, "enforce", 1), pol)
        self.assertIn("policy.json", pol["source"], pol)
        self.assertIsInstance(pol["age_ms"], int, pol)
        st, _, _ = pt.http_get_plain(self.admin, "/no-such-endpoint")
        self.assertEqual(st, 404)


if __name__ == "__main__":
    pt.main(timeout=240)
