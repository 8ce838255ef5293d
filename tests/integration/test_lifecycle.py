#!/usr/bin/python3
"""picket's process lifecycle: SIGTERM drain, SIGHUP reload (good and broken
configs), config errors at start (exit 2 with file:line:col), admin endpoints.

    /usr/bin/python3 tests/integration/test_lifecycle.py
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import picket_test as pt  # noqa: E402


class Lifecycle(pt.TestCase):

    def start(self, kind="h2c", **kw):
        up = self.upstream(kind, name="main")
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

    def test_sigterm_drains_in_flight(self):
        self.start(limits={"drain_timeout": "5s"})
        idle = pt.H2Client(self.port, self.pki)
        self.addCleanup(idle.close)
        self.assertEqual(idle.request("/")[0], 200)
        inflight = [self.bg_curl("/slow/2000", http=h) for h in pt.HTTP_VERSIONS]
        time.sleep(0.5)
        t0 = time.monotonic()
        self.proc.signal(signal.SIGTERM)
        # new connections are refused while the old requests finish
        refused_at = None
        while time.monotonic() - t0 < 1.5:
            ok, info = pt.tls_probe(self.port, self.pki, timeout=1.0)
            if not ok:
                refused_at = time.monotonic() - t0
                break
            time.sleep(0.05)
        self.assertIsNotNone(refused_at, "new connections still accepted 1.5 s after SIGTERM")
        # an idle h2 connection is told to go away
        self.assertTrue(idle.wait_goaway(2.0), "no GOAWAY / close on an idle h2 connection")
        for p, out in inflight:
            rc = p.wait(15)
            with open(out) as f:
                status = f.read().strip()
            self.assertEqual(rc, 0, "in-flight request failed during drain: %s" % status)
            self.assertEqual(status, "200", "in-flight request status during drain")
            with open(out + ".body", "rb") as f:
                self.assertEqual(f.read(), b"slow done\n")
        rc = self.proc.wait(6.5 - (time.monotonic() - t0))
        self.assertIsNotNone(rc, "picket did not exit within drain_timeout after SIGTERM")
        self.assertEqual(rc, 0, "exit status after a clean drain")
        pt.log("SIGTERM: refused new connections after %.2fs, exited after %.2fs"
               % (refused_at, time.monotonic() - t0))

    def test_sigterm_idle_exits_promptly(self):
        self.start(limits={"drain_timeout": "20s"})
        self.assertOK(self.curl(self.port, "/"))
        t0 = time.monotonic()
        rc = self.proc.stop(timeout=5)
        self.assertFalse(self.proc.killed, "picket needed SIGKILL with nothing in flight")
        self.assertEqual(rc, 0)
        self.assertLess(time.monotonic() - t0, 3.0, "an idle picket must not wait out drain_timeout")

    def test_drain_notice_delay_keeps_connections_until_then(self):
        # With drain_notice_delay, open connections carry on untouched after
        # SIGTERM (new ones are refused); the GOAWAY comes when the delay ends.
        self.start(limits={"drain_timeout": "8s", "drain_notice_delay": "2s"})
        c = pt.H2Client(self.port, self.pki)
        self.addCleanup(c.close)
        self.assertEqual(c.request("/")[0], 200)
        t0 = time.monotonic()
        self.proc.signal(signal.SIGTERM)
        time.sleep(0.3)
        ok, info = pt.tls_probe(self.port, self.pki, timeout=1.0)
        self.assertFalse(ok, "a new connection was accepted after SIGTERM")
        self.assertFalse(c.wait_goaway(1.0), "GOAWAY before drain_notice_delay ended")
        self.assertEqual(c.request("/")[0], 200, "request on an open connection during the delay")
        self.assertTrue(c.wait_goaway(3.0), "no GOAWAY after drain_notice_delay")
        self.assertGreater(time.monotonic() - t0, 1.8, "GOAWAY came before the delay ended")
        c.close()
        rc = self.proc.wait(5)
        self.assertEqual(rc, 0, "exit status after a drain with a notice delay")

    def test_connection_accepted_before_sigterm_is_served(self):
        # A client that connected before the drain but had not finished its TLS
        # handshake is served (then told to go), not dropped.
        import socket
        import ssl
        self.start(limits={"drain_timeout": "5s"})
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.addCleanup(raw.close)
        time.sleep(0.2)  # accepted by picket, handshake not started
        self.proc.signal(signal.SIGTERM)
        time.sleep(0.3)
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
        self.assertEqual(self.proc.wait(6), 0)

    def test_drain_notice_delay_must_be_shorter_than_drain_timeout(self):
        lines = self.good_lines()
        lines.append('  "limits": {"drain_timeout": "5s",\n             "drain_notice_delay": "5s"}')
        text = self.join(lines)
        n = len(text.splitlines()) - 1
        rc, err, conf = self.run_bad(text, "notice.json")
        self.assert_located(rc, err, conf, n, "drain_notice_delay must be shorter")

    def test_drain_timeout_bounds_shutdown(self):
        self.start(limits={"drain_timeout": "1s"})
        p, out = self.bg_curl("/slow/10000", http="2")
        time.sleep(0.5)
        t0 = time.monotonic()
        self.proc.signal(signal.SIGTERM)
        rc = self.proc.wait(4.0)
        self.assertIsNotNone(rc, "picket still running %.1fs after SIGTERM with drain_timeout 1s"
                             % (time.monotonic() - t0))
        p.wait(15)
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
        self.proc.signal(signal.SIGHUP)
        time.sleep(0.5)
        self.assertOK(self.curl(self.port, "/"))
        self.assertEqual(self.proc.stop(), 0)

    def test_sighup_reload_applies_new_routes(self):
        second = self.upstream("h1", name="second")
        self.start()
        self.assertEqual(self.curl(self.port, "/static/x").header("x-upstream-name"), "main")
        self.cfg["listeners"][0]["routes"] = [{"path_prefix": "/static/",
                                               "upstream": "http://127.0.0.1:%d" % second}]
        pt.write_config(self.conf, self.cfg)
        self.proc.signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        got = None
        while time.monotonic() < deadline:
            got = self.curl(self.port, "/static/x").header("x-upstream-name")
            if got == "second":
                break
            time.sleep(0.2)
        self.assertEqual(got, "second", "route added by SIGHUP reload not used")
        self.assertEqual(self.curl(self.port, "/headers").header("x-upstream-name"), "main")

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
        self.assertIn("revision", body.decode())
        self.assertIn("3", body.decode())
        st, _, _ = pt.http_get_plain(self.admin, "/no-such-endpoint")
        self.assertEqual(st, 404)


if __name__ == "__main__":
    pt.main(timeout=240)
