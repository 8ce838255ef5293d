/*
 * cmd_bundle.h - `picket bundle ...`: signing keys, signed policy envelopes
 * (DESIGN.md "Policy bundles": signed envelope). Uses policy/ only; this
 * file may print.
 */
#ifndef PX_CMD_BUNDLE_H
#define PX_CMD_BUNDLE_H

/* Runs `picket bundle <subcommand> ...`; argv[0] is "bundle".
 *
 *   keygen --type ed25519|p256 --out KEYFILE [--pub PUBFILE]
 *   sign   --key KEY --keyid ID --out FILE BUNDLE.json
 *   verify --key PUB [--keyid ID] FILE
 *
 * Prints results to stdout and errors to stderr. Returns the process exit
 * status: 0 success; 1 refused (verify prints "refused: <reason>:
 * <detail>") or the operation failed (an invalid bundle, an unreadable
 * file, an existing KEYFILE); 2 usage error, including a verification key
 * that cannot be loaded (then no verdict is possible). */
int px_cmd_bundle(int argc, char **argv);

#endif
