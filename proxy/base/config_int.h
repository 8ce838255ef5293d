/*
 * config_int.h - shared by config.c (the section parsers) and
 * config_json.c (the typed getters they are built from) only.
 *
 * Every getter takes the parse in progress, the token of the object that
 * holds the key, and `where`, the key path of that object ("" at the top
 * level, "listeners[0]", ...), used in messages. Optional getters return
 * the value token (> 0) when the key is there, 0 when it is absent (the
 * output keeps its default), -1 after writing the error into p->err.
 */
#ifndef PX_CONFIG_INT_H
#define PX_CONFIG_INT_H

#include <stddef.h>
#include <stdint.h>

#include "certs.h"
#include "config.h"

#define MAX_MAP 64 /* entries in trust_bundles, signing_keys, dispatch */
#define MAX_TOKENS 65536 /* jsmn token budget of one config document */
#define MAX_LISTENERS 64
#define WHERE_MAX 160

struct cp {
    struct certs_json j;
    const char *name; /* file name for messages */
    const char *dir;  /* base for relative paths, NULL = leave relative */
    char *err;
    size_t errlen;
    struct px_config *cfg;
    int identity_tok; /* the identity object, or 0 (the root) */
};

/* ---- errors (all return -1) ---------------------------------------------- */

/* "name:line:col: " (of token tok) and the message, into p->err. */
int px_cfg_perr(struct cp *p, int tok, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int px_cfg_missing(struct cp *p, int obj, const char *where, const char *key);
int px_cfg_oom(struct cp *p, int tok);

/* "where.key", or "key" at the top level; buf holds WHERE_MAX bytes. */
const char *px_cfg_kp(char *buf, const char *where, const char *key);

/* Raw text of token t for messages: truncated, non-printables as '?'. */
const char *px_cfg_show(const struct cp *p, int t, char *buf, size_t n);

/* ---- structure ----------------------------------------------------------- */

/* obj is an object whose keys are all in `allowed` (NULL terminated; NULL
 * allows any) and appear once. 0 or -1. */
int px_cfg_check_obj(struct cp *p, int obj, const char *where, const char *const *allowed);

/* A free-form map: unique, non-empty keys, at most MAX_MAP of them. Returns
 * the number of entries or -1. */
int px_cfg_check_map(struct cp *p, int obj, const char *where);

/* ---- values -------------------------------------------------------------- */

/* String token t into *out (caller frees); empty strings refused. 0 or -1. */
int px_cfg_tok_str(struct cp *p, int t, const char *what, char **out);

int px_cfg_get_str(struct cp *p, int obj, const char *where, const char *key, char **out);
/* As px_cfg_get_str(), but an absent key is an error. */
int px_cfg_need_str(struct cp *p, int obj, const char *where, const char *key, char **out);

/* A relative *path is replaced by one against the config's folder. 0 or -1. */
int px_cfg_resolve(struct cp *p, int tok, char **path);
int px_cfg_get_path(struct cp *p, int obj, const char *where, const char *key, char **out);

/* Duration ("250ms", "10s", "5m", "24h") and integer keys, within [min, max]. */
int px_cfg_get_dur(struct cp *p, int obj, const char *where, const char *key, int64_t *ms,
                   int64_t min, int64_t max);
int px_cfg_get_int(struct cp *p, int obj, const char *where, const char *key, int64_t *out,
                   int64_t min, int64_t max);

/* true / false into *out. 0 when absent, else the token, or -1. */
int px_cfg_get_bool(struct cp *p, int obj, const char *where, const char *key, int *out);

/* "spiffe://td/path" syntax (as px_cfg_get_spiffe checks it). */
int px_cfg_spiffe_ok(const char *s);

/* One of names (NULL terminated); *out = its index. */
int px_cfg_get_enum(struct cp *p, int obj, const char *where, const char *key,
                    const char *const *names, int *out);

/* A SPIFFE ID (an error when absent if `required`), an "https://host/..." URL
 * (always required). */
int px_cfg_get_spiffe(struct cp *p, int obj, const char *where, const char *key, char **out,
                      int required);
int px_cfg_get_https(struct cp *p, int obj, const char *where, const char *key, char **out);

/* ---- syntax -------------------------------------------------------------- */

/* Letters, digits, '.', '-', '_'. */
int px_cfg_is_name_char(char c);

/* "host:port" or "[v6]:port" into new strings (caller frees). 0 or -1. */
int px_cfg_parse_hostport(const char *s, char **host, char **port);

/* "h2c://host:port" or "http://host:port" into u (caller frees). 0 or -1. */
int px_cfg_parse_url(const char *s, struct px_upstream_addr *u);

/* ---- config_probes.c ---------------------------------------------------- */

/* The "probes" and "metrics" sections of the root object. 0 or -1. */
int px_cfg_parse_probes(struct cp *p, int obj);
int px_cfg_parse_metrics(struct cp *p, int obj);

/* The admin, metrics and probes listeners and the data listeners each
 * need their own port. NULL, or buf holding what clashes with what. */
const char *px_cfg_check_binds(const struct px_config *c, char *buf, size_t n);

/* Frees the probes and metrics sections' strings and targets (not c). */
void px_cfg_probes_clear(struct px_config *c);

#endif
