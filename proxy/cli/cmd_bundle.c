/*
 * cmd_bundle.c - `picket bundle`: make signing keys, wrap a policy bundle in
 * a signed DSSE envelope, check one (DESIGN.md "Policy bundles").
 *
 *   picket bundle keygen --type ed25519|p256 --out KEYFILE [--pub PUBFILE]
 *   picket bundle sign   --key KEY --keyid ID --out FILE BUNDLE.json
 *   picket bundle verify --key PUB [--keyid ID] FILE
 *
 * keygen writes the private key as PKCS#8 PEM (mode 0600) and refuses to
 * replace an existing file: a signing key overwritten by mistake cannot be
 * recovered, and every sidecar trusting it would start refusing bundles.
 * The public key goes to PUBFILE, or to stdout without --pub. sign
 * validates the bundle first (so an invalid bundle is never signed) and
 * writes FILE atomically ("-" is stdout). verify uses the same code path as
 * the proxy's fetcher (policy_envelope_verify, then policy_bundle_parse) and
 * prints the stable reason names.
 *
 * Exit status: 0 success; 1 refused or failed; 2 usage error.
 */
#include "cli.h"
#include "cmd_bundle.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "certs.h"
#include "envelope.h"
#include "policy.h"

static const char usage_text[] =
    "usage:\n"
    "  picket bundle keygen --type ed25519|p256 --out KEYFILE [--pub PUBFILE]\n"
    "  picket bundle sign --key KEY --keyid ID --out FILE BUNDLE.json\n"
    "  picket bundle verify --key PUB [--keyid ID] FILE\n";

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
    va_list ap;
    int rc;
    va_start(ap, fmt);
    rc = px_cli_vusage_error("picket bundle", usage_text, fmt, ap);
    va_end(ap);
    return rc;
}

static int write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Writes data to path through a temp file in the same directory (mode,
 * fsync), then renames it over path, or with no_clobber links it to path
 * so an existing file is never replaced (link fails with EEXIST
 * atomically). Returns 0, or -1 with a message on stderr. */
static int write_file(const char *path, const char *data, size_t len, mode_t mode, int no_clobber)
{
    char tmp[PATH_MAX];
    int fd, ok;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", path) >= (int)sizeof(tmp)) {
        fprintf(stderr, "picket bundle: %s: path too long\n", path);
        return -1;
    }
    fd = mkstemp(tmp); /* 0600 from the start: a key is never readable by others */
    if (fd < 0) {
        fprintf(stderr, "picket bundle: %s: %s\n", path, strerror(errno));
        return -1;
    }
    ok = fchmod(fd, mode) == 0 && write_all(fd, data, len) == 0 && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    if (ok)
        ok = no_clobber ? link(tmp, path) == 0 : rename(tmp, path) == 0;
    if (!ok)
        fprintf(stderr, "picket bundle: %s: %s\n", path, strerror(errno));
    if (!ok || no_clobber)
        unlink(tmp);
    return ok ? 0 : -1;
}

/* ---- keygen ------------------------------------------------------------------ */

static int cmd_keygen(int argc, char **argv)
{
    const char *type = NULL, *out = NULL, *pub = NULL, *v;
    enum policy_key_type kt;
    EVP_PKEY *k = NULL;
    char *priv_pem = NULL, *pub_pem = NULL, err[512];
    size_t priv_len = 0, pub_len = 0;
    int rc = 1;

    for (int i = 2; i < argc; i++) {
        if (px_cli_opt(argc, argv, &i, "--type", &v))
            type = v;
        else if (px_cli_opt(argc, argv, &i, "--out", &v))
            out = v;
        else if (px_cli_opt(argc, argv, &i, "--pub", &v))
            pub = v;
        else
            return usage_error("keygen: unexpected argument '%s'", argv[i]);
        if (v == NULL)
            return usage_error("keygen: %s needs a value", argv[i]);
    }
    if (type == NULL || out == NULL)
        return usage_error("%s", "keygen: --type and --out are required");
    if (policy_key_type_parse(type, &kt) != 0)
        return usage_error("keygen: --type must be ed25519 or p256, not '%s'", type);
    if (policy_key_generate(kt, &k, err, sizeof(err)) != 0 ||
        policy_key_private_pem(k, &priv_pem, &priv_len, err, sizeof(err)) != 0 ||
        policy_key_public_pem(k, &pub_pem, &pub_len, err, sizeof(err)) != 0) {
        fprintf(stderr, "picket bundle keygen: %s\n", err);
        goto done;
    }
    if (write_file(out, priv_pem, priv_len, 0600, 1) != 0)
        goto done;
    if (pub != NULL) {
        if (write_file(pub, pub_pem, pub_len, 0644, 0) != 0)
            goto done;
        printf("key: %s (%s), public key: %s\n", out, type, pub);
    } else {
        fprintf(stderr, "key: %s (%s); public key follows\n", out, type);
        fputs(pub_pem, stdout);
    }
    rc = 0;
done:
    if (priv_pem != NULL)
        OPENSSL_cleanse(priv_pem, priv_len);
    free(priv_pem);
    free(pub_pem);
    EVP_PKEY_free(k);
    return rc;
}

/* ---- sign ---------------------------------------------------------------------- */

static int cmd_sign(int argc, char **argv)
{
    const char *key = NULL, *keyid = NULL, *out = NULL, *in = NULL, *v;
    struct policy_bundle *b = NULL;
    EVP_PKEY *k = NULL;
    char *json = NULL, *env = NULL, err[768];
    size_t len = 0, env_len = 0;
    int rc = 1;

    for (int i = 2; i < argc; i++) {
        if (px_cli_opt(argc, argv, &i, "--key", &v))
            key = v;
        else if (px_cli_opt(argc, argv, &i, "--keyid", &v))
            keyid = v;
        else if (px_cli_opt(argc, argv, &i, "--out", &v))
            out = v;
        else if (argv[i][0] == '-' && argv[i][1] == '-')
            return usage_error("sign: unknown option '%s'", argv[i]);
        else if (in == NULL && (v = argv[i]) != NULL)
            in = argv[i];
        else
            return usage_error("sign: unexpected argument '%s'", argv[i]);
        if (v == NULL)
            return usage_error("sign: %s needs a value", argv[i]);
    }
    if (key == NULL || keyid == NULL || out == NULL || in == NULL)
        return usage_error("%s", "sign: --key, --keyid, --out and BUNDLE.json are required");
    if (!policy_keyid_valid(keyid))
        return usage_error("sign: keyid must be 1-%d characters of A-Za-z0-9._:/@+-",
                           POLICY_KEYID_MAX);
    if (certs_read_file(in, POLICY_BUNDLE_MAX_BYTES, &json, &len, err, sizeof(err)) != 0) {
        fprintf(stderr, "picket bundle sign: %s\n", err);
        goto done;
    }
    /* Never sign what a sidecar would refuse after verifying it. */
    if (policy_bundle_parse(&b, json, len, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s:%s\n", in, err);
        goto done;
    }
    if (policy_key_private_load(&k, key, err, sizeof(err)) != 0 ||
        policy_envelope_sign(k, keyid, json, len, &env, &env_len, err, sizeof(err)) != 0) {
        fprintf(stderr, "picket bundle sign: %s\n", err);
        goto done;
    }
    if (strcmp(out, "-") == 0) {
        if (fwrite(env, 1, env_len, stdout) != env_len || fputc('\n', stdout) == EOF)
            goto done;
        rc = 0;
        goto done;
    }
    env[env_len] = '\n'; /* replaces the NUL; the buffer is not used as a string below */
    if (write_file(out, env, env_len + 1, 0644, 0) != 0)
        goto done;
    printf("signed: %s (keyid %s, %s, revision %lld)\n", out, keyid, policy_key_type_name(k),
           (long long)policy_bundle_revision(b));
    rc = 0;
done:
    policy_bundle_free(b);
    EVP_PKEY_free(k);
    free(json);
    free(env);
    return rc;
}

/* ---- verify -------------------------------------------------------------------- */

static int refused(const char *reason, const char *detail)
{
    printf("refused: %s: %s\n", reason, detail);
    return 1;
}

static int cmd_verify(int argc, char **argv)
{
    const char *key = NULL, *keyid = NULL, *in = NULL, *v;
    struct policy_keyring *kr = NULL;
    struct policy_bundle *b = NULL;
    char *data = NULL, *payload = NULL, err[768], kid[POLICY_KEYID_MAX + 1];
    size_t len = 0, plen = 0;
    enum policy_env_reason r;
    int rc = 1, e;

    for (int i = 2; i < argc; i++) {
        if (px_cli_opt(argc, argv, &i, "--key", &v))
            key = v;
        else if (px_cli_opt(argc, argv, &i, "--keyid", &v))
            keyid = v;
        else if (argv[i][0] == '-' && argv[i][1] == '-')
            return usage_error("verify: unknown option '%s'", argv[i]);
        else if (in == NULL && (v = argv[i]) != NULL)
            in = argv[i];
        else
            return usage_error("verify: unexpected argument '%s'", argv[i]);
        if (v == NULL)
            return usage_error("verify: %s needs a value", argv[i]);
    }
    if (key == NULL || in == NULL)
        return usage_error("%s", "verify: --key and FILE are required");
    if (keyid != NULL && !policy_keyid_valid(keyid))
        return usage_error("verify: keyid must be 1-%d characters of A-Za-z0-9._:/@+-",
                           POLICY_KEYID_MAX);
    /* Without --keyid the key is id-less: it is tried against every
     * signature, whatever keyid the signer wrote. */
    if (policy_keyring_new(&kr) != 0 ||
        policy_keyring_add_file(kr, keyid, key, err, sizeof(err)) != 0) {
        policy_keyring_free(kr);
        return usage_error("verify: %s", kr == NULL ? "out of memory" : err);
    }
    e = certs_read_file(in, POLICY_BUNDLE_MAX_BYTES, &data, &len, err, sizeof(err));
    if (e == CERTS_ERR_TOO_LARGE) {
        rc = refused(policy_env_reason_name(POLICY_ENV_TOO_LARGE), err);
        goto done;
    }
    if (e != 0) {
        fprintf(stderr, "picket bundle verify: %s\n", err);
        goto done;
    }
    r = policy_envelope_verify(kr, data, len, &payload, &plen, kid, sizeof(kid), err, sizeof(err));
    if (r != POLICY_ENV_OK) {
        rc = refused(policy_env_reason_name(r), err);
        goto done;
    }
    if (policy_bundle_parse(&b, payload, plen, err, sizeof(err)) != 0) {
        rc = refused(policy_env_reason_name(POLICY_ENV_BAD_BUNDLE), err);
        goto done;
    }
    printf("ok: keyid %s, revision %lld\n", kid[0] != '\0' ? kid : "(none)",
           (long long)policy_bundle_revision(b));
    rc = 0;
done:
    policy_bundle_free(b);
    policy_keyring_free(kr);
    free(payload);
    free(data);
    return rc;
}

int px_cmd_bundle(int argc, char **argv)
{
    const char *sub = argc > 1 ? argv[1] : NULL;

    if (sub == NULL)
        return usage_error("%s", "missing subcommand");
    if (strcmp(sub, "help") == 0 || strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (strcmp(sub, "keygen") == 0)
        return cmd_keygen(argc, argv);
    if (strcmp(sub, "sign") == 0)
        return cmd_sign(argc, argv);
    if (strcmp(sub, "verify") == 0)
        return cmd_verify(argc, argv);
    return usage_error("unknown subcommand '%s'", sub);
}
