#!/usr/bin/python3
"""Recording upstream app for picket's integration tests (test_integrity.py): it
writes down exactly what it received, so a test can compare it with what picket
decided on.

    /usr/bin/python3 recorder.py --h1 PORT --log FILE     HTTP/1.1 on raw sockets
    /usr/bin/python3 recorder.py --h2c PORT --log FILE    HTTP/2 cleartext, prior knowledge

Binds 127.0.0.1 only and prints "ready" on stdout once it listens (like upstream.py).

Every request, whatever its method or target, is answered 200 with the body "ok\\n"
(Content-Length 3, "x-recorder: h1|h2c"; HEAD: the same head, no body), after its whole
body (and trailers) came in. A request with a field "x-recorder-trailers" gets the body
without Content-Length (h1: chunked) and a trailer section: "x-resp-ok: 1",
"x-resp-also: 2" and, on h1, fields a proxy must not pass on (connection, keep-alive,
transfer-encoding, content-length; they would make an h2 message malformed, so h2c
sends them only for "x-recorder-trailers: all").
Before the answer is sent, one JSON object is appended to FILE and flushed:

    {"protocol": "HTTP/1.1" | "HTTP/2",
     "method", "target" (h1 request-target / h2 :path, as received),
     "path", "query" (target split at the first "?"; query null without "?"),
     "authority" (h1: the first Host value; h2: :authority, null when absent),
     "host_fields": [every "host" field value, in order],
     "request_line" (h1: the request line as received),
     "raw_headers" (h1: the header lines exactly as received, in order),
     "pseudo": [[name, value], ...] (h2: pseudo-header fields in order),
     "headers": [[name, value], ...] (in order, with duplicates; h1 names as sent,
                 value with surrounding whitespace removed; h2 as sent),
     "trailers": [[name, value], ...] (h1 chunked trailer section / h2 trailers),
     "body_len", "body_sha256", "request_id" (first x-request-id value or null),
     "conn" (a per-process connection number), "t" (time received)}

Bodies are read as they arrive (Content-Length or chunked on h1, DATA frames on h2,
flow-control credit returned at once) and hashed, never held whole: a slow upload
makes progress and a large one costs bounded memory. h1 connections are kept alive
until the client closes (or sends Connection: close).
"""
import argparse
import hashlib
import itertools
import json
import socket
import sys
import threading
import time

LOG_LOCK = threading.Lock()
LOG_F = None
CONN_IDS = itertools.count(1)
MAX_LINE = 256 * 1024        # longest request line / header line accepted
MAX_HEAD_LINES = 10000       # header + trailer lines per request
READ = 64 * 1024


def split_target(target):
    if target is None:
        return None, None
    path, sep, query = target.partition("?")
    return path, (query if sep else None)


def write_record(rec):
    line = json.dumps(rec, separators=(",", ":")) + "\n"
    with LOG_LOCK:
        LOG_F.write(line)
        LOG_F.flush()


def first_value(fields, name):
    for k, v in fields:
        if k.lower() == name:
            return v
    return None


# --------------------------------------------------------------------------
# HTTP/1.1 on raw sockets

class H1Reader:
    """Buffered reads from a socket: lines (CRLF or LF) and byte runs."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.eof = False

    def _fill(self):
        if self.eof:
            return False
        b = self.sock.recv(READ)
        if not b:
            self.eof = True
            return False
        self.buf += b
        return True

    def line(self):
        """One line without its CRLF/LF; None at EOF before any byte."""
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                ln = bytes(self.buf[:i])
                del self.buf[:i + 1]
                return ln[:-1] if ln.endswith(b"\r") else ln
            if len(self.buf) > MAX_LINE:
                raise ValueError("line too long")
            if not self._fill():
                if self.buf:
                    raise ConnectionError("eof in a line")
                return None

    def chunks(self, n):
        """Yields exactly n bytes in pieces as they arrive."""
        while n > 0:
            if not self.buf and not self._fill():
                raise ConnectionError("eof in body")
            take = min(n, len(self.buf))
            piece = bytes(self.buf[:take])
            del self.buf[:take]
            n -= take
            yield piece


def parse_field(line):
    name, sep, value = line.partition(":")
    if not sep:
        raise ValueError("header line without a colon: %r" % line)
    return [name, value.strip(" \t")]


def h1_request(rd, conn_id):
    """Reads one request; returns (record, close_after) or None at a clean EOF."""
    first = rd.line()
    while first == b"":          # tolerate CRLF between requests (RFC 9112 2.2)
        first = rd.line()
    if first is None:
        return None
    t0 = time.time()
    request_line = first.decode("latin-1")
    parts = request_line.split(" ")
    if len(parts) != 3:
        raise ValueError("bad request line %r" % request_line)
    method, target, version = parts
    raw = []
    while True:
        ln = rd.line()
        if ln is None:
            raise ConnectionError("eof in headers")
        if ln == b"":
            break
        raw.append(ln.decode("latin-1"))
        if len(raw) > MAX_HEAD_LINES:
            raise ValueError("too many header lines")
    headers = [parse_field(x) for x in raw]
    te = ",".join(v for k, v in headers if k.lower() == "transfer-encoding").lower()
    cls = [v for k, v in headers if k.lower() == "content-length"]
    h = hashlib.sha256()
    n = 0
    trailers = []
    raw_trailers = []
    if "chunked" in te:
        while True:
            sl = rd.line()
            if sl is None:
                raise ConnectionError("eof in chunk size")
            size = int(sl.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while True:
                    tl = rd.line()
                    if tl is None:
                        raise ConnectionError("eof in trailers")
                    if tl == b"":
                        break
                    raw_trailers.append(tl.decode("latin-1"))
                    trailers.append(parse_field(tl.decode("latin-1")))
                    if len(trailers) > MAX_HEAD_LINES:
                        raise ValueError("too many trailer lines")
                break
            for piece in rd.chunks(size):
                h.update(piece)
                n += len(piece)
            if rd.line() != b"":
                raise ValueError("no CRLF after a chunk")
    elif cls:
        for piece in rd.chunks(int(cls[0].strip())):
            h.update(piece)
            n += len(piece)
    conn_tokens = ",".join(v for k, v in headers if k.lower() == "connection").lower()
    close = "close" in [t.strip() for t in conn_tokens.split(",")] or version == "HTTP/1.0"
    path, query = split_target(target)
    hosts = [v for k, v in headers if k.lower() == "host"]
    rec = {"protocol": version, "method": method, "target": target, "path": path,
           "query": query, "authority": hosts[0] if hosts else None, "host_fields": hosts,
           "request_line": request_line, "raw_headers": raw, "pseudo": [],
           "headers": headers, "trailers": trailers, "raw_trailers": raw_trailers,
           "body_len": n, "body_sha256": h.hexdigest(),
           "request_id": first_value(headers, "x-request-id"), "conn": conn_id, "t": t0}
    return rec, close


H1_RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-recorder: h1\r\n"
               b"content-length: 3\r\n\r\nok\n")
H1_RESPONSE_HEAD = H1_RESPONSE[:-3]  # the same head, no body
# asked for with a request field "x-recorder-trailers": a chunked answer whose trailer
# section has an ordinary field and fields no proxy may pass on in trailers
RESPONSE_TRAILERS = [("x-resp-ok", "1"), ("connection", "close"), ("keep-alive", "timeout=5"),
                     ("transfer-encoding", "chunked"), ("content-length", "99"), ("x-resp-also", "2")]
# connection-specific fields, and content-length in trailers, make an HTTP/2 message
# malformed (RFC 9113 8.1, 8.2.2): the h2c side leaves them out unless the request says
# "x-recorder-trailers: all"
H2_FORBIDDEN = ("connection", "keep-alive", "transfer-encoding", "content-length")
H1_RESPONSE_TRAILERS = (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-recorder: h1\r\n"
                        b"transfer-encoding: chunked\r\n\r\n3\r\nok\n\r\n0\r\n"
                        + b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in RESPONSE_TRAILERS)
                        + b"\r\n")


def h1_conn(sock):
    conn_id = next(CONN_IDS)
    sock.settimeout(300)
    rd = H1Reader(sock)
    try:
        while True:
            got = h1_request(rd, conn_id)
            if got is None:
                break
            rec, close = got
            write_record(rec)
            if rec["method"] == "HEAD":
                sock.sendall(H1_RESPONSE_HEAD)
            elif first_value(rec["headers"], "x-recorder-trailers") is not None:
                sock.sendall(H1_RESPONSE_TRAILERS)
            else:
                sock.sendall(H1_RESPONSE)
            if close:
                break
    except (OSError, ConnectionError, ValueError) as e:
        sys.stderr.write("h1 conn %d: %s\n" % (conn_id, e))
    finally:
        try:
            sock.close()
        except OSError:
            pass


def serve_h1(port):
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", port))
    lsock.listen(1024)
    print("ready", flush=True)
    while True:
        s, _ = lsock.accept()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=h1_conn, args=(s,), daemon=True).start()


# --------------------------------------------------------------------------
# HTTP/2 cleartext (prior knowledge)

H2_WINDOW = 1 << 20


class H2Stream:
    def __init__(self, pseudo, headers):
        self.pseudo = pseudo
        self.headers = headers
        self.trailers = []
        self.hasher = hashlib.sha256()
        self.n = 0
        self.t = time.time()


def _dec(b):
    return b.decode("latin-1") if isinstance(b, bytes) else b


def h2_conn(sock):
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions
    from h2.settings import SettingCodes
    ev = h2.events
    conn_id = next(CONN_IDS)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=False, header_encoding=None, validate_inbound_headers=False,
        normalize_inbound_headers=False, validate_outbound_headers=False))
    conn.initiate_connection()
    conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: H2_WINDOW,
                          SettingCodes.MAX_CONCURRENT_STREAMS: 1000})
    conn.increment_flow_control_window(H2_WINDOW)
    streams = {}
    sock.settimeout(300)
    try:
        sock.sendall(conn.data_to_send())
        while True:
            data = sock.recv(READ)
            if not data:
                break
            try:
                events = conn.receive_data(data)
            except h2.exceptions.ProtocolError as e:
                sys.stderr.write("h2 conn %d: protocol error %s\n" % (conn_id, e))
                sock.sendall(conn.data_to_send())
                break
            for e in events:
                if isinstance(e, ev.RequestReceived):
                    pseudo, headers = [], []
                    for k, v in e.headers:
                        k, v = _dec(k), _dec(v)
                        (pseudo if k.startswith(":") else headers).append([k, v])
                    streams[e.stream_id] = H2Stream(pseudo, headers)
                elif isinstance(e, ev.DataReceived):
                    st = streams.get(e.stream_id)
                    if st is not None:
                        st.hasher.update(e.data)
                        st.n += len(e.data)
                    if e.flow_controlled_length:
                        try:
                            conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                        except h2.exceptions.StreamClosedError:
                            pass
                elif isinstance(e, ev.TrailersReceived):
                    st = streams.get(e.stream_id)
                    if st is not None:
                        st.trailers = [[_dec(k), _dec(v)] for k, v in e.headers]
                elif isinstance(e, ev.StreamEnded):
                    st = streams.pop(e.stream_id, None)
                    if st is None:
                        continue
                    ps = dict((k, v) for k, v in st.pseudo)
                    target = ps.get(":path")
                    path, query = split_target(target)
                    hosts = [v for k, v in st.headers if k.lower() == "host"]
                    write_record({
                        "protocol": "HTTP/2", "method": ps.get(":method"), "target": target,
                        "path": path, "query": query, "authority": ps.get(":authority"),
                        "host_fields": hosts, "request_line": None, "raw_headers": None,
                        "pseudo": st.pseudo, "headers": st.headers, "trailers": st.trailers,
                        "raw_trailers": None, "body_len": st.n,
                        "body_sha256": st.hasher.hexdigest(),
                        "request_id": first_value(st.headers, "x-request-id"),
                        "conn": conn_id, "t": st.t})
                    head = ps.get(":method") == "HEAD"
                    with_trailers = first_value(st.headers, "x-recorder-trailers") is not None
                    try:
                        hdrs = [(":status", "200"), ("content-type", "text/plain"),
                                ("x-recorder", "h2c")]
                        if not with_trailers:
                            hdrs.append(("content-length", "3"))
                        conn.send_headers(e.stream_id, hdrs, end_stream=head)
                        if not head:
                            conn.send_data(e.stream_id, b"ok\n", end_stream=not with_trailers)
                            if with_trailers:
                                ask = first_value(st.headers, "x-recorder-trailers")
                                tr = [kv for kv in RESPONSE_TRAILERS
                                      if kv[0] not in H2_FORBIDDEN or ask == "all"]
                                conn.send_headers(e.stream_id, tr, end_stream=True)
                    except h2.exceptions.H2Error:
                        pass
                elif isinstance(e, ev.StreamReset):
                    streams.pop(e.stream_id, None)
                elif isinstance(e, ev.ConnectionTerminated):
                    sock.sendall(conn.data_to_send())
                    return
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
    except (OSError, ConnectionError) as e:
        sys.stderr.write("h2 conn %d: %s\n" % (conn_id, e))
    finally:
        try:
            sock.close()
        except OSError:
            pass


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
        threading.Thread(target=h2_conn, args=(s,), daemon=True).start()


def main(argv):
    global LOG_F
    ap = argparse.ArgumentParser(description="picket test recording upstream")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--h1", type=int, metavar="PORT")
    g.add_argument("--h2c", type=int, metavar="PORT")
    ap.add_argument("--log", required=True, metavar="FILE")
    args = ap.parse_args(argv[1:])
    LOG_F = open(args.log, "a", encoding="utf-8")
    try:
        if args.h1 is not None:
            serve_h1(args.h1)
        else:
            serve_h2c(args.h2c)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
