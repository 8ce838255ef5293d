#!/usr/bin/python3
"""Two (three) sidecars as a mesh: the local app speaks plaintext (h2c with prior
knowledge or HTTP/1.1) to picket A's `outbound` listener; A picks the route by
authority, originates mTLS with its own SVID to picket B's inbound listener and
checks B's SPIFFE ID; B verifies A, decides by policy, writes XFCC naming A and
forwards to the app behind it (grpc_app.py and upstream.py over h2c).

    app (grpcio / curl / h2)  ->  A outbound (sa/frontend)  ->  B inbound (sa/orders)
                                                               -> grpc_app / upstream.py
    app                       ->  C outbound (sa/intruder)  ->  B: denied by B's policy

Outbound details checked: HTTP/1.1 and h2c prior knowledge from the app, authority
port ignored, unknown authority 404, a server whose SPIFFE ID is not the route's
server_id 502 (server_id_mismatch), a server whose certificate comes from another
CA 502 (untrusted_chain), an upstream that is down 502 with reason connect_refused,
a 50 MiB download with its sha256, request bodies, response trailers.

    /usr/bin/python3 tests/integration/test_mesh.py
"""
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import picket_test as pt  # noqa: E402
grpc = pt.require_module("grpc", "python3-grpcio")  # fails naming the package if missing
import grpc_app  # noqa: E402
import upstream as upmod  # noqa: E402

FRONTEND_ID = "spiffe://example.org/ns/default/sa/frontend"
ORDERS_ID = "spiffe://example.org/ns/default/sa/orders"
INTRUDER_ID = "spiffe://example.org/ns/default/sa/intruder"
PAYMENTS_ID = "spiffe://example.org/ns/default/sa/payments"  # nobody has it

GRPC_PREFIX = "/picket.test.Echo/"


# --------------------------------------------------------------------------
# helpers: the local app's side (plaintext to the outbound listener)

def app_curl(port, path, *, host="orders", http="2", method=None, headers=(), data_path=None,
             out_path=None, timeout=20, workdir=None):
    """One plaintext request from "the app" to an outbound listener with curl.
    http="2": h2c with prior knowledge; "1.1": HTTP/1.1. Host/:authority = `host`.
    With out_path the body goes to that file (Resp.body is then b"")."""
    tmp = tempfile.mkdtemp(prefix="curl-", dir=workdir)
    try:
        hdr = os.path.join(tmp, "h")
        body = out_path or os.path.join(tmp, "b")
        cmd = ["curl", "-sS", "--noproxy", "*", "--max-time", str(timeout), "-D", hdr, "-o", body,
               "-w", "%{http_code} %{http_version}", "-H", "Host: " + host]
        cmd += ["--http2-prior-knowledge"] if http == "2" else ["--http1.1"]
        if method:
            cmd += ["-X", method]
        for h in headers:
            cmd += ["-H", h]
        if data_path:
            cmd += ["--data-binary", "@" + data_path]
        cmd.append("http://127.0.0.1:%d%s" % (port, path))
        try:
            r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=timeout + 10)
            rc, out, err = r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
        except subprocess.TimeoutExpired:
            rc, out, err = -1, "000 0", "curl did not finish in %ds" % (timeout + 10)
        parts = out.split()
        status = int(parts[0]) if parts and parts[0].isdigit() else 0
        ver = parts[1] if len(parts) > 1 else "0"
        headers_l = []
        if os.path.exists(hdr):
            with open(hdr, "rb") as f:
                raw = f.read()
            blocks = [b for b in raw.replace(b"\r\n", b"\n").split(b"\n\n") if b.startswith(b"HTTP/")]
            if blocks:
                for line in blocks[-1].split(b"\n")[1:]:
                    line = line.decode("latin-1")
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers_l.append((k.strip().lower(), v.strip()))
        b = b""
        if out_path is None and os.path.exists(body):
            with open(body, "rb") as f:
                b = f.read()
        return pt.Resp(rc, status, ver, headers_l, b, err, cmd)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class H2CClient(pt.H2Client):
    """pt.H2Client over a plaintext socket (h2c, prior knowledge), with a chosen
    :authority: what an app talking to the outbound listener does."""

    def __init__(self, port, timeout=10.0):  # noqa: D401 - no super().__init__ (TLS)
        import h2.config
        import h2.connection
        import h2.events
        self.ev = h2.events
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())
        self.goaway = None
        self.closed = False
        self.streams = {}
        self.window_updates = {}

    def get(self, path, authority="orders", headers=(), timeout=10.0):
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", "GET"), (":scheme", "http"), (":authority", authority),
                (":path", path)] + list(headers)
        self.conn.send_headers(sid, hdrs, end_stream=True)
        self.sock.sendall(self.conn.data_to_send())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.streams.get(sid)
            if st and st["done"]:
                h = dict(st["headers"])
                return int(h.get(":status", 0)), st["headers"], st["body"], st["trailers"], st.get("reset")
            if not self._pump(0.2):
                break
        raise AssertionError("no complete response on stream %d for %s" % (sid, path))


class ForeignTLSServer(pt.TlsServer):
    """A TLS server (in this process) presenting a certificate from another CA that
    claims an example.org SPIFFE ID (the PKI's "evil" leaf). Counts connections accepted,
    connections whose handling has ended (finished), and requests seen."""

    def __init__(self, pki):
        self.requests_seen = 0
        super().__init__(pki, "evil", self.first_read, alpn=("h2", "http/1.1"),
                         client_cert=False, timeout=5)

    def first_read(self, t):
        with t:
            if t.recv(65536):
                self.requests_seen += 1


def grpc_channel(port, authority="orders"):
    """What a gRPC app does with its sidecar: plaintext h2c to the outbound listener,
    the service's name as :authority."""
    return grpc.insecure_channel("ipv4:127.0.0.1:%d" % port,
                                 options=grpc_app._CHANNEL_OPTS + [("grpc.default_authority", authority)])


def picket_config(pki, name, leaf, listeners, admin_port, workdir, policy=None):
    cfg = {
        "node_id": "mesh/%s/picket" % name,
        "workers": 2,
        "identity": {"cert": pki.cert(leaf), "key": pki.key(leaf),
                     "trust_bundles": {pt.TRUST_DOMAIN: pki.ca}},
        "listeners": listeners,
        "admin": {"bind": "127.0.0.1:%d" % admin_port},
        "log": {"level": "info",
                "access": os.path.join(workdir, "%s-access.jsonl" % name),
                "audit": os.path.join(workdir, "%s-audit.jsonl" % name)},
        "limits": {"upstream_timeout": "10s"},
    }
    if policy:
        cfg["policy"] = {"file": policy}
    path = os.path.join(workdir, "%s.json" % name)
    pt.write_config(path, cfg)
    return path


# --------------------------------------------------------------------------
# the mesh, started once for the whole script (pickets under ASan start slowly)

class Mesh(pt.SharedFleet):
    TMP_PREFIX = "picket-mesh-"

    @classmethod
    def _start(cls):
        pki, tmp = cls.pki, cls.tmp
        for leaf, uri, dns, ips in (("frontend", FRONTEND_ID, [], []),
                                    ("orders", ORDERS_ID, ["localhost"], ["127.0.0.1"]),
                                    ("intruder", INTRUDER_ID, [], [])):
            if not os.path.exists(pki.cert(leaf)):
                pki.issue(leaf, "ca", uri, dns, ips)

        # apps behind B
        g, cls.grpc_port = pt.start_grpc_app(tmp)
        cls.procs.append(g)
        u, cls.up_port = pt.start_upstream(tmp, "h2c", name="orders-app")
        cls.procs.append(u)

        # B: inbound, sa/orders, policy allows only A's identity
        cls.b_port, cls.b_admin = pt.free_port(), pt.free_port()
        pol = pt.write_policy(os.path.join(tmp, "b-policy.json"), [
            {"id": "frontend-calls-orders", "action": "allow", "from": [FRONTEND_ID]},
            {"id": "no-intruder", "action": "deny", "from": [INTRUDER_ID]}], default="deny")
        b_conf = picket_config(pki, "b", "orders", [{
            "name": "inbound", "kind": "inbound", "bind": "127.0.0.1:%d" % cls.b_port,
            "upstream": "h2c://127.0.0.1:%d" % cls.up_port,
            "routes": [{"path_prefix": GRPC_PREFIX, "upstream": "h2c://127.0.0.1:%d" % cls.grpc_port}]}],
            cls.b_admin, tmp, policy=pol)
        cls.B = cls._picket(b_conf, cls.b_admin, "picket-b")

        # something with a certificate from another CA, and a port nobody listens on
        cls.foreign = ForeignTLSServer(pki)
        cls.procs.append(cls.foreign)
        cls.down_port = pt.free_port()

        # A: outbound, sa/frontend
        cls.a_port, cls.a_admin = pt.free_port(), pt.free_port()
        b_up = "127.0.0.1:%d" % cls.b_port
        a_conf = picket_config(pki, "a", "frontend", [{
            "name": "outbound", "kind": "outbound", "bind": "127.0.0.1:%d" % cls.a_port,
            "routes": [
                {"authority": "orders", "upstream": b_up, "server_id": ORDERS_ID},
                {"authority": "wrong-id", "upstream": b_up, "server_id": PAYMENTS_ID},
                {"authority": "foreign", "upstream": "127.0.0.1:%d" % cls.foreign.port,
                 "server_id": pt.CLIENT_ID},
                {"authority": "down", "upstream": "127.0.0.1:%d" % cls.down_port,
                 "server_id": ORDERS_ID},
            ]}], cls.a_admin, tmp)
        cls.A = cls._picket(a_conf, cls.a_admin, "picket-a")

        # C: outbound, sa/intruder, same route to B
        cls.c_port, cls.c_admin = pt.free_port(), pt.free_port()
        c_conf = picket_config(pki, "c", "intruder", [{
            "name": "outbound", "kind": "outbound", "bind": "127.0.0.1:%d" % cls.c_port,
            "routes": [{"authority": "orders", "upstream": b_up, "server_id": ORDERS_ID}]}],
            cls.c_admin, tmp)
        cls.C = cls._picket(c_conf, cls.c_admin, "picket-c")

        for port in (cls.a_port, cls.c_port):
            if not pt.wait_port(port, 10):
                raise AssertionError("outbound listener 127.0.0.1:%d not listening" % port)

    def setUp(self):
        for p in (self.A, self.B, self.C):
            self.assertTrue(p.alive(), "%s died; stderr:\n%s" % (p.name, p.stderr()[-3000:]))

    def curl(self, port, path, **kw):
        kw.setdefault("workdir", self.tmp)
        return app_curl(port, path, **kw)

    def channel(self, port):
        ch = grpc_channel(port)
        self.addCleanup(ch.close)
        grpc.channel_ready_future(ch).result(timeout=10)
        return ch

    def xfcc_for(self, leaf, uri):
        return "By=%s;Hash=%s;URI=%s" % (ORDERS_ID, self.pki.der_sha256(leaf), uri)

    # ---------------------------------------------------------------- gRPC

    def test_grpc_unary_through_mesh(self):
        ch = self.channel(self.a_port)
        self.assertEqual(grpc_app.unary(ch, b"hello mesh"), b"hello mesh")
        big = bytes(range(256)) * 4096  # 1 MiB message
        self.assertEqual(grpc_app.unary(ch, big, timeout=30), big)
        self.assertEqual(grpc_app.unary(ch, b""), b"")

    def test_grpc_app_sees_xfcc_naming_a(self):
        ch = self.channel(self.a_port)
        resp, call = grpc_app.unary(ch, b"x", with_call=True)
        self.assertEqual(resp, b"x")
        self.assertEqual(call.code(), grpc.StatusCode.OK)
        md = dict(call.trailing_metadata())
        self.assertEqual((md.get("x-echo-xfcc") or "").lower(),
                         self.xfcc_for("frontend", FRONTEND_ID).lower(),
                         "B writes XFCC: By=B's ID, Hash of A's cert, URI=A's ID")
        self.assertNotIn(md.get("x-echo-request-id"), (None, "-"))

    def test_grpc_app_cannot_forge_xfcc(self):
        """An XFCC the app sends on the way out is not what the server app sees."""
        ch = self.channel(self.a_port)
        forged = "By=%s;URI=spiffe://example.org/ns/default/sa/admin" % ORDERS_ID
        resp, call = ch.unary_unary("/picket.test.Echo/Unary").with_call(
            b"y", timeout=10, metadata=(("x-forwarded-client-cert", forged),))
        md = dict(call.trailing_metadata())
        self.assertEqual((md.get("x-echo-xfcc") or "").lower(),
                         self.xfcc_for("frontend", FRONTEND_ID).lower())

    def test_grpc_server_streaming(self):
        ch = self.channel(self.a_port)
        msgs = grpc_app.server_stream(ch, 1000, timeout=30)
        self.assertEqual(msgs, [("msg-%d" % i).encode() for i in range(1000)])

    def test_grpc_client_and_bidi_streaming(self):
        ch = self.channel(self.a_port)
        self.assertEqual(grpc_app.client_stream(ch, [b"m%d" % i for i in range(300)]), b"300")
        msgs = [b"b%d" % i for i in range(100)]
        self.assertEqual(grpc_app.bidi_stream(ch, msgs), msgs)

    def test_grpc_error_status_relayed(self):
        ch = self.channel(self.a_port)
        with self.assertRaises(grpc.RpcError) as cm:
            grpc_app.unary(ch, b"fail")
        self.assertEqual(cm.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
        self.assertEqual(cm.exception.details(), "told to fail")
        self.assertEqual(grpc_app.unary(ch, b"again"), b"again", "channel still usable")

    def test_grpc_concurrent_calls(self):
        ch = self.channel(self.a_port)
        futs = [ch.unary_unary("/picket.test.Echo/Unary").future(b"c%d" % i, timeout=30)
                for i in range(64)]
        self.assertEqual([f.result() for f in futs], [b"c%d" % i for i in range(64)])

    def test_grpc_intruder_permission_denied(self):
        ch = self.channel(self.c_port)
        with self.assertRaises(grpc.RpcError) as cm:
            grpc_app.unary(ch, b"hi")
        self.assertEqual(cm.exception.code(), grpc.StatusCode.PERMISSION_DENIED)
        # the same call from A still works (B decides per caller)
        self.assertEqual(grpc_app.unary(self.channel(self.a_port), b"hi"), b"hi")

    def test_grpc_unknown_authority_is_unimplemented(self):
        """No route: picket answers 404, which gRPC maps to UNIMPLEMENTED (12)."""
        ch = grpc_channel(self.a_port, authority="nowhere")
        self.addCleanup(ch.close)
        with self.assertRaises(grpc.RpcError) as cm:
            grpc_app.unary(ch, b"x")
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED)

    # ---------------------------------------------------------------- HTTP

    def test_intruder_curl_403(self):
        for http in ("2", "1.1"):
            r = self.curl(self.c_port, "/headers", http=http)
            self.assertEqual(r.exit, 0, r)
            self.assertEqual(r.status, 403, "%s %r" % (http, r))
        # B's audit trail names the intruder
        audit = pt.read_jsonl(os.path.join(self.tmp, "b-audit.jsonl"))
        self.assertTrue(any(INTRUDER_ID in str(rec) for rec in audit),
                        "B's audit log mentions %s" % INTRUDER_ID)

    def _check_headers_json(self, r, http):
        self.assertEqual(r.exit, 0, r)
        self.assertEqual(r.status, 200, "%s %r" % (http, r))
        self.assertEqual(r.header("x-upstream-name"), "orders-app")
        j = r.json()
        self.assertEqual(j["path"], "/headers")
        xfcc = j["headers"].get("x-forwarded-client-cert")
        self.assertEqual((xfcc or "").lower(), self.xfcc_for("frontend", FRONTEND_ID).lower(),
                         "exactly B's XFCC naming A: %r" % (j["headers"],))
        self.assertEqual(j["headers"].get("x-forwarded-proto"), "https")
        return j

    def test_http11_from_app(self):
        r = self.curl(self.a_port, "/headers", http="1.1",
                      headers=("x-forwarded-client-cert: URI=spiffe://example.org/forged",
                               "x-picket-identity: forged"))
        self.assertEqual(r.http_version, "1.1", r)
        j = self._check_headers_json(r, "1.1")
        self.assertNotIn("x-picket-identity", j["headers"])

    def test_h2c_prior_knowledge_from_app(self):
        r = self.curl(self.a_port, "/headers", http="2",
                      headers=("x-forwarded-client-cert: URI=spiffe://example.org/forged",))
        self.assertEqual(r.http_version, "2", r)
        self._check_headers_json(r, "2")

    def test_authority_port_ignored_and_case_insensitive(self):
        for host in ("orders:8080", "ORDERS"):
            for http in ("2", "1.1"):
                r = self.curl(self.a_port, "/", host=host, http=http)
                self.assertEqual((r.exit, r.status, r.body), (0, 200, b"hello from upstream\n"),
                                 "%s %s %r" % (host, http, r))

    def test_request_id_kept_across_mesh(self):
        r = self.curl(self.a_port, "/headers", headers=("x-request-id: mesh-req-42",))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["headers"].get("x-request-id"), "mesh-req-42")

    def test_unknown_authority_404(self):
        for http in ("2", "1.1"):
            r = self.curl(self.a_port, "/", host="nowhere.example", http=http)
            self.assertEqual(r.exit, 0, r)
            self.assertEqual(r.status, 404, "%s %r" % (http, r))
            self.assertIn(b"no route for this authority", r.body)

    def test_server_id_mismatch_502(self):
        before = pt.metric(self.a_admin, "picket_upstream_failures_total", 0, reason="server_id_mismatch")
        since = len(self.A.stderr())
        for http in ("2", "1.1"):
            r = self.curl(self.a_port, "/headers", host="wrong-id", http=http)
            self.assertEqual(r.exit, 0, r)
            self.assertEqual(r.status, 502, "%s %r" % (http, r))
        after = pt.metric(self.a_admin, "picket_upstream_failures_total", 0, reason="server_id_mismatch")
        self.assertGreaterEqual(after - before, 1, "picket_upstream_failures_total{reason=server_id_mismatch}")
        ev = pt.wait_log_event(self.A, "upstream_failed", since=since,
                               pred=lambda o: o.get("reason") == "server_id_mismatch")
        self.assertIsNotNone(ev, "upstream_failed event with reason server_id_mismatch: %s"
                             % self.A.stderr()[since:][-2000:])

    def test_foreign_ca_502_untrusted_chain(self):
        before = pt.metric(self.a_admin, "picket_upstream_failures_total", 0, reason="untrusted_chain")
        seen_before = self.foreign.requests_seen
        since = len(self.A.stderr())
        r = self.curl(self.a_port, "/headers", host="foreign")
        self.assertEqual(r.exit, 0, r)
        self.assertEqual(r.status, 502, r)
        after = pt.metric(self.a_admin, "picket_upstream_failures_total", 0, reason="untrusted_chain")
        self.assertGreaterEqual(after - before, 1, "picket_upstream_failures_total{reason=untrusted_chain}")
        ev = pt.wait_log_event(self.A, "upstream_failed", since=since,
                               pred=lambda o: o.get("reason") == "untrusted_chain")
        self.assertIsNotNone(ev, self.A.stderr()[since:][-2000:])
        self.assertGreaterEqual(self.foreign.accepted, 1, "picket did connect to the foreign server")
        # every connection the server took has ended (picket gave up on it): nothing more
        # can arrive on them
        deadline = time.monotonic() + 60
        while self.foreign.finished < self.foreign.accepted and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(self.foreign.finished, self.foreign.accepted, "a connection stays open")
        self.assertEqual(self.foreign.requests_seen, seen_before,
                         "no application data may reach a server that failed verification")

    def test_upstream_down_502_refused(self):
        # 502 on the refused connect itself (reason connect_refused), not after a timeout
        for http in ("2", "1.1"):
            since = len(self.A.stderr())
            r = self.curl(self.a_port, "/", host="down", http=http, timeout=60)
            self.assertEqual(r.exit, 0, r)
            self.assertEqual(r.status, 502, "%s %r" % (http, r))
            ev = pt.wait_log_event(self.A, "upstream_failed", since=since, timeout=30)
            self.assertEqual((ev or {}).get("reason"), "connect_refused", ev)

    def test_upstream_down_reason_connect_refused(self):
        """proxy/README.md "Refusals": a refused connection is `connect_refused`, also through an
        mTLS route (not `tls_error`), in the log and in the metric."""
        since = len(self.A.stderr())
        before = pt.metric(self.a_admin, "picket_upstream_failures_total", 0, reason="connect_refused")
        r = self.curl(self.a_port, "/", host="down", timeout=60)
        self.assertEqual(r.status, 502, r)
        ev = pt.wait_log_event(self.A, "upstream_failed", since=since)
        self.assertIsNotNone(ev)
        self.assertEqual(ev.get("reason"), "connect_refused", ev)
        after = pt.metric(self.a_admin, "picket_upstream_failures_total", 0, reason="connect_refused")
        self.assertGreaterEqual(after - before, 1)

    def test_large_download_50mib(self):
        n = 50 * 1024 * 1024
        want = upmod.pattern_sha256(n)
        for http in ("2", "1.1"):
            out = os.path.join(self.tmp, "big-%s" % http)
            r = self.curl(self.a_port, "/bytes/%d" % n, http=http, out_path=out, timeout=40)
            self.assertEqual((r.exit, r.status), (0, 200), "%s %r" % (http, r))
            h = hashlib.sha256()
            size = 0
            with open(out, "rb") as f:
                while True:
                    c = f.read(1 << 20)
                    if not c:
                        break
                    size += len(c)
                    h.update(c)
            os.unlink(out)
            self.assertEqual(size, n, http)
            self.assertEqual(h.hexdigest(), want, http)

    def test_upload_through_mesh(self):
        n = 5 * 1024 * 1024 + 7
        data = os.urandom(n)
        path = os.path.join(self.tmp, "up.bin")
        with open(path, "wb") as f:
            f.write(data)
        for http in ("2", "1.1"):
            r = self.curl(self.a_port, "/upload", http=http, method="POST", data_path=path)
            self.assertEqual((r.exit, r.status), (0, 200), "%s %r" % (http, r))
            j = r.json()
            self.assertEqual(j["len"], n)
            self.assertEqual(j["sha256"], hashlib.sha256(data).hexdigest())

    def test_upstream_status_relayed(self):
        for code in (201, 404, 503):
            r = self.curl(self.a_port, "/status/%d" % code)
            self.assertEqual(r.status, code, r)

    def test_response_trailers_h2c(self):
        c = H2CClient(self.a_port)
        self.addCleanup(c.close)
        st, hdrs, body, trailers, reset = c.get("/trailers")
        self.assertEqual(st, 200, (hdrs, body))
        self.assertFalse(reset)
        self.assertEqual(body, b"body before trailers\n")
        self.assertIn(("x-checksum", "abc"), trailers)
        # several requests on the same app connection
        st2, _, body2, _, _ = c.get("/")
        self.assertEqual((st2, body2), (200, b"hello from upstream\n"))
        st3, _, body3, _, _ = c.get("/", authority="nowhere")
        self.assertEqual(st3, 404)

    def test_b_refuses_direct_plaintext_and_unknown_ca(self):
        """Sanity of the setup: B only takes mTLS, and only SVIDs of its trust domain."""
        ok, info = pt.tls_probe(self.b_port, self.pki, cert="frontend")
        self.assertTrue(ok, info)
        ok, info = pt.tls_probe(self.b_port, self.pki, cert="evil")
        self.assertFalse(ok, info)
        ok, info = pt.tls_probe(self.b_port, self.pki, cert=None)
        self.assertFalse(ok, info)

    def test_connections_to_b_are_reused(self):
        """A keeps multiplexed mTLS connections to B: ten app requests (each on a new
        app connection, h2c and HTTP/1.1) cost at most one handshake per A worker."""
        def handshakes():
            v = pt.metric(self.b_admin, "picket_handshakes_total", None, result="ok")
            self.assertIsNotNone(v, "picket_handshakes_total{result=\"ok\"} on B")
            return v
        for _ in range(2):  # warm both of A's workers' pools
            self.curl(self.a_port, "/")
        before = handshakes()
        for i in range(10):
            r = self.curl(self.a_port, "/", http="2" if i % 2 else "1.1")
            self.assertEqual(r.status, 200, r)
        self.assertLessEqual(handshakes() - before, 2, "mTLS handshakes A -> B for 10 requests")


class MeshRestart(pt.TestCase):
    """B goes away and comes back on the same port: A answers 502 while it is down and
    uses the new B (new connection, new handshake) once it is back."""

    def test_b_restart(self):
        for leaf, uri, dns, ips in (("frontend", FRONTEND_ID, [], []),
                                    ("orders", ORDERS_ID, ["localhost"], ["127.0.0.1"])):
            if not os.path.exists(self.pki.cert(leaf)):
                self.pki.issue(leaf, "ca", uri, dns, ips)
        up = self.upstream("h2c", name="orders-app")
        b_port, b_admin, a_port, a_admin = (pt.free_port() for _ in range(4))
        b_conf = picket_config(self.pki, "b", "orders", [{
            "name": "inbound", "kind": "inbound", "bind": "127.0.0.1:%d" % b_port,
            "upstream": "h2c://127.0.0.1:%d" % up}], b_admin, self.tmp)
        a_conf = picket_config(self.pki, "a", "frontend", [{
            "name": "outbound", "kind": "outbound", "bind": "127.0.0.1:%d" % a_port,
            "routes": [{"authority": "orders", "upstream": "127.0.0.1:%d" % b_port,
                        "server_id": ORDERS_ID}]}], a_admin, self.tmp)
        b1 = pt.Picket(self.tmp, b_conf, admin_port=b_admin, pki=self.pki, name="picket-b")
        self.addCleanup(b1.stop_and_check)  # exit 0 on SIGTERM, no hang, no sanitizer report
        b1.start()
        self.picket(a_conf, admin_port=a_admin)
        self.assertTrue(pt.wait_port(a_port, 10))

        def get(http="2"):
            return app_curl(a_port, "/", http=http, workdir=self.tmp, timeout=60)

        for http in ("2", "1.1", "2", "1.1"):
            self.assertEqual(get(http).status, 200)
        self.assertEqual(b1.stop_and_check(), 0, "B drains and exits 0")
        for http in ("2", "1.1"):
            r = get(http)
            self.assertEqual(r.status, 502, "B down: %r" % r)
        ch = grpc_channel(a_port)
        self.addCleanup(ch.close)
        with self.assertRaises(grpc.RpcError) as cm:
            grpc_app.unary(ch, b"x")
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE, "502 -> UNAVAILABLE")
        b2 = pt.Picket(self.tmp, b_conf, admin_port=b_admin, pki=self.pki, name="picket-b")
        self.addCleanup(b2.stop_and_check)  # exit 0 on SIGTERM, no hang, no sanitizer report
        b2.start()
        for http in ("2", "1.1", "2", "1.1"):
            r = get(http)
            self.assertEqual((r.status, r.body), (200, b"hello from upstream\n"), "B is back: %r" % r)


if __name__ == "__main__":
    pt.main(timeout=170)
