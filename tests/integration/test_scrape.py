#!/usr/bin/python3
"""Metrics a Prometheus in another pod can scrape (issue 17, item 3): metrics.bind.

  - metrics.bind takes any address; admin.bind refuses anything but loopback;
  - from a non-loopback address of this machine (the first global IPv4 address,
    `ip -o -4 addr show scope global`), GET /metrics on metrics.bind answers picket's
    metrics, while /policy, /readyz, /healthz and everything else are 404 there and the
    admin listener (loopback) cannot be reached at all;
  - `picket run --metrics-bind` overrides the file.

Without a non-loopback address (a machine with only `lo`) the scrape goes to
127.0.0.1 and the test says so on stderr: the routes are still checked, reachability
from another address cannot be.

    PICKET_BIN=$PWD/build-test/picket /usr/bin/python3 tests/integration/test_scrape.py [-k NAME]
"""
import http.client
import os
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import picket_test as pt  # noqa: E402


def non_loopback_ipv4():
    """The first global-scope IPv4 address of this machine, or None."""
    pt.require_tool("ip", "iproute2")
    out = subprocess.run(["ip", "-o", "-4", "addr", "show", "scope", "global"],
                         capture_output=True, text=True, timeout=10).stdout
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            addr = parts[parts.index("inet") + 1].split("/")[0]
            if not addr.startswith("127."):
                return addr
    return None


def get(host, port, path, method="GET"):
    c = http.client.HTTPConnection(host, port, timeout=30)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
    finally:
        c.close()


def refuses(host, port):
    s = socket.socket()
    s.settimeout(10)
    try:
        s.connect((host, port))
        return False
    except ConnectionRefusedError:
        return True
    finally:
        s.close()


class ScrapeTest(pt.TestCase):
    def setUp(self):
        super().setUp()
        self.addr = non_loopback_ipv4()
        if self.addr is None:
            pt.log("no non-loopback IPv4 address on this machine: scraping 127.0.0.1 "
                   "(reachability from another address is not checked)")

    def start(self, metrics_bind=None, args_extra=()):
        up = self.upstream("h1")
        path, cfg, inbound, admin = self.config(pt.upstream_url("h1", up))
        if metrics_bind:
            cfg["metrics"] = {"bind": metrics_bind}
        pt.write_config(path, cfg)
        p = pt.Picket(self.tmp, path, admin_port=admin, pki=self.pki,
                      args=["run", "-c", path] + list(args_extra))
        p.start()
        self.addCleanup(p.stop_and_check)
        return p, admin, inbound

    def check_scrape(self, host, port, admin):
        st, hdrs, body = get(host, port, "/metrics")
        self.assertEqual(st, 200, body[:300])
        self.assertTrue(hdrs.get("content-type", "").startswith("text/plain"), hdrs)
        text = body.decode()
        for name in ("picket_connections_total", "picket_svid_expiry_seconds",
                     "picket_reloads_total"):
            self.assertIn("\n# TYPE %s " % name, "\n" + text)
        st, _, _ = get(host, port, "/metrics", method="HEAD")
        self.assertEqual(st, 200)
        for path in ("/policy", "/readyz", "/healthz", "/", "/metrics/", "/metrics/../policy",
                     "/app-health/x", "/%6detrics"):
            st, _, body = get(host, port, path)
            self.assertEqual(st, 404, "%s: %d %r" % (path, st, body[:200]))
            self.assertNotIn(b"revision", body)
        for m in ("POST", "PUT", "DELETE"):
            st, _, _ = get(host, port, "/metrics", method=m)
            self.assertEqual(st, 405, m)
        # on the loopback admin listener they are all there
        self.assertEqual(get("127.0.0.1", admin, "/policy")[0], 200)
        self.assertEqual(get("127.0.0.1", admin, "/readyz")[0], 200)
        if host != "127.0.0.1":
            self.assertTrue(refuses(host, admin),
                            "the admin listener is reachable on %s" % host)

    def test_metrics_on_any_address(self):
        port = pt.free_port()
        p, admin, _ = self.start(metrics_bind="0.0.0.0:%d" % port)
        self.check_scrape(self.addr or "127.0.0.1", port, admin)
        ev = pt.wait_log_event(p, "started")
        self.assertEqual(ev.get("metrics"), "0.0.0.0:%d" % port)

    def test_metrics_on_one_address_from_the_flag(self):
        host = self.addr or "127.0.0.1"
        port = pt.free_port()
        p, admin, _ = self.start(metrics_bind="127.0.0.1:%d" % pt.free_port(),
                                 args_extra=["--metrics-bind", "%s:%d" % (host, port)])
        # (bound before the admin listener answers /healthz: start() waited for that)
        self.check_scrape(host, port, admin)
        if host != "127.0.0.1":
            self.assertTrue(refuses("127.0.0.1", port), "bound more than %s" % host)

    def test_admin_bind_refuses_what_metrics_bind_takes(self):
        up = self.upstream("h1")
        hosts = ["0.0.0.0", "::"] + ([self.addr] if self.addr else [])
        for host in hosts:
            path, cfg, inbound, admin = self.config(pt.upstream_url("h1", up))
            cfg["admin"] = {"bind": ("[%s]:%d" if ":" in host else "%s:%d") % (host, admin)}
            pt.write_config(path, cfg)
            p = pt.Picket(self.tmp, path, pki=self.pki)
            p.start(wait=False)
            rc = p.wait(30)
            self.assertEqual(rc, 2, "admin.bind %s: exit %s" % (host, rc))
            self.assertIn("admin.bind: must be a loopback address", p.stderr())
            self.assertEqual(p.stop_problems(2), [])
        # metrics.bind next to a loopback admin listener on the same port of a wildcard
        # is a clash, refused
        path, cfg, inbound, admin = self.config(pt.upstream_url("h1", up))
        cfg["metrics"] = {"bind": "0.0.0.0:%d" % admin}
        pt.write_config(path, cfg)
        p = pt.Picket(self.tmp, path, pki=self.pki)
        p.start(wait=False)
        self.assertEqual(p.wait(30), 2)
        self.assertIn("takes the port of metrics.bind", p.stderr())
        self.assertEqual(p.stop_problems(2), [])


if __name__ == "__main__":
    pt.main()
