#!/usr/bin/python3
"""Kubernetes fit of `picket inject` (issue 17, items 2 and 4), CLI and webhook:

  - a Deployment with named-port httpGet, tcpSocket and grpc probes: the probes point
    at picket's probes port (/app-health/<container>/<kind>), timings kept, the original
    targets in the sidecar's PICKET_APP_PROBES; metrics on 15090 with the prometheus.io
    annotations; picket.dev/rewrite-probes: "false" keeps the probes;
  - a hostNetwork pod is not injected: the webhook allows it unchanged with a
    `warnings` entry, the CLI says why on stderr;
  - the sidecar goes first among initContainers (after the config writer);
  - injecting again is a no-op;
  - for every one of them the webhook's JSONPatch, applied with python3-jsonpatch to
    the original, equals the CLI's output;
  - end to end: the injected Deployment, run as the sidecar's args and env say (the
    kubelet simulated: its probes sent to the pod IP, here the machine's address),
    has passing probes while the app is up, failing ones once it is down, and
    metrics scrapable on the metrics port.

    PICKET_BIN=$PWD/build-test/picket /usr/bin/python3 tests/integration/test_inject_k8s.py
"""
import base64
import copy
import http.client
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import picket_test as pt  # noqa: E402
import test_inject as ti  # noqa: E402
import test_scrape as ts  # noqa: E402


def app_deployment(http_port=8080, grpc_port=9090, annotations=None):
    tmeta = {"labels": {"app": "web"}}
    if annotations:
        tmeta["annotations"] = annotations
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": tmeta,
                "spec": {
                    "initContainers": [{"name": "migrate", "image": "example/migrate:1"}],
                    "containers": [{
                        "name": "web", "image": "example/web:1",
                        "ports": [{"name": "http", "containerPort": http_port},
                                  {"name": "grpc", "containerPort": grpc_port}],
                        "livenessProbe": {"httpGet": {"path": "/status/200", "port": "http",
                                                      "httpHeaders": [{"name": "X-Probe",
                                                                       "value": "$(live)"}]},
                                          "periodSeconds": 5, "timeoutSeconds": 2,
                                          "failureThreshold": 4},
                        "readinessProbe": {"tcpSocket": {"port": "http"},
                                           "initialDelaySeconds": 1},
                        "startupProbe": {"grpc": {"port": grpc_port},
                                         "failureThreshold": 30, "periodSeconds": 1},
                    }, {
                        "name": "worker", "image": "example/worker:1",
                        "livenessProbe": {"exec": {"command": ["/bin/true"]}},
                    }],
                },
            },
        },
    }


HOST_POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "node-agent", "namespace": "shop", "labels": {"app": "agent"}},
    "spec": {"hostNetwork": True, "containers": [{"name": "agent", "image": "example/agent:1"}]},
}

INIT_POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "db-0", "namespace": "shop", "labels": {"app": "db"}},
    "spec": {"initContainers": [{"name": "schema", "image": "example/schema:1"},
                                {"name": "seed", "image": "example/seed:1"}],
             "containers": [{"name": "db", "image": "example/db:1",
                             "readinessProbe": {"tcpSocket": {"port": 5432}}}]},
}


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def kube_env(value):
    """An env value as the container sees it: Kubernetes turns "$$" into "$"."""
    return value.replace("$$", "$")


class InjectK8sFilter(ti.InjectCase):
    def inject(self, obj, *args):
        rc, out, err = self.run_inject(list(args) + ["-"], json.dumps(obj).encode())
        self.assertEqual(rc, 0, err)
        return json.loads(out), err

    def test_probes_rewritten(self):
        dep = app_deployment()
        obj, _ = self.inject(dep)
        self.check_sidecar(obj)
        spec = ti.pod_spec(obj)
        web = spec["containers"][0]
        for field, kind in (("livenessProbe", "livez"), ("readinessProbe", "readyz"),
                            ("startupProbe", "startupz")):
            probe = web[field]
            self.assertEqual(probe["httpGet"], {"path": "/app-health/web/%s" % kind,
                                                "port": 15021, "scheme": "HTTP"})
            # every other member as it was
            before = dict(dep["spec"]["template"]["spec"]["containers"][0][field])
            for h in ("httpGet", "tcpSocket", "grpc"):
                before.pop(h, None)
            self.assertEqual({k: v for k, v in probe.items() if k != "httpGet"}, before)
        self.assertEqual(spec["containers"][1], dep["spec"]["template"]["spec"]["containers"][1])
        self.assertEqual(web["ports"], dep["spec"]["template"]["spec"]["containers"][0]["ports"])
        targets = json.loads(kube_env(env_of(ti.sidecar(obj))["PICKET_APP_PROBES"]))
        self.assertEqual(targets, {
            "web/livez": {"http": "http://127.0.0.1:8080/status/200",
                          "headers": {"X-Probe": "$(live)"}, "timeout": "2s"},
            "web/readyz": {"tcp": "127.0.0.1:8080", "timeout": "1s"},
            "web/startupz": {"grpc": "127.0.0.1:9090", "service": "", "timeout": "1s"},
        })
        ann = ti.pod_meta(obj)["annotations"]
        self.assertEqual((ann["prometheus.io/scrape"], ann["prometheus.io/port"],
                          ann["prometheus.io/path"]), ("true", "15090", "/metrics"))

    def test_example_app_as_documented(self):
        """deploy/kubernetes/example-app.yaml through the injector config the webhook
        ships with: its ordinary probes are rewritten, its targets handed over."""
        yaml = pt.require_module("yaml", "python3-yaml")
        with open(os.path.join(pt.REPO, "deploy", "kubernetes", "example-app.yaml")) as f:
            dep = [d for d in yaml.safe_load_all(f) if d and d["kind"] == "Deployment"][0]
        obj, _ = self.inject(dep, "--config", ti.INJECTOR_CONFIG)
        app = ti.pod_spec(obj)["containers"][0]
        self.assertEqual(app["readinessProbe"], {
            "httpGet": {"path": "/app-health/app/readyz", "port": 15021, "scheme": "HTTP"},
            "periodSeconds": 5})
        self.assertEqual(app["livenessProbe"]["httpGet"]["path"], "/app-health/app/livez")
        self.assertEqual(app["livenessProbe"]["failureThreshold"], 3)
        self.assertEqual(json.loads(kube_env(env_of(ti.sidecar(obj))["PICKET_APP_PROBES"])), {
            "app/readyz": {"http": "http://127.0.0.1:8080/health", "timeout": "1s"},
            "app/livez": {"tcp": "127.0.0.1:8080", "timeout": "1s"}})
        self.assertEqual(ti.pod_meta(obj)["annotations"]["prometheus.io/port"], "15090")

    def test_rewrite_probes_false(self):
        dep = app_deployment(annotations={"picket.dev/rewrite-probes": "false"})
        obj, _ = self.inject(dep)
        self.check_sidecar(obj)
        self.assertEqual(ti.pod_spec(obj)["containers"], dep["spec"]["template"]["spec"]["containers"])
        self.assertNotIn("PICKET_APP_PROBES", env_of(ti.sidecar(obj)))

    def test_refused_probe(self):
        dep = app_deployment()
        dep["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] = "admin"
        rc, out, err = self.run_inject(["-"], json.dumps(dep).encode())
        self.assertEqual((rc, out), (1, b""))
        self.assertIn('"admin" is not the name of one of the container\'s ports', err)

    def test_host_network(self):
        rc, out, err = self.run_inject(["-"], json.dumps(HOST_POD).encode())
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out), HOST_POD)
        self.assertIn("picket inject: Pod node-agent: not injected: hostNetwork: true", err)
        self.assertIn("not injected (host_network)", err)
        rc, patch, err = self.run_inject(["--patch", "-"], json.dumps(HOST_POD).encode())
        self.assertEqual((rc, json.loads(patch)), (0, []))
        # in a List, the others are injected and the reason is still said
        lst = {"apiVersion": "v1", "kind": "List", "items": [HOST_POD, INIT_POD]}
        rc, out, err = self.run_inject(["-"], json.dumps(lst).encode())
        self.assertEqual(rc, 0, err)
        items = json.loads(out)["items"]
        self.assertEqual(items[0], HOST_POD)
        self.check_sidecar(items[1])
        self.assertIn("hostNetwork: true", err)
        self.assertIn("1 injected, 1 left as they were", err)

    def test_sidecar_first_among_init_containers(self):
        obj, _ = self.inject(INIT_POD)
        self.check_sidecar(obj)
        init = obj["spec"]["initContainers"]
        self.assertEqual([c["name"] for c in init], ["picket", "schema", "seed"])
        self.assertEqual(init[1:], INIT_POD["spec"]["initContainers"])
        # with a generated config the writer runs before picket
        gen = self.write("gen.json", {"proxy_config": {"node_id": "x"}})
        obj, _ = self.inject(INIT_POD, "--config", gen)
        self.assertEqual([c["name"] for c in obj["spec"]["initContainers"]],
                         ["picket-config", "picket", "schema", "seed"])

    def test_reinjection_is_a_noop(self):
        for obj in (app_deployment(), INIT_POD):
            rc, once, err = self.run_inject(["-"], json.dumps(obj).encode())
            self.assertEqual(rc, 0, err)
            rc, twice, err = self.run_inject(["-"], once)
            self.assertEqual((rc, twice), (0, once), err)
            self.assertIn("not injected (already_injected)", err)
            rc, patch, err = self.run_inject(["--patch", "-"], once)
            self.assertEqual((rc, json.loads(patch)), (0, []))


class InjectK8sWebhook(ti.WebhookCase):
    def review_patch(self, obj):
        code, body = self.post_review(ti.review(obj))
        self.assertEqual(code, 200, body)
        return json.loads(body)["response"]

    def test_cli_and_webhook_agree(self):
        gen = self.write("none.json", {})
        for obj in (app_deployment(), app_deployment(annotations={"prometheus.io/port": "9000"}),
                    INIT_POD, ti.POD, ti.DEPLOY):
            r = self.review_patch(obj)
            self.assertEqual((r["uid"], r["allowed"], r["patchType"]), (ti.UID, True, "JSONPatch"))
            patched = ti.apply_patch(obj, json.loads(base64.b64decode(r["patch"], validate=True)))
            rc, out, err = self.run_inject(["--config", gen, "--image", "picket:test", "-"],
                                           json.dumps(obj).encode())
            self.assertEqual(rc, 0, err)
            self.assertEqual(patched, json.loads(out), obj["metadata"])
            self.check_sidecar(patched, image="picket:test")
            # the webhook's patch on the webhook's result: nothing more to do
            again = self.review_patch(patched)
            self.assertEqual(again, {"uid": ti.UID, "allowed": True})

        # hostNetwork: allowed unchanged, the reason in warnings; the CLI says the same
        r = self.review_patch(HOST_POD)
        self.assertEqual((r["uid"], r["allowed"]), (ti.UID, True))
        self.assertNotIn("patch", r)
        self.assertEqual(len(r["warnings"]), 1)
        self.assertTrue(r["warnings"][0].startswith(
            "picket inject: Pod node-agent: not injected: hostNetwork: true"), r)
        rc, out, err = self.run_inject(["-"], json.dumps(HOST_POD).encode())
        self.assertEqual(json.loads(out), HOST_POD)
        self.assertIn(r["warnings"][0], err)

        lines = self.shutdown_and_logs()
        hn = [ln for ln in lines if ln.get("event") == "inject_review"
              and ln.get("reason") == "host_network"]
        self.assertEqual(len(hn), 1, lines)
        self.assertIn("hostNetwork", hn[0].get("detail", ""))


class InjectedDeploymentRuns(pt.TestCase):
    """The issue's "done when": a Deployment with ordinary probes, injected and run as
    documented, has passing probes and scrapable metrics."""

    def kubelet_probe(self, host, probe):
        g = probe["httpGet"]
        c = http.client.HTTPConnection(host, g["port"], timeout=30)
        try:
            c.request("GET", g["path"], headers={"User-Agent": "kube-probe/1.31"})
            r = c.getresponse()
            r.read()
            return r.status
        finally:
            c.close()

    def test_injected_deployment(self):
        host = ts.non_loopback_ipv4() or "127.0.0.1"
        app = self.upstream("h1")
        grpc_port = self.grpc_app()
        probes_port, metrics_port = pt.free_port(), pt.free_port()
        dep = app_deployment(http_port=app, grpc_port=grpc_port)
        r = subprocess.run([pt.picket_bin(), "inject", "--probes-port", str(probes_port),
                               "--metrics-port", str(metrics_port), "-"],
                              input=json.dumps(dep).encode(), capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        obj = json.loads(r.stdout)
        sc = ti.sidecar(obj)
        env = env_of(sc)
        ann = ti.pod_meta(obj)["annotations"]
        self.assertEqual(ann["prometheus.io/port"], str(metrics_port))

        # picket as the pod runs it: the sidecar's args, the ConfigMap's config at -c,
        # $(PICKET_NODE_ID) expanded, PICKET_APP_PROBES as the container sees it
        path, cfg, inbound, admin = self.config(pt.upstream_url("h1", app))
        args = [a.replace("$(PICKET_NODE_ID)", "shop/web-0") for a in sc["args"]]
        args[args.index("-c") + 1] = path
        self.assertIn("--probes-bind", args)
        p = pt.Picket(self.tmp, path, admin_port=admin, pki=self.pki, args=args,
                      env_extra={"PICKET_APP_PROBES": kube_env(env["PICKET_APP_PROBES"])})
        p.start()
        self.addCleanup(p.stop_and_check)

        web = ti.pod_spec(obj)["containers"][0]
        for field in ("startupProbe", "readinessProbe", "livenessProbe"):
            self.assertEqual(self.kubelet_probe(host, web[field]), 200, field)
        self.wait_upstream_request(app, "/status/200")

        st, _, body = ts.get(host, metrics_port, "/metrics")
        self.assertEqual(st, 200)
        self.assertIn(b'picket_app_probes_total{probe="web/livez",result="pass"} 1', body)
        self.assertEqual(ts.get(host, metrics_port, "/policy")[0], 404)

        # the app goes away: its probes fail (picket itself is fine)
        self._upstreams[app].stop()
        for field in ("readinessProbe", "livenessProbe"):
            self.assertEqual(self.kubelet_probe(host, web[field]), 503, field)
        self.assertEqual(pt.http_get_plain(admin, "/healthz")[0], 200)


if __name__ == "__main__":
    pt.main()
