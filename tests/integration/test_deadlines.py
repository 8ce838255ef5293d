#!/usr/bin/python3
"""Per-route deadlines (issue 18, item 3): routes[].timeout, listeners[].timeout and a
gRPC client's grpc-timeout, with real clients (curl over h2 and HTTP/1.1, python h2,
raw TLS HTTP/1.1, grpcio) and the test upstreams (upstream.py, grpc_app.py).

What is checked: a request past its deadline gets 504 "request deadline exceeded"
(reason request_deadline in the access log, the upstream_failed event and the
picket_upstream_failures_total{reason} metric) and not before the deadline; the
upstream request is cancelled (upstream.py sees its HTTP/1.1 connection close or its
h2 stream reset); a route's timeout wins over its listener's, both ways; a response
that has started is reset (h2) or its connection closed (h1); gRPC gets grpc-status 4
(DEADLINE_EXCEEDED), from a configured deadline or from a sooner grpc-timeout, and a
malformed grpc-timeout is ignored.

    /usr/bin/python3 tests/integration/test_deadlines.py
"""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import picket_test as pt  # noqa: E402


def upstream_lines(test, port):
    """The stdout lines of the upstream this test started on `port`."""
    with open(test._upstreams[port].out_path, "rb") as f:
        return f.read().decode(errors="replace").splitlines()


class Deadlines(pt.TestCase):

    def wait_upstream_line(self, port, line, timeout=30.0):
        deadline = time.monotonic() + timeout
        while line not in upstream_lines(self, port):
            if time.monotonic() > deadline:
                self.fail("upstream on %d never printed %r: %r"
                          % (port, line, upstream_lines(self, port)[-10:]))
            time.sleep(0.02)

    def start(self, kind, listener_timeout=None, routes=None):
        up = self.upstream(kind)
        url = pt.upstream_url(kind, up)
        path, cfg, port, admin = self.config(url, name="picket-%s.json" % kind,
                                             routes=[dict(r, upstream=url) for r in routes or []])
        if listener_timeout:
            cfg["listeners"][0]["timeout"] = listener_timeout
            pt.write_config(path, cfg)
        proc = self.picket(path, inbound_port=port, admin_port=admin)
        return up, port, admin, proc

    def access_records(self, pred, n=1):
        path = os.path.join(self.tmp, "access.jsonl")
        deadline = time.monotonic() + 30
        while True:
            recs = [r for r in pt.read_jsonl(path, timeout=0.1, min_lines=0) if pred(r)]
            if len(recs) >= n or time.monotonic() > deadline:
                return recs
            time.sleep(0.05)

    def test_deadline_504_and_upstream_cancelled(self):
        """h1 and h2c upstreams x h2 and HTTP/1.1 clients: a held request ends with 504 at
        the route's deadline, the upstream request is cancelled, the listener serves on."""
        for kind in ("h2c", "h1"):
            up, port, admin, proc = self.start(
                kind, listener_timeout="1h",
                routes=[{"path_prefix": "/hold/", "timeout": "700ms"}])
            for http in pt.HTTP_VERSIONS:
                hold = "/hold/dl-%s-%s" % (kind, http.replace(".", ""))
                since = len(proc.stderr())
                before = pt.metric(admin, "picket_upstream_failures_total", 0,
                                   reason="request_deadline")
                t0 = time.monotonic()
                r = self.curl(port, hold, http=http, timeout=60)
                elapsed = time.monotonic() - t0
                self.assertEqual(r.exit, 0, repr(r))
                self.assertEqual(r.status, 504, "%s upstream, http %s: %r" % (kind, http, r))
                self.assertEqual(r.body, b"request deadline exceeded\n")
                self.assertGreaterEqual(elapsed, 0.65, "504 before the 700ms deadline (%.2fs)"
                                        % elapsed)
                ev = pt.wait_log_event(proc, "upstream_failed", since=since, timeout=30)
                self.assertEqual((ev or {}).get("reason"), "request_deadline", ev)
                self.assertEqual(pt.metric(admin, "picket_upstream_failures_total", 0,
                                           reason="request_deadline") - before, 1)
                # the upstream saw its request cancelled: h1 connection closed, h2 stream reset
                self.wait_upstream_line(up, "%s GET %s" % ("reset" if kind == "h2c" else "closed",
                                                           hold))
                recs = self.access_records(lambda a: a.get("path") == hold)
                self.assertEqual(len(recs), 1, recs)
                self.assertEqual(recs[0].get("status"), 504, recs[0])
                self.assertEqual(recs[0].get("reason"), "request_deadline", recs[0])
                # the same listener still serves, within the deadline
                self.assertOK(self.curl(port, "/slow/50", http=http))

    def test_route_wins_over_listener(self):
        """A route's own timeout wins over its listener's when it is longer (the shorter
        case is test_deadline_504_and_upstream_cancelled: 700ms under a listener's 1h)."""
        up, port, admin, proc = self.start(
            "h2c", listener_timeout="400ms",
            routes=[{"path_prefix": "/slow/", "timeout": "30s"},
                    {"path_prefix": "/hold/", "timeout": "500ms"}])
        http = pt.HTTP_VERSIONS[0]
        # the route's 30 s, not the listener's 400 ms
        r = self.curl(port, "/slow/1200", http=http, timeout=60)
        self.assertOK(r)
        self.assertEqual(r.body, b"slow done\n")
        # the route's 30 s is a whole-request budget too: a request that outlives the
        # listener's 400 ms on that route is not cut
        self.assertIsNone(pt.wait_log_event(proc, "upstream_failed", timeout=0.2))

    def test_listener_deadline(self):
        """A request on no route gets the listener's deadline."""
        up, port, admin, proc = self.start(
            "h1", listener_timeout="500ms",
            routes=[{"path_prefix": "/long/", "timeout": "1h"}])
        for http in pt.HTTP_VERSIONS:
            t0 = time.monotonic()
            r = self.curl(port, "/slow/20000", http=http, timeout=60)
            elapsed = time.monotonic() - t0
            self.assertEqual(r.status, 504, repr(r))
            self.assertGreaterEqual(elapsed, 0.45)
            self.assertLess(elapsed, 19, "the upstream's 20 s answer, not the deadline")

    def test_reset_after_response_started_h2(self):
        """A response whose head went out is reset (RST_STREAM) at the deadline."""
        up, port, admin, proc = self.start(
            "h2c", routes=[{"path_prefix": "/echo", "timeout": "800ms"}])
        c = pt.H2Client(port, self.pki)
        self.addCleanup(c.close)
        sid = c.conn.get_next_available_stream_id()
        c.conn.send_headers(sid, [(":method", "POST"), (":scheme", "https"),
                                  (":authority", "localhost"), (":path", "/echo"),
                                  ("content-type", "application/octet-stream")])
        c.conn.send_data(sid, b"first part")
        c.sock.sendall(c.conn.data_to_send())
        t0 = time.monotonic()
        deadline = t0 + 30
        while time.monotonic() < deadline:
            st = c.streams.get(sid)
            if st and st["done"]:
                break
            self.assertTrue(c._pump(0.2), "connection ended")
        elapsed = time.monotonic() - t0
        st = c.streams.get(sid)
        self.assertIsNotNone(st)
        self.assertEqual(dict(st["headers"]).get(":status"), "200", st)
        self.assertEqual(st["body"], b"first part", "the echo started before the deadline")
        self.assertTrue(st.get("reset"), "ended by RST_STREAM, not END_STREAM: %r" % st)
        self.assertGreaterEqual(elapsed, 0.5)
        recs = self.access_records(lambda a: a.get("path") == "/echo")
        self.assertEqual(recs[0].get("reason"), "request_deadline", recs)
        # the connection is still good
        status, _, body, _ = c.request("/")
        self.assertEqual(status, 200)

    def test_close_after_response_started_h1(self):
        """HTTP/1.1: a response whose head went out ends with the connection closed."""
        up, port, admin, proc = self.start(
            "h2c", routes=[{"path_prefix": "/echo", "timeout": "800ms"}])
        ctx = pt.tls_context(self.pki, alpn=("http/1.1",))
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30),
                            server_hostname="localhost")
        self.addCleanup(s.close)
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
                  b"Content-Type: application/octet-stream\r\n\r\n"
                  b"a\r\nfirst part\r\n")
        got = b""
        s.settimeout(30)
        while True:
            try:
                b = s.recv(65536)
            except OSError:
                break
            if not b:
                break
            got += b
        self.assertTrue(got.startswith(b"HTTP/1.1 200"), got[:200])
        self.assertIn(b"first part", got)
        self.assertFalse(got.endswith(b"0\r\n\r\n"), "the body was cut, not ended: %r" % got)
        recs = self.access_records(lambda a: a.get("path") == "/echo")
        self.assertEqual(recs[0].get("reason"), "request_deadline", recs)


class GRPCDeadlines(pt.TestCase):

    def setUp(self):
        super().setUp()
        self.grpc = pt.require_module("grpc", "python3-grpcio")
        import grpc_app
        self.ga = grpc_app

    def test_route_deadline_is_deadline_exceeded(self):
        """grpcio with a 60 s deadline, route timeout 700ms: picket ends the call with
        DEADLINE_EXCEEDED and its own message, and cancels the upstream call."""
        grpc = self.grpc
        app = self.grpc_app()
        path, cfg, port, admin = self.config(
            "h2c://127.0.0.1:%d" % app,
            routes=[{"path_prefix": "/grpc.health.v1.Health/", "timeout": "700ms",
                     "upstream": "h2c://127.0.0.1:%d" % app}])
        proc = self.picket(path, inbound_port=port, admin_port=admin)
        ch = self.ga.secure_channel(port, self.pki.ca, self.pki.cert("client"),
                                          self.pki.key("client"))
        self.addCleanup(ch.close)
        grpc.channel_ready_future(ch).result(timeout=10)
        check = ch.unary_unary("/grpc.health.v1.Health/Check")
        self.assertEqual(check(b"", timeout=10), bytes([0x08, 1]), "fast calls pass")
        t0 = time.monotonic()
        with self.assertRaises(grpc.RpcError) as cm:
            check(b"\x0a\x04hang", timeout=60)
        elapsed = time.monotonic() - t0
        self.assertEqual(cm.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertEqual(cm.exception.details(), "request deadline exceeded",
                         "picket's answer, not the client's own deadline")
        self.assertGreaterEqual(elapsed, 0.65)
        recs = pt.read_jsonl(os.path.join(self.tmp, "access.jsonl"), min_lines=2)
        self.assertIn("request_deadline", [r.get("reason") for r in recs], recs)
        # the channel still works
        self.assertEqual(check(b"", timeout=10), bytes([0x08, 1]))

    def test_grpc_timeout_header(self):
        """A sooner grpc-timeout from the client is the deadline (trailers-only,
        grpc-status 4); a malformed one is ignored, not refused."""
        up = self.upstream("h2c")
        url = pt.upstream_url("h2c", up)
        path, cfg, port, admin = self.config(url)
        cfg["listeners"][0]["timeout"] = "30s"
        pt.write_config(path, cfg)
        proc = self.picket(path, inbound_port=port, admin_port=admin)
        c = pt.H2Client(port, self.pki)
        self.addCleanup(c.close)
        grpc_hdrs = [("content-type", "application/grpc"), ("te", "trailers")]
        t0 = time.monotonic()
        status, headers, body, trailers = c.request(
            "/hold/grpc-timeout", method="POST", headers=grpc_hdrs + [("grpc-timeout", "400m")])
        elapsed = time.monotonic() - t0
        h = dict(headers)
        self.assertEqual(status, 200, headers)
        self.assertEqual(h.get("grpc-status"), "4", headers)
        self.assertEqual(h.get("grpc-message"), "request deadline exceeded", headers)
        self.assertGreaterEqual(elapsed, 0.35)
        self.wait_upstream_line(up, "reset POST /hold/grpc-timeout")
        # without grpc-timeout nothing ends it but the listener's 30 s: released by the test
        for bad in ("abc", "1 S", "0S", "123456789S", "5s"):
            status, headers, body, _ = c.request(
                "/slow/300", method="POST", headers=grpc_hdrs + [("grpc-timeout", bad)])
            self.assertEqual(status, 200, (bad, headers))
            self.assertNotIn("grpc-status", dict(headers), (bad, headers))
            self.assertEqual(body, b"slow done\n", bad)
        # a grpc-timeout on a request that is not gRPC means nothing
        status, headers, body, _ = c.request("/slow/300", headers=[("grpc-timeout", "10m")])
        self.assertEqual(status, 200, headers)
        self.assertEqual(body, b"slow done\n")

    wait_upstream_line = Deadlines.wait_upstream_line


if __name__ == "__main__":
    pt.main(timeout=280)
