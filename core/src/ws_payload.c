/* Outgoing message bodies: refcounted payloads (a broadcast's is shared by
 * every send queue it is in) and their permessage-deflate form (RFC 7692),
 * compressed once per window size for all the connections that take it. */
#include "ws_internal.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

sluice_payload *sluice_payload_new(const void *data, size_t len)
{
    if (!data && len)
        return NULL;
    sluice_payload *p = malloc(sizeof *p + LWS_PRE + len);
    if (!p)
        return NULL;
    p->refs = 1;
    p->len = len;
    p->z = NULL;
    p->z_bits = 0;
    if (len)
        memcpy(p->buf + LWS_PRE, data, len);
    return p;
}

void sluice_payload_release(sluice_payload *p)
{
    if (p && --p->refs == 0) {
        if (p->z && p->z != p)
            sluice_payload_release(p->z);
        free(p);
    }
}

/* ---- permessage-deflate ---------------------------------------------------- */

int sluice_conn_deflate_bits(struct lws *wsi)
{
    /* lws answers the first permessage-deflate offer it accepts; setting an
     * option it ignores for us (we compress ourselves) fails unless the
     * extension is active on wsi. */
    if (lws_set_extension_option(wsi, "permessage-deflate", "compression_level", "1"))
        return 0;
    int total = lws_hdr_total_length(wsi, WSI_TOKEN_EXTENSIONS);
    char *offer = total > 0 ? malloc((size_t)total + 1) : NULL;
    int bits = 15;
    if (offer && lws_hdr_copy(wsi, offer, total + 1, WSI_TOKEN_EXTENSIONS) > 0) {
        char *pmd = strstr(offer, "permessage-deflate");
        char *end = pmd ? strchr(pmd, ',') : NULL;
        if (end)
            *end = '\0';
        char *w = pmd ? strstr(pmd, "server_max_window_bits") : NULL;
        if (w && (w = strchr(w, '=')) != NULL)
            bits = atoi(w + 1 + (w[1] == '"'));
    }
    free(offer);
    /* zlib's raw deflate has no 256-byte window: such a client gets its
     * messages uncompressed (always allowed). */
    return bits >= 9 && bits <= 15 ? bits : 0;
}

void sluice_conn_sink_release(struct sluice_conn_sink *sink)
{
    for (int i = 0; i < 16; i++) {
        if (sink->zs[i]) {
            deflateEnd(sink->zs[i]);
            free(sink->zs[i]);
            sink->zs[i] = NULL;
        }
    }
}

sluice_payload *sluice_payload_deflated(struct sluice_conn_sink *sink, sluice_payload *p, int bits)
{
    if (p->z && p->z_bits == bits)
        return p->z;
    z_stream *z = sink->zs[bits];
    if (!z) {
        z = calloc(1, sizeof *z);
        /* level 1, memLevel 8: a broadcast is compressed once, but the
         * loop thread does it while every subscriber waits */
        if (!z || deflateInit2(z, 1, Z_DEFLATED, -bits, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
            free(z);
            return p;
        }
        sink->zs[bits] = z;
    } else {
        deflateReset(z);
    }
    size_t cap = deflateBound(z, p->len) + 8;
    sluice_payload *out = malloc(sizeof *out + LWS_PRE + cap);
    if (!out)
        return p;
    z->next_in = p->buf + LWS_PRE;
    z->avail_in = (uInt)p->len;
    z->next_out = out->buf + LWS_PRE;
    z->avail_out = (uInt)cap;
    int rc = deflate(z, Z_SYNC_FLUSH);
    size_t n = cap - z->avail_out;
    /* RFC 7692 7.2.1: the sync flush's empty block (00 00 ff ff) is cut */
    if (rc != Z_OK || z->avail_in || n < 4 || n - 4 >= p->len) {
        free(out);
        out = p;
    } else {
        out->refs = 1;
        out->len = n - 4;
        out->z = out;
        out->z_bits = bits;
    }
    if (p->z && p->z != p)
        sluice_payload_release(p->z);
    p->z = out;   /* (out == p holds no extra reference) */
    p->z_bits = bits;
    return out;
}
