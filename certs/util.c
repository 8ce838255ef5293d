/*
 * util.c - small helpers shared by the certs/ files: error codes and text,
 * OpenSSL error draining, capped file reads, atomic file writes, PEM
 * parsing and time conversion. No global state.
 */
#include "certs_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>

const char *certs_strerror(int rc)
{
    switch (rc) {
    case 0:
        return "success";
    case CERTS_ERR_NOMEM:
        return "out of memory";
    case CERTS_ERR_IO:
        return "I/O error";
    case CERTS_ERR_PARSE:
        return "malformed input";
    case CERTS_ERR_TOO_LARGE:
        return "input too large";
    case CERTS_ERR_INVALID:
        return "invalid argument";
    case CERTS_ERR_CRYPTO:
        return "cryptographic library error";
    case CERTS_ERR_REFUSED:
        return "certificate refused";
    case CERTS_ERR_KEY_MISMATCH:
        return "private key does not match certificate";
    case CERTS_ERR_EXISTS:
        return "already exists";
    case CERTS_ERR_NOT_FOUND:
        return "not found";
    default:
        return "unknown error";
    }
}

void certs_errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

void certs_ossl_err(char *err, size_t errlen, const char *prefix)
{
    char buf[256];
    unsigned long e = ERR_peek_error();

    if (e != 0) {
        ERR_error_string_n(e, buf, sizeof(buf));
        certs_errf(err, errlen, "%s: %s", prefix, buf);
    } else {
        certs_errf(err, errlen, "%s", prefix);
    }
    ERR_clear_error();
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
 * days_from_civil algorithm, written out from its description). Avoids
 * timegm(), whose handling of years past 2038 on 32-bit time_t varies. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    int64_t era, yoe, doy, doe;
    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int certs_asn1_to_unix(const ASN1_TIME *t, int64_t *out)
{
    struct tm tm;
    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
        return -1;
    *out = days_from_civil((int64_t)tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday) * 86400 +
           tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec;
    return 0;
}

int certs_cert_validity(X509 *cert, int64_t *not_before, int64_t *not_after)
{
    if (cert == NULL || certs_asn1_to_unix(X509_get0_notBefore(cert), not_before) < 0 ||
        certs_asn1_to_unix(X509_get0_notAfter(cert), not_after) < 0)
        return CERTS_ERR_PARSE;
    return 0;
}

void certs_fmt_time(int64_t t, char *buf, size_t len)
{
    struct tm tm;
    time_t tt = (time_t)t;
    if (gmtime_r(&tt, &tm) == NULL || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, len, "@%lld", (long long)t);
}

int certs_read_file(const char *path, size_t max, char **out, size_t *len, char *err, size_t errlen)
{
    struct stat st;
    char *buf = NULL;
    size_t n = 0;
    int fd, rc = CERTS_ERR_IO;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        certs_errf(err, errlen, "%s: %s", path, strerror(errno));
        return CERTS_ERR_IO;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        certs_errf(err, errlen, "%s: not a regular file", path);
        goto fail;
    }
    if ((uint64_t)st.st_size > max) {
        certs_errf(err, errlen, "%s: file is %lld bytes, limit %zu", path, (long long)st.st_size,
                   max);
        rc = CERTS_ERR_TOO_LARGE;
        goto fail;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL) {
        rc = CERTS_ERR_NOMEM;
        certs_errf(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    /* Read what stat promised; a file growing meanwhile is cut off there,
     * which keeps the cap exact without a second allocation. */
    while (n < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + n, (size_t)st.st_size - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            certs_errf(err, errlen, "%s: %s", path, strerror(errno));
            goto fail;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    close(fd);
    *out = buf;
    *len = n;
    return 0;
fail:
    free(buf);
    close(fd);
    return rc;
}

static int write_all(int fd, const unsigned char *p, size_t len)
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

int certs_write_file_atomic(const char *path, const void *data, size_t len, unsigned mode,
                            char *err, size_t errlen)
{
    char tmp[PATH_MAX], dir[PATH_MAX];
    const char *slash;
    int fd = -1, dfd;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", path) >= (int)sizeof(tmp)) {
        certs_errf(err, errlen, "%s: path too long", path);
        return CERTS_ERR_IO;
    }
    fd = mkstemp(tmp); /* created 0600, so a key is never readable by others */
    if (fd < 0) {
        certs_errf(err, errlen, "%s: %s", tmp, strerror(errno));
        return CERTS_ERR_IO;
    }
    if (fchmod(fd, (mode_t)mode) < 0 || write_all(fd, data, len) < 0 || fsync(fd) < 0) {
        certs_errf(err, errlen, "%s: %s", tmp, strerror(errno));
        goto fail;
    }
    if (close(fd) < 0) {
        fd = -1;
        certs_errf(err, errlen, "%s: %s", tmp, strerror(errno));
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) < 0) {
        certs_errf(err, errlen, "%s: %s", path, strerror(errno));
        goto fail;
    }
    /* Make the rename itself durable. */
    slash = strrchr(path, '/');
    if (slash == NULL)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == path)
        snprintf(dir, sizeof(dir), "/");
    else
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return CERTS_ERR_IO;
}

/* Never prompt on a terminal for a passphrase: certs/ is a library. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

/* After a PEM read loop: end of input shows as PEM_R_NO_START_LINE. */
static int pem_clean_end(void)
{
    unsigned long e = ERR_peek_last_error();
    if (e == 0 || (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)) {
        ERR_clear_error();
        return 1;
    }
    return 0;
}

int certs_pem_certs(const char *data, size_t len, STACK_OF(X509) * *out, char *err, size_t errlen)
{
    STACK_OF(X509) *sk = NULL;
    BIO *bio = NULL;
    X509 *x;
    int rc = CERTS_ERR_NOMEM;

    if (len > INT_MAX) {
        certs_errf(err, errlen, "PEM input too large");
        return CERTS_ERR_TOO_LARGE;
    }
    ERR_clear_error();
    sk = sk_X509_new_null();
    bio = BIO_new_mem_buf(data, (int)len);
    if (sk == NULL || bio == NULL) {
        certs_errf(err, errlen, "out of memory");
        goto fail;
    }
    while ((x = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL)) != NULL) {
        if (!sk_X509_push(sk, x)) {
            X509_free(x);
            certs_errf(err, errlen, "out of memory");
            goto fail;
        }
    }
    if (!pem_clean_end()) {
        rc = CERTS_ERR_PARSE;
        certs_ossl_err(err, errlen, "bad PEM certificate");
        goto fail;
    }
    if (sk_X509_num(sk) == 0) {
        rc = CERTS_ERR_NOT_FOUND;
        certs_errf(err, errlen, "no certificate found");
        goto fail;
    }
    BIO_free(bio);
    *out = sk;
    return 0;
fail:
    BIO_free(bio);
    sk_X509_pop_free(sk, X509_free);
    return rc;
}

int certs_pem_key(const char *data, size_t len, EVP_PKEY **out, char *err, size_t errlen)
{
    BIO *bio;
    EVP_PKEY *k;

    if (len > INT_MAX) {
        certs_errf(err, errlen, "PEM input too large");
        return CERTS_ERR_TOO_LARGE;
    }
    /* OpenSSL 3's decoders report a key-less file as "unsupported";
     * say what is actually wrong. */
    if (memmem(data, len, "PRIVATE KEY-----", 16) == NULL) {
        certs_errf(err, errlen, "no private key found");
        return CERTS_ERR_NOT_FOUND;
    }
    ERR_clear_error();
    bio = BIO_new_mem_buf(data, (int)len);
    if (bio == NULL) {
        certs_errf(err, errlen, "out of memory");
        return CERTS_ERR_NOMEM;
    }
    k = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    BIO_free(bio);
    if (k == NULL) {
        unsigned long e = ERR_peek_last_error();
        int none = ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE;
        certs_ossl_err(err, errlen, none ? "no private key found" : "bad PEM private key");
        return none ? CERTS_ERR_NOT_FOUND : CERTS_ERR_PARSE;
    }
    *out = k;
    return 0;
}

int certs_der_certs(const unsigned char *der, size_t len, size_t max, STACK_OF(X509) * *out,
                    char *err, size_t errlen)
{
    STACK_OF(X509) *sk = NULL;
    const unsigned char *p = der, *end = der + len;
    int rc = CERTS_ERR_NOMEM;

    if (len > CERTS_MAX_FILE) {
        certs_errf(err, errlen, "DER input is %zu bytes, limit %d", len, CERTS_MAX_FILE);
        return CERTS_ERR_TOO_LARGE;
    }
    if (len == 0) {
        certs_errf(err, errlen, "no certificate found");
        return CERTS_ERR_NOT_FOUND;
    }
    ERR_clear_error();
    sk = sk_X509_new_null();
    if (sk == NULL) {
        certs_errf(err, errlen, "out of memory");
        return CERTS_ERR_NOMEM;
    }
    /* ASN.1 DER certificates back to back (SPIFFE Workload API 5.2.1):
     * d2i_X509 moves p past each one; whatever does not parse as a whole
     * certificate, trailing bytes included, refuses the input. */
    while (p < end) {
        const unsigned char *start = p;
        X509 *x;
        if ((size_t)sk_X509_num(sk) >= max) {
            rc = CERTS_ERR_TOO_LARGE;
            certs_errf(err, errlen, "more than %zu certificates", max);
            goto fail;
        }
        x = d2i_X509(NULL, &p, (long)(end - p));
        if (x == NULL || p <= start) {
            X509_free(x);
            rc = CERTS_ERR_PARSE;
            certs_ossl_err(err, errlen, "bad DER certificate");
            goto fail;
        }
        if (!sk_X509_push(sk, x)) {
            X509_free(x);
            certs_errf(err, errlen, "out of memory");
            goto fail;
        }
    }
    *out = sk;
    return 0;
fail:
    sk_X509_pop_free(sk, X509_free);
    return rc;
}

int certs_der_key(const unsigned char *der, size_t len, EVP_PKEY **out, char *err, size_t errlen)
{
    const unsigned char *p = der;
    PKCS8_PRIV_KEY_INFO *p8;
    EVP_PKEY *k;

    if (len == 0) {
        certs_errf(err, errlen, "no private key found");
        return CERTS_ERR_NOT_FOUND;
    }
    if (len > CERTS_MAX_FILE) {
        certs_errf(err, errlen, "DER key is %zu bytes, limit %d", len, CERTS_MAX_FILE);
        return CERTS_ERR_TOO_LARGE;
    }
    ERR_clear_error();
    p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, (long)len);
    if (p8 == NULL || p != der + len) {
        PKCS8_PRIV_KEY_INFO_free(p8);
        certs_ossl_err(err, errlen, "bad PKCS#8 DER private key");
        return CERTS_ERR_PARSE;
    }
    k = EVP_PKCS82PKEY(p8);
    PKCS8_PRIV_KEY_INFO_free(p8);
    if (k == NULL) {
        certs_ossl_err(err, errlen, "unusable PKCS#8 private key");
        return CERTS_ERR_PARSE;
    }
    *out = k;
    return 0;
}
