/*
 * cli.h - argument helpers shared by the picket subcommands (cert, bundle,
 * control, inject).
 */
#ifndef PX_CLI_H
#define PX_CLI_H

#include <stdarg.h>

/* Matches argv[*i] against "--name VALUE" or "--name=VALUE". Returns 1 with
 * *val set (NULL if the value is missing; *i then points at the value), 0
 * if argv[*i] is another argument. */
int px_cli_opt(int argc, char **argv, int *i, const char *name, const char **val);

/* Prints "PROG: message\n" and the usage text to stderr; returns 2 (the
 * exit status for usage errors). */
int px_cli_vusage_error(const char *prog, const char *usage, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

#endif
