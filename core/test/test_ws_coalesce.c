/* Server-to-client frames as a third-party client sees them: the server
 * packs queued messages into shared writes (ws_conn.c write_coalesced),
 * so every frame header, length encoding and payload byte is checked here
 * from a raw socket, including writes the socket takes only in part, and
 * a route's broadcast (ws_server.c). */
#include "check.h"
#include "sluice/ws.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_CONNS 16

struct server_state {
    sluice_conn *conns[MAX_CONNS];
    int nconns;
};

static void on_open(void *ud, sluice_conn *c)
{
    struct server_state *st = ud;
    if (st->nconns < MAX_CONNS)
        st->conns[st->nconns++] = c;
}

static void on_close(void *ud, sluice_conn *c, int code, const char *reason)
{
    struct server_state *st = ud;
    (void)code;
    (void)reason;
    for (int i = 0; i < st->nconns; i++)
        if (st->conns[i] == c)
            st->conns[i] = NULL;
}

static int accept_all(void *ud, const char *path)
{
    (void)ud;
    (void)path;
    return 1;
}

/* A raw client: everything received after the handshake's head. */
struct reader {
    int fd;
    unsigned char *buf;
    size_t len, cap;
    size_t parsed;          /* bytes of buf already taken as whole frames */
    int eof;
};

static void reader_open(struct reader *r, sluice_loop *loop, int port, int rcvbuf,
                        const char *path)
{
    memset(r, 0, sizeof *r);
    r->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (rcvbuf)     /* set before connect so the window starts small */
        setsockopt(r->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (r->fd < 0 || connect(r->fd, (struct sockaddr *)&sa, sizeof sa)) {
        perror("connect");
        exit(1);
    }
    fcntl(r->fd, F_SETFL, O_NONBLOCK);
    char req[512];
    int rl = snprintf(req, sizeof req,
        "GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", path);
    if (send(r->fd, req, (size_t)rl, MSG_NOSIGNAL) < 0) {
        perror("send");
        exit(1);
    }
    r->cap = 1 << 16;
    r->buf = malloc(r->cap);
    /* Read the response head byte by byte: frames may follow it at once. */
    char head[1024];
    size_t hl = 0;
    uint64_t end = sluice_now_ms() + 20000;
    while (sluice_now_ms() < end && hl < sizeof head - 1) {
        ssize_t n = recv(r->fd, head + hl, 1, 0);
        if (n != 1)
            sluice_loop_run_once(loop, 5);
        else {
            hl++;
            head[hl] = '\0';
            if (hl >= 4 && !memcmp(head + hl - 4, "\r\n\r\n", 4))
                break;
        }
    }
    CHECK(!strncmp(head, "HTTP/1.1 101", 12));
}

/* Reads at most chunk bytes (after one loop turn). */
static void reader_pump(struct reader *r, sluice_loop *loop, size_t chunk)
{
    sluice_loop_run_once(loop, 1);
    if (r->eof)
        return;
    if (r->cap - r->len < chunk) {
        while (r->cap - r->len < chunk)
            r->cap *= 2;
        r->buf = realloc(r->buf, r->cap);
    }
    ssize_t n = recv(r->fd, r->buf + r->len, chunk, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
        r->eof = 1;
    else if (n > 0)
        r->len += (size_t)n;
}

struct frame {
    int fin, opcode, masked;
    size_t hlen;            /* header bytes */
    size_t len;             /* payload bytes */
    const unsigned char *data;
};

/* The next whole frame in r, or 0 if not all of it has arrived. */
static int next_frame(struct reader *r, struct frame *f)
{
    const unsigned char *p = r->buf + r->parsed;
    size_t avail = r->len - r->parsed;
    if (avail < 2)
        return 0;
    f->fin = p[0] >> 7;
    f->opcode = p[0] & 15;
    f->masked = p[1] >> 7;
    size_t len = p[1] & 127, hlen = 2;
    if (len == 126) {
        if (avail < 4)
            return 0;
        len = ((size_t)p[2] << 8) | p[3];
        hlen = 4;
    } else if (len == 127) {
        if (avail < 10)
            return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = (len << 8) | p[2 + i];
        hlen = 10;
    }
    if (f->masked)
        hlen += 4;
    if (avail < hlen + len)
        return 0;
    f->hlen = hlen;
    f->len = len;
    f->data = p + hlen;
    r->parsed += hlen + len;
    return 1;
}

static void reader_close(struct reader *r)
{
    close(r->fd);
    free(r->buf);
}

/* Message k of a test: its length, kind and a recognisable pattern. */
struct msg {
    size_t len;
    int binary;
};

static void fill(unsigned char *d, size_t len, int k)
{
    for (size_t i = 0; i < len; i++)
        d[i] = (unsigned char)(k * 31 + i * 7 + (i >> 8));
}

static int pattern_ok(const unsigned char *d, size_t len, int k)
{
    for (size_t i = 0; i < len; i++)
        if (d[i] != (unsigned char)(k * 31 + i * 7 + (i >> 8)))
            return 0;
    return 1;
}

static size_t min_header(size_t len)
{
    return len < 126 ? 2 : len < 65536 ? 4 : 10;
}

/* Is f message k of msgs? A failure reports once per frame, not per byte. */
static int frame_ok(const struct frame *f, const struct msg *msgs, int k)
{
    if (!f->fin || f->masked || f->opcode != (msgs[k].binary ? 2 : 1) ||
        f->len != msgs[k].len || f->hlen != min_header(f->len) ||
        !pattern_ok(f->data, f->len, k)) {
        fprintf(stderr, "frame %d: fin %d masked %d op %d len %zu (want %zu) hlen %zu\n",
                k, f->fin, f->masked, f->opcode, f->len, msgs[k].len, f->hlen);
        return 0;
    }
    return 1;
}

/* Reads the first n of msgs (or until eof / timeout), checking them, then
 * drops the connection; returns how many were right. */
static int expect_then_drop(struct reader *r, sluice_loop *loop, const struct msg *msgs, int n)
{
    int k = 0, good = 0;
    struct frame f;
    uint64_t end = sluice_now_ms() + 20000;
    while (k < n && !r->eof && sluice_now_ms() < end) {
        reader_pump(r, loop, 1 << 16);
        while (k < n && next_frame(r, &f))
            good += frame_ok(&f, msgs, k++);
    }
    reader_close(r);
    return good;
}

/* Reads until the close frame (or eof / timeout), checking the frames
 * against msgs. Returns the close code seen, or -1. */
static int expect_frames(struct reader *r, sluice_loop *loop, const struct msg *msgs,
                         int nmsgs, size_t chunk, char *reason, size_t reason_cap)
{
    int k = 0, code = -1, bad = 0;
    struct frame f;
    uint64_t end = sluice_now_ms() + 20000;
    while (code < 0 && !r->eof && sluice_now_ms() < end) {
        reader_pump(r, loop, chunk);
        while (code < 0 && next_frame(r, &f)) {
            if (f.opcode == 8) {
                code = f.len >= 2 ? (f.data[0] << 8) | f.data[1] : 1005;
                if (reason) {
                    size_t rl = f.len > 2 ? f.len - 2 : 0;
                    if (rl >= reason_cap)
                        rl = reason_cap - 1;
                    memcpy(reason, f.data + 2, rl);
                    reason[rl] = '\0';
                }
                break;
            }
            if (k >= nmsgs) {
                bad++;
                continue;
            }
            bad += !frame_ok(&f, msgs, k);
            k++;
        }
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(k, nmsgs);
    return code;
}

static int queue_all(sluice_conn *c, const struct msg *msgs, int n)
{
    int ok = 0;
    for (int k = 0; k < n; k++) {
        unsigned char *d = malloc(msgs[k].len + 1);
        fill(d, msgs[k].len, k);
        ok += sluice_conn_send(c, d, msgs[k].len, msgs[k].binary) == SLUICE_OK;
        free(d);
    }
    return ok;
}

static sluice_conn *open_conn_path(sluice_loop *loop, struct server_state *st, struct reader *r,
                                   int port, int rcvbuf, const char *path)
{
    int before = st->nconns;
    reader_open(r, loop, port, rcvbuf, path);
    uint64_t end = sluice_now_ms() + 20000;
    while (st->nconns == before && sluice_now_ms() < end)
        sluice_loop_run_once(loop, 5);
    CHECK_EQ_INT(st->nconns, before + 1);
    return st->nconns > before ? st->conns[before] : NULL;
}

static sluice_conn *open_conn(sluice_loop *loop, struct server_state *st, struct reader *r,
                              int port, int rcvbuf)
{
    return open_conn_path(loop, st, r, port, rcvbuf, "/ws");
}

/* Every length boundary of RFC 6455's encoding, text and binary mixed, a
 * frame larger than one coalesced write, and the close after them. */
static void test_sizes(sluice_loop *loop, struct server_state *st, int port)
{
    static const struct msg msgs[] = {
        { 0, 0 }, { 0, 1 }, { 1, 0 }, { 125, 1 }, { 126, 0 }, { 127, 1 },
        { 65535, 0 }, { 65536, 1 }, { 65537, 0 }, { 3, 1 },
        { 200000, 1 },          /* three coalesced writes and a bit */
        { 125, 0 }, { 64 * 1024 - 4, 1 }, { 64 * 1024 - 2, 0 }, { 0, 0 },
        { 1000000, 0 }, { 7, 1 },
    };
    int n = (int)(sizeof msgs / sizeof msgs[0]);
    struct reader r;
    sluice_conn *c = open_conn(loop, st, &r, port, 0);
    if (!c)
        return;
    CHECK_EQ_INT(queue_all(c, msgs, n), n);
    CHECK_EQ_INT(sluice_conn_close(c, 1000, "done"), SLUICE_OK);
    char reason[128] = "";
    CHECK_EQ_INT(expect_frames(&r, loop, msgs, n, 1 << 16, reason, sizeof reason), 1000);
    CHECK_EQ_STR(reason, "done");
    reader_close(&r);
}

/* Many small frames: all arrive, in order, each whole. */
static void test_many_small(sluice_loop *loop, struct server_state *st, int port)
{
    enum { N = 20000 };
    struct msg *msgs = malloc(N * sizeof *msgs);
    for (int k = 0; k < N; k++) {
        msgs[k].len = (size_t)(k % 40);
        msgs[k].binary = k % 3 == 0;
    }
    struct reader r;
    sluice_conn *c = open_conn(loop, st, &r, port, 0);
    if (c) {
        CHECK_EQ_INT(queue_all(c, msgs, N), N);
        CHECK_EQ_INT(sluice_conn_close(c, 1000, "bye"), SLUICE_OK);
        CHECK_EQ_INT(expect_frames(&r, loop, msgs, N, 1 << 16, NULL, 0), 1000);
        reader_close(&r);
    }
    free(msgs);
}

/* A reader with a small window taking a few KiB per loop turn: the
 * server's writes are taken in part and the rest must follow intact. */
static void test_slow_reader(sluice_loop *loop, struct server_state *st, int port)
{
    enum { N = 160 };
    struct msg msgs[N];
    size_t total = 0;
    for (int k = 0; k < N; k++) {
        static const size_t sizes[] = { 5, 126, 70000, 1, 65535, 300, 131072, 20 };
        msgs[k].len = sizes[k % 8];
        msgs[k].binary = (k / 8) % 2;
        total += msgs[k].len;
    }
    struct reader r;
    sluice_conn *c = open_conn(loop, st, &r, port, 4096);
    if (!c)
        return;
    CHECK_EQ_INT(queue_all(c, msgs, N), N);
    CHECK_EQ_INT(sluice_conn_queued_bytes(c), total);
    /* Not reading: the socket fills and the rest stays queued. */
    for (int i = 0; i < 50; i++)
        sluice_loop_run_once(loop, 1);
    CHECK(sluice_conn_queued_bytes(c) > 0);
    CHECK(sluice_conn_queued_bytes(c) < total);
    CHECK_EQ_INT(sluice_conn_close(c, 1000, "slow"), SLUICE_OK);
    CHECK_EQ_INT(expect_frames(&r, loop, msgs, N, 8000, NULL, 0), 1000);
    reader_close(&r);
}

/* A client's ping while the server is in the middle of long frames the
 * socket takes in part: lws writes its pong before it asks for more, so
 * the pong must come between two frames and every frame arrive whole. */
static void test_pong_between_frames(sluice_loop *loop, struct server_state *st, int port)
{
    enum { N = 24 };
    struct msg msgs[N];
    for (int k = 0; k < N; k++) {
        msgs[k].len = 100000 + (size_t)k * 1000;  /* cut by the 64 KiB writes */
        msgs[k].binary = k % 2;
    }
    struct reader r;
    sluice_conn *c = open_conn(loop, st, &r, port, 4096);
    if (!c)
        return;
    CHECK_EQ_INT(queue_all(c, msgs, N), N);
    for (int i = 0; i < 50; i++)    /* the socket fills: writes taken in part */
        sluice_loop_run_once(loop, 1);
    static const unsigned char ping[] = { 0x89, 0x81, 1, 2, 3, 4, 'p' ^ 1 };   /* masked "p" */
    CHECK(send(r.fd, ping, sizeof ping, MSG_NOSIGNAL) == (ssize_t)sizeof ping);
    int k = 0, bad = 0, pongs = 0;
    struct frame f;
    uint64_t end = sluice_now_ms() + 20000;
    while (k < N && !bad && !r.eof && sluice_now_ms() < end) {
        reader_pump(&r, loop, 8000);
        while (k < N && !bad && next_frame(&r, &f)) {
            if (f.opcode == 0xA && f.len == 1 && f.data[0] == 'p')
                pongs++;
            else
                bad += !frame_ok(&f, msgs, k++);
        }
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(k, N);
    CHECK_EQ_INT(pongs, 1);
    reader_close(&r);
}

/* One payload queued on several connections: each sees the same frames,
 * one of them reading slowly, and each counts the payload's full size. */
static void test_shared(sluice_loop *loop, struct server_state *st, int port)
{
    enum { NC = 3, N = 60 };
    struct msg msgs[N];
    struct reader r[NC];
    sluice_conn *c[NC];
    for (int i = 0; i < NC; i++)
        c[i] = open_conn(loop, st, &r[i], port, i == 0 ? 4096 : 0);
    for (int i = 0; i < NC; i++)
        if (!c[i])
            return;
    for (int k = 0; k < N; k++) {
        msgs[k].len = (size_t)(k % 5 == 0 ? 100000 : k * 13);
        msgs[k].binary = k % 2;
        unsigned char *d = malloc(msgs[k].len + 1);
        fill(d, msgs[k].len, k);
        sluice_payload *p = sluice_payload_new(d, msgs[k].len);
        free(d);        /* the payload holds its own copy */
        CHECK(p != NULL);
        for (int i = 0; i < NC; i++) {
            size_t before = sluice_conn_queued_bytes(c[i]);
            CHECK_EQ_INT(sluice_conn_send_payload(c[i], p, msgs[k].binary), SLUICE_OK);
            CHECK_EQ_INT(sluice_conn_queued_bytes(c[i]), before + msgs[k].len);
        }
        sluice_payload_release(p);
    }
    for (int i = 0; i < NC; i++)
        CHECK_EQ_INT(sluice_conn_close(c[i], 1000, "all"), SLUICE_OK);
    for (int i = NC - 1; i >= 0; i--) {
        CHECK_EQ_INT(expect_frames(&r[i], loop, msgs, N, i == 0 ? 2000 : 1 << 16, NULL, 0), 1000);
        reader_close(&r[i]);
    }
}

/* The queue limit counts a shared payload in full on each connection; past
 * it the connection drops its queue and closes with 1008. */
static void test_queue_full(sluice_loop *loop, struct server_state *st, int port)
{
    struct reader r;
    sluice_conn *c = open_conn(loop, st, &r, port, 4096);
    if (!c)
        return;
    unsigned char d[50000];
    memset(d, 'x', sizeof d);
    sluice_payload *p = sluice_payload_new(d, sizeof d);
    /* The loop does not run between sends: nothing leaves the queue. */
    for (int i = 0; i < 4; i++)
        CHECK_EQ_INT(sluice_conn_send_payload(c, p, 1), SLUICE_OK);
    CHECK_EQ_INT(sluice_conn_queued_bytes(c), 200000);
    CHECK_EQ_INT(sluice_conn_send_payload(c, p, 1), SLUICE_EFULL);
    CHECK_EQ_INT(sluice_conn_queued_bytes(c), 0);
    CHECK_EQ_INT(sluice_conn_send_payload(c, p, 1), SLUICE_ECLOSED);
    sluice_payload_release(p);
    char reason[128] = "";
    CHECK_EQ_INT(expect_frames(&r, loop, NULL, 0, 1 << 16, reason, sizeof reason), 1008);
    CHECK_EQ_STR(reason, "send queue full");
    reader_close(&r);
}

/* Past the limit while a frame larger than one write is half written: the
 * frame is finished before the close frame, or the client would read the
 * close frame as the rest of its payload. */
static void test_queue_full_mid_frame(sluice_loop *loop, const sluice_server_handlers *h)
{
    enum { BIG = 6 * 1024 * 1024, MAX = 8 * 1024 * 1024 };
    static const struct msg msgs[] = { { BIG, 1 } };
    struct server_state st = { 0 };
    sluice_server *srv;
    char err[256];
    sluice_server_config cfg = { 0 };
    cfg.host = "127.0.0.1";
    cfg.send_queue_max = MAX;
    CHECK_EQ_INT(sluice_server_new(loop, &cfg, h, &st, &srv, err, sizeof err), SLUICE_OK);
    struct reader r;
    sluice_conn *c = open_conn(loop, &st, &r, sluice_server_port(srv), 4096);
    if (c) {
        CHECK_EQ_INT(queue_all(c, msgs, 1), 1);
        /* Some writes go out; more than the socket can hold is left. */
        for (int i = 0; i < 20; i++)
            sluice_loop_run_once(loop, 1);
        CHECK_EQ_INT(sluice_conn_queued_bytes(c), BIG);
        unsigned char *more = calloc(1, MAX - BIG + 1);
        CHECK_EQ_INT(sluice_conn_send(c, more, MAX - BIG + 1, 1), SLUICE_EFULL);
        free(more);
        /* The gateway gives a closing peer 5 s to read the rest; 6 MB
         * through a 4 KB buffer can take longer on a loaded machine. */
        int rcvbuf = 1 << 20;
        setsockopt(r.fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
        char reason[128] = "";
        CHECK_EQ_INT(expect_frames(&r, loop, msgs, 1, 1 << 16, reason, sizeof reason), 1008);
        CHECK_EQ_STR(reason, "send queue full");
        reader_close(&r);
    }
    sluice_server_free(srv);
}

/* Messages k0..k0+n-1 (msgs[k].len bytes of pattern k) broadcast to path:
 * how many connections took each, -1 if that differed between them. */
static int broadcast_range(sluice_server *srv, const char *path, const struct msg *msgs,
                           int k0, int n)
{
    int took = -1;
    for (int k = k0; k < k0 + n; k++) {
        unsigned char *d = malloc(msgs[k].len + 1);
        size_t count = 99;
        fill(d, msgs[k].len, k);
        CHECK_EQ_INT(sluice_server_broadcast(srv, path, d, msgs[k].len, msgs[k].binary, &count),
                     SLUICE_OK);
        free(d);
        if (k == k0)
            took = (int)count;
        else if ((int)count != took)
            took = -1;
    }
    return took;
}

/* A route's broadcast reaches each open connection of that route once, in
 * order, and no other route's; a connection that leaves (the first of the
 * route's array: the last one takes its place) no longer counts, and the
 * others miss nothing. */
static void test_route_broadcast(sluice_loop *loop, struct server_state *st, sluice_server *srv)
{
    enum { NA = 4, N1 = 30, N = 60 };
    struct msg msgs[N];
    struct reader ra[NA], rb;
    sluice_conn *a[NA], *b;
    int port = sluice_server_port(srv);
    for (int k = 0; k < N; k++) {
        msgs[k].len = (size_t)(k % 7 == 0 ? 70000 : k * 11);
        msgs[k].binary = k % 3 == 0;
    }
    for (int i = 0; i < NA; i++)
        a[i] = open_conn_path(loop, st, &ra[i], port, 0, "/a");
    b = open_conn_path(loop, st, &rb, port, 0, "/b");
    for (int i = 0; i < NA; i++)
        if (!a[i])
            return;
    if (!b)
        return;
    size_t count = 99;
    CHECK_EQ_INT(sluice_server_broadcast(srv, "/nobody", "x", 1, 0, &count), SLUICE_OK);
    CHECK_EQ_INT(count, 0);
    CHECK_EQ_INT(broadcast_range(srv, "/a", msgs, 0, N1), NA);
    /* The first to connect (index 0 of the route's array) leaves; what
     * it had queued is not expected after its close. */
    CHECK_EQ_INT(expect_then_drop(&ra[0], loop, msgs, N1), N1);
    uint64_t end = sluice_now_ms() + 20000;
    int left = 0;
    while (sluice_now_ms() < end) {
        left = 0;
        for (int i = 0; i < st->nconns; i++)
            left += st->conns[i] == a[0];
        if (!left)
            break;
        sluice_loop_run_once(loop, 5);
    }
    CHECK_EQ_INT(left, 0);
    CHECK_EQ_INT(broadcast_range(srv, "/a", msgs, N1, N - N1), NA - 1);
    for (int i = 1; i < NA; i++)
        CHECK_EQ_INT(sluice_conn_close(a[i], 1000, "route"), SLUICE_OK);
    CHECK_EQ_INT(sluice_conn_close(b, 1000, "other"), SLUICE_OK);
    for (int i = 1; i < NA; i++) {
        CHECK_EQ_INT(expect_frames(&ra[i], loop, msgs, N, 1 << 16, NULL, 0), 1000);
        reader_close(&ra[i]);
    }
    CHECK_EQ_INT(expect_frames(&rb, loop, msgs, 0, 1 << 16, NULL, 0), 1000);
    reader_close(&rb);
}

/* The server's pings (its idle policy: the peer has been silent) while a
 * reader that stopped reading holds many small frames back: lws writes
 * its ping between two of our writes, once it has sent what it held, so a
 * frame must never be split across two writes, or the ping lands inside
 * its payload and the client reads garbage (seen as "invalid opcode 0").
 * The reader answers each ping with a pong. */
static void test_pings_while_held(sluice_loop *loop, const sluice_server_handlers *h)
{
    enum { N = 20000 };
    struct msg *msgs = malloc(N * sizeof *msgs);
    for (int k = 0; k < N; k++) {
        msgs[k].len = (size_t)(90 + k % 23);
        msgs[k].binary = k % 5 == 0;
    }
    struct server_state st = { 0 };
    sluice_server *srv;
    char err[256];
    sluice_server_config cfg = { 0 };
    cfg.host = "127.0.0.1";
    cfg.idle_timeout_s = 2;   /* a ping after 2 s of silence, hang up at 4 s */
    cfg.send_queue_max = 64u * 1024 * 1024;
    CHECK_EQ_INT(sluice_server_new(loop, &cfg, h, &st, &srv, err, sizeof err), SLUICE_OK);
    struct reader r;
    sluice_conn *c = open_conn(loop, &st, &r, sluice_server_port(srv), 4096);
    if (c) {
        CHECK_EQ_INT(queue_all(c, msgs, N), N);
        /* Not reading past the idle time: the ping waits for the socket. */
        uint64_t quiet_until = sluice_now_ms() + 2500;
        while (sluice_now_ms() < quiet_until)
            sluice_loop_run_once(loop, 5);
        int k = 0, bad = 0, pings = 0;
        struct frame f;
        uint64_t end = sluice_now_ms() + 30000;
        while (k < N && !r.eof && sluice_now_ms() < end) {
            reader_pump(&r, loop, 1 << 16);
            while (k < N && next_frame(&r, &f)) {
                if (f.opcode == 9) {
                    /* a masked pong with the ping's payload (mask 0) */
                    unsigned char pong[6 + 125] = { 0x8A, (unsigned char)(0x80 | f.len), 0, 0, 0, 0 };
                    memcpy(pong + 6, f.data, f.len);
                    send(r.fd, pong, 6 + f.len, MSG_NOSIGNAL);
                    pings++;
                    continue;
                }
                bad += !frame_ok(&f, msgs, k);
                if (bad > 3)
                    k = N;  /* the rest is garbage after a broken frame */
                k++;
            }
        }
        CHECK_EQ_INT(bad, 0);
        CHECK_EQ_INT(k, N);
        CHECK(pings > 0);
        reader_close(&r);
    }
    sluice_server_free(srv);
    free(msgs);
}

int main(void)
{
    sluice_loop *loop;
    sluice_server *srv, *small;
    char err[256];
    struct server_state st = { 0 }, st_small = { 0 };
    sluice_loop_config lc = { 0 };
    CHECK_EQ_INT(sluice_loop_new(&lc, &loop, err, sizeof err), SLUICE_OK);

    sluice_server_config cfg = { 0 };
    cfg.host = "127.0.0.1";
    cfg.send_queue_max = 256u * 1024 * 1024;
    sluice_server_handlers h = { 0 };
    h.ws.open = on_open;
    h.ws.close = on_close;
    h.ws_accept = accept_all;
    CHECK_EQ_INT(sluice_server_new(loop, &cfg, &h, &st, &srv, err, sizeof err), SLUICE_OK);
    cfg.send_queue_max = 200000;
    CHECK_EQ_INT(sluice_server_new(loop, &cfg, &h, &st_small, &small, err, sizeof err), SLUICE_OK);

    test_sizes(loop, &st, sluice_server_port(srv));
    test_many_small(loop, &st, sluice_server_port(srv));
    test_slow_reader(loop, &st, sluice_server_port(srv));
    test_shared(loop, &st, sluice_server_port(srv));
    test_pong_between_frames(loop, &st, sluice_server_port(srv));
    test_queue_full(loop, &st_small, sluice_server_port(small));
    test_route_broadcast(loop, &st, srv);
    test_queue_full_mid_frame(loop, &h);
    test_pings_while_held(loop, &h);

    sluice_server_free(small);
    sluice_server_free(srv);
    sluice_loop_free(loop);
    return check_summary("test_ws_coalesce");
}
