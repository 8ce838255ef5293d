/*
 * fuzz_h2tls.c - fuzz_h2's inputs (and corpus) over a real mTLS connection:
 * the worker's accept, the handshake and SVID check, then the downstream
 * HTTP/2 connection on the socket it owns, reading its TLS records itself
 * (proxy/http2/h2.c, proxy/base/send.c's wire) rather than through a
 * bufferevent pair as fuzz_h2 does. The input's chunking decides where the
 * client's records end (fuzz_conn.h, fc_run_tls). Same invariants as
 * fuzz_h2, checked on what the client decrypts.
 */
#define FC_TLS 1
#include "fuzz_h2.c"
