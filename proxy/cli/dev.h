/*
 * dev.h - `picket dev`, the local dev gateway.
 */
#ifndef PX_DEV_H
#define PX_DEV_H

int px_cmd_dev(int argc, char **argv);

#endif
