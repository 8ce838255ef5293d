/*
 * snapshot.h - building snapshots (see px.h for the type).
 */
#ifndef PX_SNAPSHOT_H
#define PX_SNAPSHOT_H

#include "px.h"

/* Builds a snapshot from cfg (taken over: freed on failure too): loads
 * trust bundles and own SVID, builds TLS contexts. Returns 0 or -1 with a
 * one-line message in err. Control thread only. */
int px_snapshot_build(struct px_snapshot **out, struct px_config *cfg, char *err, size_t errlen);

#endif
