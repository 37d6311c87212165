/* The HTTP side of the server: a request routed to Lua (its head and body
 * collected, its answer written back in chunks) or a static file. */
#include "server_internal.h"
#include "http_status.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>

#define HTTP_CHUNK (64 * 1024)
/* How long a dynamic handler may take to answer (lws's own is 5 s). */
#define HTTP_ANSWER_TIMEOUT_S 120

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
    /* a stream (sluice_http_stream_open): no Content-Length, the body is
     * what stream_write queues in resp, until stream_close */
    int streaming, stream_closing;
    lws_sorted_usec_list_t timeout_sul;
};

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
void sluice_http_detach(struct wsi_slot *slot)
{
    sluice_http_req *r = slot->req;
    if (!r)
        return;
    slot->req = NULL;
    r->slot = NULL;
    if (r->dispatched && (!r->responded || r->streaming)) {
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

int sluice_http_on_request(sluice_server *s, struct wsi_slot *slot, const char *path)
{
    struct lws *wsi = slot->wsi;
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
    if (!r->path || sluice_copy_request(wsi, &r->query, r->peer, sizeof r->peer,
                                        &r->headers, &r->nheaders)) {
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

int sluice_http_on_body(sluice_server *s, struct wsi_slot *slot, const void *in, size_t len)
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
    /* A stream's owner may still hold r (ended for a slow reader). */
    if (r->streaming && r->server->h.http_abort)
        r->server->h.http_abort(r->server->ud, r);
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
                  (has_body && !r->streaming &&
                   lws_add_http_header_content_length(wsi, r->resp_len, &p, end)) ||
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
        if (r->streaming && !r->head_only) {
            /* open until the handler or the client ends it */
            lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
            if (r->resp_len || r->stream_closing)
                lws_callback_on_writable(wsi);
            return 0;
        }
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
    if (r->streaming) {
        if (!chunk)
            return r->stream_closing ? finish_response(slot) : 0;
        last = 0;   /* a stream's body ends when the connection does */
    }
    /* Each chunk is moved to the front so lws has LWS_PRE headroom. */
    unsigned char *data = r->resp + LWS_PRE;
    if (r->resp_off)
        memmove(data, data + r->resp_off, r->resp_len - r->resp_off);
    r->resp_len -= r->resp_off;
    r->resp_off = 0;
    if (lws_write(wsi, data, chunk, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) < 0)
        return -1;
    r->resp_off = chunk;
    if (r->streaming) {
        if (r->resp_off < r->resp_len || r->stream_closing)
            lws_callback_on_writable(wsi);
        return 0;
    }
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

int sluice_http_on_body_complete(sluice_server *s, struct wsi_slot *slot)
{
    if (slot->req && !slot->req->dispatched) {
        dispatch(s, slot->req);
        return 0;
    }
    return body_completion_again(slot);
}

int sluice_http_on_writeable(struct wsi_slot *slot)
{
    if (slot->close_when_flushed)
        return -1;
    if (slot->req && slot->req->responded)
        return write_response(slot);
    return 0;
}

/* ---- the request, for its handler ---------------------------------------- */

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

char *sluice_http_header(const sluice_http_req *r, const char *name)
{
    /* lws keeps the request head until the transaction ends */
    return r->slot && !r->responded ? sluice_header_value(r->slot->wsi, name) : NULL;
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

/* ---- streamed responses (Server-Sent Events) ------------------------------ */

int sluice_http_stream_open(sluice_http_req *r, const char *content_type,
                            const char *const *extra_headers)
{
    if (!r)
        return SLUICE_EINVAL;
    int rc = sluice_http_respond(r, 200, content_type, NULL, 0, extra_headers);
    if (rc == SLUICE_OK)
        r->streaming = 1;
    return rc;
}

int sluice_http_stream_write(sluice_http_req *r, const void *data, size_t len)
{
    if (!r || (!data && len))
        return SLUICE_EINVAL;
    if (!r->streaming || r->stream_closing || !r->slot)
        return SLUICE_ECLOSED;
    /* lws does not read an HTTP socket while it answers, so a client that
     * left is seen here: end of file waiting (peeked, nothing taken). */
    char b;
    ssize_t got = recv(lws_get_socket_fd(r->slot->wsi), &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        r->stream_closing = 1;
        lws_set_timeout(r->slot->wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
        return SLUICE_ECLOSED;
    }
    size_t unsent = r->resp_len - r->resp_off;
    if (unsent + len > r->server->send_queue_max) {
        /* a reader this slow is let go, as a WebSocket's would be */
        r->stream_closing = 1;
        r->resp_len = r->resp_off;
        lws_callback_on_writable(r->slot->wsi);
        return SLUICE_EFULL;
    }
    unsigned char *bigger = realloc(r->resp, LWS_PRE + r->resp_len + len + 1);
    if (!bigger)
        return SLUICE_ENOMEM;
    r->resp = bigger;
    memcpy(r->resp + LWS_PRE + r->resp_len, data, len);
    r->resp_len += len;
    if (r->headers_sent)
        lws_callback_on_writable(r->slot->wsi);
    return SLUICE_OK;
}

int sluice_http_stream_close(sluice_http_req *r)
{
    if (!r || !r->streaming)
        return SLUICE_EINVAL;
    if (r->stream_closing || !r->slot)
        return SLUICE_ECLOSED;
    r->stream_closing = 1;
    if (r->headers_sent)
        lws_callback_on_writable(r->slot->wsi);
    return SLUICE_OK;
}
