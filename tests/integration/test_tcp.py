#!/usr/bin/python3
"""Opaque TCP (issue 18, item 2): tcp_inbound and tcp_outbound listeners, with a real
TLS client (python ssl, client certificate), a plain TCP client and an echo server.

    client (python ssl, SVID)  ->  B tcp_inbound (sa/picket)  ->  echo server
    app (plain TCP)  ->  A tcp_outbound (sa/client)  ->  B tcp_inbound  ->  echo server

Checked: bytes both ways; one decision per connection by the caller's identity only
(a rule naming paths never matches; a deny closes the connection and the echo server
never sees it), audited with protocol "tcp"; half-close propagated both ways through
the two sidecars' mTLS (the app shuts its write side and still reads the server's
answer, then EOF), and a TLS peer's bare TCP FIN (no close_notify) is its half-close
too; a server whose SPIFFE ID is not server_id is refused; 64 MiB
through the mesh with a sha256 on both ends and bounded peak RSS; idle tunnels cut
by limits.tunnel_idle_timeout.

A real protocol (the test_redis_* tests): Debian's redis-server, started by the test on a free
loopback port, driven by redis-cli (its own TLS with the client SVID straight to
tcp_inbound, and plain through the mesh), redis-cli --pipe and a raw RESP client:

    redis-cli --tls (SVID)  ->  B tcp_inbound  ->  redis-server
    redis-cli  ->  A tcp_outbound  ->  mTLS  ->  B tcp_inbound  ->  redis-server
    redis-cli  ->  A tcp_outbound  ->  mTLS  ->  redis-server --tls-port (server SVID)

SET/GET round trips, a 4 MiB value with a sha256 both ways, pipelined commands
answered in order, the records (protocol tcp, one per connection), and the policy:
a caller whose identity no rule allows is refused before redis sees a connection.

    /usr/bin/python3 tests/integration/test_tcp.py
"""
import hashlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import picket_test as pt  # noqa: E402

MIB = 1024 * 1024
ASAN_EXTRA = "quarantine_size_mb=4:thread_local_quarantine_size_kb=256"


class EchoServer:
    """127.0.0.1, a free port. Echoes every byte back as it arrives; on the client's
    EOF writes b"bye N\\n" (N: bytes received) and closes. Counts connections."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = 0
        self.done = []  # bytes received per finished connection
        self.stopped = False
        self.t = threading.Thread(target=self._accept, daemon=True)
        self.t.start()

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        n = 0
        try:
            while True:
                b = c.recv(256 * 1024)
                if not b:
                    break
                n += len(b)
                c.sendall(b)
            c.sendall(b"bye %d\n" % n)
        except OSError:
            pass
        finally:
            self.done.append(n)
            c.close()

    def stop(self):
        self.stopped = True
        self.sock.close()


def read_all(sock, timeout=60):
    sock.settimeout(timeout)
    out = b""
    while True:
        try:
            b = sock.recv(65536)
        except (ConnectionError, ssl.SSLError, socket.timeout) as e:
            return out, e
        if not b:
            return out, None
        out += b


# -- redis: Debian's redis-server and redis-cli (redis-server, redis-tools) ----------

def resp_encode(*args):
    """One command in RESP (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class RespError(Exception):
    """A -ERR reply."""


class RespClient:
    """A raw RESP client on a plain TCP connection: send() any number of commands at
    once, reply() reads the next reply (RespError for an error reply; EOFError when the
    server closed before a whole reply)."""

    def __init__(self, port, timeout=30):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.f = self.sock.makefile("rb")

    def send(self, *commands):
        self.sock.sendall(b"".join(resp_encode(*c) for c in commands))

    def _line(self):
        line = self.f.readline()
        if not line.endswith(b"\r\n"):
            raise EOFError("connection ended in a reply: %r" % line)
        return line[:-2]

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            return RespError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            if len(data) != n + 2 or data[-2:] != b"\r\n":
                raise EOFError("connection ended in a bulk string")
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise ValueError("not RESP: %r" % line)

    def call(self, *args):
        self.send(args)
        r = self.reply()
        if isinstance(r, RespError):
            raise r
        return r

    def close(self):
        self.f.close()
        self.sock.close()


class RedisServer:
    """redis-server in the foreground on 127.0.0.1, a free port, no persistence, its
    files in `workdir`; ready once it answers PING. call() goes over a direct
    connection (not through picket) opened before the stats were reset, so INFO's
    total_connections_received counts only the connections picket made, and commands()
    leaves out what call() sent. Stopped by PID."""

    def __init__(self, workdir, tls_pki=None):
        self.server = pt.require_tool("redis-server", "redis-server")
        self.port = pt.free_port()
        self.out_path = os.path.join(workdir, "redis-%d.out" % self.port)
        self._out = open(self.out_path, "wb")
        argv = [self.server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--dir", workdir, "--logfile", "",
                "--protected-mode", "yes", "--databases", "1"]
        self.tls_port = None
        if tls_pki is not None:
            # redis's own TLS as well, with the server SVID; clients need a cert of the CA
            self.tls_port = pt.free_port()
            argv += ["--tls-port", str(self.tls_port), "--tls-cert-file", tls_pki.cert("server"),
                     "--tls-key-file", tls_pki.key("server"), "--tls-ca-cert-file", tls_pki.ca,
                     "--tls-auth-clients", "yes"]
        self.popen = subprocess.Popen(
            argv,
            cwd=workdir, stdin=subprocess.DEVNULL, stdout=self._out,
            stderr=subprocess.STDOUT, start_new_session=True)
        pt._register(self)
        self.admin = None
        self.admin_calls = {}  # command stat name -> calls made by call()
        deadline = time.monotonic() + 15
        while self.admin is None:
            if self.popen.poll() is not None or time.monotonic() > deadline:
                out = self.output()
                self.kill()
                raise AssertionError("redis-server did not answer PING on %d: %s"
                                     % (self.port, out[-2000:]))
            try:
                c = RespClient(self.port, timeout=5)
            except OSError:
                time.sleep(0.05)
                continue
            try:
                if c.call("PING") == b"PONG":
                    self.admin = c
                    continue
            except (OSError, EOFError, RespError):
                pass  # still loading
            c.close()
            time.sleep(0.05)
        self.call("CONFIG", "RESETSTAT")

    def call(self, *args):
        """One command on the direct connection; its reply."""
        r = self.admin.call(*args)
        name = str(args[0]).lower()
        if name == "config":
            name += "|" + str(args[1]).lower()
        self.admin_calls[name] = self.admin_calls.get(name, 0) + 1
        return r

    def output(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode(errors="replace")

    def info(self, section):
        """INFO `section` as a dict (values as strings)."""
        out = {}
        for line in self.call("INFO", section).decode().splitlines():
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                out[k] = v
        return out

    def connections(self):
        """Client connections redis accepted since the reset (the admin one excluded)."""
        return int(self.info("stats")["total_connections_received"])

    def commands(self):
        """{command: calls} from INFO commandstats since the reset, less the ones call()
        made (an INFO is counted once it has run: this one is not in its own answer)."""
        before = dict(self.admin_calls)
        out = {}
        for k, v in self.info("commandstats").items():
            name = k[len("cmdstat_"):]
            calls = int(v.split(",")[0].split("=")[1]) - before.get(name, 0)
            if calls:
                out[name] = calls
        return out

    def stop(self, timeout=10.0):
        if self.admin is not None:
            self.admin.close()
            self.admin = None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pt._kill_group(self.popen)
                self.popen.wait(5)
        self._close()

    def kill(self):
        if self.popen.poll() is None:
            pt._kill_group(self.popen)
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self._close()

    def _close(self):
        pt._unregister(self)
        try:
            self._out.close()
        except OSError:
            pass


def redis_cli(port, *args, tls_cert=None, pki=None, stdin=None, timeout=60):
    """Runs redis-cli against 127.0.0.1:port (with tls_cert: its own TLS with that SVID
    and the test CA). Returns (exit code, stdout bytes, stderr text)."""
    cli = pt.require_tool("redis-cli", "redis-tools")
    argv = [cli, "-h", "127.0.0.1", "-p", str(port)]
    if tls_cert:
        argv += ["--tls", "--cert", pki.cert(tls_cert), "--key", pki.key(tls_cert),
                 "--cacert", pki.ca, "--sni", "localhost"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDISCLI_")}
    r = subprocess.run(argv + list(args), input=stdin, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout, env=env,
                       stdin=None if stdin is not None else subprocess.DEVNULL)
    return r.returncode, r.stdout, r.stderr.decode(errors="replace")


class TCP(pt.TestCase):

    def echo(self):
        e = EchoServer()
        self.addCleanup(e.stop)
        return e

    def inbound(self, echo, policy_rules=None, limits=None, env=None):
        """Picket B: one tcp_inbound listener to the echo server. Returns (port, proc, admin)."""
        port = pt.free_port()
        path, cfg, _, admin = self.config("h2c://127.0.0.1:1", name="picket-b.json",
                                          inbound_port=port)
        cfg["listeners"] = [{"name": "db", "kind": "tcp_inbound", "bind": "127.0.0.1:%d" % port,
                             "upstream": "tcp://127.0.0.1:%d" % echo.port}]
        if policy_rules is not None:
            cfg["policy"] = {"file": pt.write_policy(os.path.join(self.tmp, "policy.json"),
                                                     policy_rules)}
        if limits:
            cfg["limits"] = limits
        pt.write_config(path, cfg)
        proc = self.picket(path, inbound_port=port, admin_port=admin, env_extra=env)
        return port, proc, admin

    def outbound(self, b_port, server_id=pt.SERVER_ID, limits=None, env=None):
        """Picket A: a tcp_outbound listener to B, with the client SVID. Returns (port, proc)."""
        port = pt.free_port()
        identity = {"cert": self.pki.cert("client"), "key": self.pki.key("client"),
                    "trust_bundles": {pt.TRUST_DOMAIN: self.pki.ca}}
        path, cfg, _, admin = self.config("h2c://127.0.0.1:1", name="picket-a.json",
                                          inbound_port=port, identity=identity)
        cfg["listeners"] = [{"name": "to-db", "kind": "tcp_outbound",
                             "bind": "127.0.0.1:%d" % port,
                             "upstream": "127.0.0.1:%d" % b_port, "server_id": server_id}]
        cfg["log"] = {"level": "info", "access": os.path.join(self.tmp, "access-a.jsonl"),
                      "audit": os.path.join(self.tmp, "audit-a.jsonl")}
        if limits:
            cfg["limits"] = limits
        pt.write_config(path, cfg)
        proc = self.picket(path, inbound_port=port, admin_port=admin, env_extra=env)
        return port, proc

    def tls_connect(self, port, cert="client"):
        ctx = pt.tls_context(self.pki, cert, alpn=None)
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30),
                            server_hostname="localhost")
        self.addCleanup(s.close)
        return s

    def audit(self, n=1, name="audit.jsonl"):
        return pt.read_jsonl(os.path.join(self.tmp, name), min_lines=n)

    def access(self, n=1, name="access.jsonl"):
        return pt.read_jsonl(os.path.join(self.tmp, name), min_lines=n)

    # -- tcp_inbound -----------------------------------------------------------

    def test_inbound_echo_and_records(self):
        echo = self.echo()
        port, proc, admin = self.inbound(echo)
        s = self.tls_connect(port)
        s.sendall(b"hello through picket")
        got = b""
        s.settimeout(30)
        while len(got) < 20:
            got += s.recv(100)
        self.assertEqual(got, b"hello through picket")
        s.sendall(b"again")
        got = b""
        while len(got) < 5:
            got += s.recv(100)
        self.assertEqual(got, b"again")
        s.close()
        recs = self.audit()
        self.assertEqual(recs[0].get("protocol"), "tcp", recs[0])
        self.assertEqual(recs[0].get("decision"), "allow", recs[0])
        self.assertEqual(recs[0].get("peer"), pt.CLIENT_ID, recs[0])
        acc = self.access()
        self.assertEqual(acc[0].get("proto"), "tcp", acc[0])
        self.assertEqual(acc[0].get("bytes_in"), 25, acc[0])
        self.assertGreaterEqual(acc[0].get("bytes_out"), 25, acc[0])
        self.assertEqual(pt.metric(admin, "picket_tcp_connections_total", 0, listener="db",
                                   decision="allow"), 1)

    def test_inbound_policy_once_by_identity(self):
        """A rule naming paths never matches a TCP connection; one naming only the caller
        does. A denied connection is closed before any byte reaches the upstream."""
        echo = self.echo()
        port, proc, admin = self.inbound(echo, policy_rules=[
            {"id": "http-only", "action": "allow", "from": [pt.CLIENT_ID], "paths": ["/**"]},
            {"id": "get-only", "action": "allow", "from": [pt.CLIENT_ID], "methods": ["GET"]},
        ])
        s = self.tls_connect(port)
        try:
            s.sendall(b"let me in")
        except OSError:
            pass
        data, _ = read_all(s, timeout=30)
        self.assertEqual(data, b"", "a denied connection gets no byte")
        recs = self.audit()
        self.assertEqual(recs[0].get("decision"), "deny", recs[0])
        self.assertEqual(recs[0].get("rule"), "default", recs[0])
        self.assertEqual(recs[0].get("protocol"), "tcp", recs[0])
        self.assertEqual(recs[0].get("reason"), "policy_deny", recs[0])
        self.assertEqual(echo.conns, 0, "the upstream never saw the denied connection")
        # picket policy lint says so
        rc, out, err = pt.run_picket_cli(["policy", "lint", os.path.join(self.tmp, "policy.json")])
        self.assertEqual(rc, 0, err)
        self.assertIn('2 of 2 rules (first: "http-only")', err)
        self.assertIn("never match an opaque TCP connection", err)
        self.assertEqual(pt.metric(admin, "picket_tcp_connections_total", 0, listener="db",
                                   decision="deny"), 1)

    def test_inbound_policy_allow_by_identity(self):
        echo = self.echo()
        port, proc, admin = self.inbound(echo, policy_rules=[
            {"id": "db-clients", "action": "allow", "from": [pt.CLIENT_ID]}])
        s = self.tls_connect(port)
        s.sendall(b"x")
        s.settimeout(30)
        self.assertEqual(s.recv(10), b"x")
        recs = self.audit()
        self.assertEqual((recs[0].get("decision"), recs[0].get("rule")), ("allow", "db-clients"))

    def test_inbound_half_close_without_close_notify(self):
        """A TLS client that ends its side with a bare TCP FIN (no close_notify, as
        hiredis does) has half-closed, not failed: the echo server sees EOF and its
        answer still comes back; the access line has no reason."""
        echo = self.echo()
        port, proc, admin = self.inbound(echo)
        s = self.tls_connect(port)
        s.sendall(b"ping " * 1000)
        raw = socket.socket(fileno=os.dup(s.fileno()))
        raw.shutdown(socket.SHUT_WR)  # the TCP FIN alone: python's ssl sends no alert
        raw.close()
        data, err = read_all(s, timeout=30)
        self.assertIsNone(err, "a clean end, not %r" % (err,))
        self.assertEqual(data, b"ping " * 1000 + b"bye 5000\n")
        acc = self.access()
        self.assertEqual((acc[0].get("bytes_in"), acc[0].get("bytes_out")), (5000, 5009), acc[0])
        self.assertNotIn("reason", acc[0], acc[0])

    def test_inbound_needs_client_cert(self):
        echo = self.echo()
        port, proc, admin = self.inbound(echo)
        ctx = pt.tls_context(self.pki, cert=None, alpn=None)
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.addCleanup(raw.close)
        try:
            s = ctx.wrap_socket(raw, server_hostname="localhost")
            self.addCleanup(s.close)
            s.sendall(b"x")
            data, _ = read_all(s, timeout=30)
        except (ssl.SSLError, ConnectionError):
            data = b""
        self.assertEqual(data, b"")
        self.assertEqual(echo.conns, 0)

    def test_idle_timeout(self):
        echo = self.echo()
        port, proc, admin = self.inbound(echo, limits={"tunnel_idle_timeout": "1s"})
        s = self.tls_connect(port)
        s.sendall(b"x")
        s.settimeout(30)
        self.assertEqual(s.recv(10), b"x")
        t0 = time.monotonic()
        data, _ = read_all(s, timeout=30)  # nothing more is sent: picket ends it
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        self.assertNotIn(b"bye", data, "cut by picket, not ended by the echo server")
        acc = self.access()
        self.assertEqual(acc[0].get("reason"), "tunnel_idle", acc[0])

    # -- the mesh: tcp_outbound -> tcp_inbound -------------------------------------

    def test_mesh_half_close_both_ways(self):
        """The app shuts its write side; the echo server sees EOF through both sidecars
        (close_notify between them), answers, and its close comes back as EOF."""
        echo = self.echo()
        b_port, b_proc, _ = self.inbound(echo)
        a_port, a_proc = self.outbound(b_port)
        s = socket.create_connection(("127.0.0.1", a_port), timeout=30)
        self.addCleanup(s.close)
        s.sendall(b"ping " * 1000)
        s.shutdown(socket.SHUT_WR)
        data, err = read_all(s, timeout=30)
        self.assertIsNone(err, "clean EOF, not %r" % (err,))
        self.assertEqual(data, b"ping " * 1000 + b"bye 5000\n")
        # B's audit: A's SVID decided on; A's access line: forwarded
        recs = self.audit()
        self.assertEqual(recs[0].get("peer"), pt.CLIENT_ID, recs[0])
        acc_a = self.access(name="access-a.jsonl")
        self.assertEqual(acc_a[0].get("proto"), "tcp")
        self.assertEqual(acc_a[0].get("bytes_in"), 5000, acc_a[0])
        self.assertEqual(acc_a[0].get("bytes_out"), 5009, acc_a[0])
        self.assertNotIn("reason", acc_a[0], acc_a[0])

    def test_mesh_wrong_server_id(self):
        echo = self.echo()
        b_port, b_proc, _ = self.inbound(echo)
        a_port, a_proc = self.outbound(b_port, server_id="spiffe://example.org/ns/x/sa/other")
        s = socket.create_connection(("127.0.0.1", a_port), timeout=30)
        self.addCleanup(s.close)
        s.sendall(b"secret")
        data, _ = read_all(s, timeout=30)
        self.assertEqual(data, b"")
        ev = pt.wait_log_event(a_proc, "upstream_failed", timeout=30)
        self.assertEqual((ev or {}).get("reason"), "server_id_mismatch", ev)
        self.assertEqual(echo.conns, 0)

    def test_upstream_never_handshakes(self):
        """tcp_outbound to a server that accepts TCP and never speaks TLS: the app's
        connection is closed after limits.handshake_timeout, not the idle hour."""
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        self.addCleanup(silent.close)
        a_port, a_proc = self.outbound(silent.getsockname()[1],
                                       limits={"handshake_timeout": "1s"})
        s = socket.create_connection(("127.0.0.1", a_port), timeout=30)
        self.addCleanup(s.close)
        s.sendall(b"hello?")
        t0 = time.monotonic()
        data, err = read_all(s, timeout=30)
        self.assertEqual(data, b"")
        self.assertNotIsInstance(err, socket.timeout, "closed by picket (FIN or reset: the "
                                 "app's unread bytes), not by the test's timeout")
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        acc = self.access(name="access-a.jsonl")
        self.assertEqual(acc[0].get("reason"), "timeout", acc[0])

    def test_mesh_64mib_checksum_bounded_memory(self):
        echo = self.echo()
        env = {"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "detect_leaks=1") + ":" + ASAN_EXTRA}
        # a short idle timeout: a moving tunnel is never cut by it, and a stall would
        # end in seconds with both sidecars' byte counts in their access logs
        lim = {"tunnel_idle_timeout": "10s"}
        b_port, b_proc, _ = self.inbound(echo, env=env, limits=lim)
        a_port, a_proc = self.outbound(b_port, env=env, limits=lim)
        # warm-up: one small exchange, then the peak-RSS marks are reset
        s = socket.create_connection(("127.0.0.1", a_port), timeout=30)
        s.sendall(b"warm")
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(read_all(s)[0], b"warmbye 4\n")
        s.close()
        base = {p.pid: p.reset_peak_rss() for p in (a_proc, b_proc)}
        size = 64 * MIB
        block = bytes(range(256)) * 4096  # 1 MiB
        sent_hash = hashlib.sha256()
        s = socket.create_connection(("127.0.0.1", a_port), timeout=60)
        self.addCleanup(s.close)

        def send():
            for i in range(size // len(block)):
                b = block[i % 7:] + block[:i % 7]
                sent_hash.update(b)
                s.sendall(b)
            s.shutdown(socket.SHUT_WR)
        th = threading.Thread(target=send, daemon=True)
        th.start()
        got_hash = hashlib.sha256()
        n = 0
        tail = b""
        s.settimeout(120)
        while True:
            b = s.recv(1 << 20)
            if not b:
                break
            take = b[:max(0, size - n)]
            got_hash.update(take)
            n += len(take)
            tail += b[len(take):]
        th.join(60)
        if n != size:
            self.fail("%d of %d bytes came back; A: %r; B: %r" % (
                n, size, pt.read_jsonl(os.path.join(self.tmp, "access-a.jsonl"), timeout=5),
                pt.read_jsonl(os.path.join(self.tmp, "access.jsonl"), timeout=5)))
        self.assertEqual(got_hash.hexdigest(), sent_hash.hexdigest())
        self.assertEqual(tail, b"bye %d\n" % size)
        for p in (a_proc, b_proc):
            growth = (p.peak_rss_kib() - base[p.pid]) * 1024
            pt.log("picket pid %d: peak RSS growth %.1f MiB for 64 MiB each way"
                   % (p.pid, growth / MIB))
            self.assertLess(growth, 24 * MIB, "picket held the stream, not a bounded window")


    # -- a real protocol: redis-server and redis-cli ---------------------------------

    def redis(self, tls=False):
        r = RedisServer(self.tmp, tls_pki=self.pki if tls else None)
        self.addCleanup(r.stop)
        return r

    def test_redis_cli_tls_to_inbound(self):
        """redis-cli's own TLS with the client SVID straight to tcp_inbound: each
        redis-cli run is one connection, one allow decision, one access line."""
        r = self.redis()
        port, proc, admin = self.inbound(r)
        rc, out, err = redis_cli(port, "SET", "k1", "through picket", tls_cert="client",
                                 pki=self.pki)
        self.assertEqual((rc, out), (0, b"OK\n"), err)
        rc, out, err = redis_cli(port, "GET", "k1", tls_cert="client", pki=self.pki)
        self.assertEqual((rc, out), (0, b"through picket\n"), err)
        self.assertEqual(r.call("GET", "k1"), b"through picket", "the value is in redis")
        self.assertEqual(r.connections(), 2)
        self.assertEqual(r.commands(), {"set": 1, "get": 1})
        recs = self.audit(2)
        self.assertEqual(len(recs), 2, recs)
        for rec in recs:
            self.assertEqual((rec.get("protocol"), rec.get("decision"), rec.get("peer")),
                             ("tcp", "allow", pt.CLIENT_ID), rec)
        acc = self.access(2)
        self.assertEqual(len(acc), 2, acc)
        # bytes both ways, exactly the RESP of each exchange (SET: 42 in, +OK 5 out;
        # GET: 21 in, $14 bulk 21 out), in either order of the lines
        self.assertEqual(sorted((a.get("bytes_in"), a.get("bytes_out")) for a in acc),
                         [(21, 21), (42, 5)], acc)
        for a in acc:
            self.assertEqual((a.get("proto"), a.get("listener"), a.get("peer")),
                             ("tcp", "db", pt.CLIENT_ID), a)
            # redis-cli (hiredis) closes its TLS connection without a close_notify:
            # that is its EOF, not an error
            self.assertNotIn("reason", a, a)
        self.assertEqual(pt.metric(admin, "picket_tcp_connections_total", 0, listener="db",
                                   decision="allow"), 2)

    def test_redis_mesh(self):
        """redis-cli -> A tcp_outbound -> mTLS -> B tcp_inbound -> redis-server: SET/GET,
        a 4 MiB value each way with a sha256, redis-cli --pipe (mass insertion: every
        command sent before the replies are read), and a raw RESP client pipelining 900
        commands in one write whose replies must come back complete and in order."""
        r = self.redis()
        b_port, b_proc, b_admin = self.inbound(r)
        a_port, a_proc = self.outbound(b_port)

        rc, out, err = redis_cli(a_port, "SET", "greeting", "hello mesh")
        self.assertEqual((rc, out), (0, b"OK\n"), err)
        rc, out, err = redis_cli(a_port, "GET", "greeting")
        self.assertEqual((rc, out), (0, b"hello mesh\n"), err)

        # a large value: redis-cli -x takes it from stdin; GET prints it raw (not a tty)
        big = os.urandom(4 * MIB)
        want = hashlib.sha256(big).hexdigest()
        rc, out, err = redis_cli(a_port, "-x", "SET", "big", stdin=big)
        self.assertEqual((rc, out), (0, b"OK\n"), err)
        self.assertEqual(r.call("STRLEN", "big"), len(big))
        self.assertEqual(hashlib.sha256(r.call("GET", "big")).hexdigest(), want,
                         "the value redis stored is the one sent")
        rc, out, err = redis_cli(a_port, "GET", "big")
        self.assertEqual(rc, 0, err)
        self.assertEqual(len(out), len(big) + 1)
        self.assertEqual((hashlib.sha256(out[:-1]).hexdigest(), out[-1:]), (want, b"\n"),
                         "the value came back intact")

        # redis-cli --pipe: 1000 SET and 1000 INCR
        stream = b"".join(resp_encode("SET", "key:%d" % i, "val:%d" % i) +
                          resp_encode("INCR", "counter") for i in range(1000))
        rc, out, err = redis_cli(a_port, "--pipe", stdin=stream)
        self.assertEqual(rc, 0, (out, err))
        self.assertIn(b"errors: 0, replies: 2000", out, (out, err))
        self.assertEqual(r.call("GET", "counter"), b"1000")
        self.assertEqual(r.call("GET", "key:999"), b"val:999")
        self.assertEqual(r.call("DBSIZE"), 1003)  # greeting, big, counter, key:*

        # a raw RESP client: 900 commands in one write, replies read after
        c = RespClient(a_port)
        self.addCleanup(c.close)
        cmds = []
        for i in range(300):
            cmds += [("INCR", "counter"), ("ECHO", "m%d" % i), ("GET", "key:%d" % i)]
        c.send(*cmds)
        for i in range(300):
            self.assertEqual(c.reply(), 1001 + i)
            self.assertEqual(c.reply(), b"m%d" % i)
            self.assertEqual(c.reply(), b"val:%d" % i)
        c.close()

        # six connections, each one decision at B with A's SVID, all protocol tcp
        self.assertEqual(r.connections(), 6)
        calls = r.commands()
        self.assertEqual((calls.get("set"), calls.get("get"), calls.get("incr")),
                         (1002, 302, 1300), calls)
        recs = self.audit(6)
        self.assertEqual(len(recs), 6, recs)
        for rec in recs:
            self.assertEqual((rec.get("protocol"), rec.get("decision"), rec.get("peer")),
                             ("tcp", "allow", pt.CLIENT_ID), rec)
        for name, peer in (("access.jsonl", pt.CLIENT_ID), ("access-a.jsonl", None)):
            acc = self.access(6, name=name)
            self.assertEqual(len(acc), 6, (name, acc))
            for a in acc:
                self.assertEqual((a.get("proto"), a.get("peer")), ("tcp", peer), (name, a))
                self.assertNotIn("reason", a, (name, a))
            self.assertGreater(max(a["bytes_in"] for a in acc), len(big), (name, acc))
            self.assertGreater(max(a["bytes_out"] for a in acc), len(big), (name, acc))
        self.assertEqual(pt.metric(b_admin, "picket_tcp_connections_total", 0, listener="db",
                                   decision="allow"), 6)

    def test_redis_outbound_to_redis_tls(self):
        """tcp_outbound straight to redis-server's own TLS port: picket presents the
        workload's SVID (redis requires a client certificate of the CA) and checks that
        redis presents server_id; the app speaks plain RESP on loopback."""
        r = self.redis(tls=True)
        a_port, a_proc = self.outbound(r.tls_port)
        rc, out, err = redis_cli(a_port, "SET", "k", "over redis tls")
        self.assertEqual((rc, out), (0, b"OK\n"), err)
        rc, out, err = redis_cli(a_port, "GET", "k")
        self.assertEqual((rc, out), (0, b"over redis tls\n"), err)
        self.assertEqual(r.connections(), 2)
        self.assertEqual(r.commands(), {"set": 1, "get": 1})
        acc = self.access(2, name="access-a.jsonl")
        self.assertEqual(len(acc), 2, acc)
        self.assertEqual(sorted((a.get("bytes_in"), a.get("bytes_out")) for a in acc),
                         [(20, 21), (41, 5)], acc)
        for a in acc:
            self.assertEqual((a.get("proto"), a.get("decision")), ("tcp", "forward"), a)
            self.assertNotIn("reason", a, a)

    def test_redis_policy_deny(self):
        """B allows only the `other` identity. The mesh (A holds the client SVID) is
        refused: redis-cli gets no reply, and redis never sees a connection or a command.
        The same listener lets redis-cli --tls with the other SVID in."""
        r = self.redis()
        b_port, b_proc, b_admin = self.inbound(r, policy_rules=[
            {"id": "other-only", "action": "allow", "from": [pt.OTHER_ID]}])
        a_port, a_proc = self.outbound(b_port)

        rc, out, err = redis_cli(a_port, "SET", "denied-key", "x")
        self.assertNotEqual(rc, 0, (out, err))
        self.assertNotIn(b"OK", out, (out, err))
        # a raw client that pipelines before any reply: the connection ends, no reply
        c = RespClient(a_port)
        self.addCleanup(c.close)
        try:
            c.send(("SET", "denied-key", "y"), ("GET", "denied-key"))
        except OSError:
            pass  # already reset
        with self.assertRaises((EOFError, ConnectionError)):
            c.reply()
        c.close()

        recs = self.audit(2)
        self.assertEqual(len(recs), 2, recs)
        for rec in recs:
            self.assertEqual((rec.get("protocol"), rec.get("decision"), rec.get("peer"),
                              rec.get("rule"), rec.get("reason")),
                             ("tcp", "deny", pt.CLIENT_ID, "default", "policy_deny"), rec)
        self.assertEqual(r.connections(), 0, "redis never saw a denied connection")
        self.assertEqual(r.commands(), {}, "no command reached redis")
        self.assertEqual(pt.metric(b_admin, "picket_tcp_connections_total", 0, listener="db",
                                   decision="deny"), 2)

        # the identity the rule names gets through the same listener
        rc, out, err = redis_cli(b_port, "SET", "allowed-key", "z", tls_cert="other",
                                 pki=self.pki)
        self.assertEqual((rc, out), (0, b"OK\n"), err)
        recs = self.audit(3)
        self.assertEqual((recs[2].get("decision"), recs[2].get("rule"), recs[2].get("peer")),
                         ("allow", "other-only", pt.OTHER_ID), recs[2])
        self.assertEqual(r.connections(), 1)
        self.assertEqual(r.commands(), {"set": 1})
        self.assertEqual(r.call("EXISTS", "denied-key"), 0)


if __name__ == "__main__":
    pt.main(timeout=280)
