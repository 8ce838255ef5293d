/*
 * help.h - the one text of picket's command line (help.c): every command,
 * its arguments, options and exit statuses, printed by `picket help` and,
 * as the manual page picket.1, by `picket help --man` (which the build runs
 * to make the installed picket.1, so the two cannot differ).
 */
#ifndef PX_HELP_H
#define PX_HELP_H

#include <stdio.h>

/* `picket help`: every command with its synopsis and summary, then the
 * exit statuses and signals. */
void px_help_print(FILE *f);

/* The same as a manual page (man(7) roff), for `picket help --man`.
 * `version` (borrowed) goes into the page's header. */
void px_help_man(FILE *f, const char *version);

#endif
