/* sluice-loadgen: WebSocket load generator for sluice's benchmarks.
 *
 * Raw non-blocking sockets and one epoll loop, so the generator costs far
 * less than what it measures: every row is a pre-built, pre-masked frame of
 * fixed width whose id and key digits are patched in place (XOR with the
 * same mask), never re-encoded.
 *
 * Modes (--mode):
 *   ack    send rows (movies protocol) and wait for {"ack":"ID"} for each;
 *          latency = send -> ack.
 *   send   send rows, expect nothing back (the Node peers, lws alone); with
 *          --kafka/--topic, wait until that many records landed in Kafka
 *          (sum of high watermarks) and time that instead.
 *   recv   connect, optionally send --hello, then count received records
 *          until --expect per connection (fan-out): each "t":<CLOCK_MONOTONIC
 *          ns> in a frame is one record and gives a latency; frames without
 *          one are not counted.
 *   idle   connect, hold for --hold seconds, report.
 * --sub URL adds, in ack/send mode, one subscriber connection that receives
 * the rows back (client -> gateway -> Kafka -> gateway -> client): latency
 * send -> receipt.
 *
 * The report is one JSON object on stdout. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <librdkafka/rdkafka.h>

#define ID_WIDTH 10
#define OUTBUF (64 * 1024)
#define INBUF (64 * 1024)

enum { M_ACK, M_SEND, M_RECV, M_IDLE };

typedef struct conn {
    int fd;
    int state;            /* 0 connecting, 1 handshake sent, 2 open, 3 dead */
    int is_sub;
    char *out; size_t out_len, out_off;
    char *in; size_t in_len;
    uint64_t sent, acked, received;
    uint64_t first_rx_ns, last_rx_ns;
} conn;

static struct {
    const char *host, *path; int port;
    const char *sub_path; int sub;
    int mode, conns;
    uint64_t rows;          /* total rows to send */
    double rate;            /* rows/s in total; 0: full speed */
    uint64_t window;        /* max unacked per connection (ack mode); 0: none */
    uint64_t expect;        /* recv: frames per connection */
    double hold, timeout, duration;
    int ramp;
    const char *hello;
    const char *kafka, *topic;
    const char *label;
} opt = { "127.0.0.1", "/", 8080, NULL, 0, M_ACK, 10, 100000, 0, 0, 0, 5, 60,
          0, 256, NULL, NULL, NULL, "" };

static conn *C;
static int ep;
static uint64_t next_id = 1, sent_total, acked_total, errors_total, received_total,
                sub_received, closed_total, connect_failures;
static uint64_t *send_ns;        /* by id % ring */
static uint64_t ring;
static uint32_t *ack_us, *rcv_us; /* latencies, microseconds (the first lat_cap) */
static size_t n_ack_lat, n_rcv_lat, lat_cap;
static uint32_t *fan_us; static size_t n_fan_lat, cap_fan_lat;
static double tl[600][3]; static int n_tl;
static int n_open;   /* senders/receivers (not the subscriber) open now */
static uint64_t t_last_tick, t_duration_end;
static uint64_t t_start, t_first_send, t_last_send, t_last_ack, t_first_rx, t_last_rx;

/* The row frame: fixed width, masked once. */
static const unsigned char MASK[4] = { 0x37, 0xfa, 0x21, 0x3d };
static char *row_frame; static size_t row_frame_len, id_off, key_off, payload_start;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) { perror(what); exit(2); }

/* A client frame (masked) of text `p`; returns its length. */
static size_t build_frame(char *dst, const char *p, size_t n, int opcode) {
    size_t h = 0;
    dst[h++] = (char)(0x80 | opcode);
    if (n < 126) dst[h++] = (char)(0x80 | n);
    else if (n < 65536) { dst[h++] = (char)(0x80 | 126); dst[h++] = (char)(n >> 8); dst[h++] = (char)n; }
    else { dst[h++] = (char)(0x80 | 127); for (int i = 7; i >= 0; i--) dst[h++] = (char)((uint64_t)n >> (8 * i)); }
    memcpy(dst + h, MASK, 4); h += 4;
    for (size_t i = 0; i < n; i++) dst[h + i] = (char)(p[i] ^ MASK[i & 3]);
    return h + n;
}

static void build_row(void) {
    static const char pre[] = "{\"id\":\"";
    char text[512];
    int n = snprintf(text, sizeof text,
        "{\"id\":\"%0*d\",\"actorName\":\"Keanu Reeves\",\"actorId\":\"nm0000000\","
        "\"movieId\":\"tt0133093\",\"movieName\":\"The Matrix\",\"movieMinutes\":136}",
        ID_WIDTH, 0);
    row_frame = malloc(n + 16);
    row_frame_len = build_frame(row_frame, text, (size_t)n, 1);
    size_t hdr = row_frame_len - (size_t)n;
    payload_start = hdr;
    id_off = hdr + sizeof pre - 1;
    key_off = hdr + (size_t)(strstr(text, "nm0000000") - text) + 2;
}

/* Writes row `id` into dst (row_frame_len bytes): id and key digits
 * patched, masked like the rest of the payload. */
static void put_row(char *dst, uint64_t id) {
    memcpy(dst, row_frame, row_frame_len);
    uint64_t v = id;
    for (int i = ID_WIDTH - 1; i >= 0; i--, v /= 10) {
        size_t at = id_off + (size_t)i;
        dst[at] = (char)(('0' + v % 10) ^ MASK[(at - payload_start) & 3]);
    }
    /* 1,000 distinct actors: keys spread over the partitions. */
    v = id % 1000;
    for (int i = 6; i >= 4; i--, v /= 10) {
        size_t at = key_off + (size_t)i;
        dst[at] = (char)(('0' + v % 10) ^ MASK[(at - payload_start) & 3]);
    }
}

static void set_nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

static void ep_mod(conn *c, int want_out) {
    struct epoll_event ev = { .events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c };
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static int conn_open(conn *c, int is_sub) {
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(opt.port) };
    inet_pton(AF_INET, opt.host, &a.sin_addr);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0) return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* Close with RST: thousands of connections leave no TIME_WAIT behind. */
    struct linger lg = { 1, 0 };
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    set_nonblock(c->fd);
    c->is_sub = is_sub;
    c->out = malloc(OUTBUF); c->in = malloc(INBUF);
    if (!c->out || !c->in) die("malloc");
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) {
        close(c->fd); c->state = 3; connect_failures++; return -1;
    }
    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.ptr = c };
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    const char *path = is_sub ? opt.sub_path : opt.path;
    c->out_len = (size_t)snprintf(c->out, OUTBUF,
        "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        path, opt.host, opt.port);
    c->state = 1;
    return 0;
}

static void conn_dead(conn *c) {
    if (c->state == 3) return;
    if (c->state < 2) connect_failures++; else closed_total++;
    if (c->state == 2 && !c->is_sub) n_open--;
    c->state = 3;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
}

static void queue_text(conn *c, const char *text) {
    c->out_len += build_frame(c->out + c->out_len, text, strlen(text), 1);
}

/* Flush the output buffer; 1 if all written. */
static int flush_out(conn *c) {
    while (c->out_off < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN) { ep_mod(c, 1); return 0; }
            conn_dead(c); return 0;
        }
        c->out_off += (size_t)w;
    }
    c->out_off = c->out_len = 0;
    return 1;
}

static int is_sender(const conn *c) {
    return !c->is_sub && (opt.mode == M_ACK || opt.mode == M_SEND);
}

/* Append up to `budget` rows to c's buffer; returns rows queued. */
static uint64_t fill_rows(conn *c, uint64_t budget) {
    uint64_t n = 0;
    uint64_t now = 0;
    while (n < budget && next_id <= opt.rows && c->out_len + row_frame_len <= OUTBUF) {
        if (opt.mode == M_ACK && opt.window && c->sent - c->acked >= opt.window) break;
        if (!now) now = now_ns();
        uint64_t id = next_id++;
        put_row(c->out + c->out_len, id);
        c->out_len += row_frame_len;
        send_ns[id % ring] = now;
        c->sent++; n++;
    }
    if (n) {
        sent_total += n;
        if (!t_first_send) t_first_send = now;
        t_last_send = now;
    }
    return n;
}

static uint64_t parse_digits(const char *p, const char *end) {
    uint64_t v = 0;
    while (p < end && *p >= '0' && *p <= '9') v = v * 10 + (uint64_t)(*p++ - '0');
    return v;
}

static void on_text(conn *c, const char *p, size_t n) {
    uint64_t t = now_ns();
    const char *end = p + n;
    if (c->is_sub) {
        const char *q = memmem(p, n, "\"id\":\"", 6);
        if (!q) return;              /* e.g. {"subscribed":…} */
        uint64_t id = parse_digits(q + 6, end);
        if (id && id < next_id && n_rcv_lat < lat_cap)
            rcv_us[n_rcv_lat++] = (uint32_t)((t - send_ns[id % ring]) / 1000);
        sub_received++;
        return;
    }
    if (opt.mode == M_RECV) {
        if (n >= 6 && memmem(p, n < 24 ? n : 24, "subscribed", 10)) return;
        /* A server's application-level ping (Centrifugo's JSON protocol:
         * an empty object, alone or as one line of a frame of several) is
         * answered in kind. */
        if ((n == 2 && p[0] == '{' && p[1] == '}') || (n > 2 && (!memcmp(p, "{}\n", 3) ||
            !memcmp(p + n - 3, "\n{}", 3) || memmem(p, n, "\n{}\n", 4)))) {
            queue_text(c, "{}");
            flush_out(c);
        }
        /* Each "t" is one record: a frame may carry several (Centrifugo
         * sends newline-separated pushes in one frame). */
        const char *q = memmem(p, n, "\"t\":", 4);
        if (!q) return;
        if (!t_first_rx) t_first_rx = t;
        t_last_rx = t;
        for (; q; q = memmem(q + 4, (size_t)(end - q - 4), "\"t\":", 4)) {
            c->received++; received_total++;
            uint64_t sent = parse_digits(q + 4, end);
            if (sent && sent <= t) {
                if (n_fan_lat == cap_fan_lat) {
                    cap_fan_lat = cap_fan_lat ? cap_fan_lat * 2 : 1 << 16;
                    fan_us = realloc(fan_us, cap_fan_lat * sizeof *fan_us);
                }
                fan_us[n_fan_lat++] = (uint32_t)((t - sent) / 1000);
            }
        }
        return;
    }
    if (n > 8 && memcmp(p, "{\"ack\":", 7) == 0) {
        const char *q = p + 7;
        if (*q == '"') q++;
        uint64_t id = parse_digits(q, end);
        c->acked++; acked_total++;
        t_last_ack = t;
        if (id && id < next_id && n_ack_lat < lat_cap) ack_us[n_ack_lat++] = (uint32_t)((t - send_ns[id % ring]) / 1000);
    } else if (memmem(p, n, "\"error\"", 7)) {
        errors_total++;
        c->acked++;
        if (errors_total <= 3) fprintf(stderr, "loadgen: server said %.*s\n", (int)(n > 200 ? 200 : n), p);
    }
}

/* Parse whole frames from c->in. */
static void parse_frames(conn *c) {
    size_t off = 0;
    for (;;) {
        size_t avail = c->in_len - off;
        if (avail < 2) break;
        unsigned char *b = (unsigned char *)c->in + off;
        int op = b[0] & 0x0f;
        uint64_t len = b[1] & 0x7f;
        size_t h = 2;
        if (len == 126) { if (avail < 4) break; len = ((uint64_t)b[2] << 8) | b[3]; h = 4; }
        else if (len == 127) {
            if (avail < 10) break;
            len = 0; for (int i = 0; i < 8; i++) len = (len << 8) | b[2 + i];
            h = 10;
        }
        if (h + len > INBUF) { fprintf(stderr, "loadgen: frame too big\n"); conn_dead(c); return; }
        if (avail < h + len) break;
        const char *p = (const char *)b + h;
        if (op == 1 || op == 0) on_text(c, p, (size_t)len);
        else if (op == 9) {             /* ping: pong back */
            if (c->out_len + len + 16 <= OUTBUF)
                c->out_len += build_frame(c->out + c->out_len, p, (size_t)len, 10);
            flush_out(c);
        } else if (op == 8) { conn_dead(c); return; }
        off += h + (size_t)len;
    }
    if (off) { memmove(c->in, c->in + off, c->in_len - off); c->in_len -= off; }
}

static void on_readable(conn *c) {
    for (;;) {
        ssize_t r = recv(c->fd, c->in + c->in_len, INBUF - c->in_len, 0);
        if (r == 0) { conn_dead(c); return; }
        if (r < 0) { if (errno != EAGAIN) conn_dead(c); return; }
        c->in_len += (size_t)r;
        if (c->state == 1) {
            char *e = memmem(c->in, c->in_len, "\r\n\r\n", 4);
            if (!e) continue;
            if (strncmp(c->in, "HTTP/1.1 101", 12) != 0) {
                if (connect_failures < 3) fprintf(stderr, "loadgen: upgrade refused: %.40s\n", c->in);
                conn_dead(c); return;
            }
            size_t hl = (size_t)(e + 4 - c->in);
            memmove(c->in, c->in + hl, c->in_len - hl); c->in_len -= hl;
            c->state = 2;
            if (!c->is_sub) n_open++;
            if (c->is_sub && opt.hello) queue_text(c, opt.hello);
            if (!c->is_sub && opt.mode == M_RECV && opt.hello) queue_text(c, opt.hello);
            if (c->out_len) flush_out(c);
        }
        parse_frames(c);
        if (c->state == 3) return;
        if ((size_t)r < INBUF / 2) return;
    }
}

static int open_count(void) { return n_open; }

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void print_lat(const char *name, uint32_t *v, size_t n) {
    if (!n) { printf(",\"%s\":null", name); return; }
    qsort(v, n, sizeof *v, cmp_u32);
    double sum = 0; for (size_t i = 0; i < n; i++) sum += v[i];
#define PCT(q) (v[(size_t)((double)(n - 1) * (q))] / 1000.0)
    printf(",\"%s\":{\"n\":%zu,\"mean_ms\":%.3f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,"
           "\"p999_ms\":%.3f,\"max_ms\":%.3f}", name, n, sum / (double)n / 1000.0,
           PCT(0.5), PCT(0.9), PCT(0.99), PCT(0.999), v[n - 1] / 1000.0);
#undef PCT
}

/* ---- Kafka: count what landed (sum of high watermarks) ---------------- */
static rd_kafka_t *rk;
static int64_t kafka_count(void) {
    const rd_kafka_metadata_t *md;
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, opt.topic, NULL);
    if (rd_kafka_metadata(rk, 0, t, &md, 2000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_topic_destroy(t); return -1;
    }
    int64_t sum = 0;
    for (int i = 0; i < md->topic_cnt; i++) {
        if (md->topics[i].err) { sum = -1; break; }
        for (int p = 0; p < md->topics[i].partition_cnt; p++) {
            int64_t lo, hi;
            if (rd_kafka_query_watermark_offsets(rk, opt.topic, md->topics[i].partitions[p].id,
                                                 &lo, &hi, 2000)) { sum = -1; break; }
            sum += hi;
        }
    }
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(t);
    return sum;
}

static void kafka_open(void) {
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", opt.kafka, err, sizeof err)) { fprintf(stderr, "%s\n", err); exit(2); }
    rd_kafka_conf_set(conf, "allow.auto.create.topics", "true", err, sizeof err);
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err);
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    if (!rk) { fprintf(stderr, "loadgen: %s\n", err); exit(2); }
}

static void usage(void) {
    fprintf(stderr,
        "usage: sluice-loadgen [--url ws://HOST:PORT/PATH] [--mode ack|send|recv|idle]\n"
        "  [--conns N] [--rows M] [--rate R] [--window W] [--expect K] [--hello TEXT]\n"
        "  [--sub ws://…/PATH] [--kafka BOOTSTRAP --topic T] [--hold S] [--duration S]\n"
        "  [--ramp HANDSHAKES_IN_FLIGHT (256)] [--timeout S] [--label L]\n");
    exit(2);
}

static void parse_url(const char *url, const char **host, int *port, const char **path) {
    static char hbuf[2][128]; static int k;
    char *h = hbuf[k++ & 1];
    if (sscanf(url, "ws://%127[^:/]:%d", h, port) < 2) usage();
    const char *p = strchr(url + 5, '/');
    *host = h; *path = p ? p : "/";
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0 && v && ++i)
        if (ARG("--url")) parse_url(v, &opt.host, &opt.port, &opt.path);
        else if (ARG("--sub")) { int p; const char *h; parse_url(v, &h, &p, &opt.sub_path); opt.sub = 1; }
        else if (ARG("--mode")) {
            opt.mode = !strcmp(v, "ack") ? M_ACK : !strcmp(v, "send") ? M_SEND :
                       !strcmp(v, "recv") ? M_RECV : !strcmp(v, "idle") ? M_IDLE : -1;
            if (opt.mode < 0) usage();
        }
        else if (ARG("--conns")) opt.conns = atoi(v);
        else if (ARG("--rows")) opt.rows = strtoull(v, NULL, 10);
        else if (ARG("--rate")) opt.rate = atof(v);
        else if (ARG("--window")) opt.window = strtoull(v, NULL, 10);
        else if (ARG("--expect")) opt.expect = strtoull(v, NULL, 10);
        else if (ARG("--hello")) opt.hello = v;
        else if (ARG("--hold")) opt.hold = atof(v);
        else if (ARG("--ramp")) opt.ramp = atoi(v);
        else if (ARG("--duration")) opt.duration = atof(v);
        else if (ARG("--timeout")) opt.timeout = atof(v);
        else if (ARG("--kafka")) opt.kafka = v;
        else if (ARG("--topic")) opt.topic = v;
        else if (ARG("--label")) opt.label = v;
        else usage();
#undef ARG
    }
    if (opt.conns < 1 || opt.ramp < 1) usage();
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    signal(SIGPIPE, SIG_IGN);

    build_row();
    if (opt.mode == M_ACK || opt.mode == M_SEND) {
        /* --duration: send until then; rows is only a cap. Send times live
         * in a ring (far more than can ever be in flight). */
        if (opt.duration > 0 && opt.rows < 1000000000ull) opt.rows = 1000000000ull;
        ring = opt.rows + 2 < (1u << 22) ? opt.rows + 2 : (1u << 22);
        lat_cap = ring;
        send_ns = calloc(ring, sizeof *send_ns);
        ack_us = malloc(lat_cap * sizeof *ack_us);
        rcv_us = malloc(lat_cap * sizeof *rcv_us);
        if (!send_ns || !ack_us || !rcv_us) die("malloc");
    }
    int64_t kafka_base = 0;
    if (opt.kafka && opt.topic) {
        kafka_open();
        kafka_base = kafka_count();
        if (kafka_base < 0) kafka_base = 0;
    }

    ep = epoll_create1(0);
    int total = opt.conns + opt.sub;
    C = calloc((size_t)total, sizeof *C);
    t_start = now_ns();
    /* The subscriber first: it must be listening before rows flow. */
    if (opt.sub) conn_open(&C[opt.conns], 1);
    /* At most --ramp handshakes in flight: a server may (rightly) refuse
     * a flood of connections that have not sent their request yet. */
    int next_conn = 0;
    while (next_conn < opt.conns && next_conn < opt.ramp) conn_open(&C[next_conn++], 0);

    struct epoll_event evs[512];
    uint64_t deadline = t_start + (uint64_t)(opt.timeout * 1e9);
    uint64_t t_all_open = 0, hold_until = 0, t_sent_all = 0;
    int64_t landed = 0; uint64_t t_landed = 0, last_kpoll = 0;
    int rr = 0;
    for (;;) {
        uint64_t now = now_ns();
        if (now > deadline) { fprintf(stderr, "loadgen: timeout\n"); break; }
        int opened = 0, dead = 0;
        if (next_conn < opt.conns) {
            int pending = 0;
            for (int i = 0; i < next_conn; i++) pending += C[i].state == 1;
            while (next_conn < opt.conns && pending < opt.ramp) { conn_open(&C[next_conn++], 0); pending++; }
        }
        if (!t_all_open && next_conn == opt.conns) {
            for (int i = 0; i < total; i++) { opened += C[i].state == 2; dead += C[i].state == 3; }
            if (opened + dead == total) {
                t_all_open = now;
                if (opt.sub) usleep(200000);  /* let the subscription settle */
                if (opt.mode == M_IDLE) hold_until = now + (uint64_t)(opt.hold * 1e9);
                fprintf(stderr, "loadgen: %d connections open, %d failed\n", opened, dead);
                if (opened == 0) break;
            }
        }
        /* Sending. */
        if (t_all_open && (opt.mode == M_ACK || opt.mode == M_SEND) && next_id <= opt.rows) {
            uint64_t budget;
            if (opt.rate > 0) {
                if (!t_first_send) t_first_send = now_ns();
                uint64_t t = now_ns();
                double due = opt.rate * (double)(t - t_first_send) / 1e9 + 1;
                budget = due > (double)sent_total ? (uint64_t)due - sent_total : 0;
            } else budget = UINT64_MAX;
            for (int k = 0; k < opt.conns && budget; k++) {
                conn *c = &C[(rr + k) % opt.conns];
                if (c->state != 2 || c->out_len) continue;
                uint64_t per = opt.rate > 0 ? (budget + (uint64_t)(opt.conns - k) - 1) / (uint64_t)(opt.conns - k) : budget;
                if (opt.rate > 0 && per > budget) per = budget;
                uint64_t q = fill_rows(c, per);
                if (opt.rate > 0) budget -= q;
                if (q) flush_out(c);
            }
            rr = (rr + 1) % opt.conns;
        }
        if (!t_sent_all && next_id > opt.rows && (opt.mode == M_ACK || opt.mode == M_SEND)) {
            int pending = 0;
            for (int i = 0; i < opt.conns; i++) pending += C[i].out_len > 0;
            if (!pending) t_sent_all = now_ns();
        }
        now = now_ns();   /* sending may have set t_first_send after `now` */
        /* Progress, once a second: the overload timeline. */
        if (t_first_send && now - t_last_tick >= 1000000000u && n_tl < 600) {
            t_last_tick = now;
            if (rk && opt.mode == M_SEND) {
                int64_t k = kafka_count();
                if (k >= 0) landed = k - kafka_base;
            }
            tl[n_tl][0] = (double)(now - t_first_send) / 1e9;
            tl[n_tl][1] = (double)sent_total;
            tl[n_tl][2] = opt.mode == M_ACK ? (double)acked_total : (double)landed;
            n_tl++;
        }
        if (opt.duration > 0 && t_first_send && now - t_first_send >= (uint64_t)(opt.duration * 1e9)) {
            t_duration_end = now;
            if (rk && opt.mode == M_SEND) {   /* what landed by the end */
                int64_t k = kafka_count();
                if (k >= 0) landed = k - kafka_base;
            }
            break;
        }
        /* Done? */
        if (opt.mode == M_ACK && acked_total + errors_total >= opt.rows && (!opt.sub || sub_received >= opt.rows || now - t_last_ack > 2000000000u)) break;
        if (opt.mode == M_SEND && t_sent_all) {
            if (opt.sub && sub_received < opt.rows && now - t_sent_all < 10000000000u) goto wait;
            /* Nothing to wait for but the server: exiting now would reset
             * the connections (SO_LINGER 0) and discard what it has not
             * read yet. Wait until it closes them (or 30 s). */
            if (!rk) {
                if (open_count() == 0 || now - t_sent_all > 30000000000u) break;
                goto wait;
            }
            if (now - last_kpoll > 20000000u) {
                last_kpoll = now;
                int64_t n = kafka_count();
                if (n >= 0) landed = n - kafka_base;
                if (landed >= (int64_t)opt.rows) { t_landed = now_ns(); break; }
            }
        }
        if (opt.mode == M_RECV && t_all_open && received_total >= opt.expect * (uint64_t)open_count()) break;
        if (opt.mode == M_IDLE && hold_until && now > hold_until) break;
        if (open_count() == 0 && t_all_open && !(opt.sub && C[opt.conns].state == 2)) { fprintf(stderr, "loadgen: every connection closed\n"); break; }
    wait:;
        int timeout_ms = (opt.rate > 0 || (opt.mode == M_SEND && t_sent_all)) ? 1 : 10;
        int n = epoll_wait(ep, evs, 512, timeout_ms);
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (c->state == 3) continue;
            if (evs[i].events & (EPOLLERR | EPOLLHUP)) {
                if (!(evs[i].events & EPOLLIN)) { conn_dead(c); continue; }
            }
            if (evs[i].events & EPOLLOUT) {
                if (flush_out(c)) {
                    ep_mod(c, 0);
                    if (is_sender(c) && opt.rate <= 0 && c->state == 2) {
                        if (fill_rows(c, UINT64_MAX)) flush_out(c);
                    }
                }
            }
            if (evs[i].events & EPOLLIN) on_readable(c);
        }
    }
    uint64_t t_end = now_ns();
    int opened = 0;
    for (int i = 0; i < opt.conns; i++) opened += C[i].state == 2;

    printf("{\"tool\":\"sluice-loadgen\",\"label\":\"%s\",\"mode\":\"%s\",\"conns\":%d,\"open\":%d,"
           "\"connect_failures\":%llu,\"closed\":%llu,\"rows\":%llu,\"rate\":%.0f,\"sent\":%llu",
           opt.label, (const char *[]){ "ack", "send", "recv", "idle" }[opt.mode], opt.conns, opened,
           (unsigned long long)connect_failures, (unsigned long long)closed_total,
           (unsigned long long)opt.rows, opt.rate, (unsigned long long)sent_total);
    double connect_s = t_all_open ? (double)(t_all_open - t_start) / 1e9 : -1;
    printf(",\"connect_s\":%.3f", connect_s);
    if (opt.mode == M_ACK) {
        double secs = t_last_ack > t_first_send ? (double)(t_last_ack - t_first_send) / 1e9 : 0;
        printf(",\"acked\":%llu,\"errors\":%llu,\"seconds\":%.3f,\"rows_per_s\":%.0f",
               (unsigned long long)acked_total, (unsigned long long)errors_total, secs,
               secs > 0 ? (double)acked_total / secs : 0);
        print_lat("ack_latency", ack_us, n_ack_lat);
    }
    if (opt.mode == M_SEND) {
        double send_s = t_sent_all > t_first_send ? (double)(t_sent_all - t_first_send) / 1e9 : 0;
        printf(",\"send_seconds\":%.3f", send_s);
        if (rk) {
            double secs = t_landed ? (double)(t_landed - t_first_send) / 1e9 : (double)(t_end - t_first_send) / 1e9;
            printf(",\"landed\":%lld,\"seconds\":%.3f,\"rows_per_s\":%.0f", (long long)landed, secs,
                   secs > 0 ? (double)landed / secs : 0);
        } else {
            printf(",\"rows_per_s\":%.0f", send_s > 0 ? (double)sent_total / send_s : 0);
        }
    }
    if (opt.sub) {
        printf(",\"sub_received\":%llu", (unsigned long long)sub_received);
        print_lat("receipt_latency", rcv_us, n_rcv_lat);
    }
    if (opt.mode == M_RECV) {
        double secs = t_last_rx > t_first_rx ? (double)(t_last_rx - t_first_rx) / 1e9 : 0;
        printf(",\"expect\":%llu,\"received\":%llu,\"seconds\":%.3f,\"deliveries_per_s\":%.0f",
               (unsigned long long)opt.expect, (unsigned long long)received_total, secs,
               secs > 0 ? (double)received_total / secs : 0);
        print_lat("fanout_latency", fan_us, n_fan_lat);
    }
    if (opt.duration > 0) {
        double secs = (double)(t_duration_end ? t_duration_end - t_first_send : t_end - t_first_send) / 1e9;
        uint64_t done = opt.mode == M_ACK ? acked_total : (uint64_t)(landed > 0 ? landed : 0);
        printf(",\"duration_s\":%.3f,\"done\":%llu,\"done_per_s\":%.0f,\"timeline\":[", secs,
               (unsigned long long)done, secs > 0 ? (double)done / secs : 0);
        for (int i = 0; i < n_tl; i++)
            printf("%s[%.2f,%.0f,%.0f]", i ? "," : "", tl[i][0], tl[i][1], tl[i][2]);
        printf("]");
    }
    printf(",\"elapsed_s\":%.3f}\n", (double)(t_end - t_start) / 1e9);
    fflush(stdout);
    if (rk) rd_kafka_destroy(rk);
    return 0;
}
