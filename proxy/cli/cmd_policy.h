/*
 * cmd_policy.h - the `picket policy` subcommand (lint, eval, test).
 */
#ifndef PX_CMD_POLICY_H
#define PX_CMD_POLICY_H

/* Runs `picket policy ...`. argv[0] is "policy", argv[1] the subcommand:
 *
 *   lint FILE    prints "ok: revision N, M rules" (and the dispatch targets
 *                the bundle uses), or "FILE:line:col: msg" on stderr;
 *                exit 0 valid, 1 invalid
 *   eval FILE --path P [--peer ID] [--method M (GET)] [--host H]
 *                [--header name=value]...
 *                normalizes P, evaluates, prints decision, rule id,
 *                dispatch target, normalized path and revision; exit 0
 *                allow, 1 deny or refused path (reason printed), 3 dispatch
 *   test FILE TABLE.json
 *                TABLE is [{"peer","method","path","host","headers":{},
 *                "expect":"allow|deny|dispatch","rule":"optional id"}];
 *                a header value may be an array for a repeated header; a
 *                path the normalizer refuses counts as "deny" by rule
 *                "400:<reason>". Prints one line per failing case and
 *                "N passed, N failed"; exit 0 only if all pass
 *
 * Usage errors and unreadable files exit 2. Prints to stdout/stderr;
 * reads FILE and TABLE; touches nothing else. Main thread only. */
int px_cmd_policy(int argc, char **argv);

#endif
