/* Server-to-client frames as a third-party client sees them: a raw socket
 * that parses RFC 6455 itself. The server packs queued messages into few
 * writes (coalescing) and shares broadcast payloads between connections;
 * what reaches the wire must still be one well-formed, unmasked, final
 * frame per message, in order, whatever the sizes, the text/binary mix
 * and the reader's pace. */
#include "check.h"
#include "sluice/ws.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#define WAIT_UNTIL(loop, cond, ms) do { \
    uint64_t wait_end_ = sluice_now_ms() + (ms); \
    while (!(cond) && sluice_now_ms() < wait_end_) \
        sluice_loop_run_once((loop), 5); \
} while (0)

/* ---- server side ------------------------------------------------------------ */

#define MAX_CONNS 8

struct server_state {
    sluice_conn *conns[MAX_CONNS];
    int nconns;
    int closes, last_close_code;
    int messages;
    char last_message[64];
};

static void srv_open(void *ud, sluice_conn *c)
{
    struct server_state *ss = ud;
    if (ss->nconns < MAX_CONNS)
        ss->conns[ss->nconns++] = c;
}

static void srv_message(void *ud, sluice_conn *c, const char *data, size_t len, int binary)
{
    struct server_state *ss = ud;
    (void)c;
    (void)binary;
    ss->messages++;
    if (len >= sizeof ss->last_message)
        len = sizeof ss->last_message - 1;
    memcpy(ss->last_message, data, len);
    ss->last_message[len] = '\0';
}

static void srv_close(void *ud, sluice_conn *c, int code, const char *reason)
{
    struct server_state *ss = ud;
    (void)reason;
    ss->closes++;
    ss->last_close_code = code;
    for (int i = 0; i < ss->nconns; i++)
        if (ss->conns[i] == c)
            ss->conns[i] = NULL;
}

static int srv_accept(void *ud, const char *path)
{
    (void)ud;
    return !strcmp(path, "/ws");
}

static sluice_server *start_server(sluice_loop *loop, struct server_state *ss,
                                   size_t send_queue_max)
{
    sluice_server *srv = NULL;
    char err[256];
    sluice_server_config cfg = { 0 };
    cfg.host = "127.0.0.1";
    cfg.send_queue_max = send_queue_max;
    sluice_server_handlers h = { 0 };
    h.ws.open = srv_open;
    h.ws.message = srv_message;
    h.ws.close = srv_close;
    h.ws_accept = srv_accept;
    memset(ss, 0, sizeof *ss);
    if (sluice_server_new(loop, &cfg, &h, ss, &srv, err, sizeof err) != SLUICE_OK) {
        fprintf(stderr, "server: %s\n", err);
        exit(1);
    }
    return srv;
}

/* ---- the raw client ----------------------------------------------------------- */

struct peer {
    int fd;
    unsigned char *buf;
    size_t len, cap, pos;       /* pos: start of the next unparsed frame */
    int eof;
};

struct frame {
    int fin, opcode, masked;
    size_t len;
    const unsigned char *payload;
};

/* Reads what is there (at most max bytes) after one loop turn. */
static void peer_pump(sluice_loop *loop, struct peer *p, size_t max)
{
    sluice_loop_run_once(loop, 1);
    if (p->eof)
        return;
    if (p->cap - p->len < max) {
        while (p->cap - p->len < max)
            p->cap = p->cap ? 2 * p->cap : 65536;
        p->buf = realloc(p->buf, p->cap);
        if (!p->buf)
            exit(1);
    }
    ssize_t n = recv(p->fd, p->buf + p->len, max, 0);
    if (n > 0)
        p->len += (size_t)n;
    else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
        p->eof = 1;
}

static void peer_open_rcvbuf(sluice_loop *loop, int port, struct peer *p, int rcvbuf);

static void peer_open(sluice_loop *loop, int port, struct peer *p)
{
    peer_open_rcvbuf(loop, port, p, 0);
}

/* A peer connected to the server, and the server's side of it (NULL, and
 * a failed check, if it never appeared). */
static sluice_conn *open_conn(sluice_loop *loop, int port, struct server_state *ss,
                              struct peer *p)
{
    int before = ss->nconns;
    peer_open(loop, port, p);
    WAIT_UNTIL(loop, ss->nconns == before + 1, 2000);
    sluice_conn *c = ss->nconns > before ? ss->conns[ss->nconns - 1] : NULL;
    CHECK(c != NULL);
    return c;
}

/* rcvbuf > 0: a fixed receive buffer (no autotuning) for the socket. */
static void peer_open_rcvbuf(sluice_loop *loop, int port, struct peer *p, int rcvbuf)
{
    static const char req[] =
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    memset(p, 0, sizeof *p);
    p->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (rcvbuf > 0)
        setsockopt(p->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    if (p->fd < 0 || connect(p->fd, (struct sockaddr *)&sa, sizeof sa)) {
        perror("connect");
        exit(1);
    }
    fcntl(p->fd, F_SETFL, O_NONBLOCK);
    if (send(p->fd, req, sizeof req - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof req - 1))
        exit(1);
    unsigned char *end = NULL;
    uint64_t until = sluice_now_ms() + 3000;
    while (!end && !p->eof && sluice_now_ms() < until) {
        peer_pump(loop, p, 4096);
        if (p->len >= 4)
            end = memmem(p->buf, p->len, "\r\n\r\n", 4);
    }
    CHECK(end != NULL && p->len >= 12 && !memcmp(p->buf, "HTTP/1.1 101", 12));
    if (end)
        p->pos = (size_t)(end + 4 - p->buf);   /* frames may follow at once */
}

static void peer_close(struct peer *p)
{
    close(p->fd);
    free(p->buf);
    p->buf = NULL;
}

/* Parses the frame at pos if it is complete: 1 and advances pos. */
static int next_frame(struct peer *p, struct frame *f)
{
    const unsigned char *b = p->buf + p->pos;
    size_t avail = p->len - p->pos, hlen = 2;
    if (avail < 2)
        return 0;
    f->fin = b[0] >> 7;
    f->opcode = b[0] & 0x0f;
    f->masked = b[1] >> 7;
    f->len = b[1] & 0x7f;
    if (f->len == 126) {
        hlen = 4;
        if (avail < hlen)
            return 0;
        f->len = ((size_t)b[2] << 8) | b[3];
    } else if (f->len == 127) {
        hlen = 10;
        if (avail < hlen)
            return 0;
        f->len = 0;
        for (int i = 0; i < 8; i++)
            f->len = (f->len << 8) | b[2 + i];
    }
    if (f->masked)
        hlen += 4;
    if (avail < hlen || avail - hlen < f->len)
        return 0;
    f->payload = b + hlen;
    p->pos += hlen + f->len;
    return 1;
}

/* The next frame, reading at most chunk bytes per loop turn. */
static int read_frame(sluice_loop *loop, struct peer *p, struct frame *f, size_t chunk,
                      int timeout_ms)
{
    uint64_t until = sluice_now_ms() + (uint64_t)timeout_ms;
    while (!next_frame(p, f)) {
        if (p->eof || sluice_now_ms() > until)
            return 0;
        peer_pump(loop, p, chunk);
    }
    return 1;
}

/* ---- messages with checkable contents --------------------------------------- */

static unsigned char content_byte(int i, size_t j, int binary)
{
    if (binary)
        return (unsigned char)(i * 31 + (int)(j * 7) + 3);
    return (unsigned char)('a' + (int)((size_t)i + j) % 26);
}

static char *make_message(int i, size_t len, int binary)
{
    char *m = malloc(len ? len : 1);
    for (size_t j = 0; j < len; j++)
        m[j] = (char)content_byte(i, j, binary);
    return m;
}

static int frame_is(const struct frame *f, int i, size_t len, int binary)
{
    if (!f->fin || f->masked || f->opcode != (binary ? 2 : 1) || f->len != len)
        return 0;
    for (size_t j = 0; j < len; j++)
        if (f->payload[j] != content_byte(i, j, binary))
            return 0;
    return 1;
}

/* Queues n messages at once (so they are written together), then reads
 * them back at the given pace: each must arrive whole and in order. */
static void send_and_verify(sluice_loop *loop, sluice_conn *c, struct peer *p,
                            const size_t *sizes, const int *binary, int n, size_t chunk)
{
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        char *m = make_message(i, sizes[i], binary[i]);
        CHECK_EQ_INT(sluice_conn_send(c, m, sizes[i], binary[i]), SLUICE_OK);
        free(m);
        total += sizes[i];
    }
    CHECK_EQ_INT(sluice_conn_queued_bytes(c), total);
    int good = 0;
    for (int i = 0; i < n; i++) {
        struct frame f;
        if (!read_frame(loop, p, &f, chunk, 10000)) {
            fprintf(stderr, "frame %d of %d (%zu bytes) never came\n", i, n, sizes[i]);
            break;
        }
        if (!frame_is(&f, i, sizes[i], binary[i])) {
            fprintf(stderr, "frame %d: fin %d opcode %d masked %d len %zu, want len %zu\n",
                    i, f.fin, f.opcode, f.masked, f.len, sizes[i]);
            break;
        }
        good++;
    }
    CHECK_EQ_INT(good, n);
    CHECK_EQ_INT(p->pos, p->len);           /* nothing more, nothing torn */
    CHECK_EQ_INT(sluice_conn_queued_bytes(c), 0);
}

/* ---- tests ---------------------------------------------------------------------- */

/* Every length encoding, and frames that straddle the write buffer. */
static void test_sizes(sluice_loop *loop, int port, struct server_state *ss)
{
    struct peer p;
    sluice_conn *c = open_conn(loop, port, ss, &p);
    if (!c)
        return;

    static const size_t mixed[] = { 0, 1, 125, 126, 127, 65535, 65536, 65537, 3,
                                    200000, 0, 70000, 125 };
    static const int mixed_bin[] = { 0, 1, 0, 1, 0, 1, 0, 1, 1, 0, 1, 1, 0 };
    send_and_verify(loop, c, &p, mixed, mixed_bin, 13, 65536);

    /* The 64 KiB write buffer ends 1 byte into a 4-byte header, then
     * 3 bytes into a 10-byte one. */
    static const size_t split4[] = { 65531, 300, 5 };
    static const int split4_bin[] = { 1, 0, 1 };
    send_and_verify(loop, c, &p, split4, split4_bin, 3, 65536);
    static const size_t split10[] = { 65529, 70000, 126 };
    static const int split10_bin[] = { 0, 1, 0 };
    send_and_verify(loop, c, &p, split10, split10_bin, 3, 65536);

    /* One frame over several write buffers, alone. */
    static const size_t big[] = { 3 * 65536 + 17 };
    static const int big_bin[] = { 1 };
    send_and_verify(loop, c, &p, big, big_bin, 1, 65536);

    peer_close(&p);
    WAIT_UNTIL(loop, ss->closes == 1, 2000);
    CHECK_EQ_INT(ss->closes, 1);
}

/* Thousands of small frames queued at once. */
static void test_many_small(sluice_loop *loop, int port, struct server_state *ss)
{
    enum { N = 20000 };
    static size_t sizes[N];
    static int binary[N];
    for (int i = 0; i < N; i++) {
        sizes[i] = 1 + (size_t)(i * 37) % 160;
        binary[i] = i % 3 == 0;
    }
    struct peer p;
    sluice_conn *c = open_conn(loop, port, ss, &p);
    if (c)
        send_and_verify(loop, c, &p, sizes, binary, N, 65536);
    peer_close(&p);
}

/* A reader that does not read for a while, then reads in small pieces:
 * the server's writes stop part-way (the socket is full), the rest waits,
 * and every frame still arrives whole. */
static void test_slow_reader(sluice_loop *loop, int port, struct server_state *ss)
{
    enum { N = 400 };
    static size_t sizes[N];
    static int binary[N];
    size_t total = 0;
    for (int i = 0; i < N; i++) {
        sizes[i] = i == 100 ? 1500000 : 1000 + (size_t)(i * 7919) % 30000;
        binary[i] = i % 2;
        total += sizes[i];
    }
    struct peer p;
    sluice_conn *c = open_conn(loop, port, ss, &p);
    if (!c)
        return;
    for (int i = 0; i < N; i++) {
        char *m = make_message(i, sizes[i], binary[i]);
        CHECK_EQ_INT(sluice_conn_send(c, m, sizes[i], binary[i]), SLUICE_OK);
        free(m);
    }
    /* Not reading: the server writes what the socket takes, then waits. */
    for (int i = 0; i < 100; i++)
        sluice_loop_run_once(loop, 5);
    size_t stuck = sluice_conn_queued_bytes(c);
    CHECK(stuck > 0 && stuck < total);
    int good = 0;
    for (int i = 0; i < N; i++) {
        struct frame f;
        if (!read_frame(loop, &p, &f, 3000, 20000) || !frame_is(&f, i, sizes[i], binary[i])) {
            fprintf(stderr, "slow reader: frame %d bad or missing\n", i);
            break;
        }
        good++;
    }
    CHECK_EQ_INT(good, N);
    CHECK_EQ_INT(p.pos, p.len);
    CHECK_EQ_INT(sluice_conn_queued_bytes(c), 0);
    peer_close(&p);
}

static int client_messages;
static char client_last[64];
static void cli_open(void *ud, sluice_conn *c) { (void)ud; (void)c; }
static void cli_message(void *ud, sluice_conn *c, const char *data, size_t len, int binary)
{
    (void)ud;
    (void)c;
    (void)binary;
    client_messages++;
    if (len >= sizeof client_last)
        len = sizeof client_last - 1;
    memcpy(client_last, data, len);
    client_last[len] = '\0';
}
static void cli_close(void *ud, sluice_conn *c, int code, const char *reason)
{
    (void)ud; (void)c; (void)code; (void)reason;
}

/* One payload queued on several connections: each counts it in its queue
 * and gets its own well-formed frame; a sluice client connection (whose
 * frames lws masks in place) gets a copy. */
static void test_broadcast(sluice_loop *loop, int port, struct server_state *ss)
{
    enum { PEERS = 3 };
    struct peer p[PEERS];
    int before = ss->nconns;
    for (int i = 0; i < PEERS; i++)
        peer_open(loop, port, &p[i]);
    WAIT_UNTIL(loop, ss->nconns == before + PEERS, 2000);
    CHECK_EQ_INT(ss->nconns, before + PEERS);

    size_t len = 70000;
    char *m = make_message(5, len, 1);
    sluice_payload *pl = sluice_payload_new(m, len);
    free(m);
    CHECK(pl != NULL);
    for (int i = 0; i < PEERS; i++) {
        sluice_conn *c = ss->conns[before + i];
        CHECK_EQ_INT(sluice_conn_send_payload(c, pl, 1), SLUICE_OK);
        CHECK_EQ_INT(sluice_conn_send_payload(c, pl, 1), SLUICE_OK);
        CHECK_EQ_INT(sluice_conn_queued_bytes(c), 2 * len);
    }

    /* A client-side connection in the same broadcast. */
    const char hello[] = "hello from a shared payload";
    sluice_payload *small = sluice_payload_new(hello, sizeof hello - 1);
    sluice_conn_handlers ch = { cli_open, cli_message, cli_close };
    char url[64], err[256];
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/ws", port);
    sluice_conn *client = NULL;
    CHECK_EQ_INT(sluice_client_connect(loop, url, NULL, &ch, NULL, &client, err, sizeof err),
                 SLUICE_OK);
    CHECK_EQ_INT(sluice_conn_send_payload(client, small, 0), SLUICE_OK);
    sluice_payload_release(small);          /* the queue keeps what it needs */
    /* The same payload once more, as a text frame. */
    for (int i = 0; i < PEERS; i++)
        CHECK_EQ_INT(sluice_conn_send_payload(ss->conns[before + i], pl, 0), SLUICE_OK);
    sluice_payload_release(pl);

    for (int i = 0; i < PEERS; i++) {
        struct frame f;
        for (int k = 0; k < 2; k++)
            CHECK(read_frame(loop, &p[i], &f, 65536, 5000) && frame_is(&f, 5, len, 1));
        int ok = read_frame(loop, &p[i], &f, 65536, 5000);
        CHECK(ok && f.opcode == 1 && f.fin && !f.masked && f.len == len);
        if (ok) {
            f.opcode = 2;       /* same bytes as the binary ones */
            CHECK(frame_is(&f, 5, len, 1));
        }
        CHECK_EQ_INT(p[i].pos, p[i].len);
        peer_close(&p[i]);
    }
    WAIT_UNTIL(loop, ss->messages > 0 && !strcmp(ss->last_message, hello), 3000);
    CHECK_EQ_STR(ss->last_message, hello);
    sluice_conn_close(client, 1000, "");
    WAIT_UNTIL(loop, ss->closes >= 1 + PEERS + 2, 3000);
}

/* A reader that reads nothing: the queue reaches send_queue_max, the
 * connection is closed with 1008, and the close frame still reaches the
 * reader after the data the socket took (room is kept for it). */
static void test_queue_full(sluice_loop *loop)
{
    struct server_state ss;
    sluice_server *srv = start_server(loop, &ss, 256 * 1024);
    struct peer p;
    peer_open_rcvbuf(loop, sluice_server_port(srv), &p, 64 * 1024);
    WAIT_UNTIL(loop, ss.nconns == 1, 2000);
    sluice_conn *c = ss.conns[0];
    CHECK(c != NULL);
    if (!c)
        goto out;
    char *m = make_message(1, 1000, 0);
    sluice_payload *pl = sluice_payload_new(m, 1000);
    free(m);
    int rc = SLUICE_OK, sent = 0;
    uint64_t until = sluice_now_ms() + 20000;
    while (rc == SLUICE_OK && sluice_now_ms() < until) {
        for (int i = 0; i < 50 && rc == SLUICE_OK; i++) {
            rc = sluice_conn_send_payload(c, pl, 0);
            sent += rc == SLUICE_OK;
        }
        sluice_loop_run_once(loop, 1);
    }
    sluice_payload_release(pl);
    CHECK_EQ_INT(rc, SLUICE_EFULL);
    CHECK_EQ_INT(sluice_conn_send_payload(c, NULL, 0), SLUICE_EINVAL);
    CHECK(!sluice_conn_is_open(c));
    /* Now read: whole text frames, then the close frame. */
    struct frame f;
    int frames = 0, close_code = 0;
    char reason[64] = "";
    while (read_frame(loop, &p, &f, 65536, 8000)) {
        if (f.opcode == 8) {
            if (f.len >= 2)
                close_code = (f.payload[0] << 8) | f.payload[1];
            if (f.len > 2 && f.len - 2 < sizeof reason) {
                memcpy(reason, f.payload + 2, f.len - 2);
                reason[f.len - 2] = '\0';
            }
            break;
        }
        if (!frame_is(&f, 1, 1000, 0))
            break;
        frames++;
    }
    CHECK_EQ_INT(close_code, 1008);
    CHECK_EQ_STR(reason, "send queue full");
    /* What it got is what the kernel held for it: bounded (about 128 KiB
     * unsent plus its 64 KiB receive window), not megabytes of socket
     * buffer next to the 256 KiB queue. */
    CHECK(frames > 0 && frames < 700);
out:
    peer_close(&p);
    sluice_server_free(srv);
}

int main(void)
{
    sluice_loop *loop;
    char err[256];
    sluice_loop_config lc = { 0 };
    CHECK_EQ_INT(sluice_loop_new(&lc, &loop, err, sizeof err), SLUICE_OK);
    struct server_state ss;
    sluice_server *srv = start_server(loop, &ss, 64u * 1024 * 1024);
    int port = sluice_server_port(srv);

    test_sizes(loop, port, &ss);
    test_many_small(loop, port, &ss);
    test_slow_reader(loop, port, &ss);
    test_broadcast(loop, port, &ss);
    sluice_server_free(srv);
    test_queue_full(loop);

    sluice_loop_free(loop);
    return check_summary("test_ws_frames");
}
