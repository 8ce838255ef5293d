"""`picket inject` end to end: the CLI filter (stdin/file -> stdout) and the
admission webhook over HTTPS with curl.

The filter's output must parse with json.loads, carry the sidecar exactly once,
equal the input with the --patch output applied (an independent RFC 6902
applier below), and be unchanged when injected again. The webhook answers an
AdmissionReview with a base64 JSONPatch that is the same patch, refuses a
malformed review with 400, and exits 0 on SIGTERM.
"""
import base64
import copy
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import picket_test as pt  # noqa: E402

UID = "705ab4f5-6393-11e8-b7cc-42010a800002"

DEPLOY = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "orders", "namespace": "shop"},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "orders"}},
        "template": {
            "metadata": {"labels": {"app": "orders"},
                         "annotations": {"example.org/owner": "team~a"}},
            "spec": {"containers": [{"name": "app", "image": "example/orders:1.4"}],
                     "volumes": [{"name": "data", "emptyDir": {}}]},
        },
    },
}

POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"generateName": "orders-7d9f8c-", "labels": {"app": "orders"}},
    "spec": {"containers": [{"name": "app", "image": "example/orders:1.4"}]},
}


def ptr_tokens(path):
    assert path.startswith("/")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def json_patch(doc, ops):
    """A small independent RFC 6902 applier (add/replace), to cross-check picket's."""
    doc = copy.deepcopy(doc)
    for op in ops:
        toks = ptr_tokens(op["path"])
        parent = doc
        for t in toks[:-1]:
            parent = parent[int(t)] if isinstance(parent, list) else parent[t]
        last = toks[-1]
        if isinstance(parent, list):
            if op["op"] == "add":
                if last == "-":
                    parent.append(op["value"])
                else:
                    parent.insert(int(last), op["value"])
            else:
                parent[int(last)] = op["value"]
        else:
            if op["op"] == "replace":
                assert last in parent, op
            parent[last] = op["value"]
    return doc


def pod_spec(obj):
    return obj["spec"]["template"]["spec"] if obj["kind"] != "Pod" else obj["spec"]


class InjectFilter(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="picket-it-inject-")
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", self.tmp]))

    def run_inject(self, args, data=None):
        r = subprocess.run([pt.picket_bin(), "inject"] + args, input=data, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30)
        err = r.stderr.decode(errors="replace")
        for m in pt.SANITIZER_MARKERS:
            self.assertNotIn(m, err)
        return r.returncode, r.stdout, err

    def test_deployment_from_stdin_and_file(self):
        data = json.dumps(DEPLOY, indent=4).encode()
        rc, out, err = self.run_inject([], data)
        self.assertEqual(rc, 0, err)
        obj = json.loads(out)
        spec = pod_spec(obj)
        names = [c["name"] for c in spec["containers"]]
        self.assertEqual(names, ["app", "picket"])
        sidecar = spec["containers"][1]
        self.assertEqual(sidecar["args"], ["run", "-c", "/etc/picket/picket.json"])
        self.assertEqual(sidecar["ports"][0]["containerPort"], 15443)
        self.assertEqual(sidecar["readinessProbe"]["exec"]["command"][-1],
                         "http://127.0.0.1:15000/readyz")
        vols = {v["name"]: v for v in spec["volumes"]}
        self.assertEqual(vols["picket-config"]["configMap"]["name"], "orders-picket")
        self.assertEqual(vols["picket-svid"]["secret"]["secretName"], "orders-svid")
        self.assertIn("data", vols)
        self.assertEqual(spec["terminationGracePeriodSeconds"], 30)
        ann = obj["spec"]["template"]["metadata"]["annotations"]
        self.assertEqual(ann, {"example.org/owner": "team~a", "picket.dev/injected": "true"})
        # everything else is untouched
        stripped = copy.deepcopy(obj)
        del stripped["spec"]["template"]["spec"]["containers"][1]
        stripped["spec"]["template"]["spec"]["volumes"] = [{"name": "data", "emptyDir": {}}]
        del stripped["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        del stripped["spec"]["template"]["metadata"]["annotations"]["picket.dev/injected"]
        self.assertEqual(stripped, DEPLOY)

        path = os.path.join(self.tmp, "deploy.json")
        with open(path, "wb") as f:
            f.write(data)
        rc2, out2, err2 = self.run_inject(["-f", path])
        self.assertEqual((rc2, out2), (0, out), err2)

        # idempotent: the output injected again is the same bytes
        rc3, out3, err3 = self.run_inject([], out)
        self.assertEqual(rc3, 0, err3)
        self.assertEqual(out3, out)
        self.assertIn("already_injected", err3)

    def test_patch_matches_object(self):
        for obj in (DEPLOY, POD):
            data = json.dumps(obj).encode()
            rc, patch, err = self.run_inject(["--patch"], data)
            self.assertEqual(rc, 0, err)
            rc, out, err = self.run_inject(["--compact"], data)
            self.assertEqual(rc, 0, err)
            self.assertEqual(out.count(b"\n"), 1)
            self.assertEqual(json_patch(obj, json.loads(patch)), json.loads(out))

    def test_options(self):
        rc, out, err = self.run_inject(
            ["--image", "registry.example/picket:0.2", "--config-map", "cfg", "--svid-secret=sec",
             "--inbound-port", "8443", "--admin-port", "9901", "--drain-timeout", "45s"],
            json.dumps(POD).encode())
        self.assertEqual(rc, 0, err)
        spec = json.loads(out)["spec"]
        sidecar = [c for c in spec["containers"] if c["name"] == "picket"][0]
        self.assertEqual(sidecar["image"], "registry.example/picket:0.2")
        self.assertEqual(sidecar["livenessProbe"]["exec"]["command"][-1],
                         "http://127.0.0.1:9901/healthz")
        self.assertEqual(spec["terminationGracePeriodSeconds"], 55)
        self.assertEqual([v.get("configMap", v.get("secret")) for v in spec["volumes"]],
                         [{"name": "cfg"}, {"secretName": "sec"}])

    def test_list(self):
        lst = {"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "orders"}, "spec": {}},
            DEPLOY,
            dict(DEPLOY, metadata={"name": "legacy", "annotations": {"picket.dev/inject": "false"}}),
        ]}
        rc, out, err = self.run_inject([], json.dumps(lst).encode())
        self.assertEqual(rc, 0, err)
        self.assertIn("1 injected, 2 left as they were", err)
        items = json.loads(out)["items"]
        self.assertEqual(items[0], lst["items"][0])
        self.assertEqual([c["name"] for c in pod_spec(items[1])["containers"]], ["app", "picket"])
        self.assertEqual(items[2], lst["items"][2])

    def test_refused(self):
        rc, out, err = self.run_inject([], b'{"kind": "Pod",\n "spec": {"containers": [],}}')
        self.assertEqual((rc, out), (1, b""))
        self.assertIn("<stdin>:2:28: trailing comma", err)
        rc, out, err = self.run_inject([], b"kind: Pod\n")  # YAML is out of scope
        self.assertEqual(rc, 1)
        self.assertIn("<stdin>:1:1:", err)
        bad = dict(POD, spec={"containers": [{"name": "app", "ports": [{"containerPort": 15443}]}]})
        rc, out, err = self.run_inject([], json.dumps(bad).encode())
        self.assertEqual(rc, 1)
        self.assertIn("containerPort 15443 is picket's", err)
        rc, out, err = self.run_inject(["-f", os.path.join(self.tmp, "missing.json")])
        self.assertEqual(rc, 1)
        rc, out, err = self.run_inject(["--bogus"])
        self.assertEqual(rc, 2)
        self.assertIn("usage:", err)
        rc, out, err = self.run_inject(["--config-map", "Not_Valid"], b"{}")
        self.assertEqual(rc, 2)


def make_cert(directory):
    key = os.path.join(directory, "webhook.key")
    cert = os.path.join(directory, "webhook.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert, "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    return cert, key


class InjectWebhook(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="picket-it-webhook-")
        self.cert, self.key = make_cert(self.tmp)
        self.port = pt.free_port()
        self.err_path = os.path.join(self.tmp, "serve.err")
        self._err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(
            [pt.picket_bin(), "inject", "serve", "--bind", "127.0.0.1:%d" % self.port,
             "--cert", self.cert, "--key", self.key, "--image", "picket:test"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._err,
            start_new_session=True)
        self.addCleanup(self.stop)
        self.assertTrue(pt.wait_port(self.port, 15, self.proc), self.stderr())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._err.close()
        subprocess.run(["rm", "-rf", self.tmp])

    def stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode(errors="replace")

    def curl(self, path, data=None, extra=()):
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

    def review(self, obj, operation="CREATE", namespace="shop"):
        return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                           "request": {"uid": UID, "operation": operation,
                                       "namespace": namespace, "object": obj}}).encode()

    def test_review_and_shutdown(self):
        code, body = self.curl("/healthz")
        self.assertEqual((code, body), (200, b"ok\n"))

        code, body = self.curl("/mutate?timeout=10s", self.review(POD))
        self.assertEqual(code, 200, body)
        resp = json.loads(body)
        self.assertEqual((resp["apiVersion"], resp["kind"]), ("admission.k8s.io/v1", "AdmissionReview"))
        r = resp["response"]
        self.assertEqual((r["uid"], r["allowed"], r["patchType"]), (UID, True, "JSONPatch"))
        patch = json.loads(base64.b64decode(r["patch"]))
        pod = json_patch(POD, patch)
        self.assertEqual([c["name"] for c in pod["spec"]["containers"]], ["app", "picket"])
        self.assertEqual(pod["spec"]["containers"][1]["image"], "picket:test")
        self.assertEqual(pod["metadata"]["annotations"], {"picket.dev/injected": "true"})
        # the same patch the CLI prints
        cli = subprocess.run([pt.picket_bin(), "inject", "--patch", "--image", "picket:test"],
                             input=json.dumps(POD).encode(), stdout=subprocess.PIPE, timeout=30)
        self.assertEqual(json.loads(cli.stdout), patch)

        # already injected, opted out, UPDATE: allowed without a patch
        for obj, op in ((pod, "CREATE"), (dict(POD, metadata=dict(
                POD["metadata"], annotations={"picket.dev/inject": "false"})), "CREATE"),
                (POD, "UPDATE")):
            code, body = self.curl("/mutate", self.review(obj, op))
            self.assertEqual(code, 200, body)
            self.assertEqual(json.loads(body)["response"], {"uid": UID, "allowed": True})

        # cannot be injected: denied, not let through unprotected
        code, body = self.curl("/mutate", self.review(dict(POD, metadata={"generateName": "x-"})))
        self.assertEqual(code, 200, body)
        r = json.loads(body)["response"]
        self.assertFalse(r["allowed"])
        self.assertEqual(r["status"]["code"], 403)
        self.assertIn("cannot tell the app's name", r["status"]["message"])

        # malformed reviews: 400 with a message
        code, body = self.curl("/mutate", b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview",}')
        self.assertEqual(code, 400)
        self.assertIn(b"1:62: trailing comma", body)
        code, body = self.curl("/mutate", b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}')
        self.assertEqual(code, 400)
        self.assertIn(b"request: expected an object", body)
        code, _ = self.curl("/mutate")
        self.assertEqual(code, 405)
        code, _ = self.curl("/nope")
        self.assertEqual(code, 404)
        big = b'{"a":"' + b"x" * (5 * 1024 * 1024) + b'"}'
        code, _ = self.curl("/mutate", big)
        self.assertEqual(code, 413)
        code, _ = self.curl("/healthz")
        self.assertEqual(code, 200)

        self.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.proc.wait(10), 0)
        err = self.stderr()
        for m in pt.SANITIZER_MARKERS:
            self.assertNotIn(m, err)
        lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        reviews = [ln for ln in lines if ln.get("event") == "inject_review"]
        self.assertEqual(len(reviews), 5, err)
        first = reviews[0]
        self.assertEqual((first["uid"], first["kind"], first["name"], first["namespace"],
                          first["injected"], first["reason"]),
                         (UID, "Pod", "orders-7d9f8c-", "shop", "yes", "injected"))
        self.assertEqual([ln["reason"] for ln in reviews[1:]],
                         ["already_injected", "opted_out", "not_create", "refused"])
        self.assertEqual(len([ln for ln in lines if ln.get("event") == "inject_review_bad"]), 2)

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


def _knows_inject():
    r = subprocess.run([pt.picket_bin(), "inject", "--help"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    return r.returncode == 0


if __name__ == "__main__":
    if not _knows_inject():
        print("SKIP test_inject.py: %s has no 'inject' command" % pt.picket_bin())
        sys.exit(0)
    pt.main()
