/*
 * cmd_control.h - `picket control serve`: the reference control plane
 * (control.h) from the command line. This file may print.
 */
#ifndef PX_CMD_CONTROL_H
#define PX_CMD_CONTROL_H

/* Runs `picket control <subcommand> ...`; argv[0] is "control".
 *
 *   serve --dir DIR --bind HOST:PORT --cert SVID.pem --key SVID.key
 *         --trust-bundle TD=FILE [--trust-bundle TD=FILE ...]
 *         [--allow ID_OR_PATTERN ...] [--max-wait 60s] [--max-waiters 1000]
 *
 * Logs JSON lines to stderr. Returns the process exit status: 0 after
 * SIGTERM/SIGINT; 1 when the server cannot start (unreadable SVID or
 * bundle, bind failure) or its loop fails; 2 usage error. */
int px_cmd_control(int argc, char **argv);

#endif
