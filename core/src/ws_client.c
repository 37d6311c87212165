/* WebSocket client: outgoing connections on the loop's internal vhost,
 * sharing the connection code with the server side (ws_conn.c). */
#include "ws_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sluice_ws_parse_url(const char *url, struct sluice_ws_url *u)
{
    const char *p;
    if (!strncmp(url, "ws://", 5)) {
        u->tls = 0;
        u->port = 80;
        p = url + 5;
    } else if (!strncmp(url, "wss://", 6)) {
        u->tls = 1;
        u->port = 443;
        p = url + 6;
    } else {
        return -1;
    }
    const char *host_end;
    int bracketed = *p == '[';
    if (bracketed) {                         /* [IPv6]:port */
        host_end = strchr(p, ']');
        if (!host_end)
            return -1;
        p++;
    } else {
        host_end = p + strcspn(p, ":/?");
    }
    size_t hlen = (size_t)(host_end - p);
    if (!hlen || hlen >= sizeof u->host)
        return -1;
    /* A name or IPv4 address; in brackets an IPv6 address (with a zone). */
    for (size_t i = 0; i < hlen; i++) {
        unsigned char ch = (unsigned char)p[i];
        int ok = isalnum(ch) || ch == '.' || ch == '-' || ch == '_' || ch == '~' ||
                 (bracketed && (ch == ':' || ch == '%'));
        if (!ok)
            return -1;
    }
    memcpy(u->host, p, hlen);
    u->host[hlen] = '\0';
    if (bracketed && !strchr(u->host, ':'))
        return -1;
    p = host_end + (*host_end == ']');
    if (*p == ':') {
        char *end;
        long port = strtol(p + 1, &end, 10);
        if (!isdigit((unsigned char)p[1]) || port <= 0 || port > 65535)
            return -1;
        u->port = (int)port;
        p = end;
    }
    if (*p && *p != '/' && *p != '?')
        return -1;
    int n = snprintf(u->path, sizeof u->path, "%s%s", *p == '/' ? "" : "/", p);
    return n < 0 || (size_t)n >= sizeof u->path ? -1 : 0;
}

/* A failure reported while lws_client_connect_via_info was still running
 * is passed on from here, after sluice_client_connect has returned. */
static void report_deferred_failure(lws_sorted_usec_list_t *sul)
{
    sluice_conn *c = lws_container_of(sul, sluice_conn, defer_sul);
    sluice_conn_on_closed(c, c->peer_reason[0] ? c->peer_reason : "connection failed");
}

static int append_headers(sluice_conn *c, struct lws *wsi, void *in, size_t len)
{
    unsigned char **p = in, *end = *p + len;
    for (size_t i = 0; i < c->nheaders; i++) {
        size_t nl = strlen(c->headers[2 * i]);
        char name[256];
        if (nl + 2 > sizeof name)
            continue;
        memcpy(name, c->headers[2 * i], nl);
        memcpy(name + nl, ":", 2);
        const char *value = c->headers[2 * i + 1];
        if (lws_add_http_header_by_name(wsi, (unsigned char *)name, (unsigned char *)value,
                                        (int)strlen(value), p, end))
            return -1;
    }
    return 0;
}

int sluice_ws_client_callback(struct lws *wsi, enum lws_callback_reasons reason,
                              void *user, void *in, size_t len)
{
    (void)user;
    sluice_conn *c = lws_get_opaque_user_data(wsi);
    if (!c)
        return 0;
    switch (reason) {
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR: {
        const char *why = in ? (const char *)in : "connection failed";
        lws_set_opaque_user_data(wsi, NULL);
        c->wsi = NULL;
        c->peer_code = 0;
        c->close_code = 0;          /* a failed connect is always 1006 */
        snprintf(c->peer_reason, sizeof c->peer_reason, "%s", why);
        if (c->connecting_sync) {
            c->connect_failed = 1;
            return 0;
        }
        sluice_conn_on_closed(c, c->peer_reason);
        return 0;
    }
    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER:
        c->wsi = wsi;
        return append_headers(c, wsi, in, len);
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        c->wsi = wsi;
        return sluice_conn_on_open(c);
    case LWS_CALLBACK_CLIENT_RECEIVE:
        return sluice_conn_on_receive(c, in, len);
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        return sluice_conn_on_writeable(c);
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        sluice_conn_on_peer_close(c, in, len);
        return 0;
    case LWS_CALLBACK_CLIENT_CLOSED:
    case LWS_CALLBACK_WSI_DESTROY:
        lws_set_opaque_user_data(wsi, NULL);
        sluice_conn_on_closed(c, "connection lost");
        return 0;
    default:
        return 0;
    }
}

int sluice_client_connect(sluice_loop *loop, const char *url,
                          const sluice_client_config *cfg,
                          const sluice_conn_handlers *h, void *ud,
                          sluice_conn **out, char *err, size_t errlen)
{
    struct sluice_ws_url u;
    if (!loop || !url || !out || sluice_ws_parse_url(url, &u)) {
        if (err && errlen)
            snprintf(err, errlen, "invalid WebSocket URL: %s", url ? url : "(null)");
        return SLUICE_EINVAL;
    }
    sluice_client_config defaults;
    memset(&defaults, 0, sizeof defaults);
    if (!cfg)
        cfg = &defaults;
    sluice_conn *c = sluice_conn_alloc(loop, h, ud, 1, cfg->max_message, cfg->send_queue_max);
    if (!c) {
        if (err && errlen)
            snprintf(err, errlen, "out of memory");
        return SLUICE_ENOMEM;
    }
    c->state = SLUICE_CONN_CONNECTING;
    snprintf(c->peer, sizeof c->peer, "%.63s", u.host);
    char *q = strchr(u.path, '?');
    c->query = sluice_strdup(q ? q + 1 : "");
    c->path = sluice_strdup(u.path);
    if (c->path && q)
        c->path[q - u.path] = '\0';
    size_t nh = 0;
    while (cfg->headers && cfg->headers[2 * nh] && cfg->headers[2 * nh + 1])
        nh++;
    if (nh && (c->headers = calloc(2 * nh, sizeof *c->headers)))
        for (size_t i = 0; i < nh; i++) {
            c->headers[2 * i] = sluice_strdup(cfg->headers[2 * i]);
            c->headers[2 * i + 1] = sluice_strdup(cfg->headers[2 * i + 1]);
            c->nheaders++;
        }
    if (!c->path || !c->query || (nh && c->nheaders != nh)) {
        sluice_conn_destroy(c);
        if (err && errlen)
            snprintf(err, errlen, "out of memory");
        return SLUICE_ENOMEM;
    }

    char host_header[300];
    if (u.port == (u.tls ? 443 : 80))
        snprintf(host_header, sizeof host_header, "%s", u.host);
    else
        snprintf(host_header, sizeof host_header, "%s:%d", u.host, u.port);
    struct lws_client_connect_info info;
    memset(&info, 0, sizeof info);
    info.context = loop->ctx;
    info.vhost = loop->internal_vh;
    info.address = u.host;
    info.port = u.port;
    info.ssl_connection = u.tls ? LCCSCF_USE_SSL : 0;
    info.path = u.path;
    info.host = host_header;
    info.origin = host_header;
    info.protocol = cfg->protocol;
    info.ietf_version_or_minus_one = -1;
    info.local_protocol_name = SLUICE_CLIENT_PROTOCOL;
    info.opaque_user_data = c;
    /* Not info.pwsi: lws clears it when the wsi is freed, after c is. */

    c->connecting_sync = 1;
    struct lws *wsi = lws_client_connect_via_info(&info);
    c->connecting_sync = 0;
    if (!wsi && !c->connect_failed) {
        /* e.g. the name did not resolve: lws gives no reason */
        snprintf(c->peer_reason, sizeof c->peer_reason, "cannot connect to %.80s:%d",
                 u.host, u.port);
        c->connect_failed = 1;
    }
    /* Failures show up as close(1006, reason), like later ones do. */
    if (c->connect_failed) {
        c->wsi = NULL;
        sluice_loop_defer(loop, &c->defer_sul, report_deferred_failure);
    } else {
        c->wsi = wsi;
    }
    *out = c;
    return SLUICE_OK;
}
