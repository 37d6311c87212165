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
    int handshake_timeout_s; /* a socket must send its whole request head
                                within this; else 408 and closed. 0: 10; <0: off */
    int max_pending;         /* accepted sockets that have not sent a whole
                                request head yet; beyond it new sockets get
                                503 and are closed. 0: 1024; <0: unlimited */
    const char *static_dir;  /* NULL: no static files */
    int reuseport;           /* share the port with other processes that set
                                it too (SO_REUSEPORT: the kernel spreads the
                                connections among them) */
} sluice_server_config;

int sluice_server_new(sluice_loop *loop, const sluice_server_config *cfg,
                      const sluice_server_handlers *h, void *ud,
                      sluice_server **out, char *err, size_t errlen);
int sluice_server_port(const sluice_server *s);
size_t sluice_server_conn_count(const sluice_server *s);
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
} sluice_route_stats;
/* Calls fn once per route, in the order routes were first used. */
void sluice_server_routes(sluice_server *s,
                          void (*fn)(void *ud, const sluice_route_stats *r), void *ud);

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
void sluice_conn_set_userdata(sluice_conn *c, void *p);
void *sluice_conn_userdata(const sluice_conn *c);

/* ---- HTTP request ------------------------------------------------------ */
const char *sluice_http_method(const sluice_http_req *r);
const char *sluice_http_path(const sluice_http_req *r);
const char *sluice_http_query(const sluice_http_req *r);   /* "" if none */
const char *sluice_http_peer(const sluice_http_req *r);
void sluice_http_headers(const sluice_http_req *r, sluice_header_fn fn, void *ud);
const char *sluice_http_body(const sluice_http_req *r, size_t *len);
void sluice_http_set_userdata(sluice_http_req *r, void *p);
void *sluice_http_userdata(const sluice_http_req *r);
/* Send the response. extra_headers: NULL-terminated name, value pairs.
 * r is freed once the response is written; do not use it after this call. */
int sluice_http_respond(sluice_http_req *r, int status, const char *content_type,
                        const void *body, size_t len,
                        const char *const *extra_headers);

#ifdef __cplusplus
}
#endif
#endif
