/*
 * log.c - JSON-lines logging: operational log on stderr, access and audit
 * logs in files (or stdout).
 *
 * Hot path: a thread formats into its own _Thread_local buffer and issues
 * one write(2); no allocation. A record is written whole or dropped whole,
 * never cut:
 *
 *   - regular files (and ttys, devices) take a record in one write(2) with
 *     no lock: O_APPEND writes do not interleave, and the kernel writes a
 *     file record whole unless the disk fails (then it is counted);
 *   - pipes and sockets (stdout in a container) are non-blocking, and a
 *     full pipe takes only part of a record larger than PIPE_BUF (a socket,
 *     of any record), and lets two writers' large records interleave. So
 *     each writes under a per-pipe mutex (sinks on the same pipe, such as
 *     stdout and stderr joined by 2>&1, share it: a "channel"), and when
 *     the pipe takes only part of a record, the rest is kept in the
 *     channel's buffer and written before anything else; until it is, new
 *     records are dropped whole. A record the pipe has no room for at all
 *     is dropped after two 5 ms waits, outside the lock. The mutex costs
 *     little: the kernel takes the pipe's own lock for every write anyway.
 *
 * Worker threads batch: access and audit records bound for regular files
 * go into the thread's buffer (PX_LOG_BATCH), written in one write(2) once
 * per event-loop turn, when the buffer is full, and when the worker stops
 * (px_log_thread_event). A clean stop loses nothing; a crash (SIGKILL, a
 * fault) loses the records of the turn it happened in, at most
 * PX_LOG_BATCH bytes per worker and sink. Pipes and sockets are not
 * batched: they keep the whole-record rules above.
 *
 * Every record not written is counted in picket_log_dropped_total{log}; those
 * lost to an error other than a full pipe (ENOSPC, EPIPE...) also in
 * picket_log_write_errors_total{log}.
 *
 * Reopen (logrotate, SIGHUP) keeps each sink's descriptor *number* for the
 * life of the process and dup2()s the freshly opened file onto it. A worker
 * that loaded the number a moment earlier thus writes to the old or the new
 * file, never to a closed descriptor or to one the kernel has since handed
 * to a socket. Disabling a sink dup2()s /dev/null onto it for the same
 * reason; the number is closed only by px_log_shutdown().
 */
#include "fmt.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "metrics.h"

enum { SINK_ERROR, SINK_ACCESS, SINK_AUDIT, NSINKS };

struct sink {
    atomic_int fd; /* -1 until first opened */
    atomic_int on;
    atomic_int stream; /* a pipe or socket: written through its channel */
    atomic_int chan;   /* index in g_chan: the first sink on the same pipe */
};

static struct sink g_sink[NSINKS] = {
    {STDERR_FILENO, 1, 0, SINK_ERROR},
    {-1, 0, 0, SINK_ACCESS},
    {-1, 0, 0, SINK_AUDIT},
};

/* Writing to one pipe or socket: one writer at a time, and the tail of a
 * record the pipe took only in part. */
struct chan {
    pthread_mutex_t mu;
    size_t off, len; /* pending[off..len) is still to be written */
    char pending[PX_LOG_LINE_MAX];
};

static struct chan g_chan[NSINKS] = {
    {PTHREAD_MUTEX_INITIALIZER, 0, 0, {0}},
    {PTHREAD_MUTEX_INITIALIZER, 0, 0, {0}},
    {PTHREAD_MUTEX_INITIALIZER, 0, 0, {0}},
};
static atomic_int g_level = PX_LOG_INFO;

static const char *const sink_label[NSINKS] = {"log=\"error\"", "log=\"access\"",
                                               "log=\"audit\""};
static const char *const level_name[] = {"debug", "info", "warn", "error"};

static _Thread_local char tl_line[PX_LOG_LINE_MAX];
static _Thread_local char tl_msg[PX_LOG_VALUE_MAX];

/* ---- escaping ---------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (2..4) and its code point, or 0
 * if the bytes are not valid UTF-8 (RFC 3629 table 4). */
static size_t utf8_seq(const unsigned char *s, size_t n, unsigned *cp)
{
    unsigned c = s[0], lo = 0x80, hi = 0xBF;
    size_t len;

    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        *cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        *cp = c & 0x0F;
        lo = c == 0xE0 ? 0xA0 : 0x80; /* no overlongs */
        hi = c == 0xED ? 0x9F : 0xBF; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        *cp = c & 0x07;
        lo = c == 0xF0 ? 0x90 : 0x80;
        hi = c == 0xF4 ? 0x8F : 0xBF; /* <= U+10FFFF */
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        *cp = (*cp << 6) | (s[i] & 0x3F);
    }
    return len;
}

/* 1 for bytes copied as they are: printable ASCII other than '"' (0x22)
 * and '\\' (0x5c). A table: this runs over every byte of every log value. */
#define R16(x) x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x
static const unsigned char json_plain[256] = {
    R16(0), R16(0),                                 /* 0x00-0x1f: controls */
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x20-0x2f */
    R16(1), R16(1),                                 /* 0x30-0x4f */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, /* 0x50-0x5f */
    R16(1),                                         /* 0x60-0x6f */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, /* 0x70-0x7f: DEL */
    R16(0), R16(0), R16(0), R16(0), R16(0), R16(0), R16(0), R16(0), /* 0x80-0xff */
};
#undef R16

/* 1 when all 8 bytes at p are plain (json_plain), by word arithmetic (the
 * exact "is there such a byte" tests: a zero byte, a byte below n). */
static int plain8(const unsigned char *p)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t x, q, b, bad;
    memcpy(&x, p, 8);
    q = x ^ (ones * '"');
    b = x ^ (ones * '\\');
    bad = ((x - ones * 0x20) & ~x) /* a byte below 0x20 */
          | ((q - ones) & ~q)       /* a '"' */
          | ((b - ones) & ~b)       /* a backslash */
          | (x + ones) | x;         /* a byte at or above 0x7f */
    return (bad & highs) == 0;
}

/* 1 when all 16 bytes at p are plain: where SSE2 is (every x86-64), one
 * compare per kind of byte that is not; elsewhere two plain8 words. The
 * signed compare with 0x20 catches the control bytes and every byte at or
 * above 0x80 at once. */
static int plain16(const unsigned char *p)
{
#if defined(__SSE2__)
    __m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
    __m128i bad = _mm_or_si128(_mm_or_si128(_mm_cmplt_epi8(x, _mm_set1_epi8(0x20)),
                                            _mm_cmpeq_epi8(x, _mm_set1_epi8(0x7f))),
                               _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('"')),
                                            _mm_cmpeq_epi8(x, _mm_set1_epi8('\\'))));
    return _mm_movemask_epi8(bad) == 0;
#else
    return plain8(p) && plain8(p + 8);
#endif
}

size_t px_json_escape(char *out, size_t outlen, const char *in, size_t inlen)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)in;
    size_t o = 0, i = 0;

    if (outlen == 0)
        return 0;
    while (i < inlen) {
        char tmp[8];
        const char *piece = tmp;
        size_t plen = 1, adv = 1, run = i;
        unsigned c, cp;

        /* Most of a log value is plain ASCII: it is copied 8 bytes at a
         * time while they are all plain and fit, and a tail of less than 8
         * as the input's last word, written over the output's last bytes
         * (the same bytes, when a word went before it). */
        while (run + 8 <= inlen && o + 8 < outlen && plain8(s + run)) {
            memcpy(out + o, s + run, 8);
            o += 8;
            run += 8;
        }
        if (run - i >= 8 && run < inlen && inlen - run < 8 && o + (inlen - run) < outlen &&
            plain8(s + inlen - 8)) {
            memcpy(out + o + (inlen - run) - 8, s + inlen - 8, 8);
            o += inlen - run;
            i = inlen;
            break;
        }
        i = run;
        if (i == inlen)
            break;
        while (run < inlen && json_plain[s[run]])
            run++;
        if (run > i) {
            size_t n = run - i;
            if (n > outlen - 1 - o)
                n = outlen - 1 - o;
            memcpy(out + o, in + i, n);
            o += n;
            i += n;
            if (i < run)
                break;
            continue;
        }
        c = s[i];
        if (c == '"' || c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            plen = 2;
        } else if (c >= 0x80 && (adv = utf8_seq(s + i, inlen - i, &cp)) != 0) {
            plen = adv;
            piece = in + i;
            if (cp == 0x2028 || cp == 0x2029) { /* line breaks to JavaScript */
                memcpy(tmp, cp == 0x2028 ? "\\u2028" : "\\u2029", 6);
                piece = tmp;
                plen = 6;
            }
        } else { /* control character, DEL or a byte that is not UTF-8 */
            memcpy(tmp, "\\u00", 4);
            tmp[4] = hex[c >> 4];
            tmp[5] = hex[c & 15];
            plen = 6;
            adv = 1;
        }
        if (o + plen + 1 > outlen)
            break;
        memcpy(out + o, piece, plen);
        o += plen;
        i += adv;
    }
    out[o] = '\0';
    return o;
}

/* ---- line builder ------------------------------------------------------ */

#define RESERVE 24 /* room kept for ,"truncated":true}\n */

struct jb {
    char *p;
    size_t len, cap;
    int trunc;
};

static void jb_lit(struct jb *b, const char *s, size_t n)
{
    if (b->trunc || b->len + n + RESERVE > b->cap) {
        b->trunc = 1;
        return;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

/* s[0..n) escaped at o, which has room for 6 * n + 1 bytes; returns the
 * end. The plain words and then the plain bytes are copied here, without
 * a call; px_json_escape takes over at the first byte that needs it. */
static char *json_put(char *o, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;

    while (i + 16 <= n && plain16(u + i)) {
        memcpy(o + i, s + i, 16);
        i += 16;
    }
    /* a tail after plain blocks: the value's last 16 bytes, which overlap
     * the blocks before it (the same bytes, written again) */
    if (i < n && n - i < 16 && n >= 16 && plain16(u + n - 16)) {
        memcpy(o + n - 16, s + n - 16, 16);
        return o + n;
    }
    while (i + 8 <= n && plain8(u + i)) {
        memcpy(o + i, s + i, 8);
        i += 8;
    }
    /* a tail under a word after plain words: the value's last word, which
     * overlaps the words before it (the same bytes, written again) */
    if (i < n && n - i < 8 && n >= 8 && plain8(u + n - 8)) {
        memcpy(o + n - 8, s + n - 8, 8);
        return o + n;
    }
    while (i < n && json_plain[u[i]]) {
        o[i] = s[i];
        i++;
    }
    if (i == n)
        return o + n;
    return o + i + px_json_escape(o + i, 6 * (n - i) + 1, s + i, n - i);
}

/* A JSON string (cut to fit the line), or null. */
static void jb_strn(struct jb *b, const char *s, size_t n)
{
    size_t room;

    if (s == NULL) {
        jb_lit(b, "null", 4);
        return;
    }
    /* Most values are short and fit whatever their escaping (6 bytes per
     * byte at most): no cut to consider, and json_put copies what is plain
     * without a call. */
    if (!b->trunc && n <= 256 && b->len + 2 + 6 * n + RESERVE <= b->cap) {
        char *o = b->p + b->len;
        *o++ = '"';
        o = json_put(o, s, n);
        *o++ = '"';
        b->len = (size_t)(o - b->p);
        return;
    }
    jb_lit(b, "\"", 1);
    if (b->trunc)
        return;
    /* room for the escaped value and px_json_escape's NUL, which the
     * closing quote then takes: at most PX_LOG_VALUE_MAX escaped bytes */
    room = b->cap - b->len - RESERVE; /* >= 0: jb_lit left RESERVE free */
    if (room > PX_LOG_VALUE_MAX + 1)
        room = PX_LOG_VALUE_MAX + 1;
    if (room > 1)
        b->len += px_json_escape(b->p + b->len, room, s, n);
    jb_lit(b, "\"", 1);
}

/* Keys are picket's own names ([a-z_]), written without escaping; n is
 * their length. Every line begins with its time (jb_open), so a key always
 * follows another field and takes a comma. */
static void jb_key(struct jb *b, const char *key, size_t n)
{
    if (b->trunc || b->len + n + 4 + RESERVE > b->cap) {
        b->trunc = 1;
        return;
    }
    b->p[b->len++] = ',';
    b->p[b->len++] = '"';
    memcpy(b->p + b->len, key, n);
    b->len += n;
    b->p[b->len++] = '"';
    b->p[b->len++] = ':';
}

/* A field is written whole or not at all, so the line stays valid JSON.
 * This one is for keys known at run time (px_log's pairs); literal keys
 * take the jb_field_* macros below. */
static void jb_field_strk(struct jb *b, const char *key, size_t klen, const char *val)
{
    size_t n = val != NULL ? strlen(val) : 0;
    size_t save = b->len;
    jb_key(b, key, klen);
    jb_strn(b, val, n);
    if (b->trunc)
        b->len = save;
}

/* Fields with a literal key (the jb_field_* macros): kp[0..kn) is the key
 * with its punctuation, `,"key":`, made by the compiler, so a field is one
 * copy of it and its value with one bound check when the value is short
 * enough to fit whatever its escaping. Every line begins with its time
 * (jb_open), so each of these fields follows another and keeps its comma,
 * and the copy of its key is a few moves of a constant length. Otherwise
 * (long, or near the end of the line) the same steps as the fields above:
 * whole or not at all, a long value cut to fit. */

/* Inlined where each field is written, so the key's length is a constant
 * there and its copy a few moves. */
#if defined(__GNUC__)
#define JB_INLINE static inline __attribute__((always_inline))
#else
#define JB_INLINE static inline
#endif

JB_INLINE void jb_fstrn(struct jb *b, const char *kp, size_t kn, const char *val, size_t n)
{
    size_t save = b->len;

    if (val != NULL && !b->trunc && n <= 256 && b->len + kn + 2 + 6 * n + RESERVE <= b->cap) {
        char *o = b->p + b->len;
        memcpy(o, kp, kn);
        o += kn;
        *o++ = '"';
        o = json_put(o, val, n);
        *o++ = '"';
        b->len = (size_t)(o - b->p);
        return;
    }
    jb_lit(b, kp, kn);
    jb_strn(b, val, n);
    if (b->trunc)
        b->len = save;
}

JB_INLINE void jb_fstr(struct jb *b, const char *kp, size_t kn, const char *val)
{
    jb_fstrn(b, kp, kn, val, val != NULL ? strlen(val) : 0);
}

JB_INLINE void jb_fraw(struct jb *b, const char *kp, size_t kn, const char *raw, size_t n)
{
    size_t save = b->len;

    if (!b->trunc && b->len + kn + n + RESERVE <= b->cap) { /* both jb_lit()s below fit */
        memcpy(b->p + b->len, kp, kn);
        memcpy(b->p + b->len + kn, raw, n);
        b->len += kn + n;
        return;
    }
    jb_lit(b, kp, kn);
    jb_lit(b, raw, n);
    if (b->trunc)
        b->len = save;
}

JB_INLINE void jb_fi64(struct jb *b, const char *kp, size_t kn, int64_t v, int null_if_negative)
{
    char num[24];
    size_t n;

    if (null_if_negative && v < 0) {
        memcpy(num, "null", 5);
        n = 4;
    } else {
        n = px_fmt_i64(num, v);
    }
    jb_fraw(b, kp, kn, num, n);
}

/* `,"key":` from a literal key (one that is not a literal does not compile) */
#define JB_KEY(key) ",\"" key "\":", sizeof(",\"" key "\":") - 1
#define jb_field_str(b, key, val) jb_fstr((b), JB_KEY(key), (val))
#define jb_field_strn(b, key, val, n) jb_fstrn((b), JB_KEY(key), (val), (n))
#define jb_field_raw(b, key, raw) jb_fraw((b), JB_KEY(key), (raw), strlen(raw))
#define jb_field_i64(b, key, v, nn) jb_fi64((b), JB_KEY(key), (v), (nn))

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void put2(char *p, int v)
{
    p[0] = (char)('0' + v / 10 % 10);
    p[1] = (char)('0' + v % 10);
}

char *px_log_fmt_ts(int64_t ms, char *buf, size_t buflen)
{
    /* "YYYY-MM-DDTHH:MM:SS." changes once a second: each thread keeps the
     * last one it formatted, so a busy worker calls gmtime_r once a second
     * and formats only the milliseconds for every line. */
    static _Thread_local int64_t tl_sec = -1;
    static _Thread_local char tl_prefix[21];
    int64_t sec = ms / 1000;
    int msec = (int)(ms % 1000);

    if (buflen < 25 || ms < 0) {
        snprintf(buf, buflen, "1970-01-01T00:00:00.000Z");
        return buf;
    }
    if (sec != tl_sec) {
        time_t t = (time_t)sec;
        struct tm tm;
        int year;
        if (gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 > 9999) {
            snprintf(buf, buflen, "1970-01-01T00:00:00.000Z");
            return buf;
        }
        year = tm.tm_year + 1900;
        put2(tl_prefix, year / 100);
        put2(tl_prefix + 2, year % 100);
        tl_prefix[4] = '-';
        put2(tl_prefix + 5, tm.tm_mon + 1);
        tl_prefix[7] = '-';
        put2(tl_prefix + 8, tm.tm_mday);
        tl_prefix[10] = 'T';
        put2(tl_prefix + 11, tm.tm_hour);
        tl_prefix[13] = ':';
        put2(tl_prefix + 14, tm.tm_min);
        tl_prefix[16] = ':';
        put2(tl_prefix + 17, tm.tm_sec);
        tl_prefix[19] = '.';
        tl_prefix[20] = '\0';
        tl_sec = sec;
    }
    memcpy(buf, tl_prefix, 20);
    buf[20] = (char)('0' + msec / 100);
    put2(buf + 21, msec % 100);
    buf[23] = 'Z';
    buf[24] = '\0';
    return buf;
}

static void jb_open(struct jb *b, int64_t ts_ms)
{
    char ts[40];
    size_t n;
    b->p = tl_line;
    b->len = 0;
    b->cap = sizeof(tl_line);
    b->trunc = 0;
    /* the first field, always: the time is digits and "-T:.Z" only,
     * written quoted without a scan */
    memcpy(ts, "{\"ts\":\"", 7);
    px_log_fmt_ts(ts_ms != 0 ? ts_ms : now_ms(), ts + 7, sizeof(ts) - 8);
    n = strlen(ts);
    ts[n++] = '"';
    jb_lit(b, ts, n);
}

static void jb_close(struct jb *b)
{
    if (b->trunc) {
        memcpy(b->p + b->len, ",\"truncated\":true", 17);
        b->len += 17;
    }
    memcpy(b->p + b->len, "}\n", 2);
    b->len += 2;
}

/* ---- writing ----------------------------------------------------------- */

static void count_error(int which, unsigned n)
{
    /* Rare path: the registry lookup takes a mutex, which is fine here and
     * keeps log.c free of pointers that px_metrics_shutdown() would free. */
    px_counter_add(px_counter_get("picket_log_write_errors_total",
                                  "Log lines dropped because writing them failed (other than a "
                                  "full pipe).",
                                  sink_label[which]),
                   n);
}

static void count_dropped(int which, unsigned n)
{
    px_counter_add(px_counter_get("picket_log_dropped_total",
                                  "Log records dropped whole: a full pipe or a failed write.",
                                  sink_label[which]),
                   n);
    if (which == SINK_AUDIT)
        px_counter_add(px_counter_get("picket_audit_write_failures_total",
                                      "Audit records that could not be written", ""),
                       n);
}

enum { W_DONE, W_BLOCKED, W_ERROR };

static int would_block(int e)
{
    return e == EAGAIN || e == EWOULDBLOCK;
}

/* Writes what is left of the channel's cut record. Caller holds ch->mu. */
static int flush_pending(struct chan *ch, int fd)
{
    while (ch->off < ch->len) {
        ssize_t n = write(fd, ch->pending + ch->off, ch->len - ch->off);
        if (n > 0) {
            ch->off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && would_block(errno))
            return W_BLOCKED;
        ch->off = ch->len = 0; /* the reader is gone: the rest can never be written */
        return W_ERROR;
    }
    ch->off = ch->len = 0;
    return W_DONE;
}

/* One attempt on a pipe or socket, under ch->mu: the channel's cut record
 * first, then buf. W_DONE: written, or started and its tail kept in the
 * channel; W_BLOCKED: nothing of buf written, the pipe is full; W_ERROR:
 * nothing of buf written, the write failed. */
static int stream_try(struct chan *ch, int fd, const char *buf, size_t len)
{
    size_t off = 0;
    int r = flush_pending(ch, fd);

    if (r != W_DONE)
        return r == W_BLOCKED ? W_BLOCKED : W_ERROR;
    while (off < len) {
        ssize_t n = write(fd, buf + off, len - off);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (off == 0)
            return n < 0 && would_block(errno) ? W_BLOCKED : W_ERROR;
        if (n < 0 && would_block(errno)) {
            /* the pipe took a part: the rest goes before anything else */
            memcpy(ch->pending, buf + off, len - off);
            ch->off = 0;
            ch->len = len - off;
        }
        /* else: the reader went away mid-record; nobody sees the cut */
        return W_DONE;
    }
    return W_DONE;
}

static int write_stream(int which, int fd, const char *buf, size_t len)
{
    struct chan *ch = &g_chan[atomic_load_explicit(&g_sink[which].chan, memory_order_acquire)];
    int r = W_BLOCKED;

    for (int waits = 0;; waits++) {
        pthread_mutex_lock(&ch->mu);
        r = stream_try(ch, fd, buf, len);
        pthread_mutex_unlock(&ch->mu);
        if (r != W_BLOCKED || waits == 2)
            break;
        /* A full pipe: give the reader a moment (not holding the lock). */
        {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            (void)poll(&pfd, 1, 5);
        }
    }
    if (r == W_DONE)
        return 0;
    if (r == W_ERROR)
        count_error(which, 1);
    count_dropped(which, 1);
    return -1;
}

/* buf holds nrec whole records (a batch, or one). */
static int write_line(int which, const char *buf, size_t len, unsigned nrec)
{
    int fd = atomic_load_explicit(&g_sink[which].fd, memory_order_acquire);
    int waits = 0;
    size_t off = 0;

    if (atomic_load_explicit(&g_sink[which].stream, memory_order_acquire))
        return write_stream(which, fd, buf, len);
    while (off < len) {
        ssize_t n = write(fd, buf + off, len - off);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && would_block(errno) && waits < 2) {
            /* not a pipe or socket, yet non-blocking (a character device) */
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            (void)poll(&pfd, 1, 5);
            waits++;
            continue;
        }
        count_error(which, nrec);
        count_dropped(which, nrec);
        return -1;
    }
    return 0;
}

/* ---- batches ------------------------------------------------------------ */

/* A worker thread's access and audit records for regular files, written
 * once per event-loop turn (px_log_thread_event). */
struct batch {
    char *buf; /* PX_LOG_BATCH bytes, made at first use */
    size_t len;
    unsigned n; /* records in buf */
};
static _Thread_local struct batch tl_batch[NSINKS];
static _Thread_local struct event *tl_flush_ev;

static void batch_flush(int which)
{
    struct batch *b = &tl_batch[which];
    if (b->len == 0)
        return;
    (void)write_line(which, b->buf, b->len, b->n);
    b->len = 0;
    b->n = 0;
}

void px_log_batch_flush(void)
{
    for (int i = 0; i < NSINKS; i++)
        batch_flush(i);
}

void px_log_thread_event(struct event *ev)
{
    px_log_batch_flush();
    if (ev == NULL) {
        for (int i = 0; i < NSINKS; i++) {
            free(tl_batch[i].buf);
            tl_batch[i].buf = NULL;
        }
    }
    tl_flush_ev = ev;
}

/* A record of a sink: into this thread's batch when it has one and the
 * sink is a regular file (pipes keep their record-at-a-time rules), else
 * written now. 0 when written or batched. */
static int put_record(int which, const char *p, size_t len)
{
    struct batch *b = &tl_batch[which];
    if (tl_flush_ev == NULL || len > PX_LOG_BATCH ||
        atomic_load_explicit(&g_sink[which].stream, memory_order_acquire))
        return write_line(which, p, len, 1);
    if (b->buf == NULL && (b->buf = malloc(PX_LOG_BATCH)) == NULL)
        return write_line(which, p, len, 1);
    if (b->len + len > PX_LOG_BATCH)
        batch_flush(which);
    if (b->len == 0)
        event_active(tl_flush_ev, EV_TIMEOUT, 0); /* runs later in this turn */
    memcpy(b->buf + b->len, p, len);
    b->len += len;
    b->n++;
    return 0;
}

void px_log_flush(int wait_ms)
{
    for (int i = 0; i < NSINKS; i++) {
        struct chan *ch = &g_chan[i];
        int fd = -1;
        for (int k = 0; k < NSINKS; k++)
            if (atomic_load(&g_sink[k].chan) == i && atomic_load(&g_sink[k].stream))
                fd = atomic_load(&g_sink[k].fd);
        if (fd < 0)
            continue;
        for (int waited = 0;; waited += 5) {
            int r;
            pthread_mutex_lock(&ch->mu);
            r = flush_pending(ch, fd);
            pthread_mutex_unlock(&ch->mu);
            if (r != W_BLOCKED || waited >= wait_ms)
                break;
            {
                struct pollfd pfd = {.fd = fd, .events = POLLOUT};
                (void)poll(&pfd, 1, 5);
            }
        }
    }
}

static int sink_on(int which)
{
    return atomic_load_explicit(&g_sink[which].on, memory_order_acquire);
}

int px_log_enabled(int level)
{
    return level >= atomic_load_explicit(&g_level, memory_order_relaxed);
}

static const char *lvl(int level)
{
    return level_name[level < PX_LOG_DEBUG ? 0 : level > PX_LOG_ERROR ? 3 : level];
}

void px_log(int level, const char *event, ...)
{
    struct jb b;
    va_list ap;

    if (!px_log_enabled(level))
        return;
    jb_open(&b, 0);
    jb_field_str(&b, "level", lvl(level));
    jb_field_str(&b, "event", event);
    va_start(ap, event);
    for (;;) {
        const char *k = va_arg(ap, const char *), *v;
        if (k == NULL)
            break;
        v = va_arg(ap, const char *);
        jb_field_strk(&b, k, strlen(k), v);
    }
    va_end(ap);
    jb_close(&b);
    (void)write_line(SINK_ERROR, b.p, b.len, 1);
}

void px_logf(int level, const char *event, const char *fmt, ...)
{
    va_list ap;

    if (!px_log_enabled(level))
        return;
    va_start(ap, fmt);
    vsnprintf(tl_msg, sizeof(tl_msg), fmt, ap);
    va_end(ap);
    px_log(level, event, "msg", tl_msg, (const char *)NULL);
}

void px_log_access(const struct px_access_rec *r)
{
    struct jb b;
    char dur[40];
    int64_t us = r->duration_us < 0 ? 0 : r->duration_us;

    if (!sink_on(SINK_ACCESS))
        return;
    jb_open(&b, r->ts_ms);
    jb_field_str(&b, "listener", r->listener);
    jb_field_str(&b, "request_id", r->request_id);
    jb_field_str(&b, "peer", r->peer);
    jb_field_str(&b, "method", r->method);
    jb_field_str(&b, "authority", r->authority);
    jb_field_str(&b, "path", r->path);
    jb_field_str(&b, "proto", r->proto);
    if (r->upgrade != NULL)
        jb_field_str(&b, "upgrade", r->upgrade);
    jb_field_i64(&b, "status", r->status, 0);
    px_fmt_u64(dur, r->bytes_in);
    jb_field_raw(&b, "bytes_in", dur);
    px_fmt_u64(dur, r->bytes_out);
    jb_field_raw(&b, "bytes_out", dur);
    {
        size_t n = px_fmt_i64(dur, us / 1000);
        int frac = (int)(us % 1000);
        dur[n] = '.';
        dur[n + 1] = (char)('0' + frac / 100);
        put2(dur + n + 2, frac % 100);
        dur[n + 4] = '\0';
    }
    jb_field_raw(&b, "duration_ms", dur);
    jb_field_str(&b, "upstream", r->upstream);
    jb_field_str(&b, "decision", r->decision);
    jb_field_str(&b, "rule", r->rule);
    if (r->reason != NULL)
        jb_field_str(&b, "reason", r->reason);
    jb_close(&b);
    (void)put_record(SINK_ACCESS, b.p, b.len);
}

int px_log_audit(const struct px_audit_rec *r)
{
    struct jb b;

    if (!sink_on(SINK_AUDIT))
        return 0;
    jb_open(&b, r->ts_ms);
    jb_field_str(&b, "node", r->node);
    jb_field_str(&b, "decision", r->decision);
    jb_field_str(&b, "mode", r->mode);
    jb_field_str(&b, "rule", r->rule);
    jb_field_str(&b, "decided_by", r->decided_by);
    jb_field_str(&b, "dispatch_node", r->dispatch_node);
    jb_field_i64(&b, "bundle_revision", r->bundle_revision, 1);
    jb_field_i64(&b, "bundle_age_ms", r->bundle_age_ms, 1);
    jb_field_str(&b, "peer", r->peer);
    jb_field_str(&b, "method", r->method);
    jb_field_str(&b, "authority", r->authority);
    jb_field_strn(&b, "host", r->host, r->host_len);
    jb_field_strn(&b, "path", r->path, r->path != NULL ? r->path_len : 0);
    jb_field_strn(&b, "query", r->query, r->query_len);
    jb_field_i64(&b, "status", r->status, 0);
    jb_field_str(&b, "request_id", r->request_id);
    if (r->protocol != NULL)
        jb_field_str(&b, "protocol", r->protocol);
    if (r->reason != NULL)
        jb_field_str(&b, "reason", r->reason);
    if (r->cache_age_ms >= 0)
        jb_field_i64(&b, "cache_age_ms", r->cache_age_ms, 0);
    jb_close(&b);
    return put_record(SINK_AUDIT, b.p, b.len);
}

/* ---- opening and swapping ---------------------------------------------- */

/* Pipes and sockets are made non-blocking so a stalled reader costs a
 * dropped line, not a stalled worker. Regular files and ttys are left as
 * they are. This changes the shared file description: stdout/stderr of the
 * whole process become non-blocking, which is fine since picket writes to
 * them only through this file. */
static int nonblock_if_stream(int fd)
{
    struct stat st;
    int fl;

    if (fstat(fd, &st) != 0 || !(S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)))
        return 0;
    if ((fl = fcntl(fd, F_GETFL)) >= 0)
        (void)fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    return 1;
}

/* Sinks on the same pipe or socket share the first one's channel. */
static void assign_channels(void)
{
    struct stat st[NSINKS];
    int ok[NSINKS];

    for (int i = 0; i < NSINKS; i++) {
        int fd = atomic_load(&g_sink[i].fd);
        ok[i] = fd >= 0 && atomic_load(&g_sink[i].stream) && fstat(fd, &st[i]) == 0;
    }
    for (int i = 0; i < NSINKS; i++) {
        int c = i;
        for (int j = 0; j < i && ok[i]; j++) {
            if (ok[j] && st[j].st_dev == st[i].st_dev && st[j].st_ino == st[i].st_ino) {
                c = atomic_load(&g_sink[j].chan);
                break;
            }
        }
        atomic_store(&g_sink[i].chan, c);
    }
}

static int open_sink(const char *path, int *fd, char *err, size_t errlen)
{
    *fd = -1;
    if (path == NULL)
        return 0;
    if (strcmp(path, "-") == 0) {
        *fd = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
        if (*fd >= 0)
            (void)nonblock_if_stream(*fd);
    } else {
        *fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
    }
    if (*fd < 0) {
        snprintf(err, errlen, "%s: %s", strcmp(path, "-") == 0 ? "stdout" : path,
                 strerror(errno));
        return -1;
    }
    return 0;
}

/* Points sink `which` at newfd (dup3 onto its descriptor number), or at
 * /dev/null when newfd < 0. Done under the sink's channel lock, so no
 * record is half-written across the swap; the tail of a cut record still
 * in the channel is written first (waiting up to 100 ms for the reader), or
 * dropped: written to the new file it would start it with half a line. */
static void install(int which, int newfd)
{
    struct sink *s = &g_sink[which];
    struct chan *ch = &g_chan[atomic_load(&s->chan)];
    int cur = atomic_load(&s->fd);

    pthread_mutex_lock(&ch->mu);
    if (cur >= 0 && atomic_load(&s->stream)) {
        int r;
        for (int waited = 0; (r = flush_pending(ch, cur)) == W_BLOCKED && waited < 100;
             waited += 5) {
            struct pollfd pfd = {.fd = cur, .events = POLLOUT};
            (void)poll(&pfd, 1, 5);
        }
        if (r != W_DONE) {
            ch->off = ch->len = 0;
            count_dropped(which, 1);
        }
    }
    if (newfd < 0) {
        atomic_store(&s->on, 0);
        atomic_store(&s->stream, 0);
        if (cur >= 0) {
            int nul = open("/dev/null", O_WRONLY | O_CLOEXEC);
            if (nul >= 0) {
                (void)dup3(nul, cur, O_CLOEXEC);
                close(nul);
            }
        }
        pthread_mutex_unlock(&ch->mu);
        return;
    }
    if (cur < 0) {
        atomic_store(&s->fd, newfd);
        cur = newfd;
    } else {
        (void)dup3(newfd, cur, O_CLOEXEC);
        close(newfd);
    }
    atomic_store(&s->stream, nonblock_if_stream(cur));
    atomic_store(&s->on, 1);
    pthread_mutex_unlock(&ch->mu);
}

int px_log_reopen(int level, const char *access_path, const char *audit_path, char *err,
                  size_t errlen)
{
    int afd = -1, ufd = -1;

    if (level < PX_LOG_DEBUG || level > PX_LOG_ERROR) {
        snprintf(err, errlen, "bad log level %d", level);
        return -1;
    }
    if (open_sink(access_path, &afd, err, errlen) < 0)
        return -1;
    if (open_sink(audit_path, &ufd, err, errlen) < 0) {
        if (afd >= 0)
            close(afd);
        return -1;
    }
    atomic_store(&g_sink[SINK_ERROR].stream, nonblock_if_stream(STDERR_FILENO));
    install(SINK_ACCESS, afd);
    install(SINK_AUDIT, ufd);
    assign_channels();
    atomic_store(&g_level, level);
    return 0;
}

int px_log_init(int level, const char *access_path, const char *audit_path, char *err,
                size_t errlen)
{
    return px_log_reopen(level, access_path, audit_path, err, errlen);
}

void px_log_shutdown(void)
{
    px_log_flush(100);
    for (int i = SINK_ACCESS; i < NSINKS; i++) {
        int fd = atomic_exchange(&g_sink[i].fd, -1);
        atomic_store(&g_sink[i].on, 0);
        if (fd >= 0)
            close(fd);
    }
}
