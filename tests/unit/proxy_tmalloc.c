/*
 * proxy_tmalloc.c - TCase "tmalloc" of the proxy suite: the per-thread
 * block classes (proxy/base/tmalloc.c). Every size around every class
 * boundary keeps its bytes, alignment and zeroing; realloc within, across
 * and out of the classes keeps the contents; a freed block is handed out
 * again for its class (the point of it), a class keeps up to its cap,
 * decay gives back what sat unused down to the floor, trim all; a block
 * freed on another thread is fine; overflow is refused.
 */
#include <check.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "pattern.h"
#include "tmalloc.h"

TCase *tcase_tmalloc(void);

static const size_t sizes[] = {0,    1,    15,   16,   63,   64,   65,   1000, 1023, 1024,
                               1025, 2047, 2048, 2049, 2928, 3071, 3072, 3073, 4095, 4096,
                               4097, 8191, 8192, 8193,
                               12288, 16384, 16385, 65536, 131072, 131073, 300000};
#define N_SIZES (sizeof(sizes) / sizeof(sizes[0]))


START_TEST(sizes_hold_their_bytes)
{
    unsigned char *p[N_SIZES];
    for (size_t i = 0; i < N_SIZES; i++) {
        unsigned char *z = px_tzalloc(sizes[i]);
        size_t nonzero = 0;
        p[i] = px_tmalloc(sizes[i]);
        ck_assert_ptr_nonnull(p[i]);
        ck_assert_ptr_nonnull(z);
        ck_assert_uint_eq((uintptr_t)p[i] % 16, 0);
        ck_assert_uint_eq(px_tsize(p[i]), sizes[i]);
        for (size_t j = 0; j < sizes[i]; j++)
            nonzero += z[j] != 0;
        ck_assert_uint_eq(nonzero, 0);
        pattern_fill(p[i], sizes[i], (unsigned)i);
        pattern_fill(z, sizes[i], 99); /* all of it is writable */
        px_tfree(z);
    }
    for (size_t i = 0; i < N_SIZES; i++) { /* no block overlapped another */
        ck_assert_msg(pattern_same(p[i], sizes[i], (unsigned)i), "size %zu lost bytes", sizes[i]);
        px_tfree(p[i]);
    }
    px_tfree(NULL);
}
END_TEST

START_TEST(realloc_keeps_contents)
{
    for (size_t a = 0; a < N_SIZES; a++)
        for (size_t b = 0; b < N_SIZES; b++) {
            size_t keep = sizes[a] < sizes[b] ? sizes[a] : sizes[b];
            unsigned char *p = px_trealloc(NULL, sizes[a]), *q;
            ck_assert_ptr_nonnull(p);
            pattern_fill(p, sizes[a], (unsigned)(a * 7 + b));
            q = px_trealloc(p, sizes[b]);
            ck_assert_ptr_nonnull(q);
            ck_assert_msg(pattern_same(q, keep, (unsigned)(a * 7 + b)), "realloc %zu -> %zu lost bytes",
                          sizes[a], sizes[b]);
            ck_assert_uint_eq(px_tsize(q), sizes[b]);
            pattern_fill(q, sizes[b], 3);
            px_tfree(q);
        }
}
END_TEST

START_TEST(paged_blocks)
{
    size_t n[] = {1, 4096, 20000, 1 << 20};
    for (size_t i = 0; i < sizeof(n) / sizeof(n[0]); i++) {
        unsigned char *p = px_tmalloc_paged(n[i]), *q;
        size_t nonzero = 0;
        ck_assert_ptr_nonnull(p);
        for (size_t j = 0; j < n[i]; j++)
            nonzero += p[j] != 0;
        ck_assert_uint_eq(nonzero, 0);
        pattern_fill(p, n[i], 5);
        q = px_trealloc(p, n[i] + 100); /* out of its mapping into an ordinary block */
        ck_assert_ptr_nonnull(q);
        ck_assert(pattern_same(q, n[i], 5));
        px_tfree(q);
        px_tfree(px_tmalloc_paged(n[i])); /* freed untouched */
    }
}
END_TEST

/* A freed block is what the next request of its class gets: no malloc. */
START_TEST(freed_blocks_come_back)
{
    for (size_t i = 0; i < N_SIZES; i++) {
        void *p, *q;
        if (sizes[i] == 0 || sizes[i] > 128 * 1024)
            continue;
        p = px_tmalloc(sizes[i]);
        ck_assert_ptr_nonnull(p);
        px_tfree(p);
        q = px_tmalloc(sizes[i]);
        ck_assert_ptr_eq(p, q);
        px_tfree(q);
    }
    px_tmalloc_trim();
}
END_TEST

/* A class keeps a bounded number of blocks: many more freed at once go
 * back to malloc (no growth without bound), and all of it still works. */
START_TEST(bounded_keep)
{
    enum { N = 2000 };
    static void *p[N];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) {
            p[i] = px_tmalloc(100 + (size_t)(i % 5) * 900);
            ck_assert_ptr_nonnull(p[i]);
            memset(p[i], i & 0xff, 100);
        }
        for (int i = 0; i < N; i++)
            px_tfree(p[i]);
    }
    px_tmalloc_trim();
}
END_TEST

/* A class keeps what was in flight at once, up to its cap: blocks made
 * and freed together come back without malloc. Decay gives back what no
 * allocation took since the previous decay, down to the floor, and keeps
 * what was used. */
START_TEST(keep_and_decay)
{
    enum { N = 3000, CAP = 4096, FLOOR = 256, SZ = 200 };
    static void *p[N], *q[N];
    px_tmalloc_trim();
    ck_assert_uint_eq(px_tmalloc_kept(SZ), 0);
    for (int i = 0; i < N; i++)
        ck_assert_ptr_nonnull(p[i] = px_tmalloc(SZ));
    for (int i = 0; i < N; i++)
        px_tfree(p[i]);
    ck_assert_uint_eq(px_tmalloc_kept(SZ), N);
    for (int i = 0; i < N; i++) /* all of them again, none from malloc */
        ck_assert_ptr_eq(q[i] = px_tmalloc(SZ), p[N - 1 - i]);
    ck_assert_uint_eq(px_tmalloc_kept(SZ), 0);
    for (int i = 0; i < N; i++)
        px_tfree(q[i]);
    px_tmalloc_decay(); /* the class was empty since the last decay: keeps all */
    ck_assert_uint_eq(px_tmalloc_kept(SZ), N);
    for (int i = 0; i < 100; i++) /* 100 in use during the next interval */
        q[i] = px_tmalloc(SZ);
    for (int i = 0; i < 100; i++)
        px_tfree(q[i]);
    px_tmalloc_decay(); /* N - 100 sat unused: they go */
    ck_assert_uint_eq(px_tmalloc_kept(SZ), 100 < FLOOR ? FLOOR : 100);
    ck_assert_uint_eq(px_tmalloc_kept(SZ + 1), FLOOR); /* same class */
    px_tmalloc_decay(); /* never below the floor */
    ck_assert_uint_eq(px_tmalloc_kept(SZ), FLOOR);
    ck_assert_uint_eq(px_tmalloc_kept(16), 0); /* other classes untouched */

    /* the cap: more freed at once go to free() */
    {
        static void *r[CAP + 500];
        for (int i = 0; i < CAP + 500; i++)
            ck_assert_ptr_nonnull(r[i] = px_tmalloc(SZ));
        for (int i = 0; i < CAP + 500; i++)
            px_tfree(r[i]);
        ck_assert_uint_eq(px_tmalloc_kept(SZ), CAP);
    }
    /* a class above 1 KiB keeps its floor at most */
    for (int i = 0; i < 100; i++)
        ck_assert_ptr_nonnull(p[i] = px_tmalloc(4000));
    for (int i = 0; i < 100; i++)
        px_tfree(p[i]);
    ck_assert_uint_eq(px_tmalloc_kept(4000), 32);
    ck_assert_uint_eq(px_tmalloc_kept(1 << 20), 0);
    /* 2049-3072 bytes (nghttp2's session object) have their own class */
    for (int i = 0; i < 10; i++)
        ck_assert_ptr_nonnull(p[i] = px_tmalloc(2928));
    for (int i = 0; i < 10; i++)
        px_tfree(p[i]);
    ck_assert_uint_eq(px_tmalloc_kept(3072), 10);
    ck_assert_uint_eq(px_tmalloc_kept(2049), 10);
    ck_assert_uint_eq(px_tmalloc_kept(3073), 32); /* the 4 KiB class, as it was */
    ck_assert_uint_eq(px_tmalloc_kept(2048), 0);
    px_tmalloc_trim();
    ck_assert_uint_eq(px_tmalloc_kept(SZ), 0);
}
END_TEST

/* Raw blocks (OpenSSL's hooks): the record-buffer sizes share one
 * recycled class, everything else is plain malloc; realloc into, within
 * and out of the class keeps the contents; cap, decay and trim as the
 * classes. */
START_TEST(raw_blocks)
{
    static const size_t rec[] = {PX_RAW_MIN, 16472, 16560, 16712, PX_RAW_BYTES};
    unsigned char *b[70], *q;
    px_tmalloc_trim();
    ck_assert_uint_eq(px_rawmalloc_kept(), 0);
    for (size_t i = 0; i < sizeof(rec) / sizeof(rec[0]); i++) {
        unsigned char *a = px_rawmalloc(rec[i]);
        ck_assert_ptr_nonnull(a);
        memset(a, 7, rec[i]);
        px_rawfree(a);
        ck_assert_uint_eq(px_rawmalloc_kept(), 1);
        q = px_rawmalloc(rec[(i + 1) % 5]); /* any size of the class takes it */
        ck_assert_ptr_eq(q, a);
        memset(q, 8, rec[(i + 1) % 5]);
        px_rawfree(q);
    }
    q = px_rawmalloc(PX_RAW_MIN - 1); /* outside the class: malloc's */
    ck_assert_ptr_nonnull(q);
    px_rawfree(q);
    q = px_rawmalloc(PX_RAW_BYTES + 4096);
    px_rawfree(q);
    q = px_rawmalloc(1 << 20);
    px_rawfree(q);
    ck_assert_uint_eq(px_rawmalloc_kept(), 1);
    px_rawfree(NULL);

    /* realloc: small -> class -> within -> large -> small, contents kept */
    q = px_rawrealloc(NULL, 100);
    ck_assert_ptr_nonnull(q);
    pattern_fill(q, 100, 1);
    q = px_rawrealloc(q, 16712);
    ck_assert_ptr_nonnull(q);
    ck_assert(pattern_same(q, 100, 1));
    pattern_fill(q, 16712, 2);
    ck_assert_ptr_eq(px_rawrealloc(q, 16000), q);
    q = px_rawrealloc(q, 100000);
    ck_assert_ptr_nonnull(q);
    ck_assert(pattern_same(q, 16000, 2));
    q = px_rawrealloc(q, 16500);
    ck_assert(pattern_same(q, 16000, 2));
    q = px_rawrealloc(q, 50);
    ck_assert(pattern_same(q, 50, 2));
    ck_assert_ptr_null(px_rawrealloc(q, 0)); /* freed */

    /* cap, decay, floor, trim */
    for (int i = 0; i < 70; i++)
        ck_assert_ptr_nonnull(b[i] = px_rawmalloc(16712));
    for (int i = 0; i < 70; i++)
        px_rawfree(b[i]);
    ck_assert_uint_eq(px_rawmalloc_kept(), 64);
    px_tmalloc_decay(); /* emptied in this interval: all stay */
    ck_assert_uint_eq(px_rawmalloc_kept(), 64);
    q = px_rawmalloc(16712); /* one in use for a while */
    px_rawfree(q);
    px_tmalloc_decay();
    ck_assert_uint_eq(px_rawmalloc_kept(), 8);
    px_tmalloc_trim();
    ck_assert_uint_eq(px_rawmalloc_kept(), 0);
}
END_TEST

static void *free_there(void *arg)
{
    void **blocks = arg;
    for (int i = 0; i < 100; i++)
        px_tfree(blocks[i]);
    return NULL; /* the thread's pool is given back as it ends */
}

START_TEST(freed_on_another_thread)
{
    void *blocks[100];
    pthread_t t;
    for (int i = 0; i < 100; i++) {
        blocks[i] = px_tmalloc((size_t)(i + 1) * 80);
        ck_assert_ptr_nonnull(blocks[i]);
    }
    ck_assert_int_eq(pthread_create(&t, NULL, free_there, blocks), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
}
END_TEST

START_TEST(overflow_refused)
{
    void *p = px_tmalloc(10);
    ck_assert_ptr_null(px_tmalloc(SIZE_MAX));
    ck_assert_ptr_null(px_tmalloc(SIZE_MAX - 8));
    ck_assert_ptr_null(px_tcalloc(SIZE_MAX / 2, 4));
    ck_assert_ptr_null(px_tmalloc_paged(SIZE_MAX - 100));
    ck_assert_ptr_nonnull(p);
    ck_assert_ptr_null(px_trealloc(p, SIZE_MAX));
    px_tfree(p); /* still ours after a failed realloc */
}
END_TEST

TCase *tcase_tmalloc(void)
{
    TCase *tc = tcase_create("tmalloc");
    tcase_add_test(tc, sizes_hold_their_bytes);
    tcase_add_test(tc, realloc_keeps_contents);
    tcase_add_test(tc, paged_blocks);
    tcase_add_test(tc, freed_blocks_come_back);
    tcase_add_test(tc, bounded_keep);
    tcase_add_test(tc, keep_and_decay);
    tcase_add_test(tc, raw_blocks);
    tcase_add_test(tc, freed_on_another_thread);
    tcase_add_test(tc, overflow_refused);
    return tc;
}
