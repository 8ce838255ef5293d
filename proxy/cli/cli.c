/*
 * cli.c - see cli.h.
 */
#include "cli.h"

#include <stdio.h>
#include <string.h>

int px_cli_opt(int argc, char **argv, int *i, const char *name, const char **val)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0)
        return 0;
    if (argv[*i][n] == '=') {
        *val = argv[*i] + n + 1;
        return 1;
    }
    if (argv[*i][n] != '\0')
        return 0;
    *val = *i + 1 < argc ? argv[++*i] : NULL;
    return 1;
}

int px_cli_vusage_error(const char *prog, const char *usage, const char *fmt, va_list ap)
{
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n%s", usage);
    return 2;
}
