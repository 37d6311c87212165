/* What the server and the client copy out of lws's storage of a request
 * head (headers, query string, peer address) before lws reuses it. */
#include "ws_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *sluice_strdup(const char *s)
{
    size_t n = strlen(s ? s : "") + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s ? s : "", n);
    return d;
}

void sluice_free_headers(char **headers, size_t n)
{
    if (!headers)
        return;
    for (size_t i = 0; i < 2 * n; i++)
        free(headers[i]);
    free(headers);
}

int sluice_copy_headers(struct lws *wsi, char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    /* Headers lws has no token for, read by name (lws 4.1 cannot list
     * them): Last-Event-ID, with which an EventSource resumes. */
    static const char *const custom[] = { "last-event-id:" };
    const size_t ncustom = sizeof custom / sizeof *custom;
    char **list = calloc(2 * (WSI_TOKEN_COUNT + ncustom), sizeof *list);
    if (!list)
        return SLUICE_ENOMEM;
    size_t count = 0;
    for (int tok = 0; tok < WSI_TOKEN_COUNT; tok++) {
        const char *name = (const char *)lws_token_to_string((enum lws_token_indexes)tok);
        int vlen = lws_hdr_total_length(wsi, (enum lws_token_indexes)tok);
        if (!name || vlen <= 0)
            continue;
        size_t nlen = strlen(name);
        /* Only real "name:" headers; skip method/URI pseudo tokens. */
        if (nlen < 2 || name[nlen - 1] != ':' || name[0] == ':')
            continue;
        char *k = malloc(nlen);
        char *v = malloc((size_t)vlen + 1);
        if (!k || !v) {
            free(k);
            free(v);
            sluice_free_headers(list, count);
            return SLUICE_ENOMEM;
        }
        for (size_t i = 0; i < nlen - 1; i++)
            k[i] = (char)tolower((unsigned char)name[i]);
        k[nlen - 1] = '\0';
        if (lws_hdr_copy(wsi, v, vlen + 1, (enum lws_token_indexes)tok) < 0)
            v[0] = '\0';
        list[2 * count] = k;
        list[2 * count + 1] = v;
        count++;
    }
#ifdef LWS_WITH_CUSTOM_HEADERS
    for (size_t i = 0; i < ncustom; i++) {
        int nlen = (int)strlen(custom[i]);
        int vlen = lws_hdr_custom_length(wsi, custom[i], nlen);
        if (vlen < 0)
            continue;
        char *k = sluice_strdup(custom[i]);
        char *v = malloc((size_t)vlen + 1);
        if (!k || !v || lws_hdr_custom_copy(wsi, v, vlen + 1, custom[i], nlen) < 0) {
            free(k);
            free(v);
            continue;
        }
        k[nlen - 1] = '\0';
        list[2 * count] = k;
        list[2 * count + 1] = v;
        count++;
    }
#endif
    *out = list;
    *n = count;
    return SLUICE_OK;
}

size_t sluice_query_encode_arg(char *dst, const char *src, int keep_eq)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (; *src; src++) {
        unsigned char ch = (unsigned char)*src;
        if (isalnum(ch) || strchr("-._~!*'(),/:@;$", ch) || (ch == '=' && keep_eq)) {
            if (ch == '=')
                keep_eq = 0;
            dst[n++] = (char)ch;
        } else {
            dst[n++] = '%';
            dst[n++] = hex[ch >> 4];
            dst[n++] = hex[ch & 15];
        }
    }
    return n;
}

char *sluice_copy_path(struct lws *wsi)
{
    int len = lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI);
    if (len <= 0)
        return sluice_strdup("/");
    char *v = malloc((size_t)len + 1);
    if (v && lws_hdr_copy(wsi, v, len + 1, WSI_TOKEN_GET_URI) < 0)
        v[0] = '\0';
    return v;
}

char *sluice_copy_query(struct lws *wsi)
{
    int total = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_URI_ARGS);
    if (total <= 0)
        return sluice_strdup("");
    /* lws splits the query at '&' into fragments and url-decodes each, so
     * an encoded '&' or '=' would become ambiguous: re-encode each one. */
    char *frag = malloc((size_t)total + 1);
    char *q = malloc(4 * (size_t)total + 64);
    if (!frag || !q) {
        free(frag);
        free(q);
        return NULL;
    }
    size_t used = 0;
    for (int i = 0;; i++) {
        int flen = lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, i);
        if (flen <= 0 || lws_hdr_copy_fragment(wsi, frag, total + 1,
                                                WSI_TOKEN_HTTP_URI_ARGS, i) < 0)
            break;
        if (used)
            q[used++] = '&';
        used += sluice_query_encode_arg(q + used, frag, 1);
    }
    q[used] = '\0';
    free(frag);
    return q;
}

void sluice_copy_peer(struct lws *wsi, char *buf, size_t len)
{
    buf[0] = '\0';
    if (!lws_get_peer_simple(wsi, buf, len))
        buf[0] = '\0';
    /* Dual-stack sockets report IPv4 peers as mapped addresses. */
    if (!strncmp(buf, "::ffff:", 7) && strchr(buf, '.'))
        memmove(buf, buf + 7, strlen(buf + 7) + 1);
}

char *sluice_header_value(struct lws *wsi, const char *name)
{
    char key[128];
    size_t nlen = strlen(name);
    if (!wsi || !nlen || nlen + 2 > sizeof key)
        return NULL;
    for (size_t i = 0; i < nlen; i++)
        key[i] = (char)tolower((unsigned char)name[i]);
    key[nlen] = ':';
    key[nlen + 1] = '\0';
    /* lws files the headers it knows under a token, the others (stored
     * lower-cased, colon included) in its custom list. */
    for (int tok = 0; tok < WSI_TOKEN_COUNT; tok++) {
        const char *t = (const char *)lws_token_to_string((enum lws_token_indexes)tok);
        if (!t || strcmp(t, key))
            continue;
        int vlen = lws_hdr_total_length(wsi, (enum lws_token_indexes)tok);
        if (vlen <= 0)
            return NULL;
        char *v = malloc((size_t)vlen + 1);
        if (v && lws_hdr_copy(wsi, v, vlen + 1, (enum lws_token_indexes)tok) < 0)
            v[0] = '\0';
        return v;
    }
    int vlen = lws_hdr_custom_length(wsi, key, (int)nlen + 1);
    if (vlen < 0)
        return NULL;
    char *v = malloc((size_t)vlen + 1);
    if (v && lws_hdr_custom_copy(wsi, v, vlen + 1, key, (int)nlen + 1) < 0)
        v[0] = '\0';
    return v;
}

int sluice_offered_protocols(struct lws *wsi, char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    int total = lws_hdr_total_length(wsi, WSI_TOKEN_PROTOCOL);
    if (total <= 0)
        return 0;
    /* What lws's own upgrade can take (its 128-byte copy, 64-byte names):
     * beyond that it would hang up without an answer. */
    if (total > 127)
        return -1;
    char buf[128], name[64];
    if (lws_hdr_copy(wsi, buf, sizeof buf, WSI_TOKEN_PROTOCOL) < 0)
        return -1;
    char **list = calloc(32, sizeof *list);
    if (!list)
        return -1;
    /* Tokenized as lws does it, so that what we select is what it finds. */
    struct lws_tokenize ts;
    lws_tokenize_init(&ts, buf, LWS_TOKENIZE_F_COMMA_SEP_LIST | LWS_TOKENIZE_F_MINUS_NONTERM |
                                LWS_TOKENIZE_F_DOT_NONTERM | LWS_TOKENIZE_F_RFC7230_DELIMS);
    ts.len = strlen(buf);
    lws_tokenize_elem e;
    size_t count = 0;
    int failed = 0;
    do {
        e = lws_tokenize(&ts);
        if (e == LWS_TOKZE_TOKEN) {
            if (count == 32 || lws_tokenize_cstr(&ts, name, sizeof name) ||
                !(list[count] = sluice_strdup(name)))
                failed = 1;
            else
                count++;
        } else if (e != LWS_TOKZE_DELIMITER && e != LWS_TOKZE_ENDED) {
            failed = 1;     /* numbers, quoted strings, broken lists */
        }
    } while (e > 0 && !failed);
    if (failed) {
        for (size_t i = 0; i < count; i++)
            free(list[i]);
        free(list);
        return -1;
    }
    *out = list;
    *n = count;
    return 0;
}

int sluice_copy_request(struct lws *wsi, char **query, char *peer, size_t peerlen,
                        char ***headers, size_t *nheaders)
{
    *query = sluice_copy_query(wsi);
    sluice_copy_peer(wsi, peer, peerlen);
    if (!*query || sluice_copy_headers(wsi, headers, nheaders))
        return -1;
    return 0;
}
