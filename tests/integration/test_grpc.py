#!/usr/bin/python3
"""gRPC end to end through picket (grpcio client over mTLS -> picket -> h2c grpc_app):
unary, server streaming, client streaming, bidi, error status and trailers.

    /usr/bin/python3 tests/integration/test_grpc.py
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import picket_test as pt  # noqa: E402
grpc = pt.require_module("grpc", "python3-grpcio")  # fails naming the package if missing
import grpc_app  # noqa: E402


class GRPC(pt.TestCase):

    def setUp(self):
        super().setUp()
        app = self.grpc_app()
        path, cfg, self.port, admin = self.config("h2c://127.0.0.1:%d" % app)
        self.proc = self.picket(path, inbound_port=self.port, admin_port=admin)
        self.ch = grpc_app.secure_channel(self.port, self.pki.ca, self.pki.cert("client"),
                                          self.pki.key("client"))
        self.addCleanup(self.ch.close)
        grpc.channel_ready_future(self.ch).result(timeout=10)

    def test_unary(self):
        self.assertEqual(grpc_app.unary(self.ch, b"hello"), b"hello")
        big = bytes(range(256)) * 4096  # 1 MiB message
        self.assertEqual(grpc_app.unary(self.ch, big, timeout=30), big)
        self.assertEqual(grpc_app.unary(self.ch, b""), b"")

    def test_unary_trailers_and_identity(self):
        resp, call = grpc_app.unary(self.ch, b"x", with_call=True)
        self.assertEqual(resp, b"x")
        self.assertEqual(call.code(), grpc.StatusCode.OK)
        md = dict(call.trailing_metadata())
        xfcc = md.get("x-echo-xfcc")
        want = "By=%s;Hash=%s;URI=%s" % (pt.SERVER_ID, self.pki.der_sha256("client"), pt.CLIENT_ID)
        self.assertEqual((xfcc or "").lower(), want.lower(),
                         "trailers pass through and the app sees picket's XFCC")
        self.assertNotIn(md.get("x-echo-request-id"), (None, "-"), "x-request-id generated")

    def test_server_streaming(self):
        msgs = grpc_app.server_stream(self.ch, 1000, timeout=60)
        self.assertEqual(len(msgs), 1000)
        self.assertEqual(msgs, [("msg-%d" % i).encode() for i in range(1000)])

    def test_client_streaming(self):
        self.assertEqual(grpc_app.client_stream(self.ch, [b"m%d" % i for i in range(500)]), b"500")
        self.assertEqual(grpc_app.client_stream(self.ch, []), b"0")

    def test_bidi_streaming(self):
        msgs = [b"b%d" % i for i in range(200)]
        self.assertEqual(grpc_app.bidi_stream(self.ch, msgs), msgs)

    def test_error_status(self):
        with self.assertRaises(grpc.RpcError) as cm:
            grpc_app.unary(self.ch, b"fail")
        self.assertEqual(cm.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
        self.assertEqual(cm.exception.details(), "told to fail")
        # the channel still works afterwards
        self.assertEqual(grpc_app.unary(self.ch, b"again"), b"again")

    def test_concurrent_calls(self):
        futs = [self.ch.unary_unary("/picket.test.Echo/Unary").future(b"c%d" % i, timeout=30)
                for i in range(100)]
        self.assertEqual([f.result() for f in futs], [b"c%d" % i for i in range(100)])

    def test_unknown_method(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.ch.unary_unary("/picket.test.Echo/Nope")(b"x", timeout=10)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED)


class GRPCPolicy(pt.TestCase):

    def test_denied_is_grpc_permission_denied(self):
        """A policy deny answers gRPC requests with trailers-only grpc-status 7."""
        app = self.grpc_app()
        pol = pt.write_policy(os.path.join(self.tmp, "policy.json"), [
            {"id": "allow-client", "action": "allow", "from": [pt.CLIENT_ID]}], default="deny")
        path, cfg, port, admin = self.config("h2c://127.0.0.1:%d" % app, policy={"file": pol})
        self.picket(path, inbound_port=port, admin_port=admin)
        ok = grpc_app.secure_channel(port, self.pki.ca, self.pki.cert("client"), self.pki.key("client"))
        self.addCleanup(ok.close)
        self.assertEqual(grpc_app.unary(ok, b"hi"), b"hi")
        other = grpc_app.secure_channel(port, self.pki.ca, self.pki.cert("other"), self.pki.key("other"))
        self.addCleanup(other.close)
        with self.assertRaises(grpc.RpcError) as cm:
            grpc_app.unary(other, b"hi")
        self.assertEqual(cm.exception.code(), grpc.StatusCode.PERMISSION_DENIED)


if __name__ == "__main__":
    pt.main(timeout=240)
