"""Hardening, second round (issue 20), on the data path: connections that outlive
their peer's identity (inbound and outbound), hostile upstreams (header bombs, status
codes outside 100..599), and upstream names resolved without blocking, with TTLs,
negative caching and the last good address kept. README "Security".

    /usr/bin/python3 tests/integration/test_hardening2.py [-k PATTERN]
"""
import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import picket_test as pt  # noqa: E402

sys.path.insert(0, os.path.join(pt.REPO, "tests", "hardening"))
import attacks as A  # noqa: E402


def wait_until(fn, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(step)


# ----------------------------------------------------------------------------------
# hostile upstreams (in this process, 127.0.0.1)

class RawServer:
    """A TCP server on 127.0.0.1 that hands each connection to `handler(sock)` in a
    thread; stopped (and its connections closed) by stop()."""

    def __init__(self, handler, host="127.0.0.1"):
        self.handler = handler
        self.srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind((host, 0))
        self.srv.listen(64)
        self.port = self.srv.getsockname()[1]
        self.conns = []
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._run, args=(c,), daemon=True).start()

    def _run(self, c):
        try:
            self.handler(c)
        except OSError:
            pass

    def stop(self):
        self.stopped = True
        self.srv.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


def read_h1_head(c):
    """The bytes up to a blank line and any read after it, or None if the peer closed
    first."""
    head, rest = pt.recv_head(c)
    return None if head is None else head + b"\r\n\r\n" + rest


def read_h1_response(c):
    """One whole HTTP/1.1 response with a content-length body: (head, body)."""
    buf = read_h1_head(c)
    if buf is None:
        return None, None
    head, _, body = buf.partition(b"\r\n\r\n")
    n = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            n = int(v)
    while len(body) < n:
        d = c.recv(65536)
        if not d:
            break
        body += d
    return head, body


def h1_answer(head_bytes, body=b"ok\n"):
    """An HTTP/1.1 app that answers every request with head_bytes + body."""
    def handler(c):
        while read_h1_head(c) is not None:
            c.sendall(head_bytes + body)
    return handler


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def h2_frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes((ftype, flags)) + struct.pack(">I", sid) + payload


def h2c_answer(blocks, record=None):
    """An h2c app: answers each request stream with the HEADERS (+ CONTINUATION) frames
    of `blocks(sid)` (a list of (type, flags, payload)). Reads frames only to learn
    stream ids, and, with `record` (a list), to append each request's HPACK block (a
    HEADERS frame with END_HEADERS; all connections, in arrival order)."""
    def handler(c):
        buf = b""
        while len(buf) < len(H2_PREFACE):
            d = c.recv(65536)
            if not d:
                return
            buf += d
        buf = buf[len(H2_PREFACE):]
        c.sendall(h2_frame(A.SETTINGS, 0, 0))
        while True:
            while len(buf) < 9:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
            ln = int.from_bytes(buf[:3], "big")
            while len(buf) < 9 + ln:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
            ftype, flags, payload = buf[3], buf[4], buf[9:9 + ln]
            sid = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            buf = buf[9 + ln:]
            if ftype == A.SETTINGS and not flags & 1:
                c.sendall(h2_frame(A.SETTINGS, 1, 0))
            elif ftype == A.HEADERS and flags & A.END_HEADERS:
                if record is not None:
                    if flags & A.PADDED:
                        payload = payload[1:len(payload) - payload[0]]
                    if flags & A.PRIORITY_FLAG:
                        payload = payload[5:]
                    record.append(payload)
                c.sendall(b"".join(h2_frame(t, f, sid, p) for t, f, p in blocks(sid)))
    return handler


def bomb_blocks(sid, refs=65536, entry=4000):
    """:status 200, one 4000-byte field added to the HPACK table, then `refs` one-byte
    references to it: 64 KiB on the wire, ~260 MB decoded."""
    block = b"\x88" + A.hpack_literal("x-bomb", "b" * entry, index=True) + b"\xbe" * refs
    out, first = [], True
    for i in range(0, len(block), 16000):
        last = i + 16000 >= len(block)
        flags = A.END_HEADERS if last else 0
        out.append((A.HEADERS if first else A.CONTINUATION, flags, block[i:i + 16000]))
        first = False
    out.append((A.DATA, A.END_STREAM, b""))
    return out


def status_blocks(status):
    def blocks(sid):
        # a literal :status (HPACK index 8 name, not indexed) with any 3 digits
        return [(A.HEADERS, A.END_HEADERS | A.END_STREAM, b"\x08" + A.hpack_str(status))]
    return blocks


def hpack_kinds(block):
    """How each field of an HPACK block is represented, in order (table size updates
    skipped): ("indexed", index), or (kind, name index or 0 for a literal name) with
    kind "incremental", "without" or "never" (RFC 7541 6.1-6.2)."""
    def integer(i, bits):
        v = block[i] & ((1 << bits) - 1)
        i += 1
        if v == (1 << bits) - 1:
            m = 0
            while True:
                b = block[i]
                i += 1
                v += (b & 0x7F) << m
                m += 7
                if not b & 0x80:
                    break
        return v, i

    def skip_string(i):
        n, i = integer(i, 7)
        return i + n

    out, i = [], 0
    while i < len(block):
        b = block[i]
        if b & 0x80:
            idx, i = integer(i, 7)
            out.append(("indexed", idx))
            continue
        if b & 0xE0 == 0x20:
            _, i = integer(i, 5)
            continue
        kind, bits = (("incremental", 6) if b & 0xC0 == 0x40 else
                      ("never", 4) if b & 0xF0 == 0x10 else ("without", 4))
        idx, i = integer(i, bits)
        if idx == 0:
            i = skip_string(i)
        i = skip_string(i)
        out.append((kind, idx))
    return out


# ----------------------------------------------------------------------------------
# a DNS server for the tests (UDP, 127.0.0.1)

class FakeDNS:
    """Answers A queries for `name` with the address in self.addr (TTL self.ttl),
    NXDOMAIN for other names; with self.silent, does not answer at all. Counts queries
    per name."""

    def __init__(self, name, addr, ttl=1):
        self.name = name.rstrip(".").lower()
        self.addr, self.ttl, self.silent = addr, ttl, False
        self.queries = {}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while not self.stopped:
            try:
                q, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            try:
                self._answer(q, peer)
            except (IndexError, struct.error, OSError):
                pass

    def _answer(self, q, peer):
        tid, _flags, qd = struct.unpack(">HHH", q[:6])
        pos, labels = 12, []
        while q[pos]:
            labels.append(q[pos + 1:pos + 1 + q[pos]].decode().lower())
            pos += 1 + q[pos]
        qname = ".".join(labels)
        qtype = struct.unpack(">H", q[pos + 1:pos + 3])[0]
        question = q[12:pos + 5]
        self.queries[qname] = self.queries.get(qname, 0) + 1
        if self.silent:
            return
        if qname != self.name:
            self.sock.sendto(struct.pack(">HHHHHH", tid, 0x8183, qd, 0, 0, 0) + question, peer)
            return
        if qtype != 1:  # AAAA and others: no data
            self.sock.sendto(struct.pack(">HHHHHH", tid, 0x8180, qd, 0, 0, 0) + question, peer)
            return
        rr = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, self.ttl, 4) + socket.inet_aton(self.addr)
        self.sock.sendto(struct.pack(">HHHHHH", tid, 0x8180, qd, 1, 0, 0) + question + rr, peer)

    def stop(self):
        self.stopped = True
        self.sock.close()


class Hardening2(pt.TestCase):

    def start(self, upstream, limits=None, extra=None, routes=None, identity=None):
        conf, cfg, port, admin = self.config(upstream, limits=limits, routes=routes,
                                             identity=identity)
        if extra:
            cfg.update(extra)
            pt.write_config(conf, cfg)
        self.port, self.admin = port, admin
        self.proc = self.picket(conf, inbound_port=port, admin_port=admin)
        self.target = A.Target("127.0.0.1", port, self.pki.cert("client"), self.pki.key("client"),
                               self.pki.ca)
        return self.proc

    def access(self):
        path = os.path.join(self.tmp, "access.jsonl")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [json.loads(x) for x in f if x.strip()]

    # -- item 1: identities that end ----------------------------------------------

    def test_connections_end_with_the_peer_certificate(self):
        """A client whose SVID expires during its connections: both the HTTP/1.1 and the
        HTTP/2 connection are ended (h2 GOAWAY NO_ERROR, h1 closed), no new request is
        served on them, the end is logged and counted; a fresh connection with a valid
        certificate is fine."""
        self.pki.issue("brief", "ca", pt.CLIENT_ID, lifetime=6)
        up = self.upstream("h2c")
        self.start(pt.upstream_url("h2c", up), limits={"drain_timeout": "5s"})
        brief = A.Target("127.0.0.1", self.port, self.pki.cert("brief"), self.pki.key("brief"),
                         self.pki.ca)
        c2 = A.H2Raw(brief)
        self.addCleanup(c2.close)
        self.assertEqual(c2.get(1, "/"), 200)
        s1 = brief.tls(("http/1.1",), timeout=10.0)
        self.addCleanup(s1.close)
        s1.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        head, body = read_h1_response(s1)
        self.assertIn(b" 200 ", head)
        ev = pt.wait_log_event(self.proc, "connection_identity_ended", timeout=30.0,
                               pred=lambda o: o.get("reason") == "peer_cert_expired")
        self.assertIsNotNone(ev, self.proc.stderr()[-2000:])
        c2.run(10.0, until=lambda: c2.ended_by_server)
        self.assertEqual(c2.goaway and c2.goaway[0], "NO_ERROR", c2.describe())
        # a stream opened after the GOAWAY is not served
        self.assertNotEqual(c2.get(3, "/", timeout=3.0), 200)
        # the idle HTTP/1.1 connection was closed
        s1.settimeout(10.0)
        try:
            tail = s1.recv(65536)
        except (OSError, ssl.SSLError):
            tail = b""
        self.assertEqual(tail, b"", "HTTP/1.1 connection still open after the SVID expired")
        self.assertGreaterEqual(pt.metric(self.admin, "picket_connections_closed_total",
                                          default=0, reason="peer_cert_expired"), 2)
        self.assertEqual(A.h2_get(self.target, "/", timeout=5.0), 200)

    def test_outbound_connection_ends_with_the_server_certificate(self):
        """Outbound: a remote sidecar whose SVID expires while our pooled connection to it
        is open. At that moment the connection takes no new stream and goes
        (upstream_identity_ended), with no request driving it; once the remote has
        renewed its SVID, the next call works on a fresh connection verified again."""
        remote_id = "spiffe://example.org/ns/default/sa/orders"
        self.pki.issue("remote", "ca", remote_id, lifetime=8)
        app = self.upstream("h2c")
        b_port, b_admin = pt.free_port(), pt.free_port()
        b_conf = os.path.join(self.tmp, "b.json")
        b_cfg = pt.make_config(self.pki, b_port, pt.upstream_url("h2c", app), admin_port=b_admin,
                               workdir=self.tmp, node_id="test/remote", identity={
                                   "cert": self.pki.cert("remote"), "key": self.pki.key("remote"),
                                   "trust_bundles": {pt.TRUST_DOMAIN: self.pki.ca},
                                   "reload_interval": "1s"})
        b_cfg["log"] = {"level": "info", "access": os.path.join(self.tmp, "b-access.jsonl")}
        pt.write_config(b_conf, b_cfg)
        self.picket(b_conf, inbound_port=b_port, admin_port=b_admin)
        out_port = pt.free_port()
        self.start(pt.upstream_url("h2c", app), extra={"listeners": [
            {"name": "inbound", "kind": "inbound", "bind": "127.0.0.1:%d" % pt.free_port(),
             "upstream": pt.upstream_url("h2c", app)},
            {"name": "outbound", "kind": "outbound", "bind": "127.0.0.1:%d" % out_port,
             "routes": [{"authority": "orders", "upstream": "127.0.0.1:%d" % b_port,
                         "server_id": remote_id}]}]})
        self.assertTrue(pt.wait_port(out_port, 10))

        def call():
            return subprocess.run(["curl", "-sS", "--noproxy", "*", "--http2-prior-knowledge",
                                   "-o", os.devnull, "-w", "%{http_code}", "-H", "Host: orders",
                                   "http://127.0.0.1:%d/" % out_port],
                                  capture_output=True, text=True, timeout=20).stdout.strip()

        self.assertEqual(call(), "200")
        ev = pt.wait_log_event(self.proc, "upstream_identity_ended", timeout=30.0)
        self.assertIsNotNone(ev, self.proc.stderr()[-2000:])
        self.assertEqual(ev.get("reason"), "peer_cert_expired")
        # the remote renews (as SPIRE would) and reloads it; calls work again
        self.pki.issue("remote", "ca", remote_id, lifetime=3600)
        self.assertTrue(wait_until(lambda: call() == "200", 30.0, step=0.5),
                        "no call worked after the remote renewed its SVID")

    def test_trust_change_ends_connections_it_no_longer_covers(self):
        """The trust bundle is replaced by one of another CA (SIGHUP): an open connection
        whose client chain no longer verifies is ended (reason peer_untrusted)."""
        bundle = os.path.join(self.tmp, "bundle.pem")
        with open(self.pki.ca) as f, open(bundle, "w") as g:
            g.write(f.read())
        up = self.upstream("h2c")
        ident = {"cert": self.pki.cert("server"), "key": self.pki.key("server"),
                 "trust_bundles": {pt.TRUST_DOMAIN: bundle}}
        self.start(pt.upstream_url("h2c", up), identity=ident, limits={"drain_timeout": "5s"})
        c = A.H2Raw(self.target)
        self.addCleanup(c.close)
        self.assertEqual(c.get(1, "/"), 200)
        with open(os.path.join(self.pki.dir, "otherca.pem")) as f, open(bundle + ".new", "w") as g:
            g.write(f.read())
        os.replace(bundle + ".new", bundle)
        self.proc.signal(__import__("signal").SIGHUP)
        ev = pt.wait_log_event(self.proc, "connection_identity_ended", timeout=30.0,
                               pred=lambda o: o.get("reason") == "peer_untrusted")
        self.assertIsNotNone(ev, self.proc.stderr()[-2000:])
        c.run(10.0, until=lambda: c.ended_by_server)
        self.assertTrue(c.ended_by_server, c.describe())

    # -- items 2 and 3: hostile upstreams -----------------------------------------------

    def test_upstream_header_bomb_is_refused(self):
        """An h2c app answers with a 64 KiB block of HPACK references to one 4000-byte
        field (~260 MB decoded): the stream ends with 502 upstream_headers_too_large at
        once, picket's peak memory does not follow the decoded size, and the next
        request to a sane app on the same picket is served. An HTTP/1.1 app sending
        300 KB of header fields: the same."""
        bomb = RawServer(h2c_answer(bomb_blocks))
        fat = RawServer(h1_answer(b"HTTP/1.1 200 OK\r\n" +
                                  b"".join(b"x-fat-%d: %s\r\n" % (i, b"f" * 3000) for i in range(100)) +
                                  b"content-length: 3\r\n\r\n"))
        self.addCleanup(bomb.stop)
        self.addCleanup(fat.stop)
        up = self.upstream("h2c")
        self.start(pt.upstream_url("h2c", up), routes=[
            {"path_prefix": "/bomb", "upstream": "h2c://127.0.0.1:%d" % bomb.port},
            {"path_prefix": "/fat", "upstream": "http://127.0.0.1:%d" % fat.port}])
        hwm0 = self.proc.vm_status("VmHWM")
        for path in ("/bomb", "/fat"):
            for http in ("2", "1.1"):
                r = self.curl(self.port, path, http=http)
                self.assertEqual(r.status, 502, "%s over %s: %r" % (path, http, r))
        reasons = [a.get("reason") for a in self.access() if a["path"] in ("/bomb", "/fat")]
        self.assertEqual(reasons, ["upstream_headers_too_large"] * 4, reasons)
        self.assertLess(self.proc.vm_status("VmHWM") - hwm0, 64 * 1024,
                        "peak memory followed the decoded headers (KiB)")
        self.assertEqual(self.curl(self.port, "/").status, 200)

    def test_upstream_status_outside_100_599_is_502(self):
        """An app answering 799 (HTTP/1.1 and h2c) or 099: 502 bad_upstream_response, and
        the access log records the 502 that was sent, never 799 or a 499."""
        h1 = RawServer(h1_answer(b"HTTP/1.1 799 Weird\r\ncontent-length: 3\r\n\r\n"))
        h1b = RawServer(h1_answer(b"HTTP/1.1 099 Weird\r\ncontent-length: 3\r\n\r\n"))
        h2 = RawServer(h2c_answer(status_blocks("799")))
        for s in (h1, h1b, h2):
            self.addCleanup(s.stop)
        up = self.upstream("h2c")
        self.start(pt.upstream_url("h2c", up), routes=[
            {"path_prefix": "/h1", "upstream": "http://127.0.0.1:%d" % h1.port},
            {"path_prefix": "/h1b", "upstream": "http://127.0.0.1:%d" % h1b.port},
            {"path_prefix": "/h2", "upstream": "h2c://127.0.0.1:%d" % h2.port}])
        for path in ("/h1", "/h1b", "/h2"):
            for http in ("2", "1.1"):
                r = self.curl(self.port, path, http=http)
                self.assertEqual(r.status, 502, "%s over %s: %r" % (path, http, r))
        recs = [a for a in self.access() if a["path"] in ("/h1", "/h1b", "/h2")]
        self.assertEqual(len(recs), 6)
        for a in recs:
            self.assertEqual((a["status"], a.get("reason")), (502, "bad_upstream_response"), a)
        self.assertEqual(pt.metric(self.admin, "picket_requests_total", default=0, status="799"), 0)
        self.assertEqual(pt.metric(self.admin, "picket_requests_total", default=0, status="499"), 0)

    def test_request_id_hpack_to_an_h2c_app(self):
        """x-request-id is new on every request, so picket sends it to an h2c app never
        indexed (it would only push other fields out of the app's HPACK table), but not
        with a literal name each time: the first request on the connection, and one in
        256 after it, send it with incremental indexing, and the others name that entry
        by its index. Every value the app decodes is the ID picket logged for that
        request, and none repeats."""
        pt.require_module("hpack", "python3-hpack")
        import hpack
        blocks = []
        app = RawServer(h2c_answer(status_blocks("200"), record=blocks))
        self.addCleanup(app.stop)
        up = self.upstream("h2c")
        self.start(pt.upstream_url("h2c", up), routes=[
            {"path_prefix": "/rid", "upstream": "h2c://127.0.0.1:%d" % app.port}])
        c = pt.H2Client(self.port, self.pki)
        self.addCleanup(c.close)
        n = 300
        for i in range(n):
            status = c.request("/rid/%d" % i)[0]
            self.assertEqual(status, 200, i)
        self.assertEqual(len(app.conns), 1, "one connection to the app")
        self.assertEqual(len(blocks), n)
        dec = hpack.Decoder()
        ids, kinds = [], []
        for block in blocks:
            fields = dec.decode(block, raw=True)
            reps = hpack_kinds(block)
            self.assertEqual(len(reps), len(fields))
            rid = [(f, r) for f, r in zip(fields, reps) if f[0] == b"x-request-id"]
            self.assertEqual(len(rid), 1, fields)
            ids.append(rid[0][0][1].decode())
            kinds.append(rid[0][1])
        for i, (kind, idx) in enumerate(kinds):
            if i % 256 == 0:
                self.assertEqual(kind, "incremental", "request %d: %r" % (i, kinds[i]))
            else:
                self.assertEqual(kind, "never", "request %d: %r" % (i, kinds[i]))
                self.assertGreater(idx, 61, "request %d: the name not from the app's table" % i)
        self.assertEqual(len(set(ids)), n, "an x-request-id repeated")
        logged = {a["path"]: a["request_id"] for a in self.access() if a["path"].startswith("/rid/")}
        self.assertEqual([logged.get("/rid/%d" % i) for i in range(n)], ids)

    # -- item 8: names --------------------------------------------------------------------

    def test_upstream_names_follow_dns(self):
        """An upstream by name: resolved through the configured nameserver without
        blocking; when the record changes, picket follows it after its TTL; when the
        nameserver stops answering, the last good address keeps serving; a name that
        does not exist fails at once with 503 and is not asked again within
        dns.negative_ttl."""
        dns = FakeDNS("app.test", "127.0.0.1", ttl=1)
        self.addCleanup(dns.stop)
        port = pt.free_port()
        a = pt.start_upstream(self.tmp, "h1", port=port, name="first")[0]
        self.addCleanup(a.stop)
        second = RawServer(h1_answer(b"HTTP/1.1 200 OK\r\nx-upstream-name: second\r\n"
                                     b"content-length: 3\r\n\r\n"), host="127.0.0.2")
        self.addCleanup(second.stop)
        resolv = os.path.join(self.tmp, "resolv.conf")
        with open(resolv, "w") as f:
            f.write("nameserver 127.0.0.1:%d\n" % dns.port)
        hosts = os.path.join(self.tmp, "hosts")
        with open(hosts, "w") as f:
            f.write("127.0.0.1 localhost\n")
        self.start("http://app.test:%d" % port, routes=[
            {"path_prefix": "/second", "upstream": "http://app.test:%d" % second.port},
            {"path_prefix": "/nowhere", "upstream": "http://missing.test:%d" % port}],
            extra={"workers": 1,  # lookups are per worker: one, so queries can be counted
                   "dns": {"resolv_conf": resolv, "hosts": hosts, "min_ttl": "0s",
                           "max_ttl": "30s", "negative_ttl": "20s", "timeout": "300ms"}})
        r = self.curl(self.port, "/")
        self.assertEqual((r.status, r.header("x-upstream-name")), (200, "first"), r)
        self.assertGreaterEqual(dns.queries.get("app.test", 0), 1)
        # the record moves: followed once its TTL (1 s) has passed
        dns.addr = "127.0.0.2"
        ok = wait_until(lambda: self.curl(self.port, "/second").header("x-upstream-name") == "second",
                        20.0, step=0.3)
        self.assertTrue(ok, "picket did not follow the new address")
        # the nameserver goes silent: the last good address keeps serving
        dns.silent = True
        second_key = "http://app.test:%d#" % second.port
        failed = lambda: [e for e in pt.log_events(self.proc, "upstream_resolve_failed")
                          if e.get("upstream") == second_key]
        # each request past the TTL asks again in the background; meanwhile it is served
        ok = wait_until(lambda: self.curl(self.port, "/second").status == 200 and failed(),
                        20.0, step=0.3)
        self.assertTrue(ok, "no failed lookup was logged while the nameserver was silent")
        self.assertEqual(failed()[-1].get("msg"), "keeping the last good address")
        for _ in range(3):
            r = self.curl(self.port, "/second")
            self.assertEqual((r.status, r.header("x-upstream-name")), (200, "second"), r)
        dns.silent = False
        # a name that does not exist: 503 at once, asked once per negative_ttl
        r = self.curl(self.port, "/nowhere")
        self.assertEqual(r.status, 503, r)
        n = dns.queries.get("missing.test", 0)
        for _ in range(3):
            self.assertEqual(self.curl(self.port, "/nowhere").status, 503)
        self.assertEqual(dns.queries.get("missing.test", 0), n, "failure not remembered")
        recs = [x for x in self.access() if x["path"] == "/nowhere"]
        self.assertTrue(all(x.get("reason") == "upstream_unresolvable" for x in recs), recs)


if __name__ == "__main__":
    pt.main()
