/*
 * inject_int.h - shared by inject.c (options, injector config,
 * AdmissionReview) and inject_plan.c (the JSON Patch planner) only.
 */
#ifndef PX_INJECT_INT_H
#define PX_INJECT_INT_H

#include <stddef.h>

#include "certs_json.h"
#include "inject.h"

#define NAME_MAX_LEN 253 /* DNS-1123 subdomain */
#define APP_TOKEN "<app>"

/* String member `key` of object obj, unescaped into buf[0..n); -1 (buf
 * empty) if absent, not a string or too long. */
int px_inject_get_str(const struct certs_json *j, int obj, const char *key, char *buf, size_t n);

/* 1 if s is a lowercase RFC 1123 subdomain: what ConfigMap and Secret
 * names must be. */
int px_inject_dns1123_ok(const char *s);

/* tmpl with every "<app>" replaced by app, into out[0..n). -1 if it does
 * not fit. */
int px_inject_subst_app(const char *tmpl, const char *app, char *out, size_t n);

/* The object's kind, name (or generateName) and namespace into res; a
 * non-empty ns_hint (the review's namespace) wins over the object's. */
void px_inject_fill_ident(const struct certs_json *j, int root, const char *ns_hint,
                          struct px_inject_result *res);

/* Plans the object at token root (a List's items one by one) into
 * res->patch, which res then owns (px_inject_result_clear()). Returns 0,
 * or a PX_INJECT_E* code with err set. */
int px_inject_plan_into(const struct certs_json *j, int root, const char *ns_hint,
                        const struct px_inject_opts *o, struct px_inject_result *res, char *err,
                        size_t errlen);

/* Appends the start of one op to ops: {"op":op,"path":prefix+suffix,"value":
 * (a comma before it unless it is the first, counted in *nops); the caller
 * writes the value and the closing brace. prefix and suffix are JSON
 * Pointers that need no JSON escaping. */
void px_inject_op_begin(struct px_sbuf *ops, int *nops, const char *op, const char *prefix,
                        const char *suffix);

/* The raw text of token i in j->js, quotes included for a string. */
void px_inject_tok_raw(const struct certs_json *j, int i, const char **p, size_t *n);

/* inject_probes.c: the "replace" ops that point the app containers' probes
 * (pod spec at token pspec, pointer `spec`) at picket's probes port, and
 * their original targets as members of the PICKET_APP_PROBES object
 * ("name":{...},... without braces) appended to targets. 0, or a
 * PX_INJECT_E* code with err set. */
int px_inject_plan_probes(const struct certs_json *j, int pspec, const char *spec,
                          const struct px_inject_opts *o, struct px_sbuf *ops, int *nops,
                          struct px_sbuf *targets, char *err, size_t errlen);

#endif
