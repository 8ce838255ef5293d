"""`picket inject` end to end: the CLI filter (FILE, `-`/stdin -> stdout) and the
admission webhook over HTTPS with curl.

The filter's output must parse with json.loads, carry picket exactly once as a
native sidecar (an init container with restartPolicy Always), leave the app
containers (and their ports) alone, and be unchanged when injected again. The
webhook answers an AdmissionReview v1 (POST /inject, /mutate is an alias) with
the same review, response.uid copied, and a base64 JSONPatch which, applied to
the original object with Debian's python3-jsonpatch, gives exactly the CLI's
output. Malformed and hostile reviews get a clear error (malformed_review
"error", the default) or are allowed unchanged with a warning ("allow"), and
never crash the server.
"""
import base64
import copy
import json
import os
import signal
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import picket_test as pt  # noqa: E402

# Debian packages: python3-jsonpatch (the webhook's patches applied), openssl (the
# webhook's certificate), curl. A missing one fails the tests that need it.

UID = "705ab4f5-6393-11e8-b7cc-42010a800002"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INJECTOR_CONFIG = os.path.join(REPO, "deploy", "kubernetes", "injector-config.json")

DEPLOY = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "orders", "namespace": "shop"},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "orders"}},
        "template": {
            "metadata": {"labels": {"app": "orders"},
                         "annotations": {"example.org/owner": "team~a"}},
            "spec": {"containers": [{"name": "app", "image": "example/orders:1.4",
                                     "ports": [{"containerPort": 8080, "name": "http"}]}],
                     "volumes": [{"name": "data", "emptyDir": {}}]},
        },
    },
}

POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"generateName": "orders-7d9f8c-", "namespace": "shop", "labels": {"app": "orders"}},
    "spec": {"containers": [{"name": "app", "image": "example/orders:1.4"}],
             "initContainers": [{"name": "migrate", "image": "example/migrate:1"}]},
}

STATEFULSET = {
    "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
    "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
             "template": {"metadata": {"labels": {"app": "db"}},
                          "spec": {"containers": [{"name": "db", "image": "example/db:1"}]}}},
}

CSI = {"driver": "spiffe.csi.cert-manager.io", "readOnly": True}


def pod_spec(obj):
    return obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]


def pod_meta(obj):
    return obj["metadata"] if obj["kind"] == "Pod" else obj["spec"]["template"]["metadata"]


def sidecar(obj):
    found = [c for c in pod_spec(obj).get("initContainers", []) if c["name"] == "picket"]
    assert len(found) == 1, pod_spec(obj)
    return found[0]


def apply_patch(doc, ops):
    jsonpatch = pt.require_module("jsonpatch", "python3-jsonpatch")
    return jsonpatch.JsonPatch(ops).apply(copy.deepcopy(doc))


class InjectCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="picket-it-inject-")
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", self.tmp]))

    def run_inject(self, args, data=None, env=None):
        r = subprocess.run([pt.picket_bin(), "inject"] + args, input=data, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30, env=env)
        err = r.stderr.decode(errors="replace")
        for m in pt.SANITIZER_MARKERS:
            self.assertNotIn(m, err)
        return r.returncode, r.stdout, err

    def write(self, name, obj):
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(obj if isinstance(obj, bytes) else json.dumps(obj).encode())
        return path

    def check_sidecar(self, obj, admin=15000, inbound=15443, image="picket:0.1", probes=15021,
                      metrics=15090):
        sc = sidecar(obj)
        self.assertEqual(sc["image"], image)
        self.assertEqual(sc["restartPolicy"], "Always")
        self.assertEqual(sc["args"], ["run", "-c", "/etc/picket/picket.json",
                                      "--node-id", "$(PICKET_NODE_ID)",
                                      "--probes-bind", "0.0.0.0:%d" % probes,
                                      "--metrics-bind", "0.0.0.0:%d" % metrics])
        env = {e["name"]: e for e in sc["env"]}
        self.assertEqual(env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.namespace")
        self.assertEqual(env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name")
        self.assertEqual(env["PICKET_NODE_ID"]["value"], "$(POD_NAMESPACE)/$(POD_NAME)")
        # PICKET_NODE_ID refers to the two before it (Kubernetes expands in order)
        self.assertEqual([e["name"] for e in sc["env"]][:3], ["POD_NAMESPACE", "POD_NAME", "PICKET_NODE_ID"])
        self.assertEqual(sc["ports"], [{"containerPort": inbound, "name": "picket-mtls", "protocol": "TCP"},
                                       {"containerPort": probes, "name": "picket-probes", "protocol": "TCP"},
                                       {"containerPort": metrics, "name": "picket-metrics", "protocol": "TCP"}])
        readyz = "http://127.0.0.1:%d/readyz" % admin
        self.assertEqual(sc["startupProbe"]["exec"]["command"][-1], readyz)
        self.assertEqual(sc["readinessProbe"]["exec"]["command"][-1], readyz)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            self.assertNotIn("httpGet", sc[probe])  # the admin listener stays on loopback
            self.assertTrue(sc[probe]["exec"]["command"][-1].startswith("http://127.0.0.1:"))
        sec = sc["securityContext"]
        self.assertEqual((sec["runAsNonRoot"], sec["readOnlyRootFilesystem"],
                          sec["allowPrivilegeEscalation"], sec["capabilities"]),
                         (True, True, False, {"drop": ["ALL"]}))
        self.assertGreater(sec["runAsUser"], 0)
        mounts = {m["name"]: m for m in sc["volumeMounts"]}
        self.assertEqual(mounts["picket-config"]["mountPath"], "/etc/picket")
        self.assertEqual(mounts["picket-svid"]["mountPath"], "/var/run/secrets/svid")
        self.assertTrue(all(m["readOnly"] for m in sc["volumeMounts"]))
        self.assertNotIn("picket", [c["name"] for c in pod_spec(obj)["containers"]])
        self.assertEqual(pod_meta(obj)["annotations"]["picket.dev/injected"], "true")


class InjectFilter(InjectCase):
    def test_inject_command_exists(self):
        """`picket inject --help` works: a crash or a lost subcommand fails here (and in
        every test below), it never turns the file green."""
        rc, out, err = self.run_inject(["--help"])
        self.assertEqual(rc, 0, "picket inject --help: exit %d\n%s" % (rc, err))
        self.assertIn("picket inject serve --bind", out.decode(errors="replace") + err)

    def test_deployment_file_stdin_dash(self):
        data = json.dumps(DEPLOY, indent=4).encode()
        rc, out, err = self.run_inject(["-"], data)
        self.assertEqual(rc, 0, err)
        obj = json.loads(out)
        self.check_sidecar(obj)
        spec = pod_spec(obj)
        self.assertEqual(spec["containers"], DEPLOY["spec"]["template"]["spec"]["containers"])
        vols = {v["name"]: v for v in spec["volumes"]}
        self.assertEqual(vols["picket-config"], {"name": "picket-config", "configMap": {"name": "orders-picket"}})
        self.assertEqual(vols["picket-svid"], {"name": "picket-svid", "csi": CSI})
        self.assertIn("data", vols)
        self.assertEqual(spec["terminationGracePeriodSeconds"], 30)
        self.assertEqual(obj["spec"]["template"]["metadata"]["annotations"],
                         {"example.org/owner": "team~a", "picket.dev/injected": "true",
                          "prometheus.io/scrape": "true", "prometheus.io/port": "15090",
                          "prometheus.io/path": "/metrics"})
        # everything else is untouched
        stripped = copy.deepcopy(obj)
        tspec = stripped["spec"]["template"]["spec"]
        del tspec["initContainers"]
        tspec["volumes"] = [{"name": "data", "emptyDir": {}}]
        del tspec["terminationGracePeriodSeconds"]
        stripped["spec"]["template"]["metadata"]["annotations"] = {"example.org/owner": "team~a"}
        self.assertEqual(stripped, DEPLOY)

        path = self.write("deploy.json", data)
        for args, stdin in ((["-f", path], None), ([path], None), ([], data)):
            rc2, out2, err2 = self.run_inject(args, stdin)
            self.assertEqual((rc2, out2), (0, out), (args, err2))

        # idempotent: the output injected again is the same bytes
        rc3, out3, err3 = self.run_inject(["-"], out)
        self.assertEqual(rc3, 0, err3)
        self.assertEqual(out3, out)
        self.assertIn("already_injected", err3)

    def test_pod_keeps_its_init_containers(self):
        rc, out, err = self.run_inject(["-"], json.dumps(POD).encode())
        self.assertEqual(rc, 0, err)
        obj = json.loads(out)
        self.check_sidecar(obj)
        # picket first: it is ready before the app's init containers run, so a
        # migration already has the mesh (issue 17 item 4)
        self.assertEqual([c["name"] for c in obj["spec"]["initContainers"]], ["picket", "migrate"])
        self.assertEqual(obj["spec"]["initContainers"][1], POD["spec"]["initContainers"][0])
        self.assertEqual(obj["spec"]["containers"], POD["spec"]["containers"])

    def test_already_injected_passes_unchanged(self):
        annotated = copy.deepcopy(DEPLOY)
        annotated["spec"]["template"]["metadata"]["annotations"]["picket.dev/injected"] = "true"
        by_hand = copy.deepcopy(POD)
        by_hand["spec"]["containers"].append({"name": "picket", "image": "picket:0.1"})
        native = copy.deepcopy(POD)
        native["spec"]["initContainers"].append({"name": "picket", "image": "picket:0.1",
                                                 "restartPolicy": "Always"})
        disabled = copy.deepcopy(DEPLOY)
        disabled["metadata"]["annotations"] = {"picket.dev/inject": "disabled"}
        false = copy.deepcopy(POD)
        false["metadata"]["annotations"] = {"picket.dev/inject": "false"}
        for obj, reason in ((annotated, "already_injected"), (by_hand, "already_injected"),
                            (native, "already_injected"), (disabled, "opted_out"),
                            (false, "opted_out")):
            rc, out, err = self.run_inject(["-"], json.dumps(obj).encode())
            self.assertEqual(rc, 0, err)
            self.assertEqual(json.loads(out), obj)
            self.assertIn("not injected (%s)" % reason, err)
            rc, patch, err = self.run_inject(["--patch", "-"], json.dumps(obj).encode())
            self.assertEqual((rc, json.loads(patch)), (0, []), err)

    def test_list(self):
        injected = json.loads(self.run_inject(["-"], json.dumps(DEPLOY).encode())[1])
        lst = {"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "orders"}, "spec": {}},
            DEPLOY,
            dict(DEPLOY, metadata={"name": "legacy", "annotations": {"picket.dev/inject": "disabled"}}),
            injected,
            POD,
            STATEFULSET,
        ]}
        rc, out, err = self.run_inject(["-"], json.dumps(lst).encode())
        self.assertEqual(rc, 0, err)
        self.assertIn("3 injected, 3 left as they were", err)
        items = json.loads(out)["items"]
        self.assertEqual(items[0], lst["items"][0])
        self.check_sidecar(items[1])
        self.assertEqual(items[1], injected)
        self.assertEqual(items[2], lst["items"][2])
        self.assertEqual(items[3], injected)
        self.check_sidecar(items[4])
        self.check_sidecar(items[5])

    def test_patch_matches_object(self):
        lst = {"apiVersion": "v1", "kind": "List", "items": [DEPLOY, POD, STATEFULSET]}
        for obj in (DEPLOY, POD, STATEFULSET, lst):
            data = json.dumps(obj).encode()
            rc, patch, err = self.run_inject(["--patch", "-"], data)
            self.assertEqual(rc, 0, err)
            rc, out, err = self.run_inject(["--compact", "-"], data)
            self.assertEqual(rc, 0, err)
            self.assertEqual(out.count(b"\n"), 1)
            self.assertEqual(apply_patch(obj, json.loads(patch)), json.loads(out))

    def test_config_file_and_overrides(self):
        rc, out, err = self.run_inject(["--config", INJECTOR_CONFIG, "-"], json.dumps(POD).encode())
        self.assertEqual(rc, 0, err)
        obj = json.loads(out)
        self.check_sidecar(obj)
        with open(INJECTOR_CONFIG) as f:
            cfg = json.load(f)
        sc = sidecar(obj)
        self.assertEqual(sc["resources"], cfg["resources"])
        self.assertEqual(sc["securityContext"]["runAsUser"], cfg["run_as_user"])
        self.assertEqual([v for v in obj["spec"]["volumes"] if v["name"] == "picket-svid"],
                         [dict(cfg["svid_volume"], name="picket-svid")])

        # flags override the file
        rc, out, err = self.run_inject(
            ["--config", INJECTOR_CONFIG, "--image", "registry.example/picket:0.2",
             "--config-map", "cfg", "--svid-secret=sec", "--inbound-port", "8443",
             "--admin-port", "9901", "--drain-timeout", "45s", "-"], json.dumps(POD).encode())
        self.assertEqual(rc, 0, err)
        obj = json.loads(out)
        self.check_sidecar(obj, admin=9901, inbound=8443, image="registry.example/picket:0.2")
        self.assertEqual(obj["spec"]["terminationGracePeriodSeconds"], 55)
        self.assertEqual([v.get("configMap", v.get("secret")) for v in obj["spec"]["volumes"]],
                         [{"name": "cfg"}, {"secretName": "sec"}])

        # a generated config: an emptyDir that an init container fills first
        gen = self.write("gen.json", {"image": "picket:0.3", "svid_volume": {"csi": {"driver": "csi.spiffe.io", "readOnly": True}},
                                      "proxy_config": {"node_id": "x", "log": {"access": "$(literal)"}}})
        rc, out, err = self.run_inject(["--config", gen, "-"], json.dumps(DEPLOY).encode())
        self.assertEqual(rc, 0, err)
        obj = json.loads(out)
        self.check_sidecar(obj, image="picket:0.3")
        init = pod_spec(obj)["initContainers"]
        self.assertEqual([c["name"] for c in init], ["picket-config", "picket"])
        self.assertNotIn("restartPolicy", init[0])
        self.assertEqual(init[0]["args"], ["inject", "write-config", "--out", "/etc/picket/picket.json"])
        vols = {v["name"]: v for v in pod_spec(obj)["volumes"]}
        self.assertIn("emptyDir", vols["picket-config"])
        self.assertEqual(vols["picket-svid"]["csi"]["driver"], "csi.spiffe.io")

        # ... and what that init container does with it (Kubernetes turns "$$" into "$")
        value = init[0]["env"][0]["value"].replace("$$", "$")
        out_path = os.path.join(self.tmp, "picket.json")
        env = dict(os.environ, PICKET_CONFIG=value)
        rc, _, err = self.run_inject(["write-config", "--out", out_path], env=env)
        self.assertEqual(rc, 0, err)
        with open(out_path) as f:
            self.assertEqual(json.load(f), {"node_id": "x", "log": {"access": "$(literal)"}})
        env["PICKET_CONFIG"] = "{not json"
        rc, _, err = self.run_inject(["write-config", "--out", out_path], env=env)
        self.assertEqual(rc, 1)
        self.assertIn("PICKET_CONFIG:1:2", err)

    def test_refused(self):
        rc, out, err = self.run_inject(["-"], b'{"kind": "Pod",\n "spec": {"containers": [],}}')
        self.assertEqual((rc, out), (1, b""))
        self.assertIn("<stdin>:2:28: trailing comma", err)
        rc, out, err = self.run_inject([], b"kind: Pod\n")  # YAML is out of scope
        self.assertEqual(rc, 1)
        self.assertIn("<stdin>:1:1:", err)
        bad = dict(POD, spec={"containers": [{"name": "app", "ports": [{"containerPort": 15443}]}]})
        rc, out, err = self.run_inject(["-"], json.dumps(bad).encode())
        self.assertEqual(rc, 1)
        self.assertIn("containerPort 15443 is picket's", err)
        rc, out, err = self.run_inject([os.path.join(self.tmp, "missing.json")])
        self.assertEqual(rc, 1)
        rc, out, err = self.run_inject(["--bogus"])
        self.assertEqual(rc, 2)
        self.assertIn("usage:", err)
        rc, out, err = self.run_inject(["a.json", "b.json"])
        self.assertEqual(rc, 2)
        rc, out, err = self.run_inject(["--config-map", "Not_Valid", "-"], b"{}")
        self.assertEqual(rc, 2)
        cfg = self.write("bad.json", b'{"image": "x", "imag": "y"}')
        rc, out, err = self.run_inject(["--config", cfg, "-"], json.dumps(POD).encode())
        self.assertEqual(rc, 1)
        self.assertIn('bad.json:1:16: unknown key "imag"', err)


def make_cert(directory):
    pt.require_tool("openssl", "openssl")
    key = os.path.join(directory, "webhook.key")
    cert = os.path.join(directory, "webhook.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert, "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    return cert, key


def review(obj, operation="CREATE", namespace="shop", uid=UID):
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                       "request": {"uid": uid, "operation": operation,
                                   "namespace": namespace, "object": obj}}).encode()


# Hostile or malformed reviews: (body, uid readable?)
HOSTILE = [
    (b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview",}', False),
    (b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}', False),
    (b'', False),
    (b'null', False),
    (b'\xff\xfe{"apiVersion": 1}', False),
    (b'[' * 5000 + b']' * 5000, False),
    (b'{"a":' * 200 + b'1' + b'}' * 200, False),
    (b'[' + b'0,' * 1500000 + b'0]', False),  # ~3 MiB of tokens
    (json.dumps({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",
                 "request": {"uid": UID}}).encode(), False),
    (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                 "request": {"uid": 'x","allowed":true,"y":"', "object": POD}}).encode(), False),
    (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                 "request": {"uid": "a" * 500, "object": POD}}).encode(), False),
    (b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1",'
     b'"uid":"u2","object":{}}}', False),
    (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                 "request": {"uid": UID}}).encode(), True),
    (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                 "request": {"uid": UID, "object": "Pod"}}).encode(), True),
    (review({"kind": "Pod", "spec": {"containers": "app"}}), True),
    (review({"kind": 7, "spec": {}}), True),
    (review({"kind": "Pod", "metadata": [], "spec": {"containers": [{"name": "app"}]}}), True),
    (review({"kind": "Pod", "metadata": {"labels": {"app": "x"}},
             "spec": {"containers": [{"name": "app"}], "initContainers": {"name": "x"}}}), True),
    (review(dict(POD, spec={"containers": [{"name": "app"}], "volumes": 3})), True),
    (review(dict(POD, spec={"containers": [{"name": "app"}],
                            "terminationGracePeriodSeconds": "G"})).replace(b'"G"', b"1e400"), True),
]


class WebhookCase(InjectCase):
    extra_args = []

    def setUp(self):
        super().setUp()
        self.cert, self.key = make_cert(self.tmp)
        self.port = pt.free_port()
        self.err_path = os.path.join(self.tmp, "serve.err")
        self._err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(
            [pt.picket_bin(), "inject", "serve", "--bind", "127.0.0.1:%d" % self.port,
             "--cert", self.cert, "--key", self.key, "--image", "picket:test"] + self.extra_args,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._err,
            start_new_session=True)
        self.addCleanup(self.stop)
        self.assertTrue(pt.wait_port(self.port, 15, self.proc), self.stderr())

    def stop(self):
        """SIGTERM; the server must exit 0 within 15 s with no sanitizer report (a hang
        is SIGKILLed and fails the test: its LeakSanitizer report would be lost)."""
        hung = False
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                hung = True
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._err.close()
        err = self.stderr()
        self.assertFalse(hung, "picket inject serve ignored SIGTERM for 15 s:\n" + err[-2000:])
        self.assertEqual(self.proc.returncode, 0, "picket inject serve exit status:\n" + err[-2000:])
        for m in pt.SANITIZER_MARKERS:
            self.assertNotIn(m, err)

    def stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode(errors="replace")

    def curl(self, path, data=None, extra=()):
        pt.require_tool("curl", "curl")
        cmd = ["curl", "-sS", "--max-time", "10", "--cacert", self.cert, "-o", "-",
               "-w", "\n%{http_code}", "https://localhost:%d%s" % (self.port, path)]
        if data is not None:
            body = os.path.join(self.tmp, "body.json")
            with open(body, "wb") as f:
                f.write(data)
            cmd += ["-H", "Content-Type: application/json", "--data-binary", "@" + body]
        r = subprocess.run(cmd + list(extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        body, _, code = r.stdout.rpartition(b"\n")
        return int(code), body

    def post_review(self, body, path="/inject?timeout=10s"):
        code, resp = self.curl(path, body)
        return code, resp

    def shutdown_and_logs(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            rc = "still running 15 s after SIGTERM"
        self.assertEqual(rc, 0)
        err = self.stderr()
        for m in pt.SANITIZER_MARKERS:
            self.assertNotIn(m, err)
        return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


class InjectWebhook(WebhookCase):
    def test_review_patch_equals_cli(self):
        code, body = self.curl("/healthz")
        self.assertEqual((code, body), (200, b"ok\n"))
        for obj in (POD, DEPLOY):
            for path in ("/inject?timeout=10s", "/mutate"):
                code, body = self.post_review(review(obj), path)
                self.assertEqual(code, 200, body)
                resp = json.loads(body)
                self.assertEqual((resp["apiVersion"], resp["kind"]),
                                 ("admission.k8s.io/v1", "AdmissionReview"))
                r = resp["response"]
                self.assertEqual((r["uid"], r["allowed"], r["patchType"]), (UID, True, "JSONPatch"))
                patch = json.loads(base64.b64decode(r["patch"], validate=True))
                patched = apply_patch(obj, patch)
                self.check_sidecar(patched, image="picket:test")
                # the patch applied to the original equals the CLI's output
                rc, out, err = self.run_inject(["--image", "picket:test", "-"], json.dumps(obj).encode())
                self.assertEqual(rc, 0, err)
                self.assertEqual(patched, json.loads(out))

        # already injected, opted out, UPDATE: allowed without a patch
        injected = apply_patch(POD, json.loads(self.run_inject(["--patch", "--image", "picket:test", "-"],
                                                               json.dumps(POD).encode())[1]))
        disabled = dict(POD, metadata=dict(POD["metadata"], annotations={"picket.dev/inject": "disabled"}))
        for obj, op in ((injected, "CREATE"), (disabled, "CREATE"), (POD, "UPDATE")):
            code, body = self.post_review(review(obj, op))
            self.assertEqual(code, 200, body)
            self.assertEqual(json.loads(body)["response"], {"uid": UID, "allowed": True})

        # cannot be injected: denied (malformed_review "error"), not let through unprotected
        code, body = self.post_review(review(dict(POD, metadata={"generateName": "x-"})))
        self.assertEqual(code, 200, body)
        r = json.loads(body)["response"]
        self.assertEqual((r["uid"], r["allowed"], r["status"]["code"]), (UID, False, 403))
        self.assertIn("cannot tell the app's name", r["status"]["message"])

        code, _ = self.curl("/inject")
        self.assertEqual(code, 405)
        code, _ = self.curl("/nope")
        self.assertEqual(code, 404)

        lines = self.shutdown_and_logs()
        reviews = [ln for ln in lines if ln.get("event") == "inject_review"]
        self.assertEqual(len(reviews), 8, lines)
        first = reviews[0]
        self.assertEqual((first["uid"], first["kind"], first["name"], first["namespace"],
                          first["injected"], first["reason"]),
                         (UID, "Pod", "orders-7d9f8c-", "shop", "yes", "injected"))
        self.assertEqual([ln["reason"] for ln in reviews[4:]],
                         ["already_injected", "opted_out", "not_create", "refused"])

    def test_hostile_reviews_error_mode(self):
        for body, uid_known in HOSTILE:
            code, resp = self.post_review(body)
            if not uid_known:
                # no uid to answer to: a plain 400 with the reason, so the API
                # server applies the webhook's failurePolicy
                self.assertEqual(code, 400, (body[:80], resp))
                self.assertTrue(resp.startswith(b"picket inject: "), resp)
            else:
                self.assertEqual(code, 200, (body[:80], resp))
                r = json.loads(resp)["response"]
                self.assertEqual((r["uid"], r["allowed"]), (UID, False), resp)
                self.assertEqual(r["status"]["code"], 400, resp)
                self.assertTrue(r["status"]["message"].startswith("picket inject: "), resp)
        code, resp = self.post_review(HOSTILE[0][0])
        self.assertIn(b"1:62: trailing comma", resp)
        # not a pod at all (nested Lists are not followed): nothing to do
        code, resp = self.post_review(review({"kind": "List", "items": [{"kind": "List", "items": [POD]}]}))
        self.assertEqual(json.loads(resp)["response"], {"uid": UID, "allowed": True})
        big = b'{"a":"' + b"x" * (5 * 1024 * 1024) + b'"}'
        code, _ = self.post_review(big)
        self.assertEqual(code, 413)
        # still serving, and injecting
        code, _ = self.curl("/healthz")
        self.assertEqual(code, 200)
        code, body = self.post_review(review(POD))
        self.assertEqual(json.loads(body)["response"]["patchType"], "JSONPatch")
        lines = self.shutdown_and_logs()
        bad = [ln for ln in lines if ln.get("event") == "inject_review_bad"]
        self.assertGreaterEqual(len(bad), len([h for h in HOSTILE if not h[1]]))

    def test_tls_only(self):
        r = subprocess.run(["curl", "-sS", "--max-time", "5", "http://127.0.0.1:%d/healthz" % self.port],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        r = subprocess.run(["curl", "-sS", "--max-time", "5", "--tlsv1.1", "--tls-max", "1.1",
                            "--cacert", self.cert, "https://localhost:%d/healthz" % self.port],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        code, _ = self.curl("/healthz")
        self.assertEqual(code, 200)


class InjectWebhookAllow(WebhookCase):
    """malformed_review "allow" (here from an injector config file): malformed
    reviews and pods that cannot be injected are allowed unchanged, with the
    reason in response.warnings."""

    def setUp(self):
        tmp = tempfile.mkdtemp(prefix="picket-it-inject-cfg-")
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", tmp]))
        cfg = os.path.join(tmp, "injector.json")
        with open(cfg, "w") as f:
            json.dump({"malformed_review": "allow", "image": "picket:from-config"}, f)
        self.extra_args = ["--config", cfg]
        super().setUp()

    def test_hostile_reviews_allowed_unchanged(self):
        for body, uid_known in HOSTILE:
            code, resp = self.post_review(body)
            self.assertEqual(code, 200, (body[:80], resp))
            r = json.loads(resp)["response"]
            self.assertEqual(r["allowed"], True, resp)
            self.assertEqual(r["uid"], UID if uid_known else "")
            self.assertNotIn("patch", r)
            self.assertTrue(r["warnings"][0].startswith("picket inject: "), resp)
        code, body = self.post_review(review(dict(POD, metadata={"generateName": "x-"})))
        r = json.loads(body)["response"]
        self.assertEqual((r["uid"], r["allowed"]), (UID, True))
        self.assertIn("cannot tell the app's name", r["warnings"][0])
        # injection itself is unchanged; --image on the command line beat the file
        code, body = self.post_review(review(POD))
        patch = json.loads(base64.b64decode(json.loads(body)["response"]["patch"]))
        self.assertIn('"image": "picket:test"', json.dumps(patch))
        lines = self.shutdown_and_logs()
        self.assertTrue(any(ln.get("answer") == "allow" for ln in lines
                            if ln.get("event") == "inject_review_bad"), lines)


if __name__ == "__main__":
    pt.main()
