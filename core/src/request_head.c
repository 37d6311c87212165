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
