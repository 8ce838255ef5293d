/*
 * fuzz_h1.c - a downstream HTTP/1.x connection (proxy/http1/h1.c: the strict
 * framing pre-scan, http-parser, the request checks, responses, keep-alive
 * and pipelining) fed arbitrary client bytes through the real worker,
 * stream, policy and upstream code (fuzz_conn.h).
 *
 * Invariants: the forwarded head is well-formed (fuzz_conn.h); whatever
 * picket writes back starts with an HTTP/1.1 status line; no crash, leak
 * or UB. Over a replayed corpus: some request reached the upstream and some
 * upstream answer (a 200 with its body) reached the client (fuzz_conn.h).
 */
#include "fuzz_conn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct evbuffer *out = evbuffer_new();
    size_t n;

    FUZZ_CHECK(out != NULL);
    fc_run(data, size, 0, out);
    n = evbuffer_get_length(out);
    if (getenv("FUZZ_CONN_DEBUG") != NULL && n > 0) /* what picket answered, for seed writing */
        fwrite(evbuffer_pullup(out, -1), 1, n, stderr);
    if (n > 0) {
        const unsigned char *p = evbuffer_pullup(out, n < 13 ? (ssize_t)n : 13);
        FUZZ_CHECKF(n >= 13 && memcmp(p, "HTTP/1.1 ", 9) == 0 && p[9] >= '1' && p[9] <= '5' &&
                        p[10] >= '0' && p[10] <= '9' && p[11] >= '0' && p[11] <= '9' &&
                        p[12] == ' ',
                    "response does not start with a status line (%zu bytes)", n);
        /* the canned upstream's answer relayed: a 200 whose body is FC_UP_BODY */
        p = evbuffer_pullup(out, -1);
        if (fc.forwarded > 0 && memcmp(p, "HTTP/1.1 200 ", 13) == 0 &&
            memmem(p, n, "\r\n\r\n" FC_UP_BODY, 4 + sizeof(FC_UP_BODY) - 1) != NULL)
            fc.relayed++;
    }
    evbuffer_free(out);
    return 0;
}
