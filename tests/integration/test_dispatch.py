#!/usr/bin/python3
"""Dispatch rules (remote authorization, DESIGN.md "Dispatch"): picket asks
authz_app.py (mTLS, HTTP/1.1 or h2) and forwards or relays its answer.

Covers: allow (+ headers the service adds upstream, and the ones it must not),
deny (status, body, content-type relayed; gRPC gets PERMISSION_DENIED), the check
request's contract (method, prefixed normalized path + query, allow-listed headers,
picket's XFCC, x-picket-peer-id, x-request-id, no body, picket's SVID), the cache
(max-age, no max-age, key = identity+method+authority+path+forwarded headers,
max_cache_ttl cap, LRU bound, emptied by a new policy revision), coalescing of
identical checks in flight, timeouts / service down / wrong SPIFFE ID -> 403 (or
forwarded with on_error allow), local rules never dispatching, audit records and
metrics, both service protocols (ALPN h2, http/1.1, none).

Most tests run picket with workers=1: the cache and the in-flight table are per
worker, so exact check counts need one worker.

Nothing here bounds how long something takes. A check the service must keep in
flight is held there (authz_app --hold-dir: x-user hold-NAME) until the test releases
it after the event it waits for (the service counted the check, picket counted a
coalesced waiter); timeouts and refusals are told apart by their result label
(picket_dispatch_checks_total{result=timeout|error}), not by a stopwatch; cache ages
are picket's own (audit cache_age_ms), bracketed by what the test measured.

    /usr/bin/python3 tests/integration/test_dispatch.py [-k PATTERN]
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import unittest
from http.client import HTTPSConnection

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import picket_test as pt  # noqa: E402

AUTHZ_ID = "spiffe://example.org/ns/default/sa/authz"
IMPOSTOR_ID = "spiffe://example.org/ns/default/sa/impostor"
UNAVAILABLE = b"forbidden: authorization service unavailable\n"
DENY_BODY = b"tenant not allowed\n"

RULES = [
    {"id": "no-admin", "action": "deny", "paths": ["/admin/**"]},
    {"id": "local-allow", "action": "allow", "paths": ["/", "/local/**"]},
    # deny wins over dispatch: /admin/** must never reach the service
    {"id": "remote-admin", "action": "dispatch", "dispatch": "authz", "paths": ["/admin/**"]},
    {"id": "remote", "action": "dispatch", "dispatch": "authz",
     "paths": ["/headers", "/status/*", "/slow/*", "/upload", "/echo", "/picket.test.Echo/*"]},
]


def authz_pki(pki):
    """authz (the right ID), authz-impostor (same CA, another ID), authz-foreign (the
    right ID from an unrelated CA). Issued once per process."""
    if not os.path.exists(pki.cert("authz")):
        pki.issue("authz", "ca", AUTHZ_ID, ["localhost"], ["127.0.0.1"])
        pki.issue("authz-impostor", "ca", IMPOSTOR_ID, ["localhost"], ["127.0.0.1"])
        pki.issue("authz-foreign", "otherca", AUTHZ_ID, ["localhost"], ["127.0.0.1"])


class Authz:
    """A running authz_app.py; state() reads what it has seen."""

    def __init__(self, proc, port, state_path):
        self.proc, self.port, self.state_path = proc, port, state_path

    def state(self):
        for _ in range(50):
            try:
                with open(self.state_path) as f:
                    return json.load(f)
            except (OSError, ValueError):
                time.sleep(0.02)
        raise AssertionError("authz_app state unreadable: %s" % self.state_path)

    def checks(self):
        return self.state()["checks"]


def hdr_values(headers, name):
    return [v for k, v in headers if k == name]


def h2_many(cli, reqs, timeout=15.0):
    """Sends every (path, [(name, value)]) at once on one H2Client connection (so they
    are concurrent on one picket worker); waits for all. Returns [(status, headers, body)]."""
    sids = []
    for path, hdrs in reqs:
        sid = cli.conn.get_next_available_stream_id()
        cli.conn.send_headers(sid, [(":method", "GET"), (":scheme", "https"),
                                    (":authority", "localhost"), (":path", path)] + list(hdrs),
                              end_stream=True)
        sids.append(sid)
    cli.sock.sendall(cli.conn.data_to_send())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(cli.streams.get(s, {}).get("done") for s in sids):
            break
        if not cli._pump(0.2):
            break
    out = []
    for s in sids:
        st = cli.streams.get(s)
        if not st or not st["done"]:
            raise AssertionError("stream %d not answered within %.0fs" % (s, timeout))
        out.append((int(dict(st["headers"]).get(":status", 0)), st["headers"], st["body"]))
    return out


class DispatchBase(pt.TestCase):
    SERVICE_ARGS = []      # authz_app protocol flags (--h2, --no-alpn)
    PROTO = "HTTP/1.1"     # what the service must see

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        authz_pki(cls.pki)

    # -- set-up ---------------------------------------------------------------

    def authz(self, *args, cert="authz", port=None):
        port = port or pt.free_port()
        state = os.path.join(self.tmp, "authz-%d.json" % port)
        argv = [pt.PYTHON, os.path.join(pt.HERE, "authz_app.py"), "--port", str(port),
                "--cert", self.pki.cert(cert), "--key", self.pki.key(cert), "--ca", self.pki.ca,
                "--state", state, "--hold-dir", self.tmp] + list(self.SERVICE_ARGS) + list(args)
        p = pt.Proc(argv, self.tmp, "authz-%d" % port)
        self.addCleanup(p.stop)
        return Authz(p, port, state)

    def start(self, authz_port, dispatch=None, rules=None, workers=1, upstream="h2c",
              headers=("x-tenant", "x-user"), prefix="/authz", revision=1, upstream_port=None,
              sanitizer_check=True, listener_timeout=None):
        """Upstream + policy + picket with dispatch.authz -> 127.0.0.1:authz_port.
        `dispatch`: overrides of the dispatch.authz entry (None values remove a key)."""
        if upstream == "grpc":
            up_url = "h2c://127.0.0.1:%d" % (upstream_port or self.grpc_app())
        else:
            up_url = pt.upstream_url(upstream, upstream_port or self.upstream(upstream, name="app"))
        self.policy_path = pt.write_policy(os.path.join(self.tmp, "policy.json"),
                                           rules if rules is not None else RULES,
                                           revision=revision)
        path, cfg, port, admin = self.config(up_url, policy={"file": self.policy_path},
                                             workers=workers)
        d = {"url": "https://127.0.0.1:%d%s" % (authz_port, prefix), "server_id": AUTHZ_ID,
             "timeout": "3s", "cache_entries": 100, "on_error": "deny", "headers": list(headers)}
        for k, v in (dispatch or {}).items():
            if v is None:
                d.pop(k, None)
            else:
                d[k] = v
        cfg["dispatch"] = {"authz": d}
        if listener_timeout:
            cfg["listeners"][0]["timeout"] = listener_timeout
        pt.write_config(path, cfg)
        self.cfg, self.port, self.admin = cfg, port, admin
        # (sanitizer_check is kept for callers; the harness always checks now)
        self.proc = self.picket(path, inbound_port=port, admin_port=admin)
        return port

    def h2(self, cert="client"):
        c = pt.H2Client(self.port, self.pki, cert=cert)
        self.addCleanup(c.close)
        return c

    def audit(self, min_lines=1):
        return pt.read_jsonl(os.path.join(self.tmp, "audit.jsonl"), timeout=5.0,
                             min_lines=min_lines)

    def audit_for(self, rid, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            recs = [x for x in pt.read_jsonl(os.path.join(self.tmp, "audit.jsonl"), timeout=0)
                    if x.get("request_id") == rid]
            if recs or time.monotonic() > deadline:
                self.assertEqual(len(recs), 1, "one audit record for %s: %r" % (rid, recs))
                return recs[0]
            time.sleep(0.05)

    def m(self, name, **labels):
        return pt.metric(pt.scrape_metrics(self.admin), name, default=0, **labels)

    def release(self, name):
        """Lets the service answer every check held on x-user: hold-NAME."""
        open(os.path.join(self.tmp, "hold-" + name), "w").close()

    def wait_for(self, what, fn, timeout=60.0):
        """Waits for fn() to be true (an event: a counter reached, a state seen)."""
        deadline = time.monotonic() + timeout
        while not fn():
            if time.monotonic() > deadline:
                self.fail("waited %.0fs for %s" % (timeout, what))
            time.sleep(0.02)

    def wait_coalesced(self, n, timeout=60.0):
        self.wait_for("picket_dispatch_coalesced_total >= %d" % n,
                      lambda: self.m("picket_dispatch_coalesced_total", service="authz") >= n,
                      timeout)

    def get(self, path, tenant="acme", http="2", cert="client", rid=None, extra_headers=(), **kw):
        hs = list(extra_headers)
        if tenant is not None:
            hs.append("x-tenant: %s" % tenant)
        if rid:
            hs.append("x-request-id: %s" % rid)
        return self.curl(self.port, path, http=http, cert=cert, headers=hs, **kw)


# --------------------------------------------------------------------------
# run against every service protocol

class CoreMixin:

    def test_allow_adds_service_headers_upstream(self):
        az = self.authz("--max-age", "0")
        self.start(az.port)
        for http in pt.HTTP_VERSIONS:
            rid = "dsp-allow-" + http.replace(".", "")
            r = self.get("/headers?x=1", http=http, rid=rid,
                         extra_headers=["x-secret: s3cret"])
            self.assertOK(r, "allowed by the service (http %s)" % http)
            up = r.json()["headers"]
            self.assertEqual(up.get("x-authz-user"), "alice", "service header added upstream")
            self.assertEqual(up.get("x-authz-tenant"), "acme")
            self.assertEqual(up.get("x-tenant"), "acme", "the request's own headers still go up")
            self.assertEqual(az.state()["last"]["protocol"], self.PROTO,
                             "picket spoke %s to the service" % self.PROTO)
            rec = self.audit_for(rid)
            self.assertEqual((rec["decision"], rec["rule"], rec["decided_by"], rec["dispatch_node"]),
                             ("allow", "remote", "dispatch", AUTHZ_ID), rec)
            self.assertEqual(rec["status"], 200)
        self.assertEqual(az.checks(), len(pt.HTTP_VERSIONS))

    def test_deny_relays_status_body_and_type(self):
        az = self.authz()
        self.start(az.port)
        n = 0
        for http in pt.HTTP_VERSIONS:
            for tenant in ("evil", None):
                rid = "dsp-deny-%s-%s" % (http.replace(".", ""), tenant)
                r = self.get("/headers", tenant=tenant, http=http, rid=rid)
                n += 1
                self.assertEqual(r.exit, 0, repr(r))
                self.assertEqual(r.status, 401, "the service's status goes back: %r" % r)
                self.assertEqual(r.body, DENY_BODY, "the service's body goes back")
                self.assertEqual(r.header("content-type"), "text/plain")
                self.assertEqual(r.header("x-request-id"), rid)
                self.assertIsNone(r.header("x-upstream-name"), "the app never saw it")
                rec = self.audit_for(rid)
                self.assertEqual((rec["decision"], rec["decided_by"], rec["status"]),
                                 ("deny", "dispatch", 401), rec)
        self.assertEqual(az.checks(), n)
        self.assertEqual(self.m("picket_dispatch_checks_total", service="authz", result="deny"), n)

    def test_no_store_far_into_cache_control_is_honoured(self):
        # "max-age=30, <300 bytes of other directives>, no-store": the no-store
        # wins wherever it sits in the value, so nothing is cached.
        az = self.authz("--max-age", "30", "--cache-control-extra",
                        "x-pad=" + "p" * 300 + ", no-store")
        self.start(az.port)
        for i in range(4):
            self.assertOK(self.get("/headers", rid="dsp-nostore-%d" % i), "request %d" % i)
        self.assertEqual(az.checks(), 4, "no-store must disable caching")

    def test_cache_ten_sequential_one_check(self):
        az = self.authz("--max-age", "30")
        self.start(az.port)
        for i in range(10):
            r = self.get("/headers", rid="dsp-cache-%d" % i, http=pt.HTTP_VERSIONS[i % len(pt.HTTP_VERSIONS)])
            self.assertOK(r, "request %d" % i)
            self.assertEqual(r.json()["headers"].get("x-authz-user"), "alice",
                             "cached allow still adds the service's headers (request %d)" % i)
        self.assertEqual(az.checks(), 1, "ten identical requests, max-age 30: one check")
        first = self.audit_for("dsp-cache-0")
        self.assertEqual(first["decided_by"], "dispatch")
        self.assertIsNone(first.get("cache_age_ms"), "a fresh check has no cache age: %r" % first)
        ages = []
        for i in range(1, 10):
            rec = self.audit_for("dsp-cache-%d" % i)
            self.assertEqual((rec["decision"], rec["decided_by"], rec["dispatch_node"]),
                             ("allow", "cache", AUTHZ_ID), rec)
            self.assertIsInstance(rec.get("cache_age_ms"), int, rec)
            ages.append(rec["cache_age_ms"])
        self.assertEqual(ages, sorted(ages), "cache age grows")
        self.assertGreaterEqual(ages[0], 0)
        self.assertEqual(self.m("picket_dispatch_cache_total", service="authz", result="hit"), 9)
        self.assertEqual(self.m("picket_dispatch_cache_total", service="authz", result="miss"), 1)
        self.assertEqual(self.m("picket_dispatch_checks_total", service="authz", result="allow"), 1)

    def held_many(self, cli, reqs, hold, coalesced):
        """h2_many() in a thread while the service holds the check (x-user hold-NAME in
        reqs): waits until picket counts `coalesced` waiters on it, releases it, returns
        the results."""
        out = {}

        def run():
            try:
                out["r"] = h2_many(cli, reqs, timeout=120)
            except AssertionError as e:
                out["e"] = e
        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.wait_coalesced(coalesced)
        self.assertTrue(t.is_alive(), "answered while the check was held: %r" % out)
        self.release(hold)
        t.join(150)
        if "e" in out:
            raise out["e"]
        return out["r"]

    def test_coalesce_twenty_concurrent(self):
        # no max-age: nothing is cached, so one check for 20 requests can only be
        # coalescing; the service holds that check until all 20 wait on it
        az = self.authz("--max-age", "0")
        self.start(az.port)
        cli = self.h2()
        res = self.held_many(cli, [("/headers", [("x-tenant", "acme"), ("x-user", "hold-co"),
                                                 ("x-request-id", "dsp-co-%d" % i)])
                                   for i in range(20)], "co", 19)
        self.assertEqual(az.checks(), 1, "20 identical concurrent requests: one check")
        for st, _, body in res:
            self.assertEqual(st, 200, body[:200])
            self.assertEqual(json.loads(body)["headers"].get("x-authz-user"), "alice")
        self.assertEqual(self.m("picket_dispatch_coalesced_total", service="authz"), 19)
        by = [self.audit_for("dsp-co-%d" % i)["decided_by"] for i in range(20)]
        self.assertEqual(set(by), {"dispatch"}, by)
        # the same for a denial: one check, 20 x 401 with the body
        res = self.held_many(cli, [("/headers", [("x-tenant", "evil"), ("x-user", "hold-co2")])
                                   for _ in range(20)], "co2", 38)
        self.assertEqual(az.checks(), 2)
        self.assertEqual([(st, b) for st, _, b in res], [(401, DENY_BODY)] * 20)

    def test_timeout_denies_fast(self):
        # the service never answers (held, never released): only picket's timeout (the
        # 200 ms default) can answer, with a 403; not before the timeout
        az = self.authz()
        self.start(az.port, dispatch={"timeout": None})  # the default: 200ms
        cli = self.h2()
        t0 = time.monotonic()
        st, hs, body, _ = cli.request("/headers", headers=[("x-tenant", "acme"), ("x-user", "hold-never"),
                                                            ("x-request-id", "dsp-to-1")], timeout=60)
        took = time.monotonic() - t0
        self.assertEqual((st, body), (403, UNAVAILABLE))
        self.assertGreaterEqual(took, 0.15, "not before the timeout")
        rec = self.audit_for("dsp-to-1")
        self.assertEqual((rec["decision"], rec["decided_by"], rec["status"]), ("deny", "dispatch", 403))
        self.assertEqual(self.m("picket_dispatch_checks_total", service="authz", result="timeout"), 1)
        self.wait_for("the service to get the check", lambda: az.checks() == 1)


class DispatchH1(DispatchBase, CoreMixin):
    """Service on HTTP/1.1 (ALPN http/1.1) plus everything that does not depend on the
    service's protocol."""

    def cutting_service(self):
        """An HTTP/1.1 authorization service over mTLS (the authz SVID) whose allow
        answers have no length, so that the close ends them: x-tenant "whole" ends with
        a close_notify, "cut" with a bare close (a crash, or a FIN an attacker on the
        path injected). Returns its port."""
        def answer(s):
            head, _ = pt.recv_head(s)
            if head is None:
                return
            s.sendall(b"HTTP/1.1 200 OK\r\nx-authz-user: alice\r\nconnection: close\r\n"
                      b"\r\n" + b"y" * 100)
            if b"x-tenant: whole" in head.lower():
                s.settimeout(2)
                try:
                    s.unwrap()  # the close_notify (the peer's is not waited for)
                except (OSError, ValueError):
                    pass
            s.close()  # "cut": no close_notify
        svc = pt.TlsServer(self.pki, "authz", answer)
        self.addCleanup(svc.stop)
        return svc.port

    def test_answer_cut_without_close_notify_is_no_answer(self):
        # An answer whose end is the connection's is an answer only when that end is
        # clean (the TLS close_notify): a cut one is no answer, so it denies (on_error
        # deny), even though its status said allow.
        self.start(self.cutting_service(), dispatch={"timeout": "5s"})
        r = self.get("/headers", rid="dsp-whole", tenant="whole")
        self.assertOK(r, "a whole allow answer")
        self.assertEqual(r.json()["headers"].get("x-authz-user"), "alice")
        r = self.get("/headers", rid="dsp-cut", tenant="cut")
        self.assertEqual((r.status, r.body), (403, UNAVAILABLE), repr(r))
        rec = self.audit_for("dsp-cut")
        self.assertEqual((rec["decision"], rec["decided_by"], rec["status"]), ("deny", "dispatch", 403))
        self.assertEqual(self.m("picket_dispatch_checks_total", service="authz", result="error"), 1)

    # -- the check request --------------------------------------------------------

    def test_check_request_contract(self):
        az = self.authz()
        self.start(az.port, prefix="/ext/authz/")
        r = self.curl(self.port, "/local/../x/./..//headers?a=1&b=%41", method="POST", data=b"body" * 100,
                      headers=["x-tenant: acme", "x-user: u1", "x-secret: s3cret",
                               "x-request-id: dsp-contract-1",
                               "x-picket-peer-id: spiffe://example.org/ns/default/sa/admin",
                               "x-forwarded-client-cert: By=evil;URI=spiffe://evil/x",
                               "authorization: Bearer xyz"],
                      extra=["--path-as-is"])
        self.assertOK(r)
        last = az.state()["last"]
        self.assertEqual(last["method"], "POST", "same method")
        self.assertEqual(last["path"], "/ext/authz/headers?a=1&b=%41",
                         "URL prefix (trailing / dropped) + normalized path + query")
        self.assertEqual(last["body_len"], 0, "no body in the check")
        self.assertEqual(last["peer_id"], pt.SERVER_ID, "picket presented its own SVID")
        h = last["headers"]
        names = [k for k, _ in h]
        self.assertEqual(hdr_values(h, "x-tenant"), ["acme"])
        self.assertEqual(hdr_values(h, "x-user"), ["u1"])
        self.assertEqual(hdr_values(h, "x-request-id"), ["dsp-contract-1"])
        self.assertEqual(hdr_values(h, "x-picket-peer-id"), [pt.CLIENT_ID],
                         "caller identity from the certificate, never from the client")
        want = "By=%s;Hash=%s;URI=%s" % (pt.SERVER_ID, self.pki.der_sha256("client"), pt.CLIENT_ID)
        self.assertEqual([v.lower() for v in hdr_values(h, "x-forwarded-client-cert")],
                         [want.lower()], "picket's XFCC, not the client's")
        for n in ("x-secret", "authorization", "cookie"):
            self.assertNotIn(n, names, "only allow-listed headers go to the service")
        # another identity is named as such
        self.curl(self.port, "/headers", cert="other", headers=["x-tenant: acme"])
        self.assertEqual(hdr_values(az.state()["last"]["headers"], "x-picket-peer-id"), [pt.OTHER_ID])

    def test_allow_list_of_identity_headers_sends_one_copy(self):
        """Allow-listing a header picket sends anyway (x-request-id,
        x-forwarded-client-cert, x-picket-peer-id) sends it once, with picket's value,
        never a second copy from the request."""
        az = self.authz()
        self.start(az.port, headers=["x-tenant", "x-request-id", "x-forwarded-client-cert",
                                     "x-picket-peer-id"])
        r = self.get("/headers", rid="dsp-dup-1",
                     extra_headers=["x-picket-peer-id: spiffe://example.org/ns/default/sa/admin"])
        self.assertOK(r)
        h = az.state()["last"]["headers"]
        self.assertEqual(hdr_values(h, "x-request-id"), ["dsp-dup-1"], h)
        self.assertEqual(len(hdr_values(h, "x-forwarded-client-cert")), 1, h)
        self.assertEqual(hdr_values(h, "x-picket-peer-id"), [pt.CLIENT_ID], h)

    def test_service_cannot_override_identity_headers(self):
        az = self.authz("--hostile-headers")
        self.start(az.port)
        for http in pt.HTTP_VERSIONS:
            r = self.get("/headers", http=http, rid="dsp-hostile-%s" % http.replace(".", ""))
            self.assertOK(r)
            up = r.json()["headers"]
            self.assertEqual(up.get("x-authz-user"), "alice")
            want = "By=%s;Hash=%s;URI=%s" % (pt.SERVER_ID, self.pki.der_sha256("client"), pt.CLIENT_ID)
            self.assertEqual(str(up.get("x-forwarded-client-cert")).lower(), want.lower(), up)
            self.assertEqual(up.get("x-forwarded-proto"), "https", up)
            self.assertEqual(up.get("x-request-id"), "dsp-hostile-%s" % http.replace(".", ""), up)
            self.assertNotIn("x-picket-peer-id", up, up)
            self.assertNotIn("set-cookie", up, "only x- headers are taken from the answer")
            self.assertNotIn("x-envoy-auth-failure", up)

    def test_service_cannot_set_x_forwarded_host(self):
        """Contract: x-forwarded-* from the service are never added upstream (the whole
        family, x-forwarded-host included, not only -client-cert and -proto)."""
        az = self.authz("--hostile-headers")
        self.start(az.port)
        r = self.get("/headers")
        self.assertOK(r)
        self.assertNotIn("x-forwarded-host", r.json()["headers"])

    # -- the cache ------------------------------------------------------------------

    def test_cache_key_is_what_the_check_carried(self):
        az = self.authz("--max-age", "30", "--deny-max-age", "30")
        self.start(az.port)

        def expect(r, status, checks, msg):
            self.assertEqual(r.status, status, "%s: %r" % (msg, r))
            self.assertEqual(az.checks(), checks, msg)

        expect(self.get("/headers"), 200, 1, "first")
        expect(self.get("/headers"), 200, 1, "same: cached")
        # a different forwarded header value is never served from another's entry
        expect(self.get("/headers", tenant="evil"), 401, 2, "other x-tenant")
        r = self.get("/headers", tenant="evil", http="1.1")
        expect(r, 401, 2, "deny with max-age is cached too")
        self.assertEqual((r.body, r.header("content-type")), (DENY_BODY, "text/plain"),
                         "a cached denial keeps its body and type")
        expect(self.get("/headers", extra_headers=["x-user: bob"]), 200, 3, "x-user added")
        expect(self.get("/headers", extra_headers=["x-user: eve"]), 200, 4, "other x-user")
        expect(self.get("/headers", extra_headers=["x-user: eve"]), 200, 4, "x-user eve cached")
        # headers outside the allow-list are not part of the key
        expect(self.get("/headers", extra_headers=["x-noise: 1"]), 200, 4, "x-noise not in key")
        # identity, path, query, method, authority
        expect(self.get("/headers", cert="other"), 200, 5, "other identity")
        expect(self.get("/headers?q=1"), 200, 6, "query")
        expect(self.get("/status/201"), 201, 7, "path")
        expect(self.get("/headers", extra=["-I"]), 200, 8, "HEAD")
        expect(self.get("/headers", extra_headers=["Host: other.example.org"]), 200, 9, "authority")
        self.assertEqual(r_hdr(az, "x-tenant"), ["acme"])

    def test_no_max_age_every_request_checks(self):
        az = self.authz("--max-age", "0")
        self.start(az.port)
        for i in range(5):
            self.assertOK(self.get("/headers"))
            self.assertEqual(self.get("/headers", tenant="evil").status, 401)
        self.assertEqual(az.checks(), 10, "no Cache-Control: nothing cached")
        self.assertEqual(self.m("picket_dispatch_cache_total", service="authz", result="hit"), 0)

    def _until_rechecked(self, path, ttl_ms, tag, give_up_s):
        """Requests `path` until the cached answer expires and the service is asked again.
        Every answer from the cache must be younger than ttl_ms (picket's own
        cache_age_ms in the audit record); the re-check must come within give_up_s
        (a bound far from ttl_ms, only so a broken expiry fails instead of hanging).
        Returns the ages of the cache hits."""
        ages = []
        deadline = time.monotonic() + give_up_s
        i = 0
        while True:
            rid = "dsp-ttl-%s-%d" % (tag, i)
            i += 1
            self.assertOK(self.get(path, rid=rid))
            rec = self.audit_for(rid)
            if rec["decided_by"] == "dispatch":
                return ages
            self.assertEqual(rec["decided_by"], "cache", rec)
            self.assertLess(rec["cache_age_ms"], ttl_ms, "%s served from a cache entry older "
                            "than %d ms: %r" % (path, ttl_ms, rec))
            ages.append(rec["cache_age_ms"])
            self.assertLess(time.monotonic(), deadline, "%s still cached after %.0fs (ages %s)"
                            % (path, give_up_s, ages[-5:]))

    def test_cache_expiry_and_max_cache_ttl(self):
        az = self.authz("--max-age-for", "/authz/headers?short=1=1", "--max-age", "30")
        self.start(az.port, dispatch={"max_cache_ttl": "1500ms"})
        # max-age 1: never served older than 1 s, then asked again
        self.assertOK(self.get("/headers?short=1"))
        self.assertEqual(az.checks(), 1)
        self._until_rechecked("/headers?short=1", 1000, "short", 20)
        self.assertEqual(az.checks(), 2, "max-age 1 ran out")
        # max-age 30 capped by max_cache_ttl 1.5 s: asked again long before 30 s
        self.assertOK(self.get("/headers?long=1"))
        self.assertEqual(az.checks(), 3)
        self._until_rechecked("/headers?long=1", 1500, "long", 20)
        self.assertEqual(az.checks(), 4, "max-age 30 capped at max_cache_ttl 1.5s")

    def test_cache_lru_bounded_by_cache_entries(self):
        az = self.authz("--max-age", "30")
        self.start(az.port, dispatch={"cache_entries": 2})
        for k in (1, 2, 3):
            self.assertOK(self.get("/headers?k=%d" % k))
        self.assertEqual(az.checks(), 3)
        self.assertOK(self.get("/headers?k=3"))
        self.assertOK(self.get("/headers?k=2"))
        self.assertEqual(az.checks(), 3, "the two most recent are kept")
        self.assertOK(self.get("/headers?k=1"))
        self.assertEqual(az.checks(), 4, "the oldest was evicted")
        self.assertOK(self.get("/headers?k=2"))  # still there (k=3 went for k=1)
        self.assertEqual(az.checks(), 4)
        self.assertOK(self.get("/headers?k=3"))
        self.assertEqual(az.checks(), 5)
        self.assertEqual(self.m("picket_dispatch_cache_total", service="authz", result="eviction"), 3)

    def test_huge_max_age_is_capped_not_overflowed(self):
        """A max-age beyond 2^63/1000 s is capped at max_cache_ttl like any long one
        (no signed overflow: UBSan would halt picket, a Release build would wrap to a
        negative TTL and cache nothing)."""
        az = self.authz("--max-age", "9223372036854775807")
        self.start(az.port, dispatch={"max_cache_ttl": "30s"})
        r = [self.get("/headers").status for _ in range(3)]
        self.assertIsNone(self.proc.sanitizer_report())
        self.assertEqual(r, [200] * 3)
        self.assertEqual(az.checks(), 1, "cached for max_cache_ttl")

    def test_cache_zero_entries_caches_nothing(self):
        az = self.authz("--max-age", "30")
        self.start(az.port, dispatch={"cache_entries": 0})
        for _ in range(3):
            self.assertOK(self.get("/headers"))
        self.assertEqual(az.checks(), 3)

    def test_new_policy_revision_empties_cache(self):
        az = self.authz("--max-age", "30")
        self.start(az.port)
        self.assertOK(self.get("/headers"))
        self.assertOK(self.get("/headers"))
        self.assertEqual(az.checks(), 1)
        pt.write_policy(self.policy_path, RULES, revision=2)
        self.proc.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            st, _, body = pt.http_get_plain(self.admin, "/policy")
            if st == 200 and json.loads(body).get("revision") == 2:
                break
            time.sleep(0.1)
        else:
            self.fail("revision 2 not loaded")
        self.assertOK(self.get("/headers", rid="dsp-rev-1"))
        self.assertEqual(az.checks(), 2, "a new revision starts from an empty cache")
        self.assertEqual(self.audit_for("dsp-rev-1")["bundle_revision"], 2)
        self.assertOK(self.get("/headers"))
        self.assertEqual(az.checks(), 2)

    def test_one_cache_for_all_workers(self):
        """The decision cache is the process's, not a worker's: 10 identical requests on
        10 connections (spread over 2 workers by SO_REUSEPORT) make one check."""
        az = self.authz("--max-age", "30")
        self.start(az.port, workers=2)
        for _ in range(10):
            self.assertOK(self.get("/headers"))
        self.assertEqual(az.checks(), 1, "one cache for the process")
        self.assertEqual(self.m("picket_dispatch_cache_total", service="authz", result="hit"), 9)

    # -- coalescing over separate connections, and clients that leave -------------------

    def test_coalesce_separate_connections(self):
        az = self.authz("--max-age", "0")
        self.start(az.port)
        ctx = pt.tls_context(self.pki, alpn=("http/1.1",))
        conns = []
        for _ in range(20):  # connect first, so all requests go out within a few ms
            c = HTTPSConnection("localhost", self.port, context=ctx, timeout=120)
            c.connect()
            conns.append(c)
        self.addCleanup(lambda: [c.close() for c in conns])
        out = [None] * 20

        def one(i):
            try:
                conns[i].request("GET", "/headers", headers={"x-tenant": "acme", "x-user": "hold-sep"})
                r = conns[i].getresponse()
                out[i] = (r.status, json.loads(r.read())["headers"].get("x-authz-user"))
            except Exception as e:  # noqa: BLE001
                out[i] = repr(e)
        ts = [threading.Thread(target=one, args=(i,)) for i in range(20)]
        for t in ts:
            t.start()
        self.wait_coalesced(19)  # all 20 wait on the one held check
        self.release("sep")
        for t in ts:
            t.join(120)
        self.assertEqual(out, [(200, "alice")] * 20)
        self.assertEqual(az.checks(), 1, "20 connections, one worker, one check")

    def test_coalesce_across_workers(self):
        """20 concurrent identical requests on 20 connections, 2 workers: one check;
        the worker that did not send it gets the answer from the one that did (the
        check is held at the service until all 20 wait on it)."""
        az = self.authz("--max-age", "0")
        self.start(az.port, workers=2)
        ctx = pt.tls_context(self.pki, alpn=("http/1.1",))
        conns = []
        for _ in range(20):
            c = HTTPSConnection("localhost", self.port, context=ctx, timeout=120)
            c.connect()
            conns.append(c)
        self.addCleanup(lambda: [c.close() for c in conns])
        out = [None] * 20

        def one(i):
            try:
                conns[i].request("GET", "/headers", headers={"x-tenant": "acme", "x-user": "hold-xw"})
                r = conns[i].getresponse()
                out[i] = (r.status, json.loads(r.read())["headers"].get("x-authz-user"))
            except Exception as e:  # noqa: BLE001
                out[i] = repr(e)
        ts = [threading.Thread(target=one, args=(i,)) for i in range(20)]
        for t in ts:
            t.start()
        self.wait_coalesced(19)  # all 20 wait on the one held check, on both workers
        self.release("xw")
        for t in ts:
            t.join(120)
        self.assertEqual(out, [(200, "alice")] * 20)
        self.assertEqual(az.checks(), 1, "20 connections, two workers, one check")

    def bg_get(self, path, headers):
        """curl in the background (HTTP/1.1, no time limit of its own): a client that
        can be made to leave (kill) at a moment of the test's choosing."""
        cmd = pt.curl_args(self.port, path, self.pki, http="1.1")
        cmd[1:1] = ["--max-time", "120", "-o", "/dev/null"] + sum((["-H", h] for h in headers), [])
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        self.addCleanup(lambda: p.poll() is None and (pt._kill_group(p), p.wait(5)))
        return p

    def test_client_leaves_while_check_in_flight(self):
        az = self.authz("--max-age", "0")
        self.start(az.port)
        cli = self.h2()
        # two coalesced streams, one reset while waiting: the other still gets its answer
        sid1 = cli.conn.get_next_available_stream_id()
        hdrs = [(":method", "GET"), (":scheme", "https"), (":authority", "localhost"),
                (":path", "/headers"), ("x-tenant", "acme"), ("x-user", "hold-p1")]
        cli.conn.send_headers(sid1, hdrs, end_stream=True)
        sid2 = sid1 + 2
        cli.conn.send_headers(sid2, hdrs, end_stream=True)
        cli.sock.sendall(cli.conn.data_to_send())
        self.wait_coalesced(1)  # both wait on the one held check
        cli.conn.reset_stream(sid1)
        cli.sock.sendall(cli.conn.data_to_send())
        self.release("p1")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not cli.streams.get(sid2, {}).get("done"):
            cli._pump(0.2)
        st = cli.streams.get(sid2)
        self.assertTrue(st and st["done"], "the remaining waiter was answered")
        self.assertEqual(dict(st["headers"]).get(":status"), "200")
        # a client that leaves altogether while its check is held, twice: the second
        # joins the first one's check, still in flight although nobody waits on it
        p2 = ["x-tenant: acme", "x-user: hold-p2"]
        first = self.bg_get("/headers", p2)
        self.wait_for("the second check at the service", lambda: az.checks() == 2)
        pt._kill_group(first)
        first.wait(10)
        second = self.bg_get("/headers", p2)
        self.wait_coalesced(2)
        pt._kill_group(second)
        second.wait(10)
        self.release("p2")
        # their check comes back to nobody (the service has sent both answers)
        self.wait_for("the service's answers", lambda: az.state()["answered"] == 2)
        self.assertOK(self.get("/headers"))
        self.assertTrue(self.proc.alive())
        self.assertEqual(az.checks(), 3)

    # -- failures ---------------------------------------------------------------------

    def test_service_down_denies_fast(self):
        # timeout 60 s: a 403 with result=error (not timeout) can only be the refused
        # connect answered at once
        dead = pt.free_port()
        self.start(dead, dispatch={"timeout": "60s"})
        for http in pt.HTTP_VERSIONS:
            r = self.get("/headers", http=http, rid="dsp-down-" + http.replace(".", ""))
            self.assertEqual((r.status, r.body), (403, UNAVAILABLE), repr(r))
        rec = self.audit_for("dsp-down-2" if "2" in pt.HTTP_VERSIONS else "dsp-down-11")
        self.assertEqual((rec["decision"], rec["decided_by"], rec["status"]), ("deny", "dispatch", 403))
        self.assertEqual(self.m("picket_dispatch_checks_total", service="authz", result="error"),
                         len(pt.HTTP_VERSIONS))
        self.assertEqual(self.m("picket_dispatch_checks_total", service="authz", result="timeout"), 0)

    def test_on_error_allow_forwards(self):
        az = self.authz("--max-age", "30")
        self.start(az.port, dispatch={"timeout": "200ms", "on_error": "allow"})
        held = ["x-user: hold-never"]  # the service never answers these
        r = self.get("/headers", rid="dsp-onerr-1", extra_headers=held)
        self.assertOK(r, "on_error allow: forwarded on timeout")
        self.assertNotIn("x-authz-user", r.json()["headers"], "no answer, no service headers")
        rec = self.audit_for("dsp-onerr-1")
        self.assertEqual((rec["decision"], rec["decided_by"]), ("allow", "dispatch"), rec)
        self.assertEqual(self.m("picket_dispatch_checks_total", service="authz", result="timeout"), 1)
        # an error is never cached: the next request asks again
        self.assertOK(self.get("/headers", extra_headers=held))
        self.assertEqual(self.m("picket_dispatch_cache_total", service="authz", result="hit"), 0)
        self.wait_for("the second check at the service", lambda: az.checks() == 2)

    def test_deadline_cuts_the_wait_for_the_service(self):
        """The request deadline (listeners[].timeout) runs through the decision: a check
        the service holds ends with 504 request_deadline at the deadline, not at the
        service's 30 s timeout; the held check is forgotten, and a later answer to it is
        harmless (the service is released and the listener still serves)."""
        az = self.authz()
        self.start(az.port, dispatch={"timeout": "30s"}, listener_timeout="700ms")
        for http in pt.HTTP_VERSIONS:
            t0 = time.monotonic()
            r = self.get("/headers", http=http, rid="dsp-dl-" + http.replace(".", ""),
                         extra_headers=["x-user: hold-dl"], timeout=60)
            elapsed = time.monotonic() - t0
            self.assertEqual((r.status, r.body), (504, b"request deadline exceeded\n"), repr(r))
            self.assertGreaterEqual(elapsed, 0.65, "before the deadline (%.2fs)" % elapsed)
            self.assertLess(elapsed, 20, "the service's timeout, not the deadline")
        self.assertEqual(self.m("picket_upstream_failures_total", reason="request_deadline"),
                         len(pt.HTTP_VERSIONS))
        self.release("dl")
        self.wait_for("the held checks answered", lambda: az.checks() >= 1)
        self.assertOK(self.get("/headers"))

    def test_on_error_allow_service_down(self):
        self.start(pt.free_port(), dispatch={"on_error": "allow"})
        self.assertOK(self.get("/headers"))

    def test_service_error_status_is_a_denial(self):
        """Any non-200 answer is the service's word: relayed, even with on_error allow
        (only a missing answer is an error)."""
        az = self.authz()
        self.start(az.port, dispatch={"on_error": "allow"})
        for code in (403, 500, 503, 302, 204, 201):
            r = self.get("/headers", tenant="status-%d" % code)
            self.assertEqual(r.status, code, repr(r))
            if code != 204:
                self.assertEqual(r.body, b"authz says %d\n" % code)
            self.assertIsNone(r.header("x-upstream-name"), "never forwarded: %r" % r)
        self.assertEqual(self.m("picket_dispatch_checks_total", service="authz", result="deny"), 6)

    def _untrusted(self, cert):
        # timeout 60 s: the 403 comes from the refused server identity (result=error)
        az = self.authz(cert=cert)
        self.start(az.port, dispatch={"timeout": "60s"})
        for http in pt.HTTP_VERSIONS:
            r = self.get("/headers", http=http)
            self.assertEqual((r.status, r.body), (403, UNAVAILABLE), repr(r))
        self.assertEqual(self.m("picket_dispatch_checks_total", service="authz", result="error"),
                         len(pt.HTTP_VERSIONS))
        self.wait_for("the service to see picket's handshake",
                      lambda: az.state()["handshakes_failed"] + az.state()["handshakes_ok"] >= 1)
        st = az.state()
        self.assertEqual(st["checks"], 0, "no check request may reach an untrusted service: %r" % st)
        self.assertGreaterEqual(st["handshakes_failed"] + st["handshakes_ok"], 1,
                                "picket did try to connect")
        self.assertEqual(self.m("picket_dispatch_checks_total", service="authz", result="allow"), 0)

    def test_wrong_spiffe_id_never_trusted(self):
        self._untrusted("authz-impostor")

    def test_foreign_ca_never_trusted(self):
        self._untrusted("authz-foreign")

    def test_local_rules_never_dispatch(self):
        az = self.authz()
        self.start(az.port)
        cases = [("/", 200, "local-allow"), ("/local/x", 404, "local-allow"),
                 ("/admin/x", 403, "no-admin"), ("/nomatch", 403, "default")]
        for i, (path, status, rule) in enumerate(cases):
            r = self.get(path, rid="dsp-local-%d" % i)
            self.assertEqual(r.status, status, "%s: %r" % (path, r))
            rec = self.audit_for("dsp-local-%d" % i)
            self.assertEqual((rec["rule"], rec["decided_by"], rec["dispatch_node"]),
                             (rule, "local", None), rec)
            self.assertIsNone(rec.get("cache_age_ms"), rec)
        self.assertEqual(az.checks(), 0, "local allow/deny rules never ask the service")
        self.assertEqual(az.state()["handshakes_ok"], 0)

    # -- records ------------------------------------------------------------------------

    def test_audit_cache_age_and_metrics(self):
        az = self.authz("--max-age", "30")
        self.start(az.port)
        t1 = time.monotonic()
        self.assertOK(self.get("/headers", rid="dsp-am-1"))
        t2 = time.monotonic()
        time.sleep(0.4)  # spacing only: the bounds below are measured, not assumed
        t3 = time.monotonic()
        self.assertOK(self.get("/headers", rid="dsp-am-2"))
        t4 = time.monotonic()
        self.assertEqual(self.get("/headers", tenant="evil", rid="dsp-am-3").status, 401)
        a1, a2, a3 = (self.audit_for("dsp-am-%d" % i) for i in (1, 2, 3))
        self.assertEqual(a1["decided_by"], "dispatch")
        self.assertEqual(a2["decided_by"], "cache")
        # the entry was made between t1 and t2 and read between t3 and t4 (1 ms of
        # rounding either way)
        self.assertGreaterEqual(a2["cache_age_ms"], int((t3 - t2) * 1000) - 1, a2)
        self.assertLessEqual(a2["cache_age_ms"], int((t4 - t1) * 1000) + 1, a2)
        self.assertEqual(a3["decided_by"], "dispatch")
        for a in (a1, a2, a3):
            self.assertEqual(a["dispatch_node"], AUTHZ_ID)
            self.assertEqual(a["rule"], "remote")
            self.assertEqual(a["bundle_revision"], 1)
        samples = pt.scrape_metrics(self.admin)
        g = lambda n, **l: pt.metric(samples, n, default=None, service="authz", **l)  # noqa: E731
        self.assertEqual(g("picket_dispatch_checks_total", result="allow"), 1)
        self.assertEqual(g("picket_dispatch_checks_total", result="deny"), 1)
        self.assertEqual(g("picket_dispatch_cache_total", result="hit"), 1)
        self.assertEqual(g("picket_dispatch_cache_total", result="miss"), 2)
        self.assertEqual(g("picket_dispatch_check_duration_seconds_count"), 2)
        self.assertIsNotNone(g("picket_dispatch_check_duration_seconds_bucket", le="+Inf"))
        self.assertGreater(g("picket_dispatch_check_duration_seconds_sum"), 0)

    # -- gRPC ---------------------------------------------------------------------------

    def test_grpc_through_dispatch(self):
        import grpc
        import grpc_app
        az = self.authz("--max-age", "0")
        self.start(az.port, upstream="grpc")
        ch = grpc_app.secure_channel(self.port, self.pki.ca, self.pki.cert("client"),
                                     self.pki.key("client"))
        self.addCleanup(ch.close)
        fn = ch.unary_unary("/picket.test.Echo/Unary")
        big = bytes(range(256)) * 1024
        self.assertEqual(fn(big, metadata=[("x-tenant", "acme")], timeout=10), big,
                         "allowed: the request body waited for the check and went up whole")
        for tenant in ("evil", "status-503", "status-500"):
            with self.assertRaises(grpc.RpcError) as cm:
                fn(b"hi", metadata=[("x-tenant", tenant)], timeout=10)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.PERMISSION_DENIED, tenant)
        last = az.state()["last"]
        self.assertEqual((last["method"], last["path"], last["body_len"]),
                         ("POST", "/authz/picket.test.Echo/Unary", 0))
        self.assertEqual(az.checks(), 4)


def r_hdr(az, name):
    return hdr_values(az.state()["last"]["headers"], name)


class DispatchH2(DispatchBase, CoreMixin):
    """Service on HTTP/2 (ALPN h2 only)."""
    SERVICE_ARGS = ["--h2"]
    PROTO = "h2"

    def test_h2_service_multiplexes_distinct_checks(self):
        # 10 distinct checks, held by the service until all 10 are there at once: a
        # picket that sent them one after the other would never get there
        az = self.authz("--max-age", "0")
        self.start(az.port)
        cli = self.h2()
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("r", h2_many(
            cli, [("/headers?i=%d" % i, [("x-tenant", "acme"), ("x-user", "hold-mx")])
                  for i in range(10)], timeout=120)), daemon=True)
        t.start()
        self.wait_for("10 checks in flight at once", lambda: az.checks() == 10)
        self.assertEqual(az.state()["answered"], 0)
        self.release("mx")
        t.join(150)
        self.assertEqual([st for st, _, _ in out.get("r", [])], [200] * 10)
        self.assertEqual(az.checks(), 10, "distinct paths are distinct checks")
        self.assertEqual(az.state()["handshakes_ok"], 1, "one multiplexed h2 connection")


class DispatchNoALPN(DispatchBase):
    """A service that offers no ALPN at all: picket falls back to HTTP/1.1."""
    SERVICE_ARGS = ["--no-alpn"]

    def test_fallback_to_http11(self):
        az = self.authz("--max-age", "0")
        self.start(az.port)
        r = self.get("/headers")
        self.assertOK(r)
        self.assertEqual(r.json()["headers"].get("x-authz-user"), "alice")
        self.assertEqual(self.get("/headers", tenant="evil").status, 401)
        self.assertEqual(az.state()["protocols"], {"HTTP/1.1": 2})


if __name__ == "__main__":
    pt.main(timeout=240)
