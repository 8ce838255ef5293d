/*
 * floor.c - the policy revision floor file (floor.h):
 *   {"source":"https://...","revision":17,"sha256":"<64 hex>"}
 * written with certs_write_file_atomic (temp file, fsync, rename).
 */
#include "floor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <event2/buffer.h>

#include "certs.h"
#include "certs_json.h"
#include "config.h"
#include "log.h"
#include "metrics.h"

#define FLOOR_NAME "policy-floor.json"
#define FLOOR_MAX_BYTES 4096

static void hex(const unsigned char *in, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[in[i] >> 4];
        out[2 * i + 1] = d[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int unhex(const char *s, unsigned char *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int v = 0;
        for (int k = 0; k < 2; k++) {
            char c = s[2 * i + k];
            v <<= 4;
            if (c >= '0' && c <= '9')
                v |= c - '0';
            else if (c >= 'a' && c <= 'f')
                v |= c - 'a' + 10;
            else
                return -1;
        }
        out[i] = (unsigned char)v;
    }
    return s[2 * n] == '\0' ? 0 : -1;
}

void px_floor_load(struct px_floor *f, const struct px_config *cfg)
{
    const char *dir = cfg->state_dir != NULL ? cfg->state_dir : cfg->policy.cache_dir;
    const char *src = cfg->policy.url != NULL ? cfg->policy.url : cfg->policy.file;
    struct certs_json j = {0};
    char *data = NULL, err[300], fsrc[1100], shahex[80];
    size_t len = 0;
    int64_t rev = -1;
    int t;

    memset(f, 0, sizeof(*f));
    f->revision = -1;
    if (src == NULL)
        return;
    snprintf(f->source, sizeof(f->source), "%s", src);
    if (dir == NULL) {
        px_log(PX_LOG_WARN, "policy_floor_volatile", "msg",
               "no state_dir or policy.cache_dir: the policy revision floor is kept in memory "
               "only, and a restart forgets it (an older signed bundle would be accepted)",
               NULL);
        return;
    }
    snprintf(f->path, sizeof(f->path), "%s/%s", dir, FLOOR_NAME);
    if (certs_read_file(f->path, FLOOR_MAX_BYTES, &data, &len, err, sizeof(err)) != 0)
        return; /* none yet: a first start */
    if (certs_json_parse(&j, data, len, 64, err, sizeof(err)) != 0 ||
        (t = certs_json_get(&j, 0, "source")) < 0 ||
        certs_json_str(&j, t, fsrc, sizeof(fsrc)) < 0 ||
        (t = certs_json_get(&j, 0, "revision")) < 0 || certs_json_int(&j, t, &rev) < 0 ||
        rev < 0 || (t = certs_json_get(&j, 0, "sha256")) < 0 ||
        certs_json_str(&j, t, shahex, sizeof(shahex)) < 0 || unhex(shahex, f->sha, 32) != 0) {
        /* unreadable: refusing every bundle would be an outage, trusting it
         * silently a rollback window; say so loudly and start without */
        px_log(PX_LOG_ERROR, "policy_floor_unusable", "path", f->path, "msg",
               "the persisted revision floor cannot be read; starting without it", NULL);
    } else if (strcmp(fsrc, f->source) != 0) {
        px_log(PX_LOG_INFO, "policy_floor_other_source", "path", f->path, "source", fsrc, "msg",
               "the persisted floor belongs to another policy source: starting a new one", NULL);
    } else {
        char r[32];
        f->revision = rev;
        snprintf(r, sizeof(r), "%lld", (long long)rev);
        px_log(PX_LOG_INFO, "policy_floor_loaded", "path", f->path, "revision", r, NULL);
    }
    certs_json_clear(&j);
    free(data);
}

int px_floor_check(const struct px_floor *f, int64_t rev, const unsigned char sha[32], char *err,
                   size_t errlen)
{
    if (f->revision < 0)
        return 0;
    if (rev < f->revision) {
        snprintf(err, errlen, "revision %lld is older than %lld, the floor an earlier run accepted",
                 (long long)rev, (long long)f->revision);
        return -1;
    }
    if (rev == f->revision && memcmp(sha, f->sha, 32) != 0) {
        snprintf(err, errlen,
                 "revision %lld differs from the one an earlier run accepted; a change needs "
                 "a new revision",
                 (long long)rev);
        return -1;
    }
    return 0;
}

void px_floor_raise(struct px_floor *f, int64_t rev, const unsigned char sha[32])
{
    char buf[1400], shahex[65], esc[1200], err[300];
    int n;

    if (rev < f->revision || (rev == f->revision && memcmp(sha, f->sha, 32) == 0))
        return;
    f->revision = rev;
    memcpy(f->sha, sha, 32);
    if (f->path[0] == '\0')
        return;
    hex(sha, 32, shahex);
    px_json_escape(esc, sizeof(esc), f->source, strlen(f->source));
    n = snprintf(buf, sizeof(buf), "{\"source\":\"%s\",\"revision\":%lld,\"sha256\":\"%s\"}\n", esc,
                 (long long)rev, shahex);
    {
        /* the directory may not exist yet (an emptyDir on first start) */
        char dir[sizeof(f->path)], *slash;
        snprintf(dir, sizeof(dir), "%s", f->path);
        slash = strrchr(dir, '/');
        if (slash != NULL && slash != dir) {
            *slash = '\0';
            (void)mkdir(dir, 0700);
        }
    }
    if (n < 0 || (size_t)n >= sizeof(buf) ||
        certs_write_file_atomic(f->path, buf, (size_t)n, 0600, err, sizeof(err)) != 0) {
        px_counter_add(px_counter_get("picket_policy_cache_write_failures_total",
                                      "Envelopes that could not be persisted",
                                      "path=\"state_dir\""),
                       1);
        px_log(PX_LOG_ERROR, "policy_floor_write_failed", "path", f->path, "error",
               n < 0 || (size_t)n >= sizeof(buf) ? "too long" : err, "msg",
               "the floor is kept in memory; a restart would forget it", NULL);
    }
}

void px_floor_status(const struct px_floor *f, struct evbuffer *out)
{
    if (f->revision >= 0)
        evbuffer_add_printf(out, ",\"floor\":%lld", (long long)f->revision);
    else
        evbuffer_add_printf(out, ",\"floor\":null");
    evbuffer_add_printf(out, ",\"floor_persisted\":%s", f->path[0] ? "true" : "false");
}
