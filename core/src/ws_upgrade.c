/* The WebSocket upgrade before its 101: the handshake fields lws leaves to
 * us, the connection caps, and the app's decision (path, origin, auth,
 * subprotocol) through struct sluice_upgrade. Called from ws_server.c's
 * lws protocol; it calls nothing back there. */
#include "server_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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
        if (sluice_copy_request(slot->wsi, &u.query, u.peer, sizeof u.peer,
                                &u.headers, &u.nheaders)) {
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
        snprintf(s->names->protocol_name, sizeof s->names->protocol_name, "%s", u.selected);
    for (size_t i = 0; u.selected && u.protocols[i] != u.selected; i++) {
        const struct lws_protocols *p = lws_vhost_name_to_protocol(s->vh, u.protocols[i]);
        if (p && p->callback != s->names->protocols[0].callback) {
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

/* LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: 0 lets lws answer 101; otherwise the
 * socket is answered (400, 404, 426, 429, 503 or the app's status) and
 * closed. */
int sluice_upgrade_confirm(sluice_server *s, struct wsi_slot *slot)
{
    int status = 0;
    sluice_slot_unpend(slot);
    int bad = check_handshake(slot->wsi);
    if (bad)
        return bad;
    char *path = NULL;
    if (s->max_connections > 0 && s->nconns >= (size_t)s->max_connections) {
        status = HTTP_STATUS_SERVICE_UNAVAILABLE;
    } else if (s->max_per_address > 0 && address_full(s, slot->wsi)) {
        status = 429;
    } else {
        path = sluice_copy_path(slot->wsi);
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
