#!/usr/bin/python3
"""A realistic policy bundle (policy_cases/bundle.json: a shop with frontend, orders,
payments, ops, a dev namespace and a partner trust domain) and its table of expected
decisions (policy_cases/cases.json), checked twice:

  * offline: `picket policy test bundle.json cases.json` must pass every case;
  * live: every allow/deny case is replayed through a running picket (policy.file =
    bundle.json) with curl over HTTP/2 and HTTP/1.1, presenting a certificate for the
    case's peer (one per distinct SPIFFE ID, a second CA for partner.example). Allowed
    requests must reach the app (200), denied ones get picket's 403, paths refused before
    the policy ("rule": "400:...") get 400, and the audit record of each request must
    name the same decision and rule as the table. Dispatch cases, with the authorization
    service down, must fail closed (403 "authorization service unavailable").

Plus gRPC method-level policy with a real grpcio client against grpc_app.py: a rule
allows /picket.test.Echo/Unary for one identity, a deny rule blocks
/picket.test.Echo/ServerStream for everyone.

    /usr/bin/python3 tests/integration/test_policy_table.py [-k PATTERN]

The app behind picket is a catch-all HTTP/1.1 server in this process (upstream.py
answers 404 for the shop's paths): 200 for every method and path, with the method,
path and host it saw as JSON and "x-upstream-name: shop".
"""
import json
import os
import shutil
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import picket_test as pt  # noqa: E402

CASES_DIR = os.path.join(pt.HERE, "policy_cases")
BUNDLE = os.path.join(CASES_DIR, "bundle.json")
CASES = os.path.join(CASES_DIR, "cases.json")

PARTNER_TD = "partner.example"
FORBIDDEN = b"forbidden by policy\n"
AUTHZ_DOWN = b"forbidden: authorization service unavailable\n"

FE = "spiffe://example.org/ns/shop/sa/frontend"
OPS = "spiffe://example.org/ns/ops/sa/oncall"


def load_cases():
    with open(CASES) as f:
        return json.load(f)


# --------------------------------------------------------------------------
# one certificate per distinct peer ID

_CERTS = {}
_CERTS_LOCK = threading.Lock()


def peer_cert(pki, spiffe_id):
    """The PKI name of a leaf for spiffe_id (issued on first use; partner.example IDs by
    their own CA)."""
    with _CERTS_LOCK:
        if spiffe_id not in _CERTS:
            td = spiffe_id[len("spiffe://"):].split("/", 1)[0]
            if td == PARTNER_TD:
                pt.pki_add_ca(pki, "partnerca", PARTNER_TD)
                ca = "partnerca"
            elif td == pt.TRUST_DOMAIN:
                ca = "ca"
            else:
                raise AssertionError("no CA for trust domain %r" % td)
            name = "tbl-%d" % len(_CERTS)
            pki.issue(name, ca, spiffe_id)
            _CERTS[spiffe_id] = name
        return _CERTS[spiffe_id]


# --------------------------------------------------------------------------
# the catch-all app

class _ShopApp(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "shop-app/1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def _answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        body = json.dumps({"method": self.command, "path": self.path,
                           "host": self.headers.get("Host")}).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-upstream-name", "shop")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _answer


def start_shop_app():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _ShopApp)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    return srv, srv.server_address[1]


# --------------------------------------------------------------------------

class PolicyTable(pt.TestCase):

    def identity(self):
        pt.pki_add_ca(self.pki, "partnerca", PARTNER_TD)
        return {"cert": self.pki.cert("server"), "key": self.pki.key("server"),
                "trust_bundles": {pt.TRUST_DOMAIN: self.pki.ca,
                                  PARTNER_TD: self.pki.cert("partnerca")}}

    def start_shop(self, bundle=BUNDLE):
        """Starts the app and picket with policy.file = bundle and a dispatch service
        "fraud-check" that nobody answers. Returns picket's inbound port."""
        srv, app_port = start_shop_app()
        self.addCleanup(srv.server_close)
        self.addCleanup(srv.shutdown)
        dead = pt.free_port()  # nothing listens here
        dispatch = {"fraud-check": {"url": "https://127.0.0.1:%d/check" % dead,
                                    "server_id": "spiffe://example.org/ns/shop/sa/fraud",
                                    "timeout": "500ms"}}
        path, cfg, port, admin = self.config("http://127.0.0.1:%d" % app_port,
                                             policy={"file": bundle}, identity=self.identity())
        cfg["dispatch"] = dispatch
        pt.write_config(path, cfg)
        self.proc = self.picket(path, inbound_port=port, admin_port=admin, expect_exit=0)
        self.admin = admin
        return port

    def request(self, port, case, http, rid):
        cert = peer_cert(self.pki, case["peer"])
        method = case.get("method", "GET")
        hdrs = ["x-request-id: %s" % rid]
        if case.get("host"):
            hdrs.append("Host: %s" % case["host"])
        for name, val in sorted(case.get("headers", {}).items()):
            for v in (val if isinstance(val, list) else [val]):
                hdrs.append("%s: %s" % (name, v))
        extra = ["--path-as-is", "--globoff"]
        if method == "HEAD":
            extra.append("-I")
        return self.curl(port, case["path"], http=http, cert=cert, headers=hdrs, extra=extra,
                         method=None if method in ("GET", "HEAD") else method, timeout=15)

    # -- offline ------------------------------------------------------------------

    def test_cli_table(self):
        cases = load_cases()
        self.assertGreaterEqual(len(cases), 60)
        acts = {c["expect"] for c in cases}
        self.assertEqual(acts, {"allow", "deny", "dispatch"})
        rc, out, err = pt.run_picket_cli(["policy", "lint", BUNDLE])
        self.assertEqual(rc, 0, out + err)
        rc, out, err = pt.run_picket_cli(["policy", "test", BUNDLE, CASES])
        self.assertEqual(rc, 0, out + err)
        self.assertIn("%d passed, 0 failed" % len(cases), out, out + err)
        # every rule of the bundle is exercised by some case, and every field is used
        with open(BUNDLE) as f:
            bundle = json.load(f)
        rule_ids = {r["id"] for r in bundle["rules"]}
        self.assertEqual(rule_ids - {c["rule"] for c in cases}, set(), "rules without a case")
        used = set().union(*(r.keys() for r in bundle["rules"]))
        self.assertTrue({"id", "action", "from", "hosts", "methods", "paths", "headers",
                         "dispatch"} <= used, used)
        self.assertEqual({r["action"] for r in bundle["rules"]}, {"allow", "deny", "dispatch"})
        # the runner really checks: one flipped expectation and one wrong rule fail
        bad = [dict(c) for c in cases]
        bad[0]["expect"] = "deny" if bad[0]["expect"] == "allow" else "allow"
        bad[1]["rule"] = "no-such-rule"
        bad_path = os.path.join(self.tmp, "bad-cases.json")
        with open(bad_path, "w") as f:
            json.dump(bad, f)
        rc, out, err = pt.run_picket_cli(["policy", "test", BUNDLE, bad_path])
        self.assertNotEqual(rc, 0, out + err)
        self.assertIn("%d passed, 2 failed" % (len(cases) - 2), out, out + err)

    # -- live ---------------------------------------------------------------------

    def test_live_replay(self):
        cases = load_cases()
        for c in cases:  # issue the certificates before picket starts
            peer_cert(self.pki, c["peer"])
        port = self.start_shop()
        jobs = []
        for i, c in enumerate(cases):
            if c["expect"] == "dispatch":
                continue
            for http in pt.HTTP_VERSIONS:
                jobs.append((i, c, http, "tbl-%d-h%s" % (i, http.replace(".", ""))))

        def run(job):
            i, c, http, rid = job
            return job, self.request(port, c, http, rid)

        with ThreadPoolExecutor(max_workers=6) as ex:
            results = list(ex.map(run, jobs))
        fails = []
        audited = {}
        for (i, c, http, rid), r in results:
            what = "case %d http=%s %s %s %s host=%s headers=%s (want %s by %s)" % (
                i, http, c["peer"], c["method"], c["path"], c.get("host"), c.get("headers"),
                c["expect"], c["rule"])
            reached = r.header("x-upstream-name") == "shop"
            if r.exit != 0:
                fails.append("%s: curl failed: %r" % (what, r))
            elif c["expect"] == "allow":
                if r.status != 200 or not reached:
                    fails.append("%s: got %r" % (what, r))
                elif c["method"] != "HEAD":
                    seen = r.json()
                    if seen["method"] != c["method"]:
                        fails.append("%s: app saw %r" % (what, seen))
                    if ".." in seen["path"] or "//" in seen["path"]:
                        fails.append("%s: app saw an unnormalized path %r" % (what, seen))
                audited[rid] = c
            elif c["rule"].startswith("400:"):
                if r.status != 400 or reached:
                    fails.append("%s: want 400, got %r" % (what, r))
            else:
                body_ok = c["method"] == "HEAD" or r.body == FORBIDDEN
                if r.status != 403 or reached or not body_ok:
                    fails.append("%s: want 403 forbidden by policy, got %r" % (what, r))
                audited[rid] = c
        self.assertEqual(fails, [], "%d of %d requests wrong:\n%s" % (
            len(fails), len(results), "\n".join(fails)))

        # the audit log names the same decision and rule as the table
        recs = pt.read_jsonl(os.path.join(self.tmp, "audit.jsonl"), min_lines=len(audited),
                             timeout=10)
        by_rid = {x.get("request_id"): x for x in recs}
        afails = []
        for rid, c in sorted(audited.items()):
            x = by_rid.get(rid)
            if x is None:
                afails.append("%s: no audit record" % rid)
                continue
            if (x.get("decision"), x.get("rule")) != (c["expect"], c["rule"]):
                afails.append("%s (%s %s %s): audit says %s by %s, table %s by %s" % (
                    rid, c["peer"], c["method"], c["path"], x.get("decision"), x.get("rule"),
                    c["expect"], c["rule"]))
            elif x.get("peer") != c["peer"] or x.get("bundle_revision") != 42:
                afails.append("%s: audit peer/revision %r" % (rid, x))
        self.assertEqual(afails, [], "\n".join(afails))

    def test_dispatch_cases_fail_closed(self):
        """The dispatch cases with the authorization service down: 403, never the app."""
        cases = [c for c in load_cases() if c["expect"] == "dispatch"]
        self.assertGreaterEqual(len(cases), 2)
        for c in cases:
            peer_cert(self.pki, c["peer"])
        port = self.start_shop()
        fails = []
        for i, c in enumerate(cases):
            for http in pt.HTTP_VERSIONS:
                r = self.request(port, c, http, "tbl-dispatch-%d" % i)
                if r.status != 403 or r.body != AUTHZ_DOWN or r.header("x-upstream-name"):
                    fails.append("%s %s %s http=%s: %r" % (c["peer"], c["method"], c["path"],
                                                         http, r))
        self.assertEqual(fails, [], "\n".join(fails))

    # -- gRPC methods ---------------------------------------------------------------

    GRPC_RULES = [
        {"id": "echo-no-server-stream", "action": "deny",
         "paths": ["/picket.test.Echo/ServerStream"]},
        {"id": "frontend-echo-unary", "action": "allow", "from": [FE], "methods": ["POST"],
         "paths": ["/picket.test.Echo/Unary"], "headers": {"content-type": ["application/grpc"]}},
        {"id": "ops-echo-all", "action": "allow", "from": ["spiffe://example.org/ns/ops/*"],
         "paths": ["/picket.test.Echo/*"]},
    ]

    def test_grpc_method_policy(self):
        import grpc
        import grpc_app
        ids = {"fe": FE, "ops": OPS, "dev": "spiffe://example.org/ns/dev/sa/sandbox",
               "partner": "spiffe://partner.example/courier/sa/tracker"}
        certs = {k: peer_cert(self.pki, v) for k, v in ids.items()}
        bundle_path = os.path.join(self.tmp, "grpc-policy.json")
        pt.write_policy(bundle_path, self.GRPC_RULES, revision=7)
        # the same expectations, offline first
        U, S, B = "/picket.test.Echo/Unary", "/picket.test.Echo/ServerStream", "/picket.test.Echo/BidiStream"
        grpc_ct = {"content-type": "application/grpc"}
        want = [  # (who, method path, expected decision, rule)
            ("fe", U, "allow", "frontend-echo-unary"),
            ("fe", S, "deny", "echo-no-server-stream"),
            ("fe", B, "deny", "default"),
            ("ops", U, "allow", "ops-echo-all"),
            ("ops", B, "allow", "ops-echo-all"),
            ("ops", S, "deny", "echo-no-server-stream"),
            ("dev", U, "deny", "default"),
            ("partner", U, "deny", "default"),
        ]
        table = [{"peer": ids[w], "method": "POST", "path": p, "headers": grpc_ct,
                  "expect": e, "rule": r} for w, p, e, r in want]
        table.append({"peer": FE, "method": "POST", "path": U, "headers": {},
                      "expect": "deny", "rule": "default"})  # not gRPC: no content-type
        table.append({"peer": FE, "method": "GET", "path": U, "headers": grpc_ct,
                      "expect": "deny", "rule": "default"})
        table_path = os.path.join(self.tmp, "grpc-cases.json")
        with open(table_path, "w") as f:
            json.dump(table, f)
        rc, out, err = pt.run_picket_cli(["policy", "test", bundle_path, table_path])
        self.assertEqual(rc, 0, out + err)
        self.assertIn("%d passed, 0 failed" % len(table), out)

        app = self.grpc_app()
        path, cfg, port, admin = self.config("h2c://127.0.0.1:%d" % app,
                                             policy={"file": bundle_path},
                                             identity=self.identity())
        self.picket(path, inbound_port=port, admin_port=admin, expect_exit=0)
        chans = {}
        for who, name in certs.items():
            ch = grpc_app.secure_channel(port, self.pki.ca, self.pki.cert(name), self.pki.key(name))
            self.addCleanup(ch.close)
            chans[who] = ch

        def call(who, method):
            ch = chans[who]
            try:
                if method == U:
                    self.assertEqual(grpc_app.unary(ch, b"ping-" + who.encode()), b"ping-" + who.encode())
                elif method == S:
                    self.assertEqual(grpc_app.server_stream(ch, 3, timeout=10),
                                     [b"msg-0", b"msg-1", b"msg-2"])
                else:
                    self.assertEqual(grpc_app.bidi_stream(ch, [b"a", b"b"], timeout=10), [b"a", b"b"])
                return "allow"
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.PERMISSION_DENIED:
                    return "deny"
                return "error %s %s" % (e.code(), e.details())

        fails = []
        for who, method, exp, rule in want:
            got = call(who, method)
            if got != exp:
                fails.append("%s %s: want %s (%s), got %s" % (who, method, exp, rule, got))
        self.assertEqual(fails, [], "\n".join(fails))
        # the audit records name the rules
        recs = pt.read_jsonl(os.path.join(self.tmp, "audit.jsonl"), min_lines=len(want), timeout=10)
        got = sorted((x.get("peer"), x.get("path"), x.get("decision"), x.get("rule")) for x in recs)
        exp = sorted((ids[w], p, e, r) for w, p, e, r in want)
        self.assertEqual(got, exp)


if __name__ == "__main__":
    pt.main(timeout=280)
