/*
 * fuzz_h2.c - a downstream HTTP/2 connection (proxy/http2/h2.c: picket's
 * nghttp2 callbacks, flood limits, header checks, flow control, GOAWAY
 * handling) fed arbitrary frames after the client preface, through the
 * real worker, stream, policy and upstream code (fuzz_conn.h).
 *
 * Invariants: the forwarded head is well-formed (fuzz_conn.h); picket's
 * output starts with a SETTINGS frame on stream 0 (its connection
 * preface) and is a sequence of whole frames no larger than the default
 * SETTINGS_MAX_FRAME_SIZE; no crash, leak or UB. Over a replayed corpus:
 * some request reached the upstream and some upstream answer reached the
 * client as a DATA frame carrying exactly its body (fuzz_conn.h).
 */
#ifndef FC_TLS
#define FC_TLS 0 /* fuzz_h2tls.c: 1, the same inputs over TLS */
#endif
#include "fuzz_conn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct evbuffer *out = evbuffer_new();
    size_t n, off = 0;
    const unsigned char *p;

    FUZZ_CHECK(out != NULL);
    if (FC_TLS)
        fc_run_tls(data, size, out);
    else
        fc_run(data, size, 1, out);
    n = evbuffer_get_length(out);
    if (getenv("FUZZ_CONN_DEBUG") != NULL && n > 0) /* what picket answered, for seed writing */
        fwrite(evbuffer_pullup(out, -1), 1, n, stderr);
    p = evbuffer_pullup(out, -1);
    if (n > 0) {
        FUZZ_CHECKF(n >= 9 && p[3] == 0x4 && (p[5] | p[6] | p[7] | p[8]) == 0,
                    "output does not start with SETTINGS on stream 0");
    }
    while (off + 9 <= n) {
        size_t len = ((size_t)p[off] << 16) | ((size_t)p[off + 1] << 8) | p[off + 2];
        FUZZ_CHECKF(len <= 16384, "frame of %zu bytes at offset %zu", len, off);
        /* a DATA frame (type 0, unpadded) on a stream, carrying the upstream's body */
        if (p[off + 3] == 0x0 && !(p[off + 4] & 0x8) && len == sizeof(FC_UP_BODY) - 1 &&
            off + 9 + len <= n && memcmp(p + off + 9, FC_UP_BODY, len) == 0)
            fc.relayed++;
        off += 9 + len;
    }
    FUZZ_CHECKF(off == n, "output ends inside a frame (%zu of %zu bytes)", off, n);
    evbuffer_free(out);
    return 0;
}
