/* A connection's send queue (a ring of payload references) and how the
 * server side writes it: framed here, many frames per write. */
#include "ws_internal.h"

#include <stdlib.h>
#include <string.h>

/* A drained ring larger than this is freed: a burst does not pin memory
 * on every idle connection it reached. */
#define RING_KEEP 16

void sluice_queue_drop(sluice_conn *c)
{
    for (size_t i = 0; i < c->tx_count; i++)
        sluice_payload_release(sluice_queue_at(c, i)->p);
    free(c->tx_ring);
    c->tx_ring = NULL;
    c->tx_cap = c->tx_first = c->tx_count = 0;
    c->queued = 0;
    c->tx_off = 0;
}

void sluice_queue_drop_unsent(sluice_conn *c)
{
    if (!c->tx_off || !c->tx_count) {
        sluice_queue_drop(c);
        return;
    }
    for (size_t i = 1; i < c->tx_count; i++)
        sluice_payload_release(sluice_queue_at(c, i)->p);
    c->tx_count = 1;
    c->queued = sluice_queue_head(c)->p->len;
}

void sluice_queue_pop(sluice_conn *c)
{
    struct sluice_sendbuf *b = sluice_queue_head(c);
    c->queued -= b->p->len;
    c->tx_off = 0;
    sluice_payload_release(b->p);
    c->tx_first = (c->tx_first + 1) & (c->tx_cap - 1);
    if (--c->tx_count == 0) {
        c->tx_first = 0;
        if (c->tx_cap > RING_KEEP) {
            free(c->tx_ring);
            c->tx_ring = NULL;
            c->tx_cap = 0;
        }
    }
}

int sluice_queue_push(sluice_conn *c, sluice_payload *p, int binary, int compressed)
{
    if (c->tx_count == c->tx_cap) {
        size_t cap = c->tx_cap ? 2 * c->tx_cap : 4;
        struct sluice_sendbuf *ring = malloc(cap * sizeof *ring);
        if (!ring)
            return SLUICE_ENOMEM;
        for (size_t i = 0; i < c->tx_count; i++)
            ring[i] = *sluice_queue_at(c, i);
        free(c->tx_ring);
        c->tx_ring = ring;
        c->tx_cap = cap;
        c->tx_first = 0;
    }
    struct sluice_sendbuf *b = sluice_queue_at(c, c->tx_count);
    b->p = p;
    b->binary = binary;
    b->compressed = compressed;
    c->tx_count++;
    c->queued += p->len;
    return SLUICE_OK;
}

/* RFC 6455 header of a final, unmasked (server to client) text or binary
 * frame into h (10 bytes), RSV1 set for a compressed message (RFC 7692);
 * returns its length. */
static size_t frame_header(unsigned char *h, size_t len, int binary, int compressed)
{
    h[0] = 0x80 | (compressed ? 0x40 : 0) | (binary ? 0x2 : 0x1);
    if (len < 126) {
        h[1] = (unsigned char)len;
        return 2;
    }
    if (len < 65536) {
        h[1] = 126;
        h[2] = (unsigned char)(len >> 8);
        h[3] = (unsigned char)len;
        return 4;
    }
    h[1] = 127;
    for (int i = 0; i < 8; i++)
        h[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
    return 10;
}

/* Whole frames only, in every lws_write: lws writes its own control frames
 * (a ping of the idle policy, a pong) between two of our writes, so a
 * frame split across them would carry a ping inside its payload. Frames
 * are packed into the shared buffer while they fit. One larger than the
 * buffer goes alone, from its payload's own memory, its header in the
 * LWS_PRE room before it; if the socket takes it only in part it stays at
 * the head of the queue, counted, marked handed over (tx_off), until lws
 * has sent the rest. A write the socket takes only in part is kept by lws
 * (lws_issue_raw's buflist_out), which then holds back our next writeable
 * callback until it has sent the rest; we stop there. So when this runs,
 * lws holds nothing of ours. */
int sluice_queue_write_coalesced(sluice_conn *c, unsigned char *out)
{
    struct sluice_sendbuf *b;
    if (sluice_queue_head(c) && c->tx_off)
        sluice_queue_pop(c);
    while ((b = sluice_queue_head(c)) != NULL) {
        unsigned char h[10];
        size_t hlen = frame_header(h, b->p->len, b->binary, b->compressed);
        if (hlen + b->p->len > SLUICE_WRITE_COALESCE) {
            /* A shared payload gets the same header from every connection. */
            unsigned char *start = b->p->buf + LWS_PRE - hlen;
            memcpy(start, h, hlen);
            if (lws_write(c->wsi, start, hlen + b->p->len, LWS_WRITE_RAW) < 0)
                return -1;
            if (lws_partial_buffered(c->wsi)) {
                c->tx_off = hlen + b->p->len;
                break;
            }
            sluice_queue_pop(c);
            continue;
        }
        size_t used = 0;
        do {
            memcpy(out + used, h, hlen);
            memcpy(out + used + hlen, b->p->buf + LWS_PRE, b->p->len);
            used += hlen + b->p->len;
            sluice_queue_pop(c);
            if ((b = sluice_queue_head(c)) == NULL)
                break;
            hlen = frame_header(h, b->p->len, b->binary, b->compressed);
        } while (used + hlen + b->p->len <= SLUICE_WRITE_COALESCE);
        /* LWS_WRITE_RAW on a ws connection goes straight to
         * lws_issue_raw: no framing, no masking. */
        if (lws_write(c->wsi, out, used, LWS_WRITE_RAW) < 0)
            return -1;
        if (lws_partial_buffered(c->wsi))
            break;
    }
    return 0;
}

/* ---- writing at the end of the loop's pass --------------------------------- */

void sluice_queue_want_write(sluice_conn *c)
{
    sluice_loop *loop = c->loop;
    if (c->flush_pos)
        return;
    if (loop->nflush == loop->flush_cap) {
        size_t cap = loop->flush_cap ? 2 * loop->flush_cap : 64;
        sluice_conn **list = realloc(loop->flush, cap * sizeof *list);
        if (!list) {
            lws_callback_on_writable(c->wsi);   /* the slower way still works */
            return;
        }
        loop->flush = list;
        loop->flush_cap = cap;
    }
    loop->flush[loop->nflush++] = c;
    c->flush_pos = loop->nflush;
    /* Queued from an lws timer (before its poll): the poll must not wait. */
    if (loop->nflush == 1)
        sluice_loop_kick(loop);
}

void sluice_queue_unwant(sluice_conn *c)
{
    if (c->flush_pos) {
        c->loop->flush[c->flush_pos - 1] = NULL;
        c->flush_pos = 0;
    }
}

void sluice_loop_flush_writes(sluice_loop *loop)
{
    /* No user code runs below: the list neither grows nor loses entries. */
    for (size_t i = 0; i < loop->nflush; i++) {
        sluice_conn *c = loop->flush[i];
        if (i + SLUICE_PREFETCH_AHEAD < loop->nflush && loop->flush[i + SLUICE_PREFETCH_AHEAD])
            sluice_conn_prefetch(loop->flush[i + SLUICE_PREFETCH_AHEAD]);
        if (c) {
            c->flush_pos = 0;
            sluice_conn_write_now(c);
        }
    }
    loop->nflush = 0;
}

void sluice_loop_flush_free(sluice_loop *loop)
{
    /* a connection that outlives its loop must not reach for the list */
    for (size_t i = 0; i < loop->nflush; i++)
        if (loop->flush[i])
            loop->flush[i]->flush_pos = 0;
    free(loop->flush);
    loop->flush = NULL;
    loop->nflush = loop->flush_cap = 0;
}
