/* The WebSocket connection shared by server and client sides: send queue,
 * reassembly of messages, close handshake bookkeeping. */
#include "ws_internal.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <stdatomic.h>
#include <zlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Close handshakes that cannot complete (peer not reading) end after this. */
#define CLOSE_GRACE_S 5

uint64_t sluice_conn_next_id(void)
{
    /* Process-wide so ids stay unique across loops. */
    static _Atomic uint64_t next_id = 1;
    return atomic_fetch_add(&next_id, 1);
}

sluice_conn *sluice_conn_alloc(sluice_loop *loop, const sluice_conn_handlers *h,
                               void *ud, int is_client, size_t max_message,
                               size_t send_queue_max)
{
    sluice_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->loop = loop;
    if (h)
        c->h = *h;
    c->ud = ud;
    c->id = sluice_conn_next_id();
    c->is_client = is_client;
    c->max_message = max_message ? max_message : 1024 * 1024;
    c->send_queue_max = send_queue_max ? send_queue_max : 8u * 1024 * 1024;
    return c;
}

/* ---- shared payloads ------------------------------------------------------ */

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

/* p compressed with a window of `bits`, or p itself when that is not
 * smaller (or fails); cached on p, so a broadcast is compressed once. */
static sluice_payload *deflated(struct sluice_conn_sink *sink, sluice_payload *p, int bits)
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

/* A drained ring larger than this is freed: a burst does not pin memory
 * on every idle connection it reached. */
#define RING_KEEP 16

/* The i-th queued entry, counting from the oldest. */
static struct sluice_sendbuf *ring_at(const sluice_conn *c, size_t i)
{
    return &c->tx_ring[(c->tx_first + i) & (c->tx_cap - 1)];
}

/* The oldest queued entry, NULL when the queue is empty. */
static struct sluice_sendbuf *queue_head(const sluice_conn *c)
{
    return c->tx_count ? ring_at(c, 0) : NULL;
}

static void drop_queue(sluice_conn *c)
{
    for (size_t i = 0; i < c->tx_count; i++)
        sluice_payload_release(ring_at(c, i)->p);
    free(c->tx_ring);
    c->tx_ring = NULL;
    c->tx_cap = c->tx_first = c->tx_count = 0;
    c->queued = 0;
    c->tx_off = 0;
}

/* The slow-reader policy: drop what is queued, except a frame already
 * partly written (tx_off): the close frame may only follow a whole one. */
static void drop_unsent(sluice_conn *c)
{
    if (!c->tx_off || !c->tx_count) {
        drop_queue(c);
        return;
    }
    for (size_t i = 1; i < c->tx_count; i++)
        sluice_payload_release(ring_at(c, i)->p);
    c->tx_count = 1;
    c->queued = queue_head(c)->p->len;
}

static void pop_head(sluice_conn *c)
{
    struct sluice_sendbuf *b = queue_head(c);
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

/* Appends an entry holding p (the caller's reference passes to it). */
static int push_entry(sluice_conn *c, sluice_payload *p, int binary, int compressed)
{
    if (c->tx_count == c->tx_cap) {
        size_t cap = c->tx_cap ? 2 * c->tx_cap : 4;
        struct sluice_sendbuf *ring = malloc(cap * sizeof *ring);
        if (!ring)
            return SLUICE_ENOMEM;
        for (size_t i = 0; i < c->tx_count; i++)
            ring[i] = *ring_at(c, i);
        free(c->tx_ring);
        c->tx_ring = ring;
        c->tx_cap = cap;
        c->tx_first = 0;
    }
    struct sluice_sendbuf *b = ring_at(c, c->tx_count);
    b->p = p;
    b->binary = binary;
    b->compressed = compressed;
    c->tx_count++;
    c->queued += p->len;
    return SLUICE_OK;
}

void sluice_conn_destroy(sluice_conn *c)
{
    if (!c)
        return;
    lws_sul_cancel(&c->defer_sul);
    lws_sul_cancel(&c->rate_sul);
    drop_queue(c);
    free(c->rx);
    free(c->path);
    free(c->query);
    sluice_free_headers(c->headers, c->nheaders);
    free(c);
}

/* The sink's buffer for coalesced writes, or NULL if it cannot be
 * allocated. */
static unsigned char *sink_buffer(struct sluice_conn_sink *sink)
{
    if (!sink->wbuf)
        sink->wbuf = malloc(LWS_PRE + SLUICE_WRITE_COALESCE);
    return sink->wbuf ? sink->wbuf + LWS_PRE : NULL;
}

/* ---- lws events --------------------------------------------------------- */

void sluice_conn_apply_flow(sluice_conn *c)
{
    if (!c->wsi || c->state != SLUICE_CONN_OPEN)
        return;
    int paused = c->paused || c->rate_paused || (c->sink && c->sink->paused);
    lws_rx_flow_control(c->wsi, paused ? 0 : 1);
}

/* What a reader has not taken stays in our queue, counted against
 * send_queue, rather than in a kernel buffer that grows to megabytes. It
 * also keeps room in the socket for a close frame: a reader that stopped
 * reading altogether can still be told 1008 (see enqueue). */
#define UNSENT_LOWAT (128 * 1024)

void sluice_conn_limit_unsent(sluice_conn *c, int on)
{
    int fd = c->wsi ? lws_get_socket_fd(c->wsi) : -1;
    /* 0: the system default (no limit unless net.ipv4.tcp_notsent_lowat). */
    int lowat = on ? UNSENT_LOWAT : 0;
    if (fd >= 0)
        setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof lowat);
}

/* After a user callback: if the connection was reported closed from
 * inside it, free it now and have lws drop the socket. */
static int finish_user_call(sluice_conn *c)
{
    c->busy--;
    if (c->dead && !c->busy) {
        sluice_conn_destroy(c);
        return -1;
    }
    return 0;
}

int sluice_conn_on_open(sluice_conn *c)
{
    sluice_loop_note_activity(c->loop);
    if (c->state == SLUICE_CONN_CONNECTING)
        c->state = SLUICE_CONN_OPEN;
    if (c->state == SLUICE_CONN_OPEN) {
        sluice_conn_apply_flow(c);
        if (c->h.open) {
            c->busy++;
            c->h.open(c->ud, c);
            if (finish_user_call(c))
                return -1;
        }
    }
    /* Messages queued before the handshake, or a close requested. */
    if (c->wsi && (queue_head(c) || c->state == SLUICE_CONN_CLOSING))
        lws_callback_on_writable(c->wsi);
    return 0;
}

static void begin_close(sluice_conn *c, int code, const char *reason, int grace);
/* ---- rate limits ----------------------------------------------------------- */

static void rate_refill(sluice_conn *c)
{
    lws_usec_t now = lws_now_usecs();
    double dt = (double)(now - c->rate_at_us) / 1e6;
    c->rate_at_us = now;
    if (c->rate.messages > 0) {
        c->tok_messages += dt * c->rate.messages;
        if (c->tok_messages > c->rate.burst)
            c->tok_messages = c->rate.burst;
    }
    if (c->rate.bytes > 0) {
        c->tok_bytes += dt * c->rate.bytes;
        if (c->tok_bytes > c->rate.burst_bytes)
            c->tok_bytes = c->rate.burst_bytes;
    }
}

static void rate_resume(lws_sorted_usec_list_t *sul)
{
    sluice_conn *c = lws_container_of(sul, sluice_conn, rate_sul);
    c->rate_paused = 0;
    sluice_conn_apply_flow(c);
}

/* Takes a message of len bytes from the buckets. 0: deliver it; -1: the
 * connection is closing for it (close policy). With the pause policy a
 * deficit stops reading until it is paid back. */
static int rate_take(sluice_conn *c, size_t len)
{
    rate_refill(c);
    int over_m = c->rate.messages > 0 && c->tok_messages < 1;
    int over_b = c->rate.bytes > 0 && c->tok_bytes < (double)len;
    if (c->rate.close && (over_m || over_b)) {
        if (c->route)
            c->route->rate_closed++;
        sluice_conn_close(c, SLUICE_CLOSE_POLICY,
                          over_m ? "rate limit: messages/s" : "rate limit: bytes/s");
        sluice_loop_log(c->loop, SLUICE_LOG_INFO,
                        "ws conn %llu from %s: over its %s rate, closing with 1008",
                        (unsigned long long)c->id, c->peer, over_m ? "message" : "byte");
        return -1;
    }
    if (c->rate.messages > 0)
        c->tok_messages -= 1;
    if (c->rate.bytes > 0)
        c->tok_bytes -= (double)len;
    double wait_s = 0;
    if (c->tok_messages < 0)
        wait_s = -c->tok_messages / c->rate.messages;
    if (c->tok_bytes < 0 && -c->tok_bytes / c->rate.bytes > wait_s)
        wait_s = -c->tok_bytes / c->rate.bytes;
    if (wait_s > 0 && !c->rate_paused) {
        if (c->route)
            c->route->rate_paused++;
        c->rate_paused = 1;
        sluice_conn_apply_flow(c);
        lws_sul_schedule(c->loop->ctx, 0, &c->rate_sul, rate_resume,
                         (lws_usec_t)(wait_s * 1e6) + 1);
    }
    return 0;
}

int sluice_conn_set_rate(sluice_conn *c, const sluice_rate *r)
{
    if (!c)
        return SLUICE_EINVAL;
    if (r && (!(r->messages >= 0) || !(r->bytes >= 0) || !(r->burst >= 0) ||
              !(r->burst_bytes >= 0)))
        return SLUICE_EINVAL;
    lws_sul_cancel(&c->rate_sul);
    c->rate_paused = 0;
    c->has_rate = r && (r->messages > 0 || r->bytes > 0);
    if (c->has_rate) {
        c->rate = *r;
        if (c->rate.burst <= 0)
            c->rate.burst = c->rate.messages > 1 ? c->rate.messages : 1;
        if (c->rate.burst_bytes <= 0)
            c->rate.burst_bytes = c->rate.bytes;
        c->tok_messages = c->rate.burst;
        c->tok_bytes = c->rate.burst_bytes;
        c->rate_at_us = lws_now_usecs();
    }
    sluice_conn_apply_flow(c);
    return SLUICE_OK;
}

/* Returns -1 if c was freed meanwhile. */
static int deliver(sluice_conn *c, const char *data, size_t len, int binary)
{
    if (c->state != SLUICE_CONN_OPEN || !c->h.message)
        return 0;
    if (c->has_rate && rate_take(c, len))
        return 0;
    if (c->route) {
        c->route->messages_in++;
        c->route->bytes_in += len;
    }
    c->busy++;
    c->h.message(c->ud, c, data, len, binary);
    return finish_user_call(c);
}

int sluice_conn_on_receive(sluice_conn *c, const void *in, size_t len)
{
    struct lws *wsi = c->wsi;
    sluice_loop_note_activity(c->loop);
    int final = lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0;
    if (!c->rx_in_message) {
        c->rx_in_message = 1;
        c->rx_binary = lws_frame_is_binary(wsi);
        c->rx_len = 0;
    }
    if (c->too_big) {
        /* the rest of a message already refused */
        c->too_big = !final;
        return 0;
    }
    if (c->rx_len + len > c->max_message) {
        static const char why[] = "message too big";
        if (c->coalesce) {
            /* Our close frame after what is queued (on_writeable). lws
             * does not act on -1 while it inflates a permessage-deflate
             * message, so the closing is ours on the server side. */
            begin_close(c, SLUICE_CLOSE_TOO_BIG, why, 1);
            c->rx_len = 0;
            c->rx_in_message = 0;
            c->too_big = !final;
            return 0;
        }
        c->state = SLUICE_CONN_CLOSING;
        c->close_code = SLUICE_CLOSE_TOO_BIG;
        snprintf(c->close_reason, sizeof c->close_reason, "%s", why);
        lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE,
                         (unsigned char *)why, sizeof why - 1);
        return -1;
    }
    if (final && c->rx_len == 0) {
        /* Common case: the whole message in one piece, no copy. */
        c->rx_in_message = 0;
        return deliver(c, in, len, c->rx_binary);
    }
    if (c->rx_len + len > c->rx_cap) {
        size_t cap = c->rx_cap ? c->rx_cap : 4096;
        while (cap < c->rx_len + len)
            cap *= 2;
        if (cap > c->max_message)
            cap = c->max_message;
        char *bigger = realloc(c->rx, cap);
        if (!bigger)
            return -1;
        c->rx = bigger;
        c->rx_cap = cap;
    }
    if (len)
        memcpy(c->rx + c->rx_len, in, len);
    c->rx_len += len;
    if (final) {
        c->rx_in_message = 0;
        size_t whole = c->rx_len;
        c->rx_len = 0;
        if (deliver(c, c->rx, whole, c->rx_binary))
            return -1;
        /* Do not keep a large buffer for an idle connection. */
        if (c->rx_cap > 256 * 1024 && !c->rx_in_message) {
            free(c->rx);
            c->rx = NULL;
            c->rx_cap = 0;
        }
    }
    return 0;
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

/* Server side: frame the queued messages ourselves, packed into out
 * (SLUICE_WRITE_COALESCE bytes), and hand each full buffer to lws in one
 * raw write: one send() for many frames. A frame larger than the buffer
 * goes out in pieces (tx_off). A write the socket takes only in part is
 * kept by lws (lws_issue_raw's buflist_out), which then holds back our
 * next writeable callback until it has sent the rest; we stop there. */
static int write_coalesced(sluice_conn *c, unsigned char *out)
{
    while (queue_head(c)) {
        size_t used = 0;
        struct sluice_sendbuf *b;
        while ((b = queue_head(c)) != NULL && used < SLUICE_WRITE_COALESCE) {
            unsigned char h[10];
            size_t len = b->p->len;
            size_t hlen = frame_header(h, len, b->binary, b->compressed);
            size_t off = c->tx_off, n;
            if (off < hlen) {
                n = hlen - off;
                if (n > SLUICE_WRITE_COALESCE - used)
                    n = SLUICE_WRITE_COALESCE - used;
                memcpy(out + used, h + off, n);
                used += n;
                off += n;
            }
            if (off >= hlen) {
                n = hlen + len - off;
                if (n > SLUICE_WRITE_COALESCE - used)
                    n = SLUICE_WRITE_COALESCE - used;
                if (n)
                    memcpy(out + used, b->p->buf + LWS_PRE + (off - hlen), n);
                used += n;
                off += n;
            }
            if (off < hlen + len) {
                c->tx_off = off;    /* the buffer is full */
                break;
            }
            pop_head(c);
        }
        /* LWS_WRITE_RAW on a ws connection goes straight to
         * lws_issue_raw: no framing, no masking. */
        if (lws_write(c->wsi, out, used, LWS_WRITE_RAW) < 0)
            return -1;
        if (lws_partial_buffered(c->wsi))
            break;
    }
    return 0;
}

int sluice_conn_on_writeable(sluice_conn *c)
{
    struct sluice_sendbuf *b;
    if (c->close_sent)
        return 0;
    if (!queue_head(c) && c->state == SLUICE_CONN_CLOSING) {
        /* -1 with a reason set: lws sends our close frame after the
         * queued messages, then reads (and drops data frames) until the
         * peer's close frame or its 5 s PENDING_TIMEOUT_CLOSE_ACK. It
         * still calls us when writeable meanwhile: a second -1 would
         * close the socket at once, with the peer's unread frames in
         * the kernel buffer, and that reset destroys our acks and
         * close frame on their way (the peer sees 1006). */
        c->close_sent = 1;
        lws_close_reason(c->wsi, (enum lws_close_status)c->close_code,
                         (unsigned char *)c->close_reason, strlen(c->close_reason));
        return -1;
    }
    /* tx_off is only set by write_coalesced, once the buffer exists. */
    unsigned char *out = c->coalesce && c->sink ? sink_buffer(c->sink) : NULL;
    if (out) {
        if (write_coalesced(c, out))
            return -1;
    } else {
        /* Client side (lws masks the frames) or no memory for the write
         * buffer: one lws_write per frame, until the socket would block. */
        while ((b = queue_head(c)) != NULL) {
            int n = lws_write(c->wsi, b->p->buf + LWS_PRE, b->p->len,
                              b->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
            if (n < 0)
                return -1;
            pop_head(c);
            if (lws_send_pipe_choked(c->wsi))
                break;
        }
    }
    if (queue_head(c) || c->state == SLUICE_CONN_CLOSING)
        lws_callback_on_writable(c->wsi);
    return 0;
}

void sluice_conn_on_peer_close(sluice_conn *c, const void *in, size_t len)
{
    const unsigned char *p = in;
    if (len >= 2) {
        c->peer_code = (p[0] << 8) | p[1];
        size_t rlen = len - 2;
        if (rlen >= sizeof c->peer_reason)
            rlen = sizeof c->peer_reason - 1;
        memcpy(c->peer_reason, p + 2, rlen);
        c->peer_reason[rlen] = '\0';
    } else {
        c->peer_code = SLUICE_CLOSE_NO_STATUS;
        c->peer_reason[0] = '\0';
    }
}

void sluice_conn_on_closed(sluice_conn *c, const char *fallback_reason)
{
    sluice_loop_note_activity(c->loop);
    c->wsi = NULL;
    c->state = SLUICE_CONN_CLOSED;
    drop_queue(c);
    int code;
    const char *reason;
    if (c->peer_code) {
        code = c->peer_code;
        reason = c->peer_reason;
    } else if (c->close_code) {
        code = c->close_code;      /* we closed; the peer's echo is not reported */
        reason = c->close_reason;
    } else {
        code = SLUICE_CLOSE_ABNORMAL;
        reason = fallback_reason ? fallback_reason : "connection lost";
    }
    if (c->sink)
        c->sink->closed(c->sink, c);
    if (c->h.close)
        c->h.close(c->ud, c, code, reason);
    if (c->busy)
        c->dead = 1;            /* freed when the running callback returns */
    else
        sluice_conn_destroy(c);
}

/* ---- public API ---------------------------------------------------------- */

uint64_t sluice_conn_id(const sluice_conn *c) { return c ? c->id : 0; }
int sluice_conn_is_client(const sluice_conn *c) { return c && c->is_client; }
int sluice_conn_is_open(const sluice_conn *c) { return c && c->state == SLUICE_CONN_OPEN; }
const char *sluice_conn_path(const sluice_conn *c) { return c && c->path ? c->path : ""; }
const char *sluice_conn_query(const sluice_conn *c) { return c && c->query ? c->query : ""; }
const char *sluice_conn_peer(const sluice_conn *c) { return c ? c->peer : ""; }
size_t sluice_conn_queued_bytes(const sluice_conn *c) { return c ? c->queued : 0; }
void sluice_conn_set_userdata(sluice_conn *c, void *p) { if (c) c->userdata = p; }
void *sluice_conn_userdata(const sluice_conn *c) { return c ? c->userdata : NULL; }

void sluice_conn_headers(const sluice_conn *c, sluice_header_fn fn, void *ud)
{
    if (!c || !fn)
        return;
    for (size_t i = 0; i < c->nheaders; i++)
        fn(ud, c->headers[2 * i], c->headers[2 * i + 1]);
}

/* Starts the close handshake once the queue is empty; the grace timeout
 * bounds it when the peer stops reading. */
static void begin_close(sluice_conn *c, int code, const char *reason, int grace)
{
    int was_connecting = c->state == SLUICE_CONN_CONNECTING;
    c->state = SLUICE_CONN_CLOSING;
    c->close_code = code ? code : SLUICE_CLOSE_NORMAL;
    snprintf(c->close_reason, sizeof c->close_reason, "%s", reason ? reason : "");
    if (!c->wsi || was_connecting)
        return;                 /* sent once the handshake completes */
    /* The close handshake needs the peer's reply: a socket left paused
     * never reads it, and closing it with unread input sends a reset
     * that can destroy our close frame on the way (the peer sees 1006). */
    lws_rx_flow_control(c->wsi, 1);
    lws_callback_on_writable(c->wsi);
    if (grace)
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, CLOSE_GRACE_S);
}

static int enqueue(sluice_conn *c, const void *data, size_t len, int binary,
                   sluice_payload *shared)
{
    if (!c || (!data && len))
        return SLUICE_EINVAL;
    if (c->state != SLUICE_CONN_OPEN && c->state != SLUICE_CONN_CONNECTING)
        return SLUICE_ECLOSED;
    if (c->queued + len > c->send_queue_max) {
        /* Slow reader: stop buffering for it and tell it why. Lifting the
         * unsent limit lets the close frame (and what lws holds of a
         * frame begun) into the socket's buffer even if it reads nothing. */
        drop_unsent(c);
        if (c->coalesce)
            sluice_conn_limit_unsent(c, 0);
        begin_close(c, SLUICE_CLOSE_POLICY, "send queue full", 1);
        sluice_loop_log(c->loop, SLUICE_LOG_WARN,
                        "ws conn %llu: send queue full, closing with 1008",
                        (unsigned long long)c->id);
        return SLUICE_EFULL;
    }
    /* A broadcast's payload gains a reference; a message of its own is
     * copied into a new payload. */
    sluice_payload *p = shared;
    if (p)
        p->refs++;
    else if (!(p = sluice_payload_new(data, len)))
        return SLUICE_ENOMEM;
    /* permessage-deflate: the compressed form, shared like p */
    int compressed = 0;
    if (c->deflate_bits && c->sink && len >= SLUICE_DEFLATE_MIN) {
        sluice_payload *zp = deflated(c->sink, p, c->deflate_bits);
        if (zp != p) {
            zp->refs++;
            sluice_payload_release(p);
            p = zp;
            compressed = 1;
        }
    }
    int was_empty = queue_head(c) == NULL;
    if (push_entry(c, p, binary, compressed) != SLUICE_OK) {
        sluice_payload_release(p);
        return SLUICE_ENOMEM;
    }
    if (c->route) {
        c->route->messages_out++;
        c->route->bytes_out += len;
    }
    /* Not empty before: the writeable callback is already asked for. */
    if (was_empty && c->state == SLUICE_CONN_OPEN && c->wsi)
        lws_callback_on_writable(c->wsi);
    return SLUICE_OK;
}

int sluice_conn_send(sluice_conn *c, const void *data, size_t len, int binary)
{
    return enqueue(c, data, len, binary, NULL);
}

int sluice_conn_send_payload(sluice_conn *c, sluice_payload *p, int binary)
{
    if (!p)
        return SLUICE_EINVAL;
    /* lws masks a client's frames in place: a client gets its own copy. */
    if (c && !c->coalesce)
        return enqueue(c, p->buf + LWS_PRE, p->len, binary, NULL);
    return enqueue(c, p->buf + LWS_PRE, p->len, binary, p);
}

int sluice_conn_close(sluice_conn *c, int code, const char *reason)
{
    if (!c)
        return SLUICE_EINVAL;
    if (c->state == SLUICE_CONN_CLOSING || c->state == SLUICE_CONN_CLOSED)
        return SLUICE_ECLOSED;
    begin_close(c, code, reason, 0);
    return SLUICE_OK;
}

void sluice_conn_pause_reading(sluice_conn *c, int paused)
{
    if (!c)
        return;
    c->paused = paused ? 1 : 0;
    sluice_conn_apply_flow(c);
}
