/*
 * policy.h - public API of the policy library (DESIGN.md "Policy bundles").
 *
 * Three layers, each usable on its own:
 *
 *   1. path normalization: a pure function over an HTTP :path;
 *   2. bundles: parse and validate a policy bundle (JSON) into an immutable
 *      struct policy_bundle;
 *   3. the engine: compile a bundle into an indexed, immutable evaluator and
 *      evaluate requests against it without allocating.
 *
 * The library never logs, prints, exits or reads files: every function takes
 * bytes and returns a status. Status codes are 0 for success and negative
 * values in -200..-299 for failure; detail goes into a caller-owned
 * `char *err, size_t errlen` buffer (one line, no trailing period; bundle
 * errors start with "line:col: " so the caller can prefix a file name).
 * `err` may be NULL when errlen is 0.
 *
 * Threads: all functions are reentrant. Bundles and engines are immutable
 * once built, so any number of threads may read them at once; freeing must
 * not race with use (proxy/ refcounts its snapshots).
 */
#ifndef POLICY_H
#define POLICY_H

#include <stddef.h>
#include <stdint.h>

/* ---- status codes ------------------------------------------------------ */

enum policy_status {
    POLICY_OK = 0,
    POLICY_ERR_NOMEM = -200,     /* allocation failed */
    POLICY_ERR_INVAL = -201,     /* bad argument (programmer error) */
    POLICY_ERR_TOO_LARGE = -202, /* bundle over POLICY_BUNDLE_MAX_BYTES or the token budget */
    POLICY_ERR_JSON = -203,      /* not well-formed JSON */
    POLICY_ERR_BUNDLE = -204,    /* well-formed JSON, but not a valid bundle */
    POLICY_ERR_NOSPACE = -205,   /* reserved: an output buffer is too small */

    /* Path refusals (policy_path_normalize). A proxy answers these with 400.
     * Stable: append new values at the end. */
    POLICY_PATH_NOT_ABSOLUTE = -220, /* empty, or does not start with '/' */
    POLICY_PATH_FRAGMENT = -221,     /* raw '#' */
    POLICY_PATH_NUL = -222,          /* raw NUL byte */
    POLICY_PATH_CONTROL = -223,      /* raw control character (0x01-0x1f, 0x7f) */
    POLICY_PATH_BACKSLASH = -224,    /* raw '\' in the path part */
    POLICY_PATH_ENC_SLASH = -225,    /* %2F / %2f */
    POLICY_PATH_ENC_BACKSLASH = -226, /* %5C / %5c */
    POLICY_PATH_ENC_NUL = -227,      /* %00 */
    POLICY_PATH_BAD_ESCAPE = -228,   /* '%' not followed by two hex digits */
    POLICY_PATH_TOO_LONG = -229      /* result does not fit the output buffer */
};

/* Static text for any status above ("encoded '/' in path"); never NULL.
 * Unknown codes give "unknown policy error". Any thread. */
const char *policy_strerror(int rc);

/* ---- 1. path normalization ----------------------------------------------- */

/* Normalizes an HTTP :path in origin form ("/a/b?q"), for matching and for
 * forwarding (the normalized path is what goes upstream).
 *
 * `in` (inlen bytes, not NUL-terminated; borrowed for the call) is split at
 * the first '?'. The path part is checked and normalized:
 *   - it must start with '/';
 *   - refused: raw '#', NUL, control characters, raw '\', the escapes %2F
 *     and %5C (any case), %00, and '%' not followed by two hex digits;
 *   - percent-escapes of unreserved characters (ALPHA DIGIT - . _ ~) are
 *     decoded; the hex of the remaining escapes is uppercased; raw bytes
 *     that may not appear in a path (space, '"', '<', '>', '[', ']', '^',
 *     '`', '{', '|', '}', and bytes >= 0x80) are percent-encoded;
 *   - empty segments are merged ("//" -> "/"), then "." and ".." segments
 *     are removed (RFC 3986 5.2.4; ".." at the root stays at the root). A
 *     path whose last segment was empty, "." or ".." keeps a trailing '/'.
 * The query ("?..." up to the end) is copied untouched, but a '#' or a
 * control character in it is still refused.
 *
 * Output: out (outcap bytes, caller-owned) receives the normalized path, the
 * query, and a terminating NUL. *outlen (may be NULL) gets the total length
 * without the NUL and *pathlen (may be NULL) the length of the path part,
 * which is what rules match. outcap >= 3 * inlen + 2 always suffices; a
 * smaller buffer must also hold the path before dot segments are removed
 * (segments are written, then dropped when a ".." follows), else
 * POLICY_PATH_TOO_LONG even if the final result would fit.
 *
 * Idempotent: normalizing the output again yields the same bytes.
 * Returns 0 or one of the POLICY_PATH_* codes (name: policy_path_error_name).
 * Pure; any thread. */
int policy_path_normalize(const char *in, size_t inlen, char *out, size_t outcap, size_t *outlen,
                          size_t *pathlen);

/* Stable short name of a path refusal, for logs and metric labels:
 * "not_absolute", "fragment", "nul", "control_char", "backslash",
 * "encoded_slash", "encoded_backslash", "encoded_nul", "bad_escape",
 * "too_long"; "ok" for 0; "unknown" otherwise. Static string; any thread. */
const char *policy_path_error_name(int rc);

/* ---- 2. bundles ------------------------------------------------------------ */

/* Bundles larger than this are refused before parsing. */
#define POLICY_BUNDLE_MAX_BYTES (16u * 1024u * 1024u)
/* jsmn token budget for a bundle (~20 bytes each): bounds parse memory. */
#define POLICY_BUNDLE_MAX_TOKENS (2 * 1024 * 1024)
/* Most entries in one rule's from/hosts/methods/paths/headers list. */
#define POLICY_RULE_MAX_LIST 4096
/* Longest rule id, dispatch target, SPIFFE ID, host, method, header name,
 * header value or path pattern, in bytes. */
#define POLICY_MAX_STRING 2048

enum policy_verdict { POLICY_ALLOW = 0, POLICY_DENY = 1, POLICY_DISPATCH = 2 };
enum policy_mode { POLICY_MODE_ENFORCE = 0, POLICY_MODE_AUDIT = 1 };

struct policy_bundle;

/* Parses and validates a bundle (DESIGN.md "Policy bundles").
 *
 * `json` (len bytes, not NUL-terminated) is borrowed for the call only. On
 * success *out is owned by the caller; release with policy_bundle_free().
 * On failure *out is untouched and err holds "line:col: what is wrong",
 * e.g. "7:18: rules[3].paths[1]: '**' must be the last segment (rule
 * \"no-admin\")".
 *
 * Returns 0, POLICY_ERR_TOO_LARGE (over POLICY_BUNDLE_MAX_BYTES or the token
 * budget), POLICY_ERR_JSON (syntax), POLICY_ERR_BUNDLE (unknown key, wrong
 * type, duplicate id, bad pattern, ...), POLICY_ERR_NOMEM or
 * POLICY_ERR_INVAL (NULL arguments). Any thread. */
int policy_bundle_parse(struct policy_bundle **out, const char *json, size_t len, char *err,
                        size_t errlen);

/* NULL is a no-op. */
void policy_bundle_free(struct policy_bundle *b);

/* Accessors. `b` must be non-NULL; any thread. */
int64_t policy_bundle_revision(const struct policy_bundle *b);
/* Unix seconds of "expires_at", or 0 when the bundle has none. */
int64_t policy_bundle_expires_at(const struct policy_bundle *b);
enum policy_mode policy_bundle_mode(const struct policy_bundle *b);
/* The "default" verdict: POLICY_ALLOW or POLICY_DENY. */
enum policy_verdict policy_bundle_default(const struct policy_bundle *b);
size_t policy_bundle_rule_count(const struct policy_bundle *b);
/* Whether rule i (bundle order) names hosts, methods, paths or headers:
 * such a rule never matches an opaque TCP connection, which the proxy
 * evaluates with the caller's identity alone. 1 or 0, with the rule's id
 * in *id (owned by b; id may be NULL); -1 when i is out of range. Pure. */
int policy_bundle_rule_http_only(const struct policy_bundle *b, size_t i, const char **id);
/* Distinct dispatch target names used by the rules, in order of first use.
 * Returns the count; *names (may be NULL) points at an array owned by the
 * bundle, valid until policy_bundle_free(). */
size_t policy_bundle_dispatch_targets(const struct policy_bundle *b, const char *const **names);

/* ---- 3. engine ---------------------------------------------------------------- */

struct policy_engine;

/* One request header; name and value point into the caller's header list. */
struct policy_header {
    const char *name; /* lowercase */
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* A request to evaluate. Every pointer is borrowed for the duration of
 * policy_eval() and none needs a NUL terminator. */
struct policy_request {
    const char *peer; /* SPIFFE ID of the authenticated peer; peer_len 0 = none */
    size_t peer_len;
    const char *method; /* "GET" */
    size_t method_len;
    const char *authority; /* :authority or Host, may carry ":port"; 0 = none */
    size_t authority_len;
    const char *path; /* the path part from policy_path_normalize(), no query */
    size_t path_len;
    const struct policy_header *headers; /* lowercase names; may be NULL if nheaders 0 */
    size_t nheaders;
};

struct policy_decision {
    enum policy_verdict verdict;
    const char *rule_id;  /* owned by the engine; "default" when no rule matched */
    const char *dispatch; /* owned by the engine; target name, NULL unless DISPATCH */
    int is_default;       /* 1 when no rule matched and the bundle default decided */
    int audit;            /* 1 when the bundle is in audit mode: log, never deny */
    int64_t revision;     /* revision of the bundle the engine was built from */
};

/* Compiles a validated bundle into an indexed engine. On success *out is
 * owned by the caller; release with policy_engine_free(). `bundle` is
 * borrowed for the call only: the engine copies what it needs and may
 * outlive it. Returns 0, POLICY_ERR_NOMEM or POLICY_ERR_INVAL (NULL
 * arguments), with detail in err. Any thread. */
int policy_engine_new(struct policy_engine **out, const struct policy_bundle *bundle, char *err,
                      size_t errlen);

/* NULL is a no-op. */
void policy_engine_free(struct policy_engine *eng);

/* Evaluates one request. Precedence: any matching deny rule -> POLICY_DENY;
 * else any matching dispatch rule -> POLICY_DISPATCH; else any matching
 * allow rule -> POLICY_ALLOW; else the bundle default. Among matching rules
 * of the winning action, the first in bundle order is reported.
 *
 * A rule matches when every field it has matches (a missing field matches
 * anything):
 *   from    exact ID; "spiffe://td/p/" + "*" = any ID strictly under
 *           /p; "spiffe://td/" + "*" = any ID in td; "*" = any non-empty
 *           peer
 *   hosts   authority without port, case-insensitive; "*.example.org" =
 *           any name ending in ".example.org"
 *   methods exact, case-sensitive
 *   paths   per segment: literal, "*" = one non-empty segment, final "**" =
 *           zero or more segments
 *   headers every listed header present; for allow/dispatch rules every
 *           occurrence must have a listed value, for deny rules one
 *           occurrence with a listed value suffices (both fail closed)
 *
 * `why` (may be NULL) receives the details; its strings are owned by the
 * engine. Returns the verdict. Does not allocate; cost does not grow with
 * the number of rules. Read-only on eng: any number of threads at once. */
enum policy_verdict policy_eval(const struct policy_engine *eng, const struct policy_request *req,
                                struct policy_decision *why);

/* Revision and rule count of the bundle the engine was built from. */
int64_t policy_engine_revision(const struct policy_engine *eng);
size_t policy_engine_rule_count(const struct policy_engine *eng);

/* "allow", "deny", "dispatch". Static string. */
const char *policy_verdict_name(enum policy_verdict v);

#endif
