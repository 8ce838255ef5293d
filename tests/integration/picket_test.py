"""Shared helpers for picket's integration tests (tests/integration/test_*.py).

A test script starts with

    import os, sys
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import picket_test as pt

and runs with /usr/bin/python3 from any directory. ctest sets PICKET_BIN; without it
the binary is looked up in build-test/, build/ and build-release/ under the repo root.

What is here:
  * free_port(): a free 127.0.0.1 port (never handed out twice in one process)
  * PKI: a throwaway SPIFFE PKI made with the openssl CLI (ECDSA P-256, 1 h leaves)
  * Proc / start_upstream() / start_grpc_app(): helper servers, stopped by PID
  * Picket: the picket daemon under test (start, wait ready, stop, sanitizer check)
  * make_config() / write_config(): DESIGN.md "Config"-shaped JSON
  * curl(): one request with curl over mTLS, returns status/headers/body
  * TestCase: a unittest base class with a temp dir, the PKI and cleanups
  * main(): unittest.main with a watchdog so a script never runs unbounded
"""
import atexit
import hashlib
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
REPO = os.path.dirname(os.path.dirname(HERE))
PYTHON = "/usr/bin/python3"

TRUST_DOMAIN = "example.org"
SERVER_ID = "spiffe://example.org/ns/default/sa/picket"
CLIENT_ID = "spiffe://example.org/ns/default/sa/client"
OTHER_ID = "spiffe://example.org/ns/default/sa/other"

SANITIZER_MARKERS = ("AddressSanitizer", "runtime error:", "LeakSanitizer",
                     "UndefinedBehaviorSanitizer", "ThreadSanitizer")

# Client HTTP versions the tests loop over; PICKET_TEST_HTTP=2 runs only the h2 variants.
KNOWN_HTTP_VERSIONS = ("2", "1.1")


def parse_http_versions(value):
    """PICKET_TEST_HTTP's value ("2", "1.1", "2,1.1", ...) as a tuple of versions, in
    order, without repeats. Anything else (an unknown version, an empty list) raises
    ValueError: a typo must not silently empty every protocol loop."""
    out = []
    for v in value.split(","):
        v = v.strip()
        if v not in KNOWN_HTTP_VERSIONS:
            raise ValueError("PICKET_TEST_HTTP=%r: unknown HTTP version %r (use a comma list of %s)"
                             % (value, v, ", ".join(KNOWN_HTTP_VERSIONS)))
        if v not in out:
            out.append(v)
    return tuple(out)


try:
    HTTP_VERSIONS = parse_http_versions(os.environ.get("PICKET_TEST_HTTP", "2,1.1"))
except ValueError as _e:
    raise SystemExit("picket_test: %s" % _e)

VERBOSE = os.environ.get("PICKET_TEST_VERBOSE") == "1"
KEEP = os.environ.get("PICKET_TEST_KEEP") == "1"  # keep temp dirs


def log(msg):
    sys.stderr.write("[picket_test %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


# --------------------------------------------------------------------------
# tools and modules the tests need. A missing one FAILS the test that needs it and
# names the Debian package (`bash deploy/install-deps.sh` installs them all): a
# skip would report green for a feature nobody checked.

class MissingTool(AssertionError):
    """A program or Python module a test needs is not installed."""


def require_tool(name, package, path=None):
    """The path of program `name` (or of `path` when given); raises MissingTool naming
    the Debian `package` when it is not there."""
    found = path if path else shutil.which(name)
    if not found or not os.access(found, os.X_OK):
        raise MissingTool("%s is not installed (%s): apt-get install %s, or run "
                          "bash deploy/install-deps.sh" % (name, path or "not on PATH", package))
    return found


def require_module(name, package):
    """Imports and returns Python module `name`; raises MissingTool naming the Debian
    `package` when /usr/bin/python3 cannot import it."""
    import importlib
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise MissingTool("Python module %s cannot be imported by %s (%s): apt-get install %s, "
                          "or run bash deploy/install-deps.sh" % (name, sys.executable, e, package))


# --------------------------------------------------------------------------
# process bookkeeping: everything started here is stopped by PID at exit, and
# the watchdog kills process groups if a script overruns.

_LIVE = []  # Proc and Picket objects that may still run
_LIVE_LOCK = threading.Lock()


def _register(p):
    with _LIVE_LOCK:
        _LIVE.append(p)


def _unregister(p):
    with _LIVE_LOCK:
        if p in _LIVE:
            _LIVE.remove(p)


def _kill_all():
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for p in procs:
        try:
            p.kill()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


atexit.register(_kill_all)


def _kill_group(popen):
    """SIGKILL the process group of a child started with start_new_session."""
    try:
        os.killpg(popen.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        popen.kill()
    except ProcessLookupError:
        pass


# --------------------------------------------------------------------------
# ports

_HANDED_OUT = set()


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    for _ in range(100):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        finally:
            s.close()
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free port")


def wait_port(port, timeout=10.0, proc=None, addr="127.0.0.1"):
    """Waits until addr:port (default 127.0.0.1) accepts a TCP connection."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((addr, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def port_refuses(port, addr="127.0.0.1"):
    """True if a TCP connect to addr:port (default 127.0.0.1) is refused."""
    try:
        with socket.create_connection((addr, port), timeout=1.0):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return True


# --------------------------------------------------------------------------
# PKI (openssl CLI)

def _run(cmd, cwd=None, timeout=30):
    r = subprocess.run(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), r.returncode,
                                                   r.stderr.decode(errors="replace")))
    return r.stdout


def _asn1_utc(t):
    return time.strftime("%y%m%d%H%M%SZ", time.gmtime(t))


class PKI:
    """Two CAs and four leaves, all ECDSA P-256:

    ca        CA of trust domain example.org (ca.pem, ca.key)
    otherca   an unrelated CA (otherca.pem)
    server    spiffe://example.org/ns/default/sa/picket, DNS localhost, IP 127.0.0.1
    client    spiffe://example.org/ns/default/sa/client
    other     spiffe://example.org/ns/default/sa/other
    evil      issued by otherca with the *client's* ID

    Leaves: CA:FALSE, keyUsage digitalSignature, EKU serverAuth+clientAuth,
    valid from 5 minutes ago for 1 hour. Files: NAME.pem (leaf only), NAME.key
    (PKCS#8 PEM). pki.cert(name) and pki.key(name) give the paths."""

    LEAVES = {
        "server": ("ca", SERVER_ID, ["localhost"], ["127.0.0.1"]),
        "client": ("ca", CLIENT_ID, [], []),
        "other": ("ca", OTHER_ID, [], []),
        "evil": ("otherca", CLIENT_ID, [], []),
    }

    def __init__(self, directory):
        require_tool("openssl", "openssl")
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self._make_ca("ca", "picket test CA example.org", "spiffe://example.org")
        self._make_ca("otherca", "picket test other CA", "spiffe://example.org")
        for name, (ca, uri, dns, ips) in self.LEAVES.items():
            self.issue(name, ca, uri, dns, ips)

    def cert(self, name):
        return os.path.join(self.dir, name + ".pem")

    def key(self, name):
        return os.path.join(self.dir, name + ".key")

    @property
    def ca(self):
        return self.cert("ca")

    def _genkey(self, name):
        _run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-out", self.key(name)])

    def _make_ca(self, name, cn, uri):
        self._genkey(name)
        cnf = os.path.join(self.dir, name + ".req.cnf")
        with open(cnf, "w") as f:
            f.write("[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = v3_ca\n"
                    "[dn]\nCN = %s\n"
                    "[v3_ca]\nbasicConstraints = critical, CA:TRUE\n"
                    "keyUsage = critical, keyCertSign, cRLSign\n"
                    "subjectKeyIdentifier = hash\nsubjectAltName = URI:%s\n" % (cn, uri))
        _run(["openssl", "req", "-x509", "-new", "-config", cnf, "-key", self.key(name),
              "-sha256", "-days", "2", "-set_serial", str(int.from_bytes(os.urandom(8), "big")),
              "-out", self.cert(name)])
        cadir = os.path.join(self.dir, name + ".db")
        os.makedirs(os.path.join(cadir, "new"), exist_ok=True)
        open(os.path.join(cadir, "index.txt"), "w").close()
        with open(os.path.join(cadir, "serial"), "w") as f:
            f.write(os.urandom(8).hex().upper() + "\n")
        with open(os.path.join(cadir, "ca.cnf"), "w") as f:
            f.write("[ca]\ndefault_ca = this_ca\n"
                    "[this_ca]\ndir = %s\ndatabase = $dir/index.txt\nnew_certs_dir = $dir/new\n"
                    "serial = $dir/serial\ncertificate = %s\nprivate_key = %s\n"
                    "default_md = sha256\npolicy = any_dn\nunique_subject = no\n"
                    "copy_extensions = none\nemail_in_dn = no\n"
                    "[any_dn]\ncommonName = supplied\n" % (cadir, self.cert(name), self.key(name)))

    def issue(self, name, ca, uri, dns=(), ips=(), lifetime=3600, not_before=None,
              ca_flag=False, key_usage="critical, digitalSignature"):
        """Issues NAME.pem/NAME.key from CA `ca`. Extra knobs for tests of bad SVIDs."""
        self._genkey(name)
        csr = os.path.join(self.dir, name + ".csr")
        _run(["openssl", "req", "-new", "-key", self.key(name), "-subj", "/CN=" + name,
              "-out", csr])
        ext = os.path.join(self.dir, name + ".ext")
        sans = []
        if uri:
            sans.append("URI:" + uri)
        sans += ["DNS:" + d for d in dns] + ["IP:" + i for i in ips]
        with open(ext, "w") as f:
            f.write("[leaf]\nbasicConstraints = critical, CA:%s\n" % ("TRUE" if ca_flag else "FALSE"))
            f.write("keyUsage = %s\n" % key_usage)
            f.write("extendedKeyUsage = serverAuth, clientAuth\n"
                    "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n")
            if sans:
                f.write("subjectAltName = %s\n" % ", ".join(sans))
        nb = time.time() - 300 if not_before is None else not_before
        cadir = os.path.join(self.dir, ca + ".db")
        _run(["openssl", "ca", "-batch", "-notext", "-config", os.path.join(cadir, "ca.cnf"),
              "-extfile", ext, "-extensions", "leaf", "-startdate", _asn1_utc(nb),
              "-enddate", _asn1_utc(nb + 300 + lifetime), "-in", csr, "-out", self.cert(name)])
        return self.cert(name), self.key(name)

    def der_sha256(self, name):
        """Lowercase hex SHA-256 of the DER encoding of NAME.pem (the XFCC Hash)."""
        with open(self.cert(name)) as f:
            der = ssl.PEM_cert_to_DER_cert(f.read())
        return hashlib.sha256(der).hexdigest()


_PKI = None
_PKI_DIR = None


def shared_pki():
    """One PKI per test process (made on first use, removed at exit)."""
    global _PKI, _PKI_DIR
    if _PKI is None:
        _PKI_DIR = tempfile.mkdtemp(prefix="picket-pki-")
        if not KEEP:
            atexit.register(shutil.rmtree, _PKI_DIR, True)
        _PKI = PKI(_PKI_DIR)
    return _PKI


# --------------------------------------------------------------------------
# helper processes

class Proc:
    """A helper server (upstream.py, grpc_app.py): its own process group, output in
    files, "ready" awaited on stdout, stopped by PID."""

    def __init__(self, argv, workdir, name, ready_timeout=15.0, env=None):
        self.name = name
        self.argv = argv
        self.out_path = os.path.join(workdir, name + ".out")
        self.err_path = os.path.join(workdir, name + ".err")
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        self.popen = subprocess.Popen(argv, cwd=HERE, stdin=subprocess.DEVNULL, stdout=self._out,
                                      stderr=self._err, start_new_session=True, env=env)
        _register(self)
        deadline = time.monotonic() + ready_timeout
        while True:
            with open(self.out_path, "rb") as f:
                if b"ready" in f.read():
                    break
            if self.popen.poll() is not None:
                self.stop()
                raise RuntimeError("%s exited (%s) before ready: %s" % (
                    name, self.popen.returncode, self.tail()))
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("%s not ready in %.0fs: %s" % (name, ready_timeout, self.tail()))
            time.sleep(0.03)

    @property
    def pid(self):
        return self.popen.pid

    def tail(self, n=2000):
        try:
            with open(self.err_path, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout=5.0):
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                _kill_group(self.popen)
                self.popen.wait(5)
        else:
            # leader gone; make sure nothing of its group lingers
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._close()
        return self.popen.returncode

    def kill(self):
        if self.popen.poll() is None:
            _kill_group(self.popen)
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self._close()

    def _close(self):
        _unregister(self)
        for f in (self._out, self._err):
            try:
                f.close()
            except OSError:
                pass


def start_upstream(workdir, kind, port=None, name=None, log_requests=True):
    """kind: "h1" or "h2c". `name` goes into every response's x-upstream-name header.
    With log_requests (the default) the upstream notes each request as its head arrives
    (upstream_requests(), TestCase.wait_upstream_request()). Returns (Proc, port)."""
    assert kind in ("h1", "h2c")
    port = port or free_port()
    argv = [PYTHON, os.path.join(HERE, "upstream.py"), "--" + kind, str(port)]
    if name:
        argv += ["--name", name]
    if log_requests:
        argv.append("--log-requests")
    argv += ["--hold-dir", workdir]  # GET /hold/NAME waits for workdir/hold-NAME
    p = Proc(argv, workdir, "upstream-%s-%d" % (kind, port))
    p.port = port
    return p, port


def upstream_requests(proc):
    """[(method, path)] of the requests an upstream started with log_requests has seen
    so far (heads that arrived; the answers may still be pending)."""
    out = []
    try:
        with open(proc.out_path, "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return out
    for ln in text.splitlines():
        parts = ln.split(" ", 2)
        if len(parts) == 3 and parts[0] == "request":
            out.append((parts[1], parts[2]))
    return out


def upstream_url(kind, port):
    return ("h2c://127.0.0.1:%d" if kind == "h2c" else "http://127.0.0.1:%d") % port


def start_grpc_app(workdir, port=None):
    port = port or free_port()
    p = Proc([PYTHON, os.path.join(HERE, "grpc_app.py"), str(port)], workdir, "grpc-app-%d" % port)
    p.port = port
    return p, port


# --------------------------------------------------------------------------
# the picket binary

def picket_bin():
    b = os.environ.get("PICKET_BIN")
    if b:
        return b
    for d in ("build-test", "build", "build-release"):
        c = os.path.join(REPO, d, "picket")
        if os.access(c, os.X_OK):
            return c
    return os.path.join(REPO, "build-test", "picket")


def http_get_plain(port, path, timeout=30.0, host="127.0.0.1"):
    """A plain HTTP/1.1 GET (for the admin listener). Returns (status, headers, body)."""
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def tls_context(pki, cert="client", alpn=("h2", "http/1.1")):
    ctx = ssl.create_default_context(cafile=pki.ca)
    ctx.check_hostname = True
    if cert:
        ctx.load_cert_chain(pki.cert(cert), pki.key(cert))
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


class TlsServer:
    """A TLS server on 127.0.0.1 (a free port) that plays a peer picket connects to: it
    presents `cert`'s certificate, requires a client certificate from the test CA (unless
    client_cert=False), offers `alpn`, and runs serve(ssl_socket) in a thread per
    connection (the raw socket, with `timeout` when given, is closed after it). OpenSSL's
    own end-of-stream check is on: recv() raises on a close without a close_notify.
    `accepted` counts connections, `finished` those whose handling has ended; stop()
    closes the listener."""

    def __init__(self, pki, cert, serve, alpn=("http/1.1",), client_cert=True, timeout=None):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(pki.cert(cert), pki.key(cert))
        if client_cert:
            self.ctx.load_verify_locations(pki.ca)
            self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.ctx.set_alpn_protocols(list(alpn))
        self.ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF
        self.serve = serve
        self.timeout = timeout
        self.accepted = 0
        self.finished = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._one, args=(raw,), daemon=True).start()

    def _one(self, raw):
        try:
            raw.settimeout(self.timeout)
            self.serve(self.ctx.wrap_socket(raw, server_side=True, suppress_ragged_eofs=False))
        except (OSError, ssl.SSLError):
            pass
        finally:
            raw.close()
            self.finished += 1

    def stop(self):
        self.sock.close()


def recv_head(sock, buf=b""):
    """Reads until a blank line: (head, the bytes after it); head is None if the peer
    closed first."""
    while b"\r\n\r\n" not in buf:
        d = sock.recv(65536)
        if not d:
            return None, buf
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head, rest


def tls_strict(port, pki, cert="client", alpn=("http/1.1",), timeout=30.0):
    """A TLS client socket that tells a close_notify from a bare close: recv() returns
    b"" only after the server's close_notify, and raises an ssl.SSLError on a TCP close
    without one (read_to_close() says which)."""
    ctx = tls_context(pki, cert, alpn=alpn)
    # Python sets OpenSSL's IGNORE_UNEXPECTED_EOF, which reads a bare close as a clean one
    ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF
    return ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=timeout),
                           server_hostname="localhost", suppress_ragged_eofs=False)


def read_to_close(sock, timeout=30.0):
    """Reads a tls_strict() socket until the server ends the connection. Returns (bytes
    read, how): "close_notify" (the server said everything it sent has arrived), "bare"
    (a TCP close without one: to the client, a cut) or "reset". A timeout raises."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            b = sock.recv(65536)
        except ssl.SSLEOFError:
            return data, "bare"
        except ssl.SSLError as e:
            if e.reason != "UNEXPECTED_EOF_WHILE_READING":
                raise
            return data, "bare"
        except (ConnectionResetError, BrokenPipeError):
            return data, "reset"
        if not b:
            return data, "close_notify"
        data += b


def tls_probe(port, pki, cert="client", timeout=10.0):
    """Connects and completes a TLS handshake, then checks the server did not reject us
    (with TLS 1.3 a refused client certificate shows only after the handshake, as an
    alert on the first read). With h2 it waits (up to `timeout`) for the server's
    SETTINGS or its refusal, whichever comes. Returns (ok, alpn or error text)."""
    ctx = tls_context(pki, cert)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                alpn = s.selected_alpn_protocol()
                s.settimeout(0.3)
                if alpn == "h2":
                    # preface + empty SETTINGS: a live h2 server answers with SETTINGS
                    s.settimeout(timeout)
                    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
                try:
                    if not s.recv(1):
                        return False, "closed by server"
                except socket.timeout:
                    if alpn == "h2":
                        return False, "no SETTINGS within %.0fs" % timeout
                    # http/1.1: nothing to read yet is what an accepting server says
                return True, alpn
    except (OSError, ssl.SSLError) as e:
        return False, "%s: %s" % (type(e).__name__, e)


class Picket:
    """The picket daemon under test.

    p = Picket(workdir, conf_path, admin_port=..., inbound_port=...)
    p.start()                  # waits for /healthz (admin) or a TLS handshake on inbound
    ...
    rc = p.stop()              # SIGTERM, then SIGKILL after `timeout`; returns the exit code
    p.check_sanitizers()       # raises AssertionError on ASan/UBSan/LSan reports
    """

    # Slack on top of the configured drain bound before a picket that got SIGTERM is
    # declared hung: exit-time work (LeakSanitizer's scan) on a loaded 2-core machine.
    STOP_SLACK = 15.0

    def __init__(self, workdir, conf_path, admin_port=None, inbound_port=None, pki=None,
                 env_extra=None, name="picket", args=None, nofile=None, stdout_pipe=False,
                 rlimits=None):
        """nofile: RLIMIT_NOFILE (soft and hard) for picket; rlimits: more of them,
        {resource.RLIMIT_X: value}; stdout_pipe: picket's stdout is a pipe
        (self.popen.stdout, read end) that nothing reads until the test does."""
        self.workdir = workdir
        self.nofile = nofile
        self.rlimits = dict(rlimits or {})
        if nofile:
            self.rlimits[resource.RLIMIT_NOFILE] = nofile
        self.stdout_pipe = stdout_pipe
        self.conf = conf_path
        self.admin_port = admin_port
        self.inbound_port = inbound_port
        self.pki = pki
        self.name = name
        self.args = args if args is not None else ["run", "-c", conf_path]
        self.env = dict(os.environ)
        self.env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        self.env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        if env_extra:
            self.env.update(env_extra)
        self.popen = None
        self.killed = False
        self.hung = False        # did not exit within the bound after SIGTERM (SIGKILLed)
        self.sigterm_sent = False
        self.returncode = None
        n = 0
        while os.path.exists(os.path.join(workdir, "%s.%d.err" % (name, n))):
            n += 1
        self.out_path = os.path.join(workdir, "%s.%d.out" % (name, n))
        self.err_path = os.path.join(workdir, "%s.%d.err" % (name, n))

    @property
    def pid(self):
        return self.popen.pid

    def start(self, wait=True, timeout=20.0):
        b = picket_bin()
        if not os.access(b, os.X_OK):
            raise AssertionError("picket binary not found or not executable: %s "
                                 "(set PICKET_BIN or build it)" % b)
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        limits = self.rlimits

        def lower():
            for r, n in limits.items():
                resource.setrlimit(r, (n, n))
        self.popen = subprocess.Popen([b] + self.args, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE if self.stdout_pipe else self._out,
                                      stderr=self._err, env=self.env, start_new_session=True,
                                      preexec_fn=lower if limits else None)
        _register(self)
        if wait:
            self.wait_ready(timeout)
        return self

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def wait_ready(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not self.alive():
                rc = self.popen.returncode
                self._finish()
                raise AssertionError("picket exited with status %s before it was ready; stderr:\n%s"
                                     % (rc, self.stderr()[-4000:]))
            try:
                if self.admin_port:
                    st, _, _ = http_get_plain(self.admin_port, "/healthz", timeout=1.0)
                    if st == 200:
                        return
                    last = "healthz %d" % st
                elif self.inbound_port and self.pki:
                    ok, info = tls_probe(self.inbound_port, self.pki)
                    if ok:
                        return
                    last = info
                elif self.inbound_port:
                    if wait_port(self.inbound_port, 0.5):
                        return
                else:
                    time.sleep(0.5)
                    return
            except (OSError, http.client.HTTPException) as e:
                last = str(e)
            time.sleep(0.05)
        self.kill()
        raise AssertionError("picket not ready within %.0fs (%s); stderr:\n%s"
                             % (timeout, last, self.stderr()[-4000:]))

    def signal(self, sig):
        self.popen.send_signal(sig)
        if sig == signal.SIGTERM:
            self.sigterm_sent = True

    def wait(self, timeout):
        """Waits for exit; returns the exit code or None on timeout."""
        try:
            rc = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._finish()
        return rc

    def drain_bound(self):
        """Seconds a SIGTERMed picket may take to exit: its configured
        limits.drain_timeout (picket's default 20 s when the config does not say, or
        cannot be read) plus STOP_SLACK."""
        drain = 20.0
        try:
            with open(self.conf) as f:
                lim = (json.load(f).get("limits") or {})
            if "drain_timeout" in lim:
                drain = parse_duration(lim["drain_timeout"])
        except (OSError, TypeError, ValueError, AttributeError):
            pass
        return drain + self.STOP_SLACK

    def stop(self, timeout=None):
        """SIGTERM, wait up to `timeout` (default: drain_bound()), then SIGKILL the process
        group and set self.hung: a picket that ignores SIGTERM is a bug, and the harness
        fails the test (stop_and_check(), TestCase.picket()). Returns the exit code
        (negative = killed by that signal)."""
        if self.popen is None:
            return None
        if timeout is None:
            timeout = self.drain_bound()
        if self.popen.poll() is None:
            # One SIGTERM only: a test that sent its own is waiting for that drain, and a
            # second one while picket tears down after its drain would kill it by the
            # default action (exit -15, no LeakSanitizer report).
            if not self.sigterm_sent:
                try:
                    self.popen.send_signal(signal.SIGTERM)
                    self.sigterm_sent = True
                except ProcessLookupError:
                    pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.hung = True
                log("picket pid %d still running %.0fs after SIGTERM: SIGKILL" % (self.popen.pid, timeout))
                _kill_group(self.popen)
                self.popen.wait(5)
        self._finish()
        return self.returncode

    def stop_problems(self, expect_exit=0):
        """What is wrong with how this picket ended (after stop()): a hang on SIGTERM
        (its LeakSanitizer report never ran), an exit status other than `expect_exit`
        (None: any), a sanitizer report. A list of strings, empty when all is well."""
        out = []
        if self.hung:
            out.append("picket pid %d did not exit within its drain bound after SIGTERM and was "
                       "SIGKILLed (exit status and LeakSanitizer report lost); stderr tail:\n%s"
                       % (self.popen.pid, self.stderr()[-2000:]))
        elif expect_exit is not None and self.popen is not None and self.returncode != expect_exit:
            out.append("picket pid %d exit status %s (want %s); stderr tail:\n%s"
                       % (self.popen.pid, self.returncode, expect_exit, self.stderr()[-2000:]))
        rep = self.sanitizer_report()
        if rep:
            out.append("sanitizer report in picket's output (%s):\n%s" % (self.err_path, rep))
        return out

    def stop_and_check(self, timeout=None, expect_exit=0):
        """stop(), then raise AssertionError for any of stop_problems(expect_exit).
        Returns the exit status."""
        rc = self.stop(timeout)
        problems = self.stop_problems(expect_exit)
        if problems:
            raise AssertionError("\n".join(problems))
        return rc

    def kill(self):
        if self.popen is not None and self.popen.poll() is None:
            self.killed = True
            _kill_group(self.popen)
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self._finish()

    def _finish(self):
        if self.popen is not None:
            self.returncode = self.popen.poll()
        _unregister(self)
        for f in (getattr(self, "_out", None), getattr(self, "_err", None),
                  self.popen.stdout if self.popen is not None else None):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass

    def stderr(self):
        try:
            with open(self.err_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def stdout(self):
        try:
            with open(self.out_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def sanitizer_report(self):
        text = self.stderr() + self.stdout()
        for m in SANITIZER_MARKERS:
            i = text.find(m)
            if i >= 0:
                start = text.rfind("\n", 0, max(0, i - 200)) + 1
                return text[start:start + 6000]
        return None

    def check_sanitizers(self):
        rep = self.sanitizer_report()
        if rep:
            raise AssertionError("sanitizer report in picket's output (%s):\n%s" % (self.err_path, rep))

    def vm_status(self, field):
        """A /proc/PID/status field in KiB (VmRSS, VmHWM, ...), or None."""
        try:
            with open("/proc/%d/status" % self.popen.pid) as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def reset_peak_rss(self):
        """Resets the kernel's peak-RSS mark (VmHWM) to the current RSS (writes 5 to
        /proc/PID/clear_refs) and returns that RSS in KiB. A later peak_rss_kib() is
        then the peak since this call: a memory check reads the peak the kernel saw,
        not a sample taken after the fact."""
        with open("/proc/%d/clear_refs" % self.popen.pid, "w") as f:
            f.write("5")
        rss = self.vm_status("VmRSS")
        hwm = self.vm_status("VmHWM")
        if rss is None or hwm is None:
            raise AssertionError("picket pid %d: no VmRSS/VmHWM" % self.popen.pid)
        return rss

    def peak_rss_kib(self):
        """VmHWM in KiB: the peak RSS since start or since reset_peak_rss()."""
        v = self.vm_status("VmHWM")
        if v is None:
            raise AssertionError("picket pid %d: VmHWM unreadable (process gone?)" % self.popen.pid)
        return v


# --------------------------------------------------------------------------
# config

def make_config(pki, inbound_port, upstream, *, admin_port=None, routes=None, limits=None,
                policy=None, log=None, workers=2, node_id="test/picket", identity=None,
                listeners_extra=None, workdir=None):
    """DESIGN.md-shaped config as a dict. `upstream`: "h2c://127.0.0.1:P" or
    "http://127.0.0.1:P". `policy`: a dict for the "policy" section (e.g. {"file": path})."""
    cfg = {
        "node_id": node_id,
        "workers": workers,
        "identity": identity or {
            "cert": pki.cert("server"),
            "key": pki.key("server"),
            "trust_bundles": {TRUST_DOMAIN: pki.ca},
        },
        "listeners": [{
            "name": "inbound",
            "kind": "inbound",
            "bind": "127.0.0.1:%d" % inbound_port,
            "upstream": upstream,
        }],
    }
    if routes:
        cfg["listeners"][0]["routes"] = routes
    if listeners_extra:
        cfg["listeners"].extend(listeners_extra)
    if admin_port:
        cfg["admin"] = {"bind": "127.0.0.1:%d" % admin_port}
    if policy is not None:
        cfg["policy"] = policy
    cfg["log"] = log if log is not None else {
        "level": "info",
        "access": os.path.join(workdir, "access.jsonl") if workdir else "access.jsonl",
        "audit": os.path.join(workdir, "audit.jsonl") if workdir else "audit.jsonl",
    }
    if limits:
        cfg["limits"] = limits
    return cfg


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")


def parse_duration(text):
    """A config duration ("1500ms", "5s", "2m", "1h") in seconds (float)."""
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError("not a duration: %r" % (text,))
    return float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[m.group(2)]


def write_config(path, cfg):
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    return path


def write_policy(path, rules, default="deny", mode="enforce", revision=1):
    with open(path, "w") as f:
        json.dump({"revision": revision, "mode": mode, "default": default, "rules": rules}, f, indent=2)
        f.write("\n")
    return path


def read_jsonl(path, timeout=30.0, min_lines=1):
    """Reads a JSON-lines file, waiting up to `timeout` for at least `min_lines`.
    Returns a list of dicts; raises AssertionError on a line that is not a JSON object."""
    deadline = time.monotonic() + timeout
    while True:
        lines = []
        if os.path.exists(path):
            with open(path, "rb") as f:
                data = f.read()
            # only whole lines: a record picket is writing right now (one write(2),
            # which a reader can see half done) is read on a later call
            data = data[:data.rfind(b"\n") + 1]
            lines = [ln for ln in data.decode(errors="replace").splitlines() if ln.strip()]
        if len(lines) >= min_lines or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    out = []
    for i, ln in enumerate(lines):
        try:
            obj = json.loads(ln)
        except ValueError as e:
            raise AssertionError("%s line %d is not JSON (%s): %r" % (path, i + 1, e, ln[:300]))
        if not isinstance(obj, dict):
            raise AssertionError("%s line %d is not a JSON object: %r" % (path, i + 1, ln[:300]))
        out.append(obj)
    return out


# --------------------------------------------------------------------------
# curl

class Resp:
    def __init__(self, exit_code, status, http_version, headers, body, stderr, cmd):
        self.exit = exit_code
        self.status = status
        self.http_version = http_version  # "2", "1.1", or "0" when nothing came back
        self.headers = headers            # [(lowercased name, value)] of the final response
        self.body = body
        self.stderr = stderr
        self.cmd = cmd

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    def json(self):
        return json.loads(self.body.decode())

    def __repr__(self):
        return "<Resp exit=%d status=%d http=%s body=%r stderr=%r>" % (
            self.exit, self.status, self.http_version, self.body[:200], self.stderr[-300:])


def curl_args(port, path, pki, http="2", cert="client", host="localhost", addr="127.0.0.1"):
    """The common curl arguments for an mTLS request to picket on addr:port (127.0.0.1
    unless given: a container's address in tests/container/)."""
    args = ["curl", "-sS", "--noproxy", "*", "--resolve", "%s:%d:%s" % (host, port, addr),
            "--cacert", pki.ca]
    if cert:
        args += ["--cert", pki.cert(cert), "--key", pki.key(cert)]
    args += ["--http2"] if http == "2" else ["--http1.1"]
    args.append("https://%s:%d%s" % (host, port, path))
    return args


def curl(port, path, pki, *, http="2", cert="client", method=None, headers=(), data=None,
         upload=None, timeout=30, extra=(), host="localhost", workdir=None, addr="127.0.0.1"):
    """One request with curl. `data`: bytes sent with --data-binary @file; `upload`: a
    path sent with -T (PUT). Returns a Resp; never raises on HTTP or TLS errors."""
    require_tool("curl", "curl")
    tmp = tempfile.mkdtemp(prefix="curl-", dir=workdir)
    try:
        hdr = os.path.join(tmp, "h")
        body = os.path.join(tmp, "b")
        cmd = curl_args(port, path, pki, http=http, cert=cert, host=host, addr=addr)
        cmd[1:1] = ["--max-time", str(timeout), "-D", hdr, "-o", body, "-w", "%{http_code} %{http_version}"]
        if method:
            cmd[1:1] = ["-X", method]
        for h in headers:
            cmd[1:1] = ["-H", h]
        if data is not None:
            dpath = os.path.join(tmp, "d")
            with open(dpath, "wb") as f:
                f.write(data)
            cmd[1:1] = ["--data-binary", "@" + dpath]
        if upload is not None:
            cmd[1:1] = ["-T", upload]
        cmd[1:1] = list(extra)
        try:
            r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=timeout + 10)
            rc, out, err = r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
        except subprocess.TimeoutExpired:
            rc, out, err = -1, "000 0", "curl did not finish in %ds" % (timeout + 10)
        parts = out.split()
        status = int(parts[0]) if parts and parts[0].isdigit() else 0
        ver = parts[1] if len(parts) > 1 else "0"
        headers_l = []
        if os.path.exists(hdr):
            with open(hdr, "rb") as f:
                blocks = re.split(rb"\r?\n\r?\n", f.read().strip())
            final = [b for b in blocks if b.startswith(b"HTTP/")]
            if final:
                for line in final[-1].split(b"\n")[1:]:
                    line = line.rstrip(b"\r").decode("latin-1")
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers_l.append((k.strip().lower(), v.strip()))
        b = b""
        if os.path.exists(body):
            with open(body, "rb") as f:
                b = f.read()
        return Resp(rc, status, ver, headers_l, b, err, cmd)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------
# unittest glue

class SharedFleet(unittest.TestCase):
    """Pickets and helper processes started once for a whole test class (pickets under
    ASan start slowly), as test_mesh.py and test_websocket.py use them. A subclass sets
    TMP_PREFIX and writes _start() (cls.pki and cls.tmp are set), starting pickets with
    cls._picket() and adding what else it starts (anything with stop()) to cls.procs.
    When the class ends every picket is stopped and must exit cleanly, without a
    sanitizer report (else the class fails), then the processes, newest first; the
    temporary folder is kept when the set-up or a test failed (tearDown marks it) or
    with PICKET_TEST_KEEP."""
    TMP_PREFIX = "picket-fleet-"

    @classmethod
    def setUpClass(cls):
        cls.procs, cls.pickets = [], []
        cls.pki = shared_pki()
        cls.tmp = tempfile.mkdtemp(prefix=cls.TMP_PREFIX)
        cls._ok = False
        cls._any_failed = False
        try:
            cls._start()
            cls._ok = True
        except BaseException:
            cls._stop_all(dump=True)
            raise

    @classmethod
    def _start(cls):
        raise NotImplementedError

    @classmethod
    def _picket(cls, conf, admin, name, env=None):
        p = Picket(cls.tmp, conf, admin_port=admin, pki=cls.pki, name=name, env_extra=env)
        cls.pickets.append(p)
        p.start(wait=True)
        return p

    @classmethod
    def _stop_all(cls, dump=False):
        reports = []
        for p in reversed(cls.pickets):
            rc = p.stop()
            problems = p.stop_problems(expect_exit=0) if p.popen is not None else []
            if dump or VERBOSE or problems:
                log("%s pid %s exit %s; stderr tail:\n%s" % (p.name, p.popen and p.pid, rc,
                                                            p.stderr()[-3000:]))
            if problems:
                reports.append("%s (%s):\n%s" % (p.name, p.err_path, "\n".join(problems)))
        cls.pickets = []
        for pr in reversed(cls.procs):
            pr.stop()
        cls.procs = []
        return reports

    @classmethod
    def tearDownClass(cls):
        reports = cls._stop_all(dump=not cls._ok)
        if KEEP or reports or not cls._ok or cls._any_failed:
            log("kept %s" % cls.tmp)
        else:
            shutil.rmtree(cls.tmp, ignore_errors=True)
        if reports:
            raise AssertionError("after SIGTERM (exit status, hang, sanitizer report):\n"
                                 + "\n".join(reports))

    def tearDown(self):
        res = getattr(getattr(self, "_outcome", None), "result", None)
        if res is not None and any(t is self for t, _ in list(res.failures) + list(res.errors)):
            type(self)._any_failed = True


class TestCase(unittest.TestCase):
    """Base class: self.tmp (a fresh temp dir), self.pki (shared), and helpers that
    start servers and stop them (by PID) when the test ends. A picket that printed a
    sanitizer report fails the test."""

    @classmethod
    def setUpClass(cls):
        cls.pki = shared_pki()

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="picket-it-%s-" % self._testMethodName)
        self.addCleanup(self._cleanup_tmp)
        self._pickets = []

    def failed(self):
        """True once this test has a failure or error recorded (usable in cleanups)."""
        res = getattr(getattr(self, "_outcome", None), "result", None)
        if res is None:
            return False
        return any(t is self for t, _ in list(res.failures) + list(res.errors))

    def _cleanup_tmp(self):
        if KEEP or self.failed():
            log("kept %s" % self.tmp)
            return
        shutil.rmtree(self.tmp, ignore_errors=True)

    def upstream(self, kind, port=None, name=None):
        p, port = start_upstream(self.tmp, kind, port, name)
        self.addCleanup(p.stop)
        if not hasattr(self, "_upstreams"):
            self._upstreams = {}
        self._upstreams[port] = p
        return port

    def release_hold(self, name):
        """Lets every upstream request GET /hold/NAME of this test be answered."""
        open(os.path.join(self.tmp, "hold-" + name), "w").close()

    def wait_upstream_request(self, port, path, timeout=60.0):
        """Waits until the upstream this test started on `port` has received a request
        for `path` (its head: the request is in flight through picket); fails otherwise."""
        p = self._upstreams[port]
        deadline = time.monotonic() + timeout
        while not any(rp == path for _, rp in upstream_requests(p)):
            if time.monotonic() > deadline:
                self.fail("no request for %s reached the upstream on port %d within %.0fs: %r"
                          % (path, port, timeout, upstream_requests(p)[-10:]))
            time.sleep(0.02)

    def grpc_app(self):
        p, port = start_grpc_app(self.tmp)
        self.addCleanup(p.stop)
        return port

    def config(self, upstream, **kw):
        """Writes a config to self.tmp/picket.json; returns (path, cfg, inbound_port, admin_port)."""
        inbound = kw.pop("inbound_port", None) or free_port()
        admin = kw.pop("admin_port", None)
        if admin is None:
            admin = free_port()
        elif admin is False:
            admin = None
        name = kw.pop("name", "picket.json")
        cfg = make_config(self.pki, inbound, upstream, admin_port=admin, workdir=self.tmp, **kw)
        path = os.path.join(self.tmp, name)
        write_config(path, cfg)
        return path, cfg, inbound, admin

    def picket(self, conf_path, inbound_port=None, admin_port=None, wait=True, env_extra=None,
               stop_timeout=None, expect_exit=None, nofile=None, stdout_pipe=False):
        """Starts picket; at test end it is stopped (SIGTERM) and checked: a picket that
        does not exit within `stop_timeout` (default: its drain bound, Picket.drain_bound())
        fails the test, as does a sanitizer report. Exit status: `expect_exit` when given;
        otherwise 0 is required when the cleanup's SIGTERM stopped it, and a death by a
        signal the harness did not send fails the test too."""
        p = Picket(self.tmp, conf_path, admin_port=admin_port, inbound_port=inbound_port,
                   pki=self.pki, env_extra=env_extra, nofile=nofile, stdout_pipe=stdout_pipe)
        self._pickets.append(p)

        def fin():
            if p.popen is None:
                return
            running = p.alive()
            rc = p.stop(stop_timeout)
            if VERBOSE or self.failed() or p.hung:
                log("picket pid %d exit %s; stderr tail (%s):\n%s" % (
                    p.pid, rc, p.err_path, p.stderr()[-3000:]))
            want = expect_exit
            if want is None and running:
                want = 0
            problems = p.stop_problems(None if p.killed and not p.hung else want)
            if not problems and expect_exit is None and not running and not p.killed \
                    and rc is not None and rc < 0:
                problems.append("picket pid %d was killed by signal %d during the test"
                                % (p.pid, -rc))
            if problems:
                self.fail("\n".join(problems))
        self.addCleanup(fin)
        p.start(wait=wait)
        return p

    def curl(self, port, path, **kw):
        kw.setdefault("workdir", self.tmp)
        return curl(port, path, self.pki, **kw)

    def assertOK(self, r, msg=""):
        self.assertEqual(r.exit, 0, "curl failed: %r %s" % (r, msg))
        self.assertEqual(r.status, 200, "%r %s" % (r, msg))


def main(timeout=280):
    """unittest.main with a watchdog: after `timeout` seconds every process this script
    started is killed and the script exits 3. Prints a summary line; exits non-zero on
    any failure."""
    def bark():
        log("WATCHDOG: test script exceeded %ds; killing its processes" % timeout)
        _kill_all()
        sys.stderr.flush()
        os._exit(3)
    t = threading.Timer(timeout, bark)
    t.daemon = True
    t.start()
    t0 = time.monotonic()
    prog = unittest.main(exit=False, verbosity=2)
    res = prog.result
    name = os.path.basename(sys.argv[0])
    ok = res.wasSuccessful()
    print("SUMMARY %s: %d run, %d failures, %d errors, %d skipped in %.1fs -> %s" % (
        name, res.testsRun, len(res.failures), len(res.errors), len(res.skipped),
        time.monotonic() - t0, "PASS" if ok else "FAIL"), flush=True)
    t.cancel()
    _kill_all()
    sys.exit(0 if ok and res.testsRun > 0 else 1)


# --------------------------------------------------------------------------
# a minimal HTTP/2 client over mTLS (python3-h2), for what curl cannot show:
# GOAWAY on an idle connection, raw frames, trailers.

class H2Client:
    def __init__(self, port, pki, cert="client", timeout=10.0):
        import h2.config
        import h2.connection
        import h2.events
        self.ev = h2.events
        ctx = tls_context(pki, cert, alpn=("h2",))
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        if self.sock.selected_alpn_protocol() != "h2":
            raise AssertionError("ALPN h2 not negotiated: %r" % self.sock.selected_alpn_protocol())
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())
        self.goaway = None  # the ConnectionTerminated event, once seen
        self.closed = False
        self.streams = {}
        self.window_updates = {}  # stream id -> WINDOW_UPDATE frames received for it

    def _pump(self, timeout):
        """Reads once (up to `timeout`), processes events. False when the connection ended."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return True
        except (OSError, ssl.SSLError):
            self.closed = True
            return False
        if not data:
            self.closed = True
            return False
        for e in self.conn.receive_data(data):
            if isinstance(e, self.ev.ConnectionTerminated):
                self.goaway = e
            elif isinstance(e, self.ev.WindowUpdated):
                self.window_updates[e.stream_id] = self.window_updates.get(e.stream_id, 0) + 1
            elif isinstance(e, self.ev.ResponseReceived):
                st = self.streams.setdefault(e.stream_id, {"headers": [], "body": b"", "trailers": [], "done": False})
                st["headers"] = [(k.decode(), v.decode()) for k, v in e.headers]
            elif isinstance(e, self.ev.DataReceived):
                st = self.streams.setdefault(e.stream_id, {"headers": [], "body": b"", "trailers": [], "done": False})
                st["body"] += e.data
                self.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            elif isinstance(e, self.ev.TrailersReceived):
                self.streams[e.stream_id]["trailers"] = [(k.decode(), v.decode()) for k, v in e.headers]
            elif isinstance(e, (self.ev.StreamEnded, self.ev.StreamReset)):
                st = self.streams.setdefault(e.stream_id, {"headers": [], "body": b"", "trailers": [], "done": False})
                st["done"] = True
                st["reset"] = isinstance(e, self.ev.StreamReset)
                if st["reset"]:
                    st["reset_code"] = int(e.error_code)
        out = self.conn.data_to_send()
        if out:
            try:
                self.sock.sendall(out)
            except OSError:
                pass
        return True

    def request(self, path, method="GET", headers=(), timeout=30.0):
        """Sends a request and waits for the whole response: (status, headers, body, trailers)."""
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":scheme", "https"), (":authority", "localhost"),
                (":path", path)] + list(headers)
        self.conn.send_headers(sid, hdrs, end_stream=True)
        self.sock.sendall(self.conn.data_to_send())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.streams.get(sid)
            if st and st["done"]:
                h = dict(st["headers"])
                return int(h.get(":status", 0)), st["headers"], st["body"], st["trailers"]
            if not self._pump(0.2):
                break
        raise AssertionError("no complete response on stream %d for %s" % (sid, path))

    def wait_goaway(self, timeout):
        """True once GOAWAY arrived or the server closed the connection."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.goaway is None and not self.closed:
            self._pump(0.2)
        return self.goaway is not None or self.closed

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# --------------------------------------------------------------------------
# metrics, operational log, extra PKI material (identity and policy tests)

_METRIC_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$')
_METRIC_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')


def cpu_seconds(pid):
    """User + system CPU seconds of process `pid` so far (/proc/PID/stat)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid):
    """Number of descriptors process `pid` has open."""
    return len(os.listdir("/proc/%d/fd" % pid))


def scrape_metrics(admin_port, timeout=30.0):
    """GET /metrics on the admin listener, parsed: {(name, frozenset(labels)): value}."""
    st, _, body = http_get_plain(admin_port, "/metrics", timeout=timeout)
    if st != 200:
        raise AssertionError("/metrics answered %d: %r" % (st, body[:300]))
    out = {}
    for line in body.decode(errors="replace").splitlines():
        if not line or line.startswith("#"):
            continue
        m = _METRIC_LINE.match(line)
        if not m:
            continue
        labels = {}
        if m.group(2):
            for lm in _METRIC_LABEL.finditer(m.group(2)):
                labels[lm.group(1)] = lm.group(2).replace('\\"', '"').replace("\\\\", "\\")
        try:
            v = float(m.group(3))
        except ValueError:
            continue
        out[(m.group(1), frozenset(labels.items()))] = v
    return out


def metric(samples, name, default=None, **labels):
    """One sample from scrape_metrics() output (or an admin port to scrape) whose labels
    include `labels`; the sum when several series match; `default` when none does."""
    if isinstance(samples, int):
        samples = scrape_metrics(samples)
    want = set(labels.items())
    found = [v for (n, ls), v in samples.items() if n == name and want <= set(ls)]
    if not found:
        return default
    return sum(found)


def log_events(proc, event=None, since=0):
    """picket's operational log (stderr JSON lines) from byte offset `since`, parsed;
    only lines with "event" == event when given. Non-JSON lines are skipped."""
    out = []
    for ln in proc.stderr()[since:].splitlines():
        ln = ln.strip()
        if not ln.startswith("{"):
            continue
        try:
            obj = json.loads(ln)
        except ValueError:
            continue
        if isinstance(obj, dict) and (event is None or obj.get("event") == event):
            out.append(obj)
    return out


def wait_log_event(proc, event, since=0, timeout=30.0, pred=None):
    """Waits for a log line with "event" == event (and pred(obj) true); returns it or None.
    (The bound only turns a missing line into a failure; 30 s for a loaded machine.)"""
    deadline = time.monotonic() + timeout
    while True:
        for obj in log_events(proc, event, since):
            if pred is None or pred(obj):
                return obj
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)


def pki_add_ca(pki, name, trust_domain, cn=None):
    """Adds a CA NAME (NAME.pem, NAME.key) for spiffe://trust_domain to `pki`; leaves can
    then be issued with pki.issue(leaf, NAME, uri)."""
    if not os.path.exists(pki.cert(name)):
        pki._make_ca(name, cn or "picket test CA %s" % trust_domain, "spiffe://" + trust_domain)
    return pki.cert(name)


def write_spiffe_bundle(path, ca_pems):
    """Writes a SPIFFE trust bundle (JWKS, use x509-svid) holding the given CA PEM files."""
    import base64
    keys = []
    for pem in ca_pems:
        der = _run(["openssl", "x509", "-in", pem, "-outform", "DER"])
        keys.append({"use": "x509-svid", "kty": "EC", "x5c": [base64.b64encode(der).decode()]})
    with open(path, "w") as f:
        json.dump({"keys": keys}, f, indent=2)
        f.write("\n")
    return path


def cert_serial(pem_path):
    """The serial of a PEM certificate, uppercase hex without leading zeros."""
    out = _run(["openssl", "x509", "-in", pem_path, "-noout", "-serial"]).decode().strip()
    return out.split("=", 1)[1].upper().lstrip("0") or "0"


def cert_not_after(pem_path):
    """notAfter of a PEM certificate as a Unix time."""
    import calendar
    out = _run(["openssl", "x509", "-in", pem_path, "-noout", "-enddate"]).decode().strip()
    return calendar.timegm(time.strptime(out.split("=", 1)[1].replace(" GMT", "").strip(),
                                         "%b %d %H:%M:%S %Y"))


def served_serial(port, timeout=5.0):
    """The serial of the certificate picket presents on 127.0.0.1:port (new handshake,
    no client certificate needed to see it), uppercase hex; None if nothing came back."""
    try:
        r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
                            "-servername", "localhost", "-showcerts"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    m = re.search(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", r.stdout, re.S)
    if not m:
        return None
    p = subprocess.run(["openssl", "x509", "-noout", "-serial"], input=m.group(0),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    if p.returncode != 0:
        return None
    return p.stdout.decode().strip().split("=", 1)[1].upper().lstrip("0") or "0"


def run_picket_cli(args, cwd=None, timeout=30):
    """Runs `picket ARGS...` (a CLI subcommand); returns (exit status, stdout, stderr)."""
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
    r = subprocess.run([picket_bin()] + list(args), cwd=cwd, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, env=env)
    out, err = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
    for m in SANITIZER_MARKERS:
        if m in out or m in err:
            raise AssertionError("sanitizer report from picket %s:\n%s" % (" ".join(args), err[-4000:]))
    return r.returncode, out, err


def pki_add_intermediate(pki, name, parent="ca", trust_domain=TRUST_DOMAIN):
    """Adds an intermediate CA NAME signed by `parent` (NAME.pem, NAME.key, and a NAME.db
    so pki.issue(leaf, NAME, uri) works). Leaves issued by it verify only when the
    intermediate is sent along: see pki_chain()."""
    if os.path.exists(pki.cert(name)):
        return pki.cert(name)
    pki._genkey(name)
    csr = os.path.join(pki.dir, name + ".csr")
    _run(["openssl", "req", "-new", "-key", pki.key(name), "-subj", "/CN=" + name, "-out", csr])
    ext = os.path.join(pki.dir, name + ".ext")
    with open(ext, "w") as f:
        f.write("[v3_int]\nbasicConstraints = critical, CA:TRUE, pathlen:0\n"
                "keyUsage = critical, keyCertSign, cRLSign\nsubjectKeyIdentifier = hash\n"
                "authorityKeyIdentifier = keyid\nsubjectAltName = URI:spiffe://%s\n" % trust_domain)
    now = time.time()
    _run(["openssl", "ca", "-batch", "-notext", "-config",
          os.path.join(pki.dir, parent + ".db", "ca.cnf"), "-extfile", ext, "-extensions", "v3_int",
          "-startdate", _asn1_utc(now - 300), "-enddate", _asn1_utc(now + 86400),
          "-in", csr, "-out", pki.cert(name)])
    cadir = os.path.join(pki.dir, name + ".db")
    os.makedirs(os.path.join(cadir, "new"), exist_ok=True)
    open(os.path.join(cadir, "index.txt"), "w").close()
    with open(os.path.join(cadir, "serial"), "w") as f:
        f.write(os.urandom(8).hex().upper() + "\n")
    with open(os.path.join(cadir, "ca.cnf"), "w") as f:
        f.write("[ca]\ndefault_ca = this_ca\n"
                "[this_ca]\ndir = %s\ndatabase = $dir/index.txt\nnew_certs_dir = $dir/new\n"
                "serial = $dir/serial\ncertificate = %s\nprivate_key = %s\n"
                "default_md = sha256\npolicy = any_dn\nunique_subject = no\n"
                "copy_extensions = none\nemail_in_dn = no\n"
                "[any_dn]\ncommonName = supplied\n" % (cadir, pki.cert(name), pki.key(name)))
    return pki.cert(name)


def pki_chain(pki, leaf, *intermediates, name=None):
    """Writes NAME.pem = leaf followed by the intermediates and NAME.key = the leaf's key
    (so pki.cert(NAME)/pki.key(NAME) work with curl()). Returns NAME."""
    name = name or leaf + "-chain"
    with open(pki.cert(name), "w") as out:
        for n in (leaf,) + intermediates:
            with open(pki.cert(n)) as f:
                out.write(f.read())
    shutil.copyfile(pki.key(leaf), pki.key(name))
    return name
