/* WebSocket and HTTP server: one listening socket per server (ours, so that
 * port errors are exact and listening can stop; ws_accept.c), accepted
 * sockets handed to an lws vhost that has no listener of its own, and the
 * lws protocol that routes their events: the upgrade to ws_upgrade.c, the
 * HTTP requests to http.c, the connections to ws_conn.c, TLS to tls.c. */
#include "server_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define DEFAULT_MAX_MESSAGE (1024u * 1024u)
#define DEFAULT_MAX_BODY (1024u * 1024u)
#define DEFAULT_SEND_QUEUE (8u * 1024u * 1024u)
#define DEFAULT_IDLE_S 60
#define DEFAULT_HANDSHAKE_S 10
#define DEFAULT_MAX_PENDING 1024

/* The route of path; with add, added on its first connection (only
 * declared routes are accepted, so the list stays as short as the app's
 * routes). */
static struct sluice_route *route_find(sluice_server *s, const char *path, int add)
{
    struct sluice_route **tail = &s->routes;
    for (; *tail; tail = &(*tail)->next)
        if (strcmp((*tail)->path, path) == 0)
            return *tail;
    if (!add)
        return NULL;
    size_t len = strlen(path);
    struct sluice_route *r = calloc(1, sizeof *r + len + 1);
    if (!r)
        return NULL;
    memcpy(r->path, path, len + 1);
    r->st.path = r->path;
    *tail = r;
    return r;
}

static struct sluice_route *route_of_conn(sluice_conn *c)
{
    return (struct sluice_route *)((char *)c->route - offsetof(struct sluice_route, st));
}

/* c joins its route's array (c->route set). */
static int route_add(sluice_conn *c)
{
    struct sluice_route *r = route_of_conn(c);
    if (r->nconns == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 16;
        sluice_conn **a = realloc(r->conns, cap * sizeof *a);
        if (!a)
            return -1;
        r->conns = a;
        r->cap = cap;
    }
    c->route_pos = r->nconns;
    r->conns[r->nconns++] = c;
    return 0;
}

/* c leaves it: the last one takes its place. */
static void route_remove(sluice_conn *c)
{
    struct sluice_route *r = route_of_conn(c);
    sluice_conn *last = r->conns[--r->nconns];
    r->conns[c->route_pos] = last;
    last->route_pos = c->route_pos;
    if (r->nconns == 0 && r->cap > 1024) {
        /* a crowd gone does not pin its array */
        free(r->conns);
        r->conns = NULL;
        r->cap = 0;
    }
}

int sluice_server_broadcast(sluice_server *s, const char *path, const void *data, size_t len,
                            int binary, size_t *count)
{
    if (count)
        *count = 0;
    if (!s || !path || (!data && len))
        return SLUICE_EINVAL;
    struct sluice_route *r = route_find(s, path, 0);
    if (!r || !r->nconns)
        return SLUICE_OK;
    sluice_payload *p = sluice_payload_new(data, len);
    if (!p)
        return SLUICE_ENOMEM;
    size_t n = 0;
    /* Queueing never removes a connection from the array (a full queue
     * only begins its close), so the pass sees each once. */
    for (size_t i = 0; i < r->nconns; i++) {
        if (i + SLUICE_PREFETCH_AHEAD < r->nconns)
            sluice_conn_prefetch(r->conns[i + SLUICE_PREFETCH_AHEAD]);
        n += sluice_conn_send_payload(r->conns[i], p, binary) == SLUICE_OK;
    }
    sluice_payload_release(p);
    if (count)
        *count = n;
    return SLUICE_OK;
}

void sluice_server_routes(sluice_server *s,
                          void (*fn)(void *ud, const sluice_route_stats *r), void *ud)
{
    if (!s)
        return;
    for (struct sluice_route *r = s->routes; r; r = r->next)
        r->st.queued_bytes = 0;
    for (sluice_conn *c = s->conns; c; c = c->next)
        if (c->route)
            c->route->queued_bytes += c->queued;
    for (struct sluice_route *r = s->routes; r; r = r->next)
        fn(ud, &r->st);
}

static int on_established(sluice_server *s, struct wsi_slot *slot)
{
    struct lws *wsi = slot->wsi;
    sluice_conn *c = sluice_conn_alloc(s->loop, &s->h.ws, s->ud, 0, s->max_message,
                                       s->send_queue_max);
    if (!c)
        return -1;
    c->sink = &s->sink;
    c->wsi = wsi;
    if (slot->conn_id)
        c->id = slot->conn_id;      /* the id its upgrade was decided under */
    c->state = SLUICE_CONN_OPEN;
    /* Frames are built here (compressed here with permessage-deflate)
     * and written raw, many per send(). */
    c->coalesce = 1;
    c->deflate_bits = sluice_conn_deflate_bits(wsi);
    sluice_conn_limit_unsent(c, 1);
    c->path = sluice_copy_path(wsi);
    if (!c->path || sluice_copy_request(wsi, &c->query, c->peer, sizeof c->peer,
                                        &c->headers, &c->nheaders)) {
        sluice_conn_destroy(c);
        return -1;
    }
    struct sluice_route *r = route_find(s, c->path, 1);
    if (r)
        c->route = &r->st;
    if (!r || route_add(c)) {
        sluice_conn_destroy(c);
        return -1;
    }
    c->route->connections++;
    c->route->opened++;
    SLUICE_LIST_PUSH(s->conns, c);
    s->nconns++;
    slot->conn = c;
    return sluice_conn_on_open(c);
}

/* The sink's closed hook: c leaves the server's list. */
static void conn_gone(struct sluice_conn_sink *sink, sluice_conn *c)
{
    sluice_server *s = (sluice_server *)((char *)sink - offsetof(sluice_server, sink));
    SLUICE_LIST_UNLINK(s->conns, c);
    s->nconns--;
    c->route->connections--;
    route_remove(c);
}

/* ---- the lws protocol -------------------------------------------------------- */

static void slot_release(struct wsi_slot *slot)
{
    sluice_server *s = slot->server;
    sluice_slot_unpend(slot);
    if (slot->wsi)
        lws_set_opaque_user_data(slot->wsi, NULL);
    sluice_http_detach(slot);
    if (slot->conn) {
        sluice_conn *c = slot->conn;
        slot->conn = NULL;
        sluice_conn_on_closed(c, "connection lost");
    }
    SLUICE_LIST_UNLINK(s->slots, slot);
    free(slot);
}

static int slot_callback(sluice_server *s, struct wsi_slot *slot,
                         enum lws_callback_reasons reason, void *in, size_t len)
{
    if (s->free_pending) {
        /* Freed from a callback, destroyed shortly: no new user events. */
        switch (reason) {
        case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        case LWS_CALLBACK_ESTABLISHED:
        case LWS_CALLBACK_HTTP:
            return -1;
        case LWS_CALLBACK_RECEIVE:
        case LWS_CALLBACK_HTTP_BODY:
        case LWS_CALLBACK_HTTP_BODY_COMPLETION:
            return 0;
        default:
            break;
        }
    }
    switch (reason) {
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return sluice_upgrade_confirm(s, slot);
    case LWS_CALLBACK_ESTABLISHED:
        return on_established(s, slot);
    case LWS_CALLBACK_RECEIVE:
        return slot->conn ? sluice_conn_on_receive(slot->conn, in, len) : -1;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return slot->conn ? sluice_conn_on_writeable(slot->conn) : -1;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (slot->conn)
            sluice_conn_on_peer_close(slot->conn, in, len);
        return 0;
    case LWS_CALLBACK_CLOSED:
        if (slot->conn) {
            sluice_conn *c = slot->conn;
            slot->conn = NULL;
            sluice_conn_on_closed(c, "connection lost");
        }
        return 0;
    case LWS_CALLBACK_HTTP:
        sluice_slot_unpend(slot);
        return sluice_http_on_request(s, slot, in ? (const char *)in : "/");
    case LWS_CALLBACK_HTTP_BODY:
        return sluice_http_on_body(s, slot, in, len);
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        return sluice_http_on_body_complete(s, slot);
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return sluice_http_on_writeable(slot);
    case LWS_CALLBACK_HTTP_FILE_COMPLETION:
        return -1;          /* the file is sent; closed (see send_status in http.c) */
    case LWS_CALLBACK_CLOSED_HTTP:
        sluice_http_detach(slot);
        return 0;
    case LWS_CALLBACK_WSI_DESTROY:
        slot->wsi = NULL;      /* already being freed by lws */
        slot_release(slot);
        return 0;
    default:
        return 0;
    }
}

static void server_destroy_now(sluice_server *s);

static void deferred_free(lws_sorted_usec_list_t *sul)
{
    server_destroy_now(lws_container_of(sul, sluice_server, free_sul));
}

static int server_callback(struct lws *wsi, enum lws_callback_reasons reason,
                           void *user, void *in, size_t len)
{
    switch (reason) {
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        return 0;
    case LWS_CALLBACK_OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS:
        /* the vhost's SSL_CTX is made: our files go in (checked already) */
        return sluice_tls_server_ctx(lws_get_vhost_user((struct lws_vhost *)in), user);
    case LWS_CALLBACK_OPENSSL_PERFORM_CLIENT_CERT_VERIFICATION:
        /* lws accepts whatever this returns 0 for: OpenSSL's verdict */
        return len ? 0 : 1;
    default:
        break;
    }
    struct wsi_slot *slot = lws_get_opaque_user_data(wsi);
    if (!slot) {
        /* Not one of ours (lws internals) or its server is gone. */
        switch (reason) {
        case LWS_CALLBACK_RECEIVE:
        case LWS_CALLBACK_SERVER_WRITEABLE:
        case LWS_CALLBACK_HTTP:
        case LWS_CALLBACK_HTTP_BODY:
        case LWS_CALLBACK_HTTP_WRITEABLE:
            return -1;
        default:
            return 0;
        }
    }
    sluice_server *s = slot->server;
    s->cb_depth++;
    int rc = slot_callback(s, slot, reason, in, len);
    s->cb_depth--;
    (void)user;
    return rc;
}

/* permessage-deflate (RFC 7692), offered when the server is configured
 * with it: lws negotiates it and inflates what clients send; what we send
 * is framed and compressed here (ws_queue.c, ws_payload.c). */
static const struct lws_extension server_extensions[] = {
    { "permessage-deflate", lws_extension_callback_pm_deflate, "permessage-deflate" },
    { NULL, NULL, NULL }
};

/* ---- public API ---------------------------------------------------------------- */

static void server_config_free(sluice_server *s)
{
    /* lws may read them until the vhost is gone: the loop frees them */
    if (s->vh) sluice_loop_keep(s->loop, s->names);
    else free(s->names);
    free(s->static_dir);
    free(s->tls_cert);
    free(s->tls_key);
    free(s->tls_ca);
    free(s);
}

int sluice_server_new(sluice_loop *loop, const sluice_server_config *cfg,
                      const sluice_server_handlers *h, void *ud,
                      sluice_server **out, char *err, size_t errlen)
{
    if (!loop || !cfg || !out || cfg->port < 0 || cfg->port > 65535) {
        sluice_errf(err, errlen, "invalid server configuration");
        return SLUICE_EINVAL;
    }
    sluice_server *s = calloc(1, sizeof *s);
    if (!s) {
        sluice_errf(err, errlen, "out of memory");
        return SLUICE_ENOMEM;
    }
    s->loop = loop;
    s->names = calloc(1, sizeof *s->names);
    if (!s->names) {
        free(s);
        sluice_errf(err, errlen, "out of memory");
        return SLUICE_ENOMEM;
    }
    s->sink.closed = conn_gone;
    if (h)
        s->h = *h;
    s->ud = ud;
    s->max_message = cfg->max_message ? cfg->max_message : DEFAULT_MAX_MESSAGE;
    s->max_body = cfg->max_body ? cfg->max_body : DEFAULT_MAX_BODY;
    s->send_queue_max = cfg->send_queue_max ? cfg->send_queue_max : DEFAULT_SEND_QUEUE;
    s->max_connections = cfg->max_connections;
    s->max_per_address = cfg->max_per_address;
    s->handshake_timeout_s = cfg->handshake_timeout_s ? cfg->handshake_timeout_s
                                                      : DEFAULT_HANDSHAKE_S;
    s->max_pending = cfg->max_pending ? cfg->max_pending : DEFAULT_MAX_PENDING;
    s->listen_fd = -1;
    int rc = sluice_tls_server_config(s, cfg, err, errlen);
    if (!rc && cfg->static_dir && !(s->static_dir = sluice_strdup(cfg->static_dir)))
        rc = SLUICE_ENOMEM;
    if (!rc)
        rc = sluice_listen_tcp(cfg->host, cfg->port, cfg->reuseport, &s->listen_fd, &s->port, err, errlen);
    if (rc) {
        server_config_free(s);
        return rc;
    }

    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    /* lws keeps the pointer (and compares it while serving): it lives as
     * long as the server */
    snprintf(s->names->vhost_name, sizeof s->names->vhost_name, "sluice-%d", s->port);
    info.vhost_name = s->names->vhost_name;
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
    snprintf(s->names->protocol_name, sizeof s->names->protocol_name, "sluice-ws");
    s->names->protocols[0].name = s->names->protocol_name;
    s->names->protocols[0].callback = server_callback;
    info.protocols = s->names->protocols;
    info.options = LWS_SERVER_OPTION_VALIDATE_UTF8;
    info.user = s;
    if (cfg->deflate)
        info.extensions = server_extensions;
    if (s->tls_cert) {
        /* lws makes the SSL_CTX; the files go in at
         * LOAD_EXTRA_SERVER_VERIFY_CERTS (server_callback). HTTP/1.1 only:
         * the HTTP side answers with HTTP/1 semantics (http.c). */
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT |
                        LWS_SERVER_OPTION_CREATE_VHOST_SSL_CTX;
        if (s->tls_ca)
            info.options |= LWS_SERVER_OPTION_REQUIRE_VALID_OPENSSL_CLIENT_CERT;
        info.alpn = "http/1.1";
    }
    /* lws's own limit on an incomplete request head (10 s by default) is
     * kept above ours, so that ours answers 408 first. */
    if (s->handshake_timeout_s > 0)
        info.timeout_secs_ah_idle = (unsigned)s->handshake_timeout_s + 5;
    if (cfg->idle_timeout_s >= 0) {
        int secs = cfg->idle_timeout_s ? cfg->idle_timeout_s : DEFAULT_IDLE_S;
        if (secs > 30000)
            secs = 30000;
        s->idle_policy.secs_since_valid_ping = (uint16_t)secs;
        s->idle_policy.secs_since_valid_hangup = (uint16_t)(2 * secs);
        info.retry_and_idle_policy = &s->idle_policy;
    }
    s->vh = lws_create_vhost(loop->ctx, &info);
    if (!s->vh) {
        sluice_errf(err, errlen, "cannot create libwebsockets vhost for port %d%s", s->port,
             s->tls_cert ? " with TLS" : "");
        close(s->listen_fd);
        server_config_free(s);
        return SLUICE_EIO;
    }
    rc = sluice_watch_new(loop, s->listen_fd, sluice_server_on_listen, s, &s->listen_watch,
                          err, errlen);
    if (rc) {
        lws_vhost_destroy(s->vh);
        close(s->listen_fd);
        server_config_free(s);
        return rc;
    }
    *out = s;
    return SLUICE_OK;
}

int sluice_server_port(const sluice_server *s) { return s ? s->port : 0; }
size_t sluice_server_conn_count(const sluice_server *s) { return s ? s->nconns : 0; }

void sluice_server_pause_reading(sluice_server *s, int paused)
{
    if (!s)
        return;
    s->sink.paused = paused ? 1 : 0;
    for (sluice_conn *c = s->conns; c; c = c->next)
        sluice_conn_apply_flow(c);
}

void sluice_server_stop_listening(sluice_server *s)
{
    if (!s || s->listen_fd < 0)
        return;
    sluice_watch_free(s->listen_watch);
    s->listen_watch = NULL;
    /* The watch's duplicate of the socket closes only when the loop next
     * runs lws' timers; shutdown stops the listening now (new connections
     * are refused while a drain blocks the loop). */
    shutdown(s->listen_fd, SHUT_RDWR);
    close(s->listen_fd);
    s->listen_fd = -1;
}

void sluice_server_close_all(sluice_server *s, int code, const char *reason)
{
    if (!s)
        return;
    for (sluice_conn *c = s->conns; c; c = c->next)
        sluice_conn_close(c, code, reason);
}

/* Reports every connection closed (1006) and every pending request
 * aborted, so no user callback follows sluice_server_free. */
static void detach_user(sluice_server *s)
{
    for (struct wsi_slot *slot = s->slots; slot; slot = slot->next) {
        sluice_http_detach(slot);
        if (slot->conn) {
            sluice_conn *c = slot->conn;
            slot->conn = NULL;
            c->peer_code = 0;
            c->close_code = 0;
            sluice_conn_on_closed(c, "server closed");
        }
    }
}

static void server_destroy_now(sluice_server *s)
{
    s->free_pending = 1;        /* a close handler calling free again is a no-op */
    sluice_server_stop_listening(s);
    detach_user(s);
    while (s->slots) {
        struct wsi_slot *slot = s->slots;
        lws_set_timeout(slot->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_SYNC);
        /* A WebSocket may linger for its close handshake; cut it loose. */
        if (s->slots == slot)
            slot_release(slot);
    }
    lws_vhost_destroy(s->vh);
    free(s->sink.wbuf);
    sluice_conn_sink_release(&s->sink);
    while (s->routes) {
        struct sluice_route *r = s->routes;
        s->routes = r->next;
        free(r->conns);
        free(r);
    }
    server_config_free(s);
}

void sluice_server_free(sluice_server *s)
{
    if (!s || s->free_pending)
        return;
    if (s->cb_depth > 0) {
        /* Called from one of this server's callbacks: lws still holds the
         * wsi being serviced, so the sockets and the vhost go from the
         * timer list; the user hears of every close now. */
        s->free_pending = 1;
        sluice_server_stop_listening(s);
        detach_user(s);
        sluice_loop_defer(s->loop, &s->free_sul, deferred_free);
        return;
    }
    server_destroy_now(s);
}
