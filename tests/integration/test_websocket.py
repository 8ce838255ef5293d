#!/usr/bin/python3
"""WebSocket through picket (issue 18, item 1), with real clients and servers:
python3-websockets (client and server) over HTTP/1.1 Upgrade, a python3-h2 client
speaking RFC 8441 extended CONNECT with WebSocket frames (ws_app.py's codec), and
ws_app.py's upstreams (websockets h1 echo, h2c extended-CONNECT echo with and without
SETTINGS_ENABLE_CONNECT_PROTOCOL, a raw server that answers 101 to anything).

    client (websockets h1 / h2 extended CONNECT, SVID)  ->  P inbound (sa/picket)
        -> ws_app --h1 (http://)   | /h2c/...   -> ws_app --h2c (h2c://, advertises)
                                   | /h2cno/... -> ws_app --h2c --no-connect-protocol
                                   | /raw101/...-> ws_app --raw101
                                   | /deadline/ -> ws_app --h1, routes[].timeout 1s
                                   | /eof/...   -> ws_app --h1eof (shows half-closes)
    app (websockets, plain ws://)  ->  A outbound (sa/client)  ->  P  ->  ws_app --h1

Checked: the 101 picket writes (its own Sec-WebSocket-Accept); echo both ways for
h1 and h2 clients, to h1 and h2c upstreams and through the two-sidecar mesh; the
opening request judged by the policy as GET with `upgrade: websocket` and audited
(protocol "websocket"), a deny is a 403 that never reaches the upstream; other
upgrade tokens removed; an h2c upstream without the setting is a 502
(upgrade_unsupported); a 101 to a plain request and a wrong Sec-WebSocket-Accept are
502s; an upstream's refusal reaches the client; a bad h1 upgrade is a 400
(bad_upgrade); `:protocol` on a plain CONNECT is a stream error and the connection
carries on; close from either side; the idle timeout (tunnel_idle); the route
deadline does not cut a tunnel; half-closes passed on both ways (mesh, h2); an
upstream reset cuts the client's side (upstream_reset); a tunnel carries on after
SIGTERM until drain_timeout; the access record (101, upgrade, bytes, duration);
the audit record written while the tunnel is open; browsers' header forms, an
HTTP/1.0 Upgrade ignored; subprotocol and permessage-deflate agreement; 64 MiB echoed
with a checksum in bounded memory, over h1 and over h2.

The h2 client ends its half of a tunnel's stream once the server ended its half (and
after a refusal), as an RFC 8441 client does; test_h2_refusal_is_over_without_client_end
checks that picket does not need that for a refused stream.

    /usr/bin/python3 tests/integration/test_websocket.py [-k NAME]
"""
import asyncio
import hashlib
import json
import os
import socket
import ssl
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import picket_test as pt  # noqa: E402
websockets = pt.require_module("websockets", "python3-websockets")
pt.require_module("h2.connection", "python3-h2")
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402
import h2.exceptions  # noqa: E402
from h2.settings import SettingCodes  # noqa: E402
import ws_app  # noqa: E402
from ws_app import OP_BIN, OP_CLOSE, OP_TEXT, close_payload, encode_frame, parse_close  # noqa: E402

MIB = 1024 * 1024
ASAN_EXTRA = "quarantine_size_mb=4:thread_local_quarantine_size_kb=256"
SAMPLE_KEY = "dGhlIHNhbXBsZSBub25jZQ=="          # RFC 6455 1.3
SAMPLE_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def frame_len(payload_len, masked):
    """Bytes on the wire of one frame with a payload of this length."""
    n = 2 + (4 if masked else 0)
    if payload_len >= 65536:
        n += 8
    elif payload_len >= 126:
        n += 2
    return n + payload_len


# --------------------------------------------------------------------------
# clients

def ws_connect(port, path, *, tls=True, pki=None, host="localhost", **kw):
    """websockets.connect to 127.0.0.1:port: wss with the client SVID (ALPN http/1.1
    only) or plain ws (an app talking to an outbound listener); Host from `host`."""
    kw.setdefault("compression", None)
    kw.setdefault("max_size", None)
    kw.setdefault("ping_interval", None)
    kw.setdefault("open_timeout", 30)
    kw.setdefault("close_timeout", 10)
    if tls:
        ctx = pt.tls_context(pki, "client", alpn=("http/1.1",))
        return websockets.connect("wss://%s:%d%s" % (host, port, path), ssl=ctx,
                                  host="127.0.0.1", port=port, server_hostname="localhost", **kw)
    return websockets.connect("ws://%s:%d%s" % (host, port, path), host="127.0.0.1", port=port, **kw)


def run(coro, timeout=120):
    """Runs a coroutine to its end (bounded: a hang fails instead of blocking)."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def h1_tls(port, pki, cert="client", strict=False):
    """strict: a close_notify told from a bare close (pt.tls_strict)."""
    if strict:
        return pt.tls_strict(port, pki, cert)
    ctx = pt.tls_context(pki, cert, alpn=("http/1.1",))
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30),
                        server_hostname="localhost")
    return s


def read_head(sock, buf=b""):
    """Reads a response head; returns (status, {lower name: value}, rest of the bytes)."""
    got = ws_app.recv_head(sock, buf)
    if got is None:
        raise AssertionError("connection closed (or 1 MiB sent) before a response head")
    lines, rest = got
    status = int(lines[0].split(" ")[1])
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, rest


def read_body(sock, hdrs, rest):
    n = int(hdrs.get("content-length", "0"))
    while len(rest) < n:
        b = sock.recv(65536)
        if not b:
            break
        rest += b
    return rest[:n]


def upgrade_request(path, key=SAMPLE_KEY, extra=b"", host=b"localhost"):
    req = b"GET " + path.encode() + b" HTTP/1.1\r\nHost: " + host + b"\r\nUpgrade: websocket\r\n" \
          b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    if key:
        req += b"Sec-WebSocket-Key: " + key.encode() + b"\r\n"
    return req + extra + b"\r\n"


def read_frames(sock, dec, n, buf=b"", timeout=30):
    """Reads from a socket until `n` frames are decoded; returns them."""
    out = dec.feed(buf) if buf else []
    sock.settimeout(timeout)
    while len(out) < n:
        b = sock.recv(65536)
        if not b:
            raise AssertionError("closed after %d of %d frames: %r" % (
                len(out), n, [(op, pl[:40]) for _, op, pl, _ in out]))
        out += dec.feed(b)
    return out


class H2WS:
    """An HTTP/2 client over mTLS (ALPN h2) for RFC 8441: extended CONNECT streams
    carrying WebSocket frames (masked, as a client must), plain requests beside them."""

    def __init__(self, port, pki, cert="client", validate=True, tls=True):
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock = raw
        self.tls = tls
        if tls:  # tls=False: h2c prior knowledge (to check this client against ws_app --h2c)
            ctx = pt.tls_context(pki, cert, alpn=("h2",))
            self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
            if self.sock.selected_alpn_protocol() != "h2":
                raise AssertionError("ALPN h2 not negotiated")
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=validate))
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())
        self.settings_seen = False
        self.closed = False
        self.goaway = None
        self.st = {}

    def _s(self, sid):
        return self.st.setdefault(sid, {"headers": None, "data": bytearray(), "ended": False,
                                        "reset": None, "frames": [],
                                        "dec": ws_app.FrameDecoder(want_masked=False)})

    def pump(self, timeout=0.2):
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 18)
        except socket.timeout:
            return True
        except (OSError, ssl.SSLError):
            self.closed = True
            return False
        if not data:
            self.closed = True
            return False
        for e in self.conn.receive_data(data):
            if isinstance(e, h2.events.RemoteSettingsChanged):
                self.settings_seen = True
            elif isinstance(e, h2.events.ResponseReceived):
                self._s(e.stream_id)["headers"] = [(k.decode(), v.decode()) for k, v in e.headers]
            elif isinstance(e, h2.events.DataReceived):
                st = self._s(e.stream_id)
                if st.get("sink"):
                    for _, op, payload, _ in st["dec"].feed(e.data):
                        st["sink"](op, payload)
                else:
                    st["data"] += e.data
                    if st["headers"] and dict(st["headers"]).get(":status") == "200" and st.get("ws"):
                        st["frames"] += st["dec"].feed(e.data)
                self.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            elif isinstance(e, h2.events.StreamEnded):
                self._s(e.stream_id)["ended"] = True
            elif isinstance(e, h2.events.StreamReset):
                self._s(e.stream_id)["reset"] = int(e.error_code)
            elif isinstance(e, h2.events.ConnectionTerminated):
                self.goaway = e
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)
        return True

    def wait(self, pred, what, timeout=30):
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError("h2: no %s within %ds" % (what, timeout))
            if not self.pump(0.2) and not pred():
                raise AssertionError("h2: connection closed waiting for %s (goaway %r)"
                                     % (what, self.goaway))

    def connect_protocol(self):
        """SETTINGS_ENABLE_CONNECT_PROTOCOL as the server advertised it."""
        self.wait(lambda: self.settings_seen, "SETTINGS from the server")
        return self.conn.remote_settings.get(SettingCodes.ENABLE_CONNECT_PROTOCOL, 0)

    def open(self, path, headers=(), pseudo=None, authority="localhost", scheme=None):
        """Sends an extended CONNECT (or the given pseudo-header list); returns the
        stream id. The server's SETTINGS are awaited first, as RFC 8441 requires."""
        self.wait(lambda: self.settings_seen, "SETTINGS from the server")
        sid = self.conn.get_next_available_stream_id()
        if pseudo is None:
            pseudo = [(":method", "CONNECT"), (":protocol", "websocket"),
                      (":scheme", scheme or ("https" if self.tls else "http")),
                      (":path", path), (":authority", authority)]
        self.conn.send_headers(sid, pseudo + [("sec-websocket-version", "13")] + list(headers))
        self.sock.sendall(self.conn.data_to_send())
        self._s(sid)["ws"] = True
        return sid

    def response(self, sid, timeout=30, finish=True):
        """The :status of stream sid, or None if it was reset first. A refusal (not
        2xx) is read whole and, with finish, the client then ends its half of the
        stream, as a client whose WebSocket failed does (without: the half stays open)."""
        st = self._s(sid)
        self.wait(lambda: st["headers"] is not None or st["reset"] is not None,
                  "response on stream %d" % sid, timeout)
        if st["headers"] is None:
            return None
        status = int(dict(st["headers"])[":status"])
        if status // 100 != 2 and finish:
            self.wait_end(sid, timeout)
        return status

    def send(self, sid, data, end=False):
        view = memoryview(data)
        while view:
            win = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if win <= 0:
                self.pump(0.2)
                continue
            self.conn.send_data(sid, bytes(view[:win]))
            view = view[win:]
            self.sock.sendall(self.conn.data_to_send())
        if end:
            self.conn.end_stream(sid)
            self.sock.sendall(self.conn.data_to_send())

    def send_ws(self, sid, opcode, payload):
        self.send(sid, encode_frame(opcode, payload, mask=True))

    def frames(self, sid, n, timeout=30):
        """Waits until `n` WebSocket frames came back on sid; returns [(opcode, payload)]."""
        st = self._s(sid)
        self.wait(lambda: len(st["frames"]) >= n, "%d frames on stream %d (have %d)"
                  % (n, sid, len(st["frames"])), timeout)
        return [(op, p) for _, op, p, _ in st["frames"][:n]]

    def wait_end(self, sid, timeout=30, finish=True):
        """Waits until the stream ended (END_STREAM) or was reset; returns None for a
        clean end (END_STREAM, whether or not an RST_STREAM NO_ERROR followed it: RFC
        9113 8.1), else the reset's error code. After a clean end the client ends its own
        half too (finish), as an RFC 8441 client does once the WebSocket is closed: the
        stream, and with it the tunnel, is over only when both halves are."""
        st = self._s(sid)
        self.wait(lambda: st["ended"] or st["reset"] is not None, "end of stream %d" % sid,
                  timeout)
        if st["ended"] and st["reset"] in (None, 0):
            if finish and st["reset"] is None:
                try:
                    self.conn.end_stream(sid)
                    self.sock.sendall(self.conn.data_to_send())
                except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                    pass  # already closed on our side
            return None
        return st["reset"]

    def get(self, path, timeout=30):
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(":method", "GET"), (":scheme", "https"),
                                     (":authority", "localhost"), (":path", path)],
                               end_stream=True)
        self.sock.sendall(self.conn.data_to_send())
        st = self._s(sid)
        st["ws"] = False
        self.wait(lambda: st["ended"] or st["reset"] is not None, "response to GET %s" % path,
                  timeout)
        return (int(dict(st["headers"])[":status"]) if st["headers"] else None), bytes(st["data"])

    def body(self, sid):
        return bytes(self._s(sid)["data"])

    def response_header(self, sid, name):
        for k, v in self._s(sid)["headers"] or ():
            if k == name:
                return v
        return None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# --------------------------------------------------------------------------
# helper servers

def start_ws_app(tmp, mode, *extra):
    port = pt.free_port()
    log = os.path.join(tmp, "ws-%s-%d.jsonl" % (mode, port))
    p = pt.Proc([pt.PYTHON, os.path.join(pt.HERE, "ws_app.py"), "--" + mode, str(port),
                 "--log", log] + list(extra), tmp, "ws-%s-%d" % (mode, port))
    p.port = port
    p.log = log
    return p


def app_records(proc, event=None, path=None):
    out = []
    if not os.path.exists(proc.log):
        return out
    with open(proc.log) as f:
        for ln in f:
            if ln.endswith("\n") and ln.strip():  # (a line still being written waits)
                r = json.loads(ln)
                if (event is None or r["event"] == event) and (path is None or r["path"] == path):
                    out.append(r)
    return out


def wait_app_record(proc, event, path, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        rs = app_records(proc, event, path)
        if rs:
            return rs[0]
        if time.monotonic() > deadline:
            raise AssertionError("%s: no %r record for %s within %ds; log: %r" % (
                proc.name, event, path, timeout, app_records(proc)[-10:]))
        time.sleep(0.03)


def header_values(hdrs, name):
    return [v for k, v in hdrs if k.lower() == name]


def find_record(path, pred=None, timeout=20, what="record"):
    """Waits for a JSON-lines record in file `path` for which pred(rec) holds."""
    deadline = time.monotonic() + timeout
    while True:
        recs = pt.read_jsonl(path, timeout=0, min_lines=0) if os.path.exists(path) else []
        for r in recs:
            if pred is None or pred(r):
                return r
        if time.monotonic() > deadline:
            raise AssertionError("no matching %s in %s within %ds; last: %r" % (
                what, path, timeout, recs[-5:]))
        time.sleep(0.05)


# --------------------------------------------------------------------------
# the shared set-up: picket P (inbound) and A (outbound), the upstreams

class WebSocket(pt.SharedFleet):
    TMP_PREFIX = "picket-ws-"

    @classmethod
    def _start(cls):
        pki, tmp = cls.pki, cls.tmp
        cls.h1 = start_ws_app(tmp, "h1")
        cls.h2c = start_ws_app(tmp, "h2c")
        cls.h2cno = start_ws_app(tmp, "h2c", "--no-connect-protocol")
        cls.raw101 = start_ws_app(tmp, "raw101")
        cls.h1eof = start_ws_app(tmp, "h1eof")
        cls.procs += [cls.h1, cls.h2c, cls.h2cno, cls.raw101, cls.h1eof]
        env = {"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "detect_leaks=1") + ":" + ASAN_EXTRA}

        pol = pt.write_policy(os.path.join(tmp, "policy.json"), [
            {"id": "client-tests", "action": "allow", "from": [pt.CLIENT_ID],
             "paths": ["/t/**", "/h2c/**", "/h2cno/**", "/raw101/**", "/deadline/**", "/eof/**"]},
            {"id": "ws-only", "action": "allow", "from": [pt.CLIENT_ID], "paths": ["/wsonly/**"],
             "headers": {"upgrade": ["websocket"]}},
            {"id": "no-denied", "action": "deny", "paths": ["/t/denied/**"]},
        ], default="deny")
        cls.p_port, cls.p_admin = pt.free_port(), pt.free_port()
        cls.p_access = os.path.join(tmp, "p-access.jsonl")
        cls.p_audit = os.path.join(tmp, "p-audit.jsonl")
        h1_url = "http://127.0.0.1:%d" % cls.h1.port
        p_cfg = {
            "node_id": "ws/p/picket", "workers": 2,
            "identity": {"cert": pki.cert("server"), "key": pki.key("server"),
                         "trust_bundles": {pt.TRUST_DOMAIN: pki.ca}},
            "listeners": [{
                "name": "inbound", "kind": "inbound", "bind": "127.0.0.1:%d" % cls.p_port,
                "upstream": h1_url,
                "routes": [
                    {"path_prefix": "/h2c/", "upstream": "h2c://127.0.0.1:%d" % cls.h2c.port},
                    {"path_prefix": "/h2cno/", "upstream": "h2c://127.0.0.1:%d" % cls.h2cno.port},
                    {"path_prefix": "/raw101/", "upstream": "http://127.0.0.1:%d" % cls.raw101.port},
                    {"path_prefix": "/deadline/", "upstream": h1_url, "timeout": "1s"},
                    {"path_prefix": "/eof/", "upstream": "http://127.0.0.1:%d" % cls.h1eof.port},
                ]}],
            "admin": {"bind": "127.0.0.1:%d" % cls.p_admin},
            "policy": {"file": pol},
            "log": {"level": "info", "access": cls.p_access, "audit": cls.p_audit},
        }
        p_conf = pt.write_config(os.path.join(tmp, "p.json"), p_cfg)
        cls.P = cls._picket(p_conf, cls.p_admin, "picket-p", env)

        cls.a_port, cls.a_admin = pt.free_port(), pt.free_port()
        cls.a_access = os.path.join(tmp, "a-access.jsonl")
        a_cfg = {
            "node_id": "ws/a/picket", "workers": 2,
            "identity": {"cert": pki.cert("client"), "key": pki.key("client"),
                         "trust_bundles": {pt.TRUST_DOMAIN: pki.ca}},
            "listeners": [{
                "name": "outbound", "kind": "outbound", "bind": "127.0.0.1:%d" % cls.a_port,
                "routes": [{"authority": "orders", "upstream": "127.0.0.1:%d" % cls.p_port,
                            "server_id": pt.SERVER_ID}]}],
            "admin": {"bind": "127.0.0.1:%d" % cls.a_admin},
            "log": {"level": "info", "access": cls.a_access,
                    "audit": os.path.join(tmp, "a-audit.jsonl")},
        }
        a_conf = pt.write_config(os.path.join(tmp, "a.json"), a_cfg)
        cls.A = cls._picket(a_conf, cls.a_admin, "picket-a", env)
        if not pt.wait_port(cls.a_port, 10):
            raise AssertionError("outbound listener not listening")

    def setUp(self):
        for p in (self.P, self.A):
            self.assertTrue(p.alive(), "%s died; stderr:\n%s" % (p.name, p.stderr()[-3000:]))

    def tearDown(self):
        super().tearDown()
        for p in (self.P, self.A):
            p.check_sanitizers()

    # -- helpers -------------------------------------------------------------

    def access(self, path, pred=None, log=None):
        return find_record(log or self.p_access,
                           lambda r: r.get("path") == path and (pred is None or pred(r)),
                           what="access record for %s" % path)

    def audit(self, path, pred=None):
        return find_record(self.p_audit,
                           lambda r: r.get("path") == path and (pred is None or pred(r)),
                           what="audit record for %s" % path)

    def h2(self, **kw):
        c = H2WS(self.p_port, self.pki, **kw)
        self.addCleanup(c.close)
        return c

    def assert_tunnel_record(self, rec, min_in, min_out):
        self.assertEqual(rec.get("status"), 101, rec)
        self.assertEqual(rec.get("upgrade"), "websocket", rec)
        self.assertIn("duration_ms", rec)
        self.assertGreaterEqual(rec.get("bytes_in", -1), min_in, rec)
        self.assertGreaterEqual(rec.get("bytes_out", -1), min_out, rec)
        # the counts are the tunnel's bytes, not a whole stream of something else
        self.assertLess(rec["bytes_in"], min_in + 16384, rec)
        self.assertLess(rec["bytes_out"], min_out + 16384, rec)

    def assert_no_upstream_request(self, proc, path):
        # picket has answered the client already; the upstream must not have been asked
        self.assertEqual(app_records(proc, "request", path), [],
                         "%s reached the upstream" % path)

    # -- HTTP/1.1 clients ------------------------------------------------------

    def test_h1_raw_upgrade_accept_and_frames(self):
        """The 101 picket writes: Upgrade/Connection and the Accept of the client's key
        (RFC 6455's sample); masked frames in, unmasked echoes out; the close handshake
        reaches the app."""
        path = "/t/raw/echo"
        s = h1_tls(self.p_port, self.pki, strict=True)
        self.addCleanup(s.close)
        s.sendall(upgrade_request(path))
        status, hdrs, rest = read_head(s)
        self.assertEqual(status, 101, hdrs)
        self.assertEqual(hdrs.get("upgrade", "").lower(), "websocket", hdrs)
        self.assertIn("upgrade", hdrs.get("connection", "").lower(), hdrs)
        self.assertEqual(hdrs.get("sec-websocket-accept"), SAMPLE_ACCEPT, hdrs)
        dec = ws_app.FrameDecoder(want_masked=False)
        s.sendall(encode_frame(OP_TEXT, b"hello raw", mask=True))
        fr = read_frames(s, dec, 1, rest)
        # (the close only after the echo: a websockets server that has seen the close
        # sends nothing but its own close)
        s.sendall(encode_frame(OP_CLOSE, close_payload(1000, "bye"), mask=True))
        fr += read_frames(s, dec, 1)
        self.assertEqual([(op, p) for _, op, p, _ in fr],
                         [(OP_TEXT, b"hello raw"), (OP_CLOSE, close_payload(1000, "bye"))])
        s.settimeout(30)
        # the app closed: picket closes the client's side, with a close_notify (the
        # tunnel's bytes all arrived; a bare close would read as a cut)
        self.assertEqual(pt.read_to_close(s), (b"", "close_notify"))
        # the app saw the request as a WebSocket opening handshake, and the close
        rq = wait_app_record(self.h1, "request", path)
        hv = rq["headers"]
        self.assertEqual([v.lower() for v in header_values(hv, "upgrade")], ["websocket"], hv)
        self.assertTrue(header_values(hv, "sec-websocket-key"), hv)
        self.assertEqual(header_values(hv, "sec-websocket-version"), ["13"], hv)
        self.assertTrue(header_values(hv, "x-forwarded-client-cert"), hv)
        cl = wait_app_record(self.h1, "closed", path)
        self.assertEqual((cl["code"], cl["reason"]), (1000, "bye"), cl)
        self.assert_tunnel_record(self.access(path), frame_len(9, True) + frame_len(5, True),
                                  frame_len(9, False) + frame_len(5, False))

    def test_h1_websockets_echo_and_records(self):
        """python3-websockets client: text and binary echoed, normal close (1000) seen by
        the app; access record 101 + upgrade + bytes both ways + duration; audit GET,
        protocol websocket."""
        path = "/t/h1/echo"
        big = bytes(range(256)) * 400  # 102400

        async def go():
            async with ws_connect(self.p_port, path, pki=self.pki) as ws:
                await ws.send("hello")
                self.assertEqual(await ws.recv(), "hello")
                await ws.send(big)
                self.assertEqual(await ws.recv(), big)
        run(go())
        cl = wait_app_record(self.h1, "closed", path)
        self.assertEqual((cl["code"], cl["frames_in"], cl["bytes_in"]), (1000, 2, 5 + len(big)), cl)
        rec = self.access(path)
        self.assert_tunnel_record(rec, frame_len(5, True) + frame_len(len(big), True),
                                  frame_len(5, False) + frame_len(len(big), False))
        self.assertEqual(rec.get("method"), "GET", rec)
        self.assertEqual(rec.get("peer"), pt.CLIENT_ID, rec)
        au = self.audit(path)
        self.assertEqual((au.get("method"), au.get("protocol"), au.get("decision"), au.get("rule")),
                         ("GET", "websocket", "allow", "client-tests"), au)

    def test_h1_client_to_h2c_upstream(self):
        """An h1 client's Upgrade becomes extended CONNECT to an h2c upstream that
        advertises SETTINGS_ENABLE_CONNECT_PROTOCOL."""
        path = "/h2c/from-h1"

        async def go():
            async with ws_connect(self.p_port, path, pki=self.pki) as ws:
                for m in ("one", b"\x00two", "three" * 1000):
                    await ws.send(m)
                    self.assertEqual(await ws.recv(), m)
        run(go())
        rq = wait_app_record(self.h2c, "request", path)
        self.assertEqual((rq["method"], rq["protocol"]), ("CONNECT", "websocket"), rq)
        cl = wait_app_record(self.h2c, "closed", path)
        self.assertEqual(cl["code"], 1000, cl)
        self.assertEqual(self.access(path).get("status"), 101)

    def test_h1_upgrade_header_forms(self):
        """What browsers send: `Connection: keep-alive, Upgrade` (Firefox) and the token
        in other cases (`Upgrade: WebSocket`, `Connection: upgrade`): a WebSocket all the
        same, 101 with the right Accept."""
        for i, (upg, conn) in enumerate(((b"websocket", b"keep-alive, Upgrade"),
                                         (b"WebSocket", b"upgrade"))):
            path = "/t/forms/%d" % i
            s = h1_tls(self.p_port, self.pki)
            self.addCleanup(s.close)
            s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\nUpgrade: " + upg
                      + b"\r\nConnection: " + conn + b"\r\nSec-WebSocket-Version: 13\r\n"
                      b"Sec-WebSocket-Key: " + SAMPLE_KEY.encode() + b"\r\n\r\n")
            status, hdrs, rest = read_head(s)
            self.assertEqual(status, 101, (upg, conn, hdrs))
            self.assertEqual(hdrs.get("sec-websocket-accept"), SAMPLE_ACCEPT, hdrs)
            s.sendall(encode_frame(OP_TEXT, b"form %d" % i, mask=True))
            fr = read_frames(s, ws_app.FrameDecoder(want_masked=False), 1, rest)
            self.assertEqual((fr[0][1], fr[0][2]), (OP_TEXT, b"form %d" % i))

    def test_subprotocol_and_extensions_h1(self):
        """Sec-WebSocket-Protocol offered by the client and chosen by the app reaches both
        ends; permessage-deflate, offered by the client (websockets' default), is either
        negotiated end to end or by neither end, never by one only (compressed frames
        echoed intact)."""
        path = "/t/subproto/h1"
        text = "compress me " * 2000

        async def go():
            async with ws_connect(self.p_port, path, pki=self.pki, compression="deflate",
                                  subprotocols=["chat.v1", "chat.v0"]) as ws:
                self.assertEqual(ws.subprotocol, "chat.v1")
                await ws.send(text)
                self.assertEqual(await ws.recv(), text)
                return [e.name for e in ws.extensions]
        client_ext = run(go())
        op = wait_app_record(self.h1, "open", path)
        self.assertEqual(op["subprotocol"], "chat.v1", op)
        self.assertEqual(op["extensions"], client_ext, "both ends agree on the extensions")

    def test_subprotocol_h2(self):
        """RFC 8441: sec-websocket-protocol on the extended CONNECT reaches the (h1) app,
        and its choice comes back on the 200."""
        path = "/t/subproto/h2"
        c = self.h2()
        sid = c.open(path, headers=[("sec-websocket-protocol", "chat.v1, chat.v0")])
        self.assertEqual(c.response(sid), 200)
        self.assertEqual(c.response_header(sid, "sec-websocket-protocol"), "chat.v1")
        op = wait_app_record(self.h1, "open", path)
        self.assertEqual(op["subprotocol"], "chat.v1", op)
        c.send_ws(sid, OP_TEXT, b"sub")
        self.assertEqual(c.frames(sid, 1), [(OP_TEXT, b"sub")])

    def test_upstream_refusal_reaches_client_h1(self):
        """An upstream that answers the upgrade with 403, or with a plain 200: the h1
        client gets that answer (status and body), no tunnel."""
        for path, want, body in (("/t/refuse403", 403, b"no websocket here\n"),
                                 ("/t/plain200", 200, b"plain answer\n")):
            s = h1_tls(self.p_port, self.pki)
            self.addCleanup(s.close)
            s.sendall(upgrade_request(path))
            status, hdrs, rest = read_head(s)
            self.assertEqual(status, want, (path, hdrs))
            self.assertNotIn("sec-websocket-accept", hdrs)
            self.assertEqual(read_body(s, hdrs, rest), body)
            s.settimeout(30)
            self.assertEqual(s.recv(100), b"", "picket closes the h1 connection after it")
            wait_app_record(self.h1, "request", path)
            self.assertEqual(app_records(self.h1, "open", path), [], "no tunnel at the app")

        async def go():
            with self.assertRaises(websockets.InvalidStatusCode) as cm:
                async with ws_connect(self.p_port, "/t/refuse403/ws", pki=self.pki):
                    pass
            self.assertEqual(cm.exception.status_code, 403)
        run(go())

    def test_plain_200_to_h2_client_is_502(self):
        """An app that answers an h2 client's WebSocket (sent to it as an HTTP/1.1 Upgrade)
        with a plain 200: on HTTP/2 a 200 would mean an open tunnel (RFC 8441), so the
        client gets 502 upgrade_unsupported instead, and the connection carries on."""
        c = self.h2()
        sid = c.open("/t/plain200/h2")
        self.assertEqual(c.response(sid), 502)
        wait_app_record(self.h1, "request", "/t/plain200/h2")
        self.assertEqual(app_records(self.h1, "open", "/t/plain200/h2"), [])
        rec = self.access("/t/plain200/h2")
        self.assertEqual((rec.get("status"), rec.get("reason")), (502, "upgrade_unsupported"),
                         rec)
        self.assertEqual(c.get("/t/after-plain200")[0], 200)

    def test_upstream_refusal_reaches_client_h2(self):
        """An h2 client's extended CONNECT refused by the (h1) app with 403: the client
        gets the 403 and its body, the stream ends, no tunnel."""
        c = self.h2()
        sid = c.open("/t/refuse403/h2")
        self.assertEqual(c.response(sid), 403)
        self.assertIsNone(c.wait_end(sid), "the 403 ends the stream")
        self.assertEqual(c.body(sid), b"no websocket here\n")
        wait_app_record(self.h1, "request", "/t/refuse403/h2")
        self.assertEqual(app_records(self.h1, "open", "/t/refuse403/h2"), [])

    def test_bad_h1_upgrade_is_400(self):
        """An Upgrade: websocket request without Sec-WebSocket-Key, with two, with one that
        is not 16 bytes in base64, or with a body (Content-Length or chunked): 400, reason
        bad_upgrade, and the app never sees it."""
        cases = (("/t/badup/nokey", upgrade_request("/t/badup/nokey", key=None)),
                 ("/t/badup/body", upgrade_request("/t/badup/body", extra=b"Content-Length: 5\r\n")
                  + b"hello"),
                 ("/t/badup/chunked", upgrade_request("/t/badup/chunked",
                                                      extra=b"Transfer-Encoding: chunked\r\n")
                  + b"5\r\nhello\r\n0\r\n\r\n"),
                 ("/t/badup/twokeys", upgrade_request(
                     "/t/badup/twokeys", extra=b"Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n")),
                 ("/t/badup/shortkey", upgrade_request("/t/badup/shortkey", key="c2hvcnQ=")))
        for path, req in cases:
            s = h1_tls(self.p_port, self.pki)
            self.addCleanup(s.close)
            s.sendall(req)
            status, hdrs, rest = read_head(s)
            self.assertEqual(status, 400, (path, hdrs))
            rec = self.access(path)
            self.assertEqual((rec.get("status"), rec.get("reason")), (400, "bad_upgrade"), rec)
            self.assert_no_upstream_request(self.h1, path)

    def test_other_upgrade_tokens_removed(self):
        """h2c, TLS/1.0 and an unknown token: the app gets a plain GET without Upgrade or
        Connection (nor HTTP2-Settings), the client a 200, never a 101."""
        for i, (token, extra) in enumerate((("h2c", b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"),
                                            ("TLS/1.0", b""), ("picket-test/9", b""))):
            path = "/t/tokens/%d" % i
            s = h1_tls(self.p_port, self.pki)
            self.addCleanup(s.close)
            conn = b"Upgrade, HTTP2-Settings" if extra else b"Upgrade"
            s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\nUpgrade: "
                      + token.encode() + b"\r\nConnection: " + conn + b"\r\n" + extra + b"\r\n")
            status, hdrs, rest = read_head(s)
            self.assertEqual(status, 200, (token, hdrs))
            seen = json.loads(read_body(s, hdrs, rest))["headers"]
            names = {k.lower() for k, _ in seen}
            for n in ("upgrade", "connection", "http2-settings"):
                self.assertNotIn(n, names, (token, seen))
            rq = wait_app_record(self.h1, "request", path)
            self.assertNotIn("upgrade", {k.lower() for k, _ in rq["headers"]})

    def test_http10_upgrade_ignored(self):
        """RFC 9110 7.8: an Upgrade in an HTTP/1.0 request is ignored: never a 101, and
        if the request is forwarded the app gets it without Upgrade."""
        path = "/t/http10"
        s = h1_tls(self.p_port, self.pki)
        self.addCleanup(s.close)
        s.sendall(upgrade_request(path).replace(b" HTTP/1.1\r\n", b" HTTP/1.0\r\n", 1))
        status, hdrs, rest = read_head(s)
        self.assertNotEqual(status, 101, hdrs)
        self.assertIn(status, (200, 400), hdrs)
        if status == 200:
            seen = json.loads(read_body(s, hdrs, rest))["headers"]
            self.assertNotIn("upgrade", {k.lower() for k, _ in seen}, seen)
        self.assertEqual(app_records(self.h1, "open", path), [])

    def test_101_to_plain_request_is_502(self):
        """The upstream answers 101 to a request that asked for no upgrade: 502
        (bad_upstream_response), on both client protocols; no byte of it relayed."""
        for v in ("1.1", "2"):
            path = "/raw101/plain-%s" % v.replace(".", "")
            r = pt.curl(self.p_port, path, self.pki, http=v, workdir=self.tmp)
            self.assertEqual(r.status, 502, r)
            self.assertNotIn(b"surprise", r.body)
            wait_app_record(self.raw101, "request", path)
            rec = self.access(path)
            self.assertEqual((rec.get("status"), rec.get("reason")), (502, "bad_upstream_response"),
                             rec)

    def test_wrong_accept_from_upstream_is_502_h1(self):
        """The upstream's 101 carries a Sec-WebSocket-Accept that is not the one for the
        key sent: 502, no tunnel."""
        s = h1_tls(self.p_port, self.pki)
        self.addCleanup(s.close)
        s.sendall(upgrade_request("/raw101/h1-ws"))
        status, hdrs, _ = read_head(s)
        self.assertEqual(status, 502, hdrs)
        wait_app_record(self.raw101, "request", "/raw101/h1-ws")
        self.assertEqual(self.access("/raw101/h1-ws").get("status"), 502)

    def test_wrong_accept_from_upstream_is_502_h2(self):
        """As _h1, for an h2 client (picket made the key itself)."""
        c = self.h2()
        sid = c.open("/raw101/h2-ws")
        self.assertEqual(c.response(sid), 502)
        wait_app_record(self.raw101, "request", "/raw101/h2-ws")
        self.assertEqual(self.access("/raw101/h2-ws").get("status"), 502)

    def test_policy_judges_opening_request_h1(self):
        """A denied upgrade is 403 with no tunnel and never reaches the app; the policy
        sees `upgrade: websocket` on the canonical request: a rule requiring it allows
        the WebSocket and not a plain GET of the same path."""
        async def denied():
            with self.assertRaises(websockets.InvalidStatusCode) as cm:
                async with ws_connect(self.p_port, "/t/denied/h1", pki=self.pki):
                    pass
            self.assertEqual(cm.exception.status_code, 403)
        run(denied())
        self.assert_denied("/t/denied/h1")

        async def allowed():
            async with ws_connect(self.p_port, "/wsonly/h1", pki=self.pki) as ws:
                await ws.send("ok?")
                self.assertEqual(await ws.recv(), "ok?")
        run(allowed())
        self.assertEqual(self.audit("/wsonly/h1").get("rule"), "ws-only")
        for v in ("1.1", "2"):
            r = pt.curl(self.p_port, "/wsonly/plain", self.pki, http=v, workdir=self.tmp)
            self.assertEqual(r.status, 403, r)
        self.assert_no_upstream_request(self.h1, "/wsonly/plain")

    def test_policy_judges_opening_request_h2(self):
        """As _h1, for extended CONNECT: judged as GET with `upgrade: websocket`."""
        c = self.h2()
        sid = c.open("/t/denied/h2")
        self.assertEqual(c.response(sid), 403)
        self.assert_denied("/t/denied/h2")
        sid = c.open("/wsonly/h2")
        self.assertEqual(c.response(sid), 200)
        c.send_ws(sid, OP_TEXT, b"ok h2?")
        self.assertEqual(c.frames(sid, 1), [(OP_TEXT, b"ok h2?")])
        c.send_ws(sid, OP_CLOSE, close_payload(1000))
        c.wait_end(sid)
        self.assertEqual(self.audit("/wsonly/h2").get("rule"), "ws-only")

    def test_audited_before_relayed_h1(self):
        """The decision's audit record is written when the opening request is judged,
        while the tunnel is open, not when it ends (a WebSocket can live for hours)."""
        path = "/t/audit-open/h1"

        async def go():
            async with ws_connect(self.p_port, path, pki=self.pki) as ws:
                await ws.send("x")
                self.assertEqual(await ws.recv(), "x")
                au = await asyncio.get_running_loop().run_in_executor(None, self.audit, path)
                self.assertEqual((au.get("decision"), au.get("protocol")), ("allow", "websocket"))
                await ws.send("still open")
                self.assertEqual(await ws.recv(), "still open")
        run(go())

    def test_audited_before_relayed_h2(self):
        """As _h1, for an extended CONNECT tunnel."""
        path = "/t/audit-open/h2"
        c = self.h2()
        sid = c.open(path)
        self.assertEqual(c.response(sid), 200)
        c.send_ws(sid, OP_TEXT, b"x")
        self.assertEqual(c.frames(sid, 1), [(OP_TEXT, b"x")])
        au = self.audit(path)
        self.assertEqual((au.get("decision"), au.get("protocol")), ("allow", "websocket"))
        c.send_ws(sid, OP_TEXT, b"still open")
        self.assertEqual(c.frames(sid, 2)[1], (OP_TEXT, b"still open"))

    def test_h2_refusal_is_over_without_client_end(self):
        """A denied extended CONNECT whose client keeps its half of the stream open (it
        never sends END_STREAM): the 403 ends the stream from picket's side and the audit
        and access records are written without waiting for the client (RFC 9113 8.1:
        RST_STREAM NO_ERROR after a complete response, or any other way)."""
        c = self.h2()
        sid = c.open("/t/denied/h2-open-half")
        self.assertEqual(c.response(sid, finish=False), 403)
        self.assert_denied("/t/denied/h2-open-half")
        self.assertIsNone(c.goaway)

    def assert_denied(self, path):
        au = self.audit(path)
        self.assertEqual((au.get("decision"), au.get("rule"), au.get("method"),
                          au.get("protocol")), ("deny", "no-denied", "GET", "websocket"), au)
        self.assertEqual(self.access(path).get("status"), 403)
        self.assert_no_upstream_request(self.h1, path)

    def test_server_close_reaches_client_h1(self):
        """The app closes (4000 "server says bye"): the h1 client gets that close."""
        async def go():
            async with ws_connect(self.p_port, "/t/close/h1", pki=self.pki) as ws:
                await ws.send("last")
                self.assertEqual(await ws.recv(), "last")
                with self.assertRaises(websockets.ConnectionClosed) as cm:
                    await ws.recv()
                self.assertEqual((cm.exception.code, cm.exception.reason),
                                 (4000, "server says bye"))
        run(go())
        self.assertEqual(self.access("/t/close/h1").get("status"), 101)

    def test_server_close_reaches_client_h2(self):
        """The app closes: the h2 client gets the close frame, then (once it answered
        the close) the end of its stream; the connection carries on."""
        c = self.h2()
        sid = c.open("/t/close/h2")
        self.assertEqual(c.response(sid), 200)
        c.send_ws(sid, OP_TEXT, b"last h2")
        fr = c.frames(sid, 2)
        self.assertEqual(fr[0], (OP_TEXT, b"last h2"))
        self.assertEqual(fr[1][0], OP_CLOSE)
        self.assertEqual(parse_close(fr[1][1]), (4000, "server says bye"))
        c.send_ws(sid, OP_CLOSE, close_payload(4000))
        self.assertIsNone(c.wait_end(sid), "stream ended, not reset")
        self.assertEqual(c.get("/t/after-close")[0], 200, "the connection carries on")
        self.assertEqual(self.access("/t/close/h2").get("status"), 101)

    def test_client_abort_ends_upstream_side_h1(self):
        """An h1 client that drops its connection without a close frame: picket ends the
        app's side too, and writes the access record."""
        path = "/t/abort/h1"
        s = h1_tls(self.p_port, self.pki)
        self.addCleanup(s.close)  # (closed below; again is harmless)
        s.sendall(upgrade_request(path))
        status, hdrs, rest = read_head(s)
        self.assertEqual(status, 101, hdrs)
        s.sendall(encode_frame(OP_BIN, b"\x01" * 1000, mask=True))
        read_frames(s, ws_app.FrameDecoder(want_masked=False), 1, rest)
        s.close()
        cl = wait_app_record(self.h1, "closed", path)
        self.assertNotEqual(cl["code"], 1000, "no close frame was sent: %r" % cl)
        self.assertEqual(self.access(path).get("status"), 101)

    def test_client_abort_ends_upstream_side_h2(self):
        """An h2 client that cancels the tunnel's stream (RST_STREAM CANCEL): picket ends
        the app's side, writes the record; the connection carries on."""
        c = self.h2()
        sid = c.open("/t/abort/h2")
        self.assertEqual(c.response(sid), 200)
        c.send_ws(sid, OP_TEXT, b"then gone")
        self.assertEqual(c.frames(sid, 1), [(OP_TEXT, b"then gone")])
        c.conn.reset_stream(sid, 8)  # CANCEL
        c.sock.sendall(c.conn.data_to_send())
        wait_app_record(self.h1, "closed", "/t/abort/h2")
        self.assertEqual(self.access("/t/abort/h2").get("status"), 101)
        self.assertEqual(c.get("/t/after-abort")[0], 200, "the connection carries on")

    # -- HTTP/2 clients (RFC 8441) ----------------------------------------------

    def test_h2_extended_connect_echo(self):
        """SETTINGS_ENABLE_CONNECT_PROTOCOL=1; two extended CONNECT streams on one
        connection, each echoed separately (text and 200 KiB binary); a plain GET beside
        them; the close frame reaches the app; records as for h1 (status 101)."""
        c = self.h2()
        self.assertEqual(c.connect_protocol(), 1, "picket advertises extended CONNECT")
        a = c.open("/t/h2/a")
        b = c.open("/t/h2/b")
        self.assertEqual(c.response(a), 200)
        self.assertEqual(c.response(b), 200)
        big = os.urandom(200 * 1024)
        c.send_ws(a, OP_TEXT, b"to a")
        c.send_ws(b, OP_BIN, big)
        c.send_ws(a, OP_BIN, b"\x00a")
        self.assertEqual(c.frames(b, 1), [(OP_BIN, big)])
        self.assertEqual(c.frames(a, 2), [(OP_TEXT, b"to a"), (OP_BIN, b"\x00a")])
        self.assertEqual(c.get("/t/h2/plain")[0], 200)
        for sid, path in ((a, "/t/h2/a"), (b, "/t/h2/b")):
            c.send_ws(sid, OP_CLOSE, close_payload(1000, "done"))
            c.wait_end(sid)
            cl = wait_app_record(self.h1, "closed", path)
            self.assertEqual((cl["code"], cl["reason"]), (1000, "done"), cl)
            rq = wait_app_record(self.h1, "request", path)
            keys = header_values(rq["headers"], "sec-websocket-key")
            self.assertEqual(len(keys), 1, rq)
            self.assertEqual(len(__import__("base64").b64decode(keys[0])), 16, "a real key")
        self.assertEqual(c.frames(a, 3)[2], (OP_CLOSE, close_payload(1000, "done")))
        rec = self.access("/t/h2/b")
        self.assert_tunnel_record(rec, frame_len(len(big), True) + frame_len(6, True),
                                  frame_len(len(big), False) + frame_len(6, False))
        au = self.audit("/t/h2/a")
        self.assertEqual((au.get("method"), au.get("protocol")), ("GET", "websocket"), au)

    def test_h2_client_to_h2c_upstream(self):
        """h2 extended CONNECT on both sides: client -> picket -> h2c upstream that
        advertises the setting."""
        c = self.h2()
        sid = c.open("/h2c/from-h2")
        self.assertEqual(c.response(sid), 200)
        c.send_ws(sid, OP_TEXT, b"h2 all the way")
        self.assertEqual(c.frames(sid, 1), [(OP_TEXT, b"h2 all the way")])
        c.send_ws(sid, OP_CLOSE, close_payload(1000))
        self.assertEqual(c.frames(sid, 2)[1], (OP_CLOSE, close_payload(1000)))
        c.wait_end(sid)
        rq = wait_app_record(self.h2c, "request", "/h2c/from-h2")
        self.assertEqual((rq["method"], rq["protocol"]), ("CONNECT", "websocket"), rq)
        self.assertEqual(self.access("/h2c/from-h2").get("status"), 101)

    def test_h2c_upstream_without_setting_is_502_h1(self):
        """An h2c upstream that does not advertise SETTINGS_ENABLE_CONNECT_PROTOCOL: an h1
        client's upgrade gets 502, reason upgrade_unsupported, nothing sent to it; plain
        requests still go there."""
        since = len(self.P.stderr())

        async def go():
            with self.assertRaises(websockets.InvalidStatusCode) as cm:
                async with ws_connect(self.p_port, "/h2cno/h1", pki=self.pki):
                    pass
            self.assertEqual(cm.exception.status_code, 502)
        run(go())
        self.assert_upgrade_unsupported("/h2cno/h1", since)
        r = pt.curl(self.p_port, "/h2cno/plain-h1", self.pki, http="1.1", workdir=self.tmp)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["path"], "/h2cno/plain-h1")

    def test_h2c_upstream_without_setting_is_502_h2(self):
        """As _h1, for an h2 client's extended CONNECT, on an upstream connection that is
        already up (a plain GET first): the same 502, reason and log line; a GET on the
        same client connection after it goes to that upstream."""
        c = self.h2()
        st, body = c.get("/h2cno/plain-before")
        self.assertEqual(st, 200)
        since = len(self.P.stderr())
        sid = c.open("/h2cno/h2")
        self.assertEqual(c.response(sid), 502)
        self.assert_upgrade_unsupported("/h2cno/h2", since)
        st, body = c.get("/h2cno/plain")
        self.assertEqual(st, 200)
        self.assertEqual(json.loads(body)["path"], "/h2cno/plain")

    def assert_upgrade_unsupported(self, path, since):
        rec = self.access(path)
        self.assertEqual((rec.get("status"), rec.get("reason")), (502, "upgrade_unsupported"), rec)
        self.assert_no_upstream_request(self.h2cno, path)
        ev = pt.wait_log_event(self.P, "upstream_upgrade_unsupported", since=since, timeout=20,
                               pred=lambda e: str(self.h2cno.port) in str(e.get("upstream")))
        self.assertIsNotNone(ev, "no upstream_upgrade_unsupported line naming the upstream "
                             "after the request for %s" % path)

    def test_h2_protocol_on_plain_connect_is_stream_error(self):
        """`:protocol` on a CONNECT without :scheme/:path, or on a GET: RST_STREAM on that
        stream; the connection carries on (a GET and an extended CONNECT after it work)."""
        c = self.h2(validate=False)
        sid = c.open(None, pseudo=[(":method", "CONNECT"), (":protocol", "websocket"),
                                   (":authority", "localhost:443")])
        self.assertIsNone(c.response(sid), "a reset, not a response")
        self.assertEqual(c.wait_end(sid), 1, "RST_STREAM PROTOCOL_ERROR")
        self.assertIsNone(c.goaway, "a stream error, not a connection error")
        # :protocol on a GET is malformed too (RFC 8441 4)
        sid = c.open(None, pseudo=[(":method", "GET"), (":protocol", "websocket"),
                                   (":scheme", "https"), (":path", "/t/get-with-protocol"),
                                   (":authority", "localhost")])
        self.assertIsNone(c.response(sid), "a reset, not a response")
        self.assertIsNone(c.goaway, "a stream error, not a connection error")
        self.assertEqual(c.get("/t/after-bad-connect")[0], 200)
        ok = c.open("/t/after-bad-connect/ws")
        self.assertEqual(c.response(ok), 200)
        c.send_ws(ok, OP_TEXT, b"still here")
        self.assertEqual(c.frames(ok, 1), [(OP_TEXT, b"still here")])

    def test_h2_other_protocol_is_400(self):
        """An extended CONNECT for another protocol (`:protocol connect-udp`): 400
        bad_upgrade, never relayed; the connection carries on."""
        path = "/t/other-protocol"
        c = self.h2(validate=False)
        sid = c.open(path, pseudo=[(":method", "CONNECT"), (":protocol", "connect-udp"),
                                   (":scheme", "https"), (":path", path),
                                   (":authority", "localhost")])
        self.assertEqual(c.response(sid), 400)
        rec = self.access(path)
        self.assertEqual((rec.get("status"), rec.get("reason")), (400, "bad_upgrade"), rec)
        self.assert_no_upstream_request(self.h1, path)
        self.assertEqual(c.get("/t/after-other-protocol")[0], 200)

    # -- the mesh ---------------------------------------------------------------

    def test_mesh_app_to_app(self):
        """An app's plain ws:// to its outbound listener A, over A's mTLS h2 connection
        to P (extended CONNECT), to P's h1 upstream; records on both sidecars."""
        path = "/t/mesh/echo"

        async def go():
            async with ws_connect(self.a_port, path, tls=False, host="orders") as ws:
                for m in ("across the mesh", os.urandom(70000)):
                    await ws.send(m)
                    self.assertEqual(await ws.recv(), m)
        run(go())
        cl = wait_app_record(self.h1, "closed", path)
        self.assertEqual(cl["code"], 1000, cl)
        a_rec = self.access(path, log=self.a_access)
        self.assertEqual((a_rec.get("status"), a_rec.get("upgrade")), (101, "websocket"), a_rec)
        self.assertGreaterEqual(a_rec.get("bytes_in", -1), 70000 + 15)
        self.assertGreaterEqual(a_rec.get("bytes_out", -1), 70000 + 15)
        p_rec = self.access(path)
        self.assertEqual((p_rec.get("status"), p_rec.get("upgrade"), p_rec.get("proto"),
                          p_rec.get("peer")), (101, "websocket", "h2", pt.CLIENT_ID), p_rec)
        au = self.audit(path)
        self.assertEqual((au.get("peer"), au.get("protocol")), (pt.CLIENT_ID, "websocket"), au)

    def test_mesh_h2c_app_to_app(self):
        """The app speaks h2c (prior knowledge) to its outbound listener and opens an
        extended CONNECT (:scheme http, :authority orders); A carries it to P, P to its
        h1 app."""
        path = "/t/mesh/h2c"
        c = H2WS(self.a_port, None, tls=False)
        self.addCleanup(c.close)
        self.assertEqual(c.connect_protocol(), 1, "the outbound listener allows extended CONNECT")
        sid = c.open(path, authority="orders")
        self.assertEqual(c.response(sid), 200)
        big = os.urandom(100000)
        c.send_ws(sid, OP_TEXT, b"h2c app")
        c.send_ws(sid, OP_BIN, big)
        self.assertEqual(c.frames(sid, 2), [(OP_TEXT, b"h2c app"), (OP_BIN, big)])
        c.send_ws(sid, OP_CLOSE, close_payload(1000))
        self.assertEqual(c.frames(sid, 3)[2], (OP_CLOSE, close_payload(1000)))
        c.wait_end(sid)
        self.assertEqual(wait_app_record(self.h1, "closed", path)["code"], 1000)
        a_rec = self.access(path, log=self.a_access)
        self.assertEqual((a_rec.get("status"), a_rec.get("upgrade")), (101, "websocket"), a_rec)
        p_rec = self.access(path)
        self.assertEqual((p_rec.get("status"), p_rec.get("proto"), p_rec.get("peer")),
                         (101, "h2", pt.CLIENT_ID), p_rec)

    def test_half_close_mesh_h1_app(self):
        """The app (plain TCP to its outbound listener) sends two frames and shuts its
        write side: the frames, then the EOF, reach the upstream through both sidecars
        (END_STREAM between them, a TCP half-close to the upstream); the upstream's last
        frame, sent after it saw that EOF, and then its close come back to the app."""
        path = "/eof/mesh"
        s = socket.create_connection(("127.0.0.1", self.a_port), timeout=30)
        self.addCleanup(s.close)
        s.sendall(upgrade_request(path, host=b"orders"))
        status, hdrs, rest = read_head(s)
        self.assertEqual(status, 101, hdrs)
        self.assertEqual(hdrs.get("sec-websocket-accept"), SAMPLE_ACCEPT, hdrs)
        s.sendall(encode_frame(OP_TEXT, b"one", mask=True) + encode_frame(OP_BIN, b"\x02" * 5000,
                                                                          mask=True))
        s.shutdown(socket.SHUT_WR)
        data = rest
        s.settimeout(30)
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
        fr = ws_app.FrameDecoder(want_masked=False).feed(data)
        self.assertEqual([(op, p) for _, op, p, _ in fr],
                         [(OP_TEXT, b"one"), (OP_BIN, b"\x02" * 5000), (OP_TEXT, b"eof after 5003")])
        self.assertEqual(wait_app_record(self.h1eof, "closed", path)["bytes_in"], 5003)

    def test_half_close_h2(self):
        """An h2 client's END_STREAM after its frames: the upstream gets them, then EOF
        (TCP half-close); its last frame comes back, then END_STREAM."""
        path = "/eof/h2"
        c = self.h2()
        sid = c.open(path)
        self.assertEqual(c.response(sid), 200)
        c.send_ws(sid, OP_TEXT, b"one")
        c.send_ws(sid, OP_BIN, b"\x02" * 70000)
        c.send(sid, b"", end=True)
        self.assertEqual(c.frames(sid, 3), [(OP_TEXT, b"one"), (OP_BIN, b"\x02" * 70000),
                                            (OP_TEXT, b"eof after 70003")])
        self.assertIsNone(c.wait_end(sid, finish=False), "ended cleanly, not reset")
        self.assertEqual(wait_app_record(self.h1eof, "closed", path)["bytes_in"], 70003)
        self.assertEqual(self.access(path).get("status"), 101)

    def test_upstream_reset_cuts_tunnel_h1(self):
        """The upstream resets its connection mid-tunnel: the h1 client's connection is
        closed; access record 101 with reason upstream_reset."""
        path = "/eof/reset/h1"
        s = h1_tls(self.p_port, self.pki, strict=True)
        self.addCleanup(s.close)
        s.sendall(upgrade_request(path))
        status, hdrs, rest = read_head(s)
        self.assertEqual(status, 101, hdrs)
        dec = ws_app.FrameDecoder(want_masked=False)
        s.sendall(encode_frame(OP_TEXT, b"echoed", mask=True))
        fr = read_frames(s, dec, 1, rest)
        self.assertEqual((fr[0][1], fr[0][2]), (OP_TEXT, b"echoed"))
        s.sendall(encode_frame(OP_TEXT, b"reset now", mask=True))
        data, how = pt.read_to_close(s)
        self.assertEqual(dec.feed(data), [], "nothing after the reset")
        # a cut tunnel ends without a close_notify: the client must not read it as whole
        self.assertIn(how, ("bare", "reset"))
        wait_app_record(self.h1eof, "reset", path)
        rec = self.access(path)
        self.assertEqual((rec.get("status"), rec.get("reason")), (101, "upstream_reset"), rec)

    def test_upstream_reset_cuts_tunnel_h2(self):
        """As _h1 for an h2 client: RST_STREAM on the tunnel's stream (not a clean end),
        the connection carries on."""
        path = "/eof/reset/h2"
        c = self.h2()
        sid = c.open(path)
        self.assertEqual(c.response(sid), 200)
        c.send_ws(sid, OP_TEXT, b"echoed")
        self.assertEqual(c.frames(sid, 1), [(OP_TEXT, b"echoed")])
        c.send_ws(sid, OP_TEXT, b"reset now")
        self.assertIsNotNone(c.wait_end(sid), "a reset stream, not END_STREAM")
        self.assertEqual(len(c._s(sid)["frames"]), 1, "nothing after the reset")
        rec = self.access(path)
        self.assertEqual((rec.get("status"), rec.get("reason")), (101, "upstream_reset"), rec)
        self.assertEqual(c.get("/t/after-upstream-reset")[0], 200)

    # -- lifetime --------------------------------------------------------------------

    def test_route_deadline_does_not_cut_tunnel_h1(self):
        """routes[].timeout 1s: a tunnel with traffic lives on past 3 s."""
        async def h1():
            async with ws_connect(self.p_port, "/deadline/h1", pki=self.pki) as ws:
                t0 = time.monotonic()
                i = 0
                while time.monotonic() - t0 < 3.0:
                    await ws.send("tick %d" % i)
                    self.assertEqual(await ws.recv(), "tick %d" % i)
                    i += 1
                    await asyncio.sleep(0.25)
                await ws.send("still open")
                self.assertEqual(await ws.recv(), "still open")
        run(h1())
        self.assert_outlived_deadline("/deadline/h1")

    def test_route_deadline_does_not_cut_tunnel_h2(self):
        """As _h1, for an extended CONNECT stream."""
        c = self.h2()
        sid = c.open("/deadline/h2")
        self.assertEqual(c.response(sid), 200)
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < 3.0:
            c.send_ws(sid, OP_TEXT, b"tick %d" % i)
            i += 1
            self.assertEqual(c.frames(sid, i)[-1], (OP_TEXT, b"tick %d" % (i - 1)))
            end = time.monotonic() + 0.25
            while time.monotonic() < end:
                c.pump(0.05)
        self.assertIsNone(c._s(sid)["reset"], "the tunnel was reset")
        self.assertFalse(c._s(sid)["ended"], "the tunnel was ended")
        c.send_ws(sid, OP_CLOSE, close_payload(1000))
        c.wait_end(sid)
        self.assert_outlived_deadline("/deadline/h2")

    def assert_outlived_deadline(self, path):
        rec = self.access(path)
        self.assertEqual(rec.get("status"), 101, rec)
        self.assertNotEqual(rec.get("reason"), "request_deadline", rec)
        self.assertGreaterEqual(rec.get("duration_ms", 0), 2900, rec)

    def test_64mib_echo_checksum_bounded_memory(self):
        """64 MiB each way through one tunnel (h1 client, h1 upstream), sha256 on both
        ends; picket's peak RSS grows by less than 48 MiB."""
        path = "/t/big/echo"
        size = 64 * MIB
        block = bytes(range(256)) * 4096  # 1 MiB
        sent, got = hashlib.sha256(), hashlib.sha256()

        async def warm():
            async with ws_connect(self.p_port, "/t/big/warm", pki=self.pki) as ws:
                await ws.send(block)
                self.assertEqual(await ws.recv(), block)
        run(warm())
        base = self.P.reset_peak_rss()

        async def go():
            async with ws_connect(self.p_port, path, pki=self.pki, max_queue=4) as ws:
                async def sender():
                    for i in range(size // len(block)):
                        b = block[i % 7:] + block[:i % 7]
                        sent.update(b)
                        await ws.send(b)

                async def receiver():
                    # pauses after every 8 MiB: the sender runs ahead, so picket's
                    # buffers would grow if it did not push back on the sender
                    n = 0
                    while n < size:
                        m = await ws.recv()
                        got.update(m)
                        n += len(m)
                        if n % (8 * MIB) == 0:
                            await asyncio.sleep(0.3)
                    return n
                _, n = await asyncio.gather(sender(), receiver())
                return n
        n = run(go(), timeout=240)
        self.assertEqual(n, size)
        self.assertEqual(got.hexdigest(), sent.hexdigest())
        growth = (self.P.peak_rss_kib() - base) * 1024
        pt.log("picket pid %d: peak RSS growth %.1f MiB for 64 MiB each way through a WebSocket"
               % (self.P.pid, growth / MIB))
        self.assertLess(growth, 48 * MIB, "picket held the stream, not a bounded window")
        rec = self.access(path)
        self.assertEqual(rec.get("status"), 101, rec)
        self.assertGreaterEqual(rec.get("bytes_in", 0), size, rec)
        self.assertGreaterEqual(rec.get("bytes_out", 0), size, rec)


    def test_64mib_echo_h2_bounded_memory(self):
        """64 MiB each way through one extended CONNECT stream (h2 client, h1 upstream),
        sha256 on both ends, while the client reads only between its sends (its window
        fills: picket must hold the app back); picket's peak RSS grows by < 48 MiB."""
        path = "/t/big/h2"
        size = 64 * MIB
        block = bytes(range(256)) * 4096
        sent, got = hashlib.sha256(), hashlib.sha256()
        n = [0]

        def sink(op, payload):
            self.assertEqual(op, OP_BIN)
            got.update(payload)
            n[0] += len(payload)
        c = self.h2()
        base = self.P.reset_peak_rss()
        sid = c.open(path)
        self.assertEqual(c.response(sid), 200)
        c._s(sid)["sink"] = sink
        for i in range(size // len(block)):
            b = block[i % 5:] + block[:i % 5]
            sent.update(b)
            c.send_ws(sid, OP_BIN, b)
        c.wait(lambda: n[0] >= size, "the 64 MiB echo (%d bytes so far)" % n[0], timeout=120)
        self.assertEqual(n[0], size)
        self.assertEqual(got.hexdigest(), sent.hexdigest())
        growth = (self.P.peak_rss_kib() - base) * 1024
        pt.log("picket pid %d: peak RSS growth %.1f MiB for 64 MiB each way through an h2 "
               "WebSocket" % (self.P.pid, growth / MIB))
        self.assertLess(growth, 48 * MIB, "picket held the stream, not a bounded window")
        c._s(sid)["sink"] = None
        c.send_ws(sid, OP_CLOSE, close_payload(1000))
        c.wait_end(sid)
        rec = self.access(path)
        self.assertEqual(rec.get("status"), 101, rec)
        self.assertGreaterEqual(rec.get("bytes_in", 0), size, rec)
        self.assertGreaterEqual(rec.get("bytes_out", 0), size, rec)


class Idle(pt.TestCase):
    """limits.tunnel_idle_timeout on its own picket (1s)."""

    def start(self):
        app = start_ws_app(self.tmp, "h1")
        self.addCleanup(app.stop)
        path, cfg, port, admin = self.config("http://127.0.0.1:%d" % app.port,
                                             limits={"tunnel_idle_timeout": "1s"})
        self.picket(path, inbound_port=port, admin_port=admin)
        return port

    def assert_idle_record(self, path):
        rec = find_record(os.path.join(self.tmp, "access.jsonl"), lambda r: r.get("path") == path)
        self.assertEqual((rec.get("status"), rec.get("reason")), (101, "tunnel_idle"), rec)

    def test_sigterm_tunnel_carries_on_until_drain_timeout(self):
        """SIGTERM with a tunnel open: it still moves bytes once picket is draining, is
        closed at limits.drain_timeout (2s), and picket exits 0 with its record written."""
        app = start_ws_app(self.tmp, "h1")
        self.addCleanup(app.stop)
        path, cfg, port, admin = self.config("http://127.0.0.1:%d" % app.port,
                                             limits={"drain_timeout": "2s"})
        p = self.picket(path, inbound_port=port, admin_port=admin)

        async def go():
            async with ws_connect(port, "/drain/h1", pki=self.pki) as ws:
                await ws.send("before")
                self.assertEqual(await ws.recv(), "before")
                since = len(p.stderr())
                p.signal(pt.signal.SIGTERM)
                ev = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: pt.wait_log_event(p, "draining", since=since, timeout=30))
                self.assertIsNotNone(ev, "no 'draining' line after SIGTERM")
                await ws.send("while draining")
                self.assertEqual(await ws.recv(), "while draining")
                await asyncio.wait_for(ws.wait_closed(), 60)
        run(go())
        self.assertEqual(p.wait(60), 0, p.stderr()[-2000:])
        rec = find_record(os.path.join(self.tmp, "access.jsonl"),
                          lambda r: r.get("path") == "/drain/h1")
        self.assertEqual(rec.get("status"), 101, rec)

    def test_idle_tunnel_closed_h1(self):
        """A tunnel with no byte either way for 1 s is closed by picket (h1: the
        connection); reason tunnel_idle."""
        port = self.start()

        async def h1():
            async with ws_connect(port, "/idle/h1", pki=self.pki) as ws:
                await ws.send("once")
                self.assertEqual(await ws.recv(), "once")
                t0 = time.monotonic()
                await asyncio.wait_for(ws.wait_closed(), 30)  # the test sends nothing more
                return time.monotonic() - t0
        self.assertGreaterEqual(run(h1()), 0.9)
        self.assert_idle_record("/idle/h1")

    def test_idle_tunnel_closed_h2(self):
        """h2: the idle tunnel's stream ends, the connection carries on."""
        port = self.start()
        c = H2WS(port, self.pki)
        self.addCleanup(c.close)
        sid = c.open("/idle/h2")
        self.assertEqual(c.response(sid), 200)
        c.send_ws(sid, OP_TEXT, b"once")
        self.assertEqual(c.frames(sid, 1), [(OP_TEXT, b"once")])
        t0 = time.monotonic()
        c.wait_end(sid)
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        self.assertEqual(c.get("/idle/plain")[0], 200, "the h2 connection carries on")
        self.assert_idle_record("/idle/h2")

if __name__ == "__main__":
    pt.main(timeout=280)
