/*
 * proxy_stream.c - TCase "stream_bodies" of the proxy suite: the body
 * buffers a stream takes from its thread's list (proxy/core/stream.c).
 * A freed stream's buffers come back empty to the next stream, what they
 * held is uncounted from the memory budget when the stream ends and what
 * the next stream puts in them is counted to it; a thread that made
 * streams and ends frees its list (LeakSanitizer would report it).
 */
#include <check.h>
#include <pthread.h>
#include <string.h>

#include <event2/buffer.h>

#include "mem.h"
#include "px.h"

TCase *tcase_stream_bodies(void);

/* A stream of picket's own (no connection, no access log line), ended
 * from the downstream side with no upstream: freed at once. */
static struct px_stream *stream(struct px_worker *w)
{
    struct px_stream *st = px_stream_new_internal(w, NULL, NULL);
    ck_assert_ptr_nonnull(st);
    ck_assert_ptr_nonnull(st->req_body);
    ck_assert_ptr_nonnull(st->resp_body);
    ck_assert_ptr_ne(st->req_body, st->resp_body);
    return st;
}

START_TEST(stream_bodies_reused_empty_and_counted)
{
    struct px_worker w;
    struct px_stream *a, *b;
    struct evbuffer *ra, *sa;
    int64_t req0 = px_mem_pool_bytes(PX_MEM_REQ_BODY);
    int64_t resp0 = px_mem_pool_bytes(PX_MEM_RESP_BODY);

    memset(&w, 0, sizeof(w));
    a = stream(&w);
    ra = a->req_body;
    sa = a->resp_body;
    ck_assert_int_eq(evbuffer_add(a->req_body, "0123456789", 10), 0);
    ck_assert_int_eq(evbuffer_add(a->resp_body, "abc", 3), 0);
    ck_assert_int_eq(px_mem_pool_bytes(PX_MEM_REQ_BODY), req0 + 10);
    ck_assert_int_eq(px_mem_pool_bytes(PX_MEM_RESP_BODY), resp0 + 3);
    ck_assert_int_eq(a->mem.held, 13);
    px_stream_down_done(a); /* freed: its bytes are no one's now */
    ck_assert_int_eq(px_mem_pool_bytes(PX_MEM_REQ_BODY), req0);
    ck_assert_int_eq(px_mem_pool_bytes(PX_MEM_RESP_BODY), resp0);

    b = stream(&w);
    /* the same two buffers, empty, each counted in its new role */
    ck_assert((b->req_body == ra || b->req_body == sa) && (b->resp_body == ra || b->resp_body == sa));
    ck_assert_uint_eq(evbuffer_get_length(b->req_body), 0);
    ck_assert_uint_eq(evbuffer_get_length(b->resp_body), 0);
    ck_assert_int_eq(evbuffer_add(b->resp_body, "xyzzy", 5), 0);
    ck_assert_int_eq(px_mem_pool_bytes(PX_MEM_RESP_BODY), resp0 + 5);
    ck_assert_int_eq(px_mem_pool_bytes(PX_MEM_REQ_BODY), req0);
    ck_assert_int_eq(b->mem.held, 5);
    evbuffer_drain(b->resp_body, 2);
    ck_assert_int_eq(b->mem.held, 3);
    px_stream_down_done(b);
    ck_assert_int_eq(px_mem_pool_bytes(PX_MEM_RESP_BODY), resp0);
}
END_TEST

/* Many streams at once, then all freed: more than the list keeps (the rest
 * are freed), every buffer distinct while its stream lives. */
#define MANY 1500
static void *many_streams(void *arg)
{
    static struct px_stream *sts[MANY];
    struct px_worker w;
    (void)arg;
    memset(&w, 0, sizeof(w));
    for (int i = 0; i < MANY; i++) {
        sts[i] = px_stream_new_internal(&w, NULL, NULL);
        if (sts[i] == NULL || evbuffer_add(sts[i]->req_body, "r", 1) != 0)
            return (void *)1;
    }
    for (int i = 1; i < MANY; i++)
        if (sts[i]->req_body == sts[i - 1]->req_body)
            return (void *)2;
    for (int i = 0; i < MANY; i++)
        px_stream_down_done(sts[i]);
    return NULL;
}

START_TEST(stream_bodies_many_and_thread_end)
{
    pthread_t t;
    void *rc = (void *)-1;
    int64_t req0 = px_mem_pool_bytes(PX_MEM_REQ_BODY);

    ck_assert_int_eq(pthread_create(&t, NULL, many_streams, NULL), 0);
    ck_assert_int_eq(pthread_join(t, &rc), 0);
    ck_assert_ptr_null(rc);
    ck_assert_int_eq(px_mem_pool_bytes(PX_MEM_REQ_BODY), req0);
    /* and on this thread too, where the list outlives the test (the
     * process's end frees it) */
    ck_assert_ptr_null(many_streams(NULL));
    ck_assert_int_eq(px_mem_pool_bytes(PX_MEM_REQ_BODY), req0);
}
END_TEST

TCase *tcase_stream_bodies(void)
{
    TCase *tc = tcase_create("stream_bodies");
    tcase_add_test(tc, stream_bodies_reused_empty_and_counted);
    tcase_add_test(tc, stream_bodies_many_and_thread_end);
    return tc;
}
