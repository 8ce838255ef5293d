#!/usr/bin/python3
"""The container image (deploy/Dockerfile), built here and run the way Kubernetes runs it.

    /usr/bin/python3 tests/container/test_container.py [-k NAME]     # as root
    ctest --test-dir build-test -L container --output-on-failure

What it does, in order (tests/README.md, "The container image"):

1. Checks that this machine can run containers (root, podman, runc, a trial
   container) and fails naming what is missing: never a skip.
2. Makes the base images localhost/debian:12-slim and localhost/debian:12 with
   debootstrap (make-base-images.sh) when either is missing; podman resolves the
   Dockerfile's FROM lines to them. Kept between runs.
3. Builds deploy/Dockerfile: the build stage as localhost/picket-build:ctest-HASH,
   the image as localhost/picket:ctest-HASH (HASH: of the checkout's path). Podman's
   layer cache keeps the base, the build stage's package layer and every unchanged
   step between runs; an image this run replaced is removed by ID (with the cache
   layers only it used).
4. Checks the image: its user, entrypoint, command, stop signal and port are what
   deploy/kubernetes/ assumes; the layers it adds on top of the base come to at
   most 25 MB; no compiler, build tree or package-manager cache in it.
5. Runs it as Kubernetes would, from the manifests in deploy/kubernetes/: the image's
   own entrypoint and user, read-only root filesystem (without podman's extra tmpfs
   mounts, as Kubernetes' readOnlyRootFilesystem), all capabilities dropped, no new
   privileges, configs and secrets mounted read-only:
   * `picket control serve` with control-plane.yaml's args, serving a bundle signed
     with the image's own `picket bundle keygen` / `bundle sign`;
   * a pod (`podman pod`): an app container (app.pl on the base image's perl) and
     picket with sidecar.yaml's config, its policy fetched from that control plane;
     its readiness probe is sidecar.yaml's exec probe, run with `podman exec`;
   * a client with its own SVID calls the pod's address through picket: 200 with the
     XFCC header seen by the app, 403 for a denied caller and a denied path;
   * `picket inject serve` with webhook.yaml's args and the shipped injector config
     answers an AdmissionReview;
   * `podman stop` of the sidecar drains a request in flight: new connections are
     refused, the request completes with 200, picket exits 0 within the grace period.

Every podman setting comes from the test-local CONTAINERS_CONF file written below
(runtime runc, cgroupfs, lowered default rlimits, which a pod's infra container only
gets from there) or from the command line; nothing system-wide is changed. Every
container and pod is named picket-ctest-<pid>-<role> and removed by name when the
test ends, fails, times out or gets SIGTERM; ones left by a run that was SIGKILLed
are removed by the next run (their <pid> is no longer alive).

Environment: PICKET_TEST_VERBOSE=1 prints every podman command; PICKET_TEST_KEEP=1
keeps the temp dir; DEBIAN_MIRROR goes to make-base-images.sh.
"""
import base64
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
import picket_test as pt  # noqa: E402

# One tag per checkout, so that test runs in two worktrees of one machine do not
# remove each other's image (each run removes the image its build replaced).
_CHECKOUT = hashlib.sha256(REPO.encode()).hexdigest()[:8]
IMAGE_TAG = "localhost/picket:ctest-" + _CHECKOUT
BUILD_TAG = "localhost/picket-build:ctest-" + _CHECKOUT
BASE_SLIM = "localhost/debian:12-slim"
BASE_FULL = "localhost/debian:12"
DOCKERFILE = os.path.join(REPO, "deploy", "Dockerfile")
K8S = os.path.join(REPO, "deploy", "kubernetes")
INSTALL_HINT = "bash deploy/install-deps.sh --test (what bash tests/run.sh runs)"

# The layers picket adds on top of the base image (issue 22): at most 25 MB (SI, as
# podman prints sizes).
ADDED_BUDGET = 25 * 1000 * 1000

PREFIX = "picket-ctest-"
RUN = "%s%d" % (PREFIX, os.getpid())
CP_ID = "spiffe://example.org/ns/picket-system/sa/picket-control"
INJECT_ID = "spiffe://example.org/ns/picket-system/sa/picket-inject"
KEYID = "cp-1"
IMAGE_UID = 65532
APP_PORT = 8080

# Time bounds: they only turn a hang into a failure (none is a speed assertion).
BASE_TIMEOUT = 600     # make-base-images.sh (debootstrap from the archive)
BUILD_TIMEOUT = 900    # both podman builds together, first run included
# (ctest's TIMEOUT, 1800 s in tests/CMakeLists.txt, is above the three together)
RUN_TIMEOUT = 240      # everything after the build (the watchdog)

CONTAINERS_CONF = """\
# tests/container/test_container.py: podman's settings for this test only
# (CONTAINERS_CONF points here; nothing system-wide is read or changed).
[containers]
# Containers here may not raise their rlimits above the host's, and podman's
# defaults (nofile 1048576) would. Only this setting reaches a pod's infra
# container; it applies to builds and runs as well.
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
log_driver = "k8s-file"

[engine]
# crun fails on these machines (cgroup v1 / hybrid); runc works.
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""

# Kubernetes' securityContext {readOnlyRootFilesystem: true, allowPrivilegeEscalation:
# false, capabilities: {drop: [ALL]}} in podman's words, with the image's own user.
# --read-only-tmpfs=false: podman would otherwise mount writable tmpfs on /tmp, /run
# and /var/tmp, which Kubernetes does not.
K8S_SECURITY = ["--read-only", "--read-only-tmpfs=false", "--cap-drop", "ALL",
                "--security-opt", "no-new-privileges"]

VERBOSE = pt.VERBOSE


def log(msg):
    pt.log("container: " + msg)


class Unavailable(AssertionError):
    """This machine cannot build or run the containers (what is missing is named)."""


# --------------------------------------------------------------------------
# podman, and removing what this run started

class Podman:
    def __init__(self, conf_path):
        self.env = dict(os.environ, CONTAINERS_CONF=conf_path)
        for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy",
                  "ALL_PROXY"):
            self.env.pop(k, None)

    def run(self, args, timeout=120, check=True):
        """podman ARGS; returns the CompletedProcess (text). check: a non-zero exit
        raises AssertionError with podman's stderr."""
        cmd = ["podman"] + list(args)
        if VERBOSE:
            log("$ " + " ".join(cmd))
        try:
            r = subprocess.run(cmd, env=self.env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("podman %s did not finish within %ds" % (" ".join(args), timeout))
        r.stdout = r.stdout.decode(errors="replace")
        r.stderr = r.stderr.decode(errors="replace")
        if check and r.returncode != 0:
            raise AssertionError("podman %s failed (exit %d): %s" % (
                " ".join(args), r.returncode, r.stderr.strip()[-3000:]))
        return r

    def out(self, args, timeout=120):
        return self.run(args, timeout).stdout.strip()

    def popen(self, args, out_path):
        f = open(out_path, "wb")
        try:
            return subprocess.Popen(["podman"] + list(args), env=self.env,
                                    stdin=subprocess.DEVNULL, stdout=f,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            f.close()

    def long(self, args, out_path, timeout, what):
        """A long podman command (a build), output to out_path; on timeout it gets
        SIGTERM, then SIGKILL. Raises AssertionError with the output's tail on failure."""
        if VERBOSE:
            log("$ podman " + " ".join(args))
        p = self.popen(args, out_path)
        try:
            rc = p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                pt._kill_group(p)
                p.wait(10)
            raise AssertionError("%s did not finish within %ds; output tail:\n%s" % (
                what, timeout, tail(out_path)))
        if rc != 0:
            raise AssertionError("%s failed (exit %d); output tail:\n%s" % (what, rc, tail(out_path)))

    def exists(self, image):
        return self.run(["image", "exists", image], check=False).returncode == 0

    def image_id(self, ref):
        r = self.run(["image", "inspect", "--format", "{{.Id}}", ref], check=False)
        return r.stdout.strip() if r.returncode == 0 else None

    def inspect(self, ref, kind="container"):
        v = json.loads(self.out([kind, "inspect", ref]))
        return v[0] if isinstance(v, list) else v  # podman 4.3's pod inspect: one object

    def alive(self, name):
        """Running, or stopping: podman 4.3 reports Running false while a container it
        sent its stop signal to is still draining."""
        return self.inspect(name)["State"].get("Status") in ("running", "stopping")

    def logs(self, name):
        r = self.run(["logs", name], check=False)
        return r.stdout + r.stderr


def tail(path, n=4000):
    try:
        with open(path, "rb") as f:
            return f.read()[-n:].decode(errors="replace")
    except OSError:
        return ""


_started = {"containers": [], "pods": []}
_cleanup_lock = threading.Lock()
_podman = None


def track(kind, name):
    _started[kind].append(name)
    return name


def cleanup():
    """Removes every container and pod this run started, by name (idempotent)."""
    with _cleanup_lock:
        if _podman is None:
            return
        pods, ctrs = list(_started["pods"]), list(_started["containers"])
        _started["pods"].clear()
        _started["containers"].clear()
        if pods:
            _podman.run(["pod", "rm", "-f", "-t", "0", "--ignore"] + pods, timeout=120, check=False)
        if ctrs:
            _podman.run(["rm", "-f", "-t", "0", "--ignore"] + ctrs, timeout=120, check=False)


def leftovers(podman, prefix):
    """Names of containers and pods whose name starts with prefix."""
    names = []
    r = podman.run(["ps", "-a", "--format", "{{.Names}}"], check=False)
    names += [n for n in r.stdout.split() if n.startswith(prefix)]
    r = podman.run(["pod", "ps", "--format", "{{.Name}}"], check=False)
    names += ["pod " + n for n in r.stdout.split() if n.startswith(prefix)]
    return names


def remove_stale(podman):
    """Containers and pods of earlier runs that were killed before their cleanup
    (picket-ctest-<pid>-..., that pid no longer alive), removed by name."""
    stale_pods, stale_ctrs = [], []
    for n in leftovers(podman, PREFIX):
        pod = n.startswith("pod ")
        name = n[4:] if pod else n
        m = re.match(re.escape(PREFIX) + r"(\d+)-", name)
        if not m or os.path.exists("/proc/%s" % m.group(1)):
            continue
        (stale_pods if pod else stale_ctrs).append(name)
    if stale_pods or stale_ctrs:
        log("removing what killed earlier runs left: %s" % " ".join(stale_pods + stale_ctrs))
    if stale_pods:
        podman.run(["pod", "rm", "-f", "-t", "0", "--ignore"] + stale_pods, check=False)
    if stale_ctrs:
        podman.run(["rm", "-f", "-t", "0", "--ignore"] + stale_ctrs, check=False)


# --------------------------------------------------------------------------
# the manifests the containers are run from

def load_manifests(name):
    yaml = pt.require_module("yaml", "python3-yaml")
    with open(os.path.join(K8S, name)) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def find(docs, kind, name=None):
    for d in docs:
        if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name):
            return d
    raise AssertionError("no %s %s in the manifest" % (kind, name or ""))


def container_spec(docs, kind, name):
    """(pod spec, container) of the container `name` in the first `kind` object."""
    obj = find(docs, kind)
    spec = obj["spec"]["template"]["spec"]
    for c in spec.get("containers", []):
        if c["name"] == name:
            return spec, c
    raise AssertionError("no container %s in the %s" % (name, kind))


def check_security_context(pod_spec, c):
    """The container's securityContext is the one the test reproduces (K8S_SECURITY
    with the image's user); anything else and the test would not run it as the
    manifest says."""
    sc = dict(pod_spec.get("securityContext") or {})
    sc.update(c.get("securityContext") or {})
    want = {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False}
    got = {k: sc.get(k) for k in want}
    assert got == want, "%s securityContext %r, want %r" % (c["name"], got, want)
    assert (sc.get("capabilities") or {}).get("drop") == ["ALL"], \
        "%s does not drop ALL capabilities: %r" % (c["name"], sc.get("capabilities"))
    assert sc.get("runAsUser") in (None, IMAGE_UID), \
        "%s runs as %r, not the image's user %d" % (c["name"], sc.get("runAsUser"), IMAGE_UID)


def mounts_for(c, sources):
    """-v options for a manifest container's volumeMounts: sources maps a volume
    name to a host directory; every mount is read-only (configMaps, secrets and
    CSI volumes are)."""
    out = []
    for vm in c.get("volumeMounts", []):
        src = sources.get(vm["name"])
        assert src, "the test has no files for volume %s of %s" % (vm["name"], c["name"])
        out += ["-v", "%s:%s:ro" % (src, vm["mountPath"])]
    return out


def secret_dir(path, files):
    """A directory as Kubernetes mounts a secret or configMap, readable by the image's
    user: files (name -> source path or bytes) copied in, owned by 65532, keys 0400."""
    os.makedirs(path, exist_ok=True)
    for name, src in files.items():
        dst = os.path.join(path, name)
        if isinstance(src, bytes):
            with open(dst, "wb") as f:
                f.write(src)
        else:
            shutil.copyfile(src, dst)
        os.chown(dst, IMAGE_UID, IMAGE_UID)
        os.chmod(dst, 0o400 if name.endswith(".key") else 0o444)
    os.chmod(path, 0o755)
    return path


# --------------------------------------------------------------------------

def require(name, package, paths=()):
    found = shutil.which(name) or next((p for p in paths if os.access(p, os.X_OK)), None)
    if not found:
        raise Unavailable("this machine cannot run the container test: %s is not installed "
                          "(Debian package %s): apt-get install %s, or %s"
                          % (name, package, package, INSTALL_HINT))
    return found


class ContainerImage(unittest.TestCase):
    """One image, one set of containers; the tests run in the order of their names."""

    timings = {}

    @classmethod
    def setUpClass(cls):
        global _podman
        cls.addClassCleanup(cleanup)
        cls.tmp = tempfile.mkdtemp(prefix="picket-ctest-")

        # 1. can this machine run containers at all?
        if os.geteuid() != 0:
            raise Unavailable("the container test runs podman as root (as CI does): rootless "
                              "podman gives the host no route to a pod's address; run it as root")
        require("podman", "podman")
        require("runc", "runc", ("/usr/sbin/runc", "/usr/bin/runc"))
        # what a pod needs of podman's Recommends (install-deps.sh --test installs them)
        require("catatonit", "catatonit", ("/usr/libexec/podman/catatonit",))
        require("CNI bridge plugin", "containernetworking-plugins", ("/usr/lib/cni/bridge",))
        require("iptables", "iptables", ("/usr/sbin/iptables",))
        conf = os.path.join(cls.tmp, "containers.conf")
        with open(conf, "w") as f:
            f.write(CONTAINERS_CONF)
        cls.podman = _podman = Podman(conf)
        rt = cls.podman.run(["info", "--format", "{{.Host.OCIRuntime.Name}}"], check=False)
        if rt.returncode != 0:
            raise Unavailable("this machine cannot run containers: `podman info` failed: %s"
                              % rt.stderr.strip()[-2000:])
        if rt.stdout.strip() != "runc":
            raise Unavailable("podman uses OCI runtime %r, not runc, with %s" % (
                rt.stdout.strip(), conf))
        remove_stale(cls.podman)

        # 2. base images
        t0 = time.monotonic()
        if cls.podman.exists(BASE_SLIM) and cls.podman.exists(BASE_FULL):
            cls.timings["base"] = "images cached"
        else:
            require("debootstrap", "debootstrap")
            log("making %s and %s with debootstrap (first run only)" % (BASE_SLIM, BASE_FULL))
            out = os.path.join(cls.tmp, "make-base-images.log")
            with open(out, "wb") as f:
                p = subprocess.Popen(["bash", os.path.join(HERE, "make-base-images.sh")],
                                     env=cls.podman.env, stdin=subprocess.DEVNULL, stdout=f,
                                     stderr=subprocess.STDOUT, start_new_session=True)
            try:
                rc = p.wait(BASE_TIMEOUT)
            except subprocess.TimeoutExpired:
                pt._kill_group(p)
                p.wait(10)
                rc = "timeout after %ds" % BASE_TIMEOUT
            if rc != 0:
                raise Unavailable("could not make the base images (%s): %s" % (rc, tail(out)))
            cls.timings["base"] = "images made in %.0fs" % (time.monotonic() - t0)
        trial = cls.podman.run(["run", "--rm", "--pull=never", "--name", track("containers", RUN + "-trial"),
                                BASE_SLIM, "true"], check=False, timeout=60)
        if trial.returncode != 0:
            raise Unavailable("this machine cannot run containers: `podman run %s true` failed "
                              "(runtime runc, cgroupfs, CONTAINERS_CONF %s): %s"
                              % (BASE_SLIM, conf, trial.stderr.strip()[-2000:]))

        # 3. the image
        t0 = time.monotonic()
        cls.build()
        cls.timings["build"] = "%.0fs" % (time.monotonic() - t0)

        # 4-5. the containers (bounded by the watchdog from here on)
        arm_watchdog(RUN_TIMEOUT)
        cls.t_run = time.monotonic()
        cls.pki = pt.PKI(os.path.join(cls.tmp, "pki"))
        cls.pki.issue("control", "ca", CP_ID, ["picket-control"])
        cls.pki.issue("webhook", "ca", INJECT_ID, ["picket-inject.picket-system.svc"])
        cls.sign_bundle()
        cls.start_control_plane()
        cls.start_pod()
        cls.start_injector()

    # ---- building ------------------------------------------------------------

    @classmethod
    def build(cls):
        old_image, old_stage = cls.podman.image_id(IMAGE_TAG), cls.podman.image_id(BUILD_TAG)
        common = ["build", "--pull=never", "--layers", "-f", DOCKERFILE]
        out = os.path.join(cls.tmp, "build.log")
        deadline = time.monotonic() + BUILD_TIMEOUT
        cls.podman.long(common + ["--target", "build", "-t", BUILD_TAG, REPO], out, BUILD_TIMEOUT,
                        "podman build --target build (deploy/Dockerfile's build stage)")
        with open(out, "rb") as f:
            stage_log = f.read().decode(errors="replace")
        iid = os.path.join(cls.tmp, "iid")
        cls.podman.long(common + ["--iidfile", iid, "-t", IMAGE_TAG, REPO], out,
                        max(60, deadline - time.monotonic()), "podman build (deploy/Dockerfile)")
        with open(iid) as f:
            cls.image = f.read().strip()
        if cls.image.startswith("sha256:"):
            cls.image = cls.image[len("sha256:"):]
        cached = stage_log.count("Using cache")
        log("built %s (%s); build stage: %d steps from the cache"
            % (IMAGE_TAG, cls.image[:12], cached))
        # what this build replaced: removed by ID, with the cache layers only it used
        # (podman rmi takes an untagged image's dangling parents along)
        for old, new in ((old_image, cls.image), (old_stage, cls.podman.image_id(BUILD_TAG))):
            if old and old != new:
                cls.podman.run(["rmi", old], check=False)

    # ---- the containers ---------------------------------------------------------

    @classmethod
    def run_container(cls, role, args, image=None, pod=None, cmd=(), extra=()):
        """podman run -d, Kubernetes-style; returns the container's name."""
        name = track("containers", "%s-%s" % (RUN, role))
        argv = ["run", "-d", "--pull=never", "--name", name] + K8S_SECURITY + list(extra)
        if pod:
            argv += ["--pod", pod]
        cls.podman.run(argv + list(args) + [image or cls.image] + list(cmd), timeout=60)
        return name

    @classmethod
    def address(cls, name):
        a = cls.podman.inspect(name)["NetworkSettings"].get("IPAddress")
        if not a:
            raise AssertionError("container %s has no IP address on podman's network" % name)
        return a

    @classmethod
    def wait_tcp(cls, name, addr, port, timeout=30.0):
        deadline = time.monotonic() + timeout
        while not pt.wait_port(port, 0.5, addr=addr):
            st = cls.podman.inspect(name)["State"]
            if st.get("Status") not in ("running", "stopping") or time.monotonic() > deadline:
                raise AssertionError("%s does not accept connections on %s:%d (%s); logs:\n%s" % (
                    name, addr, port, st.get("Status"), cls.podman.logs(name)[-3000:]))

    @classmethod
    def sign_bundle(cls):
        """A signing key and a signed bundle, made with the image's own CLI."""
        d = os.path.join(cls.tmp, "signing")
        os.makedirs(d)
        os.chown(d, IMAGE_UID, IMAGE_UID)
        cls.rules = [{"id": "client", "action": "allow", "from": [pt.CLIENT_ID],
                      "paths": ["/", "/headers", "/hold/**"]}]
        src = os.path.join(d, "shop-policy.json")
        pt.write_policy(src, cls.rules, revision=1)
        os.chmod(src, 0o644)
        for role, cmd in (("keygen", ["bundle", "keygen", "--type", "ed25519",
                                      "--out", "/work/cp-1.key", "--pub", "/work/cp-1.pub"]),
                          ("sign", ["bundle", "sign", "--key", "/work/cp-1.key", "--keyid", KEYID,
                                    "--out", "/work/shop.json", "/work/shop-policy.json"])):
            name = track("containers", "%s-%s" % (RUN, role))
            cls.podman.run(["run", "--rm", "--pull=never", "--name", name] + K8S_SECURITY +
                           ["-v", "%s:/work" % d, cls.image] + cmd, timeout=60)
        cls.pubkey = os.path.join(d, "cp-1.pub")
        with open(os.path.join(d, "shop.json"), "rb") as f:
            cls.envelope = f.read()

    @classmethod
    def start_control_plane(cls):
        spec, c = container_spec(load_manifests("control-plane.yaml"), "Deployment", "control")
        check_security_context(spec, c)
        d = os.path.join(cls.tmp, "control")
        sources = {
            # csi-driver-spiffe's files
            "svid": secret_dir(os.path.join(d, "svid"), {
                "tls.crt": cls.pki.cert("control"), "tls.key": cls.pki.key("control"),
                "ca.crt": cls.pki.ca}),
            "bundles": secret_dir(os.path.join(d, "bundles"), {"shop.json": cls.envelope}),
            "trust": secret_dir(os.path.join(d, "trust"), {"ca.crt": cls.pki.ca}),
        }
        cls.cp_port = c["ports"][0]["containerPort"]
        cls.control = cls.run_container("control", mounts_for(c, sources), cmd=c["args"])
        cls.cp_addr = cls.address(cls.control)
        cls.wait_tcp(cls.control, cls.cp_addr, cls.cp_port)  # its tcpSocket probe

    @classmethod
    def start_pod(cls):
        docs = load_manifests("sidecar.yaml")
        cls.sidecar_spec, c = container_spec(docs, "Deployment", "picket")
        cls.sidecar_container = c
        cfg = json.loads(find(docs, "ConfigMap")["data"]["picket.json"])
        # sidecar.yaml's config, with its policy from the control plane above and the
        # app's port (app.pl speaks HTTP/1.1; the manifest's example app h2c)
        cfg["listeners"][0]["upstream"] = "http://127.0.0.1:%d" % APP_PORT
        cfg["policy"] = {"url": "https://picket-control:%d/shop.json" % cls.cp_port,
                         "server_id": CP_ID, "signing_keys": {KEYID: "/etc/picket/cp-1.pub"},
                         "poll_min": "1s", "poll_max": "2s", "long_poll": "10s"}
        cls.cfg = cfg
        d = os.path.join(cls.tmp, "pod")
        conf = secret_dir(os.path.join(d, "picket-config"), {
            "picket.json": json.dumps(cfg, indent=2).encode(), "cp-1.pub": cls.pubkey})
        svid = secret_dir(os.path.join(d, "svid"), {
            "tls.crt": cls.pki.cert("server"), "tls.key": cls.pki.key("server"),
            "ca.crt": cls.pki.ca})
        ident = cfg["identity"]
        for path in (ident["cert"], ident["key"]) + tuple(ident["trust_bundles"].values()):
            assert path.startswith("/var/run/secrets/svid/"), path

        cls.pod = track("pods", RUN + "-pod")
        cls.podman.run(["pod", "create", "--name", cls.pod,
                        "--add-host", "picket-control:%s" % cls.cp_addr])
        # the app: on loopback only, as sidecar.yaml says; its own user, read-only too
        cls.hold_dir = os.path.join(d, "hold")
        os.makedirs(cls.hold_dir)
        os.chmod(cls.hold_dir, 0o755)
        app_dir = secret_dir(os.path.join(d, "app"), {"app.pl": os.path.join(HERE, "app.pl")})
        cls.app = cls.run_container("app", ["-v", "%s:/app:ro" % app_dir,
                                            "-v", "%s:/hold:ro" % cls.hold_dir],
                                    image=BASE_SLIM, pod=cls.pod, extra=["--user", "65534:65534"],
                                    cmd=["perl", "/app/app.pl", "127.0.0.1", str(APP_PORT), "/hold"])
        cls.wait_log(cls.app, lambda text: "ready" in text.split(), "app.pl ready")
        # picket: the image's entrypoint, user and command, sidecar.yaml's mounts
        check_security_context(cls.sidecar_spec, c)
        assert c.get("args") in (None, cls.image_config()["Cmd"]), \
            "sidecar.yaml's args %r differ from the image's CMD" % c.get("args")
        cls.sidecar = cls.run_container("picket", mounts_for(c, {"picket-config": conf, "svid": svid}),
                                        pod=cls.pod)
        cls.pod_addr = cls.address(cls.podman.inspect(cls.pod, "pod")["InfraContainerID"])
        cls.inbound = c["ports"][0]["containerPort"]
        cls.wait_probe(cls.sidecar, c["readinessProbe"]["exec"]["command"])

    @classmethod
    def start_injector(cls):
        spec, c = container_spec(load_manifests("webhook.yaml"), "Deployment", "inject")
        check_security_context(spec, c)
        d = os.path.join(cls.tmp, "inject")
        cls.injector_config = os.path.join(K8S, "injector-config.json")
        sources = {
            "tls": secret_dir(os.path.join(d, "tls"), {
                "tls.crt": cls.pki.cert("webhook"), "tls.key": cls.pki.key("webhook")}),
            "config": secret_dir(os.path.join(d, "config"),
                                 {"injector-config.json": cls.injector_config}),
        }
        cls.inject_port = c["ports"][0]["containerPort"]
        cls.inject_probe = c["readinessProbe"]["httpGet"]["path"]
        cls.injector = cls.run_container("inject", mounts_for(c, sources), cmd=c["args"])
        cls.inject_addr = cls.address(cls.injector)
        cls.wait_tcp(cls.injector, cls.inject_addr, cls.inject_port)

    @classmethod
    def image_config(cls):
        return cls.podman.inspect(cls.image, "image")["Config"]

    @classmethod
    def wait_log(cls, name, pred, what, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            text = cls.podman.logs(name)
            if pred(text):
                return text
            if time.monotonic() > deadline or not cls.podman.alive(name):
                raise AssertionError("%s: no %s; logs:\n%s" % (name, what, text[-3000:]))
            time.sleep(0.1)

    @classmethod
    def wait_probe(cls, name, command, timeout=60.0):
        """The manifest's exec readiness probe, run in the container until it passes."""
        deadline = time.monotonic() + timeout
        while True:
            r = cls.podman.run(["exec", name] + command, check=False, timeout=30)
            if r.returncode == 0:
                return
            if time.monotonic() > deadline or not cls.podman.alive(name):
                raise AssertionError("%s not ready: probe %s exit %d (%s); logs:\n%s" % (
                    name, " ".join(command), r.returncode, (r.stdout + r.stderr).strip()[-500:],
                    cls.podman.logs(name)[-4000:]))
            time.sleep(0.2)

    # ---- helpers for the tests ------------------------------------------------------

    def curl(self, path, **kw):
        kw.setdefault("workdir", self.tmp)
        return pt.curl(self.inbound, path, self.pki, addr=self.pod_addr, **kw)

    def exec_json(self, name, url):
        out = self.podman.out(["exec", name, "curl", "-fsS", url], timeout=30)
        return json.loads(out)

    def json_log(self, name, event=None):
        out = []
        for ln in self.podman.logs(name).splitlines():
            ln = ln.strip()
            if ln.startswith("{"):
                try:
                    obj = json.loads(ln)
                except ValueError:
                    continue
                if event is None or obj.get("event") == event:
                    out.append(obj)
        return out

    # ---- the image ------------------------------------------------------------------

    def test_1_image_config(self):
        """User, entrypoint, command, stop signal, port: what deploy/kubernetes/ assumes."""
        cfg = self.image_config()
        self.assertEqual(cfg.get("User"), "%d:%d" % (IMAGE_UID, IMAGE_UID))
        self.assertEqual(cfg.get("Entrypoint"), ["/usr/local/bin/picket"])
        self.assertEqual(cfg.get("Cmd"), ["run", "-c", "/etc/picket/picket.json"])
        self.assertEqual(cfg.get("StopSignal"), "SIGTERM")
        self.assertIn("%d/tcp" % self.inbound, cfg.get("ExposedPorts") or {})
        r = self.podman.run(["run", "--rm", "--pull=never", "--name",
                             track("containers", RUN + "-version")] + K8S_SECURITY +
                            [self.image, "version"], timeout=60)
        self.assertRegex(r.stdout.strip(), r"^picket \d+\.\d+\.\d+")

    def test_2_image_size(self):
        """The layers picket adds on top of the base: at most 25 MB."""
        img = self.podman.inspect(self.image, "image")
        base = self.podman.inspect(BASE_SLIM, "image")
        layers, base_layers = img["RootFS"]["Layers"], base["RootFS"]["Layers"]
        self.assertEqual(layers[:len(base_layers)], base_layers,
                         "the image is not built on %s" % BASE_SLIM)
        hist = json.loads(self.podman.out(["history", "--format", "json", self.image]))
        base_hist = json.loads(self.podman.out(["history", "--format", "json", BASE_SLIM]))
        added = hist[:len(hist) - len(base_hist)]
        total = sum(int(h.get("size") or 0) for h in added)
        rows = ["%10d  %s" % (int(h.get("size") or 0), h.get("CreatedBy", "")[:100])
                for h in added if int(h.get("size") or 0) > 0]
        log("layers on top of %s: %d bytes (%.1f MB); image %d bytes, base %d bytes\n%s" % (
            BASE_SLIM, total, total / 1e6, img["Size"], base["Size"], "\n".join(rows)))
        # two measures of the same thing (the image size also counts a little metadata)
        for what, n in (("podman history", total), ("podman image inspect", img["Size"] - base["Size"])):
            self.assertLessEqual(n, ADDED_BUDGET, "the layers picket adds come to %.1f MB by %s "
                                 "(budget %.0f MB):\n%s" % (n / 1e6, what, ADDED_BUDGET / 1e6,
                                                             "\n".join(rows)))

    def test_3_image_contents(self):
        """No compiler, build tree, development package or package-manager cache."""
        root = self.podman.out(["image", "mount", self.image])
        self.addCleanup(self.podman.run, ["image", "unmount", self.image], 60, False)
        found = []
        for rel in ("usr/bin/gcc", "usr/bin/cc", "usr/bin/c++", "usr/bin/cpp", "usr/bin/g++",
                    "usr/bin/clang", "usr/bin/ld", "usr/bin/as", "usr/bin/make", "usr/bin/cmake",
                    "usr/bin/ninja", "usr/bin/pkg-config", "usr/lib/gcc", "usr/include/stdio.h",
                    "usr/include/openssl", "src", "build"):
            if os.path.lexists(os.path.join(root, rel)):
                found.append("/" + rel)
        for rel, pattern in (("var/cache/apt/archives", r".*\.deb$"), ("var/cache/apt", r".*\.bin$"),
                             ("var/lib/apt/lists", r"^(?!partial$|lock$).*")):
            d = os.path.join(root, rel)
            if os.path.isdir(d):
                found += ["/%s/%s" % (rel, n) for n in os.listdir(d) if re.match(pattern, n)]
        with open(os.path.join(root, "var/lib/dpkg/status"), encoding="utf-8",
                  errors="replace") as f:
            pkgs = re.findall(r"^Package: (\S+)\n(?:.+\n)*?Status: install ok installed$",
                              f.read(), re.M)
        self.assertIn("libssl3", pkgs, "dpkg status unreadable or libssl3 missing")
        # (gcc-12-base and libgcc-s1 are runtime packages every Debian image has)
        dev = [p for p in pkgs if re.match(r"^(gcc|g\+\+|cpp|clang|llvm)(-\d+)?$|^binutils|"
                                           r"^(make|cmake|ninja-build|build-essential|pkg-?config|"
                                           r"pkgconf|libtool|autoconf|automake)$|-dev$", p)]
        found += ["package " + p for p in dev]
        self.assertEqual(found, [], "the final stage holds build tools or package caches")

    # ---- the sidecar --------------------------------------------------------------

    def test_4_sidecar_runs_as_kubernetes_would(self):
        st = self.podman.inspect(self.sidecar)
        self.assertTrue(st["HostConfig"]["ReadonlyRootfs"])
        pid = st["State"]["Pid"]
        with open("/proc/%d/status" % pid) as f:
            status = dict(ln.rstrip("\n").split(":\t", 1) for ln in f if ":\t" in ln)
        self.assertEqual(status["Uid"].split(), [str(IMAGE_UID)] * 4, "picket's user")
        self.assertEqual(status["Gid"].split(), [str(IMAGE_UID)] * 4, "picket's group")
        for cap in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
            self.assertEqual(int(status[cap], 16), 0, "%s %s" % (cap, status[cap]))
        self.assertEqual(status["NoNewPrivs"].strip(), "1")
        self.assertEqual(os.readlink("/proc/%d/exe" % pid).split("/")[-1], "picket")
        mounts = {}
        with open("/proc/%d/mountinfo" % pid) as f:
            for ln in f:
                parts = ln.split()
                mounts[parts[4]] = parts[5].split(",")
        mounts.setdefault("/var/run/secrets/svid", mounts.get("/run/secrets/svid"))  # /var/run -> /run
        for mp in ("/", "/etc/picket", "/var/run/secrets/svid"):
            self.assertIn("ro", mounts.get(mp) or [], "%s is not mounted read-only: %r" % (mp, mounts.get(mp)))
        for mp in ("/tmp", "/run", "/var/tmp"):
            self.assertNotIn(mp, mounts, "%s is a writable mount Kubernetes would not add" % mp)

    def test_5_requests_through_picket(self):
        """A client with its own SVID: 200 and XFCC at the app; denied callers 403."""
        for http in pt.HTTP_VERSIONS:
            r = self.curl("/headers", http=http)
            self.assertEqual((r.exit, r.status), (0, 200), r)
            xfcc = [ln.split(":", 1)[1].strip() for ln in r.body.decode().splitlines()
                    if ln.lower().startswith("x-forwarded-client-cert:")]
            self.assertEqual(xfcc, ["By=%s;Hash=%s;URI=%s" % (
                pt.SERVER_ID, self.pki.der_sha256("client"), pt.CLIENT_ID)],
                "the app's view of the request:\n%s" % r.body.decode())
            r = self.curl("/headers", http=http, cert="other")
            self.assertEqual((r.exit, r.status), (0, 403), "another workload's SVID: %r" % r)
            r = self.curl("/admin", http=http)
            self.assertEqual((r.exit, r.status), (0, 403), "a path the policy does not allow: %r" % r)
            r = self.curl("/headers", http=http, cert=None)
            self.assertNotEqual(r.exit, 0, "no client certificate must fail the handshake: %r" % r)
        # the policy in force is the control plane's signed bundle
        pol = self.exec_json(self.sidecar, "http://127.0.0.1:15000/policy")
        self.assertEqual(pol.get("revision"), 1, pol)

    def test_6_control_plane(self):
        """`picket control serve` from the image, with control-plane.yaml's args."""
        ctx = pt.tls_context(self.pki, "client", alpn=("http/1.1",))
        # Called by address: the server's SPIFFE ID is what is checked, as sidecars do
        # (policy.server_id), not a DNS name.
        ctx.check_hostname = False

        def get(headers=None, context=ctx):
            c = http.client.HTTPSConnection(self.cp_addr, self.cp_port, context=context, timeout=10)
            try:
                c.connect()
                sans = c.sock.getpeercert().get("subjectAltName", ())
                self.assertIn(("URI", CP_ID), sans)
                c.request("GET", "/shop.json", headers=headers or {})
                r = c.getresponse()
                return r.status, r.getheader("etag"), r.read()
            finally:
                c.close()
        st, etag, body = get()
        self.assertEqual((st, body), (200, self.envelope))
        self.assertEqual(etag, '"%s"' % hashlib.sha256(self.envelope).hexdigest())
        self.assertEqual(get({"If-None-Match": etag})[0], 304)
        noclient = pt.tls_context(self.pki, None, alpn=("http/1.1",))
        noclient.check_hostname = False
        with self.assertRaises((ssl.SSLError, OSError, http.client.HTTPException)):
            get(context=noclient)

    def test_7_inject_serve(self):
        """`picket inject serve` from the image, webhook.yaml's args, the shipped config."""
        tmp = tempfile.mkdtemp(dir=self.tmp)
        base = ["curl", "-sS", "--noproxy", "*", "--max-time", "20", "--cacert", self.pki.ca,
                "--resolve", "picket-inject.picket-system.svc:%d:%s" % (self.inject_port, self.inject_addr)]
        url = "https://picket-inject.picket-system.svc:%d" % self.inject_port
        r = subprocess.run(base + ["-w", "\n%{http_code}", url + self.inject_probe],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        self.assertEqual(r.stdout, b"ok\n\n200", r.stderr)
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "orders-1", "namespace": "shop", "labels": {"app": "orders"}},
               "spec": {"containers": [{"name": "app", "image": "example/orders:1.4"}]}}
        uid = "705ab4f5-6393-11e8-b7cc-42010a800002"
        review = os.path.join(tmp, "review.json")
        with open(review, "w") as f:
            json.dump({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                       "request": {"uid": uid, "operation": "CREATE", "namespace": "shop",
                                   "object": pod}}, f)
        r = subprocess.run(base + ["-H", "Content-Type: application/json", "--data-binary",
                                   "@" + review, "-w", "\n%{http_code}", url + "/inject?timeout=10s"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        body, _, code = r.stdout.rpartition(b"\n")
        self.assertEqual(code, b"200", r.stderr + body)
        resp = json.loads(body)["response"]
        self.assertEqual((resp["uid"], resp["allowed"], resp["patchType"]), (uid, True, "JSONPatch"))
        patch = json.loads(base64.b64decode(resp["patch"]))
        with open(self.injector_config) as f:
            want_image = json.load(f)["image"]
        sidecars = [op["value"] for op in patch
                    if isinstance(op.get("value"), dict) and op["value"].get("name") == "picket"]
        sidecars += [v for op in patch if isinstance(op.get("value"), list)
                     for v in op["value"] if isinstance(v, dict) and v.get("name") == "picket"]
        self.assertTrue(sidecars, "no picket container in the patch: %r" % patch)
        self.assertEqual(sidecars[0].get("image"), want_image)

    # ---- stopping -------------------------------------------------------------------

    def test_8_stop_drains_in_flight(self):
        """`podman stop` (the image's STOPSIGNAL, sidecar.yaml's grace period): picket
        refuses new connections, finishes the request in flight, exits 0."""
        grace = self.sidecar_spec.get("terminationGracePeriodSeconds", 30)
        inflight = []
        for http in pt.HTTP_VERSIONS:
            path = "/hold/drain-" + http.replace(".", "")
            out = os.path.join(self.tmp, "bg-%s" % http.replace(".", ""))
            cmd = pt.curl_args(self.inbound, path, self.pki, http=http, addr=self.pod_addr)
            cmd[1:1] = ["--max-time", "120", "-o", out + ".body", "-w", "%{http_code}"]
            with open(out, "wb") as f:
                p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f,
                                     stderr=subprocess.STDOUT, start_new_session=True)
            self.addCleanup(lambda p=p: p.poll() is None and (pt._kill_group(p), p.wait(5)))
            inflight.append((path, p, out))
            self.wait_log(self.app, lambda text, path=path: ("request GET %s" % path) in text,
                          "request for %s at the app" % path)
        stop_out = os.path.join(self.tmp, "podman-stop.out")
        stopper = self.podman.popen(["stop", "-t", str(grace), self.sidecar], stop_out)
        self.addCleanup(lambda: stopper.poll() is None and (pt._kill_group(stopper), stopper.wait(5)))
        self.wait_log(self.sidecar, lambda text: '"draining"' in text, "draining line after SIGTERM")
        deadline = time.monotonic() + 30
        while not pt.port_refuses(self.inbound, addr=self.pod_addr):
            self.assertLess(time.monotonic(), deadline, "new connections accepted 30s into the drain")
            time.sleep(0.05)
        self.assertTrue(self.podman.alive(self.sidecar), "picket exited with requests in flight")
        for path, p, out in inflight:
            self.assertIsNone(p.poll(), "%s ended before it was released" % path)
        for path, p, out in inflight:
            open(os.path.join(self.hold_dir, "hold-" + path.rsplit("/", 1)[1]), "w").close()
        for path, p, out in inflight:
            rc = p.wait(60)
            with open(out) as f:
                status = f.read().strip()
            self.assertEqual((rc, status), (0, "200"), "in-flight %s during the drain" % path)
            with open(out + ".body", "rb") as f:
                self.assertEqual(f.read(), b"released\n")
        self.assertEqual(stopper.wait(grace + 30), 0, tail(stop_out))
        st = self.podman.inspect(self.sidecar)["State"]
        self.assertEqual(st["ExitCode"], 0, "picket's exit status after podman stop (137 = "
                         "SIGKILL at the end of the grace period); logs:\n%s"
                         % self.podman.logs(self.sidecar)[-3000:])
        self.assertEqual(self.json_log(self.sidecar, "drain_timeout"), [],
                         "the drain ran into drain_timeout")

    def test_9_servers_stop_cleanly(self):
        """control serve, inject serve and the app exit 0 on `podman stop`."""
        names = [self.control, self.injector, self.app]
        self.podman.run(["stop", "-t", "30"] + names, timeout=90)
        for n in names:
            st = self.podman.inspect(n)["State"]
            self.assertEqual(st["ExitCode"], 0, "%s exit status; logs:\n%s" % (
                n, self.podman.logs(n)[-3000:]))


# --------------------------------------------------------------------------

def arm_watchdog(seconds):
    def bark():
        log("WATCHDOG: the container test ran past %ds after its build; removing its "
            "containers" % seconds)
        cleanup()
        pt._kill_all()
        sys.stderr.flush()
        os._exit(3)
    t = threading.Timer(seconds, bark)
    t.daemon = True
    t.start()


def main():
    def on_term(signum, frame):
        log("signal %d: removing this run's containers" % signum)
        cleanup()
        os._exit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    t0 = time.monotonic()
    prog = unittest.main(exit=False, verbosity=2)
    res = prog.result
    ok = res.wasSuccessful() and res.testsRun > 0
    cleanup()
    left = leftovers(_podman, RUN) if _podman else []
    if left:
        ok = False
        log("left behind after cleanup: %s" % " ".join(left))
    tmp = getattr(ContainerImage, "tmp", None)
    if tmp and (pt.KEEP or not ok):
        log("kept %s" % tmp)
    elif tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    t = dict(ContainerImage.timings)
    if hasattr(ContainerImage, "t_run"):
        t["run"] = "%.0fs" % (time.monotonic() - ContainerImage.t_run)
    phases = ", ".join("%s %s" % (k, t[k]) for k in ("base", "build", "run") if k in t)
    print("SUMMARY test_container.py: %d run, %d failures, %d errors in %.1fs%s -> %s" % (
        res.testsRun, len(res.failures), len(res.errors), time.monotonic() - t0,
        " (%s)" % phases if phases else "", "PASS" if ok else "FAIL"), flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
