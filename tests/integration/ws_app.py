#!/usr/bin/python3
"""WebSocket upstream apps for picket's integration tests (test_websocket.py,
issue 18 item 1), and a small RFC 6455 frame codec the tests share.

    /usr/bin/python3 ws_app.py --h1 PORT --log FILE
        python3-websockets server (HTTP/1.1 Upgrade), see H1 below
    /usr/bin/python3 ws_app.py --h2c PORT --log FILE [--no-connect-protocol]
        HTTP/2 cleartext (prior knowledge, python3-h2), RFC 8441 extended CONNECT;
        with --no-connect-protocol it does not advertise SETTINGS_ENABLE_CONNECT_PROTOCOL
    /usr/bin/python3 ws_app.py --raw101 PORT --log FILE
        raw sockets: answers every request with "101 Switching Protocols"
    /usr/bin/python3 ws_app.py --h1eof PORT --log FILE
        raw sockets: a WebSocket echo that answers the client side's EOF (a half-close)
        with a last text frame "eof after N" (N: payload bytes received), then closes;
        on a path containing "/reset" it resets the connection when the second frame
        arrives (the first is echoed)
    /usr/bin/python3 ws_app.py --selftest
        each server above against a client in this process, without picket

Every mode binds 127.0.0.1 only and prints "ready" on stdout once it listens.
FILE gets one JSON object per line, flushed at once:

  {"event": "request", "mode": "h1"|"h2c"|"raw101", "method", "path", "protocol"
   (h2c: the :protocol pseudo-header or null), "headers": [[name, value], ...]}
       for every request head received (before it is answered);
  {"event": "open", "path"[, "subprotocol", "extensions"]}  a tunnel was accepted (101 / 200);
  {"event": "closed", "path", "code", "reason", "frames_in", "bytes_in"}
       a tunnel ended (code/reason: the close frame the client sent, or null).

H1 (websockets 10.4, no message size limit; it accepts permessage-deflate when offered and
  the subprotocol "chat.v1" when the client lists it; "open" records both):
  - a request without an Upgrade field: 200, body = JSON {"path", "headers"} (what
    arrived, so a test sees the fields picket sent);
  - a path containing "/refuse403": 403 "no websocket here\\n" even to an upgrade;
  - a path containing "/plain200": 200 "plain answer\\n" even to an upgrade;
  - otherwise the handshake, then: a path containing "/close": the first message is
    echoed and the server closes with code 4000 "server says bye"; any other path:
    every message echoed back (text as text, binary as binary).
H2C: extended CONNECT with :protocol websocket: 200, then the WebSocket frames the
  client sends (masked, as RFC 6455 requires of a client) are decoded and echoed back
  unmasked, same opcode and FIN; a ping gets a pong; a close frame is answered with the
  same close frame and the stream ended. Any other request: 200 + JSON {"path",
  "headers"}. Flow-control credit is returned as data arrives; output waits for window.
RAW101: reads a request head, answers "HTTP/1.1 101 Switching Protocols" (Upgrade:
  websocket, Connection: Upgrade, a made-up Sec-WebSocket-Accept), then reads until EOF.
"""
import asyncio
import base64
import hashlib
import json
import os
import select
import socket
import struct
import sys
import threading
from http import HTTPStatus

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 1.3
OP_CONT, OP_TEXT, OP_BIN, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
MAX_FRAME = 1 << 26  # the codec refuses frames over 64 MiB (test input only)


def accept_key(key):
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (str or bytes)."""
    if isinstance(key, str):
        key = key.encode()
    return base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()


def _mask(payload, key):
    if not payload:
        return b""
    n = len(payload)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def encode_frame(opcode, payload=b"", fin=True, mask=None):
    """One WebSocket frame. mask: None (server to client) or True / 4 bytes (client)."""
    if mask is True:
        mask = os.urandom(4)
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if mask:
        return head + mask + _mask(payload, mask)
    return head + payload


def close_payload(code, reason=""):
    return struct.pack("!H", code) + reason.encode()


def parse_close(payload):
    """(code, reason) of a close frame's payload; (None, "") when empty."""
    if len(payload) < 2:
        return None, ""
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode(errors="replace")


class FrameDecoder:
    """Feed bytes, get frames: [(fin, opcode, payload, masked)], unmasked payloads.
    Raises ValueError on reserved bits, an over-long length or (when `want_masked` is
    not None) a masking that breaks RFC 6455's rule for that direction."""

    def __init__(self, want_masked=None):
        self.buf = bytearray()
        self.want_masked = want_masked

    def feed(self, data):
        self.buf += data
        out = []
        while True:
            b = self.buf
            if len(b) < 2:
                return out
            b0, b1 = b[0], b[1]
            if b0 & 0x70:
                raise ValueError("RSV bits set: %#x" % b0)
            masked = bool(b1 & 0x80)
            if self.want_masked is not None and masked != self.want_masked:
                raise ValueError("frame masked=%s, RFC 6455 wants %s" % (masked, self.want_masked))
            n = b1 & 0x7F
            off = 2
            if n == 126:
                if len(b) < 4:
                    return out
                n = struct.unpack("!H", bytes(b[2:4]))[0]
                off = 4
            elif n == 127:
                if len(b) < 10:
                    return out
                n = struct.unpack("!Q", bytes(b[2:10]))[0]
                off = 10
            if n > MAX_FRAME:
                raise ValueError("frame of %d bytes" % n)
            key = None
            if masked:
                if len(b) < off + 4:
                    return out
                key = bytes(b[off:off + 4])
                off += 4
            if len(b) < off + n:
                return out
            payload = bytes(b[off:off + n])
            del self.buf[:off + n]
            if key:
                payload = _mask(payload, key)
            out.append((bool(b0 & 0x80), b0 & 0x0F, payload, masked))


# --------------------------------------------------------------------------
# the request log

_LOG_LOCK = threading.Lock()
_LOG_F = None


def note(obj):
    line = json.dumps(obj, separators=(",", ":")) + "\n"
    with _LOG_LOCK:
        _LOG_F.write(line)
        _LOG_F.flush()


# --------------------------------------------------------------------------
# H1: python3-websockets

def serve_h1(port):
    import websockets
    import websockets.server

    async def process_request(path, headers):
        hdrs = [[k, v] for k, v in headers.raw_items()]
        note({"event": "request", "mode": "h1", "method": "GET", "path": path,
              "protocol": None, "headers": hdrs})
        if "/refuse403" in path:
            return HTTPStatus.FORBIDDEN, [("Content-Type", "text/plain")], b"no websocket here\n"
        if "/plain200" in path:
            return HTTPStatus.OK, [("Content-Type", "text/plain")], b"plain answer\n"
        if "upgrade" not in {k.lower() for k, _ in headers.raw_items()}:
            body = json.dumps({"path": path, "headers": hdrs}).encode()
            return HTTPStatus.OK, [("Content-Type", "application/json")], body
        return None

    async def handler(ws, path):
        note({"event": "open", "path": path, "subprotocol": ws.subprotocol,
              "extensions": [e.name for e in ws.extensions]})
        frames = nbytes = 0
        try:
            if "/close" in path:
                msg = await ws.recv()
                frames += 1
                nbytes += len(msg)
                await ws.send(msg)
                await ws.close(4000, "server says bye")
            else:
                async for msg in ws:
                    frames += 1
                    nbytes += len(msg)
                    await ws.send(msg)
        except websockets.ConnectionClosed:
            pass
        note({"event": "closed", "path": path, "code": ws.close_code, "reason": ws.close_reason,
              "frames_in": frames, "bytes_in": nbytes})

    async def main():
        async with websockets.serve(handler, "127.0.0.1", port, process_request=process_request,
                                    subprotocols=["chat.v1"], max_size=None, max_queue=4,
                                    ping_interval=None, close_timeout=5):
            print("ready", flush=True)
            await asyncio.Future()

    asyncio.run(main())


# --------------------------------------------------------------------------
# H2C: extended CONNECT (RFC 8441) on python3-h2

H2_WINDOW = 1 << 20


class _Tunnel:
    def __init__(self, path):
        self.path = path
        self.dec = FrameDecoder(want_masked=True)
        self.out = bytearray()
        self.end_after = False  # end the stream once `out` is sent
        self.frames = 0
        self.nbytes = 0
        self.close = None


class H2CConn:
    def __init__(self, sock, advertise):
        import h2.config
        import h2.connection
        import h2.events
        import h2.exceptions
        self.E = h2.events
        self.X = h2.exceptions
        self.sock = sock
        self.advertise = advertise
        self.conn = h2.connection.H2Connection(config=h2.config.H2Configuration(
            client_side=False, header_encoding=None))
        self.tunnels = {}

    def flush(self):
        d = self.conn.data_to_send()
        if d:
            self.sock.sendall(d)

    def run(self):
        import h2.settings
        from h2.settings import SettingCodes
        # everything in the server's first SETTINGS frame, as real servers send it
        s = {SettingCodes.INITIAL_WINDOW_SIZE: H2_WINDOW, SettingCodes.MAX_CONCURRENT_STREAMS: 100}
        if self.advertise:
            s[SettingCodes.ENABLE_CONNECT_PROTOCOL] = 1
        self.conn.local_settings = h2.settings.Settings(client=False, initial_values=s)
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(H2_WINDOW)
        self.flush()
        try:
            while True:
                wait = 0.0 if self._sendable() else 5.0
                r, _, _ = select.select([self.sock], [], [], wait)
                if r:
                    data = self.sock.recv(1 << 18)
                    if not data:
                        break
                    try:
                        events = self.conn.receive_data(data)
                    except self.X.ProtocolError:
                        self.flush()
                        break
                    for ev in events:
                        self.on_event(ev)
                self.pump()
                self.flush()
        except OSError:
            pass
        finally:
            for sid, t in self.tunnels.items():
                self._closed(t)
            self.sock.close()

    def _closed(self, t):
        code, reason = t.close if t.close else (None, None)
        note({"event": "closed", "path": t.path, "code": code, "reason": reason,
              "frames_in": t.frames, "bytes_in": t.nbytes})

    def on_event(self, ev):
        E = self.E
        if isinstance(ev, E.RequestReceived):
            h = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in ev.headers]
            pseudo = {k: v for k, v in h if k.startswith(":")}
            plain = [[k, v] for k, v in h if not k.startswith(":")]
            note({"event": "request", "mode": "h2c", "method": pseudo.get(":method"),
                  "path": pseudo.get(":path"), "protocol": pseudo.get(":protocol"),
                  "headers": plain})
            if pseudo.get(":method") == "CONNECT" and pseudo.get(":protocol") == "websocket":
                self.tunnels[ev.stream_id] = _Tunnel(pseudo.get(":path"))
                self.conn.send_headers(ev.stream_id, [(":status", "200")])
                note({"event": "open", "path": pseudo.get(":path")})
            else:
                body = json.dumps({"path": pseudo.get(":path"), "headers": plain}).encode()
                self.conn.send_headers(ev.stream_id, [(":status", "200"),
                                                      ("content-type", "application/json"),
                                                      ("content-length", str(len(body)))])
                self.conn.send_data(ev.stream_id, body, end_stream=True)
        elif isinstance(ev, E.DataReceived):
            try:
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            except self.X.StreamClosedError:
                pass
            t = self.tunnels.get(ev.stream_id)
            if t is None:
                return
            try:
                frames = t.dec.feed(ev.data)
            except ValueError as e:
                sys.stderr.write("h2c tunnel %s: %s\n" % (t.path, e))
                self.conn.reset_stream(ev.stream_id, 1)
                self._closed(self.tunnels.pop(ev.stream_id))
                return
            for fin, op, payload, _ in frames:
                if op in (OP_CONT, OP_TEXT, OP_BIN):
                    t.frames += 1
                    t.nbytes += len(payload)
                    t.out += encode_frame(op, payload, fin)
                elif op == OP_PING:
                    t.out += encode_frame(OP_PONG, payload)
                elif op == OP_CLOSE:
                    t.close = parse_close(payload)
                    t.out += encode_frame(OP_CLOSE, payload)
                    t.end_after = True
        elif isinstance(ev, E.StreamEnded):
            t = self.tunnels.get(ev.stream_id)
            if t is not None and not t.end_after:
                t.end_after = True
        elif isinstance(ev, E.StreamReset):
            t = self.tunnels.pop(ev.stream_id, None)
            if t is not None:
                self._closed(t)

    def _sendable(self):
        for sid, t in self.tunnels.items():
            if (t.out and self.conn.local_flow_control_window(sid) > 0) or \
                    (not t.out and t.end_after):
                return True
        return False

    def pump(self):
        for sid in list(self.tunnels):
            t = self.tunnels[sid]
            try:
                while t.out:
                    win = self.conn.local_flow_control_window(sid)
                    if win <= 0:
                        break
                    n = min(win, self.conn.max_outbound_frame_size, len(t.out))
                    self.conn.send_data(sid, bytes(t.out[:n]))
                    del t.out[:n]
                if not t.out and t.end_after:
                    self.conn.end_stream(sid)
                    self._closed(self.tunnels.pop(sid))
            except (self.X.StreamClosedError, self.X.ProtocolError):
                self._closed(self.tunnels.pop(sid))


def _listen(port):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(128)
    return ls


def serve_h2c(port, advertise):
    __import__("h2.connection")
    ls = _listen(port)
    print("ready", flush=True)
    while True:
        s, _ = ls.accept()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=lambda s=s: H2CConn(s, advertise).run(), daemon=True).start()


# --------------------------------------------------------------------------
# RAW101: a 101 to whatever was asked

def recv_head(sock, buf=b"", limit=1 << 20):
    """Reads from sock (after buf) until an HTTP/1.1 head ends. Returns (the head's lines,
    the bytes after it), or None when the peer left first or more than limit bytes came
    without the head's end. Also test_websocket.py's, for responses."""
    while b"\r\n\r\n" not in buf:
        b = sock.recv(65536)
        if not b:
            return None
        buf += b
        if len(buf) > limit:
            return None
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head.decode("latin-1").split("\r\n"), rest


def _read_request_head(s, mode):
    """Reads an HTTP/1.1 request head from socket s (at most 1 MiB) and notes it as a
    "request" event. Returns (path, headers as [name, value] pairs, the bytes after the
    head), or None when the client left or sent too much."""
    got = recv_head(s)
    if got is None:
        return None
    lines, rest_bytes = got
    method, _, rest = lines[0].partition(" ")
    path = rest.rsplit(" ", 1)[0]
    hdrs = [[k.strip(), v.strip()] for k, _, v in (ln.partition(":") for ln in lines[1:])]
    note({"event": "request", "mode": mode, "method": method, "path": path, "protocol": None,
          "headers": hdrs})
    return path, hdrs, rest_bytes


def _raw101_conn(s):
    try:
        s.settimeout(60)
        if _read_request_head(s, "raw101") is None:
            return
        s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Accept: bm90IGFza2Vk\r\n\r\n"
                  + encode_frame(OP_TEXT, b"surprise"))
        while s.recv(65536):
            pass
    except OSError:
        pass
    finally:
        s.close()


def _h1eof_conn(s):
    """A WebSocket server on raw sockets that shows half-closes: 101 with the right
    Accept, every frame echoed unmasked; at EOF from the client side a text frame
    "eof after N" (N: payload bytes received), then close."""
    path = None
    n = frames = 0
    try:
        s.settimeout(60)
        got = _read_request_head(s, "h1eof")
        if got is None:
            return
        path, hdrs, buf = got
        key = [v for k, v in hdrs if k.lower() == "sec-websocket-key"]
        if len(key) != 1:
            s.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                  + accept_key(key[0]).encode() + b"\r\n\r\n")
        note({"event": "open", "path": path})
        dec = FrameDecoder(want_masked=True)
        data = buf
        while True:
            for fin, op, payload, _ in dec.feed(data):
                frames += 1
                n += len(payload)
                if "/reset" in path and frames == 2:  # the second frame: a TCP reset
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    note({"event": "reset", "path": path})
                    return
                s.sendall(encode_frame(op, payload, fin))
            data = s.recv(65536)
            if not data:
                break
        s.sendall(encode_frame(OP_TEXT, b"eof after %d" % n))
    except (OSError, ValueError) as e:
        sys.stderr.write("h1eof %s: %s\n" % (path, e))
    finally:
        s.close()
        if path is not None:
            note({"event": "closed", "path": path, "code": None, "reason": "eof",
                  "frames_in": frames, "bytes_in": n})


def serve_h1eof(port):
    ls = _listen(port)
    print("ready", flush=True)
    while True:
        s, _ = ls.accept()
        threading.Thread(target=_h1eof_conn, args=(s,), daemon=True).start()


def serve_raw101(port):
    ls = _listen(port)
    print("ready", flush=True)
    while True:
        s, _ = ls.accept()
        threading.Thread(target=_raw101_conn, args=(s,), daemon=True).start()


# --------------------------------------------------------------------------
# selftest: each server against a client in this process (no picket)

def _selftest():
    import subprocess
    import tempfile
    import time
    here = os.path.dirname(os.path.abspath(__file__))
    tmp = tempfile.mkdtemp(prefix="ws-app-selftest-")
    procs = []

    def start(mode, *extra):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        log = os.path.join(tmp, "%s-%d.jsonl" % (mode, port))
        p = subprocess.Popen([sys.executable, os.path.join(here, "ws_app.py"), "--" + mode,
                              str(port), "--log", log] + list(extra), stdout=subprocess.PIPE)
        procs.append(p)
        assert p.stdout.readline().strip() == b"ready"
        return port, log

    def records(log):
        with open(log) as f:
            return [json.loads(ln) for ln in f if ln.strip()]

    try:
        import websockets
        port, log = start("h1")

        async def h1():
            async with websockets.connect("ws://127.0.0.1:%d/echo" % port,
                                          compression=None) as ws:
                await ws.send("hi")
                assert await ws.recv() == "hi"
                await ws.send(b"\x00\x01" * 1000)
                assert await ws.recv() == b"\x00\x01" * 1000
            async with websockets.connect("ws://127.0.0.1:%d/close" % port) as ws:
                await ws.send("x")
                assert await ws.recv() == "x"
                try:
                    await ws.recv()
                    raise AssertionError("no close")
                except websockets.ConnectionClosed as e:
                    assert (e.code, e.reason) == (4000, "server says bye"), e
            try:
                async with websockets.connect("ws://127.0.0.1:%d/refuse403" % port):
                    raise AssertionError("refuse403 upgraded")
            except websockets.InvalidStatusCode as e:
                assert e.status_code == 403
        asyncio.run(h1())
        deadline = time.monotonic() + 10
        while not [r for r in records(log) if r["event"] == "closed" and r["path"] == "/echo"]:
            assert time.monotonic() < deadline, records(log)
            time.sleep(0.05)
        r = [r for r in records(log) if r["event"] == "closed" and r["path"] == "/echo"][0]
        assert r["code"] == 1000 and r["frames_in"] == 2 and r["bytes_in"] == 2002, r

        # h2c with and without ENABLE_CONNECT_PROTOCOL
        import h2.config
        import h2.connection
        import h2.events
        from h2.settings import SettingCodes
        for advertise in (True, False):
            port, log = start("h2c", *([] if advertise else ["--no-connect-protocol"]))
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                     header_encoding=None))
            c.initiate_connection()
            s.sendall(c.data_to_send())
            got_settings = False
            while not got_settings:
                for ev in c.receive_data(s.recv(65536)):
                    if isinstance(ev, h2.events.RemoteSettingsChanged):
                        got_settings = True
                s.sendall(c.data_to_send())
            ecp = c.remote_settings.get(SettingCodes.ENABLE_CONNECT_PROTOCOL, 0)
            assert ecp == (1 if advertise else 0), (advertise, ecp)
            c.send_headers(1, [(":method", "CONNECT"), (":protocol", "websocket"),
                               (":scheme", "http"), (":path", "/chat"),
                               (":authority", "x"), ("sec-websocket-version", "13")])
            c.send_data(1, encode_frame(OP_TEXT, b"hello h2", mask=True)
                        + encode_frame(OP_CLOSE, close_payload(1000, "done"), mask=True))
            s.sendall(c.data_to_send())
            dec = FrameDecoder(want_masked=False)
            frames, status, ended = [], None, False
            while not ended:
                data = s.recv(65536)
                assert data
                for ev in c.receive_data(data):
                    if isinstance(ev, h2.events.ResponseReceived):
                        status = dict(ev.headers)[b":status"]
                    elif isinstance(ev, h2.events.DataReceived):
                        frames += dec.feed(ev.data)
                        c.acknowledge_received_data(ev.flow_controlled_length, 1)
                    elif isinstance(ev, h2.events.StreamEnded):
                        ended = True
                s.sendall(c.data_to_send())
            assert status == b"200", status
            assert [(op, p) for _, op, p, _ in frames] == [
                (OP_TEXT, b"hello h2"), (OP_CLOSE, close_payload(1000, "done"))], frames
            s.close()
            rq = [r for r in records(log) if r["event"] == "request"][0]
            assert (rq["method"], rq["protocol"], rq["path"]) == ("CONNECT", "websocket", "/chat"), rq

        port, log = start("h1eof")
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET /e HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                  + encode_frame(OP_TEXT, b"abc", mask=True))
        s.shutdown(socket.SHUT_WR)
        got = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += b
        head, rest = got.split(b"\r\n\r\n", 1)
        assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head, head
        fr = FrameDecoder(want_masked=False).feed(rest)
        assert [(op, p) for _, op, p, _ in fr] == [(OP_TEXT, b"abc"), (OP_TEXT, b"eof after 3")], fr
        s.close()

        port, log = start("raw101")
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 101 ")
        s.close()
        import websockets.utils
        assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        assert accept_key("abc") == websockets.utils.accept_key("abc")
        print("selftest ok")
        return 0
    finally:
        for p in procs:
            p.terminate()
            p.wait(5)
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv):
    global _LOG_F
    if argv[1:] == ["--selftest"]:
        return _selftest()
    args = argv[1:]
    advertise = "--no-connect-protocol" not in args
    args = [a for a in args if a != "--no-connect-protocol"]
    if len(args) != 4 or args[0] not in ("--h1", "--h2c", "--raw101", "--h1eof") \
            or args[2] != "--log":
        sys.stderr.write(__doc__)
        return 2
    _LOG_F = open(args[3], "a")
    port = int(args[1])
    try:
        if args[0] == "--h1":
            serve_h1(port)
        elif args[0] == "--h2c":
            serve_h2c(port, advertise)
        elif args[0] == "--h1eof":
            serve_h1eof(port)
        else:
            serve_raw101(port)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
