#!/usr/bin/python3
"""`picket dev` started as a user would: `picket dev --state DIR --port N`, its stdout
read until the printed curl line appears, and that exact line run (shlex.split). The
built-in demo upstream and --upstream (upstream.py, HTTP/1.1 and h2c); the identities
it prints and the certificates behind them; the starter policy (/admin/x is 403, an
edit is picked up); a second start reuses the CA and certificates; the admin line;
bad arguments; SIGTERM exits 0.

    /usr/bin/python3 tests/integration/test_dev.py [-k PATTERN]
"""
import hashlib
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import picket_test as pt  # noqa: E402

SERVER_ID = "spiffe://picket.dev/picket/gateway"
CLIENT_ID = "spiffe://picket.dev/dev/developer"
DEMO_BODY = b"hello from the picket demo upstream\n\nGET /\n"
FORBIDDEN = b"forbidden by policy\n"
# what `picket dev` makes in its state folder and must keep on a second start
MATERIAL = ("ca/ca.pem", "ca/ca.key", "server.pem", "server.key", "client.pem", "client.key",
            "policy.json")


def port_free(port):
    """Whether picket could listen on 127.0.0.1:port: bound as its listeners bind
    (SO_REUSEADDR), so a port whose old connections linger in TIME_WAIT counts as free.
    Without it, on a machine busy with other suites, most N+1 were in TIME_WAIT (bind(0)
    hands out odd ports, connect() uses the even ones) and 200 tries found no pair."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_port_pair():
    """N such that 127.0.0.1:N and N+1 are both free (picket dev's admin is on N+1)."""
    for _ in range(1000):
        n = pt.free_port()
        if n < 65534 and port_free(n + 1) and (n + 1) not in pt._HANDED_OUT:
            pt._HANDED_OUT.add(n + 1)
            return n
    raise RuntimeError("no free pair of ports")


def snapshot(state):
    out = {}
    for rel in MATERIAL:
        p = os.path.join(state, rel)
        with open(p, "rb") as f:
            out[rel] = (hashlib.sha256(f.read()).hexdigest(), os.stat(p).st_mtime_ns)
    return out


def curl_env():
    env = dict(os.environ)
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        env.pop(k, None)
    env["no_proxy"] = env["NO_PROXY"] = "*"
    return env


def run(argv, timeout=20):
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout, env=curl_env())
    return r.returncode, r.stdout, r.stderr.decode(errors="replace")


class Dev(pt.TestCase):

    def start_dev(self, state, port, upstream=None, timeout=60.0):
        """Starts `picket dev` (cwd = self.tmp) and waits for the printed curl line.
        Returns (Picket, stdout text, the curl line). Stopped with SIGTERM at test end,
        which must give exit status 0."""
        args = ["dev", "--state", state, "--port", str(port)]
        if upstream:
            args += ["--upstream", upstream]
        p = pt.Picket(self.tmp, None, name="picket-dev", args=args)

        def fin():
            rc = p.stop()
            if self.failed() or p.hung:
                pt.log("picket dev exit %s; stdout:\n%s\nstderr tail:\n%s" % (
                    rc, p.stdout(), p.stderr()[-3000:]))
            problems = p.stop_problems(expect_exit=0)
            if problems:
                self.fail("picket dev after SIGTERM: " + "\n".join(problems))
        self.addCleanup(fin)
        p.start(wait=False)
        deadline = time.monotonic() + timeout
        while True:
            out = p.stdout()
            m = re.search(r"^Call it:\n(  curl [^\n]+)\n", out, re.M)
            if m and "Stop: Ctrl-C" in out:
                return p, out, m.group(1).strip()
            if not p.alive():
                raise AssertionError("picket dev exited (%s) before printing the curl line;\n"
                                     "stdout:\n%s\nstderr:\n%s" % (p.popen.returncode, out,
                                                                  p.stderr()[-3000:]))
            if time.monotonic() > deadline:
                raise AssertionError("no curl line within %.0fs; stdout:\n%s" % (timeout, out))
            time.sleep(0.05)

    def run_line(self, line, url=None):
        """Runs the printed curl line exactly (optionally with another URL in place of its
        last argument); then once more with -w to learn the status. Returns
        (body, status, http_version), body and status of that second run, so they
        belong to one answer even when the policy changes between the two runs."""
        argv = shlex.split(line)
        self.assertEqual(argv[0], "curl")
        if url is not None:
            self.assertTrue(argv[-1].startswith("https://localhost:"), argv)
            argv[-1] = url
        rc, body, err = run(argv)
        self.assertEqual(rc, 0, "curl line failed (%d): %s\n%s" % (rc, " ".join(argv), err))
        body_file = os.path.join(self.tmp, "run_line.body")
        rc, out, err = run(argv + ["-sS", "-o", body_file, "-w", "%{http_code} %{http_version}"])
        self.assertEqual(rc, 0, err)
        with open(body_file, "rb") as f:
            body = f.read()
        status, ver = out.decode().split()
        return body, int(status), ver

    def stop_dev(self, p):
        rc = p.stop(15)
        self.assertFalse(p.killed, "picket dev did not exit within 15s of SIGTERM")
        self.assertEqual(rc, 0, "exit status after SIGTERM; stderr:\n%s" % p.stderr()[-2000:])
        p.check_sanitizers()

    # ------------------------------------------------------------------------------

    def test_first_start_demo_upstream(self):
        state = os.path.join(self.tmp, "state")
        port = free_port_pair()
        p, out, line = self.start_dev(state, port)
        # what it says
        self.assertIn("picket dev: made a dev CA for trust domain picket.dev", out)
        self.assertRegex(out, r"picket dev: demo upstream on http://127\.0\.0\.1:\d+\n")
        self.assertIn("picket dev gateway is listening on https://localhost:%d " % port, out)
        self.assertRegex(out, r"(?m)^  server identity: %s$" % re.escape(SERVER_ID))
        self.assertRegex(out, r"(?m)^  your identity:   %s \(allowed by %s\)$" % (
            re.escape(CLIENT_ID), re.escape(os.path.join(os.path.realpath(state), "policy.json"))))
        self.assertTrue(line.endswith("https://localhost:%d/" % port), line)
        for rel in MATERIAL + ("picket.json",):
            self.assertTrue(os.path.isfile(os.path.join(state, rel)), rel)
        for rel in ("ca/ca.key", "server.key", "client.key"):
            mode = os.stat(os.path.join(state, rel)).st_mode & 0o777
            self.assertEqual(mode & 0o077, 0, "%s is mode %o" % (rel, mode))

        # the printed curl line works as printed, over HTTP/2, and reaches the demo app
        body, status, ver = self.run_line(line)
        self.assertEqual(status, 200)
        self.assertEqual(ver, "2")
        self.assertTrue(body.startswith(DEMO_BODY), body[:300])
        text = body.decode(errors="replace").lower()
        self.assertIn(("x-forwarded-client-cert: by=%s;hash=" % SERVER_ID).lower(), text)
        self.assertIn((";uri=%s\n" % CLIENT_ID).lower(), text)
        self.assertRegex(text, r"\nx-request-id: [0-9a-f-]{36}\n")

        # the identities it printed are the ones in the certificates
        state_r = os.path.realpath(state)
        rc, vout, verr = pt.run_picket_cli(["cert", "verify", "--bundle",
                                            os.path.join(state_r, "ca", "ca.pem"),
                                            os.path.join(state_r, "client.pem")])
        self.assertEqual((rc, vout.strip()), (0, "ok " + CLIENT_ID), verr)
        rc, vout, verr = pt.run_picket_cli(["cert", "verify", "--bundle",
                                            os.path.join(state_r, "ca", "ca.pem"),
                                            os.path.join(state_r, "server.pem")])
        self.assertEqual((rc, vout.strip()), (0, "ok " + SERVER_ID), verr)

        # the starter policy denies /admin/**
        body, status, _ = self.run_line(line, "https://localhost:%d/admin/x" % port)
        self.assertEqual((status, body), (403, FORBIDDEN))
        body, status, _ = self.run_line(line, "https://localhost:%d/admin" % port)
        self.assertEqual((status, body), (403, FORBIDDEN))
        body, status, _ = self.run_line(line, "https://localhost:%d/administrator" % port)
        self.assertEqual(status, 200, body)

        # the admin line it printed works (admin on N+1)
        m = re.search(r"Admin: (curl http://127\.0\.0\.1:(\d+)/metrics)", out)
        self.assertIsNotNone(m, out)
        self.assertEqual(int(m.group(2)), port + 1)
        rc, mbody, err = run(shlex.split(m.group(1)) + ["-sS"])
        self.assertEqual(rc, 0, err)
        self.assertIn(b"picket_requests_total", mbody)
        st, _, _ = pt.http_get_plain(port + 1, "/readyz")
        self.assertEqual(st, 200)

        # a client without a certificate does not get in
        rc, _, _ = run(["curl", "-sS", "--cacert", os.path.join(state_r, "ca", "ca.pem"),
                        "https://localhost:%d/" % port])
        self.assertNotEqual(rc, 0)

        self.stop_dev(p)
        self.assertFalse(pt.wait_port(port, 0.3), "listener still open after exit")

    def test_second_start_reuses_material(self):
        state = os.path.join(self.tmp, "state")
        port = free_port_pair()
        p, out, line = self.start_dev(state, port)
        self.stop_dev(p)
        before = snapshot(state)
        # a user's edit of the policy survives a restart
        pol_path = os.path.join(state, "policy.json")
        with open(pol_path) as f:
            pol = json.load(f)
        pol["rules"].append({"id": "mine", "action": "deny", "paths": ["/private/**"]})
        with open(pol_path, "w") as f:
            json.dump(pol, f, indent=2)
        before["policy.json"] = snapshot(state)["policy.json"]
        time.sleep(0.05)

        port2 = free_port_pair()
        p2, out2, line2 = self.start_dev(state, port2)
        self.assertNotIn("made a dev CA", out2)
        self.assertEqual(snapshot(state), before, "CA, certificates or policy rewritten")
        self.assertEqual(line2, line.replace(":%d/" % port, ":%d/" % port2))
        body, status, _ = self.run_line(line2)
        self.assertEqual(status, 200)
        self.assertTrue(body.startswith(DEMO_BODY), body[:200])
        body, status, _ = self.run_line(line2, "https://localhost:%d/private/x" % port2)
        self.assertEqual((status, body), (403, FORBIDDEN))
        body, status, _ = self.run_line(line2, "https://localhost:%d/admin/x" % port2)
        self.assertEqual((status, body), (403, FORBIDDEN))
        self.stop_dev(p2)
        self.assertEqual(snapshot(state), before)

    def test_upstream_flag(self):
        for kind in ("h1", "h2c"):
            with self.subTest(kind=kind):
                up = self.upstream(kind, name="mine-%s" % kind)
                state = os.path.join(self.tmp, "state-" + kind)
                port = free_port_pair()
                p, out, line = self.start_dev(state, port, upstream=pt.upstream_url(kind, up))
                self.assertNotIn("demo upstream", out)
                body, status, ver = self.run_line(line)
                self.assertEqual((status, ver), (200, "2"))
                self.assertEqual(body, b"hello from upstream\n")
                body, status, _ = self.run_line(line, "https://localhost:%d/headers" % port)
                self.assertEqual(status, 200)
                seen = json.loads(body.decode())
                self.assertEqual(seen["upstream"], "mine-%s" % kind)
                xfcc = seen["headers"].get("x-forwarded-client-cert", "")
                self.assertTrue(xfcc.startswith("By=%s;Hash=" % SERVER_ID), xfcc)
                self.assertTrue(xfcc.endswith(";URI=%s" % CLIENT_ID), xfcc)
                body, status, _ = self.run_line(line, "https://localhost:%d/admin/x" % port)
                self.assertEqual((status, body), (403, FORBIDDEN))
                self.stop_dev(p)

    def test_policy_edit_is_picked_up(self):
        """README: edit .picket-dev/policy.json and picket picks the change up within 5 s."""
        state = os.path.join(self.tmp, "state")
        port = free_port_pair()
        p, out, line = self.start_dev(state, port)
        url = "https://localhost:%d/admin/x" % port
        self.assertEqual(self.run_line(line, url)[1], 403)
        pol_path = os.path.join(state, "policy.json")
        with open(pol_path) as f:
            pol = json.load(f)
        pol["revision"] = 2
        pol["rules"] = [r for r in pol["rules"] if r["id"] != "no-admin"]
        tmp = pol_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(pol, f, indent=2)
        os.replace(tmp, pol_path)
        deadline = time.monotonic() + 60.0  # a wait for the reload, not a speed bound
        status = 403
        while time.monotonic() < deadline:
            body, status, _ = self.run_line(line, url)
            if status == 200:
                break
            time.sleep(0.25)
        self.assertEqual(status, 200, "policy edit not picked up within 60s")
        self.assertTrue(body.startswith(b"hello from the picket demo upstream\n\nGET /admin/x\n"),
                        body[:200])
        self.stop_dev(p)

    def test_state_path_with_space(self):
        """The printed line must work when pasted into a shell (or shlex.split) even when
        the state folder's path has a space in it."""
        state = os.path.join(self.tmp, "my state")
        port = free_port_pair()
        p, out, line = self.start_dev(state, port)
        body, status, _ = self.run_line(line)
        self.assertEqual(status, 200)
        self.assertTrue(body.startswith(DEMO_BODY))

    def test_bad_arguments(self):
        state = os.path.join(self.tmp, "state")
        for args in (["--port", "0"], ["--port", "65535"], ["--port", "x"],
                     ["--upstream", "https://127.0.0.1:1"], ["--upstream", "127.0.0.1:1"],
                     ["--bogus"], ["--port"]):
            rc, out, err = pt.run_picket_cli(["dev", "--state", state] + args, cwd=self.tmp)
            self.assertEqual(rc, 2, "%s: %s %s" % (args, out, err))
            self.assertTrue(err.strip(), "%s: no message" % args)
        self.assertFalse(os.path.exists(os.path.join(state, "ca")),
                         "bad arguments must not make a CA")

    def test_admin_port_busy(self):
        """N+1 already taken: picket dev refuses to start (non-zero) instead of running
        without its admin listener."""
        port = free_port_pair()
        blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(blocker.close)
        blocker.bind(("127.0.0.1", port + 1))
        blocker.listen(1)
        state = os.path.join(self.tmp, "state")
        p = pt.Picket(self.tmp, None, name="picket-dev",
                      args=["dev", "--state", state, "--port", str(port)])
        self.addCleanup(p.kill)
        p.start(wait=False)
        rc = p.wait(30)
        self.assertIsNotNone(rc, "picket dev kept running with its admin port taken")
        self.assertNotEqual(rc, 0)
        p.check_sanitizers()


if __name__ == "__main__":
    pt.main(timeout=280)
