/*
 * main.c - the picket binary: subcommand dispatch.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <openssl/crypto.h>

#include "cmd_bundle.h"
#include "cmd_cert.h"
#include "cmd_control.h"
#include "cmd_inject.h"
#include "cmd_policy.h"
#include "daemon.h"
#include "dev.h"
#include "help.h"
#include "tmalloc.h"

#define PICKET_VERSION "0.1.0"

/* The text is help.c's table, which the manual page is made from too. */
static void usage(FILE *f)
{
    px_help_print(f);
}

static void run_reset(void)
{
    px_run_set_node_id(NULL);
    px_run_set_probes_bind(NULL);
    px_run_set_metrics_bind(NULL);
}

#define RUN_USAGE "usage: picket run -c FILE [--node-id ID] [--probes-bind HOST:PORT] " \
                  "[--metrics-bind HOST:PORT]\n"

static int cmd_run(int argc, char **argv)
{
    const char *conf = NULL;
    int rc;
    for (int i = 1; i < argc; i++) {
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc)
            conf = argv[++i];
        else if (strcmp(argv[i], "--node-id") == 0 && i + 1 < argc)
            px_run_set_node_id(argv[++i]);
        else if (strcmp(argv[i], "--probes-bind") == 0 && i + 1 < argc)
            px_run_set_probes_bind(argv[++i]);
        else if (strcmp(argv[i], "--metrics-bind") == 0 && i + 1 < argc)
            px_run_set_metrics_bind(argv[++i]);
        else {
            fprintf(stderr, "picket run: unknown argument '%s'\n" RUN_USAGE, argv[i]);
            run_reset();
            return 2;
        }
    }
    if (conf == NULL) {
        fprintf(stderr, RUN_USAGE);
        run_reset();
        return 2;
    }
    rc = px_run(conf, NULL, NULL);
    run_reset();
    return rc;
}

/* OpenSSL's allocations, through the raw blocks of tmalloc.h. */
static void *ossl_malloc(size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    return px_rawmalloc(n);
}

static void *ossl_realloc(void *p, size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    return px_rawrealloc(p, n);
}

static void ossl_free(void *p, const char *file, int line)
{
    (void)file;
    (void)line;
    px_rawfree(p);
}

int main(int argc, char **argv)
{
    /* libevent's allocations through the per-thread classes (tmalloc.h):
     * every stream's two body buffers, their chains and its timer are made
     * and freed per request. Its calloc is then ours + memset. Before any
     * other libevent call. */
    event_set_mem_functions(px_tmalloc, px_trealloc, px_tfree);
    /* OpenSSL's TLS record buffers (16-17 KiB, read and write), which
     * SSL_MODE_RELEASE_BUFFERS makes and frees per record so that an idle
     * connection holds none, from a per-thread stack instead of glibc's
     * bins (a few percent of the CPU of small requests after a burst of
     * connections). Before any OpenSSL call; if it is refused, malloc. */
    CRYPTO_set_mem_functions(ossl_malloc, ossl_realloc, ossl_free);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "run") == 0)
        return cmd_run(argc - 1, argv + 1);
    if (strcmp(argv[1], "dev") == 0)
        return px_cmd_dev(argc - 1, argv + 1);
    if (strcmp(argv[1], "cert") == 0)
        return px_cmd_cert(argc - 1, argv + 1);
    if (strcmp(argv[1], "policy") == 0)
        return px_cmd_policy(argc - 1, argv + 1);
    if (strcmp(argv[1], "bundle") == 0)
        return px_cmd_bundle(argc - 1, argv + 1);
    if (strcmp(argv[1], "control") == 0)
        return px_cmd_control(argc - 1, argv + 1);
    if (strcmp(argv[1], "inject") == 0)
        return px_cmd_inject(argc - 1, argv + 1);
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        printf("picket %s\n", PICKET_VERSION);
        return 0;
    }
    if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0) {
        if (argc > 2 && strcmp(argv[2], "--man") == 0)
            px_help_man(stdout, PICKET_VERSION); /* picket.1, made by the build */
        else
            usage(stdout);
        return 0;
    }
    fprintf(stderr, "picket: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
