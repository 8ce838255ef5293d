/*
 * floor.h - the policy revision floor, kept across restarts.
 *
 * A sidecar refuses a bundle older than the one it holds. Held only in
 * memory, that promise ends with the process: a file server (or a
 * ConfigMap) that replays an older signed bundle after a restart would be
 * believed. So the revision and content hash of every accepted bundle are
 * written to a small file (policy-floor.json) in state_dir, or else in
 * policy.cache_dir, and read back at start: a bundle from the same source
 * older than it, or of the same revision with other content, is refused.
 * Without either directory the floor is in memory only, which picket says
 * at start (log `policy_floor_volatile`) and in /policy.
 *
 * Control thread only.
 */
#ifndef PX_FLOOR_H
#define PX_FLOOR_H

#include <stdint.h>
#include <stddef.h>

struct px_config;
struct evbuffer;

struct px_floor {
    char path[1100];     /* "" = nowhere to persist */
    char source[1100];   /* policy.url or policy.file it belongs to */
    int64_t revision;    /* -1: none */
    unsigned char sha[32];
};

/* Reads the floor for cfg's policy source, if a directory is configured
 * and it holds one for that source (a floor of another source is
 * ignored: a new source starts its own). Logs what it found. */
void px_floor_load(struct px_floor *f, const struct px_config *cfg);

/* 0 when a bundle of revision rev and content sha may be accepted; else
 * -1 with the reason in err ("revision 7 is older than 9, the floor an
 * earlier run accepted"). */
int px_floor_check(const struct px_floor *f, int64_t rev, const unsigned char sha[32], char *err,
                   size_t errlen);

/* A bundle was accepted: raises the floor and persists it (a write
 * failure is logged and counted; enforcement goes on). */
void px_floor_raise(struct px_floor *f, int64_t rev, const unsigned char sha[32]);

/* ,"floor":N,"floor_persisted":true|false for /policy. */
void px_floor_status(const struct px_floor *f, struct evbuffer *out);

#endif
