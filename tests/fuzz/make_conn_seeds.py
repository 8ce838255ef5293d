#!/usr/bin/python3
"""Writes the seed corpora of fuzz_h1 and fuzz_h2 (tests/fuzz/corpus/h1,
corpus/h2). Run once with Debian's python3-h2; the output is committed.

Byte 0 of every seed is the harness's control byte (fuzz_conn.h): bit 0 =
listener (0 inbound, 1 outbound), bits 1-3 = chunk size index.
"""
import os
import sys

import h2.config
import h2.connection
import h2.events

HERE = os.path.dirname(os.path.abspath(__file__))


def write(kind, name, ctl, payload):
    d = os.path.join(HERE, "corpus", kind)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(bytes([ctl]) + payload)


H1 = {
    "get": b"GET /orders/1 HTTP/1.1\r\nHost: shop\r\n\r\n",
    "get_query": b"GET /orders/1?a=b&c=%2f HTTP/1.1\r\nHost: shop\r\nX-Request-Id: abc\r\n\r\n",
    "post_cl": b"POST /orders/2 HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\n\r\nhello",
    "post_chunked": b"POST /orders/3 HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"5\r\nhello\r\n0\r\nx-sum: 1\r\n\r\n",
    "chunk_ext": b"POST /orders/3 HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5;ext=1\r\nhello\r\n0\r\n\r\n",
    "pipelined": b"GET /orders/1 HTTP/1.1\r\nHost: shop\r\n\r\n"
                 b"GET /orders/admin/x HTTP/1.1\r\nHost: shop\r\n\r\n"
                 b"HEAD / HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
    "denied": b"GET /secret HTTP/1.1\r\nHost: shop\r\n\r\n",
    "tenant": b"GET /t/x HTTP/1.1\r\nHost: shop\r\nX-Tenant: acme\r\n\r\n",
    "dispatch": b"GET /pay/1 HTTP/1.1\r\nHost: shop\r\nX-User: u1\r\n\r\n",
    "h2c_route": b"GET /h2/x HTTP/1.1\r\nHost: shop\r\n\r\n",
    "cl_te": b"POST /orders/1 HTTP/1.1\r\nHost: shop\r\nContent-Length: 4\r\n"
             b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "dup_cl": b"POST /orders/1 HTTP/1.1\r\nHost: shop\r\nContent-Length: 4\r\n"
              b"Content-Length: 5\r\n\r\nhello",
    "obs_fold": b"GET /orders/1 HTTP/1.1\r\nHost: shop\r\nX-A: a\r\n b\r\n\r\n",
    "space_name": b"GET /orders/1 HTTP/1.1\r\nHost: shop\r\nX A: a\r\n\r\n",
    "bare_lf": b"GET /orders/1 HTTP/1.1\nHost: shop\n\n",
    "absolute": b"GET http://shop/orders/1 HTTP/1.1\r\nHost: shop\r\n\r\n",
    "options_star": b"OPTIONS * HTTP/1.1\r\nHost: shop\r\n\r\n",
    "connect": b"CONNECT shop:443 HTTP/1.1\r\nHost: shop:443\r\n\r\n",
    "expect": b"POST /orders/1 HTTP/1.1\r\nHost: shop\r\nExpect: 100-continue\r\n"
              b"Content-Length: 2\r\n\r\nok",
    "http10": b"GET /orders/1 HTTP/1.0\r\n\r\n",
    "upgrade": b"GET /orders/1 HTTP/1.1\r\nHost: shop\r\nConnection: Upgrade, HTTP2-Settings\r\n"
               b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    "dotdot": b"GET /orders/../orders/./1//x%2e%2e/ HTTP/1.1\r\nHost: shop\r\n\r\n",
    "xfcc_spoof": b"GET /orders/1 HTTP/1.1\r\nHost: shop\r\n"
                  b"X-Forwarded-Client-Cert: By=spiffe://evil;URI=spiffe://x\r\n"
                  b"X-Picket-Peer-Id: spiffe://fuzz.test/admin\r\n\r\n",
    "hop": b"GET /orders/1 HTTP/1.1\r\nHost: shop\r\nConnection: keep-alive, x-drop\r\n"
           b"X-Drop: 1\r\nTE: trailers\r\nKeep-Alive: 5\r\n\r\n",
    "grpc": b"POST /orders/svc.Orders/Get HTTP/1.1\r\nHost: shop\r\n"
            b"Content-Type: application/grpc\r\nContent-Length: 5\r\n\r\n\x00\x00\x00\x00\x00",
}

for name, req in H1.items():
    write("h1", name, 0, req)
write("h1", "get_bytewise", 2, H1["get"])
write("h1", "pipelined_7", 8, H1["pipelined"])
write("h1", "outbound", 1, b"GET /x HTTP/1.1\r\nHost: svc.fuzz.test\r\n\r\n")
write("h1", "outbound_unknown", 1, b"GET /x HTTP/1.1\r\nHost: other\r\n\r\n")


def h2_client():
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                             header_encoding=None))
    c.initiate_connection()
    return c


def h2_bytes(c):
    data = c.data_to_send()
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    return data[len(preface):] if data.startswith(preface) else data


def req(path, method="GET", authority="shop", extra=()):
    return [(":method", method), (":scheme", "https"), (":authority", authority),
            (":path", path)] + list(extra)


def seed(name, fn, ctl=0):
    c = h2_client()
    out = h2_bytes(c)
    fn(c)
    out += c.data_to_send()
    write("h2", name, ctl, out)


def s_get(c):
    c.send_headers(1, req("/orders/1"), end_stream=True)


def s_post(c):
    c.send_headers(1, req("/orders/2", "POST", extra=[("content-length", "5")]))
    c.send_data(1, b"hello")
    c.send_headers(1, [("x-sum", "1")], end_stream=True)


def s_many(c):
    for i, p in enumerate(["/orders/1", "/secret", "/pay/9", "/t/x", "/h2/y",
                           "/orders/admin/z"]):
        extra = [("x-tenant", "acme")] if p == "/t/x" else []
        c.send_headers(1 + 2 * i, req(p, extra=extra), end_stream=True)


def s_reset(c):
    for i in range(20):
        c.send_headers(1 + 2 * i, req("/orders/%d" % i), end_stream=True)
        c.reset_stream(1 + 2 * i)


def s_control(c):
    c.ping(b"12345678")
    c.increment_flow_control_window(65535)
    c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1})
    c.send_headers(1, req("/orders/1"), end_stream=True)
    c.prioritize(1, weight=32)


def s_continuation(c):
    c.max_outbound_frame_size = 16384
    big = [("x-big-%d" % i, "v" * 1000) for i in range(20)]
    c.send_headers(1, req("/orders/1", extra=big), end_stream=True)


def s_grpc(c):
    c.send_headers(1, req("/orders/svc.Orders/Get", "POST",
                          extra=[("content-type", "application/grpc"), ("te", "trailers")]))
    c.send_data(1, b"\x00\x00\x00\x00\x00", end_stream=True)


def s_goaway(c):
    c.send_headers(1, req("/orders/1"), end_stream=True)
    c.close_connection()


def s_spoof(c):
    c.send_headers(1, req("/orders/1", extra=[
        ("x-forwarded-client-cert", "By=spiffe://evil;URI=spiffe://x"),
        ("x-picket-peer-id", "spiffe://fuzz.test/admin"), ("connection", "close")]),
        end_stream=True)


def s_outbound(c):
    c.send_headers(1, req("/x", authority="svc.fuzz.test"), end_stream=True)
    c.send_headers(3, req("/x", authority="nope"), end_stream=True)


seed("get", s_get)
seed("get_bytewise", s_get, 2)
seed("post_trailers", s_post)
seed("many", s_many)
seed("rapid_reset", s_reset)
seed("control", s_control)
seed("continuation", s_continuation)
seed("grpc", s_grpc)
seed("goaway", s_goaway)
seed("spoof", s_spoof)
seed("outbound", s_outbound, 1)
seed("post_16", s_post, 10)
print("seeds written", file=sys.stderr)
