#!/usr/bin/python3
"""Fault injection around picket: a misbehaving upstream (h2c and HTTP/1.1), log files
that cannot be written (/dev/full), and running out of file descriptors.

    /usr/bin/python3 tests/integration/test_faults.py

The fault upstream is this file run as `test_faults.py --upstream h1|h2c PORT`. Paths:

    /ok             200 "ok\\n"
    /reset-before   h2c: RST_STREAM before any header; h1: connection reset (RST), no answer
    /close-before   the upstream connection closes before any answer
    /reset-mid      headers (content-length 100000) and 1000 bytes of body, then h2c:
                    RST_STREAM INTERNAL_ERROR; h1: the connection is reset (SO_LINGER 0)
    /close-mid      headers and 1000 bytes of body, then the connection closes (FIN)
    /eof-body       200 without a length and 1000 bytes, then the connection closes (FIN):
                    h1 (connection: close): the close ends the body, which is whole; h2c:
                    no END_STREAM, the body was cut
    /eof-body-reset the same, then the connection is reset (SO_LINGER 0): cut, both
    /slow-headers   the answer comes after 3 s (picket's upstream_timeout is 1 s)
    /slow-body      headers and 1000 bytes, then nothing for 5 s
    /window         h2c: nothing until the stream's window is over 64 KiB, then 200 and
                    64 KiB + 1 bytes; 503 if it is not within 3 s
    /big, /big-cl   h2c: 200 and BIG bytes, sent as the stream's window allows (/big-cl
                    with a content-length, /big without)
    /window-updates h2c: the number of stream-level WINDOW_UPDATE frames this upstream
                    connection has received so far

What the client sees (curl exit codes, RFC 9113 / curl(1)):

    fault before the response started   502 (reset/close) or 504 (slow), curl exit 0
    fault after the response started    h2: RST_STREAM on that stream only, curl exit 92
                                        (CURLE_HTTP2_STREAM); h1: connection closed
                                        before the announced length, curl exit 18
                                        (CURLE_PARTIAL_FILE; 56 CURLE_RECV_ERROR would
                                        also be a defined reset). The status line seen is
                                        200 with 1000 of 100000 bytes. Never a hang (the
                                        slow cases end at upstream_timeout, ~1 s), never
                                        a complete-looking body.

and picket logs the failure with its request_id: {"event":"upstream_failed",
"reason":"upstream_reset"} for resets and closes, "reason":"upstream_timeout" for
timeouts, each counted in picket_upstream_failures_total{reason}; it stays up, and the
next request on the same listener works.

Logs on /dev/full: every request is still answered (200 allowed, 403 denied: the decision
is enforced although its audit record is lost), picket_log_write_errors_total{log="access"}
and picket_audit_write_failures_total count each lost line, and a SIGHUP reload (which
reopens the logs) still succeeds: its "reloaded" line is logged and counted.

The access log on a full pipe (stdout, "-", a 4 KiB pipe nothing reads while the requests
run; some records over PIPE_BUF, from several connections on two workers): every line read
back afterwards is one whole JSON record, never half of one glued to the next, and the lines
read plus picket_log_dropped_total{log="access"} is exactly the number of requests.

Out of descriptors (RLIMIT_NOFILE 64, 100 extra TCP connections): accept_failed is logged
and counted (picket_accept_failures_total), an established h2 connection keeps working, a
new client waits in the kernel queue while the listener keeps failing, and is served once
the extra connections close. While accept() fails with EMFILE the listener pauses 200 ms
between attempts (proxy/README.md "Limits and memory bounds"), so it neither spins nor floods the log
(test_no_busy_loop_while_out_of_fds).
"""
import datetime
import json
import os
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

PARTIAL = 1000
ANNOUNCED = 100000
WINDOW_BODY = 65537  # more than the protocol's default stream window
BIG = 300000  # well over picket's 4 KiB initial upstream stream window


# --------------------------------------------------------------------------
# the fault-injecting upstream (runs as a child process)

def _rst_close(sock):
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def _h1_conn(sock):
    buf = b""
    try:
        while True:
            while b"\r\n\r\n" not in buf:
                d = sock.recv(65536)
                if not d:
                    return
                buf += d
            head, buf = buf.split(b"\r\n\r\n", 1)
            path = head.split(b"\r\n", 1)[0].split(b" ")[1].decode()
            if path == "/ok":
                sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\n\r\nok\n")
            elif path == "/reset-before":
                _rst_close(sock)
                return
            elif path == "/close-before":
                sock.close()
                return
            elif path in ("/reset-mid", "/close-mid", "/slow-body"):
                sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
                             b"content-length: %d\r\n\r\n" % ANNOUNCED + b"x" * PARTIAL)
                if path == "/reset-mid":
                    time.sleep(0.2)
                    _rst_close(sock)
                    return
                if path == "/close-mid":
                    time.sleep(0.2)
                    sock.close()
                    return
                time.sleep(5)
                sock.close()
                return
            elif path in ("/eof-body", "/eof-body-reset"):
                # no length, no chunks: the body ends where the connection does
                sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
                             b"connection: close\r\n\r\n" + b"x" * PARTIAL)
                time.sleep(0.2)
                if path == "/eof-body-reset":
                    _rst_close(sock)
                else:
                    sock.close()
                return
            elif path == "/slow-headers":
                time.sleep(3)
                sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nlate\n")
            else:
                sock.sendall(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
    except OSError:
        pass
    finally:
        try:
            sock.close()
        except OSError:
            pass


def _h2_conn(sock):
    import h2.config
    import h2.connection
    import h2.errors
    import h2.events
    conn = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=False, header_encoding=None, validate_inbound_headers=False))
    conn.initiate_connection()
    timers = []  # (when, action, stream_id)
    lock = threading.Lock()
    pending = {}  # stream id -> body bytes not yet sent (the window ran out)
    window_updates = [0]  # stream-level WINDOW_UPDATE frames received

    def flush():
        d = conn.data_to_send()
        if d:
            sock.sendall(d)

    def push():
        for sid in list(pending):
            body = pending[sid]
            n = min(len(body), conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
            while n > 0:
                conn.send_data(sid, body[:n], end_stream=n == len(body))
                body = body[n:]
                n = min(len(body), conn.local_flow_control_window(sid),
                        conn.max_outbound_frame_size)
            if body:
                pending[sid] = body
            else:
                del pending[sid]

    def headers(sid, status=200, extra=()):
        conn.send_headers(sid, [(b":status", str(status).encode()),
                                (b"content-type", b"application/octet-stream")] + list(extra))

    try:
        flush()
        while True:
            now = time.monotonic()
            due = [t for t in timers if t[0] <= now]
            for t in due:
                timers.remove(t)
                action, sid = t[1], t[2]
                try:
                    if action == "late":
                        headers(sid)
                        conn.send_data(sid, b"late\n", end_stream=True)
                    elif action == "window":
                        if conn.local_flow_control_window(sid) >= WINDOW_BODY:
                            headers(sid, extra=[(b"content-length", str(WINDOW_BODY).encode())])
                            body = b"w" * WINDOW_BODY
                            step = conn.max_outbound_frame_size
                            for i in range(0, WINDOW_BODY, step):
                                conn.send_data(sid, body[i:i + step],
                                               end_stream=i + step >= WINDOW_BODY)
                        elif now > t[3]:
                            headers(sid, 503, extra=[(b"content-length", b"0")])
                            conn.send_data(sid, b"", end_stream=True)
                        else:
                            timers.append((now + 0.02, "window", sid, t[3]))
                    elif action == "rst":
                        conn.reset_stream(sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
                    elif action == "close":
                        flush()
                        sock.close()
                        return
                    elif action == "reset-conn":
                        flush()
                        _rst_close(sock)
                        return
                except Exception:  # noqa: BLE001 - stream already gone
                    pass
            flush()
            wait = 0.5
            if timers:
                wait = max(0.0, min(t[0] for t in timers) - time.monotonic())
            r, _, _ = select.select([sock], [], [], wait)
            if not r:
                continue
            data = sock.recv(65536)
            if not data:
                return
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    sid = ev.stream_id
                    path = dict(ev.headers).get(b":path", b"").decode()
                    if path == "/ok":
                        headers(sid, extra=[(b"content-length", b"3")])
                        conn.send_data(sid, b"ok\n", end_stream=True)
                    elif path == "/reset-before":
                        conn.reset_stream(sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
                    elif path == "/close-before":
                        flush()
                        sock.close()
                        return
                    elif path in ("/reset-mid", "/close-mid", "/slow-body"):
                        headers(sid, extra=[(b"content-length", str(ANNOUNCED).encode())])
                        conn.send_data(sid, b"x" * PARTIAL)
                        if path == "/reset-mid":
                            timers.append((time.monotonic() + 0.2, "rst", sid))
                        elif path == "/close-mid":
                            timers.append((time.monotonic() + 0.2, "close", sid))
                    elif path in ("/eof-body", "/eof-body-reset"):
                        headers(sid)  # no length: only END_STREAM would end the body
                        conn.send_data(sid, b"x" * PARTIAL)
                        timers.append((time.monotonic() + 0.2,
                                       "close" if path == "/eof-body" else "reset-conn", sid))
                    elif path == "/window":
                        timers.append((now, "window", sid, now + 3.0))
                    elif path in ("/big", "/big-cl"):
                        headers(sid, extra=[(b"content-length", str(BIG).encode())]
                                if path == "/big-cl" else [])
                        pending[sid] = b"b" * BIG
                    elif path == "/window-updates":
                        body = str(window_updates[0]).encode()
                        headers(sid, extra=[(b"content-length", str(len(body)).encode())])
                        conn.send_data(sid, body, end_stream=True)
                    elif path == "/slow-headers":
                        timers.append((time.monotonic() + 3.0, "late", sid))
                    else:
                        headers(sid, 404)
                        conn.send_data(sid, b"", end_stream=True)
                elif isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.WindowUpdated) and ev.stream_id:
                    window_updates[0] += 1
                elif isinstance(ev, h2.events.StreamReset):
                    pending.pop(ev.stream_id, None)
            push()
            flush()
    except Exception:  # noqa: BLE001 - a torn connection ends this handler
        pass
    finally:
        del lock
        try:
            sock.close()
        except OSError:
            pass


def serve_upstream(kind, port):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(128)
    print("ready", flush=True)
    handler = _h2_conn if kind == "h2c" else _h1_conn
    while True:
        s, _ = ls.accept()
        threading.Thread(target=handler, args=(s,), daemon=True).start()


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--upstream":
    serve_upstream(sys.argv[2], int(sys.argv[3]))
    sys.exit(0)


# --------------------------------------------------------------------------
# the tests

import picket_test as pt  # noqa: E402

# After the response started. h2: only that stream is reset (RST_STREAM), so curl exits
# 92 (CURLE_HTTP2_STREAM); a whole-connection failure (GOAWAY/close: 16 or 56) would hurt
# the other streams on it and is not accepted. h1: picket closes the connection before
# the announced length: 18 (CURLE_PARTIAL_FILE), or 56 (CURLE_RECV_ERROR) if it resets.
H2_MID_EXITS = (92,)
H1_MID_EXITS = (18, 56)


def start_fault_upstream(workdir, kind):
    port = pt.free_port()
    p = pt.Proc([pt.PYTHON, os.path.abspath(__file__), "--upstream", kind, str(port)],
                workdir, "fault-%s-%d" % (kind, port))
    return p, port


class LimitedPicket(pt.Picket):
    """pt.Picket started with RLIMIT_NOFILE lowered to `nofile`."""

    def __init__(self, *a, nofile=64, **kw):
        super().__init__(*a, **kw)
        self.nofile = nofile

    def start(self, wait=True, timeout=20.0):
        b = pt.picket_bin()
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        n = self.nofile

        def lower():
            resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
        self.popen = subprocess.Popen([b] + self.args, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                      stdout=self._out, stderr=self._err, env=self.env,
                                      start_new_session=True, preexec_fn=lower)
        pt._register(self)
        if wait:
            self.wait_ready(timeout)
        return self


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_failure_event(proc, reason, since, timeout=10.0):
    """The operational-log line {"event":"upstream_failed","reason":R} for an upstream
    failure with `reason` (resets and timeouts alike)."""
    deadline = time.monotonic() + timeout
    while True:
        for o in pt.log_events(proc, None, since):
            if o.get("event") == "upstream_failed" and o.get("reason") == reason:
                return o
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)


def count_in_stderr(p, needle, since=0):
    """Occurrences of `needle` in picket's stderr from byte `since` (bytes, no JSON
    parsing: the EMFILE bug below writes hundreds of thousands of lines a second)."""
    n = 0
    with open(p.err_path, "rb") as f:
        f.seek(since)
        while True:
            b = f.read(1 << 22)
            if not b:
                return n
            n += b.count(needle)


def wait_in_stderr(p, needle, since, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if count_in_stderr(p, needle, since):
            return True
        time.sleep(0.05)
    return False


class UpstreamFaults(pt.TestCase):

    def run_faults(self, kind):
        if kind == "h2c":
            pt.require_module("h2.connection", "python3-h2")  # the fault upstream's h2c
        up, up_port = start_fault_upstream(self.tmp, kind)
        self.addCleanup(up.stop)
        path, cfg, port, admin = self.config(pt.upstream_url(kind, up_port), workers=1,
                                             limits={"upstream_timeout": "1s"})
        proc = self.picket(path, inbound_port=port, admin_port=admin, expect_exit=0)
        for http in pt.HTTP_VERSIONS:
            mid_exits = H2_MID_EXITS if http == "2" else H1_MID_EXITS
            # No time limit on the client: a hang shows as curl's own 15 s timeout (exit 28,
            # no status), a missed upstream_timeout as the upstream's late 200 or its close
            # after 5 s (reason upstream_reset): each fails the checks below.
            cases = [
                # path, expected status (None = reset after headers), log reason
                ("/reset-before", 502, "upstream_reset"),
                ("/close-before", 502, "upstream_reset"),
                ("/reset-mid", None, "upstream_reset"),
                ("/close-mid", None, "upstream_reset"),
                ("/slow-headers", 504, "upstream_timeout"),
                ("/slow-body", None, "upstream_timeout"),
            ]
            for fpath, status, reason in cases:
                with self.subTest(upstream=kind, http=http, fault=fpath):
                    since = len(proc.stderr())
                    before = pt.metric(admin, "picket_upstream_failures_total", 0, reason=reason)
                    t0 = time.monotonic()
                    r = self.curl(port, fpath, http=http, timeout=15)
                    took = time.monotonic() - t0
                    if status is not None:
                        self.assertEqual((r.exit, r.status), (0, status), repr(r))
                    else:
                        self.assertIn(r.exit, mid_exits,
                                      "after the response started, expected a reset/partial "
                                      "body (curl exit %s): %r" % (mid_exits, r))
                        self.assertEqual(r.status, 200, repr(r))
                        self.assertLess(len(r.body), ANNOUNCED, "complete body after a fault")
                    if pt.VERBOSE:
                        pt.log("%s upstream, http %s, %s: curl exit %d, status %d, %d body bytes, "
                               "%.2fs" % (kind, http, fpath, r.exit, r.status, len(r.body), took))
                    ev = wait_failure_event(proc, reason, since)
                    self.assertIsNotNone(ev, "no upstream_failed with reason %s; log tail:\n%s"
                                         % (reason, proc.stderr()[since:][-1500:]))
                    self.assertTrue(ev.get("request_id"), ev)
                    if pt.VERBOSE:
                        pt.log("  log: %s; upstream_failures_total{reason=%s} %s -> %s" % (
                            ev, reason, before,
                            pt.metric(admin, "picket_upstream_failures_total", 0, reason=reason)))
                    after = pt.metric(admin, "picket_upstream_failures_total", 0, reason=reason)
                    self.assertGreater(after, before, "upstream_failures_total{reason=%s}" % reason)
                    self.assertTrue(proc.alive(), "picket died")
                    ok = self.curl(port, "/ok", http=http)
                    self.assertOK(ok, "request after %s" % fpath)
                    self.assertEqual(ok.body, b"ok\n")
        # the access log saw every request with a defined status
        lines = pt.read_jsonl(os.path.join(self.tmp, "access.jsonl"))
        self.assertTrue(all(isinstance(o.get("status"), int) for o in lines))

    def test_h2c_upstream_faults(self):
        self.run_faults("h2c")

    def start_h2c_fault(self):
        """The h2c fault upstream and one picket worker in front of it: the inbound port."""
        pt.require_module("h2.connection", "python3-h2")
        up, up_port = start_fault_upstream(self.tmp, "h2c")
        self.addCleanup(up.stop)
        path, cfg, port, admin = self.config(pt.upstream_url("h2c", up_port), workers=1)
        self.picket(path, inbound_port=port, admin_port=admin, expect_exit=0)
        return port

    def test_h2c_upstream_window_before_data(self):
        # An app that sends nothing until its stream's window is over the protocol's
        # default still answers: picket opens the window when the request goes out
        # (on a connection not in a run of small responses, see the next test), not
        # only as the response drains (which would need response bytes first).
        port = self.start_h2c_fault()
        for http in pt.HTTP_VERSIONS:
            for _ in range(3):  # a new stream each time, on the same upstream connection
                r = self.curl(port, "/window", http=http, timeout=15)
                self.assertEqual((r.exit, r.status, len(r.body)), (0, 200, WINDOW_BODY),
                                 "%s: %r" % (http, r.status))

    def test_h2c_upstream_window_on_demand(self):
        # After a run of small responses an upstream connection's new streams keep
        # the 4 KiB initial window (no WINDOW_UPDATE per request); a large response
        # still gets its window, from its content-length or from its first 2 KiB,
        # and the streams after it open with the request again.
        port = self.start_h2c_fault()

        def updates():
            r = self.curl(port, "/window-updates")
            self.assertOK(r)
            return int(r.body)

        for http in pt.HTTP_VERSIONS:
            for _ in range(6):
                self.assertOK(self.curl(port, "/ok", http=http))
        # sequential requests on one upstream connection: the first 8 opened their
        # window with the request, the rest (and /window-updates) did not
        self.assertEqual(updates(), 8)
        for big in ("/big-cl", "/big"):
            for _ in range(8):  # lazy again after the large response before
                self.assertOK(self.curl(port, "/ok"))
            n0 = updates()
            r = self.curl(port, big, timeout=30)
            self.assertEqual((r.exit, r.status, len(r.body)), (0, 200, BIG), big)
            # opened once, to what the client can take (1 MiB), when the response
            # showed it was large: not 4 KiB at a time as the client drains (some
            # 150 WINDOW_UPDATEs)
            self.assertIn(updates() - n0, (1, 2, 3), "%s: its window was opened" % big)
        # right after a large response, a stream opens its window with the request:
        # an app that waits for more than 64 KiB of window before it answers, answers
        for http in pt.HTTP_VERSIONS:
            r = self.curl(port, "/window", http=http, timeout=15)
            self.assertEqual((r.exit, r.status, len(r.body)), (0, 200, WINDOW_BODY), http)

    def test_h1_upstream_faults(self):
        self.run_faults("h1")

    def body_delimited_by_close(self, kind):
        # A body without a length ends where the connection ends only in HTTP/1.x, and
        # only a clean end (FIN; from a TLS server, its close_notify) says it is whole: a
        # reset there is a cut, and so is any close in HTTP/2, where only END_STREAM ends
        # a body. The client must see a cut as one (a reset stream, an HTTP/1.1 chunked
        # body without its last chunk), never as a complete body.
        if kind == "h2c":
            pt.require_module("h2.connection", "python3-h2")
        up, up_port = start_fault_upstream(self.tmp, kind)
        self.addCleanup(up.stop)
        path, cfg, port, admin = self.config(pt.upstream_url(kind, up_port), workers=1)
        proc = self.picket(path, inbound_port=port, admin_port=admin, expect_exit=0)
        for http in pt.HTTP_VERSIONS:
            for fpath, whole in (("/eof-body", kind == "h1"), ("/eof-body-reset", False)):
                with self.subTest(http=http, fault=fpath):
                    since = len(proc.stderr())
                    r = self.curl(port, fpath, http=http, timeout=15)
                    self.assertEqual(r.status, 200, repr(r))
                    if whole:
                        self.assertEqual((r.exit, r.body), (0, b"x" * PARTIAL), repr(r))
                        continue
                    self.assertIn(r.exit, H2_MID_EXITS if http == "2" else H1_MID_EXITS,
                                  "a cut body delivered as complete: %r" % r)
                    ev = wait_failure_event(proc, "upstream_reset", since)
                    self.assertIsNotNone(ev, proc.stderr()[since:][-1500:])

    def test_h1_upstream_body_delimited_by_close(self):
        self.body_delimited_by_close("h1")

    def test_h2c_upstream_body_without_end_stream(self):
        self.body_delimited_by_close("h2c")

class DiskFull(pt.TestCase):

    def test_logs_on_dev_full(self):
        # /dev/full is the kernel's always-full device (every write: ENOSPC); a machine
        # without it cannot run this test, and that is a failure, not a pass.
        self.assertTrue(os.path.exists("/dev/full"), "no /dev/full on this machine")
        up = self.upstream("h2c")
        pol = pt.write_policy(os.path.join(self.tmp, "policy.json"), [
            {"id": "client-ok", "action": "allow", "from": [pt.CLIENT_ID]}])
        path, cfg, port, admin = self.config(
            pt.upstream_url("h2c", up), workers=1, policy={"file": pol},
            log={"level": "info", "access": "/dev/full", "audit": "/dev/full"})
        proc = self.picket(path, inbound_port=port, admin_port=admin, expect_exit=0)
        m0 = pt.scrape_metrics(admin)
        acc0 = pt.metric(m0, "picket_log_write_errors_total", 0, log="access")
        aud0 = pt.metric(m0, "picket_audit_write_failures_total", 0)
        for http in pt.HTTP_VERSIONS:
            for _ in range(3):
                self.assertOK(self.curl(port, "/", http=http))
                r = self.curl(port, "/", http=http, cert="other")
                self.assertEqual((r.exit, r.status), (0, 403), "deny still enforced: %r" % r)
        m1 = pt.scrape_metrics(admin)
        acc1 = pt.metric(m1, "picket_log_write_errors_total", 0, log="access")
        aud1 = pt.metric(m1, "picket_audit_write_failures_total", 0)
        n = 6 * len(pt.HTTP_VERSIONS)
        self.assertGreaterEqual(acc1 - acc0, n, "access log write errors counted per request")
        self.assertGreaterEqual(aud1 - aud0, n, "audit write failures counted per decision")
        self.assertGreaterEqual(pt.metric(m1, "picket_requests_total", 0, status="200"), n / 2)
        self.assertTrue(proc.alive())
        # a reload (which reopens the logs) still works with the full device
        ok0 = pt.metric(admin, "picket_reloads_total", 0, result="ok")
        since = len(proc.stderr())
        proc.signal(signal.SIGHUP)
        ev = pt.wait_log_event(proc, "reloaded", since=since, timeout=30,
                               pred=lambda o: o.get("trigger") == "sighup")
        self.assertIsNotNone(ev, "no 'reloaded' (trigger sighup) line after SIGHUP:\n%s"
                             % proc.stderr()[since:][-2000:])
        self.assertEqual(pt.log_events(proc, "log_reopen_failed", since=since), [])
        self.assertEqual(pt.metric(admin, "picket_reloads_total", 0, result="ok") - ok0, 1)
        self.assertTrue(proc.alive())
        self.assertOK(self.curl(port, "/"))


class OutOfDescriptors(pt.TestCase):

    NOFILE = 64
    EXTRA = 100

    def limited_picket(self, path, port, admin):
        p = LimitedPicket(self.tmp, path, admin_port=admin, inbound_port=port, pki=self.pki,
                          nofile=self.NOFILE)
        self._pickets.append(p)
        self.addCleanup(p.stop_and_check)  # exit 0 on SIGTERM, no hang, no sanitizer report
        p.start()
        return p

    def flood(self, port):
        """EXTRA TCP connections that never start TLS (handshake_timeout is 30 s): picket
        runs out of descriptors. Returns the list; closed at test end at the latest."""
        flood = []
        self.addCleanup(lambda: [s.close() for s in flood])
        for _ in range(self.EXTRA):
            flood.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        return flood

    def test_low_nofile(self):
        up = self.upstream("h2c")
        path, cfg, port, admin = self.config(
            pt.upstream_url("h2c", up), workers=1,
            limits={"handshake_timeout": "30s", "max_connections": 10000})
        p = self.limited_picket(path, port, admin)
        failures0 = pt.metric(admin, "picket_accept_failures_total", 0)
        # an established h2 connection (and its upstream h2c connection) before the flood
        keep = pt.H2Client(port, self.pki)
        self.addCleanup(keep.close)
        self.assertEqual(keep.request("/")[0], 200)

        flood = self.flood(port)
        needle = b'"event":"accept_failed"'
        self.assertTrue(wait_in_stderr(p, needle, 0, 30),
                        "no accept_failed logged with RLIMIT_NOFILE %d; log:\n%s"
                        % (self.NOFILE, p.stderr()[-1500:]))
        self.assertTrue(p.alive())

        # the established connection keeps working while accept() fails
        for _ in range(3):
            self.assertEqual(keep.request("/", timeout=30)[0], 200,
                             "existing connection while out of fds")
        # A new client: its connection waits in the kernel's accept queue while the
        # listener keeps failing (two more accept_failed lines after it connected), and
        # it is served once descriptors are free again.
        out = os.path.join(self.tmp, "late.out")
        cmd = pt.curl_args(port, "/", self.pki)
        cmd[1:1] = ["--max-time", "120", "-o", out + ".body", "-w", "%{http_code}"]
        with open(out, "wb") as f:
            late = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.addCleanup(lambda: late.poll() is None and (pt._kill_group(late), late.wait(5)))
        n = count_in_stderr(p, needle)
        deadline = time.monotonic() + 60
        while count_in_stderr(p, needle) < n + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertGreaterEqual(count_in_stderr(p, needle), n + 2, "the listener stopped retrying")
        self.assertIsNone(late.poll(), "the new client did not wait for a descriptor "
                          "(curl exit %s)" % late.poll())
        self.assertTrue(p.alive())

        # the flood goes away: the waiting client is accepted and served
        for s in flood:
            s.close()
        flood.clear()
        rc = late.wait(130)
        with open(out) as f:
            status = f.read().strip()
        self.assertEqual((rc, status), (0, "200"), "the client that waited for a descriptor")
        self.assertOK(self.curl(port, "/", timeout=30), "new connection after the flood closed")
        self.assertEqual(keep.request("/", timeout=30)[0], 200)
        # every failed accept() was counted, once per logged line
        lines = count_in_stderr(p, needle)
        self.assertEqual(pt.metric(admin, "picket_accept_failures_total", 0) - failures0, lines)
        pt.log("out of fds: %d accept_failed lines, each counted" % lines)
        self.assertTrue(p.alive())

    def test_no_busy_loop_while_out_of_fds(self):
        """While accept() fails with EMFILE, picket must not spin on the listener: it
        pauses 200 ms between attempts (one accept_failed line each), so consecutive lines
        are at least ~200 ms apart by picket's own timestamps, and it uses little CPU
        between them. Both are bounds that load can only make easier to meet."""
        up = self.upstream("h2c")
        path, cfg, port, admin = self.config(pt.upstream_url("h2c", up), workers=1,
                                             limits={"handshake_timeout": "30s"})
        p = self.limited_picket(path, port, admin)
        needle = b'"event":"accept_failed"'
        flood = self.flood(port)
        try:
            self.assertTrue(wait_in_stderr(p, needle, 0, 30), "no accept_failed")
            # the window between the 2nd and the 7th line: five pauses
            deadline = time.monotonic() + 60
            while count_in_stderr(p, needle) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            t0, c0 = time.monotonic(), cpu_seconds(p.pid)
            while count_in_stderr(p, needle) < 7 and time.monotonic() < deadline:
                time.sleep(0.01)
            t1, c1 = time.monotonic(), cpu_seconds(p.pid)
            self.assertGreaterEqual(count_in_stderr(p, needle), 7, "accept_failed stopped")
        finally:
            for s in flood:  # stop the flood (and its log lines) as soon as it is measured
                s.close()
            flood.clear()
        stamps = [datetime.datetime.strptime(o["ts"], "%Y-%m-%dT%H:%M:%S.%fZ")
                  for o in pt.log_events(p, "accept_failed")]
        gaps = [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:])]
        cpu = (c1 - c0) / (t1 - t0)
        pt.log("out of fds: accept_failed gaps %s s; picket cpu %.0f%% of a core between lines"
               % (", ".join("%.3f" % g for g in gaps[:8]), cpu * 100))
        self.assertGreaterEqual(len(gaps), 6)
        self.assertGreaterEqual(min(gaps), 0.15, "accept_failed lines %.3f s apart: no pause "
                                "between accept() attempts" % min(gaps))
        self.assertLess(cpu, 0.5, "picket spins at %.0f%% CPU while out of fds" % (cpu * 100))


class FullPipe(pt.TestCase):

    F_SETPIPE_SZ = 1031  # Linux fcntl

    def read_available(self, fd):
        out = b""
        while True:
            r, _, _ = select.select([fd], [], [], 0)
            if not r:
                return out
            b = os.read(fd, 65536)
            if not b:
                return out
            out += b

    def run_clients(self, port, phase):
        """Three connections sending 20 requests each with a 6000-byte path (records
        over PIPE_BUF) and one sending 60 small ones, all at once. Returns the count."""
        errors = []

        def client(letter, n, size):
            try:
                c = pt.H2Client(port, self.pki)
                try:
                    for i in range(n):
                        # any answer will do (the upstream has no such path): each request
                        # gets one access record
                        st = c.request("/%s%d/%d/%s" % (letter, phase, i, letter * size))[0]
                        if not st:
                            errors.append(st)
                finally:
                    c.close()
            except Exception as e:  # noqa: BLE001 (reported below)
                errors.append(e)
        threads = [threading.Thread(target=client, args=(ch, 20, 6000)) for ch in "xyz"]
        threads.append(threading.Thread(target=client, args=("s", 60, 10)))
        for t in threads:
            t.start()
        for t in threads:
            t.join(240)
        self.assertEqual(errors, [], "requests failed while the log pipe was full")
        return 3 * 20 + 60

    def test_access_log_on_full_pipe(self):
        import fcntl
        up = self.upstream("h2c")
        path, cfg, port, admin = self.config(pt.upstream_url("h2c", up), workers=2,
                                             log={"level": "info", "access": "-"})
        p = self.picket(path, inbound_port=port, admin_port=admin, stdout_pipe=True)
        rd = p.popen.stdout.fileno()
        fcntl.fcntl(rd, self.F_SETPIPE_SZ, 16384)
        # phase 1: nothing reads the pipe while the requests run
        total = self.run_clients(port, 1)
        data = self.read_available(rd)
        # phase 2: a slow reader (1000 bytes every 5 ms), so records go into the pipe
        # in pieces while other workers and connections log
        stop = threading.Event()
        got = []

        def reader():
            while not stop.is_set():
                r, _, _ = select.select([rd], [], [], 0.005)
                if r:
                    got.append(os.read(rd, 1000))
                time.sleep(0.005)
        th = threading.Thread(target=reader, daemon=True)
        th.start()
        total += self.run_clients(port, 2)
        stop.set()
        th.join(10)
        data += b"".join(got) + self.read_available(rd)
        # one more request once the pipe is empty: written whole (after the tail of a
        # record the full pipe took only in part, if one is waiting)
        c = pt.H2Client(port, self.pki)
        self.assertTrue(c.request("/final")[0])
        c.close()
        total += 1
        deadline = time.monotonic() + 30
        while b'"path":"/final"' not in data and time.monotonic() < deadline:
            data += self.read_available(rd)
            time.sleep(0.05)
        self.assertIn(b'"path":"/final"', data)
        self.assertTrue(data.endswith(b"\n"), data[-300:])
        lines = data.split(b"\n")[:-1]
        big = 0
        for ln in lines:
            try:
                o = json.loads(ln)
            except ValueError:
                self.fail("not one whole JSON record (cut, glued or interleaved): %r..."
                          % ln[:300])
            self.assertIn("request_id", o)
            if len(o.get("path") or "") > 6000:
                big += 1
        # every record before /final has been written or dropped by now; a worker's
        # drop is counted just after its last wait, so allow it a moment
        dropped = 0
        deadline = time.monotonic() + 30
        while len(lines) + dropped < total and time.monotonic() < deadline:
            dropped = pt.metric(admin, "picket_log_dropped_total", 0, log="access")
            time.sleep(0.1)
        pt.log("full pipe: %d requests, %d lines read (%d over PIPE_BUF), %d dropped"
               % (total, len(lines), big, dropped))
        self.assertGreater(dropped, 0, "the pipe never filled")
        self.assertGreater(big, 1, "records over PIPE_BUF were not written")
        self.assertEqual(len(lines) + dropped, total)
        self.assertEqual(pt.metric(admin, "picket_log_write_errors_total", 0, log="access"), 0)

if __name__ == "__main__":
    pt.main(timeout=120)
