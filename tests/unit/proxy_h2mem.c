/*
 * proxy_h2mem.c - TCase "h2_mem" of the proxy suite: the allocator picket
 * gives nghttp2 (proxy/core/h2_mem.c). Sizes on both sides of
 * H2_MEM_MAP_MIN, calloc zeroing, realloc across the threshold in both
 * directions keeping the contents, overflow refused, and a real session
 * made and used with it. A session's own allocator (px_h2_mem_init): its
 * frame buffer is taken apart and given back whole when idle, and a
 * session that gives it back between frames writes the same bytes as one
 * that never does.
 */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "h2_mem.h"
#include "pattern.h"

TCase *tcase_h2_mem(void);

static const size_t sizes[] = {0, 1, 15, 16, 4095, 4096, H2_MEM_MAP_MIN - 17, H2_MEM_MAP_MIN - 1,
                               H2_MEM_MAP_MIN, H2_MEM_MAP_MIN + 1, 16384 + 10, 65536, 1 << 20};
#define N_SIZES (sizeof(sizes) / sizeof(sizes[0]))


START_TEST(malloc_calloc_sizes)
{
    nghttp2_mem *m = px_h2_mem();
    for (size_t i = 0; i < N_SIZES; i++) {
        unsigned char *p = m->malloc(sizes[i], m->mem_user_data);
        unsigned char *z = m->calloc(1, sizes[i], m->mem_user_data);
        ck_assert_ptr_nonnull(p);
        ck_assert_ptr_nonnull(z);
        ck_assert_uint_eq((uintptr_t)p % 16, 0);
        ck_assert_uint_eq((uintptr_t)z % 16, 0);
        {
            size_t nonzero = 0;
            for (size_t j = 0; j < sizes[i]; j++)
                nonzero += z[j] != 0;
            ck_assert_uint_eq(nonzero, 0);
        }
        pattern_fill(p, sizes[i], (unsigned)i);
        ck_assert(pattern_same(p, sizes[i], (unsigned)i));
        m->free(p, m->mem_user_data);
        m->free(z, m->mem_user_data);
    }
    m->free(NULL, m->mem_user_data);
}
END_TEST

START_TEST(realloc_keeps_contents)
{
    nghttp2_mem *m = px_h2_mem();
    /* every pair of sizes: grow and shrink across the threshold */
    for (size_t a = 0; a < N_SIZES; a++) {
        for (size_t b = 0; b < N_SIZES; b++) {
            size_t keep = sizes[a] < sizes[b] ? sizes[a] : sizes[b];
            unsigned char *p = m->realloc(NULL, sizes[a], m->mem_user_data), *q;
            ck_assert_ptr_nonnull(p);
            pattern_fill(p, sizes[a], (unsigned)(a + b));
            q = m->realloc(p, sizes[b], m->mem_user_data);
            ck_assert_ptr_nonnull(q);
            ck_assert_msg(pattern_same(q, keep, (unsigned)(a + b)), "realloc %zu -> %zu lost bytes",
                          sizes[a], sizes[b]);
            pattern_fill(q, sizes[b], 7); /* all of the new size is writable */
            m->free(q, m->mem_user_data);
        }
    }
}
END_TEST

START_TEST(overflow_refused)
{
    nghttp2_mem *m = px_h2_mem();
    ck_assert_ptr_null(m->malloc(SIZE_MAX, m->mem_user_data));
    ck_assert_ptr_null(m->malloc(SIZE_MAX - 8, m->mem_user_data));
    ck_assert_ptr_null(m->calloc(SIZE_MAX / 2, 4, m->mem_user_data));
    ck_assert_ptr_null(m->calloc(2, SIZE_MAX / 2 + 1, m->mem_user_data));
    {
        void *p = m->malloc(10, m->mem_user_data);
        ck_assert_ptr_nonnull(p);
        ck_assert_ptr_null(m->realloc(p, SIZE_MAX, m->mem_user_data));
        m->free(p, m->mem_user_data); /* still ours after a failed realloc */
    }
}
END_TEST

/* Pages of [p, p + n) that are resident. */
static size_t resident_pages(const void *p, size_t n)
{
    long pg = sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)p & ~(uintptr_t)(pg - 1);
    size_t len = (uintptr_t)p + n - a, np = (len + (size_t)pg - 1) / (size_t)pg, r = 0;
    unsigned char vec[64];
    ck_assert_uint_le(np, sizeof(vec));
    ck_assert_int_eq(mincore((void *)a, len, vec), 0);
    for (size_t i = 0; i < np; i++)
        r += vec[i] & 1;
    return r;
}

/* However nghttp2 asks for a large block (its frame buffer comes from
 * realloc(NULL, ...)), the pages it does not write stay out of memory. */
START_TEST(large_blocks_are_paged)
{
    nghttp2_mem *m = px_h2_mem();
    size_t n = 40 * 1024;
    void *small = m->malloc(100, m->mem_user_data);
    void *b[4];
    ck_assert_ptr_nonnull(small);
    b[0] = m->malloc(n, m->mem_user_data);
    b[1] = m->calloc(1, n, m->mem_user_data);
    b[2] = m->realloc(NULL, n, m->mem_user_data);
    b[3] = m->realloc(small, n, m->mem_user_data);
    for (int i = 0; i < 4; i++) {
        ck_assert_ptr_nonnull(b[i]);
        ck_assert_msg(resident_pages(b[i], n) <= 1, "block %d: %zu of its pages resident", i,
                      resident_pages(b[i], n));
        m->free(b[i], m->mem_user_data);
    }
}
END_TEST

static ssize_t sink(nghttp2_session *s, const uint8_t *d, size_t n, int f, void *u)
{
    (void)s;
    (void)d;
    (void)f;
    *(size_t *)u += n;
    return (ssize_t)n;
}

START_TEST(session_uses_it)
{
    nghttp2_session_callbacks *cbs;
    nghttp2_session *s;
    size_t sent = 0;
    nghttp2_settings_entry iv = {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100};
    ck_assert_int_eq(nghttp2_session_callbacks_new(&cbs), 0);
    nghttp2_session_callbacks_set_send_callback(cbs, sink);
    ck_assert_int_eq(nghttp2_session_server_new3(&s, cbs, &sent, NULL, px_h2_mem()), 0);
    ck_assert_int_eq(nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, &iv, 1), 0);
    ck_assert_int_eq(nghttp2_session_send(s), 0);
    ck_assert_uint_gt(sent, 9);
    nghttp2_session_del(s);
    nghttp2_session_callbacks_del(cbs);
}
END_TEST

/* ---- a session's own allocator ------------------------------------------- */

struct wire {
    unsigned char *p;
    size_t len, cap;
};

static ssize_t to_wire(nghttp2_session *s, const uint8_t *d, size_t n, int f, void *u)
{
    struct wire *w = u;
    (void)s;
    (void)f;
    if (w->len + n > w->cap) {
        w->cap = (w->len + n) * 2;
        w->p = realloc(w->p, w->cap);
        ck_assert_ptr_nonnull(w->p);
    }
    memcpy(w->p + w->len, d, n);
    w->len += n;
    return (ssize_t)n;
}

/* A client session on mem sends a few requests, one with a 40 KiB field
 * (HEADERS and CONTINUATIONs: the frame buffer grows extra pieces), and
 * settings and pings between them; with own != NULL its frame buffer is
 * given back after each send. Returns what it wrote. */
static struct wire client_run(nghttp2_mem *mem, struct px_h2_mem *own)
{
    nghttp2_session_callbacks *cbs;
    nghttp2_session *s;
    struct wire w = {0};
    static char big[40 * 1024];
    nghttp2_settings_entry iv = {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100};
    memset(big, 'v', sizeof(big));
    ck_assert_int_eq(nghttp2_session_callbacks_new(&cbs), 0);
    nghttp2_session_callbacks_set_send_callback(cbs, to_wire);
    ck_assert_int_eq(nghttp2_session_client_new3(&s, cbs, &w, NULL, mem), 0);
    for (int round = 0; round < 6; round++) {
        char v[32];
        nghttp2_nv nva[] = {
            {(uint8_t *)":method", (uint8_t *)"GET", 7, 3, 0},
            {(uint8_t *)":scheme", (uint8_t *)"https", 7, 5, 0},
            {(uint8_t *)":authority", (uint8_t *)"a.example", 10, 9, 0},
            {(uint8_t *)":path", (uint8_t *)v, 5, 0, 0},
            {(uint8_t *)"x-big", (uint8_t *)big, 5, round == 2 ? sizeof(big) : 10, 0},
        };
        uint8_t ping[8] = {(uint8_t)round};
        nva[3].valuelen = (size_t)snprintf(v, sizeof(v), "/r/%d", round);
        ck_assert_int_eq(nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, &iv, 1), 0);
        ck_assert_int_gt(nghttp2_submit_request(s, NULL, nva, 5, NULL, NULL), 0);
        ck_assert_int_eq(nghttp2_submit_ping(s, NGHTTP2_FLAG_NONE, ping), 0);
        ck_assert_int_eq(nghttp2_session_send(s), 0);
        ck_assert_int_eq(nghttp2_session_want_write(s), 0);
        if (own != NULL) {
            ck_assert_ptr_nonnull(own->fb);
            ck_assert_uint_gt(resident_pages(own->fb, own->fb_len), 0);
            ck_assert_uint_eq(px_h2_mem_idle(own), own->fb_len);
            ck_assert_uint_eq(resident_pages(own->fb, own->fb_len), 0);
        }
    }
    nghttp2_session_del(s);
    nghttp2_session_callbacks_del(cbs);
    return w;
}

START_TEST(own_frame_buffer_given_back)
{
    struct px_h2_mem own;
    struct wire a, b;
    px_h2_mem_init(&own);
    a = client_run(px_h2_mem(), NULL);
    b = client_run(&own.mem, &own);
    ck_assert_ptr_null(own.fb); /* unmapped with the session */
    ck_assert_uint_gt(a.len, 2 * 16384); /* the big field took CONTINUATIONs */
    ck_assert_uint_eq(a.len, b.len);
    ck_assert_msg(memcmp(a.p, b.p, a.len) == 0, "a given-back frame buffer changed the bytes");
    free(a.p);
    free(b.p);
}
END_TEST

/* The block taken for the frame buffer is the first realloc(NULL) of 12 KiB
 * or more, once; every other block is the shared allocator's, and the
 * frame buffer resized keeps its bytes. */
START_TEST(own_takes_one_block)
{
    struct px_h2_mem own;
    nghttp2_mem *m = &own.mem;
    unsigned char *small, *big, *fb, *other, *moved;
    px_h2_mem_init(&own);
    small = m->realloc(NULL, 100, m->mem_user_data);
    big = m->malloc(H2_MEM_MAP_MIN * 2, m->mem_user_data);
    ck_assert_ptr_null(own.fb);
    fb = m->realloc(NULL, 16384 + 10, m->mem_user_data);
    ck_assert_ptr_eq(fb, own.fb);
    ck_assert_uint_eq((uintptr_t)fb % (uintptr_t)sysconf(_SC_PAGESIZE), 0);
    other = m->realloc(NULL, 16384 + 10, m->mem_user_data);
    ck_assert_ptr_ne(other, own.fb);
    pattern_fill(fb, 16384 + 10, 3);
    moved = m->realloc(fb, 20000, m->mem_user_data);
    ck_assert_ptr_null(own.fb);
    ck_assert(pattern_same(moved, 16384 + 10, 3));
    ck_assert_uint_eq(px_h2_mem_idle(&own), 0);
    m->free(moved, m->mem_user_data);
    moved = m->realloc(NULL, 16384 + 10, m->mem_user_data);
    ck_assert_ptr_nonnull(moved);
    ck_assert_ptr_null(own.fb); /* never a second one */
    m->free(moved, m->mem_user_data);
    m->free(other, m->mem_user_data);
    m->free(big, m->mem_user_data);
    m->free(small, m->mem_user_data);
}
END_TEST

/* The zeroed block (the stream map): taken for a calloc of whole pages
 * under 12 KiB; its pages go back only while every byte is zero, and its
 * bytes are what they were either way. */
START_TEST(own_zero_block_given_back_only_when_zero)
{
    struct px_h2_mem own;
    nghttp2_mem *m = &own.mem;
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    unsigned char *small, *zb, *other;
    px_h2_mem_init(&own);
    small = m->calloc(1, 100, m->mem_user_data);
    ck_assert_ptr_null(own.zb);
    zb = m->calloc(pg / 16, 16, m->mem_user_data);
    ck_assert_ptr_eq(zb, own.zb);
    other = m->calloc(pg / 16, 16, m->mem_user_data); /* one at a time */
    ck_assert_ptr_ne(other, own.zb);
    zb[100] = 7; /* a bucket in use */
    ck_assert_uint_eq(px_h2_mem_idle(&own), 0);
    ck_assert_uint_eq(resident_pages(zb, pg), 1);
    ck_assert_uint_eq(zb[100], 7);
    zb[100] = 0; /* the stream closed */
    ck_assert_uint_eq(px_h2_mem_idle(&own), pg);
    ck_assert_uint_eq(resident_pages(zb, pg), 0);
    for (size_t i = 0; i < pg; i++)
        ck_assert_uint_eq(zb[i], 0);
    zb[5] = 1; /* written again after */
    ck_assert_uint_eq(zb[5], 1);
    m->free(zb, m->mem_user_data);
    ck_assert_ptr_null(own.zb);
    m->free(other, m->mem_user_data);
    m->free(small, m->mem_user_data);
}
END_TEST

/* A server session on its own allocator: its stream map is the zeroed
 * block; with a stream open it stays, once the stream is closed the idle
 * session gives it back, and the next stream works. */
static ssize_t recv_none(nghttp2_session *s, uint8_t *b, size_t n, int f, void *u)
{
    (void)s; (void)b; (void)n; (void)f; (void)u;
    return NGHTTP2_ERR_WOULDBLOCK;
}

START_TEST(own_stream_map_given_back)
{
    struct px_h2_mem own, cm;
    nghttp2_session_callbacks *cbs;
    nghttp2_session *srv, *cli;
    struct wire to_srv = {0}, to_cli = {0};
    nghttp2_nv nva[] = {
        {(uint8_t *)":method", (uint8_t *)"GET", 7, 3, 0},
        {(uint8_t *)":scheme", (uint8_t *)"https", 7, 5, 0},
        {(uint8_t *)":authority", (uint8_t *)"a.example", 10, 9, 0},
        {(uint8_t *)":path", (uint8_t *)"/", 5, 1, 0},
    };
    nghttp2_nv rsp[] = {{(uint8_t *)":status", (uint8_t *)"204", 7, 3, 0}};
    px_h2_mem_init(&own);
    px_h2_mem_init(&cm);
    ck_assert_int_eq(nghttp2_session_callbacks_new(&cbs), 0);
    nghttp2_session_callbacks_set_send_callback(cbs, to_wire);
    nghttp2_session_callbacks_set_recv_callback(cbs, recv_none);
    ck_assert_int_eq(nghttp2_session_server_new3(&srv, cbs, &to_cli, NULL, &own.mem), 0);
    ck_assert_int_eq(nghttp2_session_client_new3(&cli, cbs, &to_srv, NULL, &cm.mem), 0);
    ck_assert_ptr_nonnull(own.zb); /* the stream map */
    {
        /* as h2.c: no RFC 7540 priorities, so a closed stream leaves the map */
        nghttp2_settings_entry iv = {NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1};
        ck_assert_int_eq(nghttp2_submit_settings(srv, NGHTTP2_FLAG_NONE, &iv, 1), 0);
    }
    /* the client's SETTINGS (nghttp2 sends the magic before them) */
    ck_assert_int_eq(nghttp2_submit_settings(cli, NGHTTP2_FLAG_NONE, NULL, 0), 0);
    for (int round = 0; round < 3; round++) {
        int32_t id = nghttp2_submit_request(cli, NULL, nva, 4, NULL, NULL);
        ck_assert_int_gt(id, 0);
        ck_assert_int_eq(nghttp2_session_send(cli), 0);
        ck_assert_int_eq(nghttp2_session_mem_recv(srv, to_srv.p, to_srv.len), (ssize_t)to_srv.len);
        to_srv.len = 0;
        ck_assert_msg(nghttp2_session_find_stream(srv, id) != NULL, "round %d id %d want_read %d",
                      round, id, nghttp2_session_want_read(srv));
        ck_assert_int_eq(nghttp2_session_send(srv), 0); /* SETTINGS and its ACK */
        px_h2_mem_idle(&own);
        ck_assert_uint_eq(resident_pages(own.zb, own.zb_len), 1); /* in use: kept */
        ck_assert_ptr_nonnull(nghttp2_session_find_stream(srv, id));
        ck_assert_int_eq(nghttp2_submit_response(srv, id, rsp, 1, NULL), 0);
        ck_assert_int_eq(nghttp2_session_send(srv), 0);
        ck_assert_ptr_null(nghttp2_session_find_stream(srv, id)); /* closed */
        ck_assert_int_eq(nghttp2_session_want_write(srv), 0);
        ck_assert_uint_ge(px_h2_mem_idle(&own), own.zb_len);
        ck_assert_uint_eq(resident_pages(own.zb, own.zb_len), 0);
        ck_assert_int_eq(nghttp2_session_mem_recv(cli, to_cli.p, to_cli.len), (ssize_t)to_cli.len);
        to_cli.len = 0;
    }
    nghttp2_session_del(srv);
    nghttp2_session_del(cli);
    nghttp2_session_callbacks_del(cbs);
    ck_assert_ptr_null(own.zb);
    ck_assert_ptr_null(own.fb);
    free(to_srv.p);
    free(to_cli.p);
}
END_TEST

TCase *tcase_h2_mem(void)
{
    TCase *tc = tcase_create("h2_mem");
    tcase_add_test(tc, malloc_calloc_sizes);
    tcase_add_test(tc, realloc_keeps_contents);
    tcase_add_test(tc, overflow_refused);
    tcase_add_test(tc, session_uses_it);
    tcase_add_test(tc, large_blocks_are_paged);
    tcase_add_test(tc, own_frame_buffer_given_back);
    tcase_add_test(tc, own_takes_one_block);
    tcase_add_test(tc, own_zero_block_given_back_only_when_zero);
    tcase_add_test(tc, own_stream_map_given_back);
    return tc;
}
