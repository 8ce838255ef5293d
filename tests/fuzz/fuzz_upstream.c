/*
 * fuzz_upstream.c - picket's client sessions fed arbitrary upstream
 * response bytes: proxy/up_h1.c (http_parser) and proxy/up_h2.c (the
 * nghttp2 client), through the real worker, stream and downstream code
 * (fuzz_conn.h in answer mode). The client sends one fixed allowed
 * request; the canned upstream answers it with the input.
 *
 * Input: byte 0 is the harness's:
 *   bit 0     upstream: 0 HTTP/1.1 (GET /orders/1, the default upstream),
 *             1 h2c (GET /up2/x, the /up2/ route); an h2c answer should
 *             start with a SETTINGS frame and answer on stream 1
 *   bit 1     downstream client: 0 HTTP/1.1, 1 HTTP/2
 *   bits 2-4  answer bytes written per loop turn: all, 1, 2, 7, 16, 100,
 *             1000, 4096
 *   bit 5     the upstream half-closes once its answer is out
 *   bit 6     HEAD instead of GET
 * The rest is the upstream's answer, written once.
 *
 * Invariants on what picket sends its client (both downstream protocols):
 *   - every head is well-formed. HTTP/1.1: a status line "HTTP/1.1 NNN"
 *     (then SP and a reason) with NNN in 100..599, CRLF line ends, token
 *     field names, no control bytes in values, exactly one framing field
 *     (Content-Length, or Transfer-Encoding: chunked) on a final response
 *     with a body, none or Content-Length on 204/304/HEAD (none on 204),
 *     at most one Connection; the body and chunk framing read back whole
 *     (or cut short: an abort). HTTP/2: whole frames <= 16384 bytes after
 *     picket's SETTINGS, header blocks only on stream 1 that decode
 *     (HPACK) with :status first and three digits in 100..599, no other
 *     pseudo-header, lowercase token names, no control bytes in values;
 *   - name + value + 32 summed over a response's fields (its head and its
 *     trailers) is at most limits.max_header_list_size (FU_LIMIT) plus
 *     FU_SLACK for the fields picket adds itself: HTTP/1.1 Content-Length
 *     (<= 14 + 19 + 32 = 65) or Transfer-Encoding: chunked (56), and
 *     Connection: keep-alive/close (<= 52); HTTP/2 :status (42) and
 *     content-length (<= 65). Everything the upstream sends counts against
 *     the limit upstream, so what is relayed fits in it;
 *   - at most 16 interim (1xx) heads, and nothing after the response;
 *   - an oracle independent of picket reads the answer (HTTP/1.1: a strict
 *     parser of status lines and field lines; h2c: a frame walker and
 *     nghttp2's HPACK inflater), sums name + value + 32 over the interim
 *     and final heads, and when it is sure picket must refuse (the sum
 *     passes FU_LIMIT, a status outside 100..599 or 101, more than 16
 *     interim heads on HTTP/1.1, more than 8 CONTINUATION frames in a
 *     block; on h2c also no SETTINGS first, a frame other than a
 *     CONTINUATION over 16384 bytes, or DATA before the final head) the
 *     client must get a 502, never the upstream's status, and never
 *     nothing. The oracle claims nothing for answers it does not fully
 *     understand;
 *   - no crash, leak or UB (ASan/UBSan).
 *
 * Over a replayed corpus (fuzz_replay_done): for each upstream protocol,
 * some answer was relayed with a 2xx status, some over-limit answer and
 * some bad-status answer (by the oracle) were turned into a 502, and
 * picket counted upstream_headers_too_large for some input. So a picket
 * that relays everything, or refuses everything, fails the replay.
 */
#include <nghttp2/nghttp2.h>

#define FC_ANSWER_MODE_ONLY
#include "fuzz_conn.h"
#include "metrics.h"

#define FU_LIMIT 8192 /* limits.max_header_list_size in fuzz_conn.h */
#define FU_SLACK 128  /* picket's own fields, see above: 65 + 52 and 42 + 65 */
#define FU_MAX_INTERIM 16
#define FU_MAX_CONTINUATIONS 8 /* nghttp2_option_set_max_continuations in up_h2.c */

enum fu_claim { FU_NONE, FU_OVER, FU_BAD };

/* What picket sent its client, as far as the checks below care. */
struct fu_seen {
    int status; /* of the final head, 0 when none */
    size_t interim;
};

static struct {
    size_t relayed_2xx[2];  /* per upstream protocol (0 h1, 1 h2c) */
    size_t refused_over[2]; /* oracle FU_OVER and the client got 502 */
    size_t refused_bad[2];  /* oracle FU_BAD and the client got 502 */
    size_t too_large[2];    /* inputs where picket counted upstream_headers_too_large */
    struct px_counter *c_too_large;
} fu;

static int fu_tchar_lower(unsigned char ch)
{
    return fc_tchar(ch) && !(ch >= 'A' && ch <= 'Z');
}

/* HTAB, SP, VCHAR, obs-text: what both parsers deliver unchanged. */
static int fu_value_byte(unsigned char ch)
{
    return ch == '\t' || (ch >= 0x20 && ch != 0x7f);
}

/* ---- HTTP/1.1 downstream output --------------------------------------- */

struct fu_h1_head {
    int status;
    size_t cost;  /* name + value + 32 over its fields */
    int64_t clen; /* -1 none */
    int nclen, nte, nconn, chunked;
};

/* One field line p[s..e) of picket's output (no CRLF); adds its cost. */
static void fu_h1_field(const unsigned char *p, size_t s, size_t e, struct fu_h1_head *h)
{
    size_t k = s, vs, ve;
    while (k < e && p[k] != ':')
        k++;
    FUZZ_CHECKF(k < e && k > s, "output field line without a name");
    for (size_t j = s; j < k; j++)
        FUZZ_CHECKF(fc_tchar(p[j]), "output field name byte 0x%02x", p[j]);
    for (size_t j = k + 1; j < e; j++)
        FUZZ_CHECKF(p[j] == '\t' || (p[j] >= 0x20 && p[j] != 0x7f),
                    "output field value byte 0x%02x", p[j]);
    vs = k + 1;
    ve = e;
    while (vs < ve && (p[vs] == ' ' || p[vs] == '\t'))
        vs++;
    while (ve > vs && (p[ve - 1] == ' ' || p[ve - 1] == '\t'))
        ve--;
    h->cost += (k - s) + (ve - vs) + 32;
    if (k - s == 14 && strncasecmp((const char *)p + s, "content-length", 14) == 0) {
        h->nclen++;
        h->clen = 0;
        FUZZ_CHECKF(ve > vs && ve - vs <= 18, "Content-Length value of %zu bytes", ve - vs);
        for (size_t j = vs; j < ve; j++) {
            FUZZ_CHECKF(p[j] >= '0' && p[j] <= '9', "Content-Length byte 0x%02x", p[j]);
            h->clen = h->clen * 10 + (p[j] - '0');
        }
    } else if (k - s == 17 && strncasecmp((const char *)p + s, "transfer-encoding", 17) == 0) {
        h->nte++;
        FUZZ_CHECKF(ve - vs == 7 && memcmp(p + vs, "chunked", 7) == 0,
                    "Transfer-Encoding other than chunked");
        h->chunked = 1;
    } else if (k - s == 10 && strncasecmp((const char *)p + s, "connection", 10) == 0) {
        h->nconn++;
    }
}

/* Finds the CRLF ending the line at p[s..n); returns its offset or n. */
static size_t fu_eol(const unsigned char *p, size_t s, size_t n)
{
    for (size_t i = s; i < n; i++) {
        if (p[i] == '\r' || p[i] == '\n') {
            FUZZ_CHECKF(p[i] == '\r' && (i + 1 >= n || p[i + 1] == '\n'),
                        "bare CR or LF in output");
            return i + 1 < n ? i : n;
        }
    }
    return n;
}

/* Reads field lines from *pos to the empty line; returns 0 if the output
 * ends first. */
static int fu_h1_fields(const unsigned char *p, size_t n, size_t *pos, struct fu_h1_head *h)
{
    for (;;) {
        size_t s = *pos, e = fu_eol(p, s, n);
        if (e == n)
            return 0;
        *pos = e + 2;
        if (e == s)
            return 1;
        fu_h1_field(p, s, e, h);
    }
}

/* One head at *pos. Returns 0 if the output ends inside it. */
static int fu_h1_head(const unsigned char *p, size_t n, size_t *pos, struct fu_h1_head *h)
{
    size_t s = *pos, e = fu_eol(p, s, n);
    memset(h, 0, sizeof(*h));
    h->clen = -1;
    if (e == n)
        return 0;
    FUZZ_CHECKF(e - s >= 12 && memcmp(p + s, "HTTP/1.1 ", 9) == 0 && p[s + 9] >= '0' &&
                    p[s + 9] <= '9' && p[s + 10] >= '0' && p[s + 10] <= '9' && p[s + 11] >= '0' &&
                    p[s + 11] <= '9' && (e - s == 12 || p[s + 12] == ' '),
                "malformed status line at output offset %zu", s);
    for (size_t j = s; j < e; j++)
        FUZZ_CHECKF(p[j] >= 0x20 && p[j] != 0x7f, "control byte in the status line");
    h->status = (p[s + 9] - '0') * 100 + (p[s + 10] - '0') * 10 + (p[s + 11] - '0');
    FUZZ_CHECKF(h->status >= 100 && h->status <= 599, "status %d sent to the client", h->status);
    *pos = e + 2;
    return fu_h1_fields(p, n, pos, h);
}

/* A chunked body at *pos, then its trailers (their cost added to h).
 * Returns 0 if the output ends first (picket aborted the response). */
static int fu_h1_chunked(const unsigned char *p, size_t n, size_t *pos, struct fu_h1_head *h)
{
    for (;;) {
        size_t s = *pos, e = fu_eol(p, s, n), len = 0;
        if (e == n)
            return 0;
        FUZZ_CHECKF(e > s && e - s <= 8, "chunk size line of %zu bytes", e - s);
        for (size_t j = s; j < e; j++) {
            unsigned char ch = p[j];
            FUZZ_CHECKF((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'),
                        "chunk size byte 0x%02x", ch);
            len = len * 16 + (size_t)(ch <= '9' ? ch - '0' : ch - 'a' + 10);
        }
        *pos = e + 2;
        if (len == 0)
            return fu_h1_fields(p, n, pos, h); /* trailers */
        if (n - *pos < len + 2)
            return 0;
        FUZZ_CHECKF(p[*pos + len] == '\r' && p[*pos + len + 1] == '\n', "chunk without its CRLF");
        *pos += len + 2;
    }
}

static void fu_check_h1_out(const unsigned char *p, size_t n, int head, struct fu_seen *seen)
{
    size_t pos = 0;
    struct fu_h1_head h;

    if (n == 0)
        return;
    for (;;) {
        if (!fu_h1_head(p, n, &pos, &h)) {
            FUZZ_CHECKF(0, "output ends inside a head (offset %zu of %zu)", pos, n);
        }
        FUZZ_CHECKF(h.cost <= FU_LIMIT + FU_SLACK, "head of %d: fields cost %zu", h.status, h.cost);
        FUZZ_CHECKF(h.nclen + h.nte <= 1 && h.nconn <= 1,
                    "head of %d: %d Content-Length, %d Transfer-Encoding, %d Connection", h.status,
                    h.nclen, h.nte, h.nconn);
        if (h.status >= 200)
            break;
        FUZZ_CHECKF(++seen->interim <= FU_MAX_INTERIM, "more than %d interim heads",
                    FU_MAX_INTERIM);
        FUZZ_CHECKF(h.nclen + h.nte == 0, "interim head with framing");
    }
    seen->status = h.status;
    if (head || h.status == 204 || h.status == 304) {
        FUZZ_CHECKF(h.nte == 0 && (h.status != 204 || h.nclen == 0), "framing on a %d%s", h.status,
                    head ? " to HEAD" : "");
    } else {
        /* an HTTP/1.1 client always gets a framed body */
        FUZZ_CHECKF(h.nclen + h.nte == 1, "unframed body on a %d", h.status);
        if (h.chunked) {
            if (!fu_h1_chunked(p, n, &pos, &h))
                return; /* aborted */
            FUZZ_CHECKF(h.cost <= FU_LIMIT + FU_SLACK, "head and trailers of %d cost %zu", h.status,
                        h.cost);
        } else {
            if ((uint64_t)(n - pos) < (uint64_t)h.clen)
                return; /* aborted */
            pos += (size_t)h.clen;
        }
    }
    FUZZ_CHECKF(pos == n, "%zu bytes after the response", n - pos);
}

/* ---- HTTP/2 downstream output ------------------------------------------ */

/* Decodes one header block of picket's (stream 1) and checks it. `state`:
 * 0 before the final head, 1 after it (trailers). */
static void fu_h2_out_block(nghttp2_hd_inflater *inf, const uint8_t *b, size_t len, int *state,
                            size_t *trailer_cost, struct fu_seen *seen)
{
    size_t cost = 0, nfields = 0;
    int status = 0;
    for (;;) {
        nghttp2_nv nv;
        int fl = 0;
        ssize_t rv = nghttp2_hd_inflate_hd2(inf, &nv, &fl, b, len, 1);
        FUZZ_CHECKF(rv >= 0, "picket's header block does not decode: %s",
                    nghttp2_strerror((int)rv));
        b += rv;
        len -= (size_t)rv;
        if (fl & NGHTTP2_HD_INFLATE_EMIT) {
            size_t i = nv.name[0] == ':' ? 1 : 0;
            FUZZ_CHECKF(nv.namelen > i, "empty field name");
            for (; i < nv.namelen; i++)
                FUZZ_CHECKF(fu_tchar_lower(nv.name[i]), "output field name byte 0x%02x",
                            nv.name[i]);
            for (i = 0; i < nv.valuelen; i++)
                FUZZ_CHECKF(fu_value_byte(nv.value[i]), "output field value byte 0x%02x",
                            nv.value[i]);
            if (nv.name[0] == ':') {
                FUZZ_CHECKF(*state == 0 && nfields == 0 && nv.namelen == 7 &&
                                memcmp(nv.name, ":status", 7) == 0 && nv.valuelen == 3,
                            "pseudo-header other than a leading :status");
                for (i = 0; i < 3; i++)
                    FUZZ_CHECKF(nv.value[i] >= '0' && nv.value[i] <= '9', ":status not digits");
                status = (nv.value[0] - '0') * 100 + (nv.value[1] - '0') * 10 + (nv.value[2] - '0');
                FUZZ_CHECKF(status >= 100 && status <= 599, ":status %d sent to the client",
                            status);
            }
            cost += nv.namelen + nv.valuelen + 32;
            nfields++;
        }
        if (fl & NGHTTP2_HD_INFLATE_FINAL) {
            nghttp2_hd_inflate_end_headers(inf);
            break;
        }
        FUZZ_CHECKF((fl & NGHTTP2_HD_INFLATE_EMIT) || len > 0, "header block ends early");
    }
    if (*state == 1) {
        *trailer_cost += cost;
        FUZZ_CHECKF(*trailer_cost <= FU_LIMIT + FU_SLACK, "head and trailers of %d cost %zu",
                    seen->status, *trailer_cost);
        return;
    }
    FUZZ_CHECKF(status != 0, "response head without :status");
    FUZZ_CHECKF(cost <= FU_LIMIT + FU_SLACK, "head of %d: fields cost %zu", status, cost);
    if (status < 200) {
        FUZZ_CHECKF(++seen->interim <= FU_MAX_INTERIM, "more than %d interim heads",
                    FU_MAX_INTERIM);
        return;
    }
    seen->status = status;
    *trailer_cost = cost;
    *state = 1;
}

/* The payload of a HEADERS frame without padding and priority; 0 if the
 * frame is malformed. */
static int fu_h2_headers_payload(const uint8_t **pl, size_t *len, uint8_t flags)
{
    size_t pad = 0;
    if (flags & 0x8) { /* PADDED */
        if (*len < 1)
            return 0;
        pad = (*pl)[0];
        (*pl)++;
        (*len)--;
    }
    if (flags & 0x20) { /* PRIORITY */
        if (*len < 5)
            return 0;
        *pl += 5;
        *len -= 5;
    }
    if (pad > *len)
        return 0;
    *len -= pad;
    return 1;
}

static void fu_check_h2_out(const uint8_t *p, size_t n, struct fu_seen *seen)
{
    nghttp2_hd_inflater *inf = NULL;
    uint8_t *blk = malloc(n > 0 ? n : 1);
    size_t off = 0, blen = 0, tcost = 0;
    int inblock = 0, state = 0;

    FUZZ_CHECK(blk != NULL && nghttp2_hd_inflate_new(&inf) == 0);
    if (n > 0)
        FUZZ_CHECKF(n >= 9 && p[3] == 0x4 && (p[5] | p[6] | p[7] | p[8]) == 0,
                    "output does not start with SETTINGS on stream 0");
    while (off + 9 <= n) {
        size_t len = ((size_t)p[off] << 16) | ((size_t)p[off + 1] << 8) | p[off + 2];
        uint8_t type = p[off + 3], flags = p[off + 4];
        uint32_t sid = ((uint32_t)(p[off + 5] & 0x7f) << 24) | ((uint32_t)p[off + 6] << 16) |
                       ((uint32_t)p[off + 7] << 8) | p[off + 8];
        const uint8_t *pl = p + off + 9;
        FUZZ_CHECKF(len <= 16384, "frame of %zu bytes at offset %zu", len, off);
        if (off + 9 + len > n)
            break;
        off += 9 + len;
        if (inblock) {
            FUZZ_CHECKF(type == 0x9 && sid == 1, "header block interrupted by a type %u frame",
                        type);
        } else if (type == 0x1) {
            FUZZ_CHECKF(sid == 1, "HEADERS on stream %u", sid);
            FUZZ_CHECKF(fu_h2_headers_payload(&pl, &len, flags), "malformed HEADERS padding");
            inblock = 1;
        } else {
            FUZZ_CHECKF(type != 0x9, "CONTINUATION outside a header block");
            FUZZ_CHECKF(type != 0x0 || sid == 1, "DATA on stream %u", sid);
            continue;
        }
        memcpy(blk + blen, pl, len);
        blen += len;
        if (flags & 0x4) { /* END_HEADERS */
            fu_h2_out_block(inf, blk, blen, &state, &tcost, seen);
            blen = 0;
            inblock = 0;
        }
    }
    FUZZ_CHECKF(off == n, "output ends inside a frame (%zu of %zu bytes)", off, n);
    nghttp2_hd_inflate_del(inf);
    free(blk);
}

/* ---- the oracle: what picket must refuse --------------------------------- */

/* A strict HTTP/1.1 head at p[*pos..n): status line, field lines, empty
 * line, CRLF only, no obs-fold. Returns 0 when the answer is not that (the
 * oracle then claims nothing about it). */
static int fu_or_h1_head(const uint8_t *p, size_t n, size_t *pos, int *status, size_t *cost)
{
    size_t s = *pos, e;
    if (n - s < 14 || (memcmp(p + s, "HTTP/1.1 ", 9) != 0 && memcmp(p + s, "HTTP/1.0 ", 9) != 0))
        return 0;
    for (e = s + 9; e < s + 12; e++)
        if (p[e] < '0' || p[e] > '9')
            return 0;
    *status = (p[s + 9] - '0') * 100 + (p[s + 10] - '0') * 10 + (p[s + 11] - '0');
    if (p[e] == ' ')
        while (e < n && fu_value_byte(p[e]))
            e++;
    for (;;) {
        size_t ns, ne, vs, ve;
        if (n - e < 2 || p[e] != '\r' || p[e + 1] != '\n')
            return 0;
        e += 2;
        if (n - e >= 2 && p[e] == '\r' && p[e + 1] == '\n') {
            *pos = e + 2;
            return 1;
        }
        for (ns = ne = e; ne < n && fc_tchar(p[ne]); ne++)
            ;
        if (ne == ns || ne == n || p[ne] != ':')
            return 0;
        for (vs = ve = ne + 1; ve < n && fu_value_byte(p[ve]); ve++)
            ;
        e = ve;
        while (vs < ve && (p[vs] == ' ' || p[vs] == '\t'))
            vs++;
        while (ve > vs && (p[ve - 1] == ' ' || p[ve - 1] == '\t'))
            ve--;
        *cost += (ne - ns) + (ve - vs) + 32;
    }
}

static enum fu_claim fu_oracle_h1(const uint8_t *p, size_t n)
{
    size_t pos = 0, sum = 0, interim = 0;
    for (;;) {
        int status = 0;
        if (!fu_or_h1_head(p, n, &pos, &status, &sum))
            return FU_NONE;
        /* the order up_h1.c checks in; any of them is a 502 */
        if (sum > FU_LIMIT)
            return FU_OVER;
        if (status < 100 || status > 599 || status == 101)
            return FU_BAD;
        if (status >= 200)
            return FU_NONE;
        if (++interim > FU_MAX_INTERIM)
            return FU_BAD;
    }
}

/* One complete header block of the answer (stream 1). Returns -1 when the
 * oracle stops (a field nghttp2 might ignore rather than deliver, or an
 * error), else 0 with *sum and *status updated. */
static int fu_or_h2_block(nghttp2_hd_inflater *inf, const uint8_t *b, size_t len, size_t *sum,
                          int *status)
{
    *status = 0;
    for (;;) {
        nghttp2_nv nv;
        int fl = 0;
        ssize_t rv = nghttp2_hd_inflate_hd2(inf, &nv, &fl, b, len, 1);
        if (rv < 0)
            return -1;
        b += rv;
        len -= (size_t)rv;
        if (fl & NGHTTP2_HD_INFLATE_EMIT) {
            /* only fields nghttp2 surely hands to picket (or refuses) */
            size_t i = nv.namelen > 0 && nv.name[0] == ':' ? 1 : 0;
            if (nv.namelen <= i)
                return -1;
            for (; i < nv.namelen; i++)
                if (!fu_tchar_lower(nv.name[i]))
                    return -1;
            for (i = 0; i < nv.valuelen; i++)
                if (!fu_value_byte(nv.value[i]))
                    return -1;
            *sum += nv.namelen + nv.valuelen + 32;
            if (nv.namelen == 7 && memcmp(nv.name, ":status", 7) == 0) {
                *status = -1;
                if (nv.valuelen == 3 && nv.value[0] >= '0' && nv.value[0] <= '9' &&
                    nv.value[1] >= '0' && nv.value[1] <= '9' && nv.value[2] >= '0' &&
                    nv.value[2] <= '9')
                    *status =
                        (nv.value[0] - '0') * 100 + (nv.value[1] - '0') * 10 + (nv.value[2] - '0');
            }
        }
        if (fl & NGHTTP2_HD_INFLATE_FINAL) {
            nghttp2_hd_inflate_end_headers(inf);
            return 0;
        }
        if (!(fl & NGHTTP2_HD_INFLATE_EMIT) && len == 0)
            return -1;
    }
}

/* Walks the answer's frames: a SETTINGS first, then SETTINGS, PING,
 * WINDOW_UPDATE, PRIORITY, and header blocks on stream 1 up to the final
 * head; stops (keeping what it claimed) at anything else. Besides the
 * header checks, some frames end the exchange in nghttp2 itself, before
 * any final head: no SETTINGS first, a frame over 16384 bytes (other
 * than a CONTINUATION), DATA on stream 1. They must give a 502 too (picket used to leave the stream
 * waiting for upstream_timeout when nghttp2 ended the session). */
static enum fu_claim fu_oracle_h2(const uint8_t *p, size_t n)
{
    nghttp2_hd_inflater *inf = NULL;
    uint8_t *blk = malloc(n > 0 ? n : 1);
    size_t off = 0, blen = 0, sum = 0, ncont = 0;
    int inblock = 0, first = 1;
    enum fu_claim claim = FU_NONE;

    FUZZ_CHECK(blk != NULL && nghttp2_hd_inflate_new(&inf) == 0);
    while (claim == FU_NONE && off + 9 <= n) {
        size_t len = ((size_t)p[off] << 16) | ((size_t)p[off + 1] << 8) | p[off + 2];
        uint8_t type = p[off + 3], flags = p[off + 4];
        uint32_t sid = ((uint32_t)(p[off + 5] & 0x7f) << 24) | ((uint32_t)p[off + 6] << 16) |
                       ((uint32_t)p[off + 7] << 8) | p[off + 8];
        const uint8_t *pl = p + off + 9;
        int status;
        if (len > 16384) {
            /* FRAME_SIZE_ERROR: nghttp2 ends the session; but not for a
             * CONTINUATION, whose length it does not check (it reads on) */
            if (!inblock)
                claim = FU_BAD;
            break;
        }
        if (off + 9 + len > n)
            break;
        off += 9 + len;
        if (first) {
            /* the server's connection preface (RFC 9113 3.4); anything
             * else and nghttp2 ends the session */
            if (type != 0x4 || (flags & 0x1) || sid != 0 || len % 6 != 0)
                claim = FU_BAD;
            first = 0;
            continue;
        }
        if (inblock) {
            if (type != 0x9 || sid != 1)
                break;
            ncont++;
        } else if (type == 0x1 && sid == 1) {
            if (!fu_h2_headers_payload(&pl, &len, flags))
                break;
            inblock = 1;
            ncont = 0;
        } else if (type == 0x2 || type == 0x4 || type == 0x6 || type == 0x8) {
            continue;
        } else if (type == 0x0 && sid == 1) {
            /* DATA before the final head: a connection error before any
             * HEADERS (stream not opened), a stream error after a 1xx */
            claim = FU_BAD;
            break;
        } else {
            break;
        }
        memcpy(blk + blen, pl, len);
        blen += len;
        if (!(flags & 0x4))
            continue;
        inblock = 0;
        if (ncont > FU_MAX_CONTINUATIONS) {
            claim = FU_BAD; /* nghttp2 refuses the block (up_h2.c's option) */
            break;
        }
        if (fu_or_h2_block(inf, blk, blen, &sum, &status) != 0)
            break;
        blen = 0;
        if (sum > FU_LIMIT)
            claim = FU_OVER;
        else if (status < 100 || status > 599 || status == 101)
            claim = FU_BAD; /* missing, not three digits, or out of range */
        else if (status >= 200)
            break; /* the final head: the oracle is done */
    }
    nghttp2_hd_inflate_del(inf);
    free(blk);
    return claim;
}

/* ---- one input --------------------------------------------------------------- */

/* The client's request: HTTP/1.1 text, or HTTP/2 frames after the preface
 * (SETTINGS with a 1 GiB stream window, the same on the connection, one
 * HEADERS on stream 1 with END_STREAM). */
static size_t fu_request(uint8_t *buf, size_t cap, int up_h2, int down_h2, int head)
{
    static const uint8_t pre[] = {
        0, 0, 6, 0x4, 0, 0, 0, 0, 0, 0,    0x4, 0x40, 0, 0, 0, /* SETTINGS_INITIAL_WINDOW_SIZE */
        0, 0, 4, 0x8, 0, 0, 0, 0, 0, 0x40, 0,   0,    0};      /* WINDOW_UPDATE on stream 0 */
    const char *path = up_h2 ? "/up2/x" : "/orders/1";
    size_t plen = strlen(path), b;
    uint8_t *blk;

    if (!down_h2) {
        int n = snprintf((char *)buf, cap, "%s %s HTTP/1.1\r\nHost: shop\r\n\r\n",
                         head ? "HEAD" : "GET", path);
        FUZZ_CHECK(n > 0 && (size_t)n < cap);
        return (size_t)n;
    }
    FUZZ_CHECK(sizeof(pre) + 9 + 64 <= cap);
    memcpy(buf, pre, sizeof(pre));
    blk = buf + sizeof(pre) + 9;
    b = 0;
    if (head) {
        blk[b++] = 0x02; /* :method, literal without indexing */
        blk[b++] = 4;
        memcpy(blk + b, "HEAD", 4);
        b += 4;
    } else {
        blk[b++] = 0x82; /* :method GET */
    }
    blk[b++] = 0x87; /* :scheme https */
    blk[b++] = 0x04; /* :path, literal without indexing */
    blk[b++] = (uint8_t)plen;
    memcpy(blk + b, path, plen);
    b += plen;
    blk[b++] = 0x01; /* :authority, literal without indexing */
    blk[b++] = 4;
    memcpy(blk + b, "shop", 4);
    b += 4;
    /* HEADERS on stream 1, END_STREAM | END_HEADERS */
    memcpy(buf + sizeof(pre), (const uint8_t[]){0, 0, (uint8_t)b, 0x1, 0x5, 0, 0, 0, 1}, 9);
    return sizeof(pre) + 9 + b;
}

static struct px_counter *fu_failures(const char *reason)
{
    char labels[96];
    snprintf(labels, sizeof(labels), "reason=\"%s\"", reason);
    return px_counter_get("picket_upstream_failures_total",
                          "Upstream failures by reason (connect, reset, server identity)", labels);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t chunks[8] = {0, 1, 2, 7, 16, 100, 1000, 4096};
    struct fc_answer ans = {0};
    struct fu_seen seen = {0};
    struct evbuffer *out;
    uint8_t req[256];
    size_t reqlen, n;
    int up_h2, down_h2, head;
    enum fu_claim claim;
    uint64_t too_large;

    if (size == 0)
        return 0;
    if (fu.c_too_large == NULL)
        fu.c_too_large = fu_failures("upstream_headers_too_large");
    up_h2 = data[0] & 1;
    down_h2 = (data[0] >> 1) & 1;
    head = (data[0] >> 6) & 1;
    ans.p = data + 1;
    ans.len = size - 1;
    ans.chunk = chunks[(data[0] >> 2) & 7];
    if (ans.chunk == 0)
        ans.chunk = ans.len > 0 ? ans.len : 1;
    ans.close_after = (data[0] >> 5) & 1;
    claim = up_h2 ? fu_oracle_h2(ans.p, ans.len) : fu_oracle_h1(ans.p, ans.len);
    reqlen = fu_request(req, sizeof(req), up_h2, down_h2, head);

    out = evbuffer_new();
    FUZZ_CHECK(out != NULL);
    too_large = px_counter_value(fu.c_too_large);
    fc_run_conn(0, 0, req, reqlen, down_h2, &ans, out);
    too_large = px_counter_value(fu.c_too_large) - too_large;
    n = evbuffer_get_length(out);
    if (getenv("FUZZ_CONN_DEBUG") != NULL && n > 0) /* what picket answered, for seed writing */
        fwrite(evbuffer_pullup(out, -1), 1, n, stderr);
    if (down_h2)
        fu_check_h2_out(evbuffer_pullup(out, -1), n, &seen);
    else
        fu_check_h1_out(evbuffer_pullup(out, -1), n, head, &seen);
    if (getenv("FUZZ_CONN_DEBUG") != NULL)
        fprintf(stderr,
                "\nfuzz_upstream: oracle %d, client got %d after %zu interim, "
                "too_large +%llu\n",
                claim, seen.status, seen.interim, (unsigned long long)too_large);
    if (claim != FU_NONE)
        FUZZ_CHECKF(seen.status == 502,
                    "the oracle says picket must refuse this answer (%s), "
                    "the client got status %d",
                    claim == FU_OVER ? "fields over the limit" : "bad status or framing",
                    seen.status);
    if (seen.status >= 200 && seen.status <= 299)
        fu.relayed_2xx[up_h2]++;
    if (claim == FU_OVER)
        fu.refused_over[up_h2]++;
    if (claim == FU_BAD)
        fu.refused_bad[up_h2]++;
    if (too_large > 0)
        fu.too_large[up_h2]++;
    evbuffer_free(out);
    return 0;
}

int fuzz_replay_done(size_t ninputs)
{
    static const char *const up[2] = {"HTTP/1.1", "h2c"};
    int rc = 0;
    for (int i = 0; i < 2; i++) {
        fprintf(stderr,
                "fuzz_upstream: %s upstream over %zu inputs: %zu 2xx relayed, %zu refused "
                "over the limit, %zu refused for a bad status, %zu upstream_headers_too_large\n",
                up[i], ninputs, fu.relayed_2xx[i], fu.refused_over[i], fu.refused_bad[i],
                fu.too_large[i]);
        if (fu.relayed_2xx[i] == 0 || fu.refused_over[i] == 0 || fu.refused_bad[i] == 0 ||
            fu.too_large[i] == 0) {
            fprintf(stderr, "fuzz_upstream: invariant violated: with a %s upstream, %s\n", up[i],
                    fu.relayed_2xx[i] == 0    ? "no answer was relayed with a 2xx"
                    : fu.refused_over[i] == 0 ? "no over-limit answer was refused"
                    : fu.refused_bad[i] == 0  ? "no bad-status answer was refused"
                                              : "picket never counted upstream_headers_too_large");
            rc = 1;
        }
    }
    return rc;
}
