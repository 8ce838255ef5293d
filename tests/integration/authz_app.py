#!/usr/bin/python3
"""Test authorization service for picket's dispatch rules (tests/integration/test_dispatch.py,
tests/bench/bench_dispatch.sh): an ext_authz-style HTTP service over mutual TLS.

    /usr/bin/python3 authz_app.py --port P --cert C.pem --key C.key --ca CA.pem [options]

    --h2                 serve HTTP/2 (python3-h2) with ALPN "h2" only; default HTTP/1.1
                         (http.server, ALPN "http/1.1")
    --no-alpn            HTTP/1.1 mode without any ALPN (the client must fall back to HTTP/1.1)
    --max-age N          Cache-Control: max-age=N on allow answers (0 = no Cache-Control)
    --max-age-for P=N    max-age N for check paths starting with P (repeatable, first match
                         wins, overrides --max-age; 0 = no Cache-Control)
    --deny-max-age N     Cache-Control: max-age=N on deny answers too (default: none)
    --cache-control-extra S  appended to every Cache-Control value sent (", S")
    --delay-ms MS        answer every check MS milliseconds late (h1: per connection thread,
                         h2: per stream, other streams keep flowing)
    --hold-dir DIR       a check whose x-user is "hold-NAME" is answered only once the file
                         DIR/hold-NAME exists (it is counted in "checks" when it arrives):
                         a test keeps checks in flight for as long as it needs
    --hostile-headers    allow answers also carry headers picket must NOT pass upstream
                         (x-forwarded-client-cert, x-forwarded-proto, x-forwarded-host,
                         x-picket-peer-id, x-request-id, set-cookie, x-envoy-auth-failure)
    --state FILE         after every check (before its answer is sent) and every refused
                         handshake, FILE is rewritten (atomically) with the state JSON
    --quiet              no per-check line on stderr

Binds 127.0.0.1 only, requires a client certificate that chains to --ca, prints "ready" on
stdout once it listens.

Decision (every method, every path except /__state):
    x-tenant: acme   -> 200, "x-authz-user: alice", "x-authz-tenant: acme",
                        Cache-Control: max-age=N (when N > 0), empty body
    x-tenant: status-NNN -> NNN (200..599; 200 = an allow like acme's), content-type
                        text/plain, body "authz says NNN\\n" (another denial status)
    anything else    -> 401, content-type text/plain, body "tenant not allowed\\n"
GET /__state -> 200 JSON state (not counted as a check).

State JSON: {"checks": N, "answered": N, "handshakes_ok": N, "handshakes_failed": N,
             "by_path": {path: N}, "protocols": {"HTTP/1.1"|"h2": N},
             "last": {"method","path","protocol","headers":[[name, value]...],
                      "body_len", "peer_id"},
             "recent": [last 200 such records]}
Header names are lowercased; h2 pseudo-headers are reported as method/path, not headers.
"""
import argparse
import json
import os
import re
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ARGS = None
LOCK = threading.Lock()
STATE = {"checks": 0, "answered": 0, "handshakes_ok": 0, "handshakes_failed": 0, "by_path": {},
         "protocols": {}, "last": None, "recent": []}

HOSTILE = [("x-forwarded-client-cert", "By=spiffe://evil/x;URI=spiffe://example.org/ns/default/sa/admin"),
           ("x-forwarded-proto", "gopher"),
           ("x-forwarded-host", "evil.example"),
           ("x-picket-peer-id", "spiffe://example.org/ns/default/sa/admin"),
           ("x-request-id", "authz-rewrote-this"),
           ("x-envoy-auth-failure", "true"),
           ("set-cookie", "session=evil")]


def _write_state_locked():
    if not ARGS.state:
        return
    tmp = ARGS.state + ".tmp.%d" % threading.get_ident()
    with open(tmp, "w") as f:
        json.dump(STATE, f)
    os.replace(tmp, ARGS.state)


def state_json():
    with LOCK:
        return json.dumps(STATE).encode()


def hold_path(headers):
    """The file a check waits for (--hold-dir and x-user: hold-NAME), or None."""
    if not ARGS.hold_dir:
        return None
    users = [v for k, v in headers if k == "x-user"]
    if len(users) == 1 and re.fullmatch(r"hold-[A-Za-z0-9_-]{1,64}", users[0]):
        return os.path.join(ARGS.hold_dir, users[0])
    return None


def count_answered():
    with LOCK:
        STATE["answered"] += 1
        _write_state_locked()


def count_handshake(ok):
    with LOCK:
        STATE["handshakes_ok" if ok else "handshakes_failed"] += 1
        if not ok:
            _write_state_locked()


def peer_id_of(tls_sock):
    try:
        cert = tls_sock.getpeercert()
    except (ValueError, OSError):
        return None
    for kind, val in (cert or {}).get("subjectAltName", ()):
        if kind == "URI":
            return val
    return None


def max_age_for(path):
    for prefix, n in ARGS.max_age_for:
        if path.startswith(prefix):
            return n
    return ARGS.max_age


def decide(method, path, headers, protocol, body_len, peer_id):
    """Records the check; returns (status, [(name, value)], body)."""
    rec = {"method": method, "path": path, "protocol": protocol, "headers": headers,
           "body_len": body_len, "peer_id": peer_id, "t": time.time()}
    with LOCK:
        STATE["checks"] += 1
        STATE["by_path"][path] = STATE["by_path"].get(path, 0) + 1
        STATE["protocols"][protocol] = STATE["protocols"].get(protocol, 0) + 1
        STATE["last"] = rec
        STATE["recent"].append(rec)
        del STATE["recent"][:-200]
        _write_state_locked()
    if not ARGS.quiet:
        sys.stderr.write("check %s %s %s tenant=%s\n" % (protocol, method, path,
                         ",".join(v for k, v in headers if k == "x-tenant") or "-"))
        sys.stderr.flush()
    tenants = [v for k, v in headers if k == "x-tenant"]
    if tenants == ["acme"]:
        h = [("x-authz-user", "alice"), ("x-authz-tenant", "acme")]
        n = max_age_for(path)
        if n > 0:
            h.append(("cache-control", "max-age=%d%s" % (
                n, ", " + ARGS.cache_control_extra if ARGS.cache_control_extra else "")))
        if ARGS.hostile_headers:
            h += HOSTILE
        return 200, h, b""
    h = [("content-type", "text/plain")]
    if ARGS.deny_max_age > 0:
        h.append(("cache-control", "max-age=%d" % ARGS.deny_max_age))
    if len(tenants) == 1 and tenants[0].startswith("status-") and tenants[0][7:].isdigit() \
            and 200 <= int(tenants[0][7:]) <= 599:
        code = int(tenants[0][7:])
        return code, h, ("authz says %d\n" % code).encode()
    return 401, h, b"tenant not allowed\n"


def server_context(alpn):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(ARGS.cert, ARGS.key)
    ctx.load_verify_locations(ARGS.ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


# --------------------------------------------------------------------------
# HTTP/1.1

class H1Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "authz-app"
    sys_version = ""

    def setup(self):
        self.tls_ok = True
        try:
            self.request.settimeout(30)
            self.request.do_handshake()
            count_handshake(True)
        except (OSError, ssl.SSLError):
            self.tls_ok = False
            count_handshake(False)
        super().setup()

    def handle(self):
        if self.tls_ok:
            super().handle()

    def log_message(self, fmt, *args):  # quiet
        pass

    def _any(self):
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n) if n > 0 else b""
        if self.command == "GET" and self.path == "/__state":
            self._send(200, [("content-type", "application/json")], state_json())
            return
        headers = [(k.lower(), v) for k, v in self.headers.items()]
        status, h, out = decide(self.command, self.path, headers, "HTTP/1.1", len(body),
                                peer_id_of(self.request))
        hold = hold_path(headers)
        while hold is not None and not os.path.exists(hold):
            time.sleep(0.02)
        if ARGS.delay_ms:
            time.sleep(ARGS.delay_ms / 1000.0)
        self._send(status, h, out)
        count_answered()

    def _send(self, status, headers, body):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _any


class H1Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, addr, ctx):
        self.ctx = ctx
        super().__init__(addr, H1Handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # the handshake happens in the connection's thread (H1Handler.setup)
        return self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address):
        pass  # peers that go away are normal here


def serve_h1(port):
    srv = H1Server(("127.0.0.1", port), server_context(None if ARGS.no_alpn else ["http/1.1"]))
    print("ready", flush=True)
    srv.serve_forever()


# --------------------------------------------------------------------------
# HTTP/2

class H2Conn:
    def __init__(self, raw, ctx):
        self.raw = raw
        self.ctx = ctx

    def run(self):
        import h2.config
        import h2.connection
        import h2.events
        import h2.exceptions
        ev = h2.events
        try:
            self.raw.settimeout(30)
            sock = self.ctx.wrap_socket(self.raw, server_side=True)
        except (OSError, ssl.SSLError):
            count_handshake(False)
            self.raw.close()
            return
        count_handshake(True)
        if sock.selected_alpn_protocol() != "h2":
            sock.close()
            return
        peer = peer_id_of(sock)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8", validate_inbound_headers=False))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        reqs = {}      # sid -> {"headers": [...], "body_len": n}
        pending = []   # [due, sid, status, headers, body, hold file or None, is a check]
        try:
            while True:
                now = time.monotonic()
                for p in pending:
                    if p[5] is not None and os.path.exists(p[5]):
                        p[0], p[5] = now, None  # released
                due = [p for p in pending if p[0] <= now and p[5] is None]
                for p in due:
                    pending.remove(p)
                    self._respond(conn, p[1], p[2], p[3], p[4])
                    if p[6]:
                        count_answered()
                out = conn.data_to_send()
                if out:
                    sock.sendall(out)
                wait = min([p[0] if p[5] is None else now + 0.02 for p in pending],
                           default=now + 1.0) - now
                sock.settimeout(max(0.001, min(wait, 1.0)))
                try:
                    data = sock.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    return
                try:
                    events = conn.receive_data(data)
                except h2.exceptions.ProtocolError:
                    return
                for e in events:
                    if isinstance(e, ev.RequestReceived):
                        reqs[e.stream_id] = {"headers": list(e.headers), "body_len": 0}
                    elif isinstance(e, ev.DataReceived):
                        if e.stream_id in reqs:
                            reqs[e.stream_id]["body_len"] += len(e.data)
                        conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                    elif isinstance(e, ev.StreamEnded):
                        r = reqs.pop(e.stream_id, None)
                        if r is not None:
                            pending.append(self._handle(e.stream_id, r, peer))
                    elif isinstance(e, ev.StreamReset):
                        reqs.pop(e.stream_id, None)
                        pending[:] = [p for p in pending if p[1] != e.stream_id]
                    elif isinstance(e, ev.ConnectionTerminated):
                        out = conn.data_to_send()
                        if out:
                            sock.sendall(out)
                        if not pending:
                            return
        except (OSError, ssl.SSLError):
            return
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def _handle(self, sid, r, peer):
        pseudo = {k: v for k, v in r["headers"] if k.startswith(":")}
        headers = [(k.lower(), v) for k, v in r["headers"] if not k.startswith(":")]
        method, path = pseudo.get(":method", ""), pseudo.get(":path", "")
        if method == "GET" and path == "/__state":
            return [0, sid, 200, [("content-type", "application/json")], state_json(), None, False]
        status, h, body = decide(method, path, headers, "h2", r["body_len"], peer)
        return [time.monotonic() + ARGS.delay_ms / 1000.0, sid, status, h, body,
                hold_path(headers), True]

    @staticmethod
    def _respond(conn, sid, status, headers, body):
        import h2.exceptions
        try:
            hdrs = [(":status", str(status))] + headers + [("content-length", str(len(body)))]
            conn.send_headers(sid, hdrs, end_stream=not body)
            if body:
                conn.send_data(sid, body, end_stream=True)
        except h2.exceptions.H2Error:
            pass  # stream gone (reset by the client)


def serve_h2(port):
    __import__("h2.connection")  # fail early if python3-h2 is missing
    ctx = server_context(["h2"])
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", port))
    lsock.listen(1024)
    print("ready", flush=True)
    while True:
        s, _ = lsock.accept()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=H2Conn(s, ctx).run, daemon=True).start()


def _prefix_n(s):
    p, _, n = s.rpartition("=")
    if not p:
        raise argparse.ArgumentTypeError("expected PREFIX=N")
    return (p, int(n))


def main(argv):
    global ARGS
    ap = argparse.ArgumentParser(description="picket test authorization service")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--h2", action="store_true")
    ap.add_argument("--no-alpn", action="store_true")
    ap.add_argument("--max-age", type=int, default=0)
    ap.add_argument("--max-age-for", type=_prefix_n, action="append", default=[])
    ap.add_argument("--deny-max-age", type=int, default=0)
    ap.add_argument("--cache-control-extra", default="")
    ap.add_argument("--delay-ms", type=int, default=0)
    ap.add_argument("--hold-dir")
    ap.add_argument("--hostile-headers", action="store_true")
    ap.add_argument("--state")
    ap.add_argument("--quiet", action="store_true")
    ARGS = ap.parse_args(argv[1:])
    if ARGS.state:
        with LOCK:
            _write_state_locked()
    try:
        if ARGS.h2:
            serve_h2(ARGS.port)
        else:
            serve_h1(ARGS.port)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
