/*
 * proxy_logpipe.c - TCase "logpipe" of the proxy suite: log records on a
 * non-blocking pipe (proxy/log.c), as stdout is in a container. A record is
 * written whole or dropped whole and counted in picket_log_dropped_total,
 * never cut; records larger than PIPE_BUF from several threads, and from
 * two sinks sharing one pipe (stdout and stderr joined), never interleave.
 *
 * Every line read back is compared byte for byte with the line its record
 * must give, so a cut, a glued or an interleaved line fails the test.
 */
#include <check.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"

TCase *tcase_logpipe(void);

#ifndef F_SETPIPE_SZ
#define F_SETPIPE_SZ 1031 /* Linux */
#endif

#define BIG 7000 /* bytes of a big record's value: over PIPE_BUF, under PX_LOG_VALUE_MAX */
#define THREADS 4
#define PER_THREAD 40
#define READ_MAX (8 << 20)

static int g_rd = -1; /* read end of the pipe that stdout (and stderr) write to */
static char *g_buf;   /* what was read */
static size_t g_len;
static atomic_int g_stop_reader;

static void pipe_open(int size, int also_stderr)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    if (size > 0)
        ck_assert_int_ge(fcntl(p[1], F_SETPIPE_SZ, size), size);
    ck_assert_int_ge(dup2(p[1], STDOUT_FILENO), 0);
    if (also_stderr)
        ck_assert_int_ge(dup2(p[1], STDERR_FILENO), 0);
    close(p[1]);
    g_rd = p[0];
    ck_assert_int_eq(fcntl(g_rd, F_SETFL, O_NONBLOCK), 0);
    g_buf = malloc(READ_MAX);
    ck_assert_ptr_nonnull(g_buf);
    g_len = 0;
}

static void setup(void)
{
    g_rd = -1;
    g_buf = NULL;
    atomic_store(&g_stop_reader, 0);
}

static void teardown(void)
{
    px_log_shutdown();
    px_metrics_shutdown();
    free(g_buf);
    if (g_rd >= 0)
        close(g_rd);
}

/* Reads what the pipe holds now, at most `chunk` bytes per read. */
static size_t drain(size_t chunk)
{
    size_t got = 0;
    for (;;) {
        ssize_t n;
        ck_assert_uint_lt(g_len + chunk, READ_MAX);
        n = read(g_rd, g_buf + g_len, chunk);
        if (n <= 0)
            return got;
        g_len += (size_t)n;
        got += (size_t)n;
    }
}

/* A slow reader: 1000 bytes at a time, a millisecond apart, so the pipe is
 * full most of the time and big records go in pieces. */
static void *reader_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&g_stop_reader)) {
        drain(1000);
        usleep(1000);
    }
    return NULL;
}

static uint64_t counter(const char *name, const char *log)
{
    char labels[32];
    snprintf(labels, sizeof(labels), "log=\"%s\"", log);
    return px_counter_value(px_counter_get(name, "", labels));
}

/* ---- the records and the lines they must give ---------------------------- */

#define ACCESS_PREFIX "{\"ts\":\"1970-01-01T00:00:00.001Z\",\"listener\":\"in\",\"request_id\":\""
#define TS_END 31 /* {"ts":" and 24 bytes of time */

static char g_val[THREADS][BIG + 1]; /* thread t's value: BIG times 'A' + t */

static void access_rec(int t, int seq, size_t vlen)
{
    char id[32];
    struct px_access_rec a = {.ts_ms = 1, .listener = "in", .method = "GET", .status = 200};
    snprintf(id, sizeof(id), "t%d-%d", t, seq);
    g_val[t][vlen] = '\0';
    a.request_id = id;
    a.path = g_val[t];
    px_log_access(&a);
    g_val[t][vlen] = (char)('A' + t);
}

static int access_line(char *out, size_t outlen, int t, int seq, size_t vlen)
{
    return snprintf(out, outlen,
                    ACCESS_PREFIX
                    "t%d-%d\",\"peer\":null,\"method\":\"GET\","
                    "\"authority\":null,\"path\":\"%.*s\",\"proto\":null,\"status\":200,"
                    "\"bytes_in\":0,\"bytes_out\":0,\"duration_ms\":0.000,\"upstream\":null,"
                    "\"decision\":null,\"rule\":null}\n",
                    t, seq, (int)vlen, g_val[t]);
}

static void op_rec(int t, int seq, size_t vlen)
{
    char ts[8], sq[16];
    snprintf(ts, sizeof(ts), "%d", t);
    snprintf(sq, sizeof(sq), "%d", seq);
    g_val[t][vlen] = '\0';
    px_log(PX_LOG_INFO, "big", "thread", ts, "seq", sq, "value", g_val[t], NULL);
    g_val[t][vlen] = (char)('A' + t);
}

/* everything after the timestamp */
static int op_line_tail(char *out, size_t outlen, int t, int seq, size_t vlen)
{
    return snprintf(out, outlen,
                    "\",\"level\":\"info\",\"event\":\"big\",\"thread\":\"%d\",\"seq\":\"%d\","
                    "\"value\":\"%.*s\"}\n",
                    t, seq, (int)vlen, g_val[t]);
}

/* Checks that g_buf is whole lines, each exactly the line of a record
 * logged (no record twice); returns how many. */
static int check_lines(size_t vlen, int nthreads, int per_thread)
{
    static char want[2 * BIG];
    static unsigned char seen[THREADS][PER_THREAD * 4];
    const char *p = g_buf, *end = g_buf + g_len;
    int lines = 0;

    memset(seen, 0, sizeof(seen));
    ck_assert_msg(g_len == 0 || end[-1] == '\n', "the output ends inside a line");
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = (size_t)(nl + 1 - p);
        int t = -1, seq = -1, n;
        if (strncmp(p, ACCESS_PREFIX, sizeof(ACCESS_PREFIX) - 1) == 0) {
            ck_assert_int_eq(sscanf(p + sizeof(ACCESS_PREFIX) - 1, "t%d-%d", &t, &seq), 2);
            ck_assert(t >= 0 && t < nthreads && seq >= 0 && seq < per_thread);
            n = access_line(want, sizeof(want), t, seq, vlen);
            ck_assert_msg((size_t)n == len && memcmp(p, want, len) == 0,
                          "access line %d is not t%d-%d's record: %.120s...", lines, t, seq, p);
        } else {
            const char *th = strstr(p, "\"thread\":\"");
            ck_assert_msg(strncmp(p, "{\"ts\":\"20", 9) == 0 && th != NULL && th < nl,
                          "line %d is no record: %.120s", lines, p);
            ck_assert_int_eq(sscanf(th, "\"thread\":\"%d\",\"seq\":\"%d\"", &t, &seq), 2);
            ck_assert(t >= 0 && t < nthreads && seq >= 0 && seq < per_thread);
            n = op_line_tail(want, sizeof(want), t, seq, vlen);
            ck_assert_msg((size_t)n == len - TS_END && memcmp(p + TS_END, want, len - TS_END) == 0,
                          "operational line %d is not thread %d seq %d's record: %.120s...", lines,
                          t, seq, p);
        }
        ck_assert_msg(!seen[t][seq], "record t%d-%d twice", t, seq);
        seen[t][seq] = 1;
        lines++;
        p = nl + 1;
    }
    return lines;
}

/* ---- tests ------------------------------------------------------------------ */

START_TEST(logpipe_full_pipe_drops_whole_records)
{
    char err[256];
    int lines;

    memset(g_val, 'A', sizeof(g_val));
    pipe_open(4096, 0);
    ck_assert_int_eq(px_log_init(PX_LOG_INFO, "-", NULL, err, sizeof(err)), 0);
    /* nobody reads: the pipe fills after a dozen records */
    for (int i = 0; i < 100; i++)
        access_rec(0, i, 200);
    drain(65536);
    lines = check_lines(200, 1, 100);
    ck_assert_int_gt(lines, 0);
    ck_assert_int_lt(lines, 100);
    /* the first records, in order, then nothing: each later one dropped whole */
    {
        static char want[65536];
        size_t n = 0;
        for (int i = 0; i < lines; i++)
            n += (size_t)access_line(want + n, sizeof(want) - n, 0, i, 200);
        ck_assert_uint_eq(n, g_len);
        ck_assert_int_eq(memcmp(want, g_buf, n), 0);
    }
    ck_assert_uint_eq(counter("picket_log_dropped_total", "access"), 100 - (uint64_t)lines);
    ck_assert_uint_eq(counter("picket_log_write_errors_total", "access"), 0);
    /* room again: the next record is written */
    access_rec(0, 100 - 1, 200);
    g_len = 0;
    drain(65536);
    ck_assert_int_eq(check_lines(200, 1, 100), 1);
}
END_TEST

struct writer {
    pthread_t th;
    int t, op;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        if (w->op)
            op_rec(w->t, i, BIG);
        else
            access_rec(w->t, i, BIG);
    }
    return NULL;
}

/* THREADS writers of big records; op: odd threads use the operational log
 * (stderr), which shares the pipe. Returns lines read + records dropped. */
static void run_writers(int mixed, int *lines, uint64_t *dropped)
{
    struct writer w[THREADS];
    pthread_t reader;

    memset(g_val, 0, sizeof(g_val));
    for (int t = 0; t < THREADS; t++)
        memset(g_val[t], 'A' + t, BIG);
    ck_assert_int_eq(pthread_create(&reader, NULL, reader_main, NULL), 0);
    for (int t = 0; t < THREADS; t++) {
        w[t].t = t;
        w[t].op = mixed && (t & 1);
        ck_assert_int_eq(pthread_create(&w[t].th, NULL, writer_main, &w[t]), 0);
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(w[t].th, NULL);
    px_log_flush(5000); /* the tail of a record cut by the full pipe, if any */
    atomic_store(&g_stop_reader, 1);
    pthread_join(reader, NULL);
    drain(65536);
    *lines = check_lines(BIG, THREADS, PER_THREAD);
    *dropped = counter("picket_log_dropped_total", "access") +
               counter("picket_log_dropped_total", "error");
}

START_TEST(logpipe_big_records_from_threads_not_cut)
{
    char err[256];
    int lines;
    uint64_t dropped;

    pipe_open(16384, 0);
    ck_assert_int_eq(px_log_init(PX_LOG_INFO, "-", NULL, err, sizeof(err)), 0);
    run_writers(0, &lines, &dropped);
    ck_assert_int_gt(lines, 0);
    ck_assert_uint_eq((uint64_t)lines + dropped, THREADS * PER_THREAD);
}
END_TEST

START_TEST(logpipe_two_sinks_on_one_pipe_not_interleaved)
{
    char err[256];
    int lines;
    uint64_t dropped;

    /* stdout (access log "-") and stderr (operational log): one pipe */
    pipe_open(16384, 1);
    ck_assert_int_eq(px_log_init(PX_LOG_INFO, "-", NULL, err, sizeof(err)), 0);
    run_writers(1, &lines, &dropped);
    ck_assert_int_gt(lines, 0);
    ck_assert_uint_eq((uint64_t)lines + dropped, THREADS * PER_THREAD);
}
END_TEST

TCase *tcase_logpipe(void)
{
    TCase *tc = tcase_create("logpipe");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, logpipe_full_pipe_drops_whole_records);
    tcase_add_test(tc, logpipe_big_records_from_threads_not_cut);
    tcase_add_test(tc, logpipe_two_sinks_on_one_pipe_not_interleaved);
    return tc;
}
