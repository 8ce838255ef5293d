#!/usr/bin/python3
"""gRPC test app for picket's integration tests (no protoc: generic handlers
with raw-bytes messages).

    /usr/bin/python3 grpc_app.py PORT          serve on 127.0.0.1:PORT (insecure h2c); prints "ready"
    /usr/bin/python3 grpc_app.py --selftest    start a server in-process and call it insecurely

Service "picket.test.Echo":
    Unary         echoes the request bytes; b"fail" aborts with FAILED_PRECONDITION "told to fail".
                  Trailing metadata "x-echo-xfcc" carries the x-forwarded-client-cert the
                  server received (or "-"), "x-echo-request-id" the x-request-id.
    ServerStream  request is an ASCII integer N; streams b"msg-0" .. b"msg-(N-1)"
    ClientStream  returns the number of messages received, as ASCII
    BidiStream    echoes every message as it arrives

Service "grpc.health.v1.Health" (the standard health protocol, hand-encoded):
    Check         service "" or "picket.test.Echo": SERVING; "down": NOT_SERVING;
                  "hang": answers only when the call is cancelled; any other: NOT_FOUND.

Runs under /usr/bin/python3 (Debian's python3-grpcio is only importable there).
"""
import sys
import time
from concurrent import futures

import grpc

SERVICE = "picket.test.Echo"
FAIL_CODE = grpc.StatusCode.FAILED_PRECONDITION
FAIL_MESSAGE = "told to fail"


def _md(ctx, name):
    for k, v in ctx.invocation_metadata():
        if k == name:
            return v
    return "-"


def _unary(req, ctx):
    ctx.set_trailing_metadata((("x-echo-xfcc", _md(ctx, "x-forwarded-client-cert")),
                               ("x-echo-request-id", _md(ctx, "x-request-id"))))
    if req == b"fail":
        ctx.abort(FAIL_CODE, FAIL_MESSAGE)
    return req


def _server_stream(req, ctx):
    n = int(req.decode("ascii"))
    for i in range(n):
        yield ("msg-%d" % i).encode()


def _client_stream(it, ctx):
    n = 0
    for _ in it:
        n += 1
    return str(n).encode()


def _bidi(it, ctx):
    for m in it:
        yield m


HEALTH_SERVICE = "grpc.health.v1.Health"
SERVING, NOT_SERVING = 1, 2


def _varint(b, i):
    v, shift = 0, 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        if not c & 0x80:
            return v, i
        shift += 7


def health_request_service(req):
    """HealthCheckRequest.service (field 1, a string) of a serialized request."""
    i, service = 0, ""
    while i < len(req):
        key, i = _varint(req, i)
        if key & 7 == 2:
            n, i = _varint(req, i)
            if key >> 3 == 1:
                service = req[i:i + n].decode()
            i += n
        elif key & 7 == 0:
            _, i = _varint(req, i)
        else:
            raise ValueError("unexpected wire type %d" % (key & 7))
    return service


def _health_check(req, ctx):
    service = health_request_service(req)
    if service in ("", SERVICE):
        return bytes([0x08, SERVING])  # HealthCheckResponse{status = SERVING}
    if service == "down":
        return bytes([0x08, NOT_SERVING])
    if service == "hang":
        while ctx.is_active():
            time.sleep(0.05)
        ctx.abort(grpc.StatusCode.CANCELLED, "gone")
    ctx.abort(grpc.StatusCode.NOT_FOUND, "unknown service")


def make_server(port, max_workers=16):
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(_server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(_client_stream),
        "BidiStream": grpc.stream_stream_rpc_method_handler(_bidi),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                         options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        HEALTH_SERVICE, {"Check": grpc.unary_unary_rpc_method_handler(_health_check)}),))
    bound = server.add_insecure_port("127.0.0.1:%d" % port)
    if bound == 0:
        raise RuntimeError("cannot bind 127.0.0.1:%d" % port)
    server.start()
    return server, bound


# --------------------------------------------------------------------------
# client side

_CHANNEL_OPTS = [("grpc.enable_http_proxy", 0), ("grpc.enable_retries", 0)]


def secure_channel(port, ca_file, cert_file=None, key_file=None, server_name="localhost"):
    """A TLS channel to 127.0.0.1:port that presents the given client certificate."""
    def rd(p):
        if p is None:
            return None
        with open(p, "rb") as f:
            return f.read()
    creds = grpc.ssl_channel_credentials(root_certificates=rd(ca_file), private_key=rd(key_file),
                                         certificate_chain=rd(cert_file))
    return grpc.secure_channel("ipv4:127.0.0.1:%d" % port, creds,
                               options=_CHANNEL_OPTS + [("grpc.ssl_target_name_override", server_name)])


def insecure_channel(port):
    return grpc.insecure_channel("ipv4:127.0.0.1:%d" % port, options=_CHANNEL_OPTS)


def _m(name):
    return "/%s/%s" % (SERVICE, name)


def unary(channel, data, timeout=10, with_call=False):
    fn = channel.unary_unary(_m("Unary"))
    if with_call:
        return fn.with_call(data, timeout=timeout)
    return fn(data, timeout=timeout)


def server_stream(channel, n, timeout=30):
    return list(channel.unary_stream(_m("ServerStream"))(str(n).encode(), timeout=timeout))


def client_stream(channel, messages, timeout=30):
    return channel.stream_unary(_m("ClientStream"))(iter(messages), timeout=timeout)


def bidi_stream(channel, messages, timeout=30):
    return list(channel.stream_stream(_m("BidiStream"))(iter(messages), timeout=timeout))


def _selftest():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    server, port = make_server(port)
    try:
        ch = insecure_channel(port)
        grpc.channel_ready_future(ch).result(timeout=5)
        assert unary(ch, b"hello") == b"hello"
        resp, call = unary(ch, b"x", with_call=True)
        md = dict(call.trailing_metadata())
        assert md.get("x-echo-xfcc") == "-", md
        assert server_stream(ch, 1000) == [("msg-%d" % i).encode() for i in range(1000)]
        assert client_stream(ch, [b"a"] * 57) == b"57"
        assert bidi_stream(ch, [b"1", b"2", b"3"]) == [b"1", b"2", b"3"]
        try:
            unary(ch, b"fail")
            raise AssertionError("no error")
        except grpc.RpcError as e:
            assert e.code() == FAIL_CODE and e.details() == FAIL_MESSAGE, (e.code(), e.details())
        check = ch.unary_unary("/%s/Check" % HEALTH_SERVICE)
        assert check(b"") == bytes([0x08, SERVING])
        assert check(b"\x0a\x04down") == bytes([0x08, NOT_SERVING])
        try:
            check(b"\x0a\x04nope")
            raise AssertionError("no error")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND, e.code()
        ch.close()
        print("selftest ok")
    finally:
        server.stop(0)
    return 0


def main(argv):
    if len(argv) == 2 and argv[1] == "--selftest":
        return _selftest()
    if len(argv) != 2:
        sys.stderr.write("usage: grpc_app.py PORT | --selftest\n")
        return 2
    server, _ = make_server(int(argv[1]))
    print("ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    server.stop(0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
