#!/usr/bin/python3
"""Test upstream app for picket's integration tests.

    /usr/bin/python3 upstream.py --h1 PORT     HTTP/1.1 (keep-alive, chunked request bodies)
    /usr/bin/python3 upstream.py --h2c PORT    HTTP/2 cleartext, prior knowledge only
    ... [--name NAME] [--log-requests] [--hold-dir DIR]

Binds 127.0.0.1 only and prints "ready" on stdout once it listens. With --log-requests
it then prints "request METHOD PATH" on stdout (flushed) as each request's head
arrives, before any answer: a test can wait for a request to be in flight. It also
prints "closed METHOD PATH" when the client closes the connection of an HTTP/1.1
request held by /hold/NAME, and "reset METHOD PATH" when the client resets an
HTTP/2 stream before its response started: a test sees that picket cancelled it.

Endpoints (both protocols):
    GET  /                 200 "hello from upstream\\n"
    GET  /headers          200 JSON {"method","path","protocol","headers":{name: value|[values]},
                           "trailers":{...}} (names lowercased; h2 pseudo-headers go to
                           "method"/"path"/"authority"/"scheme", not to "headers")
    GET  /bytes/N          N bytes of the pattern (byte i = i % 251), streamed, Content-Length N
    POST|PUT /upload       reads the body as a stream; 200 JSON {"len": N, "sha256": "..."}
    POST|PUT /echo         the request body back (h2c: streamed as it arrives)
    GET  /status/CODE      that status
    GET  /slow/MS          waits MS milliseconds, then 200 "slow done\\n"
    GET  /hold/NAME        (with --hold-dir DIR) waits until the file DIR/hold-NAME exists,
                           then 200 "released\\n": a request a test keeps in flight for
                           as long as it needs, and ends on an event of its choosing
    GET  /trailers         (h2c only) body plus trailer "x-checksum: abc"
Anything else: 404.
Every response carries "x-upstream-name: NAME" (--name NAME, default "upstream"), and
/headers JSON has "upstream": NAME.

Runs under /usr/bin/python3 (Debian's python3-h2 is only importable there).
"""
import hashlib
import json
import os
import re
import select
import socket
import sys
import threading
import time

PATTERN_MOD = 251
CHUNK = 64 * 1024
# Long enough that any window of CHUNK bytes can start at any phase of the pattern.
_PATTERN = bytes(i % PATTERN_MOD for i in range(CHUNK + PATTERN_MOD))


def pattern_chunks(n, offset=0, chunk=CHUNK):
    """Yields n bytes of the deterministic pattern (byte i = i % 251), chunk by chunk."""
    pos = offset
    end = offset + n
    while pos < end:
        ln = min(chunk, end - pos, CHUNK)
        ph = pos % PATTERN_MOD
        yield _PATTERN[ph:ph + ln]
        pos += ln


def pattern_sha256(n):
    h = hashlib.sha256()
    for c in pattern_chunks(n):
        h.update(c)
    return h.hexdigest()


def _parse_int(s, lo, hi):
    try:
        v = int(s)
    except ValueError:
        return None
    return v if lo <= v <= hi else None


MAX_BYTES = 8 * 1024 * 1024 * 1024  # /bytes/N upper bound (8 GiB)


UPSTREAM_NAME = "upstream"
LOG_REQUESTS = False
HOLD_DIR = None
_OUT_LOCK = threading.Lock()


class Hold:
    """The "delay" of /hold/NAME: over once HOLD_DIR/hold-NAME exists."""

    def __init__(self, name):
        self.path = os.path.join(HOLD_DIR, "hold-" + name)

    def released(self):
        return os.path.exists(self.path)


def _note(line):
    """With --log-requests: one line on stdout, flushed (what a test waits for)."""
    if LOG_REQUESTS:
        with _OUT_LOCK:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()


def _peer_closed(sock):
    """True once the client closed its end of the connection (EOF readable)."""
    try:
        r, _, _ = select.select([sock], [], [], 0)
        return bool(r) and sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def route(method, path):
    """Decides a response: (status, headers, body_kind, arg, delay_s).

    body_kind: "bytes" (arg = bytes), "pattern" (arg = n), "upload", "echo",
    "headers" (the request headers as JSON), "trailers"."""
    if LOG_REQUESTS:
        with _OUT_LOCK:
            sys.stdout.write("request %s %s\n" % (method, path))
            sys.stdout.flush()
    p = path.split("?", 1)[0]
    if p == "/":
        return 200, [("content-type", "text/plain")], "bytes", b"hello from upstream\n", 0
    if p == "/headers":
        return 200, [("content-type", "application/json")], "headers", None, 0
    if p.startswith("/bytes/"):
        n = _parse_int(p[len("/bytes/"):], 0, MAX_BYTES)
        if n is None:
            return 400, [("content-type", "text/plain")], "bytes", b"bad length\n", 0
        return 200, [("content-type", "application/octet-stream"),
                     ("content-length", str(n))], "pattern", n, 0
    if p == "/upload":
        if method not in ("POST", "PUT"):
            return 405, [("content-type", "text/plain")], "bytes", b"POST or PUT\n", 0
        return 200, [("content-type", "application/json")], "upload", None, 0
    if p == "/echo":
        return 200, [("content-type", "application/octet-stream")], "echo", None, 0
    if p.startswith("/status/"):
        code = _parse_int(p[len("/status/"):], 200, 599)
        if code is None:
            return 400, [("content-type", "text/plain")], "bytes", b"bad status\n", 0
        body = b"" if code in (204, 304) else ("status %d\n" % code).encode()
        return code, [("content-type", "text/plain")], "bytes", body, 0
    if p.startswith("/slow/"):
        ms = _parse_int(p[len("/slow/"):], 0, 600000)
        if ms is None:
            return 400, [("content-type", "text/plain")], "bytes", b"bad delay\n", 0
        return 200, [("content-type", "text/plain")], "bytes", b"slow done\n", ms / 1000.0
    if p == "/trailers":
        return 200, [("content-type", "text/plain")], "trailers", b"body before trailers\n", 0
    if p.startswith("/hold/") and HOLD_DIR and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", p[6:]):
        return 200, [("content-type", "text/plain")], "bytes", b"released\n", Hold(p[6:])
    return 404, [("content-type", "text/plain")], "bytes", b"not found\n", 0


def _add_header(d, name, value):
    if name in d:
        if isinstance(d[name], list):
            d[name].append(value)
        else:
            d[name] = [d[name], value]
    else:
        d[name] = value


# --------------------------------------------------------------------------
# HTTP/1.1


def serve_h1(port):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "picket-test-upstream/1"
        timeout = 300  # idle keep-alive connections are closed after this

        def log_message(self, fmt, *args):  # quiet
            pass

        def _body_chunks(self):
            """Yields the request body as it arrives (Content-Length or chunked)."""
            te = (self.headers.get("Transfer-Encoding") or "").lower()
            if "chunked" in te:
                while True:
                    line = self.rfile.readline(1024)
                    if not line:
                        raise ConnectionError("eof in chunk size")
                    size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        # trailer section up to the empty line
                        while True:
                            t = self.rfile.readline(8192)
                            if t in (b"\r\n", b"\n", b""):
                                break
                        return
                    left = size
                    while left > 0:
                        b = self.rfile.read(min(left, CHUNK))
                        if not b:
                            raise ConnectionError("eof in chunk")
                        left -= len(b)
                        yield b
                    self.rfile.readline(16)  # CRLF after the chunk
            else:
                left = int(self.headers.get("Content-Length") or 0)
                while left > 0:
                    b = self.rfile.read(min(left, CHUNK))
                    if not b:
                        raise ConnectionError("eof in body")
                    left -= len(b)
                    yield b

        def _send(self, status, headers, body=None, length=None):
            self.send_response(status)
            self.send_header("x-upstream-name", UPSTREAM_NAME)
            names = set()
            for k, v in headers:
                self.send_header(k, v)
                names.add(k.lower())
            if "content-length" not in names and status not in (204, 304):
                self.send_header("Content-Length", str(length if length is not None else len(body or b"")))
            self.end_headers()
            if body and self.command != "HEAD":
                self.wfile.write(body)

        def _handle(self):
            status, headers, kind, arg, delay = route(self.command, self.path)
            if kind == "upload":
                h = hashlib.sha256()
                n = 0
                for c in self._body_chunks():
                    h.update(c)
                    n += len(c)
                body = json.dumps({"len": n, "sha256": h.hexdigest()}).encode()
                self._send(status, headers, body)
                return
            if kind == "echo":
                body = b"".join(self._body_chunks())
                self._send(status, headers, body)
                return
            for _ in self._body_chunks():  # drain any request body
                pass
            if isinstance(delay, Hold):
                while not delay.released():
                    if _peer_closed(self.connection):
                        _note("closed %s %s" % (self.command, self.path))
                        self.close_connection = True
                        return
                    time.sleep(0.02)
            elif delay:
                time.sleep(delay)
            if kind == "headers":
                hd = {}
                for k, v in self.headers.items():
                    _add_header(hd, k.lower(), v)
                body = json.dumps({"upstream": UPSTREAM_NAME, "method": self.command, "path": self.path,
                                   "protocol": self.request_version, "headers": hd,
                                   "trailers": {}}).encode()
                self._send(status, headers, body)
            elif kind == "pattern":
                self._send(status, headers, None)
                if self.command != "HEAD":
                    for c in pattern_chunks(arg):
                        self.wfile.write(c)
            else:  # "bytes", or "trailers" (no trailers over h1 here)
                self._send(status, headers, arg)

        def _dispatch(self):
            try:
                self._handle()
            except (ConnectionError, BrokenPipeError, socket.timeout, ValueError):
                self.close_connection = True

        do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = _dispatch

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 1024

    srv = Server(("127.0.0.1", port), Handler)
    print("ready", flush=True)
    srv.serve_forever()


# --------------------------------------------------------------------------
# HTTP/2 cleartext (prior knowledge), one thread per connection, each a small
# event loop so that slow streams never hold up the others.

H2_WINDOW = 16 * 1024 * 1024 - 1
SEND_SLICE = 256 * 1024  # per stream per loop turn, for fairness


class _H2Stream:
    __slots__ = ("headers", "method", "path", "authority", "scheme", "hasher", "nbytes",
                 "body", "kind", "trailers_in", "resp", "out", "outbuf", "trailers_out",
                 "started", "ended_in", "echo_buf")

    def __init__(self):
        self.headers = {}
        self.method = self.path = self.authority = self.scheme = ""
        self.hasher = hashlib.sha256()
        self.nbytes = 0
        self.kind = None
        self.trailers_in = {}
        self.resp = None
        self.out = None          # iterator of body chunks, or None
        self.outbuf = b""        # bytes taken from `out` but not yet sent
        self.trailers_out = None
        self.started = False
        self.ended_in = False
        self.echo_buf = []


class H2Conn:
    def __init__(self, sock):
        import h2.config
        import h2.connection
        self.h2 = __import__("h2.events").events
        self.h2exc = __import__("h2.exceptions").exceptions
        self.sock = sock
        cfg = h2.config.H2Configuration(client_side=False, header_encoding=None,
                                        validate_inbound_headers=False)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.streams = {}
        self.timers = []  # [(when, stream_id)]
        self.closing = False

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def run(self):
        from h2.settings import SettingCodes
        self.sock.settimeout(120)
        self.conn.initiate_connection()
        self.conn.update_settings({
            SettingCodes.MAX_CONCURRENT_STREAMS: 1000,
            SettingCodes.INITIAL_WINDOW_SIZE: H2_WINDOW,
            SettingCodes.MAX_FRAME_SIZE: 1 << 20,
        })
        self.conn.increment_flow_control_window(H2_WINDOW - 65535)
        self.flush()
        try:
            while not self.closing:
                timeout = 1.0
                now = time.monotonic()
                if self.timers:
                    timeout = max(0.0, min(min(t for t, _ in self.timers) - now, timeout))
                if self._sendable():
                    timeout = 0.0
                r, _, _ = select.select([self.sock], [], [], timeout)
                if r:
                    data = self.sock.recv(256 * 1024)
                    if not data:
                        break
                    try:
                        events = self.conn.receive_data(data)
                    except self.h2exc.ProtocolError:
                        self.flush()
                        break
                    for ev in events:
                        self.on_event(ev)
                self.run_timers()
                self.pump()
                self.flush()
            self.flush()
        except (OSError, ConnectionError):
            pass
        finally:
            try:
                self.sock.close()
            except OSError:
                pass

    def on_event(self, ev):
        E = self.h2
        if isinstance(ev, E.RequestReceived):
            st = _H2Stream()
            for k, v in ev.headers:
                k = k.decode("latin-1").lower()
                v = v.decode("latin-1")
                if k == ":method":
                    st.method = v
                elif k == ":path":
                    st.path = v
                elif k == ":authority":
                    st.authority = v
                elif k == ":scheme":
                    st.scheme = v
                elif not k.startswith(":"):
                    _add_header(st.headers, k, v)
            st.resp = route(st.method, st.path)
            st.kind = st.resp[2]
            self.streams[ev.stream_id] = st
            if st.kind == "echo":
                self.start_response(ev.stream_id)
        elif isinstance(ev, E.DataReceived):
            st = self.streams.get(ev.stream_id)
            if st is not None:
                st.hasher.update(ev.data)
                st.nbytes += len(ev.data)
                if st.kind == "echo":
                    st.echo_buf.append(ev.data)
            try:
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            except self.h2exc.StreamClosedError:
                pass
        elif isinstance(ev, E.TrailersReceived):
            st = self.streams.get(ev.stream_id)
            if st is not None:
                for k, v in ev.headers:
                    _add_header(st.trailers_in, k.decode("latin-1").lower(), v.decode("latin-1"))
        elif isinstance(ev, E.StreamEnded):
            st = self.streams.get(ev.stream_id)
            if st is None:
                return
            st.ended_in = True
            if st.kind == "echo":
                return
            delay = st.resp[4]
            if isinstance(delay, Hold):
                self.timers.append((time.monotonic(), ev.stream_id))
            elif delay:
                self.timers.append((time.monotonic() + delay, ev.stream_id))
            else:
                self.start_response(ev.stream_id)
        elif isinstance(ev, E.StreamReset):
            st = self.streams.pop(ev.stream_id, None)
            if st is not None and not st.started:
                _note("reset %s %s" % (st.method, st.path))
        elif isinstance(ev, E.ConnectionTerminated):
            self.closing = True

    def run_timers(self):
        if not self.timers:
            return
        now = time.monotonic()
        due = [sid for t, sid in self.timers if t <= now]
        self.timers = [(t, sid) for t, sid in self.timers if t > now]
        for sid in due:
            st = self.streams.get(sid)
            if st is None:
                continue
            if isinstance(st.resp[4], Hold) and not st.resp[4].released():
                self.timers.append((now + 0.02, sid))  # look again shortly
                continue
            self.start_response(sid)

    def start_response(self, sid):
        st = self.streams[sid]
        status, headers, kind, arg, _ = st.resp
        hdrs = [(":status", str(status)), ("x-upstream-name", UPSTREAM_NAME)] + list(headers)
        body = None
        if kind == "bytes":
            body = arg
        elif kind == "trailers":
            body = arg
            st.trailers_out = [("x-checksum", "abc")]
        elif kind == "headers":
            body = json.dumps({"upstream": UPSTREAM_NAME, "method": st.method, "path": st.path,
                               "authority": st.authority,
                               "scheme": st.scheme, "protocol": "HTTP/2", "headers": st.headers,
                               "trailers": st.trailers_in}).encode()
        elif kind == "upload":
            body = json.dumps({"len": st.nbytes, "sha256": st.hasher.hexdigest()}).encode()
        if body is not None and status not in (204, 304) and not any(k == "content-length" for k, _ in hdrs):
            hdrs.append(("content-length", str(len(body))))
        if st.method == "HEAD":
            body = b""
            kind = "bytes"
        st.started = True
        try:
            if kind == "echo":
                self.conn.send_headers(sid, hdrs, end_stream=False)
                st.out = None  # fed from echo_buf by pump()
                return
            end = (kind == "bytes" and not body) or (kind == "pattern" and arg == 0)
            self.conn.send_headers(sid, hdrs, end_stream=end)
            if end:
                self.streams.pop(sid, None)
                return
            st.out = pattern_chunks(arg) if kind == "pattern" else iter([body])
        except self.h2exc.StreamClosedError:
            self.streams.pop(sid, None)

    def _sendable(self):
        for sid, st in self.streams.items():
            if not st.started:
                continue
            if st.kind == "echo" and st.ended_in and not st.outbuf and not st.echo_buf:
                return True  # only END_STREAM left, needs no window
            if st.outbuf or st.out is not None or st.echo_buf:
                try:
                    if self.conn.local_flow_control_window(sid) > 0:
                        return True
                except self.h2exc.StreamClosedError:
                    return True  # let pump() drop it
        return False

    def pump(self):
        for sid in list(self.streams):
            st = self.streams.get(sid)
            if st is None or not st.started:
                continue
            try:
                self._pump_stream(sid, st)
            except (self.h2exc.StreamClosedError, self.h2exc.ProtocolError):
                self.streams.pop(sid, None)
            self.flush()

    def _pump_stream(self, sid, st):
        if st.kind == "echo":
            if st.echo_buf:
                st.outbuf += b"".join(st.echo_buf)
                st.echo_buf = []
            src_done = st.ended_in
        else:
            src_done = False
        sent = 0
        while sent < SEND_SLICE:
            if not st.outbuf and st.out is not None:
                st.outbuf = next(st.out, b"")
                if not st.outbuf:
                    st.out = None
            if not st.outbuf:
                if st.kind == "echo" and not src_done:
                    return
                if st.out is None:
                    # body complete
                    if st.trailers_out:
                        self.conn.send_headers(sid, st.trailers_out, end_stream=True)
                    else:
                        self.conn.send_data(sid, b"", end_stream=True)
                    self.streams.pop(sid, None)
                    return
            win = self.conn.local_flow_control_window(sid)
            if win <= 0:
                return
            n = min(win, self.conn.max_outbound_frame_size, len(st.outbuf))
            self.conn.send_data(sid, st.outbuf[:n])
            st.outbuf = st.outbuf[n:]
            sent += n


def serve_h2c(port):
    __import__("h2.connection")  # fail early if python3-h2 is missing
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", port))
    lsock.listen(1024)
    print("ready", flush=True)
    while True:
        s, _ = lsock.accept()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=lambda s=s: H2Conn(s).run(), daemon=True).start()


def main(argv):
    global UPSTREAM_NAME, LOG_REQUESTS, HOLD_DIR
    if "--log-requests" in argv:
        LOG_REQUESTS = True
        argv = [a for a in argv if a != "--log-requests"]
    if "--hold-dir" in argv:
        i = argv.index("--hold-dir")
        HOLD_DIR = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    if len(argv) == 5 and argv[3] == "--name":
        UPSTREAM_NAME = argv[4]
        argv = argv[:3]
    if len(argv) != 3 or argv[1] not in ("--h1", "--h2c"):
        sys.stderr.write("usage: upstream.py --h1|--h2c PORT [--name NAME] [--log-requests] "
                         "[--hold-dir DIR]\n")
        return 2
    port = int(argv[2])
    try:
        if argv[1] == "--h1":
            serve_h1(port)
        else:
            serve_h2c(port)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
