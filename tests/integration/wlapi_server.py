#!/usr/bin/python3
"""A SPIFFE Workload API server for picket's tests: grpcio with a generic handler
(no generated code) and hand-encoded protobuf, on a Unix socket.

    srv = WorkloadAPI(path)             # unix socket path
    srv.set_svids([svid(...), ...], federated={"spiffe://partner.net": der})
    srv.start()                         # serves FetchX509SVID; every open stream
                                        # gets the current message at once
    srv.push(...) / srv.push_raw(b)     # a new message on every open stream
    srv.drop_streams()                  # ends every open stream (grpc UNAVAILABLE)
    srv.silent = True                   # calls are accepted and never answered
    srv.stop()

Also runnable on its own (`/usr/bin/python3 wlapi_server.py --selftest`).

What it checks on each call, as the spec's server does: the `workload.spiffe.io: true`
metadata, else INVALID_ARGUMENT. `calls`, `headers_ok` count what it saw.

Runs under /usr/bin/python3 (Debian's python3-grpcio is only importable there).
"""
import base64
import os
import re
import ssl
import sys
import threading
from concurrent import futures

import grpc

METHOD = "/SpiffeWorkloadAPI/FetchX509SVID"


# ---- protobuf, by hand (proto3 wire format) ---------------------------------

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_bytes(num, data):
    """A length-delimited field (wire type 2)."""
    if isinstance(data, str):
        data = data.encode()
    return varint(num << 3 | 2) + varint(len(data)) + data


def svid(spiffe_id, chain_der, key_der, bundle_der, hint=None):
    """An X509SVID message: spiffe_id=1, x509_svid=2, x509_svid_key=3, bundle=4, hint=5."""
    out = field_bytes(1, spiffe_id) + field_bytes(2, chain_der) + field_bytes(3, key_der) + \
        field_bytes(4, bundle_der)
    if hint:
        out += field_bytes(5, hint)
    return out


def response(svids, federated=None):
    """An X509SVIDResponse: svids=1 (repeated), federated_bundles=3 (map<string, bytes>:
    each entry a message with key=1, value=2)."""
    out = b"".join(field_bytes(1, s) for s in svids)
    for k, v in (federated or {}).items():
        out += field_bytes(3, field_bytes(1, k) + field_bytes(2, v))
    return out


# ---- PEM files to DER -------------------------------------------------------

def pem_certs_der(path):
    """Every certificate of a PEM file, DER, back to back."""
    with open(path) as f:
        text = f.read()
    return b"".join(ssl.PEM_cert_to_DER_cert(m) for m in
                    re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.S))


def pem_key_der(path):
    """A PKCS#8 PEM key ("BEGIN PRIVATE KEY", as openssl genpkey writes it) as DER."""
    with open(path) as f:
        text = f.read()
    m = re.search(r"-----BEGIN PRIVATE KEY-----(.*?)-----END PRIVATE KEY-----", text, re.S)
    if not m:
        raise ValueError("%s: not a PKCS#8 PEM key" % path)
    return base64.b64decode("".join(m.group(1).split()))


def svid_from_files(spiffe_id, cert_pem, key_pem, bundle_pem, hint=None):
    return svid(spiffe_id, pem_certs_der(cert_pem), pem_key_der(key_pem),
                pem_certs_der(bundle_pem), hint)


# ---- the server ---------------------------------------------------------------

class WorkloadAPI:
    def __init__(self, path):
        self.path = path
        self.cond = threading.Condition()
        self.msg = None          # current message (bytes), None = nothing to send yet
        self.gen = 0             # bumped by every push
        self.drop_gen = 0        # bumped by drop_streams()
        self.silent = False
        self.calls = 0
        self.headers_ok = 0
        self.open_streams = 0
        self.server = None

    # -- content
    def set_svids(self, svids, federated=None):
        self.push_raw(response(svids, federated))

    def push(self, svids, federated=None):
        self.set_svids(svids, federated)

    def push_raw(self, data):
        with self.cond:
            self.msg = data
            self.gen += 1
            self.cond.notify_all()

    def drop_streams(self):
        with self.cond:
            self.drop_gen += 1
            self.cond.notify_all()

    def wait_streams(self, n, timeout=30.0):
        """Waits until at least n streams are open; True if so."""
        with self.cond:
            return self.cond.wait_for(lambda: self.open_streams >= n, timeout)

    # -- the call
    def _fetch(self, request, ctx):
        md = dict(ctx.invocation_metadata())
        with self.cond:
            self.calls += 1
        if md.get("workload.spiffe.io") != "true":
            ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, "security header missing from request")
        with self.cond:
            self.headers_ok += 1
            self.open_streams += 1
            self.cond.notify_all()
            drop = self.drop_gen
            sent = 0
        try:
            while ctx.is_active():
                with self.cond:
                    self.cond.wait_for(lambda: self.drop_gen != drop or (
                        not self.silent and self.msg is not None and self.gen != sent), 0.2)
                    if self.drop_gen != drop:
                        break
                    if self.silent or self.msg is None or self.gen == sent:
                        continue
                    sent, data = self.gen, self.msg
                yield data
        finally:
            with self.cond:
                self.open_streams -= 1
                self.cond.notify_all()
        ctx.abort(grpc.StatusCode.UNAVAILABLE, "stream dropped by the test")

    def start(self):
        handler = grpc.method_handlers_generic_handler("SpiffeWorkloadAPI", {
            "FetchX509SVID": grpc.unary_stream_rpc_method_handler(
                self._fetch, request_deserializer=None, response_serializer=None),
        })
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16),
                                  handlers=(handler,),
                                  options=[("grpc.max_send_message_length", 64 << 20)])
        if self.server.add_insecure_port("unix:" + self.path) == 0:
            raise RuntimeError("cannot bind unix:%s" % self.path)
        self.server.start()
        return self

    def stop(self):
        if self.server is not None:
            self.drop_streams()
            self.server.stop(0).wait(10)
            self.server = None
        try:
            os.unlink(self.path)
        except OSError:
            pass


def _selftest():
    import tempfile
    d = tempfile.mkdtemp()
    path = os.path.join(d, "agent.sock")
    srv = WorkloadAPI(path).start()
    srv.push_raw(response([svid("spiffe://example.org/a", b"x", b"y", b"z", "h")]))
    ch = grpc.insecure_channel("unix:" + path)
    call = ch.unary_stream(METHOD, request_serializer=None, response_deserializer=None)
    it = call(b"", metadata=(("workload.spiffe.io", "true"),))
    first = next(it)
    assert first.startswith(b"\x0a"), first
    it.cancel()
    try:
        list(call(b""))
        raise AssertionError("a call without the header was answered")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
    ch.close()
    srv.stop()
    os.rmdir(d)
    print("selftest ok")


if __name__ == "__main__":
    if sys.argv[1:] == ["--selftest"]:
        _selftest()
    else:
        sys.exit(__doc__)
