/* The server end to end: the input is sent as is, over loopback TCP, to a
 * real sluice server (libwebsockets' parser plus ours: header and query
 * copies, HTTP bodies, message reassembly and its limits, the handshake
 * checks). The server must survive every input and still answer. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sluice/ws.h"

static sluice_loop *loop;
static sluice_server *server;

static void on_message(void *ud, sluice_conn *c, const char *data, size_t len, int binary)
{
    (void)ud;
    /* Touch every byte and every field, then echo. */
    unsigned sum = 0;
    for (size_t i = 0; i < len; i++)
        sum += (unsigned char)data[i];
    (void)sum;
    (void)sluice_conn_path(c);
    (void)sluice_conn_query(c);
    sluice_conn_send(c, data, len, binary);
}

static void count_header(void *ud, const char *name, const char *value)
{
    *(size_t *)ud += strlen(name) + strlen(value);
}

static void on_open(void *ud, sluice_conn *c)
{
    size_t n = 0;
    (void)ud;
    sluice_conn_headers(c, count_header, &n);
}

static int ws_accept(void *ud, const char *path)
{
    (void)ud;
    return !strcmp(path, "/echo");
}

/* The door: reads a custom header and every offered subprotocol, selects
 * the last one offered (a choice lws must then find), refuses with a
 * header when x-deny is sent. */
static int ws_upgrade(void *ud, sluice_upgrade *u)
{
    (void)ud;
    size_t n = 0, count = sluice_upgrade_protocol_count(u);
    sluice_upgrade_headers(u, count_header, &n);
    for (size_t i = 0; i < count; i++)
        if (!sluice_upgrade_protocol(u, i) || !*sluice_upgrade_protocol(u, i))
            abort();            /* a listed name is never NULL or empty */
    char *deny = sluice_upgrade_header(u, "x-deny");
    int status = 0;
    if (deny) {
        const char *extra[] = { "x-why", deny, NULL };
        sluice_upgrade_refuse(u, deny, extra);
        status = 403;
    } else if (count && sluice_upgrade_select(u, sluice_upgrade_protocol(u, count - 1))) {
        abort();                /* an offered name is always selectable */
    }
    free(deny);
    return status;
}

static int http_match(void *ud, const char *method, const char *path)
{
    (void)ud;
    (void)method;
    return !strncmp(path, "/h", 2);
}

static void http_request(void *ud, sluice_http_req *r)
{
    size_t n = 0, blen = 0;
    (void)ud;
    sluice_http_headers(r, count_header, &n);
    const char *body = sluice_http_body(r, &blen);
    char reply[256];
    int len = snprintf(reply, sizeof reply, "%s %s?%s headers=%zu body=%zu %.16s",
                       sluice_http_method(r), sluice_http_path(r), sluice_http_query(r),
                       n, blen, body);
    if (len < 0)
        len = 0;
    if ((size_t)len >= sizeof reply)
        len = sizeof reply - 1;
    const char *extra[] = { "x-fuzz", "1", NULL };
    sluice_http_respond(r, 200, "text/plain", reply, (size_t)len, extra);
}

static void setup(void)
{
    sluice_loop_config lc = { 0 };
    char err[256];
    if (sluice_loop_new(&lc, &loop, err, sizeof err))
        abort();
    sluice_server_config cfg = { 0 };
    cfg.host = "127.0.0.1";
    cfg.max_message = 2048;      /* small, so the limits are reachable */
    cfg.max_body = 2048;
    cfg.handshake_timeout_s = 1;
    sluice_server_handlers h = { 0 };
    h.ws.open = on_open;
    h.ws.message = on_message;
    h.ws_accept = ws_accept;
    h.ws_upgrade = ws_upgrade;
    h.http_match = http_match;
    h.http_request = http_request;
    if (sluice_server_new(loop, &cfg, &h, NULL, &server, err, sizeof err))
        abort();
}

static int dial(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = { 0 };
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)sluice_server_port(server));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa))
        abort();
    return fd;
}

/* Services the loop until the server has closed fd's peer (read gives 0)
 * or a bounded number of rounds passed. */
static void pump(int fd, int rounds)
{
    char buf[4096];
    for (int i = 0; i < rounds; i++) {
        sluice_loop_run_once(loop, 1);
        ssize_t n;
        while ((n = recv(fd, buf, sizeof buf, MSG_DONTWAIT)) > 0)
            ;
        if (n == 0)
            return;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!loop)
        setup();
    if (size > 65536)
        return 0;
    int fd = dial();
    size_t off = 0;
    while (off < size) {
        ssize_t n = send(fd, data + off, size - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0)
            off += (size_t)n;
        else
            pump(fd, 1);
    }
    shutdown(fd, SHUT_WR);       /* then the server sees the end */
    pump(fd, 50);
    close(fd);
    /* Still serving: a plain request gets its answer. */
    static unsigned calls;
    if (++calls % 64 == 0) {
        static const char req[] = "GET /h/ok HTTP/1.1\r\nHost: x\r\n\r\n";
        fd = dial();
        if (send(fd, req, sizeof req - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof req - 1))
            abort();
        char buf[512];
        ssize_t n = 0;
        for (int i = 0; i < 200 && n <= 0; i++) {
            sluice_loop_run_once(loop, 5);
            n = recv(fd, buf, sizeof buf - 1, MSG_DONTWAIT);
        }
        if (n <= 0 || strncmp(buf, "HTTP/1.1 200", 12))
            abort();
        close(fd);
    }
    return 0;
}
