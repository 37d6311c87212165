/* WebSocket internals shared by ws_conn.c (a connection, either side; its
 * send queue in ws_queue.c, payloads and compression in ws_payload.c, rate
 * buckets in ws_rate.c), ws_server.c and ws_client.c. A connection knows
 * nothing of the server that accepted it: it reports to a sink. */
#ifndef SLUICE_WS_INTERNAL_H
#define SLUICE_WS_INTERNAL_H

#include "loop_internal.h"
#include "sluice/ws.h"

/* A message body, refcounted: a broadcast's is referenced from the send
 * queue of every connection it goes to. LWS_PRE bytes of headroom (for
 * lws_write) precede the len bytes of data in buf. */
struct sluice_payload {
    size_t refs;
    size_t len;
    /* permessage-deflate: the same message compressed with a window of
     * z_bits, made once for every connection that can take it (NULL: not
     * yet; a payload that does not get smaller keeps z == itself) */
    struct sluice_payload *z;
    int z_bits;
    unsigned char buf[];
};

/* One queued outgoing message (an entry of the connection's ring). */
struct sluice_sendbuf {
    struct sluice_payload *p;   /* holds one reference */
    int binary;
    int compressed;             /* p is deflated: RSV1 set on its frame */
};

/* The server's lists (connections, sockets): doubly linked through the
 * nodes' prev and next fields. */
#define SLUICE_LIST_PUSH(head, node) do {                                   \
        (node)->prev = NULL;                                                \
        (node)->next = (head);                                              \
        if (head)                                                           \
            (head)->prev = (node);                                          \
        (head) = (node);                                                    \
    } while (0)
#define SLUICE_LIST_UNLINK(head, node) do {                                 \
        if ((node)->prev)                                                   \
            (node)->prev->next = (node)->next;                              \
        else if ((head) == (node))                                          \
            (head) = (node)->next;                                          \
        if ((node)->next)                                                   \
            (node)->next->prev = (node)->prev;                              \
        (node)->prev = (node)->next = NULL;                                 \
    } while (0)

/* Server-side writes pack queued frames into one buffer of this size and
 * one lws_write: no more than lws_issue_raw sends at once (the context's
 * pt_serv_buf_size, loop.c), so lws never copies a remainder it did not
 * even try to send. */
#define SLUICE_WRITE_COALESCE (64 * 1024)

/* What a server-side connection shares with the others of its server:
 * the read pause of them all, one buffer for coalesced writes, and where
 * it reports that it is gone. NULL on the client side. */
struct sluice_conn_sink {
    int paused;
    /* SLUICE_WRITE_COALESCE bytes after LWS_PRE headroom; allocated on
     * first use (sluice_conn_sink_buffer), freed by the sink's owner. A
     * write either goes out or lws copies what the socket did not take,
     * so one buffer serves every connection. */
    unsigned char *wbuf;
    void (*closed)(struct sluice_conn_sink *sink, sluice_conn *c);
    /* permessage-deflate: one deflate stream per window size, reset for
     * every message (allocated on first use, freed by the owner) */
    void *zs[16];
};
/* ws_payload.c: the window our messages to wsi may use if it negotiated
 * permessage-deflate (the client's server_max_window_bits, else 15), or 0. */
int sluice_conn_deflate_bits(struct lws *wsi);
/* Frees the sink's deflate streams. */
void sluice_conn_sink_release(struct sluice_conn_sink *sink);
/* p compressed with a window of `bits`, or p itself when that is not
 * smaller (or fails); cached on p, so a broadcast is compressed once. */
struct sluice_payload *sluice_payload_deflated(struct sluice_conn_sink *sink,
                                               struct sluice_payload *p, int bits);

enum sluice_conn_state {
    SLUICE_CONN_CONNECTING,  /* client handshake in progress */
    SLUICE_CONN_OPEN,
    SLUICE_CONN_CLOSING,     /* close requested, queue draining */
    SLUICE_CONN_CLOSED       /* close handler running or done */
};

struct sluice_conn {
    sluice_loop *loop;
    struct lws *wsi;            /* NULL once lws closed it */
    struct sluice_conn_sink *sink;   /* NULL on the client side */
    sluice_conn *prev, *next;   /* in the sink owner's list */
    sluice_route_stats *route;  /* its route's counters; NULL on the client side */
    size_t route_pos;           /* its index in the route's array (server side) */
    /* the connection sets it is in (ws_set.c), each with its index there */
    struct sluice_set_member *sets;
    size_t nsets, sets_cap;
    /* 1 + its index in the loop's list of connections to write once the
     * pass ends (sluice_queue_want_write); 0: not listed */
    size_t flush_pos;
    sluice_conn_handlers h;
    void *ud;
    void *userdata;
    uint64_t id;
    int is_client;
    enum sluice_conn_state state;
    char *path, *query;
    char peer[64];
    char **headers;             /* name, value, name, value… */
    size_t nheaders;
    size_t max_message, send_queue_max;
    /* reassembly of fragmented / split messages */
    char *rx;
    size_t rx_len, rx_cap;
    int rx_binary, rx_in_message;
    int too_big;                /* inside a message refused as too big */
    /* send queue: a ring of tx_cap entries (a power of two), tx_count of
     * them from tx_first (sluice_queue_head/sluice_queue_at below).
     * No allocation per message queued, only per payload. */
    struct sluice_sendbuf *tx_ring;
    size_t tx_cap, tx_first, tx_count;
    size_t queued;
    /* server side: frames are framed here and written raw, many per
     * write; tx_off is nonzero when the head frame was handed to lws
     * whole and lws still holds part of it (it is counted until sent) */
    int coalesce;
    size_t tx_off;
    /* permessage-deflate negotiated: the window (9..15) our messages may
     * use; 0: not negotiated (or a window zlib cannot do) */
    int deflate_bits;
    /* our close request, and the peer's close frame */
    int close_code;
    char close_reason[124];
    int peer_code;              /* 0: no close frame from the peer */
    int close_sent;             /* our close frame is handed to lws */
    char peer_reason[124];
    int paused;
    /* rate limit (sluice_conn_set_rate): tokens left, refilled lazily
     * from rate_at_us; rate_paused while a deficit is paid back, with
     * rate_sul pending to resume */
    int has_rate, rate_paused;
    sluice_rate rate;
    double tok_messages, tok_bytes;
    lws_usec_t rate_at_us;
    lws_sorted_usec_list_t rate_sul;
    /* a user callback is running; if the close was reported meanwhile
     * (server freed from it), the caller frees c once it returns */
    int busy;
    int dead;
    /* client connect failure inside lws_client_connect_via_info: reported
     * from a deferred callback so the caller gets *out first */
    int connecting_sync;
    int connect_failed;
    lws_sorted_usec_list_t defer_sul;
};

/* A pass over thousands of connections (a broadcast, the end-of-pass
 * writes) waits on memory for each one's first touch: it asks for the
 * lines of the one this many steps ahead while it works on this one. */
#define SLUICE_PREFETCH_AHEAD 8
static inline void sluice_conn_prefetch(const sluice_conn *c)
{
    __builtin_prefetch(&c->state);
    __builtin_prefetch(&c->queued);
    __builtin_prefetch(&c->tx_off);
}

/* ws_queue.c: the send queue. The i-th queued entry, counting from the
 * oldest; the oldest, NULL when the queue is empty. */
static inline struct sluice_sendbuf *sluice_queue_at(const sluice_conn *c, size_t i)
{
    return &c->tx_ring[(c->tx_first + i) & (c->tx_cap - 1)];
}
static inline struct sluice_sendbuf *sluice_queue_head(const sluice_conn *c)
{
    return c->tx_count ? sluice_queue_at(c, 0) : NULL;
}
void sluice_queue_drop(sluice_conn *c);
/* The slow-reader policy: drop what is queued, except a frame already
 * partly sent (tx_off): the close frame may only follow a whole one. */
void sluice_queue_drop_unsent(sluice_conn *c);
void sluice_queue_pop(sluice_conn *c);
/* Appends an entry holding p (the caller's reference passes to it). */
int sluice_queue_push(sluice_conn *c, struct sluice_payload *p, int binary, int compressed);
/* Server side: frame the queued messages ourselves, packed into out
 * (SLUICE_WRITE_COALESCE bytes), and hand each buffer of whole frames to
 * lws in one raw write: one send() for many frames. A frame larger than
 * the buffer goes in a write of its own (tx_off). -1: the write failed. */
int sluice_queue_write_coalesced(sluice_conn *c, unsigned char *out);

/* Server side: c has something new to send. It is written once the loop's
 * current pass ends (sluice_loop_flush_writes), not after another poll for
 * POLLOUT: whatever the pass queued to it goes out in one write, and a
 * socket that can take it never enters the poll set for writing. */
void sluice_queue_want_write(sluice_conn *c);
/* c is being freed: it leaves the loop's list. */
void sluice_queue_unwant(sluice_conn *c);
/* ws_conn.c: writes c's queue now, outside any lws callback (from
 * sluice_loop_flush_writes). */
void sluice_conn_write_now(sluice_conn *c);

/* ws_set.c: one set c is in, and c's index in that set's array. */
struct sluice_set_member {
    sluice_conn_set *set;
    size_t pos;
};
/* c leaves every set it is in (it is closed, or being freed). */
void sluice_conn_leave_sets(sluice_conn *c);

/* ws_rate.c: c's buckets set from r (NULL or all 0: no limit). */
void sluice_rate_reset(sluice_conn *c, const sluice_rate *r);
/* Takes a message of len bytes from c's buckets: 0 and *wait_s, the
 * seconds until a deficit is paid back (0: none); or, with the close
 * policy, nothing taken and which bucket is short. */
#define SLUICE_RATE_OVER_MESSAGES 1
#define SLUICE_RATE_OVER_BYTES 2
int sluice_rate_take(sluice_conn *c, size_t len, double *wait_s);

uint64_t sluice_conn_next_id(void);
sluice_conn *sluice_conn_alloc(sluice_loop *loop, const sluice_conn_handlers *h,
                               void *ud, int is_client, size_t max_message,
                               size_t send_queue_max);
/* Frees the connection's memory only (no callbacks). */
void sluice_conn_destroy(sluice_conn *c);
/* lws event handlers; a negative return asks lws to close the wsi. */
int sluice_conn_on_open(sluice_conn *c);
int sluice_conn_on_receive(sluice_conn *c, const void *in, size_t len);
int sluice_conn_on_writeable(sluice_conn *c);
void sluice_conn_on_peer_close(sluice_conn *c, const void *in, size_t len);
/* The wsi is gone (the caller detached it): reports the close to the
 * user and frees c. */
void sluice_conn_on_closed(sluice_conn *c, const char *fallback_reason);
/* Applies the effective read pause (connection or server) to the wsi. */
void sluice_conn_apply_flow(sluice_conn *c);
/* Bounds (on) or stops bounding (off) the bytes the kernel holds for the
 * socket that the peer has not taken yet (TCP_NOTSENT_LOWAT). */
void sluice_conn_limit_unsent(sluice_conn *c, int on);

/* Copies request headers (lower-case names) out of lws's header storage. */
int sluice_copy_headers(struct lws *wsi, char ***out, size_t *n);
void sluice_free_headers(char **headers, size_t n);
/* Query string ("a=1&b=2", "" if none) of the request on wsi. */
char *sluice_copy_query(struct lws *wsi);
/* The request's path ("/" if none), malloc'd. */
char *sluice_copy_path(struct lws *wsi);
/* The peer's address into buf ("" if unknown; IPv4 unmapped). */
void sluice_copy_peer(struct lws *wsi, char *buf, size_t len);
/* The query, peer and headers of the request on wsi, copied into the
 * caller's fields; -1 when out of memory (what was copied is the caller's
 * to free). */
int sluice_copy_request(struct lws *wsi, char **query, char *peer, size_t peerlen,
                        char ***headers, size_t *nheaders);
char *sluice_strdup(const char *s);
/* Any request header by name (case-insensitive; custom ones included):
 * malloc'd, or NULL if absent. */
char *sluice_header_value(struct lws *wsi, const char *name);
/* The subprotocols a WebSocket request offers, tokenized as lws's own
 * upgrade does; -1 for a list lws could not take (too long, malformed),
 * which it would drop without an answer. */
int sluice_offered_protocols(struct lws *wsi, char ***out, size_t *n);

/* The parsers below are separate functions so that fuzz/ can drive them. */

/* A ws:// or wss:// URL split for lws. 0, or -1 if it is not one. */
struct sluice_ws_url {
    int tls;
    char host[256];
    int port;
    char path[2048];            /* path and query, as sent */
};
int sluice_ws_parse_url(const char *url, struct sluice_ws_url *u);
/* Appends src to dst percent-encoded (dst needs 3 * strlen(src) bytes);
 * the first '=' is kept when keep_eq. Returns the bytes written. */
size_t sluice_query_encode_arg(char *dst, const char *src, int keep_eq);
/* The file under dir that URL path (already url-decoded) names, malloc'd,
 * or NULL if the path is refused (not absolute, "..", hidden names). */
char *sluice_static_file(const char *dir, const char *path);
#endif
