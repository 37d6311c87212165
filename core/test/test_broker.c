/* The embedded broker: ports, bootstrap strings, and real clients (a sluice
 * producer and kcat) talking to it over loopback TCP. */
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "kafka_support.h"
#include "sluice/broker.h"
#include "sluice/kafka.h"

static int info_lines_in_memory;

static void broker_test_log(void *ud, int level, const char *msg) {
    (void)ud;
    if (level == SLUICE_LOG_INFO && strstr(msg, "in-memory")) info_lines_in_memory++;
    if (level <= SLUICE_LOG_WARN) fprintf(stderr, "log %d: %s\n", level, msg);
}


static int port_bindable(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = bind(fd, (struct sockaddr *)&addr, sizeof addr) == 0;
    close(fd);
    return ok;
}

typedef struct delivery_seen {
    int count;
    int error;
    int64_t offset;
    void *opaque;
} delivery_seen;

static void on_delivery(void *ud, void *msg_opaque, const sluice_delivery *d) {
    delivery_seen *seen = ud;
    seen->count++;
    seen->error = d->error;
    seen->offset = d->offset;
    seen->opaque = msg_opaque;
}

/* Runs a shell command and returns its whole output (caller frees). */
static char *run_command(const char *cmd) {
    FILE *f = popen(cmd, "r");
    if (!f) return NULL;
    size_t cap = 65536, len = 0;
    char *out = malloc(cap);
    size_t n;
    while ((n = fread(out + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (len + 1 == cap) out = realloc(out, cap *= 2);
    }
    out[len] = '\0';
    pclose(f);
    return out;
}

static void test_ports(sluice_loop *loop) {
    char err[256] = "";
    sluice_broker *b = NULL;
    sluice_broker_config cfg = { 0, 0, 0 };

    int before = info_lines_in_memory;
    CHECK_EQ_INT(sluice_broker_new(loop, &cfg, &b, err, sizeof err), 0);
    CHECK(b != NULL);
    if (!b) return;
    CHECK_EQ_INT(info_lines_in_memory, before + 1);
    const char *bs = sluice_broker_bootstrap(b);
    CHECK(strncmp(bs, "127.0.0.1:", 10) == 0);
    CHECK(atoi(bs + 10) > 0);
    CHECK(strlen(sluice_broker_direct_bootstrap(b)) > 0);
    CHECK(strcmp(bs, sluice_broker_direct_bootstrap(b)) != 0);
    CHECK(sluice_broker_mock_cluster(b) != NULL);
    sluice_broker_free(b);

    /* A chosen port is reported as is, held, and released by free. */
    int port = unused_port();
    cfg.port = port;
    b = NULL;
    CHECK_EQ_INT(sluice_broker_new(loop, &cfg, &b, err, sizeof err), 0);
    char want[64];
    snprintf(want, sizeof want, "127.0.0.1:%d", port);
    CHECK_EQ_STR(sluice_broker_bootstrap(b), want);

    sluice_broker *second = NULL;
    err[0] = '\0';
    CHECK_EQ_INT(sluice_broker_new(loop, &cfg, &second, err, sizeof err), SLUICE_EADDRINUSE);
    CHECK(second == NULL);
    snprintf(want, sizeof want, "the embedded Kafka broker's port %d is in use", port);
    CHECK_EQ_STR(err, want);
    CHECK(!port_bindable(port));
    sluice_broker_free(b);
    CHECK(port_bindable(port));

    /* No forwarder: the mock's own list. */
    cfg.port = -1;
    b = NULL;
    CHECK_EQ_INT(sluice_broker_new(loop, &cfg, &b, err, sizeof err), 0);
    if (b) CHECK_EQ_STR(sluice_broker_bootstrap(b), sluice_broker_direct_bootstrap(b));
    sluice_broker_free(b);
}

/* This process's end of a loopback TCP connection whose other end is
 * bound to peer_port, or -1. */
static int fd_with_peer_port(int peer_port) {
    DIR *dir = opendir("/proc/self/fd");
    int found = -1;
    struct dirent *e;
    while (dir && found < 0 && (e = readdir(dir))) {
        int fd = atoi(e->d_name);
        struct sockaddr_in addr;
        socklen_t len = sizeof addr;
        if (fd > 2 && getpeername(fd, (struct sockaddr *)&addr, &len) == 0 &&
            addr.sin_family == AF_INET && ntohs(addr.sin_port) == peer_port)
            found = fd;
    }
    if (dir) closedir(dir);
    return found;
}

/* The mock's side of a client's connection has Nagle off: with it on, a
 * pipelining client (a producer) waited for its own delayed ACK, 40 ms,
 * before some of its answers. */
static void test_mock_nodelay(sluice_loop *loop) {
    char err[256] = "";
    sluice_broker *b = NULL;
    sluice_broker_config cfg = { .port = -1 };
    CHECK_EQ_INT(sluice_broker_new(loop, &cfg, &b, err, sizeof err), 0);
    if (!b) return;
    const char *direct = sluice_broker_direct_bootstrap(b);
    const char *colon = strchr(direct, ':');
    CHECK(colon != NULL);
    int client = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1)) };
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_EQ_INT(connect(client, (struct sockaddr *)&to, sizeof to), 0);
    struct sockaddr_in me;
    socklen_t len = sizeof me;
    getsockname(client, (struct sockaddr *)&me, &len);
    /* The mock's thread accepts on its own time: wait for its socket. */
    int accepted = -1;
    for (int i = 0; i < 500 && accepted < 0; i++) {
        accepted = fd_with_peer_port(ntohs(me.sin_port));
        if (accepted < 0) nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
    }
    CHECK(accepted >= 0);
    int nodelay = 0;
    len = sizeof nodelay;
    if (accepted >= 0)
        CHECK_EQ_INT(getsockopt(accepted, IPPROTO_TCP, TCP_NODELAY, &nodelay, &len), 0);
    CHECK_EQ_INT(nodelay, 1);
    close(client);
    sluice_broker_free(b);
}

static void test_clients(sluice_loop *loop) {
    char err[256] = "";
    sluice_broker *b = NULL;
    sluice_broker_config cfg = { 0, 0, 0 };
    CHECK_EQ_INT(sluice_broker_new(loop, &cfg, &b, err, sizeof err), 0);
    if (!b) return;
    const char *bs = sluice_broker_bootstrap(b);

    CHECK_EQ_INT(sluice_broker_create_topic(b, "seven", 7, err, sizeof err), 0);
    CHECK_EQ_INT(sluice_broker_create_topic(b, "seven", 7, err, sizeof err), SLUICE_EKAFKA);
    CHECK(strstr(err, "TOPIC_ALREADY_EXISTS") != NULL);

    /* A producer bootstrapped through the stable (forwarded) port. */
    delivery_seen seen = { 0, -1, -1, NULL };
    const char *props[] = { "bootstrap.servers", bs, NULL };
    sluice_producer_config pcfg = { .props = props, .on_delivery = on_delivery, .ud = &seen };
    sluice_producer *p = NULL;
    CHECK_EQ_INT(sluice_producer_new(loop, &pcfg, &p, err, sizeof err), 0);
    if (!p) { sluice_broker_free(b); return; }
    sluice_message m = { .topic = "greetings", .key = "k", .key_len = 1,
                         .value = "hello-from-sluice", .value_len = 17, .partition = -1 };
    int tag = 42;
    CHECK_EQ_INT(sluice_producer_send(p, &m, &tag, err, sizeof err), 0);
    uint64_t deadline = sluice_now_ms() + 10000;
    while (seen.count == 0 && sluice_now_ms() < deadline)
        sluice_loop_run_once(loop, 100);
    CHECK_EQ_INT(seen.count, 1);
    CHECK_EQ_INT(seen.error, 0);
    CHECK(seen.offset >= 0);
    CHECK(seen.opaque == &tag);

    /* kcat, an independent client, while this thread only waits: the mock
     * and the forwarder run on their own threads. */
    if (access("/usr/bin/kcat", X_OK) == 0) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "timeout 20 kcat -b %s -L 2>&1", bs);
        char *out = run_command(cmd);
        CHECK(out && strstr(out, "1 brokers:"));
        CHECK(out && strstr(out, "topic \"greetings\" with 4 partitions"));
        CHECK(out && strstr(out, "topic \"seven\" with 7 partitions"));
        if (check_failed) fprintf(stderr, "kcat -L said:\n%s\n", out ? out : "(nothing)");
        free(out);

        snprintf(cmd, sizeof cmd,
                 "timeout 20 kcat -b %s -C -t greetings -o beginning -e -q -f '%%k=%%s\\n' 2>&1", bs);
        out = run_command(cmd);
        CHECK(out && strstr(out, "k=hello-from-sluice"));
        if (!out || !strstr(out, "k=hello-from-sluice"))
            fprintf(stderr, "kcat -C said:\n%s\n", out ? out : "(nothing)");
        free(out);
    } else {
        fprintf(stderr, "kcat not installed: skipping the independent-client checks\n");
    }

    CHECK_EQ_INT(sluice_producer_flush(p, 5000), 0);
    sluice_producer_free(p);
    CHECK_EQ_INT(seen.count, 1);
    sluice_broker_free(b);
}

int main(void) {
    sluice_loop *loop = NULL;
    char err[256];
    sluice_loop_config lcfg = { .log = broker_test_log, .log_level = SLUICE_LOG_INFO };
    if (sluice_loop_new(&lcfg, &loop, err, sizeof err) != 0) {
        fprintf(stderr, "loop: %s\n", err);
        return 1;
    }
    test_ports(loop);
    test_mock_nodelay(loop);
    test_clients(loop);
    sluice_loop_free(loop);
    return check_summary("test_broker");
}
