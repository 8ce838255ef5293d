#!/usr/bin/python3
"""identity.source workload_api (issue 19): picket takes its SVID and trust bundles from a
SPIFFE Workload API server (wlapi_server.py: grpcio, hand-encoded protobuf, a Unix socket)
and rotates them through the same path as certificate files.

  * serves mTLS with the SVID it was handed; the call carries workload.spiffe.io: true
  * rotations under load: no failed request, new handshakes get the new SVID at once
  * broken messages (key mismatch, expired, no URI SAN, garbage, too large): refused,
    counted, logged, the old SVID kept
  * federated bundles: a partner trust domain is trusted once the server sends its bundle
  * the stream dropped and the server gone: reconnects, the identity kept meanwhile
  * a server that never answers (or no server): not ready, listeners do not accept, and
    they do once the first SVID arrives
  * the mesh: two pickets, both on the Workload API
  * `picket cert inspect --workload-api SOCKET`
"""
import json
import os
import socket
import ssl
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import picket_test as pt  # noqa: E402

pt.require_module("grpc", "python3-grpcio")
import wlapi_server as wl  # noqa: E402

PARTNER_ID = "spiffe://partner.net/ns/partner/sa/caller"


class WorkloadAPI(pt.TestCase):

    def setUp(self):
        super().setUp()
        # sun_path is 108 bytes: keep the socket in a short directory
        self.sockdir = os.path.join("/tmp", "pwl-%d-%s" % (os.getpid(), os.urandom(3).hex()))
        os.makedirs(self.sockdir)
        self.addCleanup(lambda: os.path.isdir(self.sockdir) and
                        __import__("shutil").rmtree(self.sockdir, ignore_errors=True))

    # -- helpers --------------------------------------------------------------

    def server(self, name="agent.sock", svids=None, start=True):
        srv = wl.WorkloadAPI(os.path.join(self.sockdir, name))
        if svids is not None:
            srv.set_svids(svids)
        if start:
            srv.start()
        self.addCleanup(srv.stop)
        return srv

    def svid(self, name="server", spiffe_id=pt.SERVER_ID, hint=None, bundle=None):
        return wl.svid_from_files(spiffe_id, self.pki.cert(name), self.pki.key(name),
                                  bundle or self.pki.ca, hint)

    def start(self, srv, identity_extra=None, wait_ready=True, **kw):
        up = self.upstream("h2c")
        ident = {"source": "workload_api", "workload_api_socket": "unix://" + srv.path}
        ident.update(identity_extra or {})
        path, cfg, port, admin = self.config(pt.upstream_url("h2c", up), identity=ident, **kw)
        # readiness is /healthz only: the tests look at /readyz themselves
        p = self.picket(path, admin_port=admin)
        self.port, self.admin, self.proc = port, admin, p
        if wait_ready:
            self.wait_ready()
        return port

    def readyz(self):
        st, _, body = pt.http_get_plain(self.admin, "/readyz")
        return st, body.decode(errors="replace")

    def wait_ready(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            st, body = self.readyz()
            if st == 200:
                return
            self.assertLess(time.monotonic(), deadline, "not ready within %.0fs: %s" % (timeout, body))
            time.sleep(0.05)

    def metric(self, name, **labels):
        return pt.metric(pt.scrape_metrics(self.admin), name, **labels)

    def wait_metric(self, name, pred, timeout=30.0, **labels):
        deadline = time.monotonic() + timeout
        while True:
            v = self.metric(name, **labels)
            if v is not None and pred(v):
                return v
            self.assertLess(time.monotonic(), deadline, "%s%r stayed %r" % (name, labels, v))
            time.sleep(0.05)

    def wait_served(self, serial, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            got = pt.served_serial(self.port)
            if got == serial:
                return
            self.assertLess(time.monotonic(), deadline, "served %s, want %s" % (got, serial))
            time.sleep(0.05)

    # -- tests ----------------------------------------------------------------

    def test_serves_svid_from_workload_api(self):
        srv = self.server(svids=[self.svid()])
        port = self.start(srv)
        for http in pt.HTTP_VERSIONS:
            r = self.curl(port, "/headers", http=http)
            self.assertOK(r, http)
            xfcc = r.json()["headers"].get("x-forwarded-client-cert", "")
            self.assertIn("By=" + pt.SERVER_ID, xfcc)
        self.assertEqual(pt.served_serial(port), pt.cert_serial(self.pki.cert("server")))
        # the call carried the spec's security header (the server refuses calls without)
        self.assertGreaterEqual(srv.headers_ok, 1)
        self.assertEqual(self.metric("picket_workload_api_connected"), 1)
        self.assertEqual(self.metric("picket_workload_api_updates_total", result="accepted"), 1)
        self.assertEqual(self.metric("picket_workload_api_updates_total", result="refused"), 0)
        left = self.metric("picket_svid_expiry_seconds")
        self.assertGreater(left, 0)
        ev = pt.wait_log_event(self.proc, "identity_updated")
        self.assertIsNotNone(ev)
        self.assertEqual(ev.get("own_id"), pt.SERVER_ID)
        self.assertEqual(ev.get("source"), "workload_api")
        # a client the bundle does not vouch for is still refused
        r = self.curl(port, "/", cert="evil")
        self.assertNotEqual(r.exit, 0, r)

    def test_svid_hint_picks_the_svid(self):
        self.pki.issue("wl-hinted", "ca", "spiffe://example.org/ns/default/sa/hinted",
                       ["localhost"], ["127.0.0.1"])
        srv = self.server(svids=[self.svid(hint="internal"),
                                 self.svid("wl-hinted", "spiffe://example.org/ns/default/sa/hinted",
                                           hint="external")])
        port = self.start(srv, identity_extra={"svid_hint": "external"})
        self.assertEqual(pt.served_serial(port), pt.cert_serial(self.pki.cert("wl-hinted")))
        self.assertOK(self.curl(port, "/"))
        # a message without that hint is refused, the hinted SVID kept
        mark = len(self.proc.stderr())
        srv.push([self.svid(hint="internal")])
        ev = pt.wait_log_event(self.proc, "workload_api_refused", since=mark)
        self.assertIsNotNone(ev)
        self.assertIn("no_matching_hint", ev.get("error", ""))
        self.assertEqual(pt.served_serial(port), pt.cert_serial(self.pki.cert("wl-hinted")))

    def _load(self, port, stop, results, lock, http):
        """New connection (new handshake) per request until stop."""
        while not stop.is_set():
            r = self.curl(port, "/", http=http, timeout=60)
            with lock:
                results.append((time.monotonic(), http, r.exit, r.status, r.stderr[-200:]))

    def _h2_live(self, port, stop, results, lock):
        """One long-lived h2 connection: a rotation must not drop it."""
        c = pt.H2Client(port, self.pki)
        try:
            while not stop.is_set():
                try:
                    st, _, _, _ = c.request("/", timeout=60)
                    err = ""
                except (AssertionError, OSError) as e:
                    st, err = 0, str(e)
                with lock:
                    results.append((time.monotonic(), "h2-live", 0 if st else 1, st, err))
                if not st:
                    return
                time.sleep(0.02)
        finally:
            c.close()

    def test_rotation_under_load_no_failed_request(self):
        names = []
        for i in range(3):
            n = "wl-rot%d" % i
            self.pki.issue(n, "ca", pt.SERVER_ID, ["localhost"], ["127.0.0.1"])
            names.append(n)
        srv = self.server(svids=[self.svid()])
        port = self.start(srv, workers=2)
        stop = threading.Event()
        lock = threading.Lock()
        results = []
        threads = [threading.Thread(target=self._load, args=(port, stop, results, lock, h),
                                    daemon=True) for h in ("2", "1.1", "2")]
        threads.append(threading.Thread(target=self._h2_live, args=(port, stop, results, lock),
                                        daemon=True))
        for t in threads:
            t.start()
        self.addCleanup(stop.set)

        def wait_more(n_after, since):
            deadline = time.monotonic() + 120
            while True:
                with lock:
                    kinds = {r[1] for r in results if r[0] > since}
                    count = sum(1 for r in results if r[0] > since)
                if kinds >= {"2", "1.1", "h2-live"} and count >= n_after:
                    return
                self.assertLess(time.monotonic(), deadline, "load stalled")
                time.sleep(0.02)

        wait_more(10, 0)
        for i, n in enumerate(names):
            srv.push([self.svid(n)])
            self.wait_metric("picket_workload_api_updates_total", lambda v, k=i: v >= k + 2,
                             result="accepted")
            self.wait_served(pt.cert_serial(self.pki.cert(n)))
            wait_more(10, time.monotonic())
        stop.set()
        for t in threads:
            t.join(90)
        failed = [r for r in results if r[2] != 0 or r[3] != 200]
        self.assertEqual(failed, [], "%d of %d requests failed" % (len(failed), len(results)))
        self.assertGreater(len(results), 40)
        self.assertEqual(self.metric("picket_workload_api_updates_total", result="refused"), 0)

    def test_broken_updates_refused_old_kept(self):
        self.pki.issue("wl-expired", "ca", pt.SERVER_ID, ["localhost"], ["127.0.0.1"],
                       lifetime=60, not_before=time.time() - 7200)
        self.pki.issue("wl-nouri", "ca", None, ["localhost"], ["127.0.0.1"])
        srv = self.server(svids=[self.svid()])
        port = self.start(srv)
        serial = pt.cert_serial(self.pki.cert("server"))
        good = self.svid()
        mismatch = wl.svid(pt.SERVER_ID, wl.pem_certs_der(self.pki.cert("server")),
                           wl.pem_key_der(self.pki.key("client")), wl.pem_certs_der(self.pki.ca))
        other_bundle = self.svid(bundle=self.pki.cert("otherca"))
        cases = [
            ("key_mismatch", wl.response([mismatch])),
            ("expired", wl.response([self.svid("wl-expired")])),
            ("no_uri_san", wl.response([self.svid("wl-nouri")])),
            ("spiffe_id_mismatch", wl.response([self.svid(spiffe_id=pt.CLIENT_ID)])),
            ("untrusted_chain", wl.response([other_bundle])),
            ("no_svid", wl.response([])),
            ("bad_message", b"\x0a\x05\x01"),
            ("bad_federated_bundle", wl.response([good], {"spiffe://example.org": b"x"})),
        ]
        for i, (reason, data) in enumerate(cases):
            mark = len(self.proc.stderr())
            srv.push_raw(data)
            ev = pt.wait_log_event(self.proc, "workload_api_refused", since=mark)
            self.assertIsNotNone(ev, reason)
            self.assertTrue(ev.get("error", "").startswith(reason + ":"), (reason, ev))
            self.assertEqual(self.metric("picket_workload_api_updates_total", result="refused"),
                             i + 1)
            self.assertEqual(pt.served_serial(port), serial, reason)
            self.assertOK(self.curl(port, "/"), reason)
        st, body = self.readyz()
        self.assertEqual(st, 200, body)
        self.assertEqual(self.metric("picket_workload_api_updates_total", result="accepted"), 1)

    def test_too_large_message_refused_and_reconnects(self):
        srv = self.server(svids=[self.svid()])
        port = self.start(srv)
        mark = len(self.proc.stderr())
        # 4 MiB + 1 of padding (an unknown bytes field 15): refused from its prefix alone
        pad = b"\x7a" + wl.varint(4 * 1024 * 1024) + b"\0" * (4 * 1024 * 1024)
        srv.push_raw(pad)
        ev = pt.wait_log_event(self.proc, "workload_api_refused", since=mark)
        self.assertIsNotNone(ev)
        self.assertTrue(ev.get("error", "").startswith("too_large:"), ev)
        # the stream is reset and opened again; the server's current message (still the
        # big one) is refused again, and the identity stays in force throughout
        self.assertOK(self.curl(port, "/"))
        srv.push([self.svid()])
        self.wait_metric("picket_workload_api_updates_total", lambda v: v >= 2, result="accepted")
        self.assertOK(self.curl(port, "/"))

    def test_federated_bundles(self):
        pt.pki_add_ca(self.pki, "wl-partnerca", "partner.net")
        self.pki.issue("wl-partner", "wl-partnerca", PARTNER_ID)
        srv = self.server(svids=[self.svid()])
        port = self.start(srv)
        r = self.curl(port, "/", cert="wl-partner")
        self.assertNotEqual(r.exit, 0, r)
        mark = len(self.proc.stderr())
        srv.push([self.svid()], federated={"spiffe://partner.net":
                                           wl.pem_certs_der(self.pki.cert("wl-partnerca"))})
        ev = pt.wait_log_event(self.proc, "identity_updated", since=mark)
        self.assertIsNotNone(ev)
        self.assertEqual(ev.get("trust_domains"), "2", ev)
        r = self.curl(port, "/headers", cert="wl-partner")
        self.assertOK(r)
        self.assertIn("URI=" + PARTNER_ID, r.json()["headers"].get("x-forwarded-client-cert", ""))
        self.assertOK(self.curl(port, "/"))
        # federation withdrawn: the partner is refused again
        srv.push([self.svid()])
        self.wait_metric("picket_workload_api_updates_total", lambda v: v >= 3, result="accepted")
        r = self.curl(port, "/", cert="wl-partner")
        self.assertNotEqual(r.exit, 0, r)

    def test_stream_dropped_reconnects_identity_kept(self):
        srv = self.server(svids=[self.svid()])
        port = self.start(srv)
        self.assertTrue(srv.wait_streams(1))
        calls = srv.calls
        mark = len(self.proc.stderr())
        srv.drop_streams()
        ev = pt.wait_log_event(self.proc, "workload_api_disconnected", since=mark)
        self.assertIsNotNone(ev)
        self.assertEqual(ev.get("msg"), "keeping the identity in force until it expires", ev)
        # reconnects by itself (backoff from 250-500 ms)
        self.wait_metric("picket_workload_api_updates_total", lambda v: v >= 2, result="accepted")
        self.assertGreater(srv.calls, calls)
        self.assertOK(self.curl(port, "/"))
        # the server goes away altogether: identity kept, still ready, not connected
        mark = len(self.proc.stderr())
        srv.stop()
        self.assertIsNotNone(pt.wait_log_event(self.proc, "workload_api_disconnected", since=mark))
        self.wait_metric("picket_workload_api_connected", lambda v: v == 0)
        for _ in range(3):
            self.assertOK(self.curl(port, "/"))
        st, body = self.readyz()
        self.assertEqual(st, 200, body)
        # failed attempts are retried with growing delays
        self.assertIsNotNone(pt.wait_log_event(
            self.proc, "workload_api_disconnected", since=mark,
            pred=lambda e: e.get("reason") == "connect_failed"))
        # and it comes back, with a new SVID
        self.pki.issue("wl-back", "ca", pt.SERVER_ID, ["localhost"], ["127.0.0.1"])
        srv2 = self.server(svids=[self.svid("wl-back")])
        self.assertTrue(srv2.wait_streams(1, timeout=60))
        self.wait_served(pt.cert_serial(self.pki.cert("wl-back")), timeout=60)
        self.wait_metric("picket_workload_api_connected", lambda v: v == 1)
        self.assertOK(self.curl(port, "/"))

    def test_never_answers_not_ready(self):
        srv = self.server()  # accepts the call, has nothing to send
        srv.silent = True
        port = self.start(srv, wait_ready=False)
        self.assertTrue(srv.wait_streams(1))
        st, body = self.readyz()
        self.assertEqual(st, 503, body)
        self.assertIn("no SVID from the Workload API yet", body)
        # the listener is bound but takes no connection: the TLS handshake never starts
        ok, info = pt.tls_probe(port, self.pki, timeout=1.0)
        self.assertFalse(ok, info)
        self.assertEqual(self.metric("picket_workload_api_updates_total", result="accepted"), 0)
        # connected (the agent is there), just not answering
        self.wait_metric("picket_workload_api_connected", lambda v: v == 1)
        # a client waiting in the accept queue is served once the SVID arrives
        result = {}

        def call():
            result["r"] = self.curl(port, "/", timeout=60)
        t = threading.Thread(target=call, daemon=True)
        t.start()
        srv.silent = False
        srv.push([self.svid()])
        self.wait_ready()
        t.join(70)
        self.assertOK(result.get("r"))

    def test_no_server_not_ready(self):
        srv = self.server(start=False)
        port = self.start(srv, wait_ready=False)
        mark = 0
        ev = pt.wait_log_event(self.proc, "workload_api_disconnected", since=mark,
                               pred=lambda e: e.get("reason") == "connect_failed")
        self.assertIsNotNone(ev)
        self.assertEqual(ev.get("msg"), "no identity yet: listeners wait and /readyz fails")
        st, body = self.readyz()
        self.assertEqual(st, 503, body)
        self.assertIn("connect_failed", body)
        self.assertFalse(pt.tls_probe(port, self.pki, timeout=1.0)[0])
        self.assertEqual(self.metric("picket_workload_api_connected"), 0)
        # the agent starts later: picket picks it up on a retry
        srv.set_svids([self.svid()])
        srv.start()
        self.wait_ready(timeout=60)
        self.assertOK(self.curl(port, "/"))

    def test_sighup_keeps_identity(self):
        import signal
        srv = self.server(svids=[self.svid()])
        port = self.start(srv)
        serial = pt.cert_serial(self.pki.cert("server"))
        mark = len(self.proc.stderr())
        self.proc.signal(signal.SIGHUP)
        ev = pt.wait_log_event(self.proc, "reloaded", since=mark)
        self.assertIsNotNone(ev)
        self.assertEqual(ev.get("own_id"), pt.SERVER_ID, ev)
        self.assertEqual(pt.served_serial(port), serial)
        self.assertOK(self.curl(port, "/"))
        # the source itself does not change on a reload
        with open(self.proc.conf) as f:
            cfg = json.load(f)
        cfg["identity"]["svid_hint"] = "other"
        pt.write_config(self.proc.conf, cfg)
        mark = len(self.proc.stderr())
        self.proc.signal(signal.SIGHUP)
        ev = pt.wait_log_event(self.proc, "reload_refused", since=mark)
        self.assertIsNotNone(ev)
        self.assertIn("need a restart", ev.get("error", ""))
        self.assertOK(self.curl(port, "/"))
        # and a rotation after the reload still lands
        self.pki.issue("wl-after-hup", "ca", pt.SERVER_ID, ["localhost"], ["127.0.0.1"])
        srv.push([self.svid("wl-after-hup")])
        self.wait_served(pt.cert_serial(self.pki.cert("wl-after-hup")))

    def test_config_refusals(self):
        up = pt.upstream_url("h2c", 1)
        cases = [
            ({"source": "workload_api", "workload_api_socket": "tcp://127.0.0.1:1"},
             "expected unix:///path"),
            ({"source": "workload_api", "workload_api_socket": "unix:///x.sock", "cert": "c"},
             "identity.cert: not used with"),
            ({"source": "workload_api"}, "SPIFFE_ENDPOINT_SOCKET"),
        ]
        for ident, msg in cases:
            path, _, _, _ = self.config(up, identity=ident)
            env = dict(os.environ)
            env.pop("SPIFFE_ENDPOINT_SOCKET", None)
            rc, out, err = pt.run_picket_cli(["run", "-c", path])
            self.assertEqual(rc, 2, err)
            self.assertIn(msg, err)

    def test_socket_from_environment(self):
        srv = self.server(svids=[self.svid()])
        up = self.upstream("h2c")
        path, _, port, admin = self.config(pt.upstream_url("h2c", up),
                                           identity={"source": "workload_api"})
        self.admin = admin
        p = self.picket(path, admin_port=admin,
                        env_extra={"SPIFFE_ENDPOINT_SOCKET": "unix://" + srv.path})
        self.proc = p
        self.wait_ready()
        self.assertOK(self.curl(port, "/"))

    def test_mesh_both_sides_on_workload_api(self):
        """app -> picket A (outbound, SVID from its Workload API) -> picket B (inbound, SVID
        from another Workload API) -> upstream."""
        srv_a = self.server("a.sock", svids=[self.svid("client", pt.CLIENT_ID)])
        srv_b = self.server("b.sock", svids=[self.svid()])
        up = self.upstream("h2c")
        b_path, _, b_port, b_admin = self.config(
            pt.upstream_url("h2c", up), name="b.json",
            identity={"source": "workload_api", "workload_api_socket": "unix://" + srv_b.path})
        self.picket(b_path, admin_port=b_admin)
        a_out = pt.free_port()
        a_path, _, _, a_admin = self.config(
            pt.upstream_url("h2c", up), name="a.json",
            identity={"source": "workload_api", "workload_api_socket": "unix://" + srv_a.path},
            listeners_extra=[{"name": "outbound", "kind": "outbound",
                              "bind": "127.0.0.1:%d" % a_out,
                              "routes": [{"authority": "b.svc",
                                          "upstream": "127.0.0.1:%d" % b_port,
                                          "server_id": pt.SERVER_ID}]}])
        self.picket(a_path, admin_port=a_admin)
        for admin in (a_admin, b_admin):
            self.admin = admin
            self.wait_ready()
        for proto in (["--http1.1"], ["--http2-prior-knowledge"]):
            out = pt._run(["curl", "-sS", "--noproxy", "*", "--max-time", "30"] + proto +
                          ["-H", "Host: b.svc", "http://127.0.0.1:%d/headers" % a_out])
            hdrs = json.loads(out)["headers"]
            self.assertIn("URI=" + pt.CLIENT_ID, hdrs.get("x-forwarded-client-cert", ""), proto)
            self.assertIn("By=" + pt.SERVER_ID, hdrs.get("x-forwarded-client-cert", ""), proto)
        # B rotates: A's next connections verify the new SVID
        self.pki.issue("wl-mesh-b2", "ca", pt.SERVER_ID, ["localhost"], ["127.0.0.1"])
        srv_b.push([self.svid("wl-mesh-b2")])
        self.admin = b_admin
        self.wait_metric("picket_workload_api_updates_total", lambda v: v >= 2, result="accepted")
        out = pt._run(["curl", "-sS", "--noproxy", "*", "--max-time", "30", "--http1.1",
                       "-H", "Host: b.svc", "http://127.0.0.1:%d/" % a_out])
        self.assertTrue(out)

    def test_cert_inspect_workload_api(self):
        pt.pki_add_ca(self.pki, "wl-partnerca", "partner.net")
        srv = self.server(svids=[
            self.svid(hint="internal"),
            wl.svid(pt.CLIENT_ID, wl.pem_certs_der(self.pki.cert("client")),
                    wl.pem_key_der(self.pki.key("other")), wl.pem_certs_der(self.pki.ca),
                    "broken")])
        srv.push([self.svid(hint="internal")],
                 federated={"spiffe://partner.net": wl.pem_certs_der(self.pki.cert("wl-partnerca"))})
        rc, out, err = pt.run_picket_cli(["cert", "inspect", "--workload-api", "unix://" + srv.path])
        self.assertEqual(rc, 0, out + err)
        self.assertIn("svids:         1", out)
        self.assertIn("spiffe_id:     " + pt.SERVER_ID, out)
        self.assertIn("hint:          internal", out)
        self.assertIn("not_after:     ", out)
        self.assertIn("trust_domain:  example.org (1 CA certificate)", out)
        self.assertIn("trust_domain:  partner.net (1 CA certificate) federated", out)
        self.assertIn("federated:     spiffe://partner.net", out)
        self.assertIn("status:        ok", out)
        # a refused SVID says why, and the exit status is 1; a bare path works as SOCKET
        srv.push([self.svid(hint="internal"),
                  wl.svid(pt.CLIENT_ID, wl.pem_certs_der(self.pki.cert("client")),
                          wl.pem_key_der(self.pki.key("other")), wl.pem_certs_der(self.pki.ca))])
        rc, out, err = pt.run_picket_cli(["cert", "inspect", "--workload-api", srv.path])
        self.assertEqual(rc, 1, out + err)
        self.assertIn("status:        refused: key_mismatch:", out)
        # SPIFFE_ENDPOINT_SOCKET when SOCKET is left out; no server: exit 1 and why
        srv.stop()
        env = dict(os.environ, SPIFFE_ENDPOINT_SOCKET="unix://" + srv.path)
        r = __import__("subprocess").run([pt.picket_bin(), "cert", "inspect", "--workload-api"],
                                         env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("error:         connect_failed:", r.stdout)
        rc, out, err = pt.run_picket_cli(["cert", "inspect", "--workload-api", "tcp://1.2.3.4:1"])
        self.assertEqual(rc, 2, out + err)


if __name__ == "__main__":
    pt.main(timeout=290)
