#!/usr/bin/python3
"""Self-test of the integration harness itself, without picket: the PKI, the test
upstream (HTTP/1.1 and h2c), the gRPC app, and the harness's own refusals (an unknown
PICKET_TEST_HTTP value, a "picket" that ignores SIGTERM or exits non-zero, a missing
tool). When this fails, the other integration tests' failures say nothing about picket.

    /usr/bin/python3 tests/integration/test_harness.py
"""
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import picket_test as pt  # noqa: E402
import upstream  # noqa: E402


def plain_curl(url, *args, timeout=30):
    r = subprocess.run(["curl", "-sS", "--noproxy", "*", "--max-time", str(timeout)] + list(args) + [url],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout + 5)
    return r.returncode, r.stdout, r.stderr.decode(errors="replace")


class Harness(pt.TestCase):

    def test_pki(self):
        pki = self.pki
        r = subprocess.run(["openssl", "verify", "-CAfile", pki.ca, pki.cert("server"), pki.cert("client"),
                            pki.cert("other")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
        self.assertEqual(r.returncode, 0, r.stdout)
        r = subprocess.run(["openssl", "verify", "-CAfile", pki.ca, pki.cert("evil")],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
        self.assertNotEqual(r.returncode, 0, "evil must not chain to the example.org CA")
        for name, uri in (("server", pt.SERVER_ID), ("client", pt.CLIENT_ID), ("other", pt.OTHER_ID),
                          ("evil", pt.CLIENT_ID)):
            txt = subprocess.run(["openssl", "x509", "-in", pki.cert(name), "-noout", "-text"],
                                 stdout=subprocess.PIPE, timeout=10).stdout.decode()
            self.assertIn("URI:" + uri, txt)
            self.assertIn("CA:FALSE", txt)
            self.assertIn("Digital Signature", txt)
            self.assertNotIn("Certificate Sign", txt)
            self.assertIn("TLS Web Server Authentication, TLS Web Client Authentication", txt)
            self.assertIn("prime256v1", txt)
        txt = subprocess.run(["openssl", "x509", "-in", pki.cert("server"), "-noout", "-ext", "subjectAltName"],
                             stdout=subprocess.PIPE, timeout=10).stdout.decode()
        self.assertIn("DNS:localhost", txt)
        self.assertIn("IP Address:127.0.0.1", txt)
        der = subprocess.run(["openssl", "x509", "-in", pki.cert("client"), "-outform", "DER"],
                             stdout=subprocess.PIPE, timeout=10).stdout
        self.assertEqual(hashlib.sha256(der).hexdigest(), pki.der_sha256("client"))

    def _upstream_checks(self, kind):
        port = self.upstream(kind, name="u-" + kind)
        base = "http://127.0.0.1:%d" % port
        proto = ["--http1.1"] if kind == "h1" else ["--http2-prior-knowledge"]
        rc, out, err = plain_curl(base + "/", *proto)
        self.assertEqual((rc, out), (0, b"hello from upstream\n"), err)
        rc, out, err = plain_curl(base + "/headers", *proto, "-H", "X-A: 1", "-H", "X-A: 2",
                                  "-H", "x-forwarded-client-cert: one")
        self.assertEqual(rc, 0, err)
        j = json.loads(out)
        self.assertEqual(j["headers"]["x-a"], ["1", "2"])
        self.assertEqual(j["headers"]["x-forwarded-client-cert"], "one")
        self.assertEqual(j["upstream"], "u-" + kind)
        self.assertEqual(j["path"], "/headers")
        n = 5 * 1024 * 1024 + 3
        rc, out, err = plain_curl(base + "/bytes/%d" % n, *proto)
        self.assertEqual(rc, 0, err)
        self.assertEqual(hashlib.sha256(out).hexdigest(), upstream.pattern_sha256(n))
        data = os.urandom(3 * 1024 * 1024)
        path = os.path.join(self.tmp, "up.bin")
        with open(path, "wb") as f:
            f.write(data)
        for extra in ([], ["-H", "Transfer-Encoding: chunked"]):
            rc, out, err = plain_curl(base + "/upload", *proto, "-T", path, *extra)
            self.assertEqual(rc, 0, err)
            self.assertEqual(json.loads(out), {"len": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        rc, out, err = plain_curl(base + "/status/418", *proto, "-o", "/dev/null", "-w", "%{http_code}")
        self.assertEqual(out, b"418")
        t0 = time.monotonic()
        rc, out, err = plain_curl(base + "/slow/300", *proto)
        self.assertGreaterEqual(time.monotonic() - t0, 0.29)
        self.assertEqual(out, b"slow done\n")
        # /hold/NAME: noted as it arrives, answered only once the test releases it
        cmd = ["curl", "-sS", "--noproxy", "*", "--max-time", "60"] + proto + [base + "/hold/h-" + kind]
        held = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        self.addCleanup(lambda: held.poll() is None and (held.kill(), held.wait()))
        self.wait_upstream_request(port, "/hold/h-" + kind)
        self.assertIsNone(held.poll(), "answered before it was released")
        self.release_hold("h-" + kind)
        out, _ = held.communicate(timeout=60)
        self.assertEqual((held.returncode, out), (0, b"released\n"))
        self.assertIn(("GET", "/slow/300"), pt.upstream_requests(self._upstreams[port]))
        if kind == "h2c":
            r = subprocess.run(["nghttp", "-v", base + "/trailers"], stdout=subprocess.PIPE, timeout=10)
            self.assertIn(b"x-checksum: abc", r.stdout)
            # several streams, one of them slow, on one connection
            r = subprocess.run(["nghttp", "-n", base + "/slow/1000", base + "/"], stdout=subprocess.PIPE,
                               timeout=10)
            self.assertEqual(r.returncode, 0)

    def test_upstream_h1(self):
        self._upstream_checks("h1")

    def test_upstream_h2c(self):
        self._upstream_checks("h2c")

    def test_grpc_app(self):
        r = subprocess.run([pt.PYTHON, os.path.join(pt.HERE, "grpc_app.py"), "--selftest"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout.decode(errors="replace"))
        port = self.grpc_app()
        import grpc_app
        ch = grpc_app.insecure_channel(port)
        self.addCleanup(ch.close)
        self.assertEqual(grpc_app.unary(ch, b"x"), b"x")

    def test_ws_app_and_clients(self):
        """ws_app.py's servers (its --selftest), and test_websocket.py's own clients
        against them without picket: the h2 extended-CONNECT client (over h2c here) and
        the python3-websockets client, so a failure there is picket's, not the test's."""
        r = subprocess.run([pt.PYTHON, os.path.join(pt.HERE, "ws_app.py"), "--selftest"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout.decode(errors="replace"))
        import asyncio
        import test_websocket as tw
        from ws_app import OP_BIN, OP_CLOSE, OP_TEXT, close_payload
        for advertise in (True, False):
            app = tw.start_ws_app(self.tmp, "h2c", *([] if advertise else ["--no-connect-protocol"]))
            self.addCleanup(app.stop)
            c = tw.H2WS(app.port, None, tls=False)
            self.addCleanup(c.close)
            self.assertEqual(c.connect_protocol(), 1 if advertise else 0)
            a, b = c.open("/a"), c.open("/b")
            self.assertEqual((c.response(a), c.response(b)), (200, 200))
            big = os.urandom(300 * 1024)  # past the initial windows: flow control works
            c.send_ws(a, OP_TEXT, b"x")
            c.send_ws(b, OP_BIN, big)
            self.assertEqual(c.frames(b, 1), [(OP_BIN, big)])
            self.assertEqual(c.frames(a, 1), [(OP_TEXT, b"x")])
            self.assertEqual(c.get("/plain")[0], 200)
            c.send_ws(a, OP_CLOSE, close_payload(1000, "k"))
            self.assertEqual(c.frames(a, 2)[1], (OP_CLOSE, close_payload(1000, "k")))
            self.assertIsNone(c.wait_end(a))
        h1 = tw.start_ws_app(self.tmp, "h1")
        self.addCleanup(h1.stop)

        async def go():
            async with tw.ws_connect(h1.port, "/e", tls=False, host="orders") as ws:
                await ws.send("hi")
                self.assertEqual(await ws.recv(), "hi")
        tw.run(go())
        self.assertEqual(tw.wait_app_record(h1, "closed", "/e")["code"], 1000)

    def test_free_port_and_processes(self):
        p = pt.free_port()
        self.assertNotEqual(p, pt.free_port())
        port = self.upstream("h1")
        self.assertTrue(pt.wait_port(port, 2))
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
        s.close()


class FakePicket(pt.TestCase):
    """The harness's stop checks against stand-ins for picket (shell scripts), so a
    hang on SIGTERM, a bad exit status and a sanitizer report are shown to fail."""

    def fake(self, body, name):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write("#!/bin/sh\n" + body + "\n")
        os.chmod(path, 0o755)
        return path

    def start_fake(self, script):
        old = os.environ.get("PICKET_BIN")
        os.environ["PICKET_BIN"] = script
        try:
            p = pt.Picket(self.tmp, os.path.join(self.tmp, "none.json"))
            p.start(wait=False)
        finally:
            if old is None:
                del os.environ["PICKET_BIN"]
            else:
                os.environ["PICKET_BIN"] = old
        self.addCleanup(p.kill)
        return p

    def wait_file(self, path):
        deadline = time.monotonic() + 60
        while not os.path.exists(path):
            self.assertLess(time.monotonic(), deadline, "the stand-in never started")
            time.sleep(0.01)

    def test_hang_on_sigterm_is_a_failure(self):
        # SIG_IGN survives exec: the sleep ignores SIGTERM, as a hung picket would
        ready = os.path.join(self.tmp, "hangs.ready")
        p = self.start_fake(self.fake("trap '' TERM\ntouch %s\nexec sleep 600" % ready, "hangs"))
        self.wait_file(ready)  # its trap is in place
        t0 = time.monotonic()
        with self.assertRaises(AssertionError) as cm:
            p.stop_and_check(timeout=1.0)
        self.assertTrue(p.hung)
        self.assertIn("did not exit within its drain bound", str(cm.exception))
        self.assertGreaterEqual(time.monotonic() - t0, 1.0, "SIGKILL came before the bound")

    def test_bad_exit_status_and_sanitizer_report_fail(self):
        ready = os.path.join(self.tmp, "exits23.ready")
        p = self.start_fake(self.fake("trap 'echo ==1==ERROR: LeakSanitizer: detected memory "
                                      "leaks >&2; exit 23' TERM\ntouch %s\n"
                                      "while :; do sleep 0.05; done" % ready, "exits23"))
        self.wait_file(ready)
        with self.assertRaises(AssertionError) as cm:
            p.stop_and_check()
        self.assertFalse(p.hung)
        self.assertIn("exit status 23 (want 0)", str(cm.exception))
        self.assertIn("LeakSanitizer", str(cm.exception))

    def test_testcase_cleanup_fails_on_hang(self):
        ready = os.path.join(self.tmp, "hangs.ready")
        script = self.fake("trap '' TERM\ntouch %s\nexec sleep 600" % ready, "hangs")
        outer = self

        class Inner(pt.TestCase):
            def test_it(inner):
                Inner.tmp_used = inner.tmp
                os.environ["PICKET_BIN"] = script
                try:
                    inner.picket(os.path.join(inner.tmp, "none.json"), wait=False,
                                 stop_timeout=1.0)
                finally:
                    del os.environ["PICKET_BIN"]
                outer.wait_file(ready)

        Inner.pki = self.pki  # setUpClass does not run for a lone .run()
        old = os.environ.pop("PICKET_BIN", None)
        try:
            res = unittest.TestResult()
            Inner("test_it").run(res)
        finally:
            if old is not None:
                os.environ["PICKET_BIN"] = old
        import shutil
        shutil.rmtree(Inner.tmp_used, ignore_errors=True)  # kept because it failed
        msgs = "".join(t for _, t in res.failures + res.errors)
        self.assertEqual(len(res.failures) + len(res.errors), 1, msgs)
        self.assertIn("did not exit within its drain bound", msgs)

    def test_drain_bound_from_config(self):
        conf = os.path.join(self.tmp, "c.json")
        pt.write_config(conf, {"limits": {"drain_timeout": "1500ms"}})
        self.assertAlmostEqual(pt.Picket(self.tmp, conf).drain_bound(), 1.5 + pt.Picket.STOP_SLACK)
        pt.write_config(conf, {})
        self.assertAlmostEqual(pt.Picket(self.tmp, conf).drain_bound(), 20 + pt.Picket.STOP_SLACK)

    def test_unknown_http_version_refused(self):
        self.assertEqual(pt.parse_http_versions("2,1.1"), ("2", "1.1"))
        self.assertEqual(pt.parse_http_versions("1.1"), ("1.1",))
        for bad in ("", "3", "2,1.0", "h2", "2,,1.1"):
            with self.assertRaises(ValueError, msg=bad):
                pt.parse_http_versions(bad)
        # and a test script refuses to run with one
        env = dict(os.environ, PICKET_TEST_HTTP="2,h1")
        r = subprocess.run([pt.PYTHON, "-c", "import picket_test"], cwd=pt.HERE, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"unknown HTTP version 'h1'", r.stderr)

    def test_missing_tool_names_the_package(self):
        with self.assertRaises(AssertionError) as cm:
            pt.require_tool("picket-no-such-tool", "no-such-package")
        self.assertIn("apt-get install no-such-package", str(cm.exception))
        with self.assertRaises(AssertionError) as cm:
            pt.require_module("picket_no_such_module", "python3-nothing")
        self.assertIn("apt-get install python3-nothing", str(cm.exception))
        self.assertTrue(pt.require_tool("openssl", "openssl"))


if __name__ == "__main__":
    pt.main(timeout=120)
