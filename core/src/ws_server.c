/* WebSocket and HTTP server: one listening socket per server (ours, so that
 * port errors are exact and listening can stop), accepted sockets handed to
 * an lws vhost that has no listener of its own. */
#include "loop_internal.h"
#include "http_status.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_MAX_MESSAGE (1024u * 1024u)
#define DEFAULT_MAX_BODY (1024u * 1024u)
#define DEFAULT_SEND_QUEUE (8u * 1024u * 1024u)
#define DEFAULT_IDLE_S 60
#define DEFAULT_HANDSHAKE_S 10
#define DEFAULT_MAX_PENDING 1024
#define ACCEPTS_PER_WAKEUP 64
#define HTTP_CHUNK (64 * 1024)
/* How long a dynamic handler may take to answer (lws's own is 5 s). */
#define HTTP_ANSWER_TIMEOUT_S 120

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
};

struct sluice_http_req {
    sluice_server *server;
    struct wsi_slot *slot;      /* NULL once the client is gone */
    char method[16];
    char *path, *query;
    char peer[64];
    char **headers;
    size_t nheaders;
    char *body;
    size_t body_len, body_cap;
    void *userdata;
    int dispatched, responded, head_only;
    /* the response, written over one or more WRITEABLE callbacks */
    int status;
    char *content_type;
    char **extra;               /* "name:", value pairs, as lws wants them */
    size_t nextra;
    unsigned char *resp;        /* LWS_PRE headroom + body */
    size_t resp_len, resp_off;
    int headers_sent;
    lws_sorted_usec_list_t timeout_sul;
};

struct sluice_server {
    sluice_loop *loop;
    struct lws_vhost *vh;
    sluice_server_handlers h;
    void *ud;
    size_t max_message, max_body, send_queue_max;
    int max_connections;
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
    int paused;
    int cb_depth;               /* inside this server's lws callback */
    int free_pending;
    lws_sorted_usec_list_t free_sul;
    /* coalesced WebSocket writes (sluice_conn_on_writeable): LWS_PRE +
     * SLUICE_WRITE_COALESCE bytes, allocated on first use */
    unsigned char *wbuf;
};

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
    sluice_http_raw_error(lws_get_socket_fd(slot->wsi), 408);
    lws_set_timeout(slot->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

/* ---- HTTP requests --------------------------------------------------------- */

static void req_free(sluice_http_req *r)
{
    lws_sul_cancel(&r->timeout_sul);
    free(r->path);
    free(r->query);
    sluice_free_headers(r->headers, r->nheaders);
    free(r->body);
    free(r->content_type);
    sluice_free_headers(r->extra, r->nextra);
    free(r->resp);
    free(r);
}

/* The client is gone or the transaction ended: drop the request. */
static void req_detach(struct wsi_slot *slot)
{
    sluice_http_req *r = slot->req;
    if (!r)
        return;
    slot->req = NULL;
    r->slot = NULL;
    if (r->dispatched && !r->responded) {
        /* The handler still holds r: tell it, then free. */
        sluice_server *s = r->server;
        if (s->h.http_abort)
            s->h.http_abort(s->ud, r);
    }
    req_free(r);
}

/* No HTTP keep-alive: every connection is closed once its answer is out.
 * libwebsockets 4.1.6 mishandles requests it parses from its own buffer
 * (pipelined behind another request in the same read): a body there was
 * read from the wrong offset, and answering a request whose body was
 * not read yet spun the whole loop forever (both found by
 * fuzz/fuzz_server.c). Closing after each answer means a request is only
 * ever parsed from a fresh socket. Clients retry unanswered pipelined
 * requests on a new connection (RFC 9112 9.3.2). */
static int send_status(struct lws *wsi, int status)
{
    return sluice_http_error(wsi, status, NULL, NULL, NULL);
}

/* lws arms a short content timeout when its HTTP callback returns; an
 * answer still pending then gets the longer one instead. */
static void extend_answer_timeout(lws_sorted_usec_list_t *sul)
{
    sluice_http_req *r = lws_container_of(sul, sluice_http_req, timeout_sul);
    if (r->slot && !r->responded)
        lws_set_timeout(r->slot->wsi, PENDING_TIMEOUT_HTTP_CONTENT, HTTP_ANSWER_TIMEOUT_S);
}

static void dispatch(sluice_server *s, sluice_http_req *r)
{
    r->dispatched = 1;
    sluice_loop_note_activity(s->loop);
    /* Armed first: the handler may answer, and free r, right away. */
    sluice_loop_defer(s->loop, &r->timeout_sul, extend_answer_timeout);
    if (s->h.http_request)
        s->h.http_request(s->ud, r);
    else
        sluice_http_respond(r, 500, "text/plain", "no handler\n", 11, NULL);
}

static const char *method_name(int m)
{
    switch (m) {
    case LWSHUMETH_GET:     return "GET";
    case LWSHUMETH_POST:    return "POST";
    case LWSHUMETH_OPTIONS: return "OPTIONS";
    case LWSHUMETH_PUT:     return "PUT";
    case LWSHUMETH_PATCH:   return "PATCH";
    case LWSHUMETH_DELETE:  return "DELETE";
    case LWSHUMETH_CONNECT: return "CONNECT";
    case LWSHUMETH_HEAD:    return "HEAD";
    default:                return NULL;
    }
}

static void copy_peer(struct lws *wsi, char *buf, size_t len)
{
    buf[0] = '\0';
    if (!lws_get_peer_simple(wsi, buf, len))
        buf[0] = '\0';
    /* Dual-stack sockets report IPv4 peers as mapped addresses. */
    if (!strncmp(buf, "::ffff:", 7) && strchr(buf, '.'))
        memmove(buf, buf + 7, strlen(buf + 7) + 1);
}

static const char *mime_type(const char *path)
{
    static const struct { const char *ext, *mime; } types[] = {
        { ".html", "text/html; charset=utf-8" },
        { ".htm", "text/html; charset=utf-8" },
        { ".js", "application/javascript" },
        { ".mjs", "application/javascript" },
        { ".css", "text/css" },
        { ".json", "application/json" },
        { ".png", "image/png" },
        { ".svg", "image/svg+xml" },
        { ".ico", "image/x-icon" },
        { ".txt", "text/plain; charset=utf-8" },
    };
    const char *dot = strrchr(path, '.');
    if (dot && !strchr(dot, '/'))
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
            if (!strcasecmp(dot, types[i].ext))
                return types[i].mime;
    return "application/octet-stream";
}

char *sluice_static_file(const char *dir, const char *path)
{
    /* lws has url-decoded path; any ".." (or a name starting with '.') is
     * refused outright rather than resolved. */
    if (!dir || path[0] != '/' || strstr(path, "..") || strstr(path, "/."))
        return NULL;
    size_t need = strlen(dir) + strlen(path) + sizeof "/index.html";
    char *file = malloc(need);
    if (!file)
        return NULL;
    snprintf(file, need, "%s%s%s", dir, path, path[strlen(path) - 1] == '/' ? "index.html" : "");
    return file;
}

static int serve_static(sluice_server *s, struct lws *wsi, const char *path)
{
    if (!s->static_dir)
        return send_status(wsi, HTTP_STATUS_NOT_FOUND);
    char *file = sluice_static_file(s->static_dir, path);
    if (!file)
        return send_status(wsi, HTTP_STATUS_NOT_FOUND);
    size_t need = strlen(file) + sizeof "/index.html";
    struct stat st;
    if (!stat(file, &st) && S_ISDIR(st.st_mode)) {
        char *bigger = realloc(file, need);
        if (!bigger) {
            free(file);
            return -1;
        }
        file = bigger;
        size_t flen = strlen(file);
        snprintf(file + flen, need - flen, "/index.html");
    }
    if (stat(file, &st) || !S_ISREG(st.st_mode)) {
        free(file);
        return send_status(wsi, HTTP_STATUS_NOT_FOUND);
    }
    int n = lws_serve_http_file(wsi, file, mime_type(file), NULL, 0);
    free(file);
    if (n != 0)
        return -1;          /* failed, or already sent whole: close */
    return 0;
}

static int on_http(sluice_server *s, struct wsi_slot *slot, const char *path)
{
    struct lws *wsi = slot->wsi;
    slot_unpend(slot);
    char *uri = NULL;
    int ulen = 0;
    const char *method = method_name(lws_http_get_uri_and_method(wsi, &uri, &ulen));
    if (!method)
        return sluice_http_error(wsi, HTTP_STATUS_METHOD_NOT_ALLOWED, "allow:",
                                 "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS", NULL);
    sluice_loop_note_activity(s->loop);
    if (!s->h.http_match || !s->h.http_match(s->ud, method, path)) {
        if (strcmp(method, "GET") && strcmp(method, "HEAD"))
            return send_status(wsi, HTTP_STATUS_NOT_FOUND);
        return serve_static(s, wsi, path);
    }

    sluice_http_req *r = calloc(1, sizeof *r);
    if (!r)
        return -1;
    r->server = s;
    r->slot = slot;
    snprintf(r->method, sizeof r->method, "%s", method);
    r->head_only = !strcmp(method, "HEAD");
    r->path = sluice_strdup(path);
    r->query = sluice_copy_query(wsi);
    copy_peer(wsi, r->peer, sizeof r->peer);
    if (!r->path || !r->query || sluice_copy_headers(wsi, &r->headers, &r->nheaders)) {
        req_free(r);
        return -1;
    }
    slot->req = r;

    char clen[32] = "";
    long long content_length = 0;
    if (lws_hdr_copy(wsi, clen, sizeof clen, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0)
        content_length = atoll(clen);
    int chunked = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0;
    if (content_length < 0 || (unsigned long long)content_length > s->max_body) {
        slot->req = NULL;
        req_free(r);
        /* the unread body makes the connection unusable: closed after */
        return sluice_http_error(wsi, HTTP_STATUS_REQ_ENTITY_TOO_LARGE, NULL, NULL,
                                 "request body larger than max_body");
    }
    if (content_length > 0 || chunked)
        return 0;    /* dispatched at HTTP_BODY_COMPLETION */
    dispatch(s, r);
    return 0;
}

static int on_http_body(sluice_server *s, struct wsi_slot *slot, const void *in, size_t len)
{
    sluice_http_req *r = slot->req;
    if (!r || r->dispatched)
        return 0;
    if (r->body_len + len > s->max_body) {
        slot->req = NULL;
        req_free(r);
        return sluice_http_error(slot->wsi, HTTP_STATUS_REQ_ENTITY_TOO_LARGE, NULL, NULL,
                                 "request body larger than max_body");
    }
    if (r->body_len + len + 1 > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap * 2 : 4096;
        while (cap < r->body_len + len + 1)
            cap *= 2;
        char *bigger = realloc(r->body, cap);
        if (!bigger)
            return -1;
        r->body = bigger;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, in, len);
    r->body_len += len;
    r->body[r->body_len] = '\0';
    return 0;
}

static int finish_response(struct wsi_slot *slot)
{
    struct lws *wsi = slot->wsi;
    sluice_http_req *r = slot->req;
    slot->req = NULL;
    r->slot = NULL;
    req_free(r);
    /* Close (see send_status) once lws has sent what it buffered. */
    if (lws_partial_buffered(wsi)) {
        slot->close_when_flushed = 1;
        lws_callback_on_writable(wsi);
        return 0;
    }
    return -1;
}

static int write_response(struct wsi_slot *slot)
{
    struct lws *wsi = slot->wsi;
    sluice_http_req *r = slot->req;
    if (!r->headers_sent) {
        size_t cap = LWS_PRE + 512 + strlen(r->content_type);
        for (size_t i = 0; i < r->nextra; i++)
            cap += strlen(r->extra[2 * i]) + strlen(r->extra[2 * i + 1]) + 8;
        unsigned char *buf = malloc(cap);
        if (!buf)
            return -1;
        unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + cap;
        int has_body = sluice_http_status_has_body(r->status);
        if (!has_body)
            r->resp_len = 0;
        int bad = sluice_http_add_status(wsi, r->status, &p, end) ||
                  (has_body && lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE,
                                               (unsigned char *)r->content_type,
                                               (int)strlen(r->content_type), &p, end)) ||
                  (has_body && lws_add_http_header_content_length(wsi, r->resp_len, &p, end)) ||
                  lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION,
                                               (const unsigned char *)"close", 5, &p, end);
        for (size_t i = 0; !bad && i < r->nextra; i++)
            bad = lws_add_http_header_by_name(wsi, (unsigned char *)r->extra[2 * i],
                                              (unsigned char *)r->extra[2 * i + 1],
                                              (int)strlen(r->extra[2 * i + 1]), &p, end);
        if (!bad)
            bad = lws_finalize_write_http_header(wsi, start, &p, end);
        free(buf);
        if (bad)
            return -1;
        r->headers_sent = 1;
        if (r->resp_len && !r->head_only) {
            lws_callback_on_writable(wsi);
            return 0;
        }
        return finish_response(slot);
    }
    size_t chunk = r->resp_len - r->resp_off;
    if (chunk > HTTP_CHUNK)
        chunk = HTTP_CHUNK;
    int last = r->resp_off + chunk == r->resp_len;
    /* Each chunk is moved to the front so lws has LWS_PRE headroom. */
    unsigned char *data = r->resp + LWS_PRE;
    if (r->resp_off)
        memmove(data, data + r->resp_off, r->resp_len - r->resp_off);
    r->resp_len -= r->resp_off;
    r->resp_off = 0;
    if (lws_write(wsi, data, chunk, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) < 0)
        return -1;
    r->resp_off = chunk;
    if (!last) {
        lws_callback_on_writable(wsi);
        return 0;
    }
    return finish_response(slot);
}

/* lws 4.1.6 stays in its request-body state until the transaction is
 * completed, and calls BODY_COMPLETION again for every pipelined byte that
 * arrives meanwhile; fed from its own buffer it did so forever, hanging the
 * whole loop (found by fuzz/fuzz_server.c). So pipelining after a request
 * with a body ends here: the answer, if ready, is written now and the
 * connection is closed (clients retry unanswered pipelined requests). */
static int body_completion_again(struct wsi_slot *slot)
{
    for (int i = 0; i < 64 && slot->req && slot->req->responded; i++)
        if (write_response(slot) < 0)
            break;
    return -1;
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

/* The handshake fields lws leaves to us: a missing key makes lws hang up
 * without an answer, and it also accepts the old draft versions 7 and 8. */
static int check_handshake(struct lws *wsi)
{
    char version[8] = "";
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

static int confirm_upgrade(sluice_server *s, struct wsi_slot *slot)
{
    int status = 0;
    slot_unpend(slot);
    int bad = check_handshake(slot->wsi);
    if (bad)
        return bad;
    if (s->max_connections > 0 && s->nconns >= (size_t)s->max_connections) {
        status = HTTP_STATUS_SERVICE_UNAVAILABLE;
    } else if (s->h.ws_accept) {
        char *path = copy_token(slot->wsi, WSI_TOKEN_GET_URI);
        if (!path)
            return -1;
        if (!s->h.ws_accept(s->ud, path))
            status = HTTP_STATUS_NOT_FOUND;
        free(path);
    }
    if (!status)
        return 0;
    /* Answered; then closed like every HTTP answer (see send_status). */
    return sluice_http_error(slot->wsi, status, NULL, NULL,
                             status == HTTP_STATUS_NOT_FOUND ? "no WebSocket route at this path"
                                                             : "too many connections (max_connections)");
}

static int on_established(sluice_server *s, struct wsi_slot *slot)
{
    struct lws *wsi = slot->wsi;
    sluice_conn *c = sluice_conn_alloc(s->loop, &s->h.ws, s->ud, 0, s->max_message,
                                       s->send_queue_max);
    if (!c)
        return -1;
    c->server = s;
    c->wsi = wsi;
    c->state = SLUICE_CONN_OPEN;
    /* Our vhost offers no extension (no permessage-deflate), so frames can
     * be built here and written raw, many per send(). */
    c->coalesce = 1;
    sluice_conn_limit_unsent(c, 1);
    c->path = copy_token(wsi, WSI_TOKEN_GET_URI);
    c->query = sluice_copy_query(wsi);
    copy_peer(wsi, c->peer, sizeof c->peer);
    if (!c->path || !c->query || sluice_copy_headers(wsi, &c->headers, &c->nheaders)) {
        sluice_conn_destroy(c);
        return -1;
    }
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    slot->conn = c;
    return sluice_conn_on_open(c);
}

void sluice_server_conn_closed(sluice_server *s, sluice_conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else if (s->conns == c)
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    s->nconns--;
}

int sluice_server_is_paused(const sluice_server *s)
{
    return s->paused;
}

unsigned char *sluice_server_write_buffer(sluice_server *s)
{
    /* One per server, not per connection: a write either goes out or lws
     * copies what the socket did not take, so the buffer is free again
     * as soon as lws_write returns. */
    if (!s->wbuf)
        s->wbuf = malloc(LWS_PRE + SLUICE_WRITE_COALESCE);
    return s->wbuf ? s->wbuf + LWS_PRE : NULL;
}

/* ---- the lws protocol -------------------------------------------------------- */

static void slot_release(struct wsi_slot *slot)
{
    sluice_server *s = slot->server;
    slot_unpend(slot);
    if (slot->wsi)
        lws_set_opaque_user_data(slot->wsi, NULL);
    req_detach(slot);
    if (slot->conn) {
        sluice_conn *c = slot->conn;
        slot->conn = NULL;
        sluice_conn_on_closed(c, "connection lost");
    }
    if (slot->prev)
        slot->prev->next = slot->next;
    else if (s->slots == slot)
        s->slots = slot->next;
    if (slot->next)
        slot->next->prev = slot->prev;
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
        return on_http(s, slot, in ? (const char *)in : "/");
    case LWS_CALLBACK_HTTP_BODY:
        return on_http_body(s, slot, in, len);
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        if (slot->req && !slot->req->dispatched) {
            dispatch(s, slot->req);
            return 0;
        }
        return body_completion_again(slot);
    case LWS_CALLBACK_HTTP_WRITEABLE:
        if (slot->close_when_flushed)
            return -1;
        if (slot->req && slot->req->responded)
            return write_response(slot);
        return 0;
    case LWS_CALLBACK_HTTP_FILE_COMPLETION:
        return -1;          /* the file is sent; closed (see send_status) */
    case LWS_CALLBACK_CLOSED_HTTP:
        req_detach(slot);
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
    if (reason == LWS_CALLBACK_EVENT_WAIT_CANCELLED)
        return 0;
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

static const struct lws_protocols server_protocols[] = {
    { .name = "sluice-ws", .callback = server_callback },
    { .name = NULL, .callback = NULL }
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
        slot->next = s->slots;
        if (s->slots)
            s->slots->prev = slot;
        s->slots = slot;
        lws_set_opaque_user_data(wsi, slot);
        slot->pending = 1;
        s->npending++;
        if (s->handshake_timeout_s > 0)
            lws_sul_schedule(s->loop->ctx, 0, &slot->handshake_sul, handshake_expired,
                             (lws_usec_t)s->handshake_timeout_s * LWS_US_PER_SEC);
    }
}

static int open_listener(const char *host, int port, int *out_fd, int *out_port,
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
    if (h)
        s->h = *h;
    s->ud = ud;
    s->max_message = cfg->max_message ? cfg->max_message : DEFAULT_MAX_MESSAGE;
    s->max_body = cfg->max_body ? cfg->max_body : DEFAULT_MAX_BODY;
    s->send_queue_max = cfg->send_queue_max ? cfg->send_queue_max : DEFAULT_SEND_QUEUE;
    s->max_connections = cfg->max_connections;
    s->handshake_timeout_s = cfg->handshake_timeout_s ? cfg->handshake_timeout_s
                                                      : DEFAULT_HANDSHAKE_S;
    s->max_pending = cfg->max_pending ? cfg->max_pending : DEFAULT_MAX_PENDING;
    s->listen_fd = -1;
    if (cfg->static_dir && !(s->static_dir = sluice_strdup(cfg->static_dir))) {
        free(s);
        return SLUICE_ENOMEM;
    }
    int rc = open_listener(cfg->host, cfg->port, &s->listen_fd, &s->port, err, errlen);
    if (rc) {
        free(s->static_dir);
        free(s);
        return rc;
    }

    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    char name[32];
    snprintf(name, sizeof name, "sluice-%d", s->port);
    info.vhost_name = name;
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
    info.protocols = server_protocols;
    info.options = LWS_SERVER_OPTION_VALIDATE_UTF8;
    info.user = s;
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
        errf(err, errlen, "cannot create libwebsockets vhost for port %d", s->port);
        close(s->listen_fd);
        free(s->static_dir);
        free(s);
        return SLUICE_EIO;
    }
    rc = sluice_watch_new(loop, s->listen_fd, on_listen_readable, s, &s->listen_watch,
                          err, errlen);
    if (rc) {
        lws_vhost_destroy(s->vh);
        close(s->listen_fd);
        free(s->static_dir);
        free(s);
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
    s->paused = paused ? 1 : 0;
    for (sluice_conn *c = s->conns; c; c = c->next)
        sluice_conn_apply_flow(c);
}

void sluice_server_stop_listening(sluice_server *s)
{
    if (!s || s->listen_fd < 0)
        return;
    sluice_watch_free(s->listen_watch);
    s->listen_watch = NULL;
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
        req_detach(slot);
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
    free(s->wbuf);
    free(s->static_dir);
    free(s);
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

/* ---- HTTP request accessors ---------------------------------------------------- */

const char *sluice_http_method(const sluice_http_req *r) { return r->method; }
const char *sluice_http_path(const sluice_http_req *r) { return r->path; }
const char *sluice_http_query(const sluice_http_req *r) { return r->query; }
const char *sluice_http_peer(const sluice_http_req *r) { return r->peer; }
void sluice_http_set_userdata(sluice_http_req *r, void *p) { r->userdata = p; }
void *sluice_http_userdata(const sluice_http_req *r) { return r->userdata; }

void sluice_http_headers(const sluice_http_req *r, sluice_header_fn fn, void *ud)
{
    for (size_t i = 0; i < r->nheaders; i++)
        fn(ud, r->headers[2 * i], r->headers[2 * i + 1]);
}

const char *sluice_http_body(const sluice_http_req *r, size_t *len)
{
    if (len)
        *len = r->body_len;
    return r->body ? r->body : "";
}

int sluice_http_respond(sluice_http_req *r, int status, const char *content_type,
                        const void *body, size_t len, const char *const *extra_headers)
{
    if (!r || (!body && len))
        return SLUICE_EINVAL;
    if (r->responded)
        return SLUICE_ESTATE;
    r->responded = 1;
    r->status = status > 0 ? status : 200;
    r->content_type = sluice_strdup(content_type ? content_type : "text/plain");
    r->resp = malloc(LWS_PRE + len + 1);
    size_t n = 0;
    while (extra_headers && extra_headers[2 * n] && extra_headers[2 * n + 1])
        n++;
    r->extra = n ? calloc(2 * n, sizeof *r->extra) : NULL;
    if (!r->content_type || !r->resp || (n && !r->extra))
        return SLUICE_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        size_t nl = strlen(extra_headers[2 * i]);
        r->extra[2 * i] = malloc(nl + 2);
        r->extra[2 * i + 1] = sluice_strdup(extra_headers[2 * i + 1]);
        if (!r->extra[2 * i] || !r->extra[2 * i + 1])
            return SLUICE_ENOMEM;
        memcpy(r->extra[2 * i], extra_headers[2 * i], nl);
        memcpy(r->extra[2 * i] + nl, ":", 2);
        r->nextra++;
    }
    if (len)
        memcpy(r->resp + LWS_PRE, body, len);
    r->resp_len = len;
    /* r->slot is set: a request whose client left was aborted and freed. */
    lws_callback_on_writable(r->slot->wsi);
    return SLUICE_OK;
}
