/*
 * log.h - process-wide JSON-lines logs (DESIGN.md "Logs and metrics").
 *
 * Three sinks: the operational log (stderr), the access log and the audit
 * log (a path, "-" for stdout, or off). Each line is one JSON object,
 * formatted into a per-thread buffer and written with one write(2), so
 * workers never take a lock to log. Every string goes through
 * px_json_escape(); peer data is never a format string.
 *
 * A record is written whole or dropped whole, never cut: on a full
 * non-blocking pipe (stdout in a container) a record the pipe has no room
 * for is dropped after at most two 5 ms waits, never forever; one the pipe
 * takes only in part (larger than PIPE_BUF, or any on a socket) has its
 * tail written before any other record, and records that arrive while a
 * tail is still waiting are dropped. Writes to one pipe are serialized, so
 * large records from several threads, or from sinks sharing the pipe
 * (stdout and stderr joined), never interleave. Every record dropped is
 * counted in picket_log_dropped_total{log="access|audit|error"}; those lost
 * to an error other than a full pipe (ENOSPC, EPIPE...) also in
 * picket_log_write_errors_total{log}. Lines longer than PX_LOG_LINE_MAX are
 * truncated per value, and stay valid JSON.
 */
#ifndef PX_LOG_H
#define PX_LOG_H

#include <stddef.h>
#include <stdint.h>

enum { PX_LOG_DEBUG = 0, PX_LOG_INFO = 1, PX_LOG_WARN = 2, PX_LOG_ERROR = 3 };

#define PX_LOG_LINE_MAX 32768 /* bytes per line, including the newline */
#define PX_LOG_VALUE_MAX 8192 /* escaped bytes per string value (a default-limit target fits) */

/* Opens the sinks. level: PX_LOG_DEBUG..PX_LOG_ERROR (lines below it are
 * skipped). access_path / audit_path: a file (opened O_APPEND|O_CREAT,
 * mode 0640), "-" for stdout, or NULL to disable. Stdout and stderr are set
 * non-blocking when they are pipes or sockets (so a stuck log reader cannot
 * stall a worker). Returns 0, or -1 with "path: reason" in err (nothing is
 * changed then). Call from the main thread before workers start; calling it
 * again acts like px_log_reopen(). */
int px_log_init(int level, const char *access_path, const char *audit_path, char *err,
                size_t errlen);

/* For SIGHUP / config reload: opens the new files first, then swaps them in
 * under the same descriptor numbers (dup2), so a worker writing at that
 * moment writes either to the old or to the new file, never to a closed or
 * reused descriptor. On failure returns -1 with err set and keeps the old
 * sinks. Call from the control thread. */
int px_log_reopen(int level, const char *access_path, const char *audit_path, char *err,
                  size_t errlen);

/* Per-thread batching of access and audit records (log.c): a worker gives
 * an event of its base (callback: px_log_batch_flush()) that log.c
 * activates when the thread's batch gets its first record, so the batch
 * is written later in the same loop turn. NULL flushes and stops batching
 * for the thread (at worker exit). */
#define PX_LOG_BATCH (64 * 1024)
struct event;
void px_log_thread_event(struct event *ev);
/* Writes this thread's batched records now. */
void px_log_batch_flush(void);

/* Closes the access and audit files, after px_log_flush(100). No logging
 * may run concurrently. Logging after this goes to stderr only
 * (access/audit dropped). */
void px_log_shutdown(void);

/* Writes the tail of a record a pipe took only in part, waiting up to
 * wait_ms for the reader (0: one try). Until it is written, new records to
 * that pipe are dropped; the next record written also flushes it, so this
 * is for quiet times (a periodic timer, exit). Any thread. */
void px_log_flush(int wait_ms);

/* 1 if lines of `level` are written. Any thread. */
int px_log_enabled(int level);

/* Writes {"ts":...,"level":...,"event":event,k1:v1,...} to stderr. The
 * arguments after event are const char * key/value pairs ending with a
 * NULL key; a NULL value is written as null. Any thread. */
void px_log(int level, const char *event, ...);

/* Same with one "msg" field holding the printf-formatted text. fmt must be
 * a literal; put peer data in the arguments. Any thread. */
void px_logf(int level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* One access-log line. Borrowed strings; NULL strings are written as null.
 * ts_ms 0 = now. Keys in this order: ts, listener, request_id, peer,
 * method, authority, path, proto, status, bytes_in, bytes_out, duration_ms
 * (3 decimals), upstream, decision, rule, then reason (when not NULL: why
 * picket answered itself or the exchange failed). */
struct px_access_rec {
    int64_t ts_ms;
    const char *listener, *request_id, *peer, *method, *authority, *path, *upstream, *proto;
    int status;
    uint64_t bytes_in, bytes_out;
    int64_t duration_us;
    const char *decision, *rule;
    const char *reason;
    const char *upgrade; /* "websocket" for a WebSocket opening request; NULL: not written */
};

/* Any thread; a no-op when the access log is off. */
void px_log_access(const struct px_access_rec *r);

/* One audit record. Keys in order: ts, node, decision, mode, rule,
 * decided_by, dispatch_node, bundle_revision, bundle_age_ms, peer, method,
 * authority, host, path, query, status, request_id, protocol (only for
 * opaque TCP, "tcp", and WebSocket, "websocket"), then reason (when not
 * NULL) and
 * cache_age_ms (when >= 0). bundle_revision / bundle_age_ms < 0 (no
 * bundle) are written as null. ts_ms 0 = now. */
struct px_audit_rec {
    int64_t ts_ms;
    const char *node, *decision, *mode, *rule, *decided_by, *dispatch_node, *peer, *method,
        *authority, *request_id, *reason;
    const char *host, *path, *query; /* with lengths: they point into the request's target */
    size_t host_len, path_len, query_len;
    int64_t bundle_revision, bundle_age_ms, cache_age_ms;
    int status;
    const char *protocol; /* "tcp" (opaque TCP), "websocket"; NULL (not written): HTTP */
};

/* Any thread. Returns 0 when written (or the audit log is off), -1 when
 * the write failed (also counted in picket_log_write_errors_total). */
int px_log_audit(const struct px_audit_rec *r);

/* Escapes in[0..inlen) as the inside of a JSON string into out (outlen
 * bytes, always NUL-terminated when outlen > 0). '"' and '\\' get a
 * backslash; control characters, DEL, U+2028/U+2029 become \u00XX/\u20XX;
 * bytes that are not valid UTF-8 (bad sequences, overlongs, surrogates,
 * > U+10FFFF) become \u00XX with the byte's value. Output that does not fit
 * is cut at a character boundary, never inside an escape. Returns the
 * number of bytes written (excluding the NUL). Pure; any thread. */
size_t px_json_escape(char *out, size_t outlen, const char *in, size_t inlen);

/* Formats a wall-clock time in ms as "2026-11-23T11:20:41.123Z" into buf
 * (at least 25 bytes). Returns buf. Any thread (each keeps the last second
 * it formatted). */
char *px_log_fmt_ts(int64_t ms, char *buf, size_t buflen);

#endif
