/*
 * hdrs.h - header field lists (hdrs.c): what a request or response
 * carries, names lowercased, bytes owned by the list.
 */
#ifndef PX_HDRS_H
#define PX_HDRS_H

#include <stddef.h>

struct px_hdr {
    const char *name; /* lowercase; in the list's blocks, or one of the known names */
    char *value;
    size_t nlen, vlen;
};

struct px_hdr_block;

struct px_hdrs {
    struct px_hdr *v;
    size_t n, cap;
    size_t bytes; /* sum of name+value+32 per field (RFC 7541 4.1 accounting) */
    struct px_hdr_block *blk; /* bytes of names and values, freed together */
};

/* Appends a copy. The name is lowercased; a known name (below) is not
 * copied but points at its static row. Returns 0, or -1 when the list
 * would exceed `limit` bytes (0 = no limit) or memory runs out. */
int px_hdrs_add(struct px_hdrs *h, const char *name, size_t nlen, const char *value, size_t vlen,
                size_t limit);
const struct px_hdr *px_hdrs_get(const struct px_hdrs *h, const char *name);
void px_hdrs_del(struct px_hdrs *h, const char *name);
/* Drops every field named name[0..len), ASCII case-insensitively (name
 * need not be NUL-terminated or lowercase). */
void px_hdrs_del_ci(struct px_hdrs *h, const char *name, size_t len);
/* Drops the field at index i (the ones after it move down by one). */
void px_hdrs_remove_at(struct px_hdrs *h, size_t i);
void px_hdrs_clear(struct px_hdrs *h);

/* The known name equal to p[0..n) (lowercase, NUL-terminated, static),
 * or NULL: the names px_hdrs_add does not copy. */
const char *px_field_name_known(const char *p, size_t n);
/* 1 if p is one of the known names (static storage: a serializer may
 * hand it to nghttp2 with NGHTTP2_NV_FLAG_NO_COPY_NAME). */
int px_field_name_static(const char *p);
/* The known names in table order, NULL past the last (for tests). */
const char *px_field_known_row(size_t i);

/* n bytes (plus a NUL at p[n]) in the list's blocks, freed with the list;
 * NULL when memory runs out. */
char *px_hdrs_alloc(struct px_hdrs *h, size_t n);
/* Copies p[0..n) into the list's blocks (freed with the list) and adds a
 * NUL. Returns the copy, or NULL when memory runs out. The list's size
 * accounting is not changed. */
char *px_hdrs_strdup(struct px_hdrs *h, const char *p, size_t n);

/* 1 if every byte of p[0..n) is an ASCII letter, a digit or one of extra
 * (NUL never is). */
int px_field_alnum_or(const char *p, size_t n, const char *extra);

/* 1 if p[0..n) is a field name: 1*tchar (RFC 9110 5.1, 5.6.2). Rejects
 * empty names, spaces and anything before a colon that is not a token. */
int px_field_name_ok(const char *p, size_t n);

/* 1 if p[0..n) may appear in a field value: HTAB, SP, VCHAR, obs-text
 * (RFC 9110 5.5). CR, LF, NUL and other controls are refused: they are
 * how responses get split and requests smuggled. */
int px_field_value_ok(const char *p, size_t n);

/* Hop-by-hop header names (RFC 9110 7.6.1), plus those h2 forbids. */
int px_is_hop_by_hop(const char *name, size_t len);

/* Strips optional whitespace (SP / HTAB) from both ends of *p[0..*n). */
void px_ows_trim(const char **p, size_t *n);

/* 1 for methods a proxy may replay after a connection failure
 * (RFC 9110 9.2.2). */
int px_method_idempotent(const char *method);

#endif
