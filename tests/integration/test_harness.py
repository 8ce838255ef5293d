#!/usr/bin/python3
"""Self-test of the integration harness itself, without picket: the PKI, the test
upstream (HTTP/1.1 and h2c) and the gRPC app. When this fails, the other
integration tests' failures say nothing about picket.

    /usr/bin/python3 tests/integration/test_harness.py
"""
import hashlib
import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import picket_test as pt  # noqa: E402
import upstream  # noqa: E402


def plain_curl(url, *args, timeout=30):
    r = subprocess.run(["curl", "-sS", "--noproxy", "*", "--max-time", str(timeout)] + list(args) + [url],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout + 5)
    return r.returncode, r.stdout, r.stderr.decode(errors="replace")


class Harness(pt.TestCase):

    def test_pki(self):
        pki = self.pki
        r = subprocess.run(["openssl", "verify", "-CAfile", pki.ca, pki.cert("server"), pki.cert("client"),
                            pki.cert("other")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
        self.assertEqual(r.returncode, 0, r.stdout)
        r = subprocess.run(["openssl", "verify", "-CAfile", pki.ca, pki.cert("evil")],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
        self.assertNotEqual(r.returncode, 0, "evil must not chain to the example.org CA")
        for name, uri in (("server", pt.SERVER_ID), ("client", pt.CLIENT_ID), ("other", pt.OTHER_ID),
                          ("evil", pt.CLIENT_ID)):
            txt = subprocess.run(["openssl", "x509", "-in", pki.cert(name), "-noout", "-text"],
                                 stdout=subprocess.PIPE, timeout=10).stdout.decode()
            self.assertIn("URI:" + uri, txt)
            self.assertIn("CA:FALSE", txt)
            self.assertIn("Digital Signature", txt)
            self.assertNotIn("Certificate Sign", txt)
            self.assertIn("TLS Web Server Authentication, TLS Web Client Authentication", txt)
            self.assertIn("prime256v1", txt)
        txt = subprocess.run(["openssl", "x509", "-in", pki.cert("server"), "-noout", "-ext", "subjectAltName"],
                             stdout=subprocess.PIPE, timeout=10).stdout.decode()
        self.assertIn("DNS:localhost", txt)
        self.assertIn("IP Address:127.0.0.1", txt)
        der = subprocess.run(["openssl", "x509", "-in", pki.cert("client"), "-outform", "DER"],
                             stdout=subprocess.PIPE, timeout=10).stdout
        self.assertEqual(hashlib.sha256(der).hexdigest(), pki.der_sha256("client"))

    def _upstream_checks(self, kind):
        port = self.upstream(kind, name="u-" + kind)
        base = "http://127.0.0.1:%d" % port
        proto = ["--http1.1"] if kind == "h1" else ["--http2-prior-knowledge"]
        rc, out, err = plain_curl(base + "/", *proto)
        self.assertEqual((rc, out), (0, b"hello from upstream\n"), err)
        rc, out, err = plain_curl(base + "/headers", *proto, "-H", "X-A: 1", "-H", "X-A: 2",
                                  "-H", "x-forwarded-client-cert: one")
        self.assertEqual(rc, 0, err)
        j = json.loads(out)
        self.assertEqual(j["headers"]["x-a"], ["1", "2"])
        self.assertEqual(j["headers"]["x-forwarded-client-cert"], "one")
        self.assertEqual(j["upstream"], "u-" + kind)
        self.assertEqual(j["path"], "/headers")
        n = 5 * 1024 * 1024 + 3
        rc, out, err = plain_curl(base + "/bytes/%d" % n, *proto)
        self.assertEqual(rc, 0, err)
        self.assertEqual(hashlib.sha256(out).hexdigest(), upstream.pattern_sha256(n))
        data = os.urandom(3 * 1024 * 1024)
        path = os.path.join(self.tmp, "up.bin")
        with open(path, "wb") as f:
            f.write(data)
        for extra in ([], ["-H", "Transfer-Encoding: chunked"]):
            rc, out, err = plain_curl(base + "/upload", *proto, "-T", path, *extra)
            self.assertEqual(rc, 0, err)
            self.assertEqual(json.loads(out), {"len": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        rc, out, err = plain_curl(base + "/status/418", *proto, "-o", "/dev/null", "-w", "%{http_code}")
        self.assertEqual(out, b"418")
        t0 = time.monotonic()
        rc, out, err = plain_curl(base + "/slow/300", *proto)
        self.assertGreaterEqual(time.monotonic() - t0, 0.29)
        self.assertEqual(out, b"slow done\n")
        if kind == "h2c":
            r = subprocess.run(["nghttp", "-v", base + "/trailers"], stdout=subprocess.PIPE, timeout=10)
            self.assertIn(b"x-checksum: abc", r.stdout)
            # several streams, one of them slow, on one connection
            r = subprocess.run(["nghttp", "-n", base + "/slow/1000", base + "/"], stdout=subprocess.PIPE,
                               timeout=10)
            self.assertEqual(r.returncode, 0)

    def test_upstream_h1(self):
        self._upstream_checks("h1")

    def test_upstream_h2c(self):
        self._upstream_checks("h2c")

    def test_grpc_app(self):
        r = subprocess.run([pt.PYTHON, os.path.join(pt.HERE, "grpc_app.py"), "--selftest"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout.decode(errors="replace"))
        port = self.grpc_app()
        import grpc_app
        ch = grpc_app.insecure_channel(port)
        self.addCleanup(ch.close)
        self.assertEqual(grpc_app.unary(ch, b"x"), b"x")

    def test_free_port_and_processes(self):
        p = pt.free_port()
        self.assertNotEqual(p, pt.free_port())
        port = self.upstream("h1")
        self.assertTrue(pt.wait_port(port, 2))
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
        s.close()


if __name__ == "__main__":
    pt.main(timeout=120)
