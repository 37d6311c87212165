/* The WebSocket connection shared by server and client sides: reassembly
 * of messages, sending (queue: ws_queue.c, compression: ws_payload.c),
 * rate limits (buckets: ws_rate.c), close handshake bookkeeping. */
#include "ws_internal.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <stdatomic.h>
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

void sluice_conn_destroy(sluice_conn *c)
{
    if (!c)
        return;
    lws_sul_cancel(&c->defer_sul);
    lws_sul_cancel(&c->rate_sul);
    sluice_queue_unwant(c);
    sluice_conn_leave_sets(c);
    sluice_queue_drop(c);
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
    if (c->wsi && (sluice_queue_head(c) || c->state == SLUICE_CONN_CLOSING))
        lws_callback_on_writable(c->wsi);
    return 0;
}

static void begin_close(sluice_conn *c, int code, const char *reason, int grace);
/* ---- rate limits ----------------------------------------------------------- */

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
    double wait_s;
    int over = sluice_rate_take(c, len, &wait_s);
    if (over) {
        int over_m = over == SLUICE_RATE_OVER_MESSAGES;
        if (c->route)
            c->route->rate_closed++;
        sluice_conn_close(c, SLUICE_CLOSE_POLICY,
                          over_m ? "rate limit: messages/s" : "rate limit: bytes/s");
        sluice_loop_log(c->loop, SLUICE_LOG_INFO,
                        "ws conn %llu from %s: over its %s rate, closing with 1008",
                        (unsigned long long)c->id, c->peer, over_m ? "message" : "byte");
        return -1;
    }
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
    sluice_rate_reset(c, r);
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

/* Writes what is queued until the socket would block, then asks for the
 * writeable callback if more is left or the close frame must follow.
 * -1: the socket failed. */
static int write_queue(sluice_conn *c)
{
    struct sluice_sendbuf *b;
    /* tx_off is only set by write_coalesced, once the buffer exists. */
    unsigned char *out = c->coalesce && c->sink ? sink_buffer(c->sink) : NULL;
    if (out) {
        if (sluice_queue_write_coalesced(c, out))
            return -1;
    } else {
        /* Client side (lws masks the frames) or no memory for the write
         * buffer: one lws_write per frame, until the socket would block. */
        while ((b = sluice_queue_head(c)) != NULL) {
            int n = lws_write(c->wsi, b->p->buf + LWS_PRE, b->p->len,
                              b->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
            if (n < 0)
                return -1;
            sluice_queue_pop(c);
            if (lws_send_pipe_choked(c->wsi))
                break;
        }
    }
    if (sluice_queue_head(c) || c->state == SLUICE_CONN_CLOSING)
        lws_callback_on_writable(c->wsi);
    return 0;
}

int sluice_conn_on_writeable(sluice_conn *c)
{
    if (c->close_sent)
        return 0;
    if (!sluice_queue_head(c) && c->state == SLUICE_CONN_CLOSING) {
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
    return write_queue(c);
}

void sluice_conn_write_now(sluice_conn *c)
{
    if (!c->wsi || c->close_sent || !sluice_queue_head(c))
        return;
    /* What lws holds of an earlier write goes first: it has asked for the
     * writeable callback, which sends that, then calls us. */
    if (lws_partial_buffered(c->wsi)) {
        lws_callback_on_writable(c->wsi);
        return;
    }
    /* A socket that failed is closed by lws, as when the writeable
     * callback returns -1 (the user hears 1006). */
    if (write_queue(c))
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
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
    sluice_queue_drop(c);
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
    sluice_conn_leave_sets(c);
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
        sluice_queue_drop_unsent(c);
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
        sluice_payload *zp = sluice_payload_deflated(c->sink, p, c->deflate_bits);
        if (zp != p) {
            zp->refs++;
            sluice_payload_release(p);
            p = zp;
            compressed = 1;
        }
    }
    int was_empty = sluice_queue_head(c) == NULL;
    if (sluice_queue_push(c, p, binary, compressed) != SLUICE_OK) {
        sluice_payload_release(p);
        return SLUICE_ENOMEM;
    }
    if (c->route) {
        c->route->messages_out++;
        c->route->bytes_out += len;
    }
    /* Not empty before: a write is already on its way. */
    if (was_empty && c->state == SLUICE_CONN_OPEN && c->wsi) {
        if (c->coalesce)
            sluice_queue_want_write(c);
        else
            lws_callback_on_writable(c->wsi);
    }
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
