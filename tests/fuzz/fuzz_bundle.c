/*
 * fuzz_bundle.c - policy_bundle_parse(), policy_engine_new() and
 * policy_eval() (policy/bundle.c, compile.c, eval.c).
 *
 * Every input is parsed as a bundle. When it is accepted the engine is
 * compiled and the bundle freed at once (the engine must not borrow from
 * it; ASan sees any use after free), then requests built from the input's
 * own strings (IDs, hosts, methods, paths, header names and values, with a
 * few variations) are evaluated. Each decision is checked for consistency
 * (verdict in range, rule_id set, "default" exactly when is_default, a
 * dispatch target exactly for DISPATCH and one the bundle names, audit and
 * revision as in the bundle, same verdict with why == NULL).
 *
 * The engine indexes rules by identity and first path segment and only
 * runs the full check on candidates. To test the index without writing a
 * second evaluator, the target also builds one single-rule engine per
 * rule (the input with "rules" cut down to that rule) and derives the
 * expected answer from the documented precedence: a rule matches a request
 * iff its single-rule engine does not fall back to the default; then the
 * first matching deny wins, else the first dispatch, else the first allow,
 * else the default. The full engine must give exactly that verdict and
 * rule. A candidate list that drops a rule, or a precedence slip, shows up
 * as a mismatch.
 *
 * Duplicate keys: the bundle parser checks them per object, after each
 * object's limits (CERTS_JSON_DEFER_KEYS), so it must agree with the full
 * certs_json_parse() check in both directions: an accepted bundle has no
 * duplicate key anywhere (else some object escaped the per-object check),
 * and a bundle refused for a duplicate key (or a key with a bad escape) is
 * refused by certs_json_parse() for a key too.
 */
#include <string.h>

#include "certs.h"
#include "fuzz_common.h"
#include "policy.h"

#define MAX_STRINGS 64
#define MAX_RULES 24 /* single-rule engines are built only up to this many rules */
#define NREQ 12
#define FIELD_MAX 512

struct strs {
    char *s[MAX_STRINGS];
    size_t n;
};

struct rng {
    uint64_t x;
};

static uint32_t rnd(struct rng *r)
{
    /* splitmix64: deterministic per input, so a crash replays exactly. */
    uint64_t z = (r->x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return (uint32_t)((z ^ (z >> 31)) >> 16);
}

static const char *pick(struct strs *st, struct rng *r, char first)
{
    size_t start, i;
    if (st->n == 0)
        return "";
    start = rnd(r) % st->n;
    if (first != 0) {
        for (i = 0; i < st->n; i++) {
            const char *s = st->s[(start + i) % st->n];
            if (s[0] == first)
                return s;
        }
    }
    return st->s[start];
}

static void copy_field(char *dst, const char *src)
{
    snprintf(dst, FIELD_MAX, "%s", src);
}

struct req_buf {
    char peer[FIELD_MAX], method[FIELD_MAX], host[FIELD_MAX], rawpath[FIELD_MAX];
    char path[3 * FIELD_MAX + 2];
    char hname[3][FIELD_MAX], hval[3][FIELD_MAX];
    struct policy_header h[3];
    struct policy_request q;
};

static void make_request(struct req_buf *b, struct strs *st, struct rng *r)
{
    uint32_t v = rnd(r);
    size_t plen = 0, n;
    char *star;

    memset(b, 0, sizeof(*b));
    /* peer: none, a bundle string, or one under a "from" pattern. */
    if (v % 8 != 0) {
        copy_field(b->peer, pick(st, r, 's'));
        n = strlen(b->peer);
        if (n > 0 && b->peer[n - 1] == '*') {
            b->peer[n - 1] = '\0';
            if (n >= 2 && b->peer[n - 2] == '/')
                strncat(b->peer, (v & 16) ? "x" : "x/y", FIELD_MAX - n);
        } else if (v & 32) {
            strncat(b->peer, "/z", FIELD_MAX - n - 1);
        }
    }
    copy_field(b->method, (v & 64) ? pick(st, r, 0) : ((v & 128) ? "GET" : "POST"));
    if ((v >> 8) % 4 != 0) {
        copy_field(b->host, pick(st, r, 0));
        if (b->host[0] == '*' && b->host[1] == '.')
            b->host[0] = 'w';
        if (v & 0x400) {
            for (char *c = b->host; *c; c++)
                if (*c >= 'a' && *c <= 'z')
                    *c = (char)(*c - 'a' + 'A');
        }
        if (v & 0x800)
            strncat(b->host, ":8443", FIELD_MAX - strlen(b->host) - 1);
    }
    copy_field(b->rawpath, (v & 0x1000) ? pick(st, r, '/') : "/");
    /* Turn wildcard segments into literals so the pattern can match. */
    while ((star = strchr(b->rawpath, '*')) != NULL)
        *star = 'a';
    if (v & 0x2000)
        strncat(b->rawpath, "/b", FIELD_MAX - strlen(b->rawpath) - 1);
    if (policy_path_normalize(b->rawpath, strlen(b->rawpath), b->path, sizeof(b->path), NULL,
                              &plen) != 0) {
        strcpy(b->path, "/");
        plen = 1;
    }
    b->q.peer = b->peer;
    b->q.peer_len = strlen(b->peer);
    b->q.method = b->method;
    b->q.method_len = strlen(b->method);
    b->q.authority = b->host;
    b->q.authority_len = strlen(b->host);
    b->q.path = b->path;
    b->q.path_len = plen;
    b->q.nheaders = (v >> 14) % 4;
    for (size_t i = 0; i < b->q.nheaders; i++) {
        copy_field(b->hname[i], pick(st, r, 0));
        for (char *c = b->hname[i]; *c; c++)
            if (*c >= 'A' && *c <= 'Z')
                *c = (char)(*c - 'A' + 'a');
        copy_field(b->hval[i], pick(st, r, 0));
        b->h[i].name = b->hname[i];
        b->h[i].name_len = strlen(b->hname[i]);
        b->h[i].value = b->hval[i];
        b->h[i].value_len = strlen(b->hval[i]);
    }
    b->q.headers = b->q.nheaders > 0 ? b->h : NULL;
}

struct bundle_facts {
    enum policy_verdict def;
    enum policy_mode mode;
    int64_t revision;
    size_t nrules;
    char **targets;
    size_t ntargets;
};

static void check_decision(const struct bundle_facts *f, const struct policy_engine *eng,
                           const struct policy_request *q, struct policy_decision *d)
{
    enum policy_verdict v = policy_eval(eng, q, d);
    FUZZ_CHECK(v == POLICY_ALLOW || v == POLICY_DENY || v == POLICY_DISPATCH);
    FUZZ_CHECK(d->verdict == v);
    FUZZ_CHECK(d->rule_id != NULL);
    FUZZ_CHECK(d->is_default == (strcmp(d->rule_id, "default") == 0));
    if (d->is_default)
        FUZZ_CHECK(v == f->def);
    if (v == POLICY_DISPATCH) {
        int found = 0;
        FUZZ_CHECK(d->dispatch != NULL);
        for (size_t i = 0; i < f->ntargets; i++)
            found |= strcmp(f->targets[i], d->dispatch) == 0;
        FUZZ_CHECKF(found, "dispatch target '%s' not in the bundle", d->dispatch);
    } else {
        FUZZ_CHECK(d->dispatch == NULL);
    }
    FUZZ_CHECK(d->audit == (f->mode == POLICY_MODE_AUDIT));
    FUZZ_CHECK(d->revision == f->revision);
    FUZZ_CHECK(policy_eval(eng, q, NULL) == v);
}

/* The JSON layer's refusal of a key: the message is "LINE:COL: duplicate
 * key \"...\"" or "LINE:COL: bad escape in key" from its start. Other
 * refusals may quote a key that holds those words (an unknown key named
 * "act: bad escape in keyion" did), so only the message's head counts. */
static int key_refusal(const char *err)
{
    int line, col, n = 0;
    /* the prefix as fuzz_json reads it */
    if (sscanf(err, "%d:%d: %n", &line, &col, &n) != 2 || n == 0 || line < 1 || col < 1)
        return 0;
    return strncmp(err + n, "duplicate key \"", 15) == 0 ||
           strncmp(err + n, "bad escape in key", 17) == 0;
}

/* Compiles a bundle, freeing the bundle right away. NULL if refused. */
static struct policy_engine *compile(const char *js, size_t len, struct bundle_facts *facts)
{
    struct policy_bundle *b = NULL;
    struct policy_engine *e = NULL;
    char err[512] = "";
    int rc = policy_bundle_parse(&b, js, len, err, sizeof(err));

    if (rc != 0) {
        FUZZ_CHECK(b == NULL);
        FUZZ_CHECKF(rc == POLICY_ERR_JSON || rc == POLICY_ERR_BUNDLE || rc == POLICY_ERR_TOO_LARGE,
                    "rc %d (%s)", rc, err);
        FUZZ_CHECK(err[0] != '\0');
        if (key_refusal(err)) {
            struct certs_json j;
            char jerr[512] = "";
            FUZZ_CHECK(rc == POLICY_ERR_JSON);
            FUZZ_CHECKF(certs_json_parse(&j, js, len, POLICY_BUNDLE_MAX_TOKENS, jerr,
                                         sizeof(jerr)) != 0,
                        "bundle: '%s', but certs_json_parse accepts", err);
            /* Tokenizing passed, so only the key rule is left to refuse it.
             * The key may differ: the full check reports the first offence
             * in the document, the bundle the first in the objects it read. */
            FUZZ_CHECKF(key_refusal(jerr), "bundle: '%s', certs_json_parse: '%s'", err, jerr);
        }
        return NULL;
    }
    FUZZ_CHECK(b != NULL);
    if (facts != NULL) {
        const char *const *names = NULL;
        facts->def = policy_bundle_default(b);
        facts->mode = policy_bundle_mode(b);
        facts->revision = policy_bundle_revision(b);
        facts->nrules = policy_bundle_rule_count(b);
        FUZZ_CHECK(facts->def == POLICY_ALLOW || facts->def == POLICY_DENY);
        FUZZ_CHECK(facts->mode == POLICY_MODE_ENFORCE || facts->mode == POLICY_MODE_AUDIT);
        FUZZ_CHECK(facts->revision >= 0);
        facts->ntargets = policy_bundle_dispatch_targets(b, &names);
        FUZZ_CHECK(facts->ntargets <= facts->nrules);
        facts->targets = calloc(facts->ntargets + 1, sizeof(char *));
        FUZZ_CHECK(facts->targets != NULL);
        for (size_t i = 0; i < facts->ntargets; i++) {
            FUZZ_CHECK(names != NULL && names[i] != NULL);
            facts->targets[i] = strdup(names[i]);
            FUZZ_CHECK(facts->targets[i] != NULL);
        }
    }
    rc = policy_engine_new(&e, b, err, sizeof(err));
    FUZZ_CHECKF(rc == 0 && e != NULL, "engine_new of a valid bundle: %d %s", rc, err);
    if (facts != NULL) {
        FUZZ_CHECK(policy_engine_rule_count(e) == facts->nrules);
        FUZZ_CHECK(policy_engine_revision(e) == facts->revision);
    }
    policy_bundle_free(b);
    return e;
}

/* Index of the "rules" array in the top-level object, or -1. */
static int rules_token(const struct certs_json *j)
{
    int v = certs_json_get(j, 0, "rules");
    return v >= 0 && certs_json_is_arr(j, v) ? v : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *js = (const char *)data;
    struct bundle_facts facts = {0};
    struct policy_engine *eng = NULL, *single[MAX_RULES] = {0};
    struct certs_json j = {0};
    struct strs st = {{0}, 0};
    struct rng r = {0xcbf29ce484222325ULL};
    struct req_buf *rb = NULL;
    size_t nsingle = 0;
    char err[256];
    int rules = -1;

    eng = compile(js, size, &facts);
    if (eng == NULL)
        return 0;

    /* The input is valid JSON now: collect its strings and find the rules. */
    FUZZ_CHECK(certs_json_parse(&j, js, size, POLICY_BUNDLE_MAX_TOKENS, err, sizeof(err)) == 0);
    for (int i = 0; i < j.ntok && st.n < MAX_STRINGS; i++) {
        char *s;
        if (j.tok[i].type != JSMN_STRING || j.tok[i].end - j.tok[i].start >= FIELD_MAX)
            continue;
        s = certs_json_strdup(&j, i);
        if (s != NULL)
            st.s[st.n++] = s;
    }
    for (size_t i = 0; i < size; i++)
        r.x = (r.x ^ data[i]) * 0x100000001b3ULL;
    rules = rules_token(&j);
    if (facts.nrules == 0)
        FUZZ_CHECK(rules < 0 || j.tok[rules].size == 0);
    else
        FUZZ_CHECK(rules >= 0 && (size_t)j.tok[rules].size == facts.nrules);

    /* One engine per rule: input with "rules": [<that rule>]. */
    if (rules >= 0 && facts.nrules <= MAX_RULES) {
        int k = certs_json_first(&j, rules);
        for (size_t i = 0; i < facts.nrules; i++, k = certs_json_next_elem(&j, k)) {
            const jsmntok_t *a = &j.tok[rules], *e = &j.tok[k];
            size_t rl = (size_t)(e->end - e->start);
            size_t n = (size_t)a->start + 1 + rl + 1 + (size - (size_t)a->end);
            char *doc = malloc(n);
            struct bundle_facts sf = {0};
            FUZZ_CHECK(k > 0 && doc != NULL);
            memcpy(doc, js, (size_t)a->start);
            doc[a->start] = '[';
            memcpy(doc + a->start + 1, js + e->start, rl);
            doc[a->start + 1 + rl] = ']';
            memcpy(doc + a->start + 2 + rl, js + a->end, size - (size_t)a->end);
            single[i] = compile(doc, n, &sf);
            FUZZ_CHECKF(single[i] != NULL, "rule %zu alone is refused", i);
            FUZZ_CHECK(sf.nrules == 1 && sf.def == facts.def && sf.mode == facts.mode);
            for (size_t t = 0; t < sf.ntargets; t++)
                free(sf.targets[t]);
            free(sf.targets);
            free(doc);
            nsingle++;
        }
    }

    rb = malloc(sizeof(*rb));
    FUZZ_CHECK(rb != NULL);
    for (int n = 0; n < NREQ; n++) {
        struct policy_decision d, sd;
        const char *want_rule = NULL;
        enum policy_verdict want = facts.def;
        int best = 99; /* precedence rank of the best match: deny 0, dispatch 1, allow 2 */

        make_request(rb, &st, &r);
        check_decision(&facts, eng, &rb->q, &d);
        if (nsingle != facts.nrules)
            continue;
        for (size_t i = 0; i < nsingle; i++) {
            int rank;
            check_decision(&facts, single[i], &rb->q, &sd);
            if (sd.is_default)
                continue;
            rank = sd.verdict == POLICY_DENY ? 0 : sd.verdict == POLICY_DISPATCH ? 1 : 2;
            if (rank < best) {
                best = rank;
                want = sd.verdict;
                want_rule = sd.rule_id;
            }
        }
        FUZZ_CHECKF(d.verdict == want && (want_rule == NULL ? d.is_default
                                                             : strcmp(d.rule_id, want_rule) == 0),
                    "engine said %s by '%s', its rules one by one say %s by '%s' (peer '%s' "
                    "method '%s' host '%s' path '%.*s', %zu headers)",
                    policy_verdict_name(d.verdict), d.rule_id, policy_verdict_name(want),
                    want_rule ? want_rule : "default", rb->peer, rb->method, rb->host,
                    (int)rb->q.path_len, rb->path, rb->q.nheaders);
    }

    free(rb);
    for (size_t i = 0; i < nsingle; i++)
        policy_engine_free(single[i]);
    policy_engine_free(eng);
    for (size_t i = 0; i < st.n; i++)
        free(st.s[i]);
    for (size_t i = 0; i < facts.ntargets; i++)
        free(facts.targets[i]);
    free(facts.targets);
    certs_json_clear(&j);
    return 0;
}
