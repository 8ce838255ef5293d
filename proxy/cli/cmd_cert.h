/*
 * cmd_cert.h - `picket cert ...`: development CA, SVID issue, inspect and
 * verify (DESIGN.md "Identity"). Uses certs/ only; this file may print.
 */
#ifndef PX_CMD_CERT_H
#define PX_CMD_CERT_H

/* Runs `picket cert <subcommand> ...`; argv[0] is "cert". Prints results to
 * stdout and errors to stderr. Returns the process exit status: 0 success,
 * 1 refused / broken rules / operation failed, 2 usage error. */
int px_cmd_cert(int argc, char **argv);

#endif
