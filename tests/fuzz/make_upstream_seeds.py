#!/usr/bin/python3
"""Writes the seed corpus of fuzz_upstream (tests/fuzz/corpus/upstream/).
Run once with Debian's python3-hpack; the output is committed.

Each seed is what the canned upstream answers picket's one request with,
after the harness's control byte (fuzz_upstream.c): bit 0 = upstream
protocol (0 HTTP/1.1, 1 h2c), bit 1 = downstream client (0 HTTP/1.1, 1
HTTP/2), bits 2-4 = answer chunk size index (all, 1, 2, 7, 16, 100, 1000,
4096 bytes per loop turn), bit 5 = the upstream half-closes after its
answer, bit 6 = HEAD instead of GET.

limits.max_header_list_size is 8192 in fuzz_conn.h; every field the
upstream sends (interim, final, trailers) costs name + value + 32 against
it. The names say what picket must do: *_over_* and *_bad_* seeds must be
turned into a 502, the others relayed (or cut, for over-limit trailers).
"""
import os
import struct
import sys

import hpack

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "upstream")

UP_H2, DOWN_H2, CLOSE, HEAD = 1, 2, 32, 64
LIMIT = 8192


def chunk(i):
    return i << 2  # 1 = 1 byte, 2 = 2, 3 = 7, 4 = 16, 5 = 100, 6 = 1000, 7 = 4096


def write(name, ctl, payload):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(bytes([ctl]) + payload)


# ---- HTTP/1.1 answers -------------------------------------------------------

def h1(status, fields=(), body=b"", reason=b"OK"):
    head = b"HTTP/1.1 " + status + (b" " + reason if reason else b"") + b"\r\n"
    for n, v in fields:
        head += n + b": " + v + b"\r\n"
    return head + b"\r\n" + body


def fat(n, size=1000, prefix=b"x-fat-"):
    return [(prefix + b"%d" % i, b"v" * size) for i in range(n)]


def cost(fields):
    return sum(len(n) + len(v) + 32 for n, v in fields)


OK = h1(b"200", [(b"Content-Length", b"5"), (b"Content-Type", b"text/plain")], b"hello")
CHUNKED = h1(b"200", [(b"Transfer-Encoding", b"chunked"), (b"Trailer", b"x-checksum")],
             b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: abc\r\ngrpc-status: 0\r\n\r\n")
EARLY = h1(b"103", [(b"Link", b"</style.css>; rel=preload")], reason=b"Early Hints")

# exactly at the limit: Content-Length: 0 (47) + one field of the rest
at_limit = LIMIT - (14 + 1 + 32) - (3 + 32)
H1 = {
    "h1_ok": (0, OK),
    "h1_ok_bytewise": (chunk(1), OK),
    "h1_ok_h2down": (DOWN_H2, OK),
    "h1_ok_head": (HEAD, h1(b"200", [(b"Content-Length", b"100")])),
    "h1_chunked_trailers": (0, CHUNKED),
    "h1_chunked_trailers_7": (chunk(3), CHUNKED),
    "h1_chunked_trailers_h2down": (DOWN_H2, CHUNKED),
    "h1_close_delimited": (CLOSE, h1(b"200", [(b"Content-Type", b"text/plain")],
                                     b"until the connection closes")),
    "h1_1xx_then_200": (0, h1(b"100", reason=b"Continue") + EARLY +
                        h1(b"200", [(b"Content-Length", b"2")], b"ok")),
    "h1_103_x16_then_200": (0, EARLY * 16 + h1(b"200", [(b"Content-Length", b"2")], b"ok")),
    "h1_bad_103_x20": (0, EARLY * 20 + h1(b"200", [(b"Content-Length", b"2")], b"ok")),
    "h1_over_fat_headers": (0, h1(b"200", [(b"Content-Length", b"2")] + fat(9), b"ok")),
    "h1_over_fat_headers_h2down": (DOWN_H2, h1(b"200", [(b"Content-Length", b"2")] + fat(9),
                                               b"ok")),
    # neither head is over the limit alone: together they are
    "h1_over_split_1xx": (0, h1(b"103", fat(5), reason=b"Early Hints") +
                          h1(b"200", [(b"Content-Length", b"2")] + fat(4), b"ok")),
    "h1_over_split_1xx_h2down": (DOWN_H2, h1(b"103", fat(5), reason=b"Early Hints") +
                                 h1(b"200", [(b"Content-Length", b"2")] + fat(4), b"ok")),
    # the head is relayed; the trailers pass the limit: the response is cut
    "h1_fat_trailers": (0, h1(b"200", [(b"Transfer-Encoding", b"chunked")] + fat(4),
                              b"2\r\nok\r\n0\r\n" + b"".join(
                                  n + b": " + v + b"\r\n" for n, v in fat(5, prefix=b"x-t-"))
                              + b"\r\n")),
    "h1_at_limit": (0, h1(b"200", [(b"Content-Length", b"0"), (b"x-a", b"a" * at_limit)])),
    "h1_over_by_one": (0, h1(b"200", [(b"Content-Length", b"0"),
                                      (b"x-a", b"a" * (at_limit + 1))])),
    "h1_bad_status_799": (0, h1(b"799", [(b"Content-Length", b"2")], b"ok")),
    "h1_bad_status_099": (0, h1(b"099", [(b"Content-Length", b"2")], b"ok")),
    "h1_bad_status_abc": (0, h1(b"abc", [(b"Content-Length", b"2")], b"ok")),
    "h1_bad_status_101": (0, h1(b"101", [(b"Upgrade", b"h2c"), (b"Connection", b"upgrade")],
                                reason=b"Switching Protocols")),
    "h1_obs_fold": (0, b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n"),
    "h1_nul_in_value": (0, b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n"),
    "h1_cl_and_te": (0, h1(b"200", [(b"Content-Length", b"2"),
                                    (b"Transfer-Encoding", b"chunked")], b"0\r\n\r\n")),
    "h1_204_with_body": (0, h1(b"204", [(b"Content-Length", b"2")], b"ok")),
    "h1_304": (0, h1(b"304", [(b"ETag", b'"x"'), (b"Content-Length", b"10")])),
    "h1_hop_by_hop": (0, h1(b"200", [(b"Connection", b"close, x-secret"), (b"X-Secret", b"1"),
                                     (b"Keep-Alive", b"5"), (b"Content-Length", b"0")])),
    "h1_two_responses": (0, OK + OK),
    "h1_short_body": (CLOSE, h1(b"200", [(b"Content-Length", b"10")], b"short")),
}


# ---- h2c answers -------------------------------------------------------------

def frame(ftype, flags, sid, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", sid) + payload


SETTINGS = frame(0x4, 0, 0, b"")
END_STREAM, END_HEADERS = 0x1, 0x4


def headers(block, end_stream=False, sid=1):
    return frame(0x1, END_HEADERS | (END_STREAM if end_stream else 0), sid, block)


def data(payload, end_stream=True, sid=1):
    return frame(0x0, END_STREAM if end_stream else 0, sid, payload)


def enc():
    return hpack.Encoder()


def block(e, fields):
    return e.encode(fields, huffman=False)


def h2_answer(parts):
    """parts: list of ('h', fields, end_stream) / ('d', bytes, end_stream);
    one HPACK encoder for the whole connection."""
    e = enc()
    out = SETTINGS
    for kind, what, end in parts:
        out += headers(block(e, what), end) if kind == "h" else data(what, end)
    return out


def sfat(n, size=1000, prefix="x-fat-"):
    return [(prefix + str(i), "v" * size) for i in range(n)]


H2_OK = h2_answer([("h", [(":status", "200"), ("content-type", "text/plain")], False),
                   ("d", b"hello", True)])
H2_TRAILERS = h2_answer([("h", [(":status", "200"), ("content-type", "application/grpc")], False),
                         ("d", b"\x00\x00\x00\x00\x00", False),
                         ("h", [("grpc-status", "0"), ("grpc-message", "ok")], True)])


def hpack_bomb():
    # one 4000-byte value, added to the dynamic table (index 62), then
    # referenced 3000 times with one byte each: 7 KB that decode to 12 MB
    b = b"\x88"  # :status 200
    b += b"\x40" + bytes([3]) + b"x-b" + b"\x7f" + hpack_int(4000 - 127) + b"a" * 4000
    b += b"\xbe" * 3000
    return SETTINGS + headers(b, True)


def hpack_int(n):
    """The continuation bytes of an HPACK integer past a full 7-bit prefix."""
    out = b""
    while n >= 128:
        out += bytes([(n & 127) | 128])
        n >>= 7
    return out + bytes([n])


def continuations(n):
    """A header block in one HEADERS and n CONTINUATION frames."""
    b = block(enc(), [(":status", "200")] + [("x-c%d" % i, "v" * 10) for i in range(n + 1)])
    step = max(1, len(b) // (n + 1))
    parts = [b[i * step:(i + 1) * step] for i in range(n)] + [b[n * step:]]
    out = SETTINGS + frame(0x1, END_STREAM, 1, parts[0])
    for i, p in enumerate(parts[1:]):
        out += frame(0x9, END_HEADERS if i == n - 1 else 0, 1, p)
    return out


def raw_status(value):
    # :status as a literal with the static name (index 8), never indexed
    return SETTINGS + headers(b"\x18" + bytes([len(value)]) + value, True)


h2_at_limit = LIMIT - (7 + 3 + 32) - (3 + 32)
H2 = {
    "h2_ok": (UP_H2, H2_OK),
    "h2_ok_bytewise": (UP_H2 | chunk(1), H2_OK),
    "h2_ok_h2down": (UP_H2 | DOWN_H2, H2_OK),
    "h2_ok_head": (UP_H2 | HEAD, h2_answer([("h", [(":status", "200"),
                                                   ("content-length", "100")], True)])),
    "h2_trailers": (UP_H2, H2_TRAILERS),
    "h2_trailers_h2down": (UP_H2 | DOWN_H2, H2_TRAILERS),
    "h2_trailers_16": (UP_H2 | chunk(4), H2_TRAILERS),
    "h2_103_then_200": (UP_H2, h2_answer([("h", [(":status", "103"),
                                                 ("link", "</a.css>; rel=preload")], False),
                                          ("h", [(":status", "200")], False),
                                          ("d", b"ok", True)])),
    "h2_over_hpack_bomb": (UP_H2, hpack_bomb()),
    "h2_over_hpack_bomb_h2down": (UP_H2 | DOWN_H2, hpack_bomb()),
    "h2_over_split_1xx": (UP_H2, h2_answer([("h", [(":status", "103")] + sfat(5), False),
                                            ("h", [(":status", "200")] + sfat(4), False),
                                            ("d", b"ok", True)])),
    "h2_over_fat_headers": (UP_H2, h2_answer([("h", [(":status", "200")] + sfat(9), True)])),
    "h2_fat_trailers": (UP_H2, h2_answer([("h", [(":status", "200")] + sfat(4), False),
                                          ("d", b"ok", False),
                                          ("h", sfat(5, prefix="x-t-"), True)])),
    "h2_at_limit": (UP_H2, h2_answer([("h", [(":status", "200"), ("x-a", "a" * h2_at_limit)],
                                       True)])),
    "h2_over_by_one": (UP_H2, h2_answer([("h", [(":status", "200"),
                                                ("x-a", "a" * (h2_at_limit + 1))], True)])),
    "h2_continuation_8": (UP_H2, continuations(8)),
    "h2_bad_continuation_10": (UP_H2, continuations(10)),
    "h2_bad_status_1a0": (UP_H2, raw_status(b"1a0")),
    "h2_bad_status_799": (UP_H2, raw_status(b"799")),
    "h2_bad_status_099": (UP_H2, raw_status(b"099")),
    "h2_bad_no_status": (UP_H2, h2_answer([("h", [("content-type", "text/plain")], True)])),
    "h2_rst_refused": (UP_H2, SETTINGS + frame(0x3, 0, 1, struct.pack(">I", 7))),
    "h2_goaway": (UP_H2, SETTINGS + frame(0x7, 0, 0, struct.pack(">II", 0, 0))),
    # nghttp2 ends the session: the stream must fail at once (a 502), not
    # wait for upstream_timeout
    "h2_no_settings": (UP_H2, headers(block(enc(), [(":status", "200")]), True)),
    "h2_settings_ack_first": (UP_H2, frame(0x4, 0x1, 0, b"") + H2_OK[len(SETTINGS):]),
    "h2_frame_too_big": (UP_H2, SETTINGS + frame(0x1, END_HEADERS, 1, b"\x88" + b"\x00" * 16384)),
    "h2_data_first": (UP_H2, SETTINGS + data(b"early")),
    "h2_close_mid_body": (UP_H2 | CLOSE, h2_answer([("h", [(":status", "200"),
                                                           ("content-length", "10")], False),
                                                    ("d", b"short", False)])),
    "h2_ping_window": (UP_H2, SETTINGS + frame(0x6, 0, 0, b"12345678") +
                       frame(0x8, 0, 0, struct.pack(">I", 1000)) + H2_OK[len(SETTINGS):]),
}

# files of other origin (regress-*, inputs the fuzzer found) stay
os.makedirs(OUT, exist_ok=True)
for name, (ctl, payload) in list(H1.items()) + list(H2.items()):
    write(name, ctl, payload)
print("%d seeds written to %s" % (len(H1) + len(H2), OUT), file=sys.stderr)
