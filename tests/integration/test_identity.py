#!/usr/bin/python3
"""Workload identity: X.509-SVID refusals at the handshake (each with its reason in the
log and in picket_handshakes_total), federation (PEM and SPIFFE JWKS bundles), hot
rotation of the own SVID in a kubelet-style ..data directory without failed requests,
refused reloads of broken material, picket_svid_expiry_seconds, and `picket cert`.

    /usr/bin/python3 tests/integration/test_identity.py [-k PATTERN]
"""
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import picket_test as pt  # noqa: E402

OTHER_TD = "other.org"
OTHER_TD_ID = "spiffe://other.org/ns/partner/sa/caller"
SERVER2_ID = "spiffe://example.org/ns/default/sa/picket-v2"
SERVER3_ID = "spiffe://example.org/ns/default/sa/picket-v3"

_BAD = {}
_BAD_LOCK = threading.Lock()


def bad_certs(pki):
    """Leaves that each break one SVID rule, issued once per process into the shared PKI:
    {name: (expected reason, description)}."""
    with _BAD_LOCK:
        if _BAD:
            return _BAD
        now = time.time()
        td = "spiffe://example.org/ns/test/sa/"
        pt.pki_add_ca(pki, "otherorgca", OTHER_TD)
        specs = [
            # name, reason, issue() kwargs
            ("bad-expired", "expired",
             dict(uri=td + "expired", not_before=now - 7200, lifetime=600)),
            ("bad-notyet", "not_yet_valid",
             dict(uri=td + "notyet", not_before=now + 3600, lifetime=600)),
            ("bad-nouri", "no_uri_san",
             dict(uri=None, dns=["client.example.org"])),
            # issue() joins SANs with ", ": a second URI rides along in the string
            ("bad-twouri", "multiple_uri_sans",
             dict(uri=td + "one, URI:" + td + "two")),
            ("bad-upper", "bad_spiffe_id",
             dict(uri="spiffe://Example.org/ns/test/sa/upper")),
            ("bad-dotdot", "bad_spiffe_id",
             dict(uri="spiffe://example.org/ns/../sa/dotdot")),
            ("bad-noPath", "bad_spiffe_id",
             dict(uri="spiffe://example.org")),
            ("bad-isca", "leaf_is_ca",
             dict(uri=td + "isca", ca_flag=True, key_usage="critical, digitalSignature")),
            ("bad-kucertsign", "bad_key_usage",
             dict(uri=td + "kucertsign", key_usage="critical, digitalSignature, keyCertSign")),
            ("bad-kunodigsig", "bad_key_usage",
             dict(uri=td + "kunodigsig", key_usage="critical, keyAgreement")),
            ("bad-48h", "lifetime_too_long",
             dict(uri=td + "long", lifetime=48 * 3600)),
            ("bad-othertd", "unknown_trust_domain",
             dict(uri=OTHER_TD_ID, ca="otherorgca")),
        ]
        for name, reason, kw in specs:
            ca = kw.pop("ca", "ca")
            uri = kw.pop("uri")
            pki.issue(name, ca, uri, **kw)
            _BAD[name] = reason
        _BAD["evil"] = "untrusted_chain"  # other CA, same trust domain (PKI default leaf)
        return _BAD


def xfcc_field(xfcc, field):
    m = re.search(r"(?:^|;)%s=([^;]*)" % re.escape(field), xfcc or "")
    return m.group(1) if m else None


def broken_rules(inspect_out):
    """Rule names from `picket cert inspect` output ("broken:" lines, one or several
    names each; "none" = nothing broken)."""
    names = []
    for line in re.findall(r"(?m)^broken:\s*(.*)$", inspect_out):
        names += [n for n in re.split(r"[\s,]+", line.strip()) if n and n != "none"]
    return names


class Identity(pt.TestCase):

    def start(self, kind="h2c", **kw):
        up = self.upstream(kind, name="main")
        path, cfg, port, admin = self.config(pt.upstream_url(kind, up), **kw)
        self.conf, self.cfg, self.port, self.admin = path, cfg, port, admin
        self.proc = self.picket(path, inbound_port=port, admin_port=admin)
        return port

    def wait_reload(self, since, event="reloaded", timeout=60.0):
        """Waits for picket's log line `event` ("reloaded" or "reload_refused") after log
        offset `since`: the file watcher saw the change and acted on it."""
        ev = pt.wait_log_event(self.proc, event, since=since, timeout=timeout)
        self.assertIsNotNone(ev, "no %r line; log since:\n%s" % (event, self.proc.stderr()[since:][-2000:]))
        return ev

    def wait_served(self, port, serial, timeout=60.0):
        """Waits until new handshakes present the certificate with `serial` (the workers
        take a new snapshot from a message, just after the "reloaded" line)."""
        deadline = time.monotonic() + timeout
        while pt.served_serial(port) != serial:
            self.assertLess(time.monotonic(), deadline, "certificate %s not served after %.0fs; "
                            "log:\n%s" % (serial, timeout, self.proc.stderr()[-2000:]))
            time.sleep(0.05)

    def wait_accepted(self, port, cert, want, timeout=60.0):
        """Waits until a client with `cert` is accepted (want True) or refused (False)."""
        deadline = time.monotonic() + timeout
        while (self.curl(port, "/", cert=cert, timeout=60).status == 200) != want:
            self.assertLess(time.monotonic(), deadline, "%s still %s after %.0fs" % (
                cert, "refused" if want else "accepted", timeout))
            time.sleep(0.05)

    # -- handshake refusals ---------------------------------------------------

    def test_handshake_refusals_have_reasons(self):
        bad = bad_certs(self.pki)
        port = self.start()
        cases = sorted(bad.items()) + [(None, "no_certificate")]
        before = pt.scrape_metrics(self.admin)
        ok_before = pt.metric(before, "picket_handshakes_total", 0.0, listener="inbound",
                              result="ok")
        want_counts = {}
        for i, (cert, reason) in enumerate(cases):
            http = pt.HTTP_VERSIONS[i % len(pt.HTTP_VERSIONS)]
            lport = pt.free_port()
            mark = len(self.proc.stderr())
            r = self.curl(port, "/", http=http, cert=cert, timeout=10,
                          extra=["--local-port", str(lport)])
            self.assertNotEqual(r.exit, 0, "%s: handshake must fail (%s): %r" % (cert, reason, r))
            self.assertNotEqual(r.status, 200, "%s: %r" % (cert, r))
            peer = "127.0.0.1:%d" % lport
            ev = pt.wait_log_event(self.proc, "handshake_refused", since=mark, timeout=30,
                                   pred=lambda o: o.get("peer") == peer)
            self.assertIsNotNone(ev, "%s: no handshake_refused line for peer %s; log since:\n%s"
                                 % (cert, peer, self.proc.stderr()[mark:][-2000:]))
            self.assertEqual(ev.get("reason"), reason,
                             "%s: refusal reason in the log: %r" % (cert, ev))
            self.assertEqual(ev.get("listener"), "inbound", repr(ev))
            want_counts[reason] = want_counts.get(reason, 0) + 1
        after = pt.scrape_metrics(self.admin)
        for reason, n in sorted(want_counts.items()):
            got = pt.metric(after, "picket_handshakes_total", 0.0, listener="inbound",
                            result=reason)
            was = pt.metric(before, "picket_handshakes_total", 0.0, listener="inbound",
                            result=reason)
            self.assertEqual(got - was, n,
                             'picket_handshakes_total{listener="inbound",result="%s"}' % reason)
        # a good client still gets through and is counted as ok
        self.assertOK(self.curl(port, "/"))
        ok_after = pt.metric(self.admin, "picket_handshakes_total", 0.0, listener="inbound",
                             result="ok")
        self.assertGreaterEqual(ok_after - ok_before, 1, "handshakes_total{result=ok}")

    def test_max_svid_lifetime_is_configurable(self):
        bad_certs(self.pki)
        ident = {"cert": self.pki.cert("server"), "key": self.pki.key("server"),
                 "trust_bundles": {pt.TRUST_DOMAIN: self.pki.ca}, "max_svid_lifetime": "72h"}
        port = self.start(identity=ident)
        # 48h (+5 min backdating) fits under 72h
        self.assertOK(self.curl(port, "/", cert="bad-48h"))
        ident["max_svid_lifetime"] = "30m"
        path, _, port2, admin2 = self.config(self.cfg["listeners"][0]["upstream"], identity=ident,
                                             name="picket-short.json")
        p2 = self.picket(path, inbound_port=port2, admin_port=admin2)
        mark = len(p2.stderr())
        r = self.curl(port2, "/", cert="client", timeout=10)  # 1h05m total > 30m
        self.assertNotEqual(r.exit, 0, "a 65-minute SVID passed max_svid_lifetime 30m: %r" % r)
        ev = pt.wait_log_event(p2, "handshake_refused", since=mark, timeout=30)
        self.assertIsNotNone(ev)
        self.assertEqual(ev.get("reason"), "lifetime_too_long", repr(ev))

    def test_lifetime_boundary(self):
        """notAfter - notBefore == max_svid_lifetime is accepted, one second more is not."""
        td = "spiffe://example.org/ns/test/sa/"
        # issue() backdates by 300 s and adds it to the lifetime
        if not os.path.exists(self.pki.cert("life-24h")):
            self.pki.issue("life-24h", "ca", td + "life24h", lifetime=24 * 3600 - 300)
            self.pki.issue("life-24h1s", "ca", td + "life24h1s", lifetime=24 * 3600 - 299)
        port = self.start()
        self.assertOK(self.curl(port, "/", cert="life-24h"), "exactly 24h")
        mark = len(self.proc.stderr())
        r = self.curl(port, "/", cert="life-24h1s", timeout=10)
        self.assertNotEqual(r.exit, 0, "24h + 1s accepted: %r" % r)
        ev = pt.wait_log_event(self.proc, "handshake_refused", since=mark, timeout=30)
        self.assertIsNotNone(ev)
        self.assertEqual(ev.get("reason"), "lifetime_too_long", repr(ev))

    def test_refusal_reasons_tls12(self):
        """The same reasons with TLS 1.2 (client certificate inside the handshake)."""
        bad = bad_certs(self.pki)
        port = self.start()
        for cert in ("bad-expired", "bad-isca", "bad-othertd", "evil", None):
            reason = bad.get(cert, "no_certificate")
            mark = len(self.proc.stderr())
            r = self.curl(port, "/", cert=cert, timeout=10, extra=["--tlsv1.2", "--tls-max", "1.2"])
            self.assertNotEqual(r.exit, 0, "%s over TLS 1.2: %r" % (cert, r))
            ev = pt.wait_log_event(self.proc, "handshake_refused", since=mark, timeout=30)
            self.assertIsNotNone(ev, cert)
            self.assertEqual(ev.get("reason"), reason, "%s over TLS 1.2: %r" % (cert, ev))
        self.assertOK(self.curl(port, "/", extra=["--tlsv1.2", "--tls-max", "1.2"]))

    def test_no_session_resumption(self):
        """certs/README.md: session resumption is off, so every connection re-checks the SVID."""
        port = self.start()
        for ver in (pt.ssl.TLSVersion.TLSv1_2, pt.ssl.TLSVersion.TLSv1_3):
            ctx = pt.tls_context(self.pki, "client", alpn=("http/1.1",))
            ctx.minimum_version = ctx.maximum_version = ver
            sess = None
            for attempt in range(2):
                with pt.socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                    with ctx.wrap_socket(raw, server_hostname="localhost", session=sess) as s:
                        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                        data = b""
                        while True:
                            chunk = s.recv(65536)
                            if not chunk:
                                break
                            data += chunk
                        self.assertTrue(data.startswith(b"HTTP/1.1 200"), data[:200])
                        if attempt == 1:
                            self.assertFalse(s.session_reused, "%s session resumed" % ver)
                        sess = s.session
                        if ver == pt.ssl.TLSVersion.TLSv1_3:
                            self.assertFalse(sess is not None and sess.has_ticket,
                                             "TLS 1.3 session ticket issued")

    def test_trust_bundle_rotation(self):
        """A changed trust bundle file is re-read: new CAs are trusted, removed ones are not,
        a broken bundle is refused and the previous one kept."""
        bundle = os.path.join(self.tmp, "bundle.pem")

        def write(*pems, raw=None):
            tmp = bundle + ".tmp"
            with open(tmp, "wb") as out:
                if raw is not None:
                    out.write(raw)
                for pem in pems:
                    with open(pem, "rb") as f:
                        out.write(f.read())
            os.replace(tmp, bundle)

        write(self.pki.ca)
        ident = {"cert": self.pki.cert("server"), "key": self.pki.key("server"),
                 "trust_bundles": {pt.TRUST_DOMAIN: bundle}, "reload_interval": "200ms"}
        port = self.start(identity=ident)

        def accepted(cert):
            return self.curl(port, "/", cert=cert, timeout=60).status == 200

        def rewrite(*pems):
            since = len(self.proc.stderr())
            write(*pems)
            self.wait_reload(since)  # the bundle was re-read: from now on it is in force
        self.assertTrue(accepted("client"))
        self.assertFalse(accepted("evil"))
        rewrite(self.pki.ca, self.pki.cert("otherca"))
        self.wait_accepted(port, "evil", True)  # the workers took the new bundle
        self.assertTrue(accepted("client"))
        rewrite(self.pki.cert("otherca"))
        self.wait_accepted(port, "client", False)
        self.assertTrue(accepted("evil"))
        refused0 = pt.metric(self.admin, "picket_reloads_total", 0.0, result="refused")
        mark = len(self.proc.stderr())
        write(raw=b"this is not a bundle\n")
        ev = pt.wait_log_event(self.proc, "reload_refused", since=mark, timeout=60)
        self.assertIsNotNone(ev, "broken bundle not refused; log:\n%s" % self.proc.stderr()[mark:])
        self.assertGreaterEqual(pt.metric(self.admin, "picket_reloads_total", 0.0,
                                          result="refused") - refused0, 1)
        self.assertTrue(accepted("evil"), "previous bundle must stay after a broken one")
        self.assertFalse(accepted("client"))

    # -- federation ------------------------------------------------------------

    def test_federation_pem_and_jwks_bundles(self):
        bad_certs(self.pki)  # makes otherorgca and bad-othertd (spiffe://other.org/...)
        jwks = pt.write_spiffe_bundle(os.path.join(self.tmp, "other.org.jwks.json"),
                                      [self.pki.cert("otherorgca")])
        ident = {"cert": self.pki.cert("server"), "key": self.pki.key("server"),
                 "trust_bundles": {pt.TRUST_DOMAIN: self.pki.ca, OTHER_TD: jwks}}
        port = self.start(identity=ident)
        for http in pt.HTTP_VERSIONS:
            for cert, want_id in (("client", pt.CLIENT_ID), ("bad-othertd", OTHER_TD_ID)):
                r = self.curl(port, "/headers", http=http, cert=cert)
                self.assertOK(r, "%s over %s" % (cert, http))
                xfcc = r.json()["headers"].get("x-forwarded-client-cert")
                self.assertEqual(xfcc_field(xfcc, "URI"), want_id, "XFCC %r" % xfcc)
                self.assertEqual(xfcc_field(xfcc, "By"), pt.SERVER_ID, "XFCC %r" % xfcc)
                self.assertEqual((xfcc_field(xfcc, "Hash") or "").lower(),
                                 self.pki.der_sha256(cert), "XFCC %r" % xfcc)
        # a CA trusted for one trust domain cannot vouch for another one
        cross = "cross-td"
        if not os.path.exists(self.pki.cert(cross)):
            self.pki.issue(cross, "ca", "spiffe://other.org/ns/forged/sa/x")
        mark = len(self.proc.stderr())
        r = self.curl(port, "/", cert=cross, timeout=10)
        self.assertNotEqual(r.exit, 0, "example.org CA vouched for an other.org ID: %r" % r)
        ev = pt.wait_log_event(self.proc, "handshake_refused", since=mark, timeout=30)
        self.assertIsNotNone(ev)
        self.assertEqual(ev.get("reason"), "untrusted_chain", repr(ev))

    def test_intermediate_chains(self):
        """SVIDs issued by an intermediate: a client that sends leaf + intermediate is
        accepted, the bare leaf is not (untrusted_chain); picket serves its own chain."""
        pt.pki_add_intermediate(self.pki, "inter")
        if not os.path.exists(self.pki.cert("inter-client")):
            self.pki.issue("inter-client", "inter", "spiffe://example.org/ns/inter/sa/client")
            self.pki.issue("inter-server", "inter", pt.SERVER_ID, ["localhost"], ["127.0.0.1"])
        cchain = pt.pki_chain(self.pki, "inter-client", "inter")
        schain = pt.pki_chain(self.pki, "inter-server", "inter")
        ident = {"cert": self.pki.cert(schain), "key": self.pki.key(schain),
                 "trust_bundles": {pt.TRUST_DOMAIN: self.pki.ca}}
        port = self.start(identity=ident)
        for http in pt.HTTP_VERSIONS:
            # curl only trusts ca.pem: this passing means picket sent the intermediate
            r = self.curl(port, "/headers", http=http, cert=cchain)
            self.assertOK(r)
            xfcc = r.json()["headers"].get("x-forwarded-client-cert")
            self.assertEqual(xfcc_field(xfcc, "URI"), "spiffe://example.org/ns/inter/sa/client")
            self.assertEqual((xfcc_field(xfcc, "Hash") or "").lower(),
                             self.pki.der_sha256("inter-client"), "Hash is of the leaf only")
        mark = len(self.proc.stderr())
        r = self.curl(port, "/", cert="inter-client", timeout=10)
        self.assertNotEqual(r.exit, 0, "a leaf without its intermediate was accepted: %r" % r)
        ev = pt.wait_log_event(self.proc, "handshake_refused", since=mark, timeout=30)
        self.assertIsNotNone(ev)
        self.assertEqual(ev.get("reason"), "untrusted_chain", ev)

    def test_jwks_bundle_ignores_non_x509_keys(self):
        """Only `use: x509-svid` keys of a SPIFFE bundle are trust anchors."""
        import base64
        bad_certs(self.pki)
        jwks = os.path.join(self.tmp, "mixed.jwks.json")
        der = {n: subprocess.run(["openssl", "x509", "-in", self.pki.cert(n), "-outform", "DER"],
                                 stdout=subprocess.PIPE, check=True).stdout
               for n in ("otherorgca", "ca")}
        with open(jwks, "w") as f:
            json.dump({"keys": [
                {"use": "jwt-svid", "kty": "EC", "kid": "j1",
                 "x5c": [base64.b64encode(der["otherorgca"]).decode()]},
                {"use": "x509-svid", "kty": "EC",
                 "x5c": [base64.b64encode(der["ca"]).decode()]}]}, f)
        ident = {"cert": self.pki.cert("server"), "key": self.pki.key("server"),
                 "trust_bundles": {pt.TRUST_DOMAIN: self.pki.ca, OTHER_TD: jwks}}
        port = self.start(identity=ident)
        mark = len(self.proc.stderr())
        r = self.curl(port, "/", cert="bad-othertd", timeout=10)
        self.assertNotEqual(r.exit, 0, "a jwt-svid key was used as an X.509 trust anchor: %r" % r)
        ev = pt.wait_log_event(self.proc, "handshake_refused", since=mark, timeout=30)
        self.assertIsNotNone(ev)
        self.assertEqual(ev.get("reason"), "untrusted_chain", ev)
        self.assertOK(self.curl(port, "/"))

    # -- rotation ---------------------------------------------------------------

    def _kube_dir(self):
        """A kubelet-style secret volume: DIR/..<ts>/{tls.crt,tls.key}, DIR/..data -> ..<ts>,
        DIR/tls.crt -> ..data/tls.crt, DIR/tls.key -> ..data/tls.key."""
        d = os.path.join(self.tmp, "svid")
        os.makedirs(d)
        self._kube_n = 0
        self._kube_swap(d, self.pki.cert("server"), self.pki.key("server"))
        for f in ("tls.crt", "tls.key"):
            os.symlink(os.path.join("..data", f), os.path.join(d, f))
        return d

    def _kube_swap(self, d, cert=None, key=None, cert_bytes=None):
        """Atomically points ..data at a new timestamped dir holding these files."""
        self._kube_n += 1
        ts = "..2026_11_23_12_00_%02d.%d" % (self._kube_n, os.getpid())
        nd = os.path.join(d, ts)
        os.makedirs(nd)
        if cert_bytes is not None:
            with open(os.path.join(nd, "tls.crt"), "wb") as f:
                f.write(cert_bytes)
        else:
            shutil.copyfile(cert, os.path.join(nd, "tls.crt"))
        shutil.copyfile(key, os.path.join(nd, "tls.key"))
        tmp_link = os.path.join(d, "..data_tmp")
        os.symlink(ts, tmp_link)
        os.replace(tmp_link, os.path.join(d, "..data"))

    def _load_loop(self, port, stop, results, http, lock):
        """curl requests (a new handshake each) until `stop` is set."""
        while not stop.is_set():
            t = time.monotonic()
            r = self.curl(port, "/headers", http=http, timeout=60)
            by = None
            if r.exit == 0 and r.status == 200:
                try:
                    by = xfcc_field(r.json()["headers"].get("x-forwarded-client-cert"), "By")
                except ValueError:
                    by = None
            with lock:
                results.append((t, http, r.exit, r.status, by, r.stderr[-200:]))

    def _h2_loop(self, port, stop, results, lock):
        """One long-lived h2 connection sending requests until `stop` is set: a rotation
        must not drop it."""
        c = pt.H2Client(port, self.pki)
        try:
            while not stop.is_set():
                t = time.monotonic()
                try:
                    st, hdrs, body, _ = c.request("/", timeout=60)
                    err = ""
                except (AssertionError, OSError) as e:
                    st, err = 0, str(e)
                with lock:
                    results.append((t, "h2-live", 0 if st else 1, st, None, err))
                if not st:
                    return
                time.sleep(0.03)
        finally:
            c.close()

    def test_rotation_kubernetes_style_without_loss(self):
        s2_cert, _ = self.pki.issue("rot-server2", "ca", SERVER2_ID, ["localhost"], ["127.0.0.1"])
        s3_cert, _ = self.pki.issue("rot-server3", "ca", SERVER3_ID, ["localhost"], ["127.0.0.1"])
        d = self._kube_dir()
        ident = {"cert": os.path.join(d, "tls.crt"), "key": os.path.join(d, "tls.key"),
                 "trust_bundles": {pt.TRUST_DOMAIN: self.pki.ca}, "reload_interval": "200ms"}
        # one worker: once a handshake shows the new certificate, every later one does
        port = self.start(identity=ident, workers=1)
        old_serial = pt.cert_serial(self.pki.cert("server"))
        new_serial = pt.cert_serial(s2_cert)
        self.assertEqual(pt.served_serial(port), old_serial)

        stop = threading.Event()
        lock = threading.Lock()
        results = []
        threads = [threading.Thread(target=self._load_loop, args=(port, stop, results, h, lock),
                                    daemon=True)
                   for h in ("2", "1.1", "2", "1.1")]
        threads.append(threading.Thread(target=self._h2_loop, args=(port, stop, results, lock),
                                        daemon=True))
        for t in threads:
            t.start()
        self.addCleanup(stop.set)

        def wait_results(pred, what):
            deadline = time.monotonic() + 120
            while True:
                with lock:
                    if pred(list(results)):
                        return
                self.assertLess(time.monotonic(), deadline, "waited 120 s for " + what)
                self.assertTrue(any(t.is_alive() for t in threads), "the load threads ended")
                time.sleep(0.02)
        # every load thread has been served before the rotation
        wait_results(lambda rs: {r[1] for r in rs} >= {"2", "1.1", "h2-live"} and len(rs) >= 10,
                     "requests before the rotation")
        mark = len(self.proc.stderr())
        t_swap = time.monotonic()
        self._kube_swap(d, s2_cert, self.pki.key("rot-server2"))
        # the watcher reloads (one worker: from then on every new handshake is new)
        self.wait_reload(mark)
        self.wait_served(port, new_serial)
        seen_new = time.monotonic()
        # keep the load on until each loop has made requests after the rotation
        wait_results(lambda rs: {r[1] for r in rs if r[0] > seen_new} >= {"2", "1.1", "h2-live"}
                     and len([r for r in rs if r[0] > seen_new]) >= 10,
                     "requests after the rotation")
        stop.set()
        for t in threads:
            t.join(60)
        pt.log("rotation: new cert served %.2fs after the ..data swap; %d requests"
               % (seen_new - t_swap, len(results)))
        failed = [r for r in results if r[2] != 0 or r[3] != 200]
        self.assertEqual(failed, [], "%d of %d requests failed during rotation" % (
            len(failed), len(results)))
        live = [r for r in results if r[1] == "h2-live"]
        self.assertTrue(any(r[0] > seen_new for r in live),
                        "the live h2 connection made no request after the rotation")
        bys = [r[4] for r in results if r[1] != "h2-live"]
        self.assertIn(pt.SERVER_ID, bys, "XFCC By= before the rotation")
        after = [r[4] for r in results if r[1] != "h2-live" and r[0] > seen_new]
        self.assertTrue(after, "no curl request after the rotation")
        self.assertEqual(set(after), {SERVER2_ID}, "XFCC By= after the rotation")

        # broken material is refused; the running SVID stays
        for what, kw, detail in (
                ("garbage PEM", dict(cert_bytes=b"-----BEGIN CERTIFICATE-----\nnot base64 !!\n"
                                                b"-----END CERTIFICATE-----\n",
                                     key=self.pki.key("rot-server3")), None),
                ("mismatched key", dict(cert=s3_cert, key=self.pki.key("rot-server2")), "key")):
            refused0 = pt.metric(self.admin, "picket_reloads_total", 0.0, result="refused")
            mark = len(self.proc.stderr())
            self._kube_swap(d, **kw)
            ev = pt.wait_log_event(self.proc, "reload_refused", since=mark, timeout=60)
            self.assertIsNotNone(ev, "%s: no reload_refused line; log:\n%s" % (
                what, self.proc.stderr()[mark:][-2000:]))
            self.assertTrue(ev.get("error"), "%s: reload_refused without a reason: %r" % (what, ev))
            if detail:
                self.assertIn(detail, ev["error"].lower(), "%s: %r" % (what, ev))
            refused1 = pt.metric(self.admin, "picket_reloads_total", 0.0, result="refused")
            self.assertGreaterEqual(refused1 - refused0, 1,
                                    '%s: picket_reloads_total{result="refused"}' % what)
            self.assertEqual(pt.served_serial(port), new_serial,
                             "%s: the running certificate must stay" % what)
            r = self.curl(port, "/headers")
            self.assertOK(r, what)
            self.assertEqual(xfcc_field(r.json()["headers"]["x-forwarded-client-cert"], "By"),
                             SERVER2_ID)
            self.assertTrue(self.proc.alive())

        # and good material after that is taken again
        mark = len(self.proc.stderr())
        self._kube_swap(d, s3_cert, self.pki.key("rot-server3"))
        self.wait_reload(mark)
        self.wait_served(port, pt.cert_serial(s3_cert))
        self.assertEqual(pt.served_serial(port), pt.cert_serial(s3_cert),
                         "good material after a refused reload not picked up")
        r = self.curl(port, "/headers")
        self.assertOK(r)
        self.assertEqual(xfcc_field(r.json()["headers"]["x-forwarded-client-cert"], "By"),
                         SERVER3_ID)

    def test_expired_own_svid_reload_refused(self):
        """proxy/README.md: a reload with an expired SVID is refused."""
        exp, _ = self.pki.issue("rot-expired", "ca", SERVER2_ID, ["localhost"], ["127.0.0.1"],
                                not_before=time.time() - 7200, lifetime=600)
        d = self._kube_dir()
        ident = {"cert": os.path.join(d, "tls.crt"), "key": os.path.join(d, "tls.key"),
                 "trust_bundles": {pt.TRUST_DOMAIN: self.pki.ca}, "reload_interval": "200ms"}
        port = self.start(identity=ident)
        mark = len(self.proc.stderr())
        self._kube_swap(d, exp, self.pki.key("rot-expired"))
        ev = pt.wait_log_event(self.proc, "reload_refused", since=mark, timeout=60)
        self.assertIsNotNone(ev, "expired own SVID not refused; log:\n%s"
                             % self.proc.stderr()[mark:][-2000:])
        self.assertEqual(pt.served_serial(port), pt.cert_serial(self.pki.cert("server")))
        self.assertOK(self.curl(port, "/"))
        st, _, body = pt.http_get_plain(self.admin, "/readyz")
        self.assertEqual(st, 200, body)

    # -- expiry metric ------------------------------------------------------------

    def test_svid_expiry_metric(self):
        self.start()
        want = pt.cert_not_after(self.pki.cert("server")) - time.time()
        got = pt.metric(self.admin, "picket_svid_expiry_seconds")
        self.assertIsNotNone(got, "picket_svid_expiry_seconds missing")
        self.assertAlmostEqual(got, want, delta=5, msg="svid expiry %r vs cert %r" % (got, want))

    def test_own_svid_expiry_makes_unready(self):
        """An own SVID that runs out while picket runs: picket logs svid_expired, the
        gauge goes to <= 0 and /readyz says so (so the orchestrator stops sending
        traffic). The SVID lives 20 s; the test waits for the svid_expired line, not for
        a slept guess of the moment."""
        cert, key = self.pki.issue("short-server", "ca", SERVER2_ID, ["localhost"],
                                   ["127.0.0.1"], lifetime=20)
        ident = {"cert": cert, "key": key, "trust_bundles": {pt.TRUST_DOMAIN: self.pki.ca},
                 "reload_interval": "200ms"}  # the timer that also checks the expiry
        self.start(identity=ident)
        # /readyz first, the gauge second: if the gauge still shows time left, the SVID
        # was valid when /readyz answered, so that answer must be 200
        st, _, body = pt.http_get_plain(self.admin, "/readyz")
        left = pt.metric(self.admin, "picket_svid_expiry_seconds")
        self.assertIsNotNone(left)
        self.assertLessEqual(left, 20, "picket_svid_expiry_seconds beyond the SVID's lifetime")
        if left > 0:
            self.assertEqual(st, 200, body)
        ev = pt.wait_log_event(self.proc, "svid_expired",
                               timeout=max(0.0, pt.cert_not_after(cert) - time.time()) + 60)
        self.assertIsNotNone(ev, "no svid_expired line; log:\n" + self.proc.stderr()[-2000:])
        self.assertEqual(ev.get("own_id"), SERVER2_ID, ev)
        self.assertGreaterEqual(time.time(), pt.cert_not_after(cert) - 1, "svid_expired early")
        self.assertLessEqual(pt.metric(self.admin, "picket_svid_expiry_seconds"), 0)
        st, _, body = pt.http_get_plain(self.admin, "/readyz")
        self.assertEqual(st, 503, body)
        self.assertIn(b"own SVID expired", body)

    def test_in_place_rewrite_converges(self):
        """cert and key rewritten in place one after the other (not atomically): the
        mismatched moment is refused, and the pair is taken once both are there."""
        s2_cert, s2_key = self.pki.issue("inplace-server2", "ca", SERVER2_ID, ["localhost"],
                                         ["127.0.0.1"])
        cert, key = os.path.join(self.tmp, "svid.pem"), os.path.join(self.tmp, "svid.key")
        shutil.copyfile(self.pki.cert("server"), cert)
        shutil.copyfile(self.pki.key("server"), key)
        ident = {"cert": cert, "key": key, "trust_bundles": {pt.TRUST_DOMAIN: self.pki.ca},
                 "reload_interval": "200ms"}
        port = self.start(identity=ident)
        mark = len(self.proc.stderr())
        shutil.copyfile(s2_cert, cert)
        # the watcher sees the new cert with the old key: refused, the old pair stays
        # (copyfile is not atomic: a first refusal may be of a half-written file)
        ev = pt.wait_log_event(self.proc, "reload_refused", since=mark, timeout=60,
                               pred=lambda o: "key" in o.get("error", "").lower())
        self.assertIsNotNone(ev, "the cert without its key was not refused:\n"
                             + self.proc.stderr()[mark:][-2000:])
        self.assertEqual(pt.served_serial(port), pt.cert_serial(self.pki.cert("server")),
                         "a cert without its key must not be served")
        self.assertOK(self.curl(port, "/"))
        mark = len(self.proc.stderr())
        shutil.copyfile(s2_key, key)
        self.wait_reload(mark)
        self.wait_served(port, pt.cert_serial(s2_cert))
        self.assertEqual(pt.served_serial(port), pt.cert_serial(s2_cert),
                         "the complete new pair was not taken")
        left = pt.metric(self.admin, "picket_svid_expiry_seconds")
        self.assertAlmostEqual(left, pt.cert_not_after(s2_cert) - time.time(), delta=5)

    # -- picket cert ----------------------------------------------------------------

    def test_cert_cli_round_trip(self):
        bad = bad_certs(self.pki)
        cli = pt.run_picket_cli
        ca = os.path.join(self.tmp, "ca")
        out = os.path.join(self.tmp, "out")
        # usage errors: 2
        self.assertEqual(cli(["cert"])[0], 2)
        self.assertEqual(cli(["cert", "init", "--trust-domain", "example.org"])[0], 2)
        self.assertEqual(cli(["cert", "issue", "--ca", ca])[0], 2)
        self.assertEqual(cli(["cert", "verify", self.pki.cert("client")])[0], 2, "no --bundle")
        rc, o, e = cli(["cert", "init", "--trust-domain", "example.org", "--out", ca])
        self.assertEqual(rc, 0, o + e)
        self.assertTrue(os.path.exists(os.path.join(ca, "ca.pem")))
        self.assertTrue(os.path.exists(os.path.join(ca, "ca.key")))
        # issue from a CA dir that is not there: 1
        rc, o, e = cli(["cert", "issue", "--ca", os.path.join(self.tmp, "nope"), "--spiffe-id",
                        "spiffe://example.org/a", "--ttl", "1h", "--out", out])
        self.assertEqual(rc, 1, o + e)
        sid = "spiffe://example.org/ns/cli/sa/svc"
        rc, o, e = cli(["cert", "issue", "--ca", ca, "--spiffe-id", sid, "--ttl", "1h",
                        "--out", out, "--name", "svc", "--dns", "localhost", "--ip", "127.0.0.1"])
        self.assertEqual(rc, 0, o + e)
        svc = os.path.join(out, "svc.pem")
        self.assertTrue(os.path.exists(svc) and os.path.exists(os.path.join(out, "svc.key")))
        rc, o, e = cli(["cert", "inspect", svc])
        self.assertEqual(rc, 0, o + e)
        self.assertIn(sid, o)
        self.assertEqual(broken_rules(o), [], o)
        self.assertRegex(o, r"(?m)^broken:\s+none$")
        rc, o, e = cli(["cert", "verify", "--bundle", os.path.join(ca, "ca.pem"), svc])
        self.assertEqual(rc, 0, o + e)
        self.assertEqual(o.strip(), "ok " + sid)
        # the issued SVID works against picket too
        ident = {"cert": svc, "key": os.path.join(out, "svc.key"),
                 "trust_bundles": {pt.TRUST_DOMAIN: os.path.join(ca, "ca.pem")}}
        up = self.upstream("h2c")
        rc, o, e = cli(["cert", "issue", "--ca", ca, "--spiffe-id", pt.CLIENT_ID, "--ttl", "1h",
                        "--out", out, "--name", "cli-client"])
        self.assertEqual(rc, 0, o + e)
        path, _, port, admin = self.config(pt.upstream_url("h2c", up), identity=ident)
        self.picket(path, inbound_port=port, admin_port=admin)
        r = subprocess.run(["curl", "-sS", "--max-time", "10", "--noproxy", "*", "--resolve",
                            "localhost:%d:127.0.0.1" % port, "--cacert", os.path.join(ca, "ca.pem"),
                            "--cert", os.path.join(out, "cli-client.pem"),
                            "--key", os.path.join(out, "cli-client.key"),
                            "https://localhost:%d/headers" % port],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=20)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(sid.encode(), r.stdout, "By= names the CLI-issued server SVID")
        # wrong bundle: refused untrusted_chain; unreadable bundle: 2
        rc, o, e = cli(["cert", "verify", "--bundle", self.pki.ca, svc])
        self.assertEqual(rc, 1, o + e)
        self.assertTrue(o.startswith("refused: untrusted_chain:") or
                        e.startswith("refused: untrusted_chain:"), o + e)
        rc, o, e = cli(["cert", "verify", "--bundle", os.path.join(self.tmp, "nope.pem"), svc])
        self.assertEqual(rc, 2, o + e)
        rc, o, e = cli(["cert", "verify", "--bundle", os.path.join(ca, "ca.pem"),
                        "--trust-domain", "other.org", svc])
        self.assertEqual(rc, 1, o + e)
        self.assertIn("refused: unknown_trust_domain:", o + e)
        # 48h: inspect lists the rule, verify refuses, a larger max accepts
        rc, o, e = cli(["cert", "issue", "--ca", ca, "--spiffe-id", sid, "--ttl", "48h",
                        "--out", out, "--name", "long"])
        self.assertEqual(rc, 0, o + e)
        long_pem = os.path.join(out, "long.pem")
        rc, o, e = cli(["cert", "inspect", long_pem])
        self.assertEqual(rc, 1, o + e)
        self.assertEqual(broken_rules(o), ["lifetime_too_long"], o)
        rc, o, e = cli(["cert", "inspect", long_pem, "--max-lifetime", "72h"])
        self.assertEqual(rc, 0, o + e)
        rc, o, e = cli(["cert", "verify", "--bundle", os.path.join(ca, "ca.pem"), long_pem])
        self.assertEqual(rc, 1, o + e)
        self.assertIn("refused: lifetime_too_long:", o + e)
        rc, o, e = cli(["cert", "verify", "--bundle", os.path.join(ca, "ca.pem"),
                        "--max-lifetime", "72h", long_pem])
        self.assertEqual(rc, 0, o + e)
        # expired
        rc, o, e = cli(["cert", "verify", "--bundle", self.pki.ca, self.pki.cert("bad-expired")])
        self.assertEqual(rc, 1, o + e)
        self.assertRegex((o + e).strip(), r"^refused: expired: .+")
        # each broken leaf: inspect names its rule, verify refuses with it
        for name, reason in sorted(bad.items()):
            if reason in ("untrusted_chain", "unknown_trust_domain"):
                continue  # need a bundle: verify only
            rc, o, e = cli(["cert", "inspect", self.pki.cert(name)])
            self.assertEqual(rc, 1, "%s: %s" % (name, o + e))
            self.assertIn(reason, broken_rules(o), "%s: inspect's broken list: %s" % (name, o))
        for name, reason in sorted(bad.items()):
            # --trust-domain: whose bundle --bundle is (default: the cert's own domain)
            rc, o, e = cli(["cert", "verify", "--bundle", self.pki.ca, "--trust-domain",
                            pt.TRUST_DOMAIN, self.pki.cert(name)])
            self.assertEqual(rc, 1, "%s: %s" % (name, o + e))
            self.assertTrue((o + e).strip().startswith("refused: %s:" % reason),
                            "%s: want refused: %s: ..., got %r" % (name, reason, o + e))
        # several broken rules at once are all listed
        multi = "bad-multi"
        if not os.path.exists(self.pki.cert(multi)):
            self.pki.issue(multi, "ca", "spiffe://example.org/ns/test/sa/multi",
                           not_before=time.time() - 4 * 86400, lifetime=2 * 86400, ca_flag=True,
                           key_usage="critical, digitalSignature, keyCertSign")
        rc, o, e = cli(["cert", "inspect", self.pki.cert(multi)])
        self.assertEqual(rc, 1, o + e)
        got = broken_rules(o)
        for reason in ("expired", "lifetime_too_long", "leaf_is_ca", "bad_key_usage"):
            self.assertIn(reason, got, "inspect must list every broken rule: %s" % o)


if __name__ == "__main__":
    pt.main(timeout=200)
