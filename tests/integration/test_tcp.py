#!/usr/bin/python3
"""Opaque TCP (issue 18, item 2): tcp_inbound and tcp_outbound listeners, with a real
TLS client (python ssl, client certificate), a plain TCP client and an echo server.

    client (python ssl, SVID)  ->  B tcp_inbound (sa/picket)  ->  echo server
    app (plain TCP)  ->  A tcp_outbound (sa/client)  ->  B tcp_inbound  ->  echo server

Checked: bytes both ways; one decision per connection by the caller's identity only
(a rule naming paths never matches; a deny closes the connection and the echo server
never sees it), audited with protocol "tcp"; half-close propagated both ways through
the two sidecars' mTLS (the app shuts its write side and still reads the server's
answer, then EOF); a server whose SPIFFE ID is not server_id is refused; 64 MiB
through the mesh with a sha256 on both ends and bounded peak RSS; idle tunnels cut
by limits.tunnel_idle_timeout.

    /usr/bin/python3 tests/integration/test_tcp.py
"""
import hashlib
import os
import socket
import ssl
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import picket_test as pt  # noqa: E402

MIB = 1024 * 1024
ASAN_EXTRA = "quarantine_size_mb=4:thread_local_quarantine_size_kb=256"


class EchoServer:
    """127.0.0.1, a free port. Echoes every byte back as it arrives; on the client's
    EOF writes b"bye N\\n" (N: bytes received) and closes. Counts connections."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = 0
        self.done = []  # bytes received per finished connection
        self.stopped = False
        self.t = threading.Thread(target=self._accept, daemon=True)
        self.t.start()

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        n = 0
        try:
            while True:
                b = c.recv(256 * 1024)
                if not b:
                    break
                n += len(b)
                c.sendall(b)
            c.sendall(b"bye %d\n" % n)
        except OSError:
            pass
        finally:
            self.done.append(n)
            c.close()

    def stop(self):
        self.stopped = True
        self.sock.close()


def read_all(sock, timeout=60):
    sock.settimeout(timeout)
    out = b""
    while True:
        try:
            b = sock.recv(65536)
        except (ConnectionError, ssl.SSLError, socket.timeout) as e:
            return out, e
        if not b:
            return out, None
        out += b


class TCP(pt.TestCase):

    def echo(self):
        e = EchoServer()
        self.addCleanup(e.stop)
        return e

    def inbound(self, echo, policy_rules=None, limits=None, env=None):
        """Picket B: one tcp_inbound listener to the echo server. Returns (port, proc, admin)."""
        port = pt.free_port()
        path, cfg, _, admin = self.config("h2c://127.0.0.1:1", name="picket-b.json",
                                          inbound_port=port)
        cfg["listeners"] = [{"name": "db", "kind": "tcp_inbound", "bind": "127.0.0.1:%d" % port,
                             "upstream": "tcp://127.0.0.1:%d" % echo.port}]
        if policy_rules is not None:
            cfg["policy"] = {"file": pt.write_policy(os.path.join(self.tmp, "policy.json"),
                                                     policy_rules)}
        if limits:
            cfg["limits"] = limits
        pt.write_config(path, cfg)
        proc = self.picket(path, inbound_port=port, admin_port=admin, env_extra=env)
        return port, proc, admin

    def outbound(self, b_port, server_id=pt.SERVER_ID, limits=None, env=None):
        """Picket A: a tcp_outbound listener to B, with the client SVID. Returns (port, proc)."""
        port = pt.free_port()
        identity = {"cert": self.pki.cert("client"), "key": self.pki.key("client"),
                    "trust_bundles": {pt.TRUST_DOMAIN: self.pki.ca}}
        path, cfg, _, admin = self.config("h2c://127.0.0.1:1", name="picket-a.json",
                                          inbound_port=port, identity=identity)
        cfg["listeners"] = [{"name": "to-db", "kind": "tcp_outbound",
                             "bind": "127.0.0.1:%d" % port,
                             "upstream": "127.0.0.1:%d" % b_port, "server_id": server_id}]
        cfg["log"] = {"level": "info", "access": os.path.join(self.tmp, "access-a.jsonl"),
                      "audit": os.path.join(self.tmp, "audit-a.jsonl")}
        if limits:
            cfg["limits"] = limits
        pt.write_config(path, cfg)
        proc = self.picket(path, inbound_port=port, admin_port=admin, env_extra=env)
        return port, proc

    def tls_connect(self, port, cert="client"):
        ctx = pt.tls_context(self.pki, cert, alpn=None)
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30),
                            server_hostname="localhost")
        self.addCleanup(s.close)
        return s

    def audit(self, n=1, name="audit.jsonl"):
        return pt.read_jsonl(os.path.join(self.tmp, name), min_lines=n)

    def access(self, n=1, name="access.jsonl"):
        return pt.read_jsonl(os.path.join(self.tmp, name), min_lines=n)

    # -- tcp_inbound -----------------------------------------------------------

    def test_inbound_echo_and_records(self):
        echo = self.echo()
        port, proc, admin = self.inbound(echo)
        s = self.tls_connect(port)
        s.sendall(b"hello through picket")
        got = b""
        s.settimeout(30)
        while len(got) < 20:
            got += s.recv(100)
        self.assertEqual(got, b"hello through picket")
        s.sendall(b"again")
        got = b""
        while len(got) < 5:
            got += s.recv(100)
        self.assertEqual(got, b"again")
        s.close()
        recs = self.audit()
        self.assertEqual(recs[0].get("protocol"), "tcp", recs[0])
        self.assertEqual(recs[0].get("decision"), "allow", recs[0])
        self.assertEqual(recs[0].get("peer"), pt.CLIENT_ID, recs[0])
        acc = self.access()
        self.assertEqual(acc[0].get("proto"), "tcp", acc[0])
        self.assertEqual(acc[0].get("bytes_in"), 25, acc[0])
        self.assertGreaterEqual(acc[0].get("bytes_out"), 25, acc[0])
        self.assertEqual(pt.metric(admin, "picket_tcp_connections_total", 0, listener="db",
                                   decision="allow"), 1)

    def test_inbound_policy_once_by_identity(self):
        """A rule naming paths never matches a TCP connection; one naming only the caller
        does. A denied connection is closed before any byte reaches the upstream."""
        echo = self.echo()
        port, proc, admin = self.inbound(echo, policy_rules=[
            {"id": "http-only", "action": "allow", "from": [pt.CLIENT_ID], "paths": ["/**"]},
            {"id": "get-only", "action": "allow", "from": [pt.CLIENT_ID], "methods": ["GET"]},
        ])
        s = self.tls_connect(port)
        try:
            s.sendall(b"let me in")
        except OSError:
            pass
        data, _ = read_all(s, timeout=30)
        self.assertEqual(data, b"", "a denied connection gets no byte")
        recs = self.audit()
        self.assertEqual(recs[0].get("decision"), "deny", recs[0])
        self.assertEqual(recs[0].get("rule"), "default", recs[0])
        self.assertEqual(recs[0].get("protocol"), "tcp", recs[0])
        self.assertEqual(recs[0].get("reason"), "policy_deny", recs[0])
        self.assertEqual(echo.conns, 0, "the upstream never saw the denied connection")
        # picket policy lint says so
        rc, out, err = pt.run_picket_cli(["policy", "lint", os.path.join(self.tmp, "policy.json")])
        self.assertEqual(rc, 0, err)
        self.assertIn('2 of 2 rules (first: "http-only")', err)
        self.assertIn("never match an opaque TCP connection", err)
        self.assertEqual(pt.metric(admin, "picket_tcp_connections_total", 0, listener="db",
                                   decision="deny"), 1)

    def test_inbound_policy_allow_by_identity(self):
        echo = self.echo()
        port, proc, admin = self.inbound(echo, policy_rules=[
            {"id": "db-clients", "action": "allow", "from": [pt.CLIENT_ID]}])
        s = self.tls_connect(port)
        s.sendall(b"x")
        s.settimeout(30)
        self.assertEqual(s.recv(10), b"x")
        recs = self.audit()
        self.assertEqual((recs[0].get("decision"), recs[0].get("rule")), ("allow", "db-clients"))

    def test_inbound_needs_client_cert(self):
        echo = self.echo()
        port, proc, admin = self.inbound(echo)
        ctx = pt.tls_context(self.pki, cert=None, alpn=None)
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.addCleanup(raw.close)
        try:
            s = ctx.wrap_socket(raw, server_hostname="localhost")
            self.addCleanup(s.close)
            s.sendall(b"x")
            data, _ = read_all(s, timeout=30)
        except (ssl.SSLError, ConnectionError):
            data = b""
        self.assertEqual(data, b"")
        self.assertEqual(echo.conns, 0)

    def test_idle_timeout(self):
        echo = self.echo()
        port, proc, admin = self.inbound(echo, limits={"tunnel_idle_timeout": "1s"})
        s = self.tls_connect(port)
        s.sendall(b"x")
        s.settimeout(30)
        self.assertEqual(s.recv(10), b"x")
        t0 = time.monotonic()
        data, _ = read_all(s, timeout=30)  # nothing more is sent: picket ends it
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        self.assertNotIn(b"bye", data, "cut by picket, not ended by the echo server")
        acc = self.access()
        self.assertEqual(acc[0].get("reason"), "tunnel_idle", acc[0])

    # -- the mesh: tcp_outbound -> tcp_inbound -------------------------------------

    def test_mesh_half_close_both_ways(self):
        """The app shuts its write side; the echo server sees EOF through both sidecars
        (close_notify between them), answers, and its close comes back as EOF."""
        echo = self.echo()
        b_port, b_proc, _ = self.inbound(echo)
        a_port, a_proc = self.outbound(b_port)
        s = socket.create_connection(("127.0.0.1", a_port), timeout=30)
        self.addCleanup(s.close)
        s.sendall(b"ping " * 1000)
        s.shutdown(socket.SHUT_WR)
        data, err = read_all(s, timeout=30)
        self.assertIsNone(err, "clean EOF, not %r" % (err,))
        self.assertEqual(data, b"ping " * 1000 + b"bye 5000\n")
        # B's audit: A's SVID decided on; A's access line: forwarded
        recs = self.audit()
        self.assertEqual(recs[0].get("peer"), pt.CLIENT_ID, recs[0])
        acc_a = self.access(name="access-a.jsonl")
        self.assertEqual(acc_a[0].get("proto"), "tcp")
        self.assertEqual(acc_a[0].get("bytes_in"), 5000, acc_a[0])
        self.assertEqual(acc_a[0].get("bytes_out"), 5009, acc_a[0])
        self.assertNotIn("reason", acc_a[0], acc_a[0])

    def test_mesh_wrong_server_id(self):
        echo = self.echo()
        b_port, b_proc, _ = self.inbound(echo)
        a_port, a_proc = self.outbound(b_port, server_id="spiffe://example.org/ns/x/sa/other")
        s = socket.create_connection(("127.0.0.1", a_port), timeout=30)
        self.addCleanup(s.close)
        s.sendall(b"secret")
        data, _ = read_all(s, timeout=30)
        self.assertEqual(data, b"")
        ev = pt.wait_log_event(a_proc, "upstream_failed", timeout=30)
        self.assertEqual((ev or {}).get("reason"), "server_id_mismatch", ev)
        self.assertEqual(echo.conns, 0)

    def test_upstream_never_handshakes(self):
        """tcp_outbound to a server that accepts TCP and never speaks TLS: the app's
        connection is closed after limits.handshake_timeout, not the idle hour."""
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        self.addCleanup(silent.close)
        a_port, a_proc = self.outbound(silent.getsockname()[1],
                                       limits={"handshake_timeout": "1s"})
        s = socket.create_connection(("127.0.0.1", a_port), timeout=30)
        self.addCleanup(s.close)
        s.sendall(b"hello?")
        t0 = time.monotonic()
        data, err = read_all(s, timeout=30)
        self.assertEqual(data, b"")
        self.assertNotIsInstance(err, socket.timeout, "closed by picket (FIN or reset: the "
                                 "app's unread bytes), not by the test's timeout")
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        acc = self.access(name="access-a.jsonl")
        self.assertEqual(acc[0].get("reason"), "timeout", acc[0])

    def test_mesh_64mib_checksum_bounded_memory(self):
        echo = self.echo()
        env = {"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "detect_leaks=1") + ":" + ASAN_EXTRA}
        # a short idle timeout: a moving tunnel is never cut by it, and a stall would
        # end in seconds with both sidecars' byte counts in their access logs
        lim = {"tunnel_idle_timeout": "10s"}
        b_port, b_proc, _ = self.inbound(echo, env=env, limits=lim)
        a_port, a_proc = self.outbound(b_port, env=env, limits=lim)
        # warm-up: one small exchange, then the peak-RSS marks are reset
        s = socket.create_connection(("127.0.0.1", a_port), timeout=30)
        s.sendall(b"warm")
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(read_all(s)[0], b"warmbye 4\n")
        s.close()
        base = {p.pid: p.reset_peak_rss() for p in (a_proc, b_proc)}
        size = 64 * MIB
        block = bytes(range(256)) * 4096  # 1 MiB
        sent_hash = hashlib.sha256()
        s = socket.create_connection(("127.0.0.1", a_port), timeout=60)
        self.addCleanup(s.close)

        def send():
            for i in range(size // len(block)):
                b = block[i % 7:] + block[:i % 7]
                sent_hash.update(b)
                s.sendall(b)
            s.shutdown(socket.SHUT_WR)
        th = threading.Thread(target=send, daemon=True)
        th.start()
        got_hash = hashlib.sha256()
        n = 0
        tail = b""
        s.settimeout(120)
        while True:
            b = s.recv(1 << 20)
            if not b:
                break
            take = b[:max(0, size - n)]
            got_hash.update(take)
            n += len(take)
            tail += b[len(take):]
        th.join(60)
        if n != size:
            self.fail("%d of %d bytes came back; A: %r; B: %r" % (
                n, size, pt.read_jsonl(os.path.join(self.tmp, "access-a.jsonl"), timeout=5),
                pt.read_jsonl(os.path.join(self.tmp, "access.jsonl"), timeout=5)))
        self.assertEqual(got_hash.hexdigest(), sent_hash.hexdigest())
        self.assertEqual(tail, b"bye %d\n" % size)
        for p in (a_proc, b_proc):
            growth = (p.peak_rss_kib() - base[p.pid]) * 1024
            pt.log("picket pid %d: peak RSS growth %.1f MiB for 64 MiB each way"
                   % (p.pid, growth / MIB))
            self.assertLess(growth, 24 * MIB, "picket held the stream, not a bounded window")


if __name__ == "__main__":
    pt.main(timeout=280)
