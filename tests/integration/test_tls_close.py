#!/usr/bin/python3
"""How picket ends its downstream TLS connections: a clean end is a close_notify, a cut
is a bare close.

A TLS close_notify tells the client that everything picket sent has arrived (RFC 8446
6.1: each side sends one before it closes its write side). Without it a client cannot
tell the end of a body delimited by the close (an HTTP/1.0 response of unknown length,
a WebSocket tunnel's last bytes) from an attacker's or a crash's cut (OpenSSL 3 reports
"unexpected eof while reading" unless told to ignore it). The other way round, a response picket had to cut must
never end with one: the bare close is how the client learns it is short.

Each test reads with a client that tells the two apart (picket_test.tls_strict:
suppress_ragged_eofs=False and OpenSSL's end-of-stream check on, so b"" only after a
close_notify and an ssl.SSLError on a bare close). Clean ends, over HTTP/1.1 and HTTP/2:
`Connection: close`; an HTTP/1.0 body delimited by the close; a refusal (400) and its
close; the keep-alive idle timeout; the client's own close_notify (answered, both
protocols); HTTP/2's idle timeout and the client's GOAWAY (GOAWAY, then close_notify).
Cuts: an HTTP/1.0 body whose upstream dies half-way; (test_websocket.py has the tunnel's
two: the app's close and its reset). And the connections picket opens: to an HTTP/1.1
authorization service (pt.TlsServer), the ALPN probe and the keep-alive connection both
end with a close_notify.

    /usr/bin/python3 tests/integration/test_tls_close.py [-k NAME]
"""
import os
import socket
import ssl
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import picket_test as pt  # noqa: E402
pt.require_module("h2.connection", "python3-h2")
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402

IDLE = "1500ms"  # the listener's keep-alive idle timeout here


def h1_request(method, path, *, version="HTTP/1.1", host="localhost", headers=(), body=b""):
    lines = ["%s %s %s" % (method, path, version), "Host: " + host]
    lines += ["%s: %s" % kv for kv in headers]
    if body or method == "POST":
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def split_response(data):
    """(status, {lower name: value}, body) of one HTTP/1.x response in data."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise AssertionError("no complete response head in %r" % data[:200])
    lines = head.decode("latin-1").split("\r\n")
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), hdrs, body


class KeepAliveService(pt.TlsServer):
    """An HTTP/1.1 authorization service over mTLS (the server SVID, ALPN http/1.1) that
    allows every check (200, a length, keep-alive) and, when picket closes a connection,
    notes how: "close_notify" or "bare" (self.closes, one per connection accepted)."""

    def __init__(self, pki):
        self.closes = []
        super().__init__(pki, "server", self.keep_alive)

    def keep_alive(self, s):
        buf = b""
        while True:
            try:
                head, buf = pt.recv_head(s, buf)
            except ssl.SSLError as e:
                self.closes.append("bare" if "EOF" in str(e).upper() else repr(e))
                return
            if head is None:
                self.closes.append("close_notify")
                return
            s.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")


class TlsClose(pt.SharedFleet):
    TMP_PREFIX = "picket-tlsclose-"

    @classmethod
    def _start(cls):
        pki, tmp = cls.pki, cls.tmp
        cls.up, up_port = pt.start_upstream(tmp, "h2c", name="app")
        cls.cut, cut_port = pt.start_upstream(tmp, "h2c", name="cut")  # the cut test kills it
        cls.procs += [cls.up, cls.cut]
        cls.svc = KeepAliveService(pki)
        cls.procs.append(cls.svc)
        pol = pt.write_policy(os.path.join(tmp, "policy.json"), [
            {"id": "checked", "action": "dispatch", "dispatch": "svc", "paths": ["/headers"]},
            {"id": "client", "action": "allow", "from": [pt.CLIENT_ID]}], default="deny")
        cls.port, admin = pt.free_port(), pt.free_port()
        cfg = pt.make_config(pki, cls.port, pt.upstream_url("h2c", up_port),
                             admin_port=admin, policy={"file": pol}, workdir=tmp,
                             routes=[{"authority": "cut",
                                      "upstream": pt.upstream_url("h2c", cut_port)}],
                             limits={"idle_timeout": IDLE})
        cfg["dispatch"] = {"svc": {"url": "https://127.0.0.1:%d/check" % cls.svc.port,
                                   "server_id": pt.SERVER_ID, "timeout": "5s"}}
        cls.P = cls._picket(pt.write_config(os.path.join(tmp, "picket.json"), cfg), admin,
                            "picket")

    def setUp(self):
        self.assertTrue(self.P.alive(), "picket died; stderr:\n%s" % self.P.stderr()[-3000:])

    def tearDown(self):
        super().tearDown()
        self.P.check_sanitizers()

    def h1(self):
        s = pt.tls_strict(self.port, self.pki)
        self.addCleanup(s.close)
        return s

    # -- HTTP/1.1 clean ends -----------------------------------------------------

    def test_h1_connection_close(self):
        s = self.h1()
        s.sendall(h1_request("GET", "/", headers=[("Connection", "close")]))
        data, how = pt.read_to_close(s)
        status, hdrs, body = split_response(data)
        self.assertEqual((status, body), (200, b"hello from upstream\n"), hdrs)
        self.assertEqual(how, "close_notify")

    def test_h1_http10_body_delimited_by_close(self):
        """No length known (the app streams its echo): HTTP/1.0 has no chunked coding,
        so the close ends the body, and only the close_notify says it is whole."""
        sent = bytes(i % 251 for i in range(200000))
        s = self.h1()
        s.sendall(h1_request("POST", "/echo", version="HTTP/1.0", body=sent))
        data, how = pt.read_to_close(s)
        status, hdrs, body = split_response(data)
        self.assertEqual(status, 200, hdrs)
        self.assertNotIn("content-length", hdrs)
        self.assertNotIn("transfer-encoding", hdrs)
        self.assertEqual(len(body), len(sent))
        self.assertEqual(body, sent)
        self.assertEqual(how, "close_notify")

    def test_h1_refusal_then_close(self):
        s = self.h1()
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nbad header\r\n\r\n")
        data, how = pt.read_to_close(s)
        self.assertEqual(split_response(data)[0], 400)
        self.assertEqual(how, "close_notify")

    def h1_after_one_get(self):
        """A keep-alive connection that carried one whole exchange."""
        s = self.h1()
        s.sendall(h1_request("GET", "/"))
        data = b""
        while b"hello from upstream\n" not in data:
            data += s.recv(65536)
        return s

    def test_h1_keepalive_idle_timeout(self):
        s = self.h1_after_one_get()
        rest, how = pt.read_to_close(s, timeout=pt.parse_duration(IDLE) + 30)
        self.assertEqual((rest, how), (b"", "close_notify"))

    def test_h1_client_close_notify_is_answered(self):
        s = self.h1_after_one_get()
        # unwrap() sends our close_notify and returns once the server's has come
        raw = s.unwrap()
        raw.close()

    # -- picket's own connections to a server ------------------------------------

    def test_upstream_idle_close_is_close_notify(self):
        """picket ends the connections it opened with a close_notify too: here to an
        authorization service that speaks HTTP/1.1 only, the one that learned it (ALPN)
        and the keep-alive one its check went on, at limits.idle_timeout."""
        s = self.h1()
        s.sendall(h1_request("GET", "/headers", headers=[("Connection", "close")]))
        data, _ = pt.read_to_close(s)
        self.assertEqual(split_response(data)[0], 200)
        deadline = time.monotonic() + pt.parse_duration(IDLE) + 30
        while (not self.svc.accepted or len(self.svc.closes) < self.svc.accepted) and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertTrue(self.svc.closes)
        self.assertEqual(self.svc.closes, ["close_notify"] * self.svc.accepted)

    # -- HTTP/1.1 cuts ----------------------------------------------------------

    def test_h1_http10_cut_body_is_bare_close(self):
        """The app dies half-way through a body delimited by the close: the client
        gets what arrived and a bare close, never a close_notify that would make the
        half look whole."""
        s = self.h1()
        head = h1_request("POST", "/echo", version="HTTP/1.0", host="cut", body=b"")
        head = head.replace(b"Content-Length: 0", b"Content-Length: 400000")
        half = bytes(i % 251 for i in range(100000))
        s.sendall(head + half)
        data = b""
        s.settimeout(30)
        while len(data) < len(half) or b"\r\n\r\n" not in data:
            b = s.recv(65536)
            self.assertTrue(b, "closed before the half body was echoed")
            data += b
            if b"\r\n\r\n" in data and len(split_response(data)[2]) >= len(half):
                break
        self.assertEqual(split_response(data)[0], 200)
        self.cut.kill()
        rest, how = pt.read_to_close(s)
        self.assertEqual(len(split_response(data + rest)[2]), len(half))
        self.assertIn(how, ("bare", "reset"))

    # -- HTTP/2 -----------------------------------------------------------------

    def h2(self):
        s = pt.tls_strict(self.port, self.pki, alpn=("h2",))
        self.addCleanup(s.close)
        self.assertEqual(s.selected_alpn_protocol(), "h2")
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        c.initiate_connection()
        s.sendall(c.data_to_send())
        return s, c

    def h2_to_close(self, s, c, timeout=30.0):
        data, how = pt.read_to_close(s, timeout)
        events = c.receive_data(data) if data else []
        return [e for e in events if isinstance(e, h2.events.ConnectionTerminated)], how

    def test_h2_idle_timeout_goaway_then_close_notify(self):
        """The idle connection's GOAWAY (a shutdown notice first, then the final one),
        then the close_notify."""
        s, c = self.h2()
        c.send_headers(1, [(":method", "GET"), (":path", "/"), (":scheme", "https"),
                           (":authority", "localhost")], end_stream=True)
        s.sendall(c.data_to_send())
        goaways, how = self.h2_to_close(s, c, pt.parse_duration(IDLE) + 30)
        self.assertTrue(goaways)
        self.assertEqual([(g.error_code, g.last_stream_id) for g in goaways][-1], (0, 1))
        self.assertEqual(how, "close_notify")

    def test_h2_client_close_notify_is_answered(self):
        s, c = self.h2()
        c.send_headers(1, [(":method", "GET"), (":path", "/"), (":scheme", "https"),
                           (":authority", "localhost")], end_stream=True)
        s.sendall(c.data_to_send())
        while not any(isinstance(e, h2.events.StreamEnded) for e in c.receive_data(s.recv(65536))):
            pass
        raw = s.unwrap()  # our close_notify; returns once the server's has come
        raw.close()

    def test_h2_client_goaway(self):
        """The client's GOAWAY, no stream open: picket's side ends too, cleanly."""
        s, c = self.h2()
        c.close_connection()
        s.sendall(c.data_to_send())
        _, how = pt.read_to_close(s)
        self.assertEqual(how, "close_notify")


if __name__ == "__main__":
    pt.main(timeout=240)
