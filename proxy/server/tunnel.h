/*
 * tunnel.h - opaque TCP listeners (tcp_inbound, tcp_outbound): one
 * decision per connection, then bytes relayed both ways (tunnel.c).
 */
#ifndef PX_TUNNEL_H
#define PX_TUNNEL_H

#include "px.h"

/* Takes over connection c of a tcp_inbound listener (after its mTLS
 * handshake: c->peer_id is the verified caller) or of a tcp_outbound one
 * (plaintext from the local app, at accept). tcp_inbound decides once
 * (px_enforce_tcp): a denied connection is audited and closed, nothing
 * reaches the upstream. An allowed one connects to the listener's
 * upstream (tcp_outbound: mTLS with the workload's SVID, the server's
 * checked against server_id) and relays bytes both ways: at most
 * limits.stream_buffer buffered per direction (reading stops until the
 * other side takes them), half-close propagated (TCP FIN, or TLS
 * close_notify, on to the other side once what preceded it is written),
 * closed after limits.tunnel_idle_timeout without a byte either way.
 * Installs c->ops; c is freed when the tunnel ends. 0, or -1 when out of
 * memory (the caller frees c). Worker thread. */
int px_tunnel_start(struct px_conn *c);

#endif
