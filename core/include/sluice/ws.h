/* WebSocket and HTTP on one port (server), WebSocket client, and the
 * connection object both share. Built on libwebsockets. */
#ifndef SLUICE_WS_H
#define SLUICE_WS_H

#include <stddef.h>
#include <stdint.h>
#include "sluice/loop.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sluice_server sluice_server;
typedef struct sluice_conn sluice_conn;       /* a WebSocket, server or client side */
typedef struct sluice_http_req sluice_http_req;
typedef struct sluice_upgrade sluice_upgrade; /* a WebSocket request before its 101 */

/* Close codes used by the core (RFC 6455). */
enum sluice_close_code {
    SLUICE_CLOSE_NORMAL = 1000,
    SLUICE_CLOSE_GOING_AWAY = 1001,
    SLUICE_CLOSE_PROTOCOL = 1002,
    SLUICE_CLOSE_NO_STATUS = 1005,
    SLUICE_CLOSE_ABNORMAL = 1006,   /* no close frame: network error, connect failure */
    SLUICE_CLOSE_INVALID_DATA = 1007,
    SLUICE_CLOSE_POLICY = 1008,     /* e.g. send queue over its limit */
    SLUICE_CLOSE_TOO_BIG = 1009,
    SLUICE_CLOSE_INTERNAL = 1011
};

/* Called for each header: name is lower-case without ':' */
typedef void (*sluice_header_fn)(void *ud, const char *name, const char *value);

/* Event handlers shared by server-side and client-side connections.
 * All run on the loop thread. */
typedef struct sluice_conn_handlers {
    void (*open)(void *ud, sluice_conn *c);
    /* A whole message (fragments already joined). data is not
     * NUL-terminated and is only valid during the call. */
    void (*message)(void *ud, sluice_conn *c, const char *data, size_t len, int binary);
    /* The connection is gone; c is freed after this returns. code is the
     * peer's close code, or 1006 if the connection ended without one
     * (including a client connect failure: then reason says why).
     * Also called for connections that never saw open (client connect
     * failure). */
    void (*close)(void *ud, sluice_conn *c, int code, const char *reason);
} sluice_conn_handlers;

/* ---- server ------------------------------------------------------------ */
typedef struct sluice_server_handlers {
    sluice_conn_handlers ws;
    /* Upgrade request for path: return nonzero to accept. Refused
     * upgrades are answered 404. NULL: accept all. */
    int (*ws_accept)(void *ud, const char *path);
    /* Then the door of an accepted path, before the 101: return 0 to
     * accept (with the subprotocol chosen by sluice_upgrade_select, if the
     * client offered any), or an HTTP status (300-599) to refuse with
     * (sluice_upgrade_refuse sets its reason and headers). u is valid
     * during the call only: libwebsockets writes the 101 in the same
     * callback, so the decision cannot be deferred. NULL: accept.
     * A client that offers subprotocols and gets none selected is
     * answered 400, never dropped. */
    int (*ws_upgrade)(void *ud, sluice_upgrade *u);
    /* Is there a dynamic HTTP handler for method+path? nonzero: yes, the
     * body is read and http_request called; zero: static files, else 404. */
    int (*http_match)(void *ud, const char *method, const char *path);
    /* The whole request is read. The handler must answer it with
     * sluice_http_respond exactly once, now or later on the loop thread. */
    void (*http_request)(void *ud, sluice_http_req *r);
    /* The client went away before the response: r is freed after this. */
    void (*http_abort)(void *ud, sluice_http_req *r);
} sluice_server_handlers;

typedef struct sluice_server_config {
    const char *host;        /* NULL: all interfaces */
    int port;                /* 0: ephemeral (see sluice_server_port) */
    size_t max_message;      /* 0: 1 MiB; larger messages close with 1009 */
    size_t max_body;         /* HTTP request body limit; 0: 1 MiB (413 above) */
    int idle_timeout_s;      /* ping an idle socket after this, hang up if no
                                pong within as long again; 0: 60; <0: off */
    size_t send_queue_max;   /* bytes queued per connection before the slow-
                                reader policy (close 1008); 0: 8 MiB */
    int max_connections;     /* 0: unlimited; above it upgrades get 503 */
    int max_per_address;     /* WebSockets open from one client address;
                                0: unlimited; above it upgrades get 429 */
    int handshake_timeout_s; /* a socket must send its whole request head
                                within this; else 408 and closed. 0: 10; <0: off */
    int max_pending;         /* accepted sockets that have not sent a whole
                                request head yet; beyond it new sockets get
                                503 and are closed. 0: 1024; <0: unlimited */
    const char *static_dir;  /* NULL: no static files */
    /* 1: offer permessage-deflate (RFC 7692). Messages to a connection that
     * negotiated it are compressed (those of SLUICE_DEFLATE_MIN bytes and
     * more), each on its own (no context kept), so a broadcast's payload
     * is compressed once for all its connections. */
    int deflate;
    /* TLS (https:// and wss:// on the port): PEM files of the certificate
     * (its chain after it) and its private key (not encrypted); NULL:
     * plaintext. tls_ca: PEM file of the CAs whose client certificates
     * are required; NULL: none asked for. */
    const char *tls_cert, *tls_key, *tls_ca;
    int reuseport;           /* share the port with other processes that set
                                it too (SO_REUSEPORT: the kernel spreads the
                                connections among them) */
} sluice_server_config;
#define SLUICE_DEFLATE_MIN 64

int sluice_server_new(sluice_loop *loop, const sluice_server_config *cfg,
                      const sluice_server_handlers *h, void *ud,
                      sluice_server **out, char *err, size_t errlen);
int sluice_server_port(const sluice_server *s);
int sluice_server_tls(const sluice_server *s);       /* serving TLS? */
/* Reads the certificate and key files again and serves them to new
 * connections; open ones keep theirs. On failure (err says which file and
 * why) the server keeps serving the previous pair. */
int sluice_server_reload_tls(sluice_server *s, char *err, size_t errlen);
size_t sluice_server_conn_count(const sluice_server *s);
/* Queues data to every open WebSocket of route path (no connection:
 * nothing) with one shared copy, as sluice_conn_send_payload does for each
 * (same queue limit: a full one is closed with 1008 and not counted);
 * *count (may be NULL): how many took it. SLUICE_ENOMEM: none did. */
int sluice_server_broadcast(sluice_server *s, const char *path, const void *data, size_t len,
                            int binary, size_t *count);
/* Stop (or resume) reading from every WebSocket of this server: TCP flow
 * control pushes back on clients. Connections opened meanwhile start paused. */
void sluice_server_pause_reading(sluice_server *s, int paused);
/* Stop accepting new connections (listening socket closed). */
void sluice_server_stop_listening(sluice_server *s);
/* Close every WebSocket with code/reason (close handlers run later, as each
 * closes). */
void sluice_server_close_all(sluice_server *s, int code, const char *reason);
/* Frees the server; connections still open are dropped and their close
 * handlers are called with 1006 before this returns. */
void sluice_server_free(sluice_server *s);

/* Traffic of one WebSocket route (a path with an accepted upgrade), counted
 * since the server started. Messages out are counted when queued. */
typedef struct sluice_route_stats {
    const char *path;
    size_t connections;         /* open now */
    uint64_t opened;            /* connections accepted, ever */
    uint64_t messages_in, bytes_in, messages_out, bytes_out;
    size_t queued_bytes;        /* in its connections' send queues now */
    uint64_t rate_paused;       /* reading paused for a rate limit, times */
    uint64_t rate_closed;       /* connections closed for a rate limit */
} sluice_route_stats;
/* Calls fn once per route, in the order routes were first used. */
void sluice_server_routes(sluice_server *s,
                          void (*fn)(void *ud, const sluice_route_stats *r), void *ud);

/* ---- WebSocket upgrade request (ws_upgrade) -------------------------------- */
/* The id its connection will have if it is accepted (sluice_conn_id). */
uint64_t sluice_upgrade_id(const sluice_upgrade *u);
const char *sluice_upgrade_path(const sluice_upgrade *u);
const char *sluice_upgrade_query(const sluice_upgrade *u);   /* "" if none */
const char *sluice_upgrade_peer(const sluice_upgrade *u);
/* The headers libwebsockets knows by name (as sluice_conn_headers). */
void sluice_upgrade_headers(const sluice_upgrade *u, sluice_header_fn fn, void *ud);
/* Any header by name (case-insensitive), custom ones (x-api-key)
 * included: a malloc'd copy (free it), or NULL if absent. */
char *sluice_upgrade_header(const sluice_upgrade *u, const char *name);
/* The subprotocols the client offers (Sec-WebSocket-Protocol), in order. */
size_t sluice_upgrade_protocol_count(const sluice_upgrade *u);
const char *sluice_upgrade_protocol(const sluice_upgrade *u, size_t i);
/* Accept with this subprotocol: it must be one the client offered
 * (else SLUICE_EINVAL). */
int sluice_upgrade_select(sluice_upgrade *u, const char *protocol);
/* The refusal's reason (the JSON body's "error") and extra headers
 * (NULL-terminated name, value pairs, or NULL), for a nonzero return of
 * ws_upgrade. */
int sluice_upgrade_refuse(sluice_upgrade *u, const char *reason, const char *const *headers);

/* ---- client ------------------------------------------------------------ */
typedef struct sluice_client_config {
    size_t max_message;      /* 0: 1 MiB */
    size_t send_queue_max;   /* 0: 8 MiB */
    const char *const *headers; /* NULL-terminated name, value pairs, or NULL */
    const char *protocol;    /* Sec-WebSocket-Protocol, or NULL */
} sluice_client_config;

/* Connects to a ws:// (or wss://) URL. On success *out is a connection that
 * is not open yet: handlers.open runs when the handshake completes, or
 * handlers.close (1006, reason) if it fails. */
int sluice_client_connect(sluice_loop *loop, const char *url,
                          const sluice_client_config *cfg,
                          const sluice_conn_handlers *h, void *ud,
                          sluice_conn **out, char *err, size_t errlen);

/* ---- connection -------------------------------------------------------- */
uint64_t sluice_conn_id(const sluice_conn *c);      /* unique in the process */
int sluice_conn_is_client(const sluice_conn *c);
int sluice_conn_is_open(const sluice_conn *c);      /* handshake done, not closing */
const char *sluice_conn_path(const sluice_conn *c); /* "/stream" */
const char *sluice_conn_query(const sluice_conn *c);/* "a=1&b=2" or "" */
const char *sluice_conn_peer(const sluice_conn *c); /* peer IP */
void sluice_conn_headers(const sluice_conn *c, sluice_header_fn fn, void *ud);
/* Queue a message. SLUICE_ECLOSED if closing/closed; SLUICE_EFULL if the
 * send queue would pass its limit (the connection is then closed with 1008
 * "send queue full"). */
int sluice_conn_send(sluice_conn *c, const void *data, size_t len, int binary);
size_t sluice_conn_queued_bytes(const sluice_conn *c);

/* One message for many connections (a broadcast): a single copy of data,
 * referenced from each connection's queue instead of copied into it.
 * sluice_payload_new returns it with one reference (the caller's), or
 * NULL if out of memory; release that reference when done queueing. */
typedef struct sluice_payload sluice_payload;
sluice_payload *sluice_payload_new(const void *data, size_t len);
void sluice_payload_release(sluice_payload *p);
/* sluice_conn_send for a shared payload: the same results and the same
 * queue limit (each connection counts the payload's full size). */
int sluice_conn_send_payload(sluice_conn *c, sluice_payload *p, int binary);
/* Close after the queued messages are sent. code 0: 1000. */
int sluice_conn_close(sluice_conn *c, int code, const char *reason);
void sluice_conn_pause_reading(sluice_conn *c, int paused);

/* Token buckets on what the peer sends: a message takes one token from
 * the message bucket and its length from the byte bucket; the buckets
 * refill at the given rates up to their burst sizes. A message that
 * leaves a bucket short is delivered, then the connection stops reading
 * (TCP pushes back on the peer) until the buckets are back to zero: the
 * peer gets the rate, on average, and no timer runs unless it is over.
 * With close set, the message is not delivered and the connection is
 * closed with 1008 "rate limit: messages/s" (or "bytes/s"). */
typedef struct sluice_rate {
    double messages;         /* per second; 0: no message limit */
    double bytes;            /* per second; 0: no byte limit */
    double burst;            /* messages the bucket holds; 0: max(messages, 1) */
    double burst_bytes;      /* bytes it holds; 0: bytes (one second's worth) */
    int close;               /* over the limit: close 1008 instead of pausing */
} sluice_rate;
/* Sets (r NULL: removes) the limits of a connection; its buckets start
 * full. SLUICE_EINVAL for negative rates or bursts. */
int sluice_conn_set_rate(sluice_conn *c, const sluice_rate *r);
void sluice_conn_set_userdata(sluice_conn *c, void *p);
void *sluice_conn_userdata(const sluice_conn *c);

/* ---- connection sets ---------------------------------------------------- */
/* Connections kept in one dense array (the live subscribers of a feed, say)
 * so that a broadcast to them is one pass. A connection may be in any
 * number of sets and knows its place in each: leaving is O(1), and a
 * connection that closes leaves every set it is in before its close
 * handler runs (a set never holds a connection that is gone). */
typedef struct sluice_conn_set sluice_conn_set;
/* An empty set, or NULL if out of memory. */
sluice_conn_set *sluice_conn_set_new(void);
/* Every member leaves it, then it is freed. */
void sluice_conn_set_free(sluice_conn_set *s);
/* c joins s (SLUICE_OK too if it is a member already: once per set).
 * SLUICE_ECLOSED: c is closed (its close was reported); SLUICE_ENOMEM. */
int sluice_conn_set_add(sluice_conn_set *s, sluice_conn *c);
/* c leaves s: 1 if it was a member, else 0. */
int sluice_conn_set_remove(sluice_conn_set *s, sluice_conn *c);
int sluice_conn_set_has(const sluice_conn_set *s, const sluice_conn *c);
size_t sluice_conn_set_count(const sluice_conn_set *s);
/* Queues data to every member with one shared copy, as
 * sluice_server_broadcast does for a route (same queue limit, same
 * results); *count (may be NULL): how many took it. */
int sluice_conn_set_broadcast(sluice_conn_set *s, const void *data, size_t len, int binary,
                              size_t *count);

/* ---- HTTP request ------------------------------------------------------ */
const char *sluice_http_method(const sluice_http_req *r);
const char *sluice_http_path(const sluice_http_req *r);
const char *sluice_http_query(const sluice_http_req *r);   /* "" if none */
const char *sluice_http_peer(const sluice_http_req *r);
void sluice_http_headers(const sluice_http_req *r, sluice_header_fn fn, void *ud);
/* Any header by name, custom ones included, while the request is
 * unanswered and its client connected: a malloc'd copy, or NULL. */
char *sluice_http_header(const sluice_http_req *r, const char *name);
const char *sluice_http_body(const sluice_http_req *r, size_t *len);
void sluice_http_set_userdata(sluice_http_req *r, void *p);
void *sluice_http_userdata(const sluice_http_req *r);
/* Send the response. extra_headers: NULL-terminated name, value pairs.
 * r is freed once the response is written; do not use it after this call. */
int sluice_http_respond(sluice_http_req *r, int status, const char *content_type,
                        const void *body, size_t len,
                        const char *const *extra_headers);

/* A streamed answer (e.g. text/event-stream): 200 with these headers and
 * no Content-Length; the body is what stream_write queues, sent as it
 * comes, until stream_close or the client leaves (then http_abort is
 * called and r is freed). stream_write: SLUICE_ECLOSED once it is over;
 * SLUICE_EFULL when the unsent bytes would pass send_queue_max (the
 * stream is then ended). */
int sluice_http_stream_open(sluice_http_req *r, const char *content_type,
                            const char *const *extra_headers);
int sluice_http_stream_write(sluice_http_req *r, const void *data, size_t len);
/* Ends the body once what is queued is sent; r is freed then (http_abort
 * is called). */
int sluice_http_stream_close(sluice_http_req *r);

#ifdef __cplusplus
}
#endif
#endif
