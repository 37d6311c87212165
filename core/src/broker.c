/* The embedded Kafka broker: librdkafka's mock cluster, plus a TCP
 * forwarder that offers it on a stable loopback port. The mock binds
 * ephemeral ports; clients bootstrap through the forwarder, then follow the
 * broker addresses the mock advertises. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <dirent.h>

#include "sluice/broker.h"
#include "kafka_internal.h"
/* After rdkafka.h (from kafka_internal.h), as it requires. */
#include <librdkafka/rdkafka_mock.h>

#define FWD_BUF 65536

/* One direction of a forwarded connection: bytes read from `from`, not yet
 * written to `to`. */
typedef struct fwd_flow {
    char buf[FWD_BUF];
    size_t len, off;
} fwd_flow;

typedef struct fwd_conn {
    int client, upstream;
    fwd_flow up;    /* client -> mock */
    fwd_flow down;  /* mock -> client */
    struct fwd_conn *next;
} fwd_conn;

typedef struct fwd {
    int listen_fd;
    int stop_fd;                    /* eventfd: written by free */
    struct sockaddr_storage target; /* the first mock broker */
    socklen_t target_len;
    fwd_conn *conns;
    pthread_t thread;
    int running;
} fwd;

struct sluice_broker {
    sluice_kq kq;               /* first: the rd_kafka_t opaque points here */
    rd_kafka_t *rk;
    rd_kafka_queue_t *main_queue;
    rd_kafka_mock_cluster_t *mock;
    int brokers;
    int partitions;
    char direct[1024];
    char bootstrap[1024];
    fwd fwd;
};

/* ---- forwarder (runs on its own thread) ------------------------------- */

static void fwd_conn_close(fwd_conn *c) {
    close(c->client);
    close(c->upstream);
    free(c);
}

static void set_nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void fwd_accept(fwd *f) {
    int client = accept4(f->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (client < 0) return;
    int upstream = socket(f->target.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    /* Loopback connect completes at once; only then go non-blocking. */
    if (upstream < 0 || connect(upstream, (struct sockaddr *)&f->target, f->target_len) < 0) {
        if (upstream >= 0) close(upstream);
        close(client);
        return;
    }
    fcntl(upstream, F_SETFL, fcntl(upstream, F_GETFL) | O_NONBLOCK);
    set_nodelay(client);
    set_nodelay(upstream);
    fwd_conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(client);
        close(upstream);
        return;
    }
    c->client = client;
    c->upstream = upstream;
    c->next = f->conns;
    f->conns = c;
}

/* Moves bytes along one flow. Returns -1 when the connection is done. */
static int fwd_read(int from, fwd_flow *flow) {
    ssize_t n = read(from, flow->buf, sizeof flow->buf);
    if (n > 0) {
        flow->len = (size_t)n;
        flow->off = 0;
        return 0;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
    return -1;
}

static int fwd_write(int to, fwd_flow *flow) {
    ssize_t n = send(to, flow->buf + flow->off, flow->len - flow->off, MSG_NOSIGNAL);
    if (n > 0) {
        flow->off += (size_t)n;
        if (flow->off == flow->len) flow->len = flow->off = 0;
        return 0;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
    return -1;
}

static short fwd_events(const fwd_flow *in, const fwd_flow *out) {
    /* Read only into an empty buffer; write only what is buffered. */
    return (short)((in->len == 0 ? POLLIN : 0) | (out->len ? POLLOUT : 0));
}

static void *fwd_main(void *arg) {
    fwd *f = arg;
    struct pollfd *fds = NULL;
    size_t cap = 0;
    for (;;) {
        size_t n = 2;
        for (fwd_conn *c = f->conns; c; c = c->next) n += 2;
        if (n > cap) {
            struct pollfd *grown = realloc(fds, n * sizeof *grown);
            if (!grown) break;
            fds = grown;
            cap = n;
        }
        fds[0] = (struct pollfd){ .fd = f->stop_fd, .events = POLLIN };
        fds[1] = (struct pollfd){ .fd = f->listen_fd, .events = POLLIN };
        size_t i = 2;
        for (fwd_conn *c = f->conns; c; c = c->next, i += 2) {
            fds[i] = (struct pollfd){ .fd = c->client, .events = fwd_events(&c->up, &c->down) };
            fds[i + 1] = (struct pollfd){ .fd = c->upstream, .events = fwd_events(&c->down, &c->up) };
        }
        /* Blocks until there is something to do: an idle forwarder costs nothing. */
        if (poll(fds, n, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (fds[0].revents) break;
        i = 2;
        for (fwd_conn **link = &f->conns; *link; i += 2) {
            fwd_conn *c = *link;
            short cr = fds[i].revents, ur = fds[i + 1].revents;
            int dead = 0;
            if ((cr & (POLLIN | POLLHUP | POLLERR)) && c->up.len == 0) dead |= fwd_read(c->client, &c->up);
            if ((ur & (POLLIN | POLLHUP | POLLERR)) && c->down.len == 0) dead |= fwd_read(c->upstream, &c->down);
            if (!dead && c->up.len && (ur & POLLOUT)) dead |= fwd_write(c->upstream, &c->up);
            if (!dead && c->down.len && (cr & POLLOUT)) dead |= fwd_write(c->client, &c->down);
            if ((cr | ur) & POLLNVAL) dead = -1;
            if (dead) {
                *link = c->next;
                fwd_conn_close(c);
            } else {
                link = &c->next;
            }
        }
        if (fds[1].revents & POLLIN) fwd_accept(f);
    }
    free(fds);
    return NULL;
}

/* ---- setup ------------------------------------------------------------ */

static int fwd_listen(fwd *f, int port, char *err, size_t errlen) {
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        sluice_errf(err, errlen, "socket: %s", strerror(errno));
        return SLUICE_EIO;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        int e = errno;
        close(fd);
        if (e == EADDRINUSE) {
            sluice_errf(err, errlen, "the embedded Kafka broker's port %d is in use", port);
            return SLUICE_EADDRINUSE;
        }
        sluice_errf(err, errlen, "bind 127.0.0.1:%d: %s", port, strerror(e));
        return SLUICE_EIO;
    }
    if (listen(fd, 128) < 0) {
        sluice_errf(err, errlen, "listen: %s", strerror(errno));
        close(fd);
        return SLUICE_EIO;
    }
    f->listen_fd = fd;
    return 0;
}

static int listen_port(int fd) {
    struct sockaddr_in addr;
    socklen_t len = sizeof addr;
    if (getsockname(fd, (struct sockaddr *)&addr, &len) < 0) return -1;
    return ntohs(addr.sin_port);
}

/* librdkafka's mock accepts its clients' connections without TCP_NODELAY.
 * A client that pipelines requests (a producer has several in flight) then
 * meets Nagle on the responses: the second one waits for the client's
 * delayed ACK, 40 ms on Linux, and a round trip at 10,000 rows/s had that
 * stall in its tail. Linux copies TCP_NODELAY from a listening socket to
 * the connections it accepts, so it is set on the mock's listeners, found
 * among this process's descriptors by the ports the mock advertises. */
static void mock_listeners_nodelay(const char *bootstraps) {
    DIR *dir = opendir("/proc/self/fd");
    if (!dir) return;
    struct dirent *e;
    while ((e = readdir(dir))) {
        int fd = atoi(e->d_name), listening = 0, one = 1;
        socklen_t len = sizeof listening;
        if (fd <= 2 || getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 || !listening)
            continue;
        struct sockaddr_in addr;
        socklen_t alen = sizeof addr;
        if (getsockname(fd, (struct sockaddr *)&addr, &alen) < 0 || addr.sin_family != AF_INET)
            continue;
        int port = ntohs(addr.sin_port);
        char needle[16];
        snprintf(needle, sizeof needle, ":%d", port);
        for (const char *at = bootstraps; port > 0 && (at = strstr(at, needle)); at++) {
            char after = at[strlen(needle)];
            if (after == '\0' || after == ',') {
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                break;
            }
        }
    }
    closedir(dir);
}

/* Resolves the first "host:port" of the mock's bootstrap list. */
static int fwd_target(fwd *f, const char *bootstraps, char *err, size_t errlen) {
    char first[512];
    size_t n = strcspn(bootstraps, ",");
    if (n >= sizeof first) n = sizeof first - 1;
    memcpy(first, bootstraps, n);
    first[n] = '\0';
    char *colon = strrchr(first, ':');
    if (!colon) {
        sluice_errf(err, errlen, "unexpected mock bootstrap \"%s\"", first);
        return SLUICE_EKAFKA;
    }
    *colon = '\0';
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
    int rc = getaddrinfo(first, colon + 1, &hints, &res);
    if (rc != 0 || !res) {
        sluice_errf(err, errlen, "resolve %s: %s", first, gai_strerror(rc));
        return SLUICE_EKAFKA;
    }
    memcpy(&f->target, res->ai_addr, res->ai_addrlen);
    f->target_len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static int fwd_start(fwd *f, int port, const char *bootstraps, char *err, size_t errlen) {
    int rc = fwd_target(f, bootstraps, err, errlen);
    if (!rc) rc = fwd_listen(f, port, err, errlen);
    if (rc) return rc;
    f->stop_fd = eventfd(0, EFD_CLOEXEC);
    if (f->stop_fd < 0) {
        sluice_errf(err, errlen, "eventfd: %s", strerror(errno));
        return SLUICE_EIO;
    }
    if (sluice_thread_start(&f->thread, fwd_main, f) != 0) {
        sluice_errf(err, errlen, "cannot start the forwarder thread");
        return SLUICE_EIO;
    }
    f->running = 1;
    return 0;
}

static void fwd_stop(fwd *f) {
    if (f->running) {
        uint64_t one = 1;
        while (write(f->stop_fd, &one, sizeof one) < 0 && errno == EINTR) {}
        pthread_join(f->thread, NULL);
        f->running = 0;
    }
    while (f->conns) {
        fwd_conn *c = f->conns;
        f->conns = c->next;
        fwd_conn_close(c);
    }
    if (f->listen_fd >= 0) close(f->listen_fd);
    if (f->stop_fd >= 0) close(f->stop_fd);
    f->listen_fd = f->stop_fd = -1;
}

/* The broker's own rd_kafka_t only carries librdkafka's log lines. */
static int broker_serve(void *ud, int budget) {
    (void)budget;
    sluice_broker *b = ud;
    rd_kafka_poll(b->rk, 0);
    return 0;
}

int sluice_broker_new(sluice_loop *loop, const sluice_broker_config *cfg,
                      sluice_broker **out, char *err, size_t errlen) {
    static const sluice_broker_config defaults = { 0, 0, 0 };
    *out = NULL;
    if (!loop) {
        sluice_errf(err, errlen, "broker: loop is required");
        return SLUICE_EINVAL;
    }
    if (!cfg) cfg = &defaults;
    if (cfg->brokers < 0 || cfg->partitions < 0 || cfg->port < -1 || cfg->port > 65535) {
        sluice_errf(err, errlen, "broker: bad configuration");
        return SLUICE_EINVAL;
    }
    sluice_broker *b = calloc(1, sizeof *b);
    if (!b) return SLUICE_ENOMEM;
    b->brokers = cfg->brokers ? cfg->brokers : 1;
    b->partitions = cfg->partitions ? cfg->partitions : 4;
    b->kq.efd = -1;
    b->fwd.listen_fd = b->fwd.stop_fd = -1;

    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    int rc = sluice_kafka_conf_log(conf, err, errlen);
    if (!rc) rc = sluice_kafka_conf_apply(conf, (const char *const[]){
                       "client.id", "sluice-embedded-broker",
                       /* Not "no bootstrap.servers" notices: this handle never connects. */
                       "log_level", "4", NULL }, err, errlen);
    b->rk = sluice_kafka_open(RD_KAFKA_PRODUCER, conf, &b->kq, loop, broker_serve, b,
                              &rc, err, errlen);
    if (!b->rk) goto fail;
    b->main_queue = b->kq.queue;

    {
        /* The mock cluster's own thread must not take process signals
         * either (see sluice_thread_start). */
        sigset_t all, previous;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &previous);
        b->mock = rd_kafka_mock_cluster_new(b->rk, b->brokers);
        pthread_sigmask(SIG_SETMASK, &previous, NULL);
    }
    if (!b->mock) {
        sluice_errf(err, errlen, "cannot start the embedded Kafka broker");
        rc = SLUICE_EKAFKA;
        goto fail;
    }
    snprintf(b->direct, sizeof b->direct, "%s", rd_kafka_mock_cluster_bootstraps(b->mock));
    mock_listeners_nodelay(b->direct);
    if (cfg->port >= 0) {
        rc = fwd_start(&b->fwd, cfg->port, b->direct, err, errlen);
        if (rc) goto fail;
        snprintf(b->bootstrap, sizeof b->bootstrap, "127.0.0.1:%d", listen_port(b->fwd.listen_fd));
    } else {
        snprintf(b->bootstrap, sizeof b->bootstrap, "%s", b->direct);
    }
    sluice_loop_log(loop, SLUICE_LOG_INFO,
                    "embedded Kafka broker at %s (in-memory: its data is lost when the process exits)",
                    b->bootstrap);
    if (b->partitions != 4)
        sluice_loop_log(loop, SLUICE_LOG_WARN,
                        "embedded Kafka broker: topics created on first use get 4 partitions "
                        "(fixed by librdkafka's mock); %d only for topics created explicitly",
                        b->partitions);
    *out = b;
    return 0;

fail:
    sluice_broker_free(b);
    return rc;
}

const char *sluice_broker_bootstrap(const sluice_broker *b) {
    return b ? b->bootstrap : NULL;
}

const char *sluice_broker_direct_bootstrap(const sluice_broker *b) {
    return b ? b->direct : NULL;
}

int sluice_broker_create_topic(sluice_broker *b, const char *topic, int partitions,
                               char *err, size_t errlen) {
    if (!b || !topic || !*topic || partitions < 0) {
        sluice_errf(err, errlen, "create_topic: broker and topic name are required");
        return SLUICE_EINVAL;
    }
    int replicas = b->brokers < 3 ? b->brokers : 3;
    rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(
        b->mock, topic, partitions ? partitions : b->partitions, replicas);
    if (e) {
        return sluice_kafka_fail(e, err, errlen);
    }
    return 0;
}

void *sluice_broker_mock_cluster(sluice_broker *b) {
    return b ? b->mock : NULL;
}

void sluice_broker_free(sluice_broker *b) {
    if (!b) return;
    fwd_stop(&b->fwd);
    if (b->mock) rd_kafka_mock_cluster_destroy(b->mock);
    sluice_kq_close(&b->kq);
    if (b->main_queue) rd_kafka_queue_destroy(b->main_queue);
    if (b->rk) rd_kafka_destroy(b->rk);
    free(b);
}

/* ---- fault injection ---------------------------------------------------- */

int sluice_broker_count(const sluice_broker *b) {
    return b ? b->brokers : 0;
}

static int check_broker_id(const sluice_broker *b, int id, char *err, size_t errlen) {
    if (!b || !b->mock) {
        sluice_errf(err, errlen, "broker is closed");
        return SLUICE_EINVAL;
    }
    if (id < 1 || id > b->brokers) {
        sluice_errf(err, errlen, "no broker %d (ids run from 1 to %d)", id, b->brokers);
        return SLUICE_EINVAL;
    }
    return 0;
}

static int mock_result(rd_kafka_resp_err_t e, char *err, size_t errlen) {
    if (!e) return 0;
    return sluice_kafka_fail(e, err, errlen);
}

int sluice_broker_set_down(sluice_broker *b, int broker_id, char *err, size_t errlen) {
    int rc = check_broker_id(b, broker_id, err, errlen);
    if (rc) return rc;
    sluice_loop_log(b->kq.loop, SLUICE_LOG_INFO, "embedded Kafka broker %d: down (fault injected)", broker_id);
    return mock_result(rd_kafka_mock_broker_set_down(b->mock, broker_id), err, errlen);
}

int sluice_broker_set_up(sluice_broker *b, int broker_id, char *err, size_t errlen) {
    int rc = check_broker_id(b, broker_id, err, errlen);
    if (rc) return rc;
    sluice_loop_log(b->kq.loop, SLUICE_LOG_INFO, "embedded Kafka broker %d: up", broker_id);
    return mock_result(rd_kafka_mock_broker_set_up(b->mock, broker_id), err, errlen);
}

int sluice_broker_set_rtt(sluice_broker *b, int broker_id, int rtt_ms, char *err, size_t errlen) {
    int rc = check_broker_id(b, broker_id, err, errlen);
    if (rc) return rc;
    if (rtt_ms < 0) {
        sluice_errf(err, errlen, "rtt must be >= 0 ms, got %d", rtt_ms);
        return SLUICE_EINVAL;
    }
    return mock_result(rd_kafka_mock_broker_set_rtt(b->mock, broker_id, rtt_ms), err, errlen);
}

int sluice_broker_push_errors(sluice_broker *b, int api_key, size_t n, const int *errors,
                              char *err, size_t errlen) {
    if (!b || !b->mock) {
        sluice_errf(err, errlen, "broker is closed");
        return SLUICE_EINVAL;
    }
    if (api_key < 0 || api_key > INT16_MAX || (n && !errors)) {
        sluice_errf(err, errlen, "bad API key %d", api_key);
        return SLUICE_EINVAL;
    }
    if (n == 0) {
        rd_kafka_mock_clear_request_errors(b->mock, (int16_t)api_key);
        return 0;
    }
    rd_kafka_resp_err_t *codes = malloc(n * sizeof *codes);
    if (!codes) return SLUICE_ENOMEM;
    for (size_t i = 0; i < n; i++) codes[i] = (rd_kafka_resp_err_t)errors[i];
    rd_kafka_mock_push_request_errors_array(b->mock, (int16_t)api_key, n, codes);
    free(codes);
    return 0;
}

int sluice_broker_set_leader(sluice_broker *b, const char *topic, int partition,
                             int broker_id, char *err, size_t errlen) {
    if (broker_id != -1) {
        int rc = check_broker_id(b, broker_id, err, errlen);
        if (rc) return rc;
    } else if (!b || !b->mock) {
        sluice_errf(err, errlen, "broker is closed");
        return SLUICE_EINVAL;
    }
    if (!topic || !*topic || partition < 0) {
        sluice_errf(err, errlen, "set_leader: a topic and a partition >= 0 are required");
        return SLUICE_EINVAL;
    }
    sluice_loop_log(b->kq.loop, SLUICE_LOG_INFO, "embedded Kafka broker: leader of %s [%d] is now %d",
                    topic, partition, broker_id);
    return mock_result(rd_kafka_mock_partition_set_leader(b->mock, topic, partition, broker_id),
                       err, errlen);
}

int sluice_broker_error_code(const char *name, int *code) {
    const struct rd_kafka_err_desc *descs;
    size_t n;
    if (!name || !*name) return 0;
    rd_kafka_get_err_descs(&descs, &n);
    for (size_t i = 0; i < n; i++) {
        const char *d = descs[i].name;
        if (!d) continue;
        /* Local errors are named "_NAME"; accept them without the "_" too. */
        if (strcmp(d, name) == 0 || (d[0] == '_' && strcmp(d + 1, name) == 0)) {
            *code = descs[i].code;
            return 1;
        }
    }
    return 0;
}
