/* WebSocket and HTTP server: one listening socket per server (ours, so that
 * port errors are exact and listening can stop), accepted sockets handed to
 * an lws vhost that has no listener of its own, and the WebSocket upgrade.
 * The HTTP requests themselves are http.c's. */
#include "server_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/ssl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define DEFAULT_MAX_MESSAGE (1024u * 1024u)
#define DEFAULT_MAX_BODY (1024u * 1024u)
#define DEFAULT_SEND_QUEUE (8u * 1024u * 1024u)
#define DEFAULT_IDLE_S 60
#define DEFAULT_HANDSHAKE_S 10
#define DEFAULT_MAX_PENDING 1024
#define ACCEPTS_PER_WAKEUP 64

static void errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- sockets before their first request ----------------------------------- */

/* The request head is complete (or the socket is going): no longer pending. */
static void slot_unpend(struct wsi_slot *slot)
{
    if (!slot->pending)
        return;
    slot->pending = 0;
    slot->server->npending--;
    lws_sul_cancel(&slot->handshake_sul);
}

/* Slow-loris defence: the request head did not arrive in time. */
static void handshake_expired(lws_sorted_usec_list_t *sul)
{
    struct wsi_slot *slot = lws_container_of(sul, struct wsi_slot, handshake_sul);
    sluice_server *s = slot->server;
    if (!slot->pending || !slot->wsi)
        return;
    slot_unpend(slot);
    sluice_loop_log(s->loop, SLUICE_LOG_DEBUG,
                    "port %d: no complete request within %d s, closing the socket",
                    s->port, s->handshake_timeout_s);
    if (!s->tls_cert)       /* plaintext on a TLS socket would be noise */
        sluice_http_raw_error(lws_get_socket_fd(slot->wsi), 408);
    lws_set_timeout(slot->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

/* ---- WebSocket upgrade ------------------------------------------------------ */

static char *copy_token(struct lws *wsi, enum lws_token_indexes tok)
{
    int len = lws_hdr_total_length(wsi, tok);
    if (len <= 0)
        return sluice_strdup("/");
    char *v = malloc((size_t)len + 1);
    if (v && lws_hdr_copy(wsi, v, len + 1, tok) < 0)
        v[0] = '\0';
    return v;
}

/* Whether the Connection header lists "upgrade", read as lws reads it
 * (its 127-byte copy, its tokenizer, its prefix compare): lws hangs up
 * without an answer when it does not. */
static int connection_upgrade(struct lws *wsi)
{
    char buf[128];
    int n = lws_hdr_copy(wsi, buf, sizeof buf - 1, WSI_TOKEN_CONNECTION);
    if (n <= 0)
        return 0;
    struct lws_tokenize ts;
    lws_tokenize_init(&ts, buf, LWS_TOKENIZE_F_COMMA_SEP_LIST | LWS_TOKENIZE_F_DOT_NONTERM |
                                LWS_TOKENIZE_F_RFC7230_DELIMS | LWS_TOKENIZE_F_MINUS_NONTERM);
    ts.len = (size_t)n;
    for (;;) {
        lws_tokenize_elem e = lws_tokenize(&ts);
        if (e == LWS_TOKZE_TOKEN && !strncasecmp(ts.token, "upgrade", ts.token_len))
            return 1;
        if (e != LWS_TOKZE_TOKEN && e != LWS_TOKZE_DELIMITER)
            return 0;
    }
}

/* The handshake fields lws leaves to us: a missing key or a Connection
 * header without "upgrade" makes lws hang up without an answer, and it
 * also accepts the old draft versions 7 and 8. */
static int check_handshake(struct lws *wsi)
{
    char version[8] = "";
    if (!connection_upgrade(wsi))
        return sluice_http_error(wsi, HTTP_STATUS_BAD_REQUEST, NULL, NULL,
                                 "Connection: upgrade expected (at most 127 bytes)");
    if (lws_hdr_total_length(wsi, WSI_TOKEN_KEY) <= 0)
        return sluice_http_error(wsi, HTTP_STATUS_BAD_REQUEST, NULL, NULL,
                                 "missing Sec-WebSocket-Key");
    if (lws_hdr_copy(wsi, version, sizeof version, WSI_TOKEN_VERSION) <= 0 ||
        strcmp(version, "13"))
        /* RFC 6455 4.2.2: answered with the version we do speak */
        return sluice_http_error(wsi, 426 /* Upgrade Required */, "sec-websocket-version:", "13",
                                 "unsupported Sec-WebSocket-Version (13 expected)");
    return 0;
}

/* ---- the door: the app's decision before the 101 ------------------------------ */

static int server_callback(struct lws *wsi, enum lws_callback_reasons reason,
                           void *user, void *in, size_t len);

struct sluice_upgrade {
    struct lws *wsi;
    uint64_t id;
    const char *path;
    char *query;
    char peer[64];
    char **headers, **protocols, **extra;
    size_t nheaders, nprotocols, nextra;
    const char *selected;       /* one of protocols */
    char *reason;
};

static void upgrade_clear(struct sluice_upgrade *u)
{
    free(u->query);
    sluice_free_headers(u->headers, u->nheaders);
    for (size_t i = 0; i < u->nprotocols; i++)
        free(u->protocols[i]);
    free(u->protocols);
    sluice_free_headers(u->extra, u->nextra);
    free(u->reason);
}

/* The app's answer to an upgrade of an accepted path: 0, or the socket is
 * answered and closed. */
static int upgrade_decide(sluice_server *s, struct wsi_slot *slot, const char *path)
{
    struct sluice_upgrade u;
    memset(&u, 0, sizeof u);
    u.wsi = slot->wsi;
    u.path = path;
    if (sluice_offered_protocols(slot->wsi, &u.protocols, &u.nprotocols))
        return sluice_http_error(slot->wsi, HTTP_STATUS_BAD_REQUEST, NULL, NULL,
                                 "Sec-WebSocket-Protocol: not a list of at most 32 names "
                                 "of up to 63 characters, 127 bytes in all");
    u.id = sluice_conn_next_id();
    int status = 0;
    if (s->h.ws_upgrade) {
        u.query = sluice_copy_query(slot->wsi);
        sluice_copy_peer(slot->wsi, u.peer, sizeof u.peer);
        if (!u.query || sluice_copy_headers(slot->wsi, &u.headers, &u.nheaders)) {
            upgrade_clear(&u);
            return -1;
        }
        status = s->h.ws_upgrade(s->ud, &u);
    }
    if (!status && u.nprotocols && !u.selected) {
        status = HTTP_STATUS_BAD_REQUEST;
        free(u.reason);
        u.reason = sluice_strdup("none of the offered subprotocols (Sec-WebSocket-Protocol) "
                                 "is served at this path");
    }
    if (status) {
        if (status < 300 || status > 599)
            status = HTTP_STATUS_INTERNAL_SERVER_ERROR;
        sluice_http_error_headers(slot->wsi, status, (const char *const *)u.extra, u.reason);
        upgrade_clear(&u);
        return -1;
    }
    /* lws now matches the offered names against this one (see protocols),
     * in the client's order: a name offered before it that lws knows by
     * itself would be bound instead, away from our callbacks. */
    if (u.selected)
        snprintf(s->protocol_name, sizeof s->protocol_name, "%s", u.selected);
    for (size_t i = 0; u.selected && u.protocols[i] != u.selected; i++) {
        const struct lws_protocols *p = lws_vhost_name_to_protocol(s->vh, u.protocols[i]);
        if (p && p->callback != server_callback) {
            upgrade_clear(&u);
            return sluice_http_error(slot->wsi, HTTP_STATUS_BAD_REQUEST, NULL, NULL,
                                     "Sec-WebSocket-Protocol: a name reserved by libwebsockets");
        }
    }
    slot->conn_id = u.id;
    upgrade_clear(&u);
    return 0;
}

uint64_t sluice_upgrade_id(const sluice_upgrade *u) { return u->id; }
const char *sluice_upgrade_path(const sluice_upgrade *u) { return u->path; }
const char *sluice_upgrade_query(const sluice_upgrade *u) { return u->query ? u->query : ""; }
const char *sluice_upgrade_peer(const sluice_upgrade *u) { return u->peer; }
size_t sluice_upgrade_protocol_count(const sluice_upgrade *u) { return u->nprotocols; }

const char *sluice_upgrade_protocol(const sluice_upgrade *u, size_t i)
{
    return i < u->nprotocols ? u->protocols[i] : NULL;
}

void sluice_upgrade_headers(const sluice_upgrade *u, sluice_header_fn fn, void *ud)
{
    for (size_t i = 0; i < u->nheaders; i++)
        fn(ud, u->headers[2 * i], u->headers[2 * i + 1]);
}

char *sluice_upgrade_header(const sluice_upgrade *u, const char *name)
{
    return sluice_header_value(u->wsi, name);
}

int sluice_upgrade_select(sluice_upgrade *u, const char *protocol)
{
    for (size_t i = 0; protocol && i < u->nprotocols; i++)
        if (!strcmp(u->protocols[i], protocol)) {
            u->selected = u->protocols[i];
            return SLUICE_OK;
        }
    return SLUICE_EINVAL;
}

int sluice_upgrade_refuse(sluice_upgrade *u, const char *reason, const char *const *headers)
{
    free(u->reason);
    u->reason = reason ? sluice_strdup(reason) : NULL;
    sluice_free_headers(u->extra, u->nextra);
    u->extra = NULL;
    u->nextra = 0;
    size_t n = 0;
    while (headers && headers[2 * n] && headers[2 * n + 1])
        n++;
    /* NULL-terminated for sluice_http_error_headers */
    if (n && !(u->extra = calloc(2 * n + 2, sizeof *u->extra)))
        return SLUICE_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        size_t nl = strlen(headers[2 * i]);
        char *name = malloc(nl + 2);
        char *value = sluice_strdup(headers[2 * i + 1]);
        if (!name || !value) {
            free(name);
            free(value);
            return SLUICE_ENOMEM;
        }
        memcpy(name, headers[2 * i], nl);
        memcpy(name + nl, ":", 2);
        u->extra[2 * i] = name;
        u->extra[2 * i + 1] = value;
        u->nextra++;
    }
    return (reason && !u->reason) ? SLUICE_ENOMEM : SLUICE_OK;
}

/* Is the upgrading client's address at its max_per_address? A scan of the
 * open connections: only made when the cap is set. */
static int address_full(sluice_server *s, struct lws *wsi)
{
    char peer[64];
    size_t n = 0;
    sluice_copy_peer(wsi, peer, sizeof peer);
    for (sluice_conn *c = s->conns; c; c = c->next)
        if (strcmp(c->peer, peer) == 0 && ++n >= (size_t)s->max_per_address)
            return 1;
    return 0;
}

static int confirm_upgrade(sluice_server *s, struct wsi_slot *slot)
{
    int status = 0;
    slot_unpend(slot);
    int bad = check_handshake(slot->wsi);
    if (bad)
        return bad;
    char *path = NULL;
    if (s->max_connections > 0 && s->nconns >= (size_t)s->max_connections) {
        status = HTTP_STATUS_SERVICE_UNAVAILABLE;
    } else if (s->max_per_address > 0 && address_full(s, slot->wsi)) {
        status = 429;
    } else {
        path = copy_token(slot->wsi, WSI_TOKEN_GET_URI);
        if (!path)
            return -1;
        if (s->h.ws_accept && !s->h.ws_accept(s->ud, path))
            status = HTTP_STATUS_NOT_FOUND;
    }
    if (!status) {
        int rc = upgrade_decide(s, slot, path);
        free(path);
        return rc;
    }
    free(path);
    /* Answered; then closed like every HTTP answer (see send_status in http.c). */
    return sluice_http_error(slot->wsi, status, NULL, NULL,
                             status == HTTP_STATUS_NOT_FOUND ? "no WebSocket route at this path"
                             : status == 429 ? "too many connections from this address (max_per_address)"
                                             : "too many connections (max_connections)");
}

/* The counters of path, added on its first connection (only declared
 * routes are accepted, so the list stays as short as the app's routes). */
static sluice_route_stats *route_of(sluice_server *s, const char *path)
{
    struct sluice_route **tail = &s->routes;
    for (; *tail; tail = &(*tail)->next)
        if (strcmp((*tail)->path, path) == 0)
            return &(*tail)->st;
    size_t len = strlen(path);
    struct sluice_route *r = calloc(1, sizeof *r + len + 1);
    if (!r)
        return NULL;
    memcpy(r->path, path, len + 1);
    r->st.path = r->path;
    *tail = r;
    return &r->st;
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
    c->path = copy_token(wsi, WSI_TOKEN_GET_URI);
    c->query = sluice_copy_query(wsi);
    sluice_copy_peer(wsi, c->peer, sizeof c->peer);
    if (!c->path || !c->query || sluice_copy_headers(wsi, &c->headers, &c->nheaders)) {
        sluice_conn_destroy(c);
        return -1;
    }
    if (!(c->route = route_of(s, c->path))) {
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
}

/* ---- the lws protocol -------------------------------------------------------- */

static void slot_release(struct wsi_slot *slot)
{
    sluice_server *s = slot->server;
    slot_unpend(slot);
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
        return confirm_upgrade(s, slot);
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
        slot_unpend(slot);
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
    case LWS_CALLBACK_OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS: {
        /* the vhost's SSL_CTX is made: our files go in (checked already) */
        sluice_server *s = lws_get_vhost_user((struct lws_vhost *)in);
        char err[256];
        s->ssl_ctx = user;
        /* whatever the system's OpenSSL configuration allows */
        SSL_CTX_set_min_proto_version(user, TLS1_2_VERSION);
        if (sluice_tls_use_pair(user, s->tls_cert, s->tls_key, err, sizeof err) ||
            (s->tls_ca && sluice_tls_use_ca(user, s->tls_ca, err, sizeof err))) {
            sluice_loop_log(s->loop, SLUICE_LOG_ERROR, "%s", err);
            return 1;
        }
        return 0;
    }
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
 * is framed and compressed here (ws_conn.c). */
static const struct lws_extension server_extensions[] = {
    { "permessage-deflate", lws_extension_callback_pm_deflate, "permessage-deflate" },
    { NULL, NULL, NULL }
};

/* ---- listening ------------------------------------------------------------- */

static void on_listen_readable(sluice_watch *w, void *ud)
{
    (void)w;
    sluice_server *s = ud;
    for (int i = 0; i < ACCEPTS_PER_WAKEUP && s->listen_fd >= 0; i++) {
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
                errno != ECONNABORTED)
                sluice_loop_log(s->loop, SLUICE_LOG_ERROR, "accept on port %d: %s",
                                s->port, strerror(errno));
            return;
        }
        if (s->max_pending > 0 && s->npending >= (size_t)s->max_pending) {
            /* Flood of sockets that have not sent a request: refuse
             * clearly rather than hold descriptors for them. */
            if (!s->tls_cert)
                sluice_http_raw_error(fd, 503);
            close(fd);
            uint64_t now = sluice_now_ms();
            if (now - s->last_refusal_log_ms >= 1000) {
                s->last_refusal_log_ms = now;
                sluice_loop_log(s->loop, SLUICE_LOG_WARN,
                                "port %d: %zu connections have not sent a request yet "
                                "(max_pending): refusing new ones with 503",
                                s->port, s->npending);
            }
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct wsi_slot *slot = calloc(1, sizeof *slot);
        if (!slot) {
            close(fd);
            continue;
        }
        struct lws *wsi = lws_adopt_socket_vhost(s->vh, fd);   /* closes fd on failure */
        if (!wsi) {
            free(slot);
            continue;
        }
        slot->server = s;
        slot->wsi = wsi;
        SLUICE_LIST_PUSH(s->slots, slot);
        lws_set_opaque_user_data(wsi, slot);
        slot->pending = 1;
        s->npending++;
        if (s->handshake_timeout_s > 0)
            lws_sul_schedule(s->loop->ctx, 0, &slot->handshake_sul, handshake_expired,
                             (lws_usec_t)s->handshake_timeout_s * LWS_US_PER_SEC);
    }
}

static int open_listener(const char *host, int port, int reuseport, int *out_fd, int *out_port,
                         char *err, size_t errlen)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    hints.ai_family = host ? AF_UNSPEC : AF_INET6;   /* wildcard: dual-stack */
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    int gai = getaddrinfo(host, portstr, &hints, &res);
    if (gai && !host) {
        hints.ai_family = AF_INET;
        gai = getaddrinfo(host, portstr, &hints, &res);
    }
    if (gai) {
        errf(err, errlen, "cannot resolve %s: %s", host ? host : "*", gai_strerror(gai));
        return SLUICE_EINVAL;
    }
    int rc = SLUICE_EIO, saved = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        ai->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        int one = 1, zero = 0;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (reuseport)
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
        if (ai->ai_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, SOMAXCONN)) {
            saved = errno;
            close(fd);
            continue;
        }
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        getsockname(fd, (struct sockaddr *)&ss, &sl);
        *out_port = ntohs(ss.ss_family == AF_INET6
                              ? ((struct sockaddr_in6 *)&ss)->sin6_port
                              : ((struct sockaddr_in *)&ss)->sin_port);
        *out_fd = fd;
        rc = SLUICE_OK;
        break;
    }
    freeaddrinfo(res);
    if (rc == SLUICE_OK)
        return rc;
    if (saved == EADDRINUSE) {
        errf(err, errlen, "the HTTP and WebSocket port %d is in use", port);
        return SLUICE_EADDRINUSE;
    }
    errf(err, errlen, "cannot listen on port %d: %s", port, strerror(saved));
    return SLUICE_EIO;
}

/* ---- public API ---------------------------------------------------------------- */

static void server_config_free(sluice_server *s)
{
    free(s->static_dir);
    free(s->tls_cert);
    free(s->tls_key);
    free(s->tls_ca);
    free(s);
}

/* The TLS files are read and checked before anything listens: a bad one
 * is the one error of the start. */
static int server_tls_config(sluice_server *s, const sluice_server_config *cfg,
                             char *err, size_t errlen)
{
    if (!cfg->tls_cert && !cfg->tls_key && !cfg->tls_ca)
        return SLUICE_OK;
    if (!cfg->tls_cert || !cfg->tls_key) {
        errf(err, errlen, "TLS needs both a certificate and its key (%s is missing)",
             cfg->tls_cert ? "the key" : "the certificate");
        return SLUICE_EINVAL;
    }
    int rc = sluice_tls_use_pair(NULL, cfg->tls_cert, cfg->tls_key, err, errlen);
    if (!rc && cfg->tls_ca)
        rc = sluice_tls_use_ca(NULL, cfg->tls_ca, err, errlen);
    if (rc)
        return rc;
    s->tls_cert = sluice_strdup(cfg->tls_cert);
    s->tls_key = sluice_strdup(cfg->tls_key);
    s->tls_ca = cfg->tls_ca ? sluice_strdup(cfg->tls_ca) : NULL;
    if (!s->tls_cert || !s->tls_key || (cfg->tls_ca && !s->tls_ca))
        return SLUICE_ENOMEM;
    return SLUICE_OK;
}

int sluice_server_tls(const sluice_server *s) { return s && s->tls_cert; }

int sluice_server_reload_tls(sluice_server *s, char *err, size_t errlen)
{
    if (!s || !s->ssl_ctx) {
        errf(err, errlen, "this server does not serve TLS");
        return SLUICE_ESTATE;
    }
    /* New handshakes use the new pair; an open connection's SSL keeps the
     * certificate it was made with. */
    return sluice_tls_use_pair(s->ssl_ctx, s->tls_cert, s->tls_key, err, errlen);
}

int sluice_server_new(sluice_loop *loop, const sluice_server_config *cfg,
                      const sluice_server_handlers *h, void *ud,
                      sluice_server **out, char *err, size_t errlen)
{
    if (!loop || !cfg || !out || cfg->port < 0 || cfg->port > 65535) {
        errf(err, errlen, "invalid server configuration");
        return SLUICE_EINVAL;
    }
    sluice_server *s = calloc(1, sizeof *s);
    if (!s) {
        errf(err, errlen, "out of memory");
        return SLUICE_ENOMEM;
    }
    s->loop = loop;
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
    int rc = server_tls_config(s, cfg, err, errlen);
    if (!rc && cfg->static_dir && !(s->static_dir = sluice_strdup(cfg->static_dir)))
        rc = SLUICE_ENOMEM;
    if (!rc)
        rc = open_listener(cfg->host, cfg->port, cfg->reuseport, &s->listen_fd, &s->port, err, errlen);
    if (rc) {
        server_config_free(s);
        return rc;
    }

    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    /* lws keeps the pointer (and compares it while serving): it lives as
     * long as the server */
    snprintf(s->vhost_name, sizeof s->vhost_name, "sluice-%d", s->port);
    info.vhost_name = s->vhost_name;
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
    snprintf(s->protocol_name, sizeof s->protocol_name, "sluice-ws");
    s->protocols[0].name = s->protocol_name;
    s->protocols[0].callback = server_callback;
    info.protocols = s->protocols;
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
        errf(err, errlen, "cannot create libwebsockets vhost for port %d%s", s->port,
             s->tls_cert ? " with TLS" : "");
        close(s->listen_fd);
        server_config_free(s);
        return SLUICE_EIO;
    }
    rc = sluice_watch_new(loop, s->listen_fd, on_listen_readable, s, &s->listen_watch,
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
