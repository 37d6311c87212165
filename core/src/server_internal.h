/* What ws_server.c (the lws protocol), ws_accept.c (sockets), ws_upgrade.c
 * (the upgrade), tls.c and http.c (HTTP requests) share. ws_server.c calls
 * into the others, ws_upgrade.c into ws_accept.c; none calls back into
 * ws_server.c. */
#ifndef SLUICE_SERVER_INTERNAL_H
#define SLUICE_SERVER_INTERNAL_H

#include "ws_internal.h"
#include "http_status.h"

/* Per accepted socket: lws's opaque user pointer, stable across the
 * HTTP → WebSocket upgrade, and the server's handle to close it. */
struct wsi_slot {
    sluice_server *server;
    struct lws *wsi;
    struct wsi_slot *prev, *next;
    sluice_conn *conn;          /* after the upgrade */
    sluice_http_req *req;       /* during a dynamic HTTP request */
    /* Accepted, request head not complete yet: counted against
     * max_pending and closed when the handshake timer fires. */
    int pending;
    lws_sorted_usec_list_t handshake_sul;
    int close_when_flushed;     /* the answer is out once lws drained it */
    uint64_t conn_id;           /* the id its upgrade was given (ws_upgrade) */
};

/* A route's counters and open connections (a dense array, so that a
 * broadcast is one pass over it); a server's routes are a list, in
 * first-use order. */
struct sluice_route {
    struct sluice_route *next;
    sluice_route_stats st;
    sluice_conn **conns;        /* each knows its index (route_pos) */
    size_t nconns, cap;
    char path[];
};

/* What lws reads of a server's vhost for as long as the vhost lives. lws
 * destroys a vhost only once its last connection is gone, after the
 * server was freed, and compares vhost names meanwhile (choosing the vhost
 * of a new request): the block goes to the loop then (sluice_loop_keep).
 * The vhost's one protocol: lws answers an upgrade with the name of the
 * protocol it matched among those the client offered, so the name is set
 * to the subprotocol chosen just before lws looks. */
struct sluice_vhost_names {
    struct lws_protocols protocols[2];
    char protocol_name[64];
    char vhost_name[32];
};

struct sluice_server {
    sluice_loop *loop;
    struct lws_vhost *vh;
    sluice_server_handlers h;
    void *ud;
    size_t max_message, max_body, send_queue_max;
    int max_connections;
    int max_per_address;        /* open WebSockets per client address */
    int handshake_timeout_s;    /* <= 0: off */
    int max_pending;            /* accepted sockets before their request head */
    size_t npending;
    uint64_t last_refusal_log_ms;
    char *static_dir;
    lws_retry_bo_t idle_policy;
    int listen_fd;
    sluice_watch *listen_watch;
    int port;
    struct wsi_slot *slots;
    sluice_conn *conns;
    size_t nconns;
    struct sluice_route *routes;
    struct sluice_conn_sink sink;   /* what its connections share */
    /* TLS: the files (reloaded from these paths) and the vhost's SSL_CTX */
    char *tls_cert, *tls_key, *tls_ca;
    void *ssl_ctx;
    struct sluice_vhost_names *names;
    int cb_depth;               /* inside this server's lws callback */
    int free_pending;
    lws_sorted_usec_list_t free_sul;
};

/* ws_accept.c: the listening socket and accepted sockets before their
 * request head (counted in npending until sluice_slot_unpend). */
int sluice_listen_tcp(const char *host, int port, int reuseport, int *out_fd, int *out_port,
                      char *err, size_t errlen);
void sluice_server_on_listen(sluice_watch *w, void *ud);
void sluice_slot_unpend(struct wsi_slot *slot);

/* ws_upgrade.c: LWS_CALLBACK_HTTP_CONFIRM_UPGRADE of a slot. */
int sluice_upgrade_confirm(sluice_server *s, struct wsi_slot *slot);

/* tls.c: the server's TLS files, read and checked by sluice_server_new;
 * loaded into the vhost's SSL_CTX once lws made it (0, or 1 logged). */
int sluice_tls_server_config(sluice_server *s, const sluice_server_config *cfg,
                             char *err, size_t errlen);
int sluice_tls_server_ctx(sluice_server *s, void *ssl_ctx);

/* tls.c: load a certificate (chain) and key, or client CAs, from PEM files
 * into an SSL_CTX; with ssl_ctx NULL only read and check them. */
int sluice_tls_use_pair(void *ssl_ctx, const char *cert, const char *key,
                        char *err, size_t errlen);
int sluice_tls_use_ca(void *ssl_ctx, const char *ca, char *err, size_t errlen);

/* http.c: the lws HTTP events of a slot. A negative return asks lws to
 * close the socket. */
int sluice_http_on_request(sluice_server *s, struct wsi_slot *slot, const char *path);
int sluice_http_on_body(sluice_server *s, struct wsi_slot *slot, const void *in, size_t len);
int sluice_http_on_body_complete(sluice_server *s, struct wsi_slot *slot);
int sluice_http_on_writeable(struct wsi_slot *slot);
/* The client is gone or the transaction ended: the handler of a request
 * still unanswered hears of it (http_abort), and the request is freed. */
void sluice_http_detach(struct wsi_slot *slot);

#endif
