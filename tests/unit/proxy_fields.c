/*
 * proxy_fields.c - TCase "fields" of the proxy suite: what proxy/base/fields.c
 * knows about field names. px_field_class() for every class and its '_'
 * spellings, the trailer rule (px_trailer_allowed, px_trailers_filter), the
 * response filter (px_response_fields_filter: hop-by-hop, Connection-named
 * and Content-Length fields out, the byte count kept right) and the set of
 * Connection tokens (px_tokset_*) on its stack and heap paths, and the
 * grpc-timeout syntax (px_grpc_timeout_parse), and the known names
 * px_hdrs_add points at instead of copying (px_field_name_known).
 *
 * Names are passed lowercase, as every caller does (px_hdrs_add lowercases,
 * nghttp2 refuses uppercase names).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fields.h"
#include "hdrs.h"

/* grpc-timeout (issue 18): well-formed values in microseconds, rounded up;
 * -1 for everything picket ignores (malformed, as Envoy ignores it, or 0). */
static const struct {
    const char *v;
    int rc;
    int64_t us;
} grpc_timeouts[] = {
    {"1S", 0, 1000000},
    {"250m", 0, 250000},
    {"2M", 0, 120000000},
    {"1H", 0, 3600000000LL},
    {"99999999H", 0, 99999999LL * 3600 * 1000000},
    {"7u", 0, 7},
    {"1n", 0, 1},          /* rounded up to a microsecond */
    {"1000n", 0, 1},
    {"1001n", 0, 2},
    {"00000005S", 0, 5000000}, /* 8 digits, leading zeros */
    {"12345678m", 0, 12345678000LL},
    {"0S", -1, 0},         /* zero: ignored */
    {"00000000m", -1, 0},
    {"123456789S", -1, 0}, /* 9 digits */
    {"S", -1, 0},
    {"10", -1, 0},         /* no unit */
    {"10s", -1, 0},        /* units are case-sensitive: s is not S */
    {"10h", -1, 0},
    {"10x", -1, 0},
    {"", -1, 0},
    {" 10S", -1, 0},
    {"10S ", -1, 0},
    {"1 0S", -1, 0},
    {"-1S", -1, 0},
    {"+1S", -1, 0},
    {"1.5S", -1, 0},
    {"10SS", -1, 0},
    {"0x10m", -1, 0},
};

START_TEST(fields_grpc_timeout)
{
    const char *v = grpc_timeouts[_i].v;
    size_t n = strlen(v);
    char *p = malloc(n + 1); /* exact length: a read past it is an ASan report */
    int64_t us = -7;
    int rc;
    ck_assert_ptr_nonnull(p);
    memcpy(p, v, n);
    p[n] = '5'; /* not a NUL: the length is what counts */
    rc = px_grpc_timeout_parse(p, n, &us);
    ck_assert_msg(rc == grpc_timeouts[_i].rc, "\"%s\": rc %d, want %d", v, rc, grpc_timeouts[_i].rc);
    if (rc == 0)
        ck_assert_msg(us == grpc_timeouts[_i].us, "\"%s\": %lld us, want %lld", v, (long long)us,
                      (long long)grpc_timeouts[_i].us);
    else
        ck_assert_msg(us == -7, "\"%s\": output written on a refusal", v);
    free(p);
}
END_TEST

TCase *tcase_fields(void);

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* ---- px_field_class ----------------------------------------------------- */

static const struct {
    const char *name;
    size_t n; /* 0 = strlen(name) */
    enum px_fclass fc;
    int underscore;
} classes[] = {
    /* every class, in its plain spelling */
    {"te", 0, PX_FC_TE, 0},
    {"host", 0, PX_FC_HOST, 0},
    {"cookie", 0, PX_FC_COOKIE, 0},
    {"expect", 0, PX_FC_EXPECT, 0},
    {"upgrade", 0, PX_FC_HOP, 0},
    {"forwarded", 0, PX_FC_FWD, 0},
    {"x-real-ip", 0, PX_FC_FWD, 0},
    {"connection", 0, PX_FC_HOP, 0},
    {"keep-alive", 0, PX_FC_HOP, 0},
    {"x-request-id", 0, PX_FC_RID, 0},
    {"content-type", 0, PX_FC_CTYPE, 0},
    {"content-length", 0, PX_FC_CLEN, 0},
    {"http2-settings", 0, PX_FC_HOP, 0},
    {"x-forwarded-for", 0, PX_FC_FWD, 0},
    {"proxy-connection", 0, PX_FC_HOP, 0},
    {"x-forwarded-host", 0, PX_FC_FWD, 0},
    {"x-forwarded-port", 0, PX_FC_FWD, 0},
    {"transfer-encoding", 0, PX_FC_HOP, 0},
    {"x-forwarded-proto", 0, PX_FC_OWNED, 0},
    {"proxy-authenticate", 0, PX_FC_HOP, 0},
    {"proxy-authorization", 0, PX_FC_HOP, 0},
    {"x-forwarded-client-cert", 0, PX_FC_OWNED, 0},
    /* '_' read as '-' (CGI, WSGI, Rack), and reported */
    {"x_forwarded_client_cert", 0, PX_FC_OWNED, 1},
    {"x-forwarded_client-cert", 0, PX_FC_OWNED, 1},
    {"x_forwarded_proto", 0, PX_FC_OWNED, 1},
    {"x_forwarded_for", 0, PX_FC_FWD, 1},
    {"x_forwarded_host", 0, PX_FC_FWD, 1},
    {"x_forwarded_port", 0, PX_FC_FWD, 1},
    {"x_real_ip", 0, PX_FC_FWD, 1},
    {"x_request_id", 0, PX_FC_RID, 1},
    {"content_length", 0, PX_FC_CLEN, 1},
    {"content_type", 0, PX_FC_CTYPE, 1},
    {"transfer_encoding", 0, PX_FC_HOP, 1},
    {"keep_alive", 0, PX_FC_HOP, 1},
    {"proxy_connection", 0, PX_FC_HOP, 1},
    {"proxy_authorization", 0, PX_FC_HOP, 1},
    {"proxy_authenticate", 0, PX_FC_HOP, 1},
    {"http2_settings", 0, PX_FC_HOP, 1},
    /* picket's own prefix, at any length (longer than the name buffer too) */
    {"x-picket-", 0, PX_FC_OWNED, 0},
    {"x-picket-peer-id", 0, PX_FC_OWNED, 0},
    {"x_picket_peer_id", 0, PX_FC_OWNED, 1},
    {"x-picket_", 0, PX_FC_OWNED, 1},
    {"x_picket-", 0, PX_FC_OWNED, 1},
    {"x-picket-a-name-far-longer-than-twenty-four-bytes-of-buffer", 0, PX_FC_OWNED, 0},
    {"x_picket_a_name_far_longer_than_twenty_four_bytes_of_buffer", 0, PX_FC_OWNED, 1},
    {"x-picket", 0, PX_FC_OTHER, 0}, /* no '-' after it: not the prefix */
    {"x-picketx", 0, PX_FC_OTHER, 0},
    {"xx-picket-a", 0, PX_FC_OTHER, 0},
    /* near misses: one byte more, one byte less, a prefix, a suffix */
    {"", 0, PX_FC_OTHER, 0},
    {"t", 0, PX_FC_OTHER, 0},
    {"tex", 0, PX_FC_OTHER, 0},
    {"hos", 0, PX_FC_OTHER, 0},
    {"hostx", 0, PX_FC_OTHER, 0},
    {"xhost", 0, PX_FC_OTHER, 0},
    {"cookies", 0, PX_FC_OTHER, 0},
    {"x-forwarded-client-certs", 0, PX_FC_OTHER, 0}, /* 24 bytes */
    {"x-forwarded-client-cer", 0, PX_FC_OTHER, 0},
    {"x-forwarded-client-cert-and-more-bytes", 0, PX_FC_OTHER, 0},
    {"x-forwarded-protocol", 0, PX_FC_OTHER, 0},
    {"x-forwarded", 0, PX_FC_OTHER, 0},
    {"content-lengths", 0, PX_FC_OTHER, 0},
    {"x-request-ids", 0, PX_FC_OTHER, 0},
    {"authorization", 0, PX_FC_OTHER, 0},
    {"x_debug", 0, PX_FC_OTHER, 1},
    {"_", 0, PX_FC_OTHER, 1},
    {"h_st", 0, PX_FC_OTHER, 1},
    /* only name[0..n) is read: the rest of the buffer is not the name */
    {"hostname", 4, PX_FC_HOST, 0},
    {"te_", 2, PX_FC_TE, 0},
    {"x-forwarded-client-cert_", 23, PX_FC_OWNED, 0},
    {"x-forwarded-forwarded", 15, PX_FC_FWD, 0},
    {"x-picket-x", 8, PX_FC_OTHER, 0},
    {"host_", 4, PX_FC_HOST, 0},
};

START_TEST(fields_class_table)
{
    const char *name = classes[_i].name;
    size_t n = classes[_i].n ? classes[_i].n : strlen(name);
    int us = -1;
    enum px_fclass fc;
    /* a copy exactly n bytes long, so ASan sees a read past the name */
    char *copy = malloc(n ? n : 1);

    ck_assert_ptr_nonnull(copy);
    memcpy(copy, name, n);
    fc = px_field_class(copy, n, &us);
    ck_assert_msg(fc == classes[_i].fc, "%.*s: class %d, want %d", (int)n, name, (int)fc,
                  (int)classes[_i].fc);
    ck_assert_msg(us == classes[_i].underscore, "%.*s: underscore %d, want %d", (int)n, name, us,
                  classes[_i].underscore);
    free(copy);
}
END_TEST

/* ---- the trailer rule --------------------------------------------------- */

static const struct {
    const char *name;
    int allowed;
} trailers[] = {
    {"grpc-status", 1},
    {"grpc-message", 1},
    {"grpc-status-details-bin", 1},
    {"x-checksum", 1},
    {"server-timing", 1},
    {"digest", 1},
    {"x_debug", 1}, /* underscores are the request filter's business */
    /* the deny list, any case */
    {"authorization", 0},
    {"Authorization", 0},
    {"content-type", 0},
    {"content-encoding", 0},
    {"CONTENT-ENCODING", 0},
    {"trailer", 0},
    {"www-authenticate", 0},
    {"set-cookie", 0},
    /* every field class but "other" */
    {"te", 0},
    {"host", 0},
    {"cookie", 0},
    {"expect", 0},
    {"content-length", 0},
    {"x-request-id", 0},
    {"x-forwarded-for", 0},
    {"forwarded", 0},
    {"x-forwarded-client-cert", 0},
    {"x_forwarded_client_cert", 0},
    {"x-picket-peer-id", 0},
    {"x_picket_anything", 0},
    {"x-forwarded-proto", 0},
    /* hop-by-hop */
    {"connection", 0},
    {"keep-alive", 0},
    {"transfer-encoding", 0},
    {"upgrade", 0},
    {"proxy-authorization", 0},
    {"proxy-authenticate", 0},
    {"http2-settings", 0},
    {"proxy-connection", 0},
    /* near misses of the deny list are allowed */
    {"authorizations", 1},
    {"set-cookie2", 1},
    {"trailers", 1},
    {"x-content-type", 1},
};

START_TEST(fields_trailer_allowed)
{
    const char *name = trailers[_i].name;
    ck_assert_msg(px_trailer_allowed(name, strlen(name)) == trailers[_i].allowed, "%s: want %d",
                  name, trailers[_i].allowed);
}
END_TEST

/* Fills h from "name: value" lines separated by '\n' (no limit). */
static void fill(struct px_hdrs *h, const char *lines)
{
    const char *p = lines;
    memset(h, 0, sizeof(*h));
    while (*p != '\0') {
        const char *nl = strchr(p, '\n'), *end = nl ? nl : p + strlen(p);
        const char *colon = memchr(p, ':', (size_t)(end - p));
        const char *v;
        ck_assert_ptr_nonnull(colon);
        v = colon + 1;
        if (v < end && *v == ' ')
            v++;
        ck_assert_int_eq(px_hdrs_add(h, p, (size_t)(colon - p), v, (size_t)(end - v), 0), 0);
        p = nl ? nl + 1 : end;
    }
}

/* The list as "name: value\n" lines. */
static const char *dump(const struct px_hdrs *h)
{
    static char out[8192];
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < h->n; i++)
        o += (size_t)snprintf(out + o, sizeof(out) - o, "%.*s: %.*s\n", (int)h->v[i].nlen,
                              h->v[i].name, (int)h->v[i].vlen, h->v[i].value);
    return out;
}

/* h->bytes must stay the RFC 7541 size of what is left: it is what the
 * header-list limit is checked against after a filter. */
static void assert_bytes(const struct px_hdrs *h, const char *what)
{
    size_t sum = 0;
    for (size_t i = 0; i < h->n; i++)
        sum += h->v[i].nlen + h->v[i].vlen + 32;
    ck_assert_msg(h->bytes == sum, "%s: bytes %zu, fields add up to %zu", what, h->bytes, sum);
}

START_TEST(fields_trailers_filter)
{
    struct px_hdrs h;
    fill(&h, "x-checksum: abc\nset-cookie: a=1\ngrpc-status: 0\nhost: evil\n"
             "x_forwarded_client_cert: evil\ncontent-length: 3\nconnection: close\n"
             "grpc-message: ok\nauthorization: x\nx-picket-peer-id: evil");
    px_trailers_filter(&h);
    ck_assert_str_eq(dump(&h), "x-checksum: abc\ngrpc-status: 0\ngrpc-message: ok\n");
    assert_bytes(&h, "trailers");
    px_hdrs_clear(&h);
    /* all refused, and none at all */
    fill(&h, "te: trailers\ntrailer: x\ncontent-type: a/b");
    px_trailers_filter(&h);
    ck_assert_uint_eq(h.n, 0);
    ck_assert_uint_eq(h.bytes, 0);
    px_hdrs_clear(&h);
    fill(&h, "");
    px_trailers_filter(&h);
    ck_assert_uint_eq(h.n, 0);
    px_hdrs_clear(&h);
}
END_TEST

/* ---- the response filter ------------------------------------------------ */

static const struct {
    const char *what;
    const char *in;  /* "name: value" lines */
    const char *out; /* what is left, "name: value\n" each */
} responses[] = {
    {"nothing to drop", "content-type: text/plain\nx-a: 1\nserver: s",
     "content-type: text/plain\nx-a: 1\nserver: s\n"},
    {"empty", "", ""},
    {"every hop-by-hop field",
     "connection: close\nx-a: 1\nkeep-alive: timeout=5\nproxy-connection: keep-alive\n"
     "transfer-encoding: chunked\nupgrade: h2c\nte: trailers\nhttp2-settings: AAA\n"
     "proxy-authenticate: Basic\nproxy-authorization: Basic x\nx-b: 2",
     "x-a: 1\nx-b: 2\n"},
    {"content-length", "content-length: 12\nx-a: 1\ncontent-length: 12", "x-a: 1\n"},
    {"connection names fields", "connection: x-a, x-b\nx-a: 1\nx-b: 2\nx-c: 3", "x-c: 3\n"},
    {"odd token spacing", "connection:  \t x-a ,\tx-b\t,, , ,x-c  \nx-a: 1\nx-b: 2\nx-c: 3\nx-d: 4",
     "x-d: 4\n"},
    {"token case", "connection: X-A, x-B\nx-a: 1\nx-b: 2\nx-c: 3", "x-c: 3\n"},
    {"tokens only commas", "connection: ,,, ,\nx-a: 1", "x-a: 1\n"},
    {"empty connection", "connection: \nx-a: 1", "x-a: 1\n"},
    {"two connection fields", "connection: x-a\nx-a: 1\nx-b: 2\nconnection: x-b\nx-c: 3",
     "x-c: 3\n"},
    {"whole tokens only", "connection: x-ab, x\nx-a: 1\nx-abc: 2\nx-ab: 3", "x-a: 1\nx-abc: 2\n"},
    {"a named end-to-end field goes too",
     "connection: content-type, set-cookie\n"
     "content-type: a/b\nset-cookie: a=1\netag: \"1\"",
     "etag: \"1\"\n"},
    {"close and keep-alive tokens name nothing else", "connection: close, keep-alive\nx-a: 1",
     "x-a: 1\n"},
    {"order kept", "x-3: 3\nconnection: x-2\nx-1: 1\nx-2: 2\nx-0: 0", "x-3: 3\nx-1: 1\nx-0: 0\n"},
};

START_TEST(fields_response_filter)
{
    struct px_hdrs h;
    fill(&h, responses[_i].in);
    px_response_fields_filter(&h);
    ck_assert_msg(strcmp(dump(&h), responses[_i].out) == 0, "%s: got\n%s", responses[_i].what,
                  dump(&h));
    assert_bytes(&h, responses[_i].what);
    px_hdrs_clear(&h);
}
END_TEST

START_TEST(fields_response_filter_many_tokens)
{
    /* thousands of Connection tokens, each naming a field (the heap set),
     * among fields that stay */
    static char conn[40000];
    struct px_hdrs h;
    size_t o = 0;

    memset(&h, 0, sizeof(h));
    for (int i = 0; i < 3000; i++)
        o += (size_t)snprintf(conn + o, sizeof(conn) - o, "%sX-T%d", i ? " ,\t" : "", i);
    ck_assert_int_eq(px_hdrs_add(&h, "connection", 10, conn, o, 0), 0);
    for (int i = 0; i < 3100; i += 50) {
        char name[16];
        int n = snprintf(name, sizeof(name), "x-t%d", i);
        ck_assert_int_eq(px_hdrs_add(&h, name, (size_t)n, "v", 1, 0), 0);
    }
    px_response_fields_filter(&h);
    ck_assert_str_eq(dump(&h), "x-t3000: v\nx-t3050: v\n");
    assert_bytes(&h, "many tokens");
    px_hdrs_clear(&h);
}
END_TEST

/* ---- the set of Connection tokens --------------------------------------- */

static const size_t token_counts[] = {0, 1, 2, 31, 32, 33, 63, 64, 65, 200, 5000};

START_TEST(fields_tokset_sizes)
{
    static char conn[80000];
    size_t ntok = token_counts[_i], o = 0;
    struct px_hdrs h;
    struct px_tokset s;
    char name[32];

    memset(&h, 0, sizeof(h));
    /* tokens "x-t<i>" in alternating case; a second Connection field repeats
     * the first token */
    for (size_t i = 0; i < ntok; i++)
        o += (size_t)snprintf(conn + o, sizeof(conn) - o, "%s%s%zu", i ? ", " : "",
                              i % 2 ? "X-T" : "x-t", i);
    ck_assert_int_eq(px_hdrs_add(&h, "x-other", 7, "x-other", 7, 0), 0);
    ck_assert_int_eq(px_hdrs_add(&h, "connection", 10, conn, o, 0), 0);
    if (ntok > 0)
        ck_assert_int_eq(px_hdrs_add(&h, "connection", 10, "x-t0", 4, 0), 0);
    ck_assert_int_eq(px_tokset_build(&s, &h), 0);
    if (ntok == 0)
        ck_assert_ptr_null(s.slot);
    else if (ntok <= 8)
        ck_assert_ptr_eq(s.slot, s.local); /* a few tokens: no allocation */
    else if (ntok > N_ELEMS(s.local))
        ck_assert_ptr_ne(s.slot, s.local); /* more than the local slots: the heap */
    for (size_t i = 0; i < ntok; i++) {
        int n = snprintf(name, sizeof(name), "%s%zu", i % 3 ? "x-t" : "X-t", i);
        ck_assert_msg(px_tokset_has(&s, name, (size_t)n), "%zu tokens: %s missing", ntok, name);
    }
    /* never members: the next number, a prefix, a longer name, the field
     * that holds the list, the empty name */
    snprintf(name, sizeof(name), "x-t%zu", ntok);
    ck_assert(!px_tokset_has(&s, name, strlen(name)));
    ck_assert(!px_tokset_has(&s, "x-t", 3));
    ck_assert(!px_tokset_has(&s, "x-t1x", 5));
    ck_assert_int_eq(px_tokset_has(&s, "x-t10", 4), ntok > 1); /* reads "x-t1" only */
    ck_assert(!px_tokset_has(&s, "connection", 10));
    ck_assert(!px_tokset_has(&s, "x-other", 7));
    ck_assert(!px_tokset_has(&s, "", 0));
    px_tokset_free(&s);
    px_hdrs_clear(&h);
}
END_TEST

START_TEST(fields_tokset_duplicates_and_spacing)
{
    /* many copies of few tokens: the set holds each once and finds each */
    static char conn[20000];
    struct px_hdrs h;
    struct px_tokset s;
    size_t o = 0, used = 0;

    memset(&h, 0, sizeof(h));
    for (int i = 0; i < 1000; i++)
        o += (size_t)snprintf(conn + o, sizeof(conn) - o, "%s", i % 2 ? "\tKEEP-alive ,," : " a,");
    ck_assert_int_eq(px_hdrs_add(&h, "connection", 10, conn, o, 0), 0);
    ck_assert_int_eq(px_tokset_build(&s, &h), 0);
    ck_assert(px_tokset_has(&s, "a", 1));
    ck_assert(px_tokset_has(&s, "keep-alive", 10));
    ck_assert(px_tokset_has(&s, "Keep-Alive", 10));
    ck_assert(!px_tokset_has(&s, "keep", 4));
    ck_assert(!px_tokset_has(&s, "b", 1));
    for (size_t i = 0; i <= s.mask; i++)
        used += s.slot[i].p != NULL;
    ck_assert_uint_eq(used, 2);
    px_tokset_free(&s);
    px_hdrs_clear(&h);

    /* no Connection field: an empty set that allocates nothing */
    fill(&h, "x-a: connection\nconnections: x-a");
    ck_assert_int_eq(px_tokset_build(&s, &h), 0);
    ck_assert_ptr_null(s.slot);
    ck_assert(!px_tokset_has(&s, "x-a", 3));
    px_tokset_free(&s);
    px_hdrs_clear(&h);
}
END_TEST

/* The known-name table: sorted by length with a correct index (a row the
 * index skips would be copied, never wrong; a wrong index could match a
 * prefix), every row a lowercase token that finds itself, and a name that
 * differs anywhere, in case or length finds nothing. */
START_TEST(fields_known_table)
{
    size_t i, prev = 0;
    const char *row;
    char buf[64];

    for (i = 0; (row = px_field_known_row(i)) != NULL; i++) {
        size_t n = strlen(row);
        ck_assert_msg(n >= prev, "row %zu (%s) is shorter than the one before", i, row);
        prev = n;
        ck_assert_msg(px_field_name_ok(row, n), "%s", row);
        for (size_t k = 0; k < n; k++)
            ck_assert_msg(!(row[k] >= 'A' && row[k] <= 'Z'), "%s is not lowercase", row);
        ck_assert_ptr_eq(px_field_name_known(row, n), row);
        ck_assert(px_field_name_static(row));
        memcpy(buf, row, n + 1);
        ck_assert_ptr_eq(px_field_name_known(buf, n), row); /* found by content */
        ck_assert(!px_field_name_static(buf));
        ck_assert_ptr_null(px_field_name_known(buf, n - 1)); /* a prefix */
        buf[n] = 's';
        ck_assert_ptr_null(px_field_name_known(buf, n + 1)); /* longer */
        for (size_t k = 0; k < n; k++) { /* one byte different, or uppercase */
            char c = buf[k];
            buf[k] = c == 'x' ? 'y' : 'x';
            ck_assert_ptr_null(px_field_name_known(buf, n));
            buf[k] = (c >= 'a' && c <= 'z') ? (char)(c - 32) : c;
            if (buf[k] != c)
                ck_assert_ptr_null(px_field_name_known(buf, n));
            buf[k] = c;
        }
    }
    ck_assert_uint_gt(i, 40);
    ck_assert_ptr_null(px_field_name_known("", 0));
    ck_assert_ptr_null(px_field_name_known("x-not-a-known-name-but-long-enough-to-pass", 42));
    ck_assert(!px_field_name_static(NULL));
    ck_assert(!px_field_name_static("host"));
}
END_TEST

/* px_hdrs_add: a known name is the table's row and only the value is
 * copied; any other name (or a known one in another case) is a lowercased
 * copy; the size accounting is the same either way. */
START_TEST(fields_hdrs_known_names)
{
    struct px_hdrs h = {0};
    char value[] = "example.org";

    ck_assert_int_eq(px_hdrs_add(&h, "host", 4, value, 11, 0), 0);
    ck_assert_int_eq(px_hdrs_add(&h, "Host", 4, value, 11, 0), 0);
    ck_assert_int_eq(px_hdrs_add(&h, "x-Custom", 8, "v", 1, 0), 0);
    ck_assert_int_eq(px_hdrs_add(&h, "x-request-id", 12, "", 0, 0), 0);
    value[0] = 'E'; /* the list owns its copy */
    ck_assert(px_field_name_static(h.v[0].name));
    ck_assert_ptr_eq(h.v[0].name, px_field_name_known("host", 4));
    ck_assert_str_eq(h.v[0].value, "example.org");
    ck_assert(!px_field_name_static(h.v[1].name));
    ck_assert_str_eq(h.v[1].name, "host");
    ck_assert_str_eq(h.v[1].value, "example.org");
    ck_assert_str_eq(h.v[2].name, "x-custom");
    ck_assert_str_eq(h.v[2].value, "v");
    ck_assert(px_field_name_static(h.v[3].name));
    ck_assert_str_eq(h.v[3].value, "");
    ck_assert_uint_eq(h.bytes, (4 + 11 + 32) * 2 + (8 + 1 + 32) + (12 + 32));
    ck_assert_ptr_eq(px_hdrs_get(&h, "x-request-id"), &h.v[3]);
    px_hdrs_del(&h, "host");
    ck_assert_uint_eq(h.n, 2);
    px_hdrs_clear(&h);
}
END_TEST

TCase *tcase_fields(void)
{
    TCase *tc = tcase_create("fields");
    tcase_add_loop_test(tc, fields_class_table, 0, (int)N_ELEMS(classes));
    tcase_add_loop_test(tc, fields_trailer_allowed, 0, (int)N_ELEMS(trailers));
    tcase_add_test(tc, fields_trailers_filter);
    tcase_add_loop_test(tc, fields_response_filter, 0, (int)N_ELEMS(responses));
    tcase_add_test(tc, fields_response_filter_many_tokens);
    tcase_add_loop_test(tc, fields_tokset_sizes, 0, (int)N_ELEMS(token_counts));
    tcase_add_test(tc, fields_tokset_duplicates_and_spacing);
    tcase_add_loop_test(tc, fields_grpc_timeout, 0, (int)N_ELEMS(grpc_timeouts));
    tcase_add_test(tc, fields_known_table);
    tcase_add_test(tc, fields_hdrs_known_names);
    return tc;
}
