#!/usr/bin/python3
"""picket under attack: HTTP/2 floods (rapid reset, CONTINUATION, HPACK bombs,
stream floods, SETTINGS/PING floods, zero-window readers), TLS abuse (slowloris,
partial ClientHello, TLS 1.0/1.1, non-AEAD suites, renegotiation) and HTTP/1.1
request smuggling and slow/oversized requests. proxy/README.md "Limits and memory
bounds" and "Refusals".

Every case checks the outcome picket is documented to give (proxy/README.md "Limits and memory
bounds": which GOAWAY code, which status, that a flood was really answered or really
cut off) and that a well-behaved client is not affected: a connection opened before the
attack still gets 200 afterwards, every fresh connection made during the attack gets
200 (the probe waits for answers, it does not time them: a loaded machine is slow, not
broken), and picket is alive (and, at the end, exits 0 on SIGTERM with no sanitizer
report). Memory is the kernel's peak (VmHWM, reset before each attack), not a sample
taken afterwards. Smuggling cases also check that nothing reached the upstream. The
attack primitives live in tests/hardening/attacks.py (the standalone attack table for
picket and its peers).

One picket (limits: max_concurrent_streams 10, handshake_timeout 1s,
header_timeout 1s) serves the whole file.

    /usr/bin/python3 tests/integration/test_hardening.py [-k PATTERN]
"""
import concurrent.futures
import http.server
import os
import re
import shutil
import socket
import ssl
import struct
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import picket_test as pt  # noqa: E402

sys.path.insert(0, os.path.join(pt.REPO, "tests", "hardening"))
import attacks as A  # noqa: E402

MAX_STREAMS = 10
# stream_buffer at a quarter of its default: the buffering bounds below scale with it
LIMITS = {"max_concurrent_streams": MAX_STREAMS, "handshake_timeout": "1s", "header_timeout": "1s",
          "max_header_list_size": 65536, "stream_buffer": 262144}


class CountingUpstream:
    """An HTTP/1.1 upstream (in this process) that records every request it gets and
    answers 200 with the request target as the body."""

    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes

            def log_message(self, *a):
                pass

            def _any(self):
                n = int(self.headers.get("content-length") or 0)
                if self.headers.get("transfer-encoding", "").lower() == "chunked":
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        self.rfile.read(size + 2)
                        if size == 0:
                            break
                elif n:
                    self.rfile.read(n)
                with outer.lock:
                    outer.requests.append((self.command, self.path))
                body = self.path.encode()
                self.send_response(200)
                self.send_header("content-type", "text/plain")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _any

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        self.port = self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def seen(self, prefix):
        with self.lock:
            return [r for r in self.requests if r[1].startswith(prefix)]

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


class Prober:
    """A well-behaved client in a thread: a fresh mTLS h2 connection and GET / every
    50 ms while an attack runs. Each probe waits up to PROBE_WAIT for its answer: the
    check is that it is answered 200, not how fast (timing is the benchmarks' job)."""

    PROBE_WAIT = 30.0

    def __init__(self, target):
        self.target = target
        self.results = []
        self.first = threading.Event()
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop_ev.is_set():
            self.results.append(A.h2_get(self.target, "/", timeout=self.PROBE_WAIT))
            self.first.set()
            self.stop_ev.wait(0.05)

    def stop(self):
        self.stop_ev.set()
        self.t.join(self.PROBE_WAIT * 2 + 10)
        return list(self.results)


class Hardening(pt.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # attacks.py decodes response headers with hpack; without it every :status is
        # silently missing and the checks on them would not run
        pt.require_module("hpack", "python3-hpack")
        pt.require_tool("openssl", "openssl")  # the TLS refusal cases use s_client
        cls.ctmp = tempfile.mkdtemp(prefix="picket-it-hardening-")
        cls.up, up_port = pt.start_upstream(cls.ctmp, "h2c", name="main")
        cls.counting = CountingUpstream()
        cls.port, cls.admin = pt.free_port(), pt.free_port()
        cfg = pt.make_config(cls.pki, cls.port, pt.upstream_url("h2c", up_port), admin_port=cls.admin,
                             workdir=cls.ctmp, limits=LIMITS,
                             routes=[{"path_prefix": "/count/",
                                      "upstream": "http://127.0.0.1:%d" % cls.counting.port}])
        conf = pt.write_config(os.path.join(cls.ctmp, "picket.json"), cfg)
        # A small ASan quarantine, so that RSS measures what picket holds rather than
        # what ASan keeps of freed blocks (the default quarantine is 256 MiB).
        asan = os.environ.get("ASAN_OPTIONS", "detect_leaks=1") + ":quarantine_size_mb=8"
        cls.proc = pt.Picket(cls.ctmp, conf, admin_port=cls.admin, inbound_port=cls.port, pki=cls.pki,
                             env_extra={"ASAN_OPTIONS": asan})
        cls.limits = LIMITS
        try:
            cls.proc.start()
        except BaseException:
            cls.up.stop()
            cls.counting.stop()
            raise
        cls.target = A.Target("127.0.0.1", cls.port, cls.pki.cert("client"), cls.pki.key("client"),
                              cls.pki.ca)

    @classmethod
    def tearDownClass(cls):
        rc = cls.proc.stop()
        cls.up.stop()
        cls.counting.stop()
        problems = cls.proc.stop_problems(expect_exit=0)
        if problems:
            pt.log("picket exit %s; stderr tail (%s):\n%s" % (rc, cls.proc.err_path, cls.proc.stderr()[-3000:]))
            raise AssertionError("after the attacks: " + "\n".join(problems))
        if not pt.KEEP:
            shutil.rmtree(cls.ctmp, ignore_errors=True)

    # -- the well-behaved client ------------------------------------------

    def setUp(self):
        super().setUp()
        self.assertTrue(self.proc.alive(), "picket died in an earlier test")
        self.bystander = pt.H2Client(self.port, self.pki)
        self.addCleanup(self.bystander.close)
        st, _, _, _ = self.bystander.request("/")
        self.assertEqual(st, 200)
        self.rss0 = self.proc.reset_peak_rss()  # KiB; peak_rss_kib() is the peak from here
        self.prober = None

    def attack_starts(self):
        self.prober = Prober(self.target)
        self.assertTrue(self.prober.first.wait(Prober.PROBE_WAIT + 5), "the first probe never ended")
        self.assertEqual(self.prober.results[0], 200, "probe before the attack")

    def assert_unaffected(self, min_probe_ratio=None):
        """After an attack: picket alive, the connection opened before it still works,
        every probe made during it got 200, a fresh connection gets 200.
        (`min_probe_ratio` is ignored: every probe must succeed; kept for callers.)"""
        probes = self.prober.stop() if self.prober else []
        self.assertTrue(self.proc.alive(), "picket died; stderr:\n%s" % self.proc.stderr()[-3000:])
        self.assertIsNone(self.proc.sanitizer_report(), self.proc.sanitizer_report())
        st, _, body, _ = self.bystander.request("/", timeout=Prober.PROBE_WAIT)
        self.assertEqual((st, body), (200, b"hello from upstream\n"),
                         "connection opened before the attack")
        if self.prober:
            self.assertTrue(probes, "no probe ran during the attack")
            self.assertEqual([s for s in probes if s != 200], [],
                             "probes during the attack (0 = no answer in %.0fs): %r"
                             % (Prober.PROBE_WAIT, probes))
        self.assertEqual(A.h2_get(self.target, "/", timeout=Prober.PROBE_WAIT), 200,
                         "fresh connection after the attack")

    def rss_growth_mib(self):
        """Peak RSS growth since setUp (VmHWM, reset there), in MiB."""
        return (self.proc.peak_rss_kib() - self.rss0) / 1024.0

    def stream_buffer_mib(self):
        return int(self.limits.get("stream_buffer", 1 << 20)) / float(1 << 20)

    def h2_errors(self):
        return pt.metric(self.admin, "picket_h2_protocol_errors_total", default=0)

    def handshake_refusals(self):
        samples = pt.scrape_metrics(self.admin)
        return sum(v for (n, ls), v in samples.items()
                   if n == "picket_handshakes_total" and dict(ls).get("result") != "ok")

    # -- HTTP/2 -------------------------------------------------------------

    def test_h2_rapid_reset_ends_connection(self):
        self.attack_starts()
        verdict, detail = A.h2_rapid_reset(self.target, self.opts(), n=5000)
        self.assertEqual(verdict, "ended", detail)
        self.assert_unaffected()

    def test_h2_rapid_reset_counted(self):
        # picket's own detector ends the connection with ENHANCE_YOUR_CALM after 100
        # resets once at least half the client's streams were reset, long before
        # nghttp2's rate limit (bursts of 1000); counted by error code.
        before = pt.metric(self.admin, "picket_h2_protocol_errors_total", default=0,
                           error="ENHANCE_YOUR_CALM")
        verdict, detail = A.h2_rapid_reset(self.target, self.opts(), n=5000)
        self.assertEqual(verdict, "ended", detail)
        self.assertIn("ENHANCE_YOUR_CALM", detail)
        self.assertGreater(pt.metric(self.admin, "picket_h2_protocol_errors_total", default=0,
                                     error="ENHANCE_YOUR_CALM"), before,
                           "rapid reset not counted as ENHANCE_YOUR_CALM")

    def test_h2_cancelling_some_streams_is_fine(self):
        # A client that cancels a minority of its streams (a browser navigating away,
        # gRPC deadlines) keeps its connection: 300 streams, every third one reset.
        c = A.H2Raw(self.target)
        try:
            c.run(2.0, until=lambda: c.settings is not None)
            c.pump(0.1)  # our SETTINGS ACK goes out first
            block = A.request_block("/")
            sent = []

            def open_streams():
                return sum(1 for x in sent if x not in c.ended and x not in c.rst)
            for i in range(300):
                sid = 2 * i + 1
                # a well-behaved client stays within SETTINGS_MAX_CONCURRENT_STREAMS
                # (waiting on answers, not on time)
                c.run(30.0, until=lambda: c.ended_by_server or open_streams() < MAX_STREAMS - 1)
                data = A.frame(A.HEADERS, A.END_STREAM | A.END_HEADERS, sid, block)
                if i % 3 == 0:
                    data += A.rst_frame(sid)
                else:
                    sent.append(sid)
                c.send(data)
            c.run(30.0, until=lambda: c.ended_by_server or len(c.ended) >= 200)
            self.assertFalse(c.ended_by_server, c.describe())
            self.assertEqual(len([s for s in sent if c.status.get(s) == 200]), 200,
                             "every stream not reset was answered")
        finally:
            c.close()
        self.assert_unaffected()

    def test_h2_continuation_flood_ends_connection(self):
        before = self.h2_errors()
        self.attack_starts()
        verdict, detail = A.h2_continuation_flood(self.target, self.opts(), n=5000)
        self.assertEqual(verdict, "ended", detail)
        self.assertGreater(self.h2_errors(), before, "CONTINUATION flood not counted")
        self.assert_unaffected()

    def test_h2_header_list_too_large(self):
        # Over max_header_list_size of decoded fields the connection ends at once
        # (GOAWAY ENHANCE_YOUR_CALM): finishing the block, which HPACK needs to keep the
        # connection, is the decode work an attacker wants (issue 14). Other clients
        # are unaffected.
        self.attack_starts()
        before = self.h2_errors()
        c, what = A.h2_header_flood(self.target, self.opts(), count=70, size=1000)
        try:
            verdict, detail = A._header_result(c, what)
            self.assertEqual(verdict, "ended", detail)
            self.assertIn("ENHANCE_YOUR_CALM", detail)
            self.assertNotIn(1, c.status, "no answer on the stream: the connection ended")
        finally:
            c.close()
        self.assertGreater(self.h2_errors(), before, "the GOAWAY was not counted")
        self.assert_unaffected()

    def test_h2_too_many_headers_is_431_connection_kept(self):
        # Over max_headers (but under the size) the request is refused with 431 and
        # the connection stays usable.
        self.attack_starts()
        c, what = A.h2_header_flood(self.target, self.opts(), count=150, size=10)
        try:
            verdict, detail = A._header_result(c, what)
            self.assertEqual(verdict, "refused", detail)
            self.assertEqual(c.status.get(1), 431, detail)  # proxy/README.md: 431 for that stream
            self.assertFalse(c.ended_by_server, "a too-large header list ends only its stream")
            self.assertEqual(c.get(3, "/", timeout=Prober.PROBE_WAIT), 200)
        finally:
            c.close()
        self.assert_unaffected()

    def test_h2_turn_budget_yields_then_serves_the_rest(self):
        # proxy/README.md: a connection decodes at most 256 KiB of fields per loop turn,
        # then the rest of its input waits for the next turn. Ten requests (the stream
        # limit) in one write, each with 20 references to one 1,900-byte entry of the
        # HPACK table: 380 KiB of fields from 2 KiB on the wire, every block under
        # max_header_list_size. The connection must yield and come back for the rest:
        # every stream answered, the connection open. The client sends nothing after
        # the write (no WINDOW_UPDATE for the answers) that could wake the connection.
        c = A.H2Raw(self.target, auto_window=False)
        try:
            c.run(0.3, until=lambda: c.settings is not None)
            self.assertEqual(c.get(1, "/", timeout=Prober.PROBE_WAIT), 200)
            sids = [3 + 2 * i for i in range(MAX_STREAMS)]
            wire = bytearray()
            for i, sid in enumerate(sids):
                block = bytearray(A.request_block("/"))
                if i == 0:  # into the dynamic table (index 62), then referenced
                    block += A.hpack_literal("x-turn", "t" * 1900, index=True) + b"\xbe" * 19
                else:
                    block += b"\xbe" * 20
                wire += A.frame(A.HEADERS, A.END_STREAM | A.END_HEADERS, sid, bytes(block))
            c.send(bytes(wire))
            c.run(10.0, until=lambda: all(s in c.ended or s in c.rst for s in sids)
                  or c.ended_by_server)
            self.assertFalse(c.ended_by_server, c.describe())
            self.assertEqual([c.status.get(s) for s in sids], [200] * len(sids),
                             "rst: %r" % c.rst)
        finally:
            c.close()
        self.assert_unaffected()

    def test_h2_hpack_bomb(self):
        self.attack_starts()
        for _ in range(5):  # 5 x ~8 MB of decoded headers from 6 KB on the wire
            verdict, detail = A.h2_hpack_bomb(self.target, self.opts())
            # proxy/README.md: decoded fields past max_header_list_size end the connection at once
            # (GOAWAY ENHANCE_YOUR_CALM): finishing the block is the work a bomb wants
            self.assertEqual(verdict, "ended", detail)
            self.assertIn("ENHANCE_YOUR_CALM", detail)
        self.assertLess(self.rss_growth_mib(), 32, "peak RSS grew by the decoded size")
        self.assert_unaffected()

    def test_h2_streams_over_limit_refused_before_settings_ack(self):
        # A client that sends 50 streams before it acknowledged our SETTINGS: the first
        # 10 are served, the rest get REFUSED_STREAM (retryable), the connection lives.
        self.attack_starts()
        c = A.H2Raw(self.target, ack_settings=False)
        try:
            block = A.request_block("/slow/1500")
            c.send(b"".join(A.frame(A.HEADERS, A.END_STREAM | A.END_HEADERS, 2 * i + 1, block)
                            for i in range(50)))
            c.run(8.0, until=lambda: c.ended_by_server or len(c.ended) + len(c.rst) >= 50)
            ok = sorted(s for s, v in c.status.items() if v == 200 and s in c.ended)
            refused = sorted(s for s, v in c.rst.items() if v == "REFUSED_STREAM")
            self.assertFalse(c.ended_by_server, c.describe())
            self.assertEqual(ok, [2 * i + 1 for i in range(MAX_STREAMS)], "first 10 streams served")
            self.assertEqual(refused, [2 * i + 1 for i in range(MAX_STREAMS, 50)])
        finally:
            c.close()
        self.assert_unaffected()

    def test_h2_stream_flood_contained(self):
        # The same after the SETTINGS ACK (the limit is in force): whatever happens to
        # the attacker's connection, at most 10 of its streams are served and nobody
        # else notices.
        self.attack_starts()
        verdict, detail = A.h2_stream_flood(self.target, self.opts(), n=50)
        m = re.search(r"(\d+) x 200, (\d+) REFUSED_STREAM", detail)
        self.assertIsNotNone(m, detail)
        served, refused = int(m.group(1)), int(m.group(2))
        self.assertLessEqual(served, MAX_STREAMS, "more streams served than the limit: " + detail)
        # after the SETTINGS ACK nghttp2 ends the connection (PROTOCOL_ERROR); short of
        # that, every stream over the limit must have been refused
        if verdict == "ended":
            self.assertIn("GOAWAY PROTOCOL_ERROR", detail)
        else:
            self.assertEqual((verdict, served + refused), ("refused", 50), detail)
        self.assert_unaffected()

    def test_h2_streams_over_acknowledged_limit_end_connection(self):
        # Once the client has ACKed SETTINGS, a HEADERS over max_concurrent_streams is a
        # connection error for nghttp2 (RFC 9113 5.1.2 allows either): GOAWAY
        # PROTOCOL_ERROR, counted; only that client's connection ends (proxy/README.md).
        before = pt.metric(self.admin, "picket_h2_protocol_errors_total", default=0,
                           error="PROTOCOL_ERROR")
        self.attack_starts()
        c = A.H2Raw(self.target)
        try:
            c.run(2.0, until=lambda: c.settings is not None)
            c.pump(0.1)
            block = A.request_block("/slow/1500")
            c.send(b"".join(A.frame(A.HEADERS, A.END_STREAM | A.END_HEADERS, 2 * i + 1, block)
                            for i in range(50)))
            c.run(8.0, until=lambda: c.ended_by_server)
            self.assertTrue(c.ended_by_server, c.describe())
            self.assertEqual((c.goaway or ("closed",))[0], "PROTOCOL_ERROR", c.describe())
        finally:
            c.close()
        self.assertGreater(pt.metric(self.admin, "picket_h2_protocol_errors_total", default=0,
                                     error="PROTOCOL_ERROR"), before)
        self.assert_unaffected()

    def _calm_goaways(self):
        return pt.metric(self.admin, "picket_h2_protocol_errors_total", default=0,
                         error="ENHANCE_YOUR_CALM")

    def _flood_outcome(self, c, what, answered=None):
        """After a flood on H2Raw `c`: picket either ended the connection with GOAWAY
        ENHANCE_YOUR_CALM (and counted it), or the connection is intact: `answered()`
        (when given) is true once every flood frame got its acknowledgement, and a
        request on the same connection gets 200. Anything else (a wedged connection,
        lost acknowledgements, another GOAWAY code) fails."""
        if answered is not None and not c.ended_by_server:
            c.run(Prober.PROBE_WAIT, until=lambda: answered() or c.ended_by_server)
        if c.ended_by_server:  # at once, or after some of the acknowledgements
            pt.log("%s: %s" % (what, c.describe()))
            self.assertEqual((c.goaway or ("closed",))[0], "ENHANCE_YOUR_CALM",
                             "%s: connection ended with %s" % (what, c.describe()))
            return "ended"
        if answered is not None:
            self.assertTrue(answered(), "%s: acknowledgements missing" % what)
        self.assertEqual(c.get(2 * 1001 + 1, "/", timeout=Prober.PROBE_WAIT), 200,
                         "%s: the flooded connection no longer serves requests" % what)
        pt.log("%s: connection intact, every frame acknowledged, GET 200" % what)
        return "survived"

    def _control_flood(self, kind, n=50000, burst=1000, must_survive=False):
        # n SETTINGS (empty) or PING frames written without reading the ACKs: they pile
        # up on picket's side until it stops reading us (its output is capped) or ends
        # the connection. Then we read: every frame written must be acknowledged.
        calm0 = self._calm_goaways()
        self.attack_starts()
        c = A.H2Raw(self.target)
        try:
            c.run(Prober.PROBE_WAIT, until=lambda: c.settings is not None)
            self.assertIsNotNone(c.settings, "no SETTINGS from picket")
            c.pump(0.1)
            acks0 = c.settings_acks
            one = A.settings_frame() if kind == "settings" else A.frame(A.PING, 0, 0, b"12345678")
            sent, stopped = 0, None
            c.sock.setblocking(True)
            c.sock.settimeout(2.0)
            try:
                while sent < n:
                    c.sock.sendall(one * burst)
                    sent += burst
            except (OSError, ssl.SSLError) as e:  # picket stopped reading (or closed)
                stopped = type(e).__name__
            c.sock.setblocking(False)
            # a burst cut by the timeout went out in part: between sent and sent + burst
            hi = sent + (burst if stopped else 0)
            if kind == "settings":
                answered = lambda: c.settings_acks - acks0 >= sent  # noqa: E731
                got = lambda: c.settings_acks - acks0  # noqa: E731
            else:
                answered = lambda: c.ping_acks >= sent  # noqa: E731
                got = lambda: c.ping_acks  # noqa: E731
            what = "%d-%d %s frames written (%s)" % (sent, hi, kind.upper(),
                                                     "writes blocked: %s" % stopped if stopped else "all")
            outcome = self._flood_outcome(c, what, answered)
            if must_survive:
                self.assertEqual(outcome, "survived", what)
            if outcome == "survived":
                c.run(0.5)  # the acks for a partly written burst may trail
                self.assertLessEqual(got(), hi, "%s: more acks than frames" % what)
            else:
                self.assertGreater(self._calm_goaways(), calm0, "ENHANCE_YOUR_CALM not counted")
        finally:
            c.close()
        self.assertLess(self.rss_growth_mib(), 16, what)
        self.assert_unaffected()

    # No TLS record of these floods holds more frames than nghttp2 lets wait for
    # their ACKs (1000 empty SETTINGS are 9 KB, 1000 PINGs two records), and picket
    # answers each record before it decodes the next: every frame is acknowledged
    # and the connection stays (the hardening README's "survived").
    def test_h2_settings_flood_bounded(self):
        self._control_flood("settings", must_survive=True)

    def test_h2_ping_flood_bounded(self):
        self._control_flood("ping", must_survive=True)

    def test_h2_control_flood_in_one_record(self):
        # 1,500 empty SETTINGS in one write (13.5 KB: one TLS record, decoded in one
        # go) ask for more ACKs than nghttp2 lets wait (max_outbound_ack, 1000): a
        # flood, and its GOAWAY says so (ENHANCE_YOUR_CALM, counted), like every
        # other limit a peer runs into; or every frame is acknowledged.
        self._control_flood("settings", n=1500, burst=1500)

    def _silent_flood(self, kind, n=100000):
        # n frames that need no answer (WINDOW_UPDATE +1 on the connection, or PRIORITY
        # re-parenting 1000 idle streams): all must get through, and the connection must
        # still serve a request afterwards (or have been ended with ENHANCE_YOUR_CALM).
        calm0 = self._calm_goaways()
        self.attack_starts()
        c = A.H2Raw(self.target)
        try:
            c.run(Prober.PROBE_WAIT, until=lambda: c.settings is not None)
            if kind == "window_update":
                burst = A.window_update_frame(0, 1) * 1000
            else:
                burst = b"".join(A.frame(A.PRIORITY, 0, 2 * i + 1,
                                         struct.pack(">IB", 2 * ((i + 7) % 1000) + 1, 200))
                                 for i in range(1000))
            sent = 0
            while sent < n and c.send(burst, timeout=Prober.PROBE_WAIT):
                sent += 1000
            what = "%d %s frames sent" % (sent, kind.upper())
            if self._flood_outcome(c, what) == "survived":
                self.assertEqual(sent, n, "the flood did not get through: " + what)
            else:
                self.assertGreater(self._calm_goaways(), calm0, "ENHANCE_YOUR_CALM not counted")
        finally:
            c.close()
        self.assertLess(self.rss_growth_mib(), 16, what)
        self.assert_unaffected()

    def test_h2_one_big_write_then_silence_is_all_decoded(self):
        # One write of 131 KB (10,100 WINDOW_UPDATE +1 frames, nine TLS records) that
        # ends with a GET, then silence: picket reads it ahead into OpenSSL's buffer
        # and stops a connection's turn at 128 KiB, so records it holds where epoll
        # cannot see them must still be decoded, in this turn or the next (which runs
        # through the same exit as the decode budget's pause, tested above): the GET
        # is answered. Five connections, since a write can arrive in any pieces.
        self.attack_starts()
        for attempt in range(5):
            c = A.H2Raw(self.target)
            try:
                c.run(Prober.PROBE_WAIT, until=lambda: c.settings is not None)
                c.pump(0.1)
                c.sock.setblocking(True)  # one write: all of it on its way at once
                c.sock.sendall(A.window_update_frame(0, 1) * 10100 +
                               A.frame(A.HEADERS, A.END_STREAM | A.END_HEADERS, 1,
                                       A.request_block("/")))
                c.sock.setblocking(False)
                c.run(Prober.PROBE_WAIT, until=lambda: 1 in c.ended or c.ended_by_server)
                self.assertEqual(c.status.get(1), 200, "attempt %d: %s, %d bytes sent" %
                                 (attempt, c.describe(), c.sent_bytes))
            finally:
                c.close()
        self.assert_unaffected()

    def test_h2_lingers_after_its_last_goaway(self):
        # After the GOAWAY that ends a connection, picket half-closes and reads and
        # drops what the client still sends (up to 1 s) instead of closing with
        # unread input, which makes the kernel answer with a reset (and a reset can
        # take the GOAWAY with it, unread, from a client that was slow to read).
        # What a client sends after the GOAWAY (frames it had queued, in TLS records)
        # must all be taken: with an immediate close the first of it draws the reset
        # and the next writes fail.
        self.attack_starts()
        c = A.H2Raw(self.target)
        try:
            c.run(Prober.PROBE_WAIT, until=lambda: c.settings is not None)
            c.send(A.frame(A.PING, 0, 0, b"123"))  # a PING of 3 bytes: a connection error
            c.run(Prober.PROBE_WAIT, until=lambda: c.goaway is not None or c.closed)
            self.assertIsNotNone(c.goaway, c.describe())
            c.sock.setblocking(True)
            try:
                for i in range(10):
                    c.sock.sendall(A.frame(A.PING, 0, 0, b"12345678") * 200)
                    time.sleep(0.01)
            except OSError as e:
                self.fail("write %d after the GOAWAY: %r (no linger)" % (i, e))
        finally:
            c.close()
        self.assert_unaffected()

    def test_h2_window_update_flood_bounded(self):
        self._silent_flood("window_update")

    def test_h2_priority_flood_bounded(self):
        self._silent_flood("priority")

    def test_h2_zero_window_reader_bounded(self):
        # 5 connections x 10 streams of a 1 GiB download, window 0, never updated: each
        # stream may hold at most stream_buffer (256 KiB) per direction.
        self.attack_starts()
        verdict, detail = A.h2_zero_window(self.target, self.opts(big_path="/bytes/1073741824"),
                                           conns=5, streams=MAX_STREAMS, hold=3.0)
        growth = self.rss_growth_mib()
        # every download started (headers need no window), no body byte was sent into a
        # zero window, and nothing ended these connections (idle_timeout is 60 s)
        self.assertEqual(verdict, "survived", detail)
        self.assertIn(": %d responses started, 0 DATA bytes, 0 conns ended" % (5 * MAX_STREAMS),
                      detail)
        bound = 5 * MAX_STREAMS * 2 * self.stream_buffer_mib() + 24
        self.assertLess(growth, bound, "peak RSS growth %.1f MiB (bound %.1f MiB: 2 x stream_buffer "
                        "per stream + 24 MiB)" % (growth, bound))
        self.assert_unaffected()

    # -- TLS ----------------------------------------------------------------

    def handshake_timeouts(self):
        return pt.metric(self.admin, "picket_handshakes_total", default=0, result="timeout")

    def test_tls_slowloris_closed_after_handshake_timeout(self):
        before = self.handshake_timeouts()
        self.attack_starts()
        socks = [self.target.tcp() for _ in range(30)]
        try:
            self.assertEqual(A.h2_get(self.target, "/", timeout=Prober.PROBE_WAIT), 200,
                             "served while 30 silent conns wait")
            # picket closes them (handshake_timeout 1 s); the wait is for that event
            closed, secs = A._wait_closed(socks, 60.0)
        finally:
            for s in socks:
                s.close()
        self.assertEqual(closed, 30, "silent connections still open after %.1fs" % secs)
        self.assertGreaterEqual(self.handshake_timeouts() - before, 30,
                                "closed by something else than the handshake timeout")
        self.assert_unaffected()

    def test_tls_partial_client_hello_closed(self):
        before = self.handshake_timeouts()
        hello = A.client_hello(self.target)
        self.attack_starts()
        socks = []
        try:
            for _ in range(10):
                s = self.target.tcp()
                s.sendall(hello[:len(hello) // 2])
                socks.append(s)
            closed, secs = A._wait_closed(socks, 60.0)
        finally:
            for s in socks:
                s.close()
        self.assertEqual(closed, 10, "half ClientHellos still open after %.1fs" % secs)
        self.assertGreaterEqual(self.handshake_timeouts() - before, 10,
                                "closed by something else than the handshake timeout")
        self.assert_unaffected()

    def _tls_refused(self, fn):
        before = self.handshake_refusals()
        verdict, detail = fn(self.target, self.opts())
        self.assertEqual(verdict, "refused", detail)
        # the refusal came from picket (the ClientHello reached it), not from our openssl
        deadline = time.monotonic() + 30
        while self.handshake_refusals() <= before and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertGreater(self.handshake_refusals(), before, "no refused handshake counted: %s" % detail)
        self.assert_unaffected()

    def test_tls_1_0_refused(self):
        self._tls_refused(A.tls_v1_0)

    def test_tls_1_1_refused(self):
        self._tls_refused(A.tls_v1_1)

    def test_tls_non_aead_refused(self):
        self._tls_refused(A.tls_non_aead)

    def test_tls_oversized_client_chain_refused(self):
        # A Certificate message over 32 KiB (leaf + 100 filler CA certs) is refused
        # during the handshake; nothing of it is verified.
        bundle = os.path.join(self.ctmp, "fat-chain.pem")
        with open(self.pki.cert("client")) as f:
            leaf = f.read()
        with open(self.pki.ca) as f:
            ca = f.read()
        with open(bundle, "w") as f:
            f.write(leaf + ca * 100)
        self.assertGreater(os.path.getsize(bundle), 60 * 1024)  # PEM; about 3/4 of it in DER
        ctx = pt.tls_context(self.pki, cert=None)
        ctx.load_cert_chain(bundle, self.pki.key("client"))
        def tls_errors():
            samples = pt.scrape_metrics(self.admin)
            return sum(v for (n, ls), v in samples.items()
                       if n == "picket_handshakes_total" and dict(ls).get("result") == "tls_error")
        before = tls_errors()
        ok = False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as raw:
                with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                    s.settimeout(2)
                    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
                    ok = bool(s.recv(1))
        except (OSError, ssl.SSLError):
            ok = False
        self.assertFalse(ok, "a 32 KiB+ client certificate chain was accepted")
        # refused by the size cap (OpenSSL: excessive message size -> tls_error), not
        # by the SVID check (CERTS_MAX_PEER_CERTS would give untrusted_chain)
        deadline = time.monotonic() + 30
        while tls_errors() <= before and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertGreater(tls_errors(), before, "no tls_error refusal counted: %r" % sorted((dict(ls).get("result"), v) for (n, ls), v in pt.scrape_metrics(self.admin).items() if n == "picket_handshakes_total"))
        self.assert_unaffected()

    def test_tls_renegotiation_refused(self):
        verdict, detail = A.tls_renegotiation(self.target, self.opts())
        self.assertEqual(verdict, "refused", detail)
        self.assert_unaffected()

    # -- HTTP/1.1 -----------------------------------------------------------

    def test_h1_smuggling_refused_nothing_forwarded(self):
        # picket lingers 2 s (reading and discarding) before it closes a refused
        # connection, so the cases run side by side.
        self.attack_starts()
        cases = A.smuggling_cases("/count/smuggle-" + self._testMethodName)
        with concurrent.futures.ThreadPoolExecutor(len(cases)) as ex:
            results = list(ex.map(lambda c: A.h1_exchange(self.target, c[1].encode("latin-1"),
                                                          read_for=4.0), cases))
        for (name, req, ok), (resps, closed, raw) in zip(cases, results):
            with self.subTest(case=name):
                self.assertTrue(resps, "%s: no answer (%r)" % (name, raw[:200]))
                self.assertIn(resps[0][0], ok, "%s: %r" % (name, raw[:300]))
                self.assertEqual(len(resps), 1, "%s: more than one answer: %r" % (name, raw[:500]))
                self.assertTrue(closed, "%s: connection not closed after the refusal" % name)
        # The same route works for a correct request, sent after every refused
        # connection was closed: once it reached the upstream (it is answered only
        # then), so would anything picket had forwarded from those connections.
        resps, _, raw = A.h1_exchange(self.target, b"POST /count/ok HTTP/1.1\r\nHost: localhost\r\n"
                                      b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                                      b"3\r\nabc\r\n0\r\n\r\n", read_for=Prober.PROBE_WAIT, want=1)
        self.assertEqual([r[0] for r in resps], [200], raw[:300])
        self.assertEqual(self.counting.seen("/count/ok"), [("POST", "/count/ok")])
        self.assertEqual(self.counting.seen("/count/smuggle-"), [], "requests reached the upstream")
        self.assert_unaffected()

    def test_h1_oversized_request_line(self):
        resps, closed, raw = A.h1_exchange(
            self.target, b"GET /count/long-" + b"a" * 100000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n",
            read_for=3.0)
        self.assertTrue(resps, raw[:200])
        self.assertIn(resps[0][0], (400, 414, 431), raw[:300])
        self.assertTrue(closed)
        self.assertEqual(self.counting.seen("/count/long-"), [])
        self.assert_unaffected()

    def test_h1_oversized_headers_431(self):
        req = b"GET /count/bighdr HTTP/1.1\r\nHost: localhost\r\n" + \
            b"".join(b"X-Big-%03d: %s\r\n" % (i, b"v" * 1000) for i in range(100)) + b"\r\n"
        resps, closed, raw = A.h1_exchange(self.target, req, read_for=3.0)
        self.assertTrue(resps, raw[:200])
        self.assertEqual(resps[0][0], 431, raw[:300])
        self.assertTrue(closed)
        self.assertEqual(self.counting.seen("/count/bighdr"), [])
        self.assert_unaffected()

    def test_h1_slow_headers_408(self):
        self.attack_starts()
        # one byte every 0.5 s for up to 60 s: only header_timeout (1 s) can end it, with
        # a 408 and a close; not before header_timeout
        verdict, detail = A.h1_slow_headers(self.target, self.opts(path="/count/slowhdr"), seconds=60.0)
        self.assertEqual(verdict, "ended", detail)
        self.assertIn("408 + close", detail)
        secs = float(re.search(r"after ([0-9.]+)s", detail).group(1))
        self.assertGreaterEqual(secs, 1.0, "408 before header_timeout: " + detail)
        self.assertEqual(self.counting.seen("/count/slowhdr"), [])
        self.assert_unaffected()

    def test_h1_pipeline_flood_in_order(self):
        n = 1000
        reqs = b"".join(b"GET /count/pipe?i=%d HTTP/1.1\r\nHost: localhost\r\n\r\n" % i for i in range(n))
        self.attack_starts()
        # every pipelined request is answered, in order (they wait their turn in the
        # input buffer, which backpressure bounds); the read waits for all n answers
        resps, closed, raw = A.h1_exchange(self.target, reqs, read_for=120.0, want=n)
        self.assertEqual(len(resps), n, "%d of %d answered (closed: %s): %r"
                         % (len(resps), n, closed, raw[-300:]))
        for i, (st, _, body) in enumerate(resps):
            self.assertEqual((st, body), (200, b"/count/pipe?i=%d" % i), "answer %d out of order" % i)
        self.assertEqual(len(self.counting.seen("/count/pipe")), n)
        self.assert_unaffected()

    # -- helpers --------------------------------------------------------------

    def opts(self, **kw):
        o = {"path": "/", "slow_path": "/slow/1500", "big_path": "/bytes/1073741824",
             "servername": "localhost"}
        o.update(kw)
        return type("Opts", (), o)()


if __name__ == "__main__":
    pt.main(timeout=170)
