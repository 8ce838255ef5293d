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
 *
 * Built again as fuzz_h2tls.c (FC_TLS 1): the same inputs over TLS, and,
 * differential, for an input the plaintext harness reads the same way
 * (inbound listener, written in chunks: bits 0 and 4 of byte 0 clear),
 * the same input through the plaintext path must give the same outcome:
 * the requests the upstream received, the answers the client got, the
 * PINGs acknowledged and how the connection ended (GOAWAY's code, or
 * none). A record lost, doubled or reordered on the TLS read path
 * changes one of them.
 */
#ifndef FC_TLS
#define FC_TLS 0 /* fuzz_h2tls.c: 1, the same inputs over TLS */
#endif
#include "fuzz_conn.h"

/* What a connection came to, read off picket's output and the upstream. */
struct h2_outcome {
    size_t forwarded; /* requests the canned upstream received */
    size_t relayed;   /* DATA frames carrying its answer */
    size_t ping_acks;
    long goaway;      /* the last GOAWAY's error code, -1 for none */
};

/* Runs one input (TLS or plaintext) and checks picket's output. */
static struct h2_outcome h2_run(const uint8_t *data, size_t size, int tls)
{
    struct evbuffer *out = evbuffer_new();
    struct h2_outcome oc = {0, 0, 0, -1};
    size_t n, off = 0, fwd0 = fc.forwarded;
    const unsigned char *p;

    FUZZ_CHECK(out != NULL);
    if (tls)
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
            oc.relayed++;
        if (p[off + 3] == 0x6 && (p[off + 4] & 0x1))
            oc.ping_acks++;
        if (p[off + 3] == 0x7 && len >= 8 && off + 9 + len <= n)
            oc.goaway = ((long)p[off + 13] << 24) | ((long)p[off + 14] << 16) |
                        ((long)p[off + 15] << 8) | p[off + 16];
        off += 9 + len;
    }
    FUZZ_CHECKF(off == n, "output ends inside a frame (%zu of %zu bytes)", off, n);
    evbuffer_free(out);
    fc.relayed += oc.relayed;
    oc.forwarded = fc.forwarded - fwd0;
    return oc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct h2_outcome tls, plain;

    if (!FC_TLS) {
        (void)h2_run(data, size, 0);
        return 0;
    }
    tls = h2_run(data, size, 1);
    if (size == 0 || (data[0] & 0x11))
        return 0; /* outbound in the plaintext harness, or eight times over */
    plain = h2_run(data, size, 0);
    FUZZ_CHECKF(tls.forwarded == plain.forwarded && tls.relayed == plain.relayed &&
                    tls.ping_acks == plain.ping_acks && tls.goaway == plain.goaway,
                "over TLS %zu forwarded, %zu relayed, %zu PINGs acknowledged, GOAWAY %ld; "
                "in plaintext %zu, %zu, %zu, %ld",
                tls.forwarded, tls.relayed, tls.ping_acks, tls.goaway, plain.forwarded,
                plain.relayed, plain.ping_acks, plain.goaway);
    return 0;
}
