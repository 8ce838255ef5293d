#!/usr/bin/python3
"""Per-request policy through the real proxy: allow/deny/default, every matcher (from,
methods, paths, hosts, headers), path-normalization attacks against a deny rule, audit
records, hot reload (newer, broken, older bundles), audit mode, failing closed (no
policy, stale policy, on_stale last_known_good), policy metrics and `picket policy`.

    /usr/bin/python3 tests/integration/test_policy.py [-k PATTERN]
"""
import calendar
import json
import os
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import picket_test as pt  # noqa: E402

FORBIDDEN = b"forbidden by policy\n"
OTHER_TD = "other.org"

# extra identities, issued once per process into the shared PKI: name -> SPIFFE ID
IDS = {
    "pol-ops": "spiffe://example.org/ns/ops/sa/runner",
    "pol-ops-deep": "spiffe://example.org/ns/ops/team/sa/deep",
    "pol-ops-self": "spiffe://example.org/ns/ops",
    "pol-opsx": "spiffe://example.org/ns/opsx/sa/sneaky",
    "pol-partner": "spiffe://other.org/ns/partner/sa/caller",
}
_IDS_DONE = []
_IDS_LOCK = threading.Lock()


def extra_identities(pki):
    with _IDS_LOCK:
        if not _IDS_DONE:
            pt.pki_add_ca(pki, "otherorgca", OTHER_TD)
            for name, sid in sorted(IDS.items()):
                if not os.path.exists(pki.cert(name)):
                    pki.issue(name, "otherorgca" if "other.org" in sid else "ca", sid)
            _IDS_DONE.append(True)


def rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def write_bundle(path, bundle):
    """Writes a bundle atomically (temp file + os.replace), as a control loop would."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(bundle, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return path


def bundle(rules, revision=1, default="deny", mode="enforce", **extra):
    b = {"revision": revision, "mode": mode, "default": default, "rules": rules}
    b.update(extra)
    return b


def decision(r):
    """'allow' when the upstream answered, 'deny' for picket's policy 403, else a repr."""
    if r.exit == 0 and r.header("x-upstream-name") is not None:
        return "allow"
    if r.exit == 0 and r.status == 403 and r.body == FORBIDDEN:
        return "deny"
    return "other: %r" % r


class Policy(pt.TestCase):

    def start(self, rules=None, revision=1, default="deny", mode="enforce", policy_extra=None,
              raw_policy=None, kind="h2c", wait_ready=True, **kw):
        """Writes the bundle (or raw_policy text) to tmp/policy.json, starts upstream +
        picket with policy.file and reload_interval 200ms. Returns the inbound port."""
        self.policy_path = os.path.join(self.tmp, "policy.json")
        if raw_policy is not None:
            with open(self.policy_path, "w") as f:
                f.write(raw_policy)
        else:
            write_bundle(self.policy_path, bundle(rules or [], revision, default, mode,
                                                  **(policy_extra or {})))
        pol = {"file": self.policy_path}
        pol.update(kw.pop("policy_cfg", {}))
        ident = kw.pop("identity", None) or {
            "cert": self.pki.cert("server"), "key": self.pki.key("server"),
            "trust_bundles": {pt.TRUST_DOMAIN: self.pki.ca}}
        ident.setdefault("reload_interval", "200ms")
        up = self.upstream(kind, name="main")
        path, cfg, port, admin = self.config(pt.upstream_url(kind, up), policy=pol,
                                             identity=ident, **kw)
        self.conf, self.cfg, self.port, self.admin = path, cfg, port, admin
        self.proc = self.picket(path, inbound_port=port, admin_port=admin)
        return port

    def audit(self, min_lines=1, timeout=3.0):
        return pt.read_jsonl(os.path.join(self.tmp, "audit.jsonl"), timeout=timeout,
                             min_lines=min_lines)

    def admin_json(self, path):
        st, _, body = pt.http_get_plain(self.admin, path)
        self.assertEqual(st, 200, body)
        return json.loads(body.decode())

    def wait_until(self, fn, timeout=3.0, step=0.1):
        """Waits for fn() to be true. Every caller waits for an event it then asserts, so
        the bound is at least 60 s: it only turns a hang into a failure, and a loaded
        machine is not a broken picket."""
        deadline = time.monotonic() + max(timeout, 60.0)
        while True:
            v = fn()
            if v or time.monotonic() > deadline:
                return v
            time.sleep(step)

    # -- allow / deny / default ---------------------------------------------------

    def test_allow_and_default_deny(self):
        port = self.start([{"id": "allow-client", "action": "allow", "from": [pt.CLIENT_ID]}])
        for http in pt.HTTP_VERSIONS:
            r = self.curl(port, "/", http=http, cert="client")
            self.assertOK(r)
            self.assertEqual(r.body, b"hello from upstream\n")
            r = self.curl(port, "/", http=http, cert="other", headers=["x-request-id: pol-deny-1"])
            self.assertEqual(r.exit, 0, repr(r))
            self.assertEqual(r.status, 403, repr(r))
            self.assertEqual(r.body, FORBIDDEN)
            self.assertIsNone(r.header("x-upstream-name"), "a denied request reached the app")
            self.assertEqual(r.header("x-request-id"), "pol-deny-1",
                             "picket's own answers carry x-request-id")

    def test_matchers(self):
        extra_identities(self.pki)
        rules = [
            {"id": "exact", "action": "allow", "from": [pt.CLIENT_ID], "paths": ["/exact/**"]},
            {"id": "subtree", "action": "allow", "from": ["spiffe://example.org/ns/ops/*"],
             "paths": ["/subtree/**"]},
            {"id": "td", "action": "allow", "from": ["spiffe://example.org/*"], "paths": ["/td/**"]},
            {"id": "anyone", "action": "allow", "from": ["*"], "paths": ["/public/**"]},
            {"id": "ro", "action": "allow", "methods": ["GET", "HEAD"], "paths": ["/ro/**"]},
            {"id": "star", "action": "allow", "paths": ["/users/*/orders"]},
            {"id": "hosts", "action": "allow", "hosts": ["orders.shop.svc", "*.example.net"],
             "paths": ["/host/**"]},
            {"id": "hdr", "action": "allow", "headers": {"x-tenant": ["acme", "globex"]},
             "paths": ["/tenant/**"]},
        ]
        ident = {"cert": self.pki.cert("server"), "key": self.pki.key("server"),
                 "trust_bundles": {pt.TRUST_DOMAIN: self.pki.ca,
                                   OTHER_TD: self.pki.cert("otherorgca")}}
        port = self.start(rules, identity=ident)
        P = "pol-partner"
        cases = [
            # (cert, method, path, extra headers, want, why)
            ("client", "GET", "/exact/a", [], "allow", "exact from"),
            ("client", "GET", "/exact", [], "allow", "final ** = zero segments"),
            ("other", "GET", "/exact/a", [], "deny", "exact from, other ID"),
            ("pol-ops", "GET", "/subtree/a", [], "allow", "subtree /*"),
            ("pol-ops-deep", "GET", "/subtree/a/b", [], "allow", "subtree /* deeper"),
            ("pol-ops-self", "GET", "/subtree/a", [], "deny", "subtree /* is strictly under"),
            ("pol-opsx", "GET", "/subtree/a", [], "deny", "subtree prefix is per segment"),
            ("client", "GET", "/subtree/a", [], "deny", "outside subtree"),
            ("other", "GET", "/td/x", [], "allow", "trust domain /*"),
            (P, "GET", "/td/x", [], "deny", "trust domain /*, other domain"),
            (P, "GET", "/public/x", [], "allow", "from *"),
            (P, "GET", "/exact/a", [], "deny", "federated peer, no rule"),
            ("client", "GET", "/ro/x", [], "allow", "methods GET"),
            ("client", "HEAD", "/ro/x", [], "allow", "methods HEAD"),
            ("client", "POST", "/ro/x", [], "deny", "methods POST"),
            ("client", "DELETE", "/ro/x", [], "deny", "methods DELETE"),
            ("client", "GET", "/users/7/orders", [], "allow", "* one segment"),
            ("client", "GET", "/users/7/orders?x=1", [], "allow", "query not matched"),
            ("client", "GET", "/users/orders", [], "deny", "* needs a segment"),
            ("client", "GET", "/users/7/8/orders", [], "deny", "* is one segment"),
            ("client", "GET", "/users/7/orders/x", [], "deny", "no trailing **"),
            ("client", "GET", "/host/x", ["Host: orders.shop.svc:%d" % port], "allow",
             "host with port"),
            ("client", "GET", "/host/x", ["Host: ORDERS.Shop.svc"], "allow", "host case"),
            ("client", "GET", "/host/x", ["Host: api.example.net:443"], "allow", "host *.suffix"),
            ("client", "GET", "/host/x", ["Host: example.net"], "deny", "*.suffix needs a label"),
            ("client", "GET", "/host/x", ["Host: orders.shop.svc.evil"], "deny", "host exact"),
            ("client", "GET", "/host/x", [], "deny", "host localhost"),
            ("client", "GET", "/tenant/x", ["x-tenant: acme"], "allow", "header value"),
            ("client", "GET", "/tenant/x", ["x-tenant: globex"], "allow", "header 2nd value"),
            ("client", "GET", "/tenant/x", ["x-tenant: initech"], "deny", "header other value"),
            ("client", "GET", "/tenant/x", [], "deny", "header missing"),
            ("client", "GET", "/tenant/x", ["x-tenant: acme", "x-tenant: initech"], "deny",
             "repeated header never widens"),
            ("client", "GET", "/nothing", [], "deny", "default deny"),
        ]
        fails = []
        for http in pt.HTTP_VERSIONS:
            for cert, method, path, hdrs, want, why in cases:
                extra = ["-I"] if method == "HEAD" else []
                r = self.curl(port, path, http=http, cert=cert,
                              method=None if method in ("GET", "HEAD") else method,
                              headers=hdrs, extra=extra)
                got = decision(r) if method != "HEAD" else (
                    "allow" if r.header("x-upstream-name") else
                    "deny" if r.status == 403 else "other %r" % r)
                if got != want:
                    fails.append("%s http=%s %s %s %s %s: want %s, got %s" % (
                        why, http, cert, method, path, hdrs, want, got))
        self.assertEqual(fails, [], "\n".join(fails))

    # -- path attacks -------------------------------------------------------------

    def test_path_attacks_against_deny_rule(self):
        port = self.start([{"id": "no-admin", "action": "deny", "paths": ["/admin/**"]},
                           {"id": "any", "action": "allow", "from": ["*"]}])
        attacks = ["/admin/x", "/admin", "/admin/", "/admin/../admin/x", "//admin/x",
                   "/./admin/x", "/%61dmin/x", "/%61%64%6d%69%6e/x", "/a/%2e%2e/admin/x",
                   "/a/%2E%2E/admin/x", "/a/../admin/x", "/public/../admin/x", "/admin//x",
                   "/admin/./x", "///admin/x", "/a/b/../../admin/x", "/.//admin/x",
                   "/%2e/admin/x", "/admin/x?y=1", "/admin/x/.."]
        fails = []
        for http in pt.HTTP_VERSIONS:
            for raw in attacks:
                r = self.curl(port, raw, http=http, extra=["--path-as-is"])
                if not (r.exit == 0 and r.status == 403 and r.body == FORBIDDEN):
                    fails.append("%s http=%s: want 403, got %r" % (raw, http, r))
            for raw in ("/admin%2fx", "/admin%2Fx", "/x/..%2fadmin/x", "/admin%5cx"):
                r = self.curl(port, raw, http=http, extra=["--path-as-is"])
                if not (r.exit == 0 and r.status == 400):
                    fails.append("%s http=%s: want 400, got %r" % (raw, http, r))
            # not everything is denied: the allow rule is live
            r = self.curl(port, "/administrator/x", http=http, extra=["--path-as-is"])
            if decision(r) != "allow":
                fails.append("/administrator/x http=%s: want allow, got %r" % (http, r))
            r = self.curl(port, "/headers/../headers", http=http, extra=["--path-as-is"])
            if r.status != 200 or r.json().get("path") != "/headers":
                fails.append("/headers/../headers http=%s: %r" % (http, r))
        self.assertEqual(fails, [], "\n".join(fails))
        # the audit record shows the normalized path the policy saw
        recs = self.audit(min_lines=len(attacks))
        denied = [x for x in recs if x.get("decision") == "deny"]
        self.assertTrue(denied)
        for x in denied:
            self.assertEqual(x.get("rule"), "no-admin", x)
            self.assertRegex(x.get("path", ""), r"^/admin(/|$|\?)", "audit path normalized: %r" % x)

    def test_path_attacks_raw_requests(self):
        """Request targets curl will not send: absolute-form, fragments, raw backslashes,
        NUL, bad escapes. None may reach the app; the deny rule still holds."""
        port = self.start([{"id": "no-admin", "action": "deny", "paths": ["/admin/**"]},
                           {"id": "any", "action": "allow", "from": ["*"]}], kind="h1")

        def complete(data):
            head, sep, body = data.partition(b"\r\n\r\n")
            m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
            return bool(sep and m and len(body) >= int(m.group(1)))

        def h1(target):
            ctx = pt.tls_context(self.pki, alpn=("http/1.1",))
            with pt.socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                    s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\n"
                              b"Connection: close\r\n\r\n")
                    data = b""
                    while not complete(data):  # (a 400 may linger before the close)
                        try:
                            chunk = s.recv(65536)
                        except (OSError, pt.ssl.SSLError):
                            break
                        if not chunk:
                            break
                        data += chunk
            m = re.match(rb"HTTP/1\.1 (\d{3})", data)
            return (int(m.group(1)) if m else 0), b"x-upstream-name" in data.lower()

        want = {b"https://localhost/admin/x": 400, b"http://evil/admin/x": 400,
                b"admin/x": 400, b"*": 400, b"/admin/x#f": 400, b"/public#/../admin/x": 400,
                b"/public\\..\\admin/x": 400, b"/admin/x%00": 400, b"/ad%00min/x": 400,
                b"/admin%2": 400, b"/admin%zz/x": 400, b"/%2e%2e/admin/x": 403,
                b"/%2e%2e/%2e%2e/admin/x": 403, b"/admin/x/../../admin/y": 403}
        fails = []
        for target, status in sorted(want.items()):
            got, reached = h1(target)
            if got != status or reached:
                fails.append("h1 %r: want %d, got %d%s" % (target, status, got,
                                                            " (reached the app)" if reached else ""))
        c = pt.H2Client(port, self.pki)
        try:
            for target, ok in (("admin/x", (0, 400)), ("https://localhost/admin/x", (0, 400)),
                               ("*", (0, 400)), ("/admin/x#f", (0, 400)),
                               ("/public\\..\\admin/x", (0, 400)), ("/%2e%2e/admin/x", (403,)),
                               ("/admin/x\x00", (0, 400))):
                try:
                    st, hdrs, body, _ = c.request(target, timeout=60)
                except AssertionError:
                    c.close()
                    c = pt.H2Client(port, self.pki)
                    st, hdrs = 0, []
                if st not in ok or any(k == "x-upstream-name" for k, _ in hdrs):
                    fails.append("h2 %r: want one of %s, got %d %r" % (target, ok, st, hdrs))
        finally:
            c.close()
        self.assertEqual(fails, [], "\n".join(fails))

    # -- audit records --------------------------------------------------------------

    def test_audit_records(self):
        port = self.start([{"id": "no-admin", "action": "deny", "paths": ["/admin/**"]},
                           {"id": "allow-client", "action": "allow", "from": [pt.CLIENT_ID]}],
                          revision=42, node_id="it/policy-audit")
        t0 = time.time()
        http = pt.HTTP_VERSIONS[0]
        r = self.curl(port, "/headers?q=1", http=http, headers=["x-request-id: audit-allow-1"])
        self.assertOK(r)
        r = self.curl(port, "/admin/%61x", http=pt.HTTP_VERSIONS[-1], method="POST", data=b"x",
                      headers=["x-request-id: audit-deny-1"], extra=["--path-as-is"])
        self.assertEqual(r.status, 403, repr(r))
        r = self.curl(port, "/", cert="other", headers=["x-request-id: audit-default-1"])
        self.assertEqual(r.status, 403, repr(r))
        recs = self.audit(min_lines=3)
        by_id = {x.get("request_id"): x for x in recs}
        for rid in ("audit-allow-1", "audit-deny-1", "audit-default-1"):
            self.assertIn(rid, by_id, "no audit record for %s: %r" % (rid, recs))
        fields = ("ts", "node", "decision", "mode", "rule", "decided_by", "dispatch_node",
                  "bundle_revision", "bundle_age_ms", "peer", "method", "authority", "path",
                  "status", "request_id")
        for rid, x in by_id.items():
            for f in fields:
                self.assertIn(f, x, "audit record lacks %s: %r" % (f, x))
            self.assertRegex(x["ts"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
            ts = calendar.timegm(time.strptime(x["ts"][:19], "%Y-%m-%dT%H:%M:%S"))
            self.assertLess(abs(ts - t0), 30, "audit ts %s vs now" % x["ts"])
            self.assertEqual(x["node"], "it/policy-audit")
            self.assertEqual(x["mode"], "enforce")
            self.assertEqual(x["decided_by"], "local")
            self.assertIsNone(x["dispatch_node"])
            self.assertEqual(x["bundle_revision"], 42)
            self.assertIsInstance(x["bundle_age_ms"], (int, float))
            self.assertTrue(0 <= x["bundle_age_ms"] < 60000, x)
            self.assertEqual(x["authority"], "localhost:%d" % port)
        a, d, df = by_id["audit-allow-1"], by_id["audit-deny-1"], by_id["audit-default-1"]
        self.assertEqual((a["decision"], a["rule"], a["status"]), ("allow", "allow-client", 200))
        self.assertEqual((a["peer"], a["method"]), (pt.CLIENT_ID, "GET"))
        self.assertEqual(a["path"].split("?")[0], "/headers")
        self.assertEqual((d["decision"], d["rule"], d["status"]), ("deny", "no-admin", 403))
        self.assertEqual((d["peer"], d["method"], d["path"]), (pt.CLIENT_ID, "POST", "/admin/ax"))
        self.assertEqual(d.get("reason"), "policy_deny", d)
        self.assertEqual((df["decision"], df["rule"], df["status"], df["peer"]),
                         ("deny", "default", 403, pt.OTHER_ID))

    def test_audit_without_policy_is_mtls(self):
        up = self.upstream("h2c")
        path, cfg, port, admin = self.config(pt.upstream_url("h2c", up))
        self.picket(path, inbound_port=port, admin_port=admin)
        self.assertOK(self.curl(port, "/", headers=["x-request-id: audit-mtls-1"]))
        recs = [x for x in self.audit() if x.get("request_id") == "audit-mtls-1"]
        self.assertEqual(len(recs), 1, recs)
        x = recs[0]
        self.assertEqual((x["decision"], x["rule"]), ("allow", "mtls"))
        self.assertIsNone(x["bundle_revision"])
        self.assertIsNone(x["bundle_age_ms"])

    # -- hot reload ------------------------------------------------------------------

    def test_hot_reload(self):
        r1 = [{"id": "no-feature", "action": "deny", "paths": ["/feature/**"]},
              {"id": "any", "action": "allow", "from": ["*"]}]
        port = self.start(r1, revision=5)
        self.assertEqual(decision(self.curl(port, "/feature/x")), "deny")
        pol = self.admin_json("/policy")
        self.assertEqual(pol["revision"], 5)
        self.assertIsInstance(pol["age_ms"], (int, float))
        self.assertIn(pol["source"], (self.policy_path, "file:" + self.policy_path), pol)
        self.assertIsNone(pol["last_error"])
        self.assertEqual(pt.metric(self.admin, "picket_policy_revision"), 5)

        # newer revision: the new rule is in force within ~2 s
        r2 = [{"id": "no-beta", "action": "deny", "paths": ["/beta/**"]},
              {"id": "any", "action": "allow", "from": ["*"]}]
        mark = len(self.proc.stderr())
        t0 = time.monotonic()
        write_bundle(self.policy_path, bundle(r2, revision=6))
        ok = self.wait_until(lambda: decision(self.curl(port, "/feature/x")) == "allow", 2.5, 0.05)
        self.assertTrue(ok, "revision 6 not in force 2.5 s after the write; log:\n%s"
                        % self.proc.stderr()[mark:][-2000:])
        pt.log("policy reload took effect after %.2fs" % (time.monotonic() - t0))
        self.assertEqual(decision(self.curl(port, "/beta/x")), "deny")
        self.assertIsNotNone(pt.wait_log_event(self.proc, "policy_loaded", since=mark, timeout=30))
        pol = self.admin_json("/policy")
        self.assertEqual(pol["revision"], 6)
        self.assertLess(pol["age_ms"], 10000)
        self.assertEqual(pt.metric(self.admin, "picket_policy_revision"), 6)

        # broken file: refused, revision 6 stays
        for broken in ('{"revision": 7, "rules": [', 
                       json.dumps(bundle([{"id": "x", "action": "allow", "pathz": ["/"]}], 7)),
                       json.dumps(bundle([{"id": "x", "action": "allow", "paths": ["/a/../b"]}], 7)),
                       json.dumps(bundle([{"id": "d", "action": "deny"},
                                          {"id": "d", "action": "allow"}], 7)),
                       ""):
            refused0 = pt.metric(self.admin, "picket_policy_loads_total", 0.0, result="refused")
            mark = len(self.proc.stderr())
            tmp = self.policy_path + ".tmp"
            with open(tmp, "w") as f:
                f.write(broken)
            os.replace(tmp, self.policy_path)
            ev = pt.wait_log_event(self.proc, "policy_refused", since=mark, timeout=30)
            self.assertIsNotNone(ev, "broken bundle %r not refused; log:\n%s" % (
                broken[:60], self.proc.stderr()[mark:][-2000:]))
            self.assertTrue(ev.get("error"), ev)
            pol = self.admin_json("/policy")
            self.assertEqual(pol["revision"], 6, "broken bundle %r: %r" % (broken[:60], pol))
            self.assertTrue(pol["last_error"], pol)
            self.assertEqual(decision(self.curl(port, "/feature/x")), "allow")
            self.assertEqual(decision(self.curl(port, "/beta/x")), "deny")
            self.assertGreaterEqual(
                pt.metric(self.admin, "picket_policy_loads_total", 0.0, result="refused") - refused0,
                1, "picket_policy_loads_total{result=refused}")
        st, _, body = pt.http_get_plain(self.admin, "/readyz")
        self.assertEqual(st, 200, "a refused update does not make a loaded policy unready: %r" % body)

        # lower revision: refused, 6 stays
        mark = len(self.proc.stderr())
        write_bundle(self.policy_path, bundle(r1, revision=4))
        ev = pt.wait_log_event(self.proc, "policy_refused", since=mark, timeout=30)
        self.assertIsNotNone(ev, "older revision not refused")
        self.assertIn("revision", ev.get("error", ""), ev)
        pol = self.admin_json("/policy")
        self.assertEqual(pol["revision"], 6)
        self.assertIn("4", pol["last_error"] or "", pol)
        self.assertEqual(decision(self.curl(port, "/feature/x")), "allow")
        self.assertEqual(decision(self.curl(port, "/beta/x")), "deny")

        # and a good newer one after that is taken and clears last_error
        write_bundle(self.policy_path, bundle(r1, revision=9))
        ok = self.wait_until(lambda: self.admin_json("/policy")["revision"] == 9, 2.5, 0.1)
        self.assertTrue(ok, "revision 9 not taken after refusals")
        self.assertIsNone(self.admin_json("/policy")["last_error"])
        self.assertEqual(decision(self.curl(port, "/feature/x")), "deny")

    def test_reload_under_load_no_mixed_answers(self):
        """Requests in flight while bundles swap get one bundle's answer: allow or deny,
        never an error."""
        rules_a = [{"id": "any", "action": "allow", "from": ["*"]}]
        rules_b = [{"id": "no-x", "action": "deny", "paths": ["/x/**"]}] + rules_a
        port = self.start(rules_a, revision=1)
        stop = threading.Event()
        bad = []
        count = [0]

        def load():
            c = pt.H2Client(port, self.pki)
            try:
                while not stop.is_set():
                    st, _, body, _ = c.request("/x/1", timeout=60)
                    count[0] += 1
                    if st not in (403, 404) or (st == 403 and body != FORBIDDEN):
                        bad.append((st, body[:100]))
            except Exception as e:  # noqa: BLE001 - reported below
                bad.append(repr(e))
            finally:
                c.close()
        ts = [threading.Thread(target=load, daemon=True) for _ in range(3)]
        for t in ts:
            t.start()
        self.addCleanup(stop.set)
        for rev in range(2, 10):
            write_bundle(self.policy_path, bundle(rules_b if rev % 2 else rules_a, revision=rev))
            # each revision in force, and answering requests, before the next one
            self.assertTrue(self.wait_until(lambda: self.admin_json("/policy")["revision"] == rev),
                            "revision %d not taken" % rev)
            n0 = count[0]
            self.assertTrue(self.wait_until(lambda: count[0] >= n0 + 2 or not any(
                t.is_alive() for t in ts), step=0.01), "no requests under revision %d" % rev)
        stop.set()
        for t in ts:
            t.join(60)
        self.assertEqual(bad, [])
        self.assertGreater(count[0], 16)
        self.assertEqual(self.admin_json("/policy")["revision"], 9)

    def test_configmap_style_policy_and_deletion(self):
        """policy.file inside a kubelet ConfigMap volume (DIR/policy.json ->
        ..data/policy.json, ..data swapped by rename) is followed; a vanished file keeps
        the policy in force."""
        d = os.path.join(self.tmp, "cm")
        os.makedirs(d)
        n = [0]

        def swap(b):
            n[0] += 1
            ts = "..2026_11_23_12_00_%02d" % n[0]
            os.makedirs(os.path.join(d, ts))
            with open(os.path.join(d, ts, "policy.json"), "w") as f:
                json.dump(b, f)
            os.symlink(ts, os.path.join(d, "..data_tmp"))
            os.replace(os.path.join(d, "..data_tmp"), os.path.join(d, "..data"))
        swap(bundle([{"id": "no-x", "action": "deny", "paths": ["/x/**"]},
                     {"id": "any", "action": "allow", "from": ["*"]}], revision=1))
        os.symlink("..data/policy.json", os.path.join(d, "policy.json"))
        up = self.upstream("h2c")
        path, cfg, port, admin = self.config(
            pt.upstream_url("h2c", up), policy={"file": os.path.join(d, "policy.json")},
            identity={"cert": self.pki.cert("server"), "key": self.pki.key("server"),
                      "trust_bundles": {pt.TRUST_DOMAIN: self.pki.ca}, "reload_interval": "200ms"})
        self.admin = admin
        self.proc = self.picket(path, inbound_port=port, admin_port=admin)
        self.assertEqual(decision(self.curl(port, "/x/1")), "deny")
        swap(bundle([{"id": "no-y", "action": "deny", "paths": ["/y/**"]},
                     {"id": "any", "action": "allow", "from": ["*"]}], revision=2))
        self.assertTrue(self.wait_until(lambda: decision(self.curl(port, "/x/1")) == "allow", 2.5),
                        "ConfigMap-style swap not followed")
        self.assertEqual(decision(self.curl(port, "/y/1")), "deny")
        # the file disappears: refused, revision 2 stays in force
        mark = len(self.proc.stderr())
        os.unlink(os.path.join(d, "policy.json"))
        self.assertIsNotNone(pt.wait_log_event(self.proc, "policy_refused", since=mark, timeout=30))
        self.assertEqual(decision(self.curl(port, "/y/1")), "deny")
        self.assertEqual(decision(self.curl(port, "/x/1")), "allow")
        pol = self.admin_json("/policy")
        self.assertEqual(pol["revision"], 2)
        self.assertTrue(pol["last_error"])

    def test_policy_goes_stale_while_running(self):
        port = self.start([{"id": "any", "action": "allow", "from": ["*"]}], revision=1,
                          policy_extra={"expires_at": rfc3339(time.time() + 3)})
        self.assertOK(self.curl(port, "/"))
        st, _, body = pt.http_get_plain(self.admin, "/readyz")
        self.assertEqual(st, 200, body)
        self.assertTrue(self.wait_until(lambda: self.curl(port, "/").status == 503, 6, 0.2),
                        "bundle past expires_at still serving")
        r = self.curl(port, "/")
        self.assertEqual((r.status, r.body), (503, b"policy is stale\n"))
        st, _, body = pt.http_get_plain(self.admin, "/readyz")
        self.assertEqual(st, 503, body)

    # -- audit mode -------------------------------------------------------------------

    def test_audit_mode_never_denies(self):
        port = self.start([{"id": "no-admin", "action": "deny", "paths": ["/admin/**"]},
                           {"id": "allow-client", "action": "allow", "from": [pt.CLIENT_ID]}],
                          mode="audit", revision=3)
        r = self.curl(port, "/headers", headers=["x-request-id: am-allow"])
        self.assertOK(r)
        r = self.curl(port, "/admin/x", headers=["x-request-id: am-deny"])
        self.assertEqual(decision(r), "allow", "audit mode must not deny: %r" % r)
        self.assertEqual(r.status, 404, "the upstream's own answer")
        r = self.curl(port, "/", cert="other", headers=["x-request-id: am-default"])
        self.assertOK(r, "default deny in audit mode")
        self.assertEqual(self.admin_json("/policy")["mode"], "audit")
        recs = {x.get("request_id"): x for x in self.audit(min_lines=3)}
        d = recs.get("am-deny")
        self.assertIsNotNone(d, recs)
        self.assertEqual((d["decision"], d["mode"], d["rule"]), ("deny", "audit", "no-admin"))
        self.assertEqual(d["status"], 404, "audit record status = what the client got")
        df = recs.get("am-default")
        self.assertEqual((df["decision"], df["mode"], df["rule"]), ("deny", "audit", "default"))
        a = recs.get("am-allow")
        self.assertEqual((a["decision"], a["mode"], a["rule"]), ("allow", "audit", "allow-client"))

    # -- failing closed --------------------------------------------------------------------

    def test_broken_policy_at_start_fails_closed(self):
        port = self.start(raw_policy='{"revision": 1, "rules": [}')
        for http in pt.HTTP_VERSIONS:
            r = self.curl(port, "/", http=http)
            self.assertEqual(r.exit, 0, repr(r))
            self.assertEqual(r.status, 503, repr(r))
            self.assertEqual(r.body, b"no policy loaded\n")
            self.assertIsNone(r.header("x-upstream-name"))
        st, _, body = pt.http_get_plain(self.admin, "/readyz")
        self.assertEqual(st, 503, body)
        self.assertIn(b"no policy", body)
        pol = self.admin_json("/policy")
        self.assertIsNone(pol["revision"])
        self.assertTrue(pol["last_error"], pol)
        self.assertEqual(pt.metric(self.admin, "picket_policy_revision"), -1)
        # fixing the file brings it up
        write_bundle(self.policy_path, bundle([{"id": "any", "action": "allow", "from": ["*"]}], 1))
        ok = self.wait_until(lambda: self.curl(self.port, "/").status == 200, 2.5, 0.1)
        self.assertTrue(ok, "a good policy after a broken start was not picked up")
        st, _, body = pt.http_get_plain(self.admin, "/readyz")
        self.assertEqual(st, 200, body)

    def test_stale_policy_denies(self):
        port = self.start([{"id": "allow-client", "action": "allow", "from": [pt.CLIENT_ID]}],
                          revision=2, policy_extra={"expires_at": rfc3339(time.time() - 3600)})
        for http in pt.HTTP_VERSIONS:
            r = self.curl(port, "/", http=http, headers=["x-request-id: stale-1"])
            self.assertEqual(r.exit, 0, repr(r))
            self.assertEqual(r.status, 503, repr(r))
            self.assertEqual(r.body, b"policy is stale\n")
            self.assertIsNone(r.header("x-upstream-name"))
        st, _, body = pt.http_get_plain(self.admin, "/readyz")
        self.assertEqual(st, 503, body)
        self.assertIn(b"stale", body)
        self.assertEqual(self.admin_json("/policy")["on_stale"], "deny")
        recs = [x for x in self.audit() if x.get("request_id") == "stale-1"]
        self.assertTrue(recs)
        self.assertEqual((recs[0]["decision"], recs[0]["status"]), ("deny", 503))
        # a fresh bundle (newer revision, future expiry) recovers
        write_bundle(self.policy_path, bundle(
            [{"id": "allow-client", "action": "allow", "from": [pt.CLIENT_ID]}], revision=3,
            expires_at=rfc3339(time.time() + 3600)))
        ok = self.wait_until(lambda: self.curl(port, "/").status == 200, 2.5, 0.1)
        self.assertTrue(ok, "fresh bundle after a stale one not in force")
        st, _, body = pt.http_get_plain(self.admin, "/readyz")
        self.assertEqual(st, 200, body)

    def test_stale_policy_last_known_good(self):
        port = self.start([{"id": "no-admin", "action": "deny", "paths": ["/admin/**"]},
                           {"id": "allow-client", "action": "allow", "from": [pt.CLIENT_ID]}],
                          revision=2, policy_extra={"expires_at": rfc3339(time.time() - 60)},
                          policy_cfg={"on_stale": "last_known_good"})
        for http in pt.HTTP_VERSIONS:
            self.assertOK(self.curl(port, "/", http=http), "allowed under last_known_good")
            self.assertEqual(decision(self.curl(port, "/admin/x", http=http)), "deny")
            self.assertEqual(decision(self.curl(port, "/", http=http, cert="other")), "deny")
        st, _, body = pt.http_get_plain(self.admin, "/readyz")
        self.assertEqual(st, 503, "readyz must fail on a stale bundle even when enforcing it: %r"
                         % body)
        self.assertEqual(self.admin_json("/policy")["on_stale"], "last_known_good")
        self.assertIsNotNone(pt.wait_log_event(self.proc, "policy_stale_enforced", timeout=30) or
                             [e for e in pt.log_events(self.proc) if e.get("level") == "warn"],
                             "last_known_good must log loudly")

    # -- metrics ------------------------------------------------------------------------

    def test_policy_metrics(self):
        port = self.start([{"id": "no-admin", "action": "deny", "paths": ["/admin/**"]},
                           {"id": "allow-client", "action": "allow", "from": [pt.CLIENT_ID]}],
                          revision=1234)
        m0 = pt.scrape_metrics(self.admin)
        self.assertEqual(pt.metric(m0, "picket_policy_revision"), 1234)
        age = pt.metric(m0, "picket_policy_age_seconds")
        self.assertIsNotNone(age)
        self.assertTrue(0 <= age < 60, age)
        n = 3
        for i in range(n):
            self.assertEqual(self.curl(port, "/admin/%d" % i).status, 403)
        self.assertOK(self.curl(port, "/"))
        self.assertEqual(self.curl(port, "/", cert="other").status, 403)
        m1 = pt.scrape_metrics(self.admin)

        def delta(**labels):
            return (pt.metric(m1, "picket_policy_decisions_total", 0.0, **labels) -
                    pt.metric(m0, "picket_policy_decisions_total", 0.0, **labels))
        self.assertEqual(delta(decision="deny", rule="no-admin"), n)
        self.assertEqual(delta(decision="allow", rule="allow-client"), 1)
        self.assertEqual(delta(decision="deny", rule="default"), 1)
        self.assertGreaterEqual(pt.metric(m1, "picket_policy_loads_total", 0.0,
                                          result="accepted"), 1)
        st403 = pt.metric(m1, "picket_requests_total", 0.0, listener="inbound", status="403")
        self.assertGreaterEqual(st403, n + 1)

    # -- picket policy CLI ------------------------------------------------------------------

    def test_policy_cli(self):
        cli = pt.run_picket_cli
        good = write_bundle(os.path.join(self.tmp, "good.json"), bundle([
            {"id": "frontend-reads-orders", "action": "allow",
             "from": ["spiffe://example.org/ns/shop/sa/frontend", "spiffe://example.org/ns/ops/*"],
             "hosts": ["orders.shop.svc"], "methods": ["GET", "HEAD"],
             "paths": ["/orders", "/orders/**", "/users/*/orders"],
             "headers": {"x-tenant": ["acme"]}},
            {"id": "no-admin", "action": "deny", "paths": ["/admin/**"]},
            {"id": "payments", "action": "dispatch", "dispatch": "authz", "paths": ["/payments/**"]},
        ], revision=17, expires_at="2099-12-01T00:00:00Z"))
        rc, o, e = cli(["policy", "lint", good])
        self.assertEqual(rc, 0, o + e)
        bad_cases = {
            "unknown-key": '{"revision":1,"rules":[{"id":"x","action":"allow","pathz":["/"]}]}',
            "dup-id": '{"revision":1,"rules":[{"id":"x","action":"allow"},{"id":"x","action":"deny"}]}',
            "reserved-id": '{"revision":1,"rules":[{"id":"default","action":"allow"}]}',
            "no-revision": '{"rules":[]}',
            "neg-revision": '{"revision":-1,"rules":[]}',
            "bad-action": '{"revision":1,"rules":[{"id":"x","action":"permit"}]}',
            "unnormalized-path": '{"revision":1,"rules":[{"id":"x","action":"allow","paths":["/a/../b"]}]}',
            "mid-doublestar": '{"revision":1,"rules":[{"id":"x","action":"allow","paths":["/a/**/b"]}]}',
            "dispatch-no-target": '{"revision":1,"rules":[{"id":"x","action":"dispatch"}]}',
            "dup-key": '{"revision":1,"revision":2,"rules":[]}',
            "bad-mode": '{"revision":1,"mode":"yolo","rules":[]}',
            "bad-expiry": '{"revision":1,"expires_at":"tomorrow","rules":[]}',
            "trailing-comma": '{"revision":1,"rules":[],}',
            "truncated": '{"revision":1,"rules":[',
        }
        fails = []
        for name, text in sorted(bad_cases.items()):
            p = os.path.join(self.tmp, name + ".json")
            with open(p, "w") as f:
                f.write(text)
            rc, o, e = cli(["policy", "lint", p])
            if rc != 1:
                fails.append("lint %s: exit %d, want 1: %s" % (name, rc, (o + e).strip()))
            elif not re.search(r":\d+:\d+: ", o + e) and name not in ("no-revision",):
                fails.append("lint %s: no line:col in %r" % (name, (o + e).strip()))
        self.assertEqual(fails, [], "\n".join(fails))
        rc, o, e = cli(["policy", "lint", os.path.join(self.tmp, "unknown-key.json")])
        self.assertIn('rules[0]', o + e)
        self.assertIn('(rule "x")', o + e)

        front = "spiffe://example.org/ns/shop/sa/frontend"
        base = ["policy", "eval", good, "--host", "orders.shop.svc", "--header", "x-tenant=acme"]
        rc, o, e = cli(base + ["--peer", front, "--method", "GET", "--path", "/orders/7"])
        self.assertEqual(rc, 0, o + e)
        self.assertRegex(o, r"(?m)^decision:\s+allow$")
        self.assertRegex(o, r"(?m)^rule:\s+frontend-reads-orders$")
        rc, o, e = cli(base + ["--peer", front, "--method", "GET", "--path", "/orders/./a/../7"])
        self.assertEqual(rc, 0, o + e)
        self.assertRegex(o, r"(?m)^path:\s+/orders/7$", "eval prints the normalized path")
        rc, o, e = cli(base + ["--peer", "spiffe://example.org/ns/ops/sa/x", "--method", "GET",
                               "--path", "/admin/x"])
        self.assertEqual(rc, 1, o + e)
        self.assertRegex(o, r"(?m)^rule:\s+no-admin$")
        rc, o, e = cli(base + ["--peer", front, "--method", "POST", "--path", "/orders/7"])
        self.assertEqual(rc, 1, o + e)
        self.assertRegex(o, r"(?m)^rule:\s+default$")
        rc, o, e = cli(["policy", "eval", good, "--peer", front, "--method", "GET", "--path",
                        "/orders/7", "--host", "orders.shop.svc", "--header", "x-tenant=evil"])
        self.assertEqual(rc, 1, o + e)
        rc, o, e = cli(base + ["--peer", front, "--method", "POST", "--path", "/payments/1"])
        self.assertEqual(rc, 3, o + e)
        self.assertRegex(o, r"(?m)^decision:\s+dispatch$")
        self.assertRegex(o, r"(?m)^rule:\s+payments$")

        table = [
            {"peer": front, "method": "GET", "path": "/orders/7", "host": "orders.shop.svc",
             "headers": {"x-tenant": "acme"}, "expect": "allow", "rule": "frontend-reads-orders"},
            {"peer": "spiffe://example.org/ns/ops/team/x", "method": "HEAD",
             "path": "/users/9/orders", "host": "orders.shop.svc",
             "headers": {"x-tenant": "acme"}, "expect": "allow"},
            {"peer": front, "method": "GET", "path": "/admin/x", "expect": "deny",
             "rule": "no-admin"},
            {"peer": front, "method": "GET", "path": "/payments/x", "expect": "dispatch",
             "rule": "payments"},
            {"peer": "spiffe://example.org/ns/shop/sa/other", "method": "GET", "path": "/orders",
             "host": "orders.shop.svc", "headers": {"x-tenant": "acme"}, "expect": "deny"},
        ]
        tpath = os.path.join(self.tmp, "cases.json")
        with open(tpath, "w") as f:
            json.dump(table, f)
        rc, o, e = cli(["policy", "test", good, tpath])
        self.assertEqual(rc, 0, o + e)
        self.assertIn("5 passed, 0 failed", o + e)
        table[2]["expect"] = "allow"
        table[3]["rule"] = "no-admin"
        with open(tpath, "w") as f:
            json.dump(table, f)
        rc, o, e = cli(["policy", "test", good, tpath])
        self.assertNotEqual(rc, 0, o + e)
        self.assertIn("3 passed, 2 failed", o + e)
        # usage errors are not mistaken for decisions
        for args in (["policy"], ["policy", "eval", good], ["policy", "frobnicate"],
                     ["policy", "lint"]):
            rc, o, e = cli(args)
            self.assertNotIn(rc, (0, 1, 3), "%s: exit %d: %s" % (args, rc, o + e))


if __name__ == "__main__":
    pt.main(timeout=200)
