#!/usr/bin/python3
"""Policy from a control plane: `picket control serve` (the reference control plane)
and the sidecar's fetcher (policy.url) end to end. ETag / If-None-Match / long-poll
on the server; on the sidecar: enforcement of the fetched bundle, updates by
long-poll, refusals that keep the running bundle (unknown key, tampered payload,
rollback, same revision with other content), the control plane's SPIFFE ID
(server_id), persistence to cache_dir and offline start, staleness (deny and
last_known_good), no bundle at all, an unwritable cache_dir.

    PICKET_BIN=build/picket /usr/bin/python3 tests/integration/test_control.py [-k PATTERN]
"""
import base64
import hashlib
import http.client
import json
import os
import signal
import socket
import ssl
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import picket_test as pt  # noqa: E402

CP_ID = "spiffe://example.org/control"
WRONG_CP_ID = "spiffe://example.org/not-control"
KEYID = "cp-1"

# Two upstream paths (upstream.py answers both with 200). RULES_A allows A only (B is
# denied by default); RULES_B the other way round.
A, B = "/headers", "/bytes/3"
RULES_A = [{"id": "allow-a", "action": "allow", "from": [pt.CLIENT_ID], "paths": [A]}]
RULES_B = [{"id": "allow-b", "action": "allow", "from": [pt.CLIENT_ID], "paths": ["/bytes/**"]}]

_MATERIAL = {}


def material(pki):
    """Control-plane SVIDs and signing keys, made once per process."""
    if not _MATERIAL:
        pki.issue("control", "ca", CP_ID, ["localhost"], ["127.0.0.1"])
        pki.issue("wrongcp", "ca", WRONG_CP_ID, ["localhost"], ["127.0.0.1"])
        for name in ("cpkey", "rogue"):
            key = os.path.join(pki.dir, name + ".pem")
            pub = os.path.join(pki.dir, name + ".pub")
            if not os.path.exists(key):
                rc, _, err = pt.run_picket_cli(["bundle", "keygen", "--type", "ed25519",
                                                "--out", key, "--pub", pub])
                if rc != 0:
                    raise AssertionError("bundle keygen failed: %s" % err)
            _MATERIAL[name] = (key, pub)
    return _MATERIAL


class ControlTest(pt.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        rc, out, err = pt.run_picket_cli(["control", "--help"])
        if rc != 0 or "control serve" not in out:
            raise AssertionError("`picket control` is not available in %s (wire px_cmd_control "
                                 "into main.c): %s" % (pt.picket_bin(), err[-300:]))
        cls.keys = material(cls.pki)

    def setUp(self):
        super().setUp()
        self.cpdir = os.path.join(self.tmp, "bundles")
        self.stage = os.path.join(self.tmp, "stage")
        os.makedirs(self.cpdir)
        os.makedirs(self.stage)
        self.up_port = self.upstream("h1")
        self.nsigned = 0

    # ---- helpers ---------------------------------------------------------------

    def sign(self, rules, revision, key="cpkey", keyid=KEYID):
        """A signed envelope (bytes) of a bundle."""
        self.nsigned += 1
        src = os.path.join(self.stage, "b%d.json" % self.nsigned)
        out = os.path.join(self.stage, "e%d.json" % self.nsigned)
        with open(src, "w") as f:
            json.dump({"revision": revision, "mode": "enforce", "default": "deny",
                       "rules": rules}, f)
        rc, _, err = pt.run_picket_cli(["bundle", "sign", "--key", self.keys[key][0],
                                        "--keyid", keyid, "--out", out, src])
        self.assertEqual(rc, 0, "bundle sign: %s" % err)
        with open(out, "rb") as f:
            return f.read()

    def publish(self, data, name="shop.json"):
        """Publishes envelope bytes the way an operator would: write aside, rename in."""
        self.nsigned += 1
        tmp = os.path.join(self.stage, "pub%d" % self.nsigned)
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(self.cpdir, name))

    def control(self, cert="control", port=None, extra=()):
        port = port or pt.free_port()
        args = ["control", "serve", "--dir", self.cpdir, "--bind", "127.0.0.1:%d" % port,
                "--cert", self.pki.cert(cert), "--key", self.pki.key(cert),
                "--bundle", self.pki.ca,
                "--max-wait", "10s"] + list(extra)
        p = pt.Picket(self.tmp, None, inbound_port=port, pki=self.pki, name="control", args=args)
        self.addCleanup(self._stop_control, p)
        p.start()
        p.port = port
        return p

    def _stop_control(self, p):
        rc = p.stop()
        if self.failed() or pt.VERBOSE or p.hung:
            pt.log("control pid %d exit %s; stderr tail:\n%s" % (p.pid, rc, p.stderr()[-3000:]))
        problems = p.stop_problems(expect_exit=None if p.killed and not p.hung else 0)
        if problems:
            self.fail("control plane: " + "\n".join(problems))

    def sidecar(self, cp_port, name="picket.json", wait=True, **policy_extra):
        pol = {"url": "https://localhost:%d/shop.json" % cp_port, "server_id": CP_ID,
               "signing_keys": {KEYID: self.keys["cpkey"][1]},
               "poll_min": "1s", "poll_max": "1s", "long_poll": "2s",
               "cache_dir": os.path.join(self.tmp, "cache")}
        pol.update(policy_extra)
        pol = {k: v for k, v in pol.items() if v is not None}
        # cache_dir is not created here: the sidecar makes it on first use
        conf, _, inbound, admin = self.config(pt.upstream_url("h1", self.up_port), policy=pol,
                                              name=name)
        p = self.picket(conf, inbound_port=inbound, admin_port=admin, wait=wait)
        p.inbound, p.admin = inbound, admin
        return p

    def status(self, p, path):
        r = self.curl(p.inbound, path, http="1.1", timeout=60)
        return r.status, r.body

    def policy_json(self, p):
        st, _, body = pt.http_get_plain(p.admin, "/policy")
        self.assertEqual(st, 200)
        return json.loads(body)

    def wait_for(self, fn, timeout, step=0.05):
        deadline = time.monotonic() + timeout
        while True:
            v = fn()
            if v or time.monotonic() > deadline:
                return v
            time.sleep(step)

    def wait_revision(self, p, rev, timeout=30.0):
        ok = self.wait_for(lambda: self.policy_json(p).get("revision") == rev, timeout)
        self.assertTrue(ok, "revision %s not in force: %r\n%s" % (
            rev, self.policy_json(p), p.stderr()[-2000:]))

    def assert_r1_decisions(self, p, msg=""):
        self.assertEqual(self.status(p, A)[0], 200, msg)
        self.assertEqual(self.status(p, B)[0], 403, msg)

    def readyz(self, p):
        return pt.http_get_plain(p.admin, "/readyz")[0]

    def cp_get(self, cp, path, headers=None, cert="client", timeout=10.0):
        """One HTTPS request straight to the control plane: (status, headers, body)."""
        ctx = pt.tls_context(self.pki, cert, alpn=("http/1.1",))
        c = http.client.HTTPSConnection("localhost", cp.port, context=ctx, timeout=timeout)
        try:
            c.request("GET", path, headers=headers or {})
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    # ---- the control plane alone --------------------------------------------------

    def test_control_plane_http(self):
        env = self.sign(RULES_A, 1)
        self.publish(env)
        cp = self.control(extra=["--allow", "spiffe://example.org/ns/default/sa/client"])
        etag = '"%s"' % hashlib.sha256(env).hexdigest()

        st, h, body = self.cp_get(cp, "/shop.json")
        self.assertEqual((st, body), (200, env))
        self.assertEqual(h.get("etag"), etag)
        st, h, body = self.cp_get(cp, "/shop.json", {"If-None-Match": etag})
        self.assertEqual((st, body, h.get("etag")), (304, b"", etag))
        st, _, _ = self.cp_get(cp, "/shop.json", {"If-None-Match": '"other"'})
        self.assertEqual(st, 200)
        self.assertEqual(self.cp_get(cp, "/nope.json")[0], 404)
        for bad in ("/../bundles/shop.json", "/a/shop.json", "/.hidden", "/%2e%2e"):
            self.assertIn(self.cp_get(cp, bad)[0], (400, 404), bad)

        # long-poll: held until the deadline without a change...
        t0 = time.monotonic()
        st, _, _ = self.cp_get(cp, "/shop.json", {"If-None-Match": etag, "Prefer": "wait=1"})
        held = time.monotonic() - t0
        self.assertEqual(st, 304)
        # held for the client's wait=1, not less, and not until --max-wait (10 s)
        self.assertTrue(0.9 <= held < 10.0, "held %.2fs" % held)

        # ...and answered as soon as the file changes
        env2 = self.sign(RULES_B, 2)
        res = {}

        def poll():
            t = time.monotonic()
            res["r"] = self.cp_get(cp, "/shop.json", {"If-None-Match": etag, "Prefer": "wait=5"})
            res["t"] = time.monotonic() - t
        import threading
        th = threading.Thread(target=poll)
        th.start()
        time.sleep(0.5)  # spacing, so the request is most likely held when the file changes
        self.publish(env2)
        th.join(60)
        # a held request the change did not reach would end at wait=5 with a 304
        self.assertEqual(res["r"][0], 200)
        self.assertEqual(res["r"][2], env2)

        # a verified SVID outside --allow, or no certificate at all, gets nothing
        for cert in ("other", None):
            with self.assertRaises((ssl.SSLError, OSError, http.client.HTTPException), msg=cert):
                self.cp_get(cp, "/shop.json", cert=cert, timeout=3)
        ev = pt.wait_log_event(cp, "control_handshake_refused",
                               pred=lambda o: o.get("reason") == "not_allowed")
        self.assertIsNotNone(ev, cp.stderr()[-2000:])
        lines = pt.log_events(cp, "control_request")
        self.assertTrue(any(o.get("status") == "200" and o.get("peer_id") == pt.CLIENT_ID
                            for o in lines), lines[:3])

    # ---- held requests: per-client cap, clients that go away --------------------

    def long_poll(self, cp, etag, cert="client", wait=600):
        """Starts GET /shop.json (If-None-Match: etag, Prefer: wait=N) in a thread;
        .join() it, then .status / .body (status None: no answer, or the error)."""
        test = self

        class Poll(threading.Thread):
            status, body, error = None, None, None

            def run(self):
                ctx = pt.tls_context(test.pki, cert, alpn=("http/1.1",))
                c = http.client.HTTPSConnection("localhost", cp.port, context=ctx,
                                                timeout=wait + 60)
                try:
                    c.request("GET", "/shop.json",
                              headers={"If-None-Match": etag, "Prefer": "wait=%d" % wait})
                    r = c.getresponse()
                    self.body = r.read()
                    self.status = r.status
                except (OSError, http.client.HTTPException) as e:
                    self.error = e
                finally:
                    c.close()
        t = Poll(daemon=True)
        t.start()
        return t

    def held(self, cp):
        """Requests held right now: the "waiters" field of the log line of a plain GET."""
        since = len(cp.stderr())
        self.assertEqual(self.cp_get(cp, "/shop.json")[0], 200)
        ev = pt.wait_log_event(cp, "control_request", since,
                               pred=lambda o: o.get("status") == "200" and o.get("etag")
                               and o.get("detail") is None)
        self.assertIsNotNone(ev, cp.stderr()[-2000:])
        return int(ev["waiters"])

    def settled_fds(self, cp):
        """Descriptors of the control plane once the probes' connections have closed
        (the same count twice, 0.3 s apart)."""
        n = pt.open_fds(cp.pid)
        while True:
            time.sleep(0.3)
            m = pt.open_fds(cp.pid)
            if m == n:
                return n
            n = m

    def wait_held(self, cp, n, timeout=30.0):
        got = self.wait_for(lambda: self.held(cp) == n, timeout, step=0.1)
        self.assertTrue(got, "not %d requests held: %d\n%s" % (n, self.held(cp),
                                                                cp.stderr()[-2000:]))

    def test_waiters_per_client_cap(self):
        """A client holding its --max-waiters-per-client gets its oldest held request
        answered (304) when it sends another, so another client still gets a slot under
        the global --max-waiters."""
        env = self.sign(RULES_A, 1)
        self.publish(env)
        etag = '"%s"' % hashlib.sha256(env).hexdigest()
        cp = self.control(extra=["--max-wait", "600s", "--max-waiters", "3",
                                 "--max-waiters-per-client", "2"])
        hog = []
        for n in (1, 2):
            hog.append(self.long_poll(cp, etag))
            self.wait_held(cp, n)
        # the hog's third request: its first is answered at once, as an ordinary poll
        hog.append(self.long_poll(cp, etag))
        hog[0].join(60)
        self.assertEqual(hog[0].status, 304, "the hog's oldest request was not answered "
                         "(error %r)" % hog[0].error)
        ev = pt.wait_log_event(cp, "control_request",
                               pred=lambda o: "per-client cap" in (o.get("detail") or ""))
        self.assertEqual(ev["peer_id"], pt.CLIENT_ID)
        self.wait_held(cp, 2)
        # another identity is held in the slot the hog could not take
        other = self.long_poll(cp, etag, cert="other")
        self.wait_held(cp, 3)
        hog.append(self.long_poll(cp, etag))
        hog[1].join(60)
        self.assertEqual(hog[1].status, 304)
        self.wait_held(cp, 3)
        self.assertIsNone(other.status, "the other client's request was not held")
        # a change answers everything held, with the new version
        env2 = self.sign(RULES_B, 2)
        self.publish(env2)
        for t in (hog[2], hog[3], other):
            t.join(60)
            self.assertEqual((t.status, t.body), (200, env2), t.error)
        self.assertFalse(any("held-request cap reached" in (o.get("detail") or "")
                             for o in pt.log_events(cp, "control_request")))

    def test_held_client_disconnect_frees_slot(self):
        """A client that closes its connection while its request is held frees the slot
        and the descriptor at once (logged 499), not at the 600 s deadline."""
        env = self.sign(RULES_A, 1)
        self.publish(env)
        etag = '"%s"' % hashlib.sha256(env).hexdigest()
        cp = self.control(extra=["--max-wait", "600s", "--max-waiters", "1"])
        self.held(cp)
        base = self.settled_fds(cp)
        ctx = pt.tls_context(self.pki, "client", alpn=("http/1.1",))
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", cp.port), timeout=10),
                            server_hostname="localhost")
        self.addCleanup(s.close)
        s.sendall(("GET /shop.json HTTP/1.1\r\nHost: localhost\r\nIf-None-Match: %s\r\n"
                   "Prefer: wait=600\r\n\r\n" % etag).encode())
        self.wait_held(cp, 1)
        self.assertEqual(self.settled_fds(cp), base + 1)
        since = len(cp.stderr())
        s.close()
        ev = pt.wait_log_event(cp, "control_request", since,
                               pred=lambda o: o.get("status") == "499")
        self.assertIsNotNone(ev, "the held request of a client that went away was not "
                             "dropped:\n" + cp.stderr()[-2000:])
        self.assertEqual((ev["peer_id"], ev["waiters"]), (pt.CLIENT_ID, "0"))
        self.assertTrue(self.wait_for(lambda: pt.open_fds(cp.pid) == base, 30),
                        "descriptor kept: %d, %d before" % (pt.open_fds(cp.pid), base))
        # the slot is free: another client's request is held, not answered at once
        other = self.long_poll(cp, etag, cert="other")
        self.wait_held(cp, 1)
        env2 = self.sign(RULES_B, 2)
        self.publish(env2)
        other.join(60)
        self.assertEqual((other.status, other.body), (200, env2), other.error)

    def test_held_request_answered_on_kept_alive_connection(self):
        """Watching a held connection for EOF leaves it usable: a request the client
        pipelined behind the held one stays buffered and is served after the held one's
        answer, on the same connection."""
        env = self.sign(RULES_A, 1)
        self.publish(env)
        etag = '"%s"' % hashlib.sha256(env).hexdigest()
        cp = self.control(extra=["--max-wait", "600s"])
        ctx = pt.tls_context(self.pki, "client", alpn=("http/1.1",))
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", cp.port), timeout=60),
                            server_hostname="localhost")
        self.addCleanup(s.close)
        s.sendall(("GET /shop.json HTTP/1.1\r\nHost: localhost\r\nIf-None-Match: %s\r\n"
                   "Prefer: wait=3\r\n\r\n" % etag).encode())
        self.wait_held(cp, 1)
        # sent while the first is held: read into the held connection's buffer
        s.sendall(b"GET /shop.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
        buf = b""
        while not (buf.count(b"HTTP/1.1 ") == 2 and buf.endswith(env)):
            b = s.recv(65536)
            self.assertTrue(b, "connection closed; got %r" % buf[:500])
            buf += b
        first, second = buf.split(b"HTTP/1.1 ")[1:]
        self.assertTrue(first.startswith(b"304 "), first[:200])
        self.assertTrue(second.startswith(b"200 "), second[:200])

    # ---- the sidecar against it -------------------------------------------------

    def test_fetch_enforce_and_long_poll_update(self):
        self.publish(self.sign(RULES_A, 1))
        cp = self.control()
        p = self.sidecar(cp.port)
        self.wait_revision(p, 1)
        self.assert_r1_decisions(p)
        pol = self.policy_json(p)
        self.assertEqual(pol["source"], "https://localhost:%d/shop.json" % cp.port)
        self.assertIn(pol["fetch"]["last_result"], ("updated", "not_modified", "unchanged"))
        self.assertEqual(self.readyz(p), 200)
        self.assertTrue(os.path.exists(os.path.join(self.tmp, "cache", "policy.dsse.json")))

        # The sidecar's next request is held by the control plane, and a new revision
        # must be what answers it ("changed while held"), not the end of its wait (a
        # 304). A revision published before the request got there is answered at once,
        # which is correct too but shows nothing: publish again until one was held.
        def held_answers():
            return [o for o in pt.log_events(cp, "control_request")
                    if o.get("peer_id") == pt.SERVER_ID and o.get("detail") == "changed while held"]
        rev = 1
        while not held_answers():
            self.assertLess(rev, 11, "10 revisions, none answered a held request:\n%s"
                            % cp.stderr()[-2000:])
            time.sleep(0.5)  # spacing only: the sidecar sends its next long-poll
            rev += 1
            rules_a = rev % 2 == 1
            self.publish(self.sign(RULES_A if rules_a else RULES_B, rev))
            self.wait_revision(p, rev, timeout=60.0)
            self.assertEqual((self.status(p, A)[0], self.status(p, B)[0]),
                             (200, 403) if rules_a else (403, 200), "revision %d enforced" % rev)

        # a reload (SIGHUP; also what an SVID rotation triggers) frees the old config:
        # the fetcher must go on without touching it
        since = len(p.stderr())
        p.signal(signal.SIGHUP)
        self.assertIsNotNone(pt.wait_log_event(p, "reloaded", since=since, timeout=30),
                             p.stderr()[since:])
        self.publish(self.sign(RULES_A, rev + 1))
        self.wait_revision(p, rev + 1, timeout=60.0)
        self.assert_r1_decisions(p, "after SIGHUP")

    def test_refusals_keep_running_bundle(self):
        self.publish(self.sign(RULES_A, 5))
        cp = self.control()
        p = self.sidecar(cp.port)
        self.wait_revision(p, 5)
        self.assert_r1_decisions(p)

        good6 = json.loads(self.sign(RULES_B, 6))
        payload = json.loads(base64.b64decode(good6["payload"]))
        payload["rules"][0]["paths"] = ["/**"]  # would allow A and B
        tampered = dict(good6, payload=base64.b64encode(json.dumps(payload).encode()).decode())
        cases = [
            ("unknown_key", self.sign(RULES_B, 6, key="rogue", keyid="cp-9")),
            ("bad_signature", self.sign(RULES_B, 6, key="rogue")),  # right keyid, wrong key
            ("bad_signature", json.dumps(tampered).encode()),
            ("revision_rollback", self.sign(RULES_B, 4)),
            ("revision_conflict", self.sign(RULES_B, 5)),
        ]
        for reason, env in cases:
            since = len(p.stderr())
            self.publish(env)
            ev = pt.wait_log_event(p, "policy_refused", since=since, timeout=30,
                                   pred=lambda o, r=reason: o.get("reason") == r)
            self.assertIsNotNone(ev, "%s: no policy_refused line; log:\n%s" % (
                reason, p.stderr()[since:][-2000:]))
            n = pt.metric(p.admin, "picket_policy_refusals_total", 0, reason=reason)
            self.assertGreaterEqual(n, 1, reason)
            self.assertEqual(self.policy_json(p)["revision"], 5, reason)
            self.assert_r1_decisions(p, reason)
        self.assertIn("revision_conflict", self.policy_json(p)["fetch"]["last_error"] or "")

    def test_wrong_control_plane_identity(self):
        self.publish(self.sign(RULES_A, 1))
        cp = self.control(cert="wrongcp")
        p = self.sidecar(cp.port)
        ok = self.wait_for(lambda: self.policy_json(p)["fetch"]["failures"] >= 1, 5.0)
        self.assertTrue(ok, self.policy_json(p))
        st, body = self.status(p, A)
        self.assertEqual(st, 503)
        self.assertIn(b"no policy loaded", body)
        self.assertEqual(self.readyz(p), 503)
        pol = self.policy_json(p)
        self.assertIsNone(pol["revision"])
        self.assertEqual(pol["fetch"]["last_result"], "transport_error")
        self.assertFalse(pt.log_events(p, "policy_fetched"))
        self.assertFalse([o for o in pt.log_events(cp, "control_request")
                          if o.get("status") == "200"], "the control plane served a bundle")

    def test_cache_and_offline_start(self):
        self.publish(self.sign(RULES_A, 3))
        cp = self.control()
        p = self.sidecar(cp.port)
        self.wait_revision(p, 3)
        cache = os.path.join(self.tmp, "cache", "policy.dsse.json")
        self.assertTrue(os.path.exists(cache))
        # every confirmation (a held request answered 304) moves the cache's mtime: an
        # offline start counts staleness from it
        m0 = os.stat(cache).st_mtime_ns
        self.assertTrue(self.wait_for(lambda: os.stat(cache).st_mtime_ns > m0, 4.0, 0.1),
                        "cache mtime not refreshed by a 304")
        p.stop()
        cp_port = cp.port
        cp.stop()
        self.assertTrue(pt.port_refuses(cp_port))

        # offline start: the cached envelope is used
        p2 = self.sidecar(cp_port, name="p2.json")
        self.assertIsNotNone(pt.wait_log_event(p2, "policy_from_cache"), p2.stderr()[-2000:])
        self.wait_revision(p2, 3)
        self.assert_r1_decisions(p2, "from cache")
        self.assertTrue(self.policy_json(p2)["source"].startswith("cache:"))
        self.assertEqual(self.readyz(p2), 200)
        p2.stop()

        # offline with max_staleness 1s: the cache is older than that -> fail closed
        p3 = self.sidecar(cp_port, name="p3.json", max_staleness="1s")
        self.assertTrue(self.wait_for(lambda: self.readyz(p3) == 503, 60), self.policy_json(p3))
        st, body = self.status(p3, A)
        self.assertEqual((st, body), (503, b"policy is stale\n"))
        self.assertEqual(self.readyz(p3), 503)
        p3.stop()

        # on_stale last_known_good: still enforced, but not ready
        p4 = self.sidecar(cp_port, name="p4.json", max_staleness="1s", on_stale="last_known_good")
        self.assertTrue(self.wait_for(lambda: self.readyz(p4) == 503, 60), self.policy_json(p4))
        self.assert_r1_decisions(p4, "last_known_good")
        self.assertEqual(self.readyz(p4), 503)

    def test_no_bundle_fails_closed(self):
        down = pt.free_port()
        p = self.sidecar(down, cache_dir=None)
        st, body = self.status(p, A)
        self.assertEqual(st, 503)
        self.assertIn(b"no policy loaded", body)
        self.assertEqual(self.readyz(p), 503)

    def test_unwritable_cache_dir(self):
        blocker = os.path.join(self.tmp, "not-a-dir")
        with open(blocker, "w") as f:
            f.write("x")
        self.publish(self.sign(RULES_A, 1))
        cp = self.control()
        p = self.sidecar(cp.port, cache_dir=os.path.join(blocker, "cache"))
        self.wait_revision(p, 1)
        self.assertIsNotNone(pt.wait_log_event(p, "policy_cache_write_failed"),
                             p.stderr()[-2000:])
        self.assert_r1_decisions(p, "unwritable cache_dir")


if __name__ == "__main__":
    pt.main(timeout=240)
