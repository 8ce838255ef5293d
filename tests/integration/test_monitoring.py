#!/usr/bin/python3
"""deploy/kubernetes/monitoring/ against the real binary (issue 17, item 3): every
metric name the PrometheusRule's alerts and the Grafana dashboard's panels use exists
in picket's /metrics output, scraped on metrics.bind.

Most of picket's series appear when they first count something, so two pickets are
driven through what the alerts are about before the scrape:

  - A: a policy file with allow, deny and dispatch rules, an authorization service
    (authz_app.py, answers cached), a route to a closed port, an app probe and
    metrics.bind: allowed, denied, dispatched (twice: a cache hit) and failing
    requests, a client without a certificate, then a policy file that does not load;
  - B: a policy from `picket control serve`, then a bundle it refuses (a rollback).

The names are taken from the manifests themselves (every picket_* in an `expr`), a
histogram's _bucket/_sum/_count reduced to its family, so a renamed metric or a typo
in a panel fails here. The manifests are also checked for shape: the PodMonitor
scrapes the port the injector declares, and each alert has a summary.

    PICKET_BIN=$PWD/build-test/picket /usr/bin/python3 tests/integration/test_monitoring.py
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import picket_test as pt  # noqa: E402
import test_control as tc  # noqa: E402
import test_dispatch as td  # noqa: E402
import test_scrape as ts  # noqa: E402

MON = os.path.join(pt.REPO, "deploy", "kubernetes", "monitoring")
NAME = re.compile(r"\bpicket_[a-z0-9_]+")
HIST_SUFFIX = re.compile(r"_(bucket|sum|count)$")

RULES = [
    {"id": "no-admin", "action": "deny", "paths": ["/admin/**"]},
    {"id": "local-allow", "action": "allow", "paths": ["/", "/down/**"]},
    {"id": "remote", "action": "dispatch", "dispatch": "authz", "paths": ["/headers"]},
]


def load_yaml(path):
    yaml = pt.require_module("yaml", "python3-yaml")
    with open(path) as f:
        return yaml.safe_load(f)


def rule_exprs():
    doc = load_yaml(os.path.join(MON, "prometheusrule.yaml"))
    assert doc["kind"] == "PrometheusRule", doc["kind"]
    out = []
    for g in doc["spec"]["groups"]:
        for r in g["rules"]:
            assert r.get("alert") and r.get("expr"), r
            assert r["annotations"].get("summary"), r["alert"]
            out.append((r["alert"], r["expr"]))
    return out


def dashboard_exprs():
    with open(os.path.join(MON, "grafana-dashboard.json")) as f:
        dash = json.load(f)
    out = []
    for p in dash["panels"]:
        for t in p["targets"]:
            out.append((p["title"], t["expr"]))
    for v in dash["templating"]["list"]:
        if v.get("type") == "query":
            out.append(("variable " + v["name"], v["definition"]))
    return out


def names_in(exprs):
    """{metric family: [where it is used]}"""
    out = {}
    for where, expr in exprs:
        for n in NAME.findall(expr):
            out.setdefault(n, []).append(where)
    return out


def families(text):
    """Metric families with at least one sample in an exposition, and their types."""
    types, sampled = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ", 3)
            types[name] = typ
        elif line and not line.startswith("#"):
            sampled.add(re.split(r"[{ ]", line, 1)[0])
    out = set()
    for s in sampled:
        base = HIST_SUFFIX.sub("", s)
        out.add(base if types.get(base) == "histogram" else s)
    return out, types


class MonitoringTest(pt.TestCase):
    SERVICE_ARGS = []  # for td.DispatchBase.authz
    # the control-plane helpers of test_control (its tests are not run here)
    sign = tc.ControlTest.sign
    publish = tc.ControlTest.publish
    control = tc.ControlTest.control
    _stop_control = tc.ControlTest._stop_control
    sidecar = tc.ControlTest.sidecar
    policy_json = tc.ControlTest.policy_json
    wait_for = tc.ControlTest.wait_for
    wait_revision = tc.ControlTest.wait_revision

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.keys = tc.material(cls.pki)
        td.authz_pki(cls.pki)

    def setUp(self):
        super().setUp()
        self.cpdir = os.path.join(self.tmp, "bundles")
        self.stage = os.path.join(self.tmp, "stage")
        os.makedirs(self.cpdir)
        os.makedirs(self.stage)
        self.up_port = self.upstream("h1")
        self.nsigned = 0

    def scrape(self, port):
        st, _, body = ts.get("127.0.0.1", port, "/metrics")
        self.assertEqual(st, 200)
        return body.decode()

    def run_a(self):
        """File policy, dispatch, a failing route, an app probe; the metrics scraped on
        metrics.bind after the traffic."""
        authz = td.DispatchBase.authz(self, "--max-age", "60")
        up = self.upstream("h2c", name="app")
        policy = pt.write_policy(os.path.join(self.tmp, "policy.json"), RULES)
        path, cfg, port, admin = self.config(pt.upstream_url("h2c", up),
                                             policy={"file": policy}, name="a.json")
        cfg["listeners"][0]["routes"] = [
            {"path_prefix": "/down/", "upstream": "http://127.0.0.1:%d" % ts_closed_port()}]
        cfg["dispatch"] = {"authz": {"url": "https://127.0.0.1:%d/authz" % authz.port,
                                     "server_id": td.AUTHZ_ID, "timeout": "3s",
                                     "cache_entries": 100, "on_error": "deny",
                                     "headers": ["x-tenant"]}}
        probes_port, metrics_port = pt.free_port(), pt.free_port()
        cfg["probes"] = {"bind": "127.0.0.1:%d" % probes_port,
                         "targets": {"app": {"tcp": "127.0.0.1:%d" % up}}}
        cfg["metrics"] = {"bind": "0.0.0.0:%d" % metrics_port}
        pt.write_config(path, cfg)
        p = self.picket(path, inbound_port=port, admin_port=admin)

        self.assertEqual(self.curl(port, "/").status, 200)
        self.assertEqual(self.curl(port, "/admin/x").status, 403)
        for _ in range(2):  # the second one is answered from the cache
            r = self.curl(port, "/headers", headers=["x-tenant: acme"])
            self.assertEqual(r.status, 200, r)
        self.assertEqual(self.curl(port, "/headers", headers=["x-tenant: other"]).status, 401)
        self.assertEqual(self.curl(port, "/down/x").status, 502)
        self.assertEqual(self.curl(port, "/", cert=None).status, 0)  # no client certificate
        self.assertEqual(ts.get("127.0.0.1", probes_port, "/app-health/app")[0], 200)
        # a policy file that does not load (the running one stays)
        since = len(p.stderr())
        with open(policy, "w") as f:
            f.write("{not json")
        p.signal(signal.SIGHUP)
        self.assertIsNotNone(pt.wait_log_event(p, "policy_refused", since=since))
        self.assertEqual(pt.metric(pt.scrape_metrics(admin), "picket_dispatch_cache_total",
                                   service="authz", result="hit"), 1)
        return self.scrape(metrics_port)

    def run_b(self):
        """Policy from the control plane, then a bundle it refuses."""
        self.publish(self.sign(tc.RULES_A, 5))
        cp = self.control()
        p = self.sidecar(cp.port, name="b.json")
        self.wait_revision(p, 5)
        since = len(p.stderr())
        self.publish(self.sign(tc.RULES_B, 4))
        self.assertIsNotNone(pt.wait_log_event(p, "policy_refused", since=since, timeout=30,
                                               pred=lambda o: o.get("reason") ==
                                               "revision_rollback"))
        return pt.http_get_plain(p.admin, "/metrics")[2].decode()

    def test_every_metric_named_exists(self):
        used = names_in(rule_exprs() + dashboard_exprs())
        self.assertGreaterEqual(len(used), 15, sorted(used))  # the extraction works
        fa, types = families(self.run_a())
        fb, types_b = families(self.run_b())
        have = fa | fb
        types.update(types_b)
        missing = {n: w for n, w in used.items()
                   if n not in have and not (HIST_SUFFIX.search(n) and
                                             types.get(HIST_SUFFIX.sub("", n)) == "histogram" and
                                             HIST_SUFFIX.sub("", n) in have)}
        self.assertEqual(missing, {}, "named in deploy/kubernetes/monitoring but not in "
                                      "picket's /metrics: %r" % missing)
        # a histogram is queried through its _bucket series, never by its bare name
        for n in used:
            self.assertNotEqual(types.get(n), "histogram", "%s used bare in %r" % (n, used[n]))

    def test_manifest_shapes(self):
        pm = load_yaml(os.path.join(MON, "podmonitor.yaml"))
        self.assertEqual(pm["kind"], "PodMonitor")
        ep = pm["spec"]["podMetricsEndpoints"]
        self.assertEqual([(e["port"], e["path"]) for e in ep], [("picket-metrics", "/metrics")])
        # the port name is the one the injector declares, on the port it annotates
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
               "spec": {"containers": [{"name": "web", "image": "web:1"}]}}
        r = subprocess.run([pt.picket_bin(), "inject", "-"], input=json.dumps(pod).encode(),
                           capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        obj = json.loads(r.stdout)
        sc = [c for c in obj["spec"]["initContainers"] if c["name"] == "picket"][0]
        ports = {p["name"]: p["containerPort"] for p in sc["ports"]}
        self.assertEqual(str(ports["picket-metrics"]),
                         obj["metadata"]["annotations"]["prometheus.io/port"])
        with open(os.path.join(MON, "grafana-dashboard.json")) as f:
            dash = json.load(f)
        titles = [p["title"] for p in dash["panels"]]
        for want in ("Requests by status", "Decisions by rule", "Decisions by decider",
                     "Refusal reasons", "Policy revision", "Policy age", "SVID expiry",
                     "Request latency (p50, p99)"):
            self.assertIn(want, titles)
        self.assertEqual(len(set(p["id"] for p in dash["panels"])), len(dash["panels"]))
        alerts = [a for a, _ in rule_exprs()]
        for want in ("PicketPolicyStale", "PicketPolicyRefused", "PicketSVIDExpiringSoon",
                     "PicketHandshakeRefusalsJump", "PicketDenialsJump",
                     "PicketUpstreamFailures"):
            self.assertIn(want, alerts)


def ts_closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


if __name__ == "__main__":
    pt.main()
