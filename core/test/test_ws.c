/* WebSocket and HTTP: the sluice client against the sluice server on an
 * ephemeral port, all in this process, driven by run_once. */
#include "check.h"
#include "sluice/ws.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers -------------------------------------------------------------- */

#define WAIT_UNTIL(loop, cond, ms) do { \
    uint64_t wait_end_ = sluice_now_ms() + (ms); \
    while (!(cond) && sluice_now_ms() < wait_end_) \
        sluice_loop_run_once((loop), 20); \
} while (0)

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f) { perror(path); exit(1); }
    fputs(text, f);
    fclose(f);
}

/* A raw HTTP/1.1 exchange (an independent client): returns bytes read. */
static size_t http_exchange(sluice_loop *loop, int port, const char *request,
                            char *out, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa)) { close(fd); return 0; }
    fcntl(fd, F_SETFL, O_NONBLOCK);
    size_t len = strlen(request), sent = 0, got = 0;
    uint64_t end = sluice_now_ms() + 5000;
    while (sluice_now_ms() < end) {
        if (sent < len) {
            ssize_t n = send(fd, request + sent, len - sent, MSG_NOSIGNAL);
            if (n > 0) sent += (size_t)n;
        }
        sluice_loop_run_once(loop, 10);
        ssize_t n = recv(fd, out + got, cap - 1 - got, 0);
        if (n == 0) break;                         /* server closed */
        if (n > 0) {
            got += (size_t)n;
            out[got] = '\0';
            /* Complete once the body announced by content-length is in. */
            char *hend = strstr(out, "\r\n\r\n");
            char *cl = strcasestr(out, "content-length:");
            if (hend && cl && cl < hend &&
                got >= (size_t)(hend + 4 - out) + (size_t)atol(cl + 15))
                break;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
            break;
        }
    }
    out[got] = '\0';
    close(fd);
    return got;
}

/* ---- server side ------------------------------------------------------------ */

struct server_state {
    sluice_loop *loop;
    int opens, closes, last_close_code, messages;
    size_t last_len;
    char last_path[64], last_query[64], host_header[64];
    sluice_conn *last_conn;
    sluice_http_req *later;        /* answered from a timer */
    int aborts;
    sluice_server *free_on_message; /* frees its own server from a handler */
};

static void header_grab(void *ud, const char *name, const char *value)
{
    if (!strcmp(name, "host"))
        snprintf(ud, 64, "%s", value);
}

static void srv_open(void *ud, sluice_conn *c)
{
    struct server_state *s = ud;
    s->opens++;
    s->last_conn = c;
    snprintf(s->last_path, sizeof s->last_path, "%s", sluice_conn_path(c));
    snprintf(s->last_query, sizeof s->last_query, "%s", sluice_conn_query(c));
    sluice_conn_headers(c, header_grab, s->host_header);
}

static void srv_message(void *ud, sluice_conn *c, const char *data, size_t len, int binary)
{
    struct server_state *s = ud;
    s->messages++;
    s->last_len = len;
    if (s->free_on_message) {
        sluice_server *srv = s->free_on_message;
        s->free_on_message = NULL;
        int closes = s->closes;
        sluice_server_free(srv);
        /* Close handlers ran before free returned, this one included. */
        CHECK_EQ_INT(s->closes, closes + 1);
        CHECK_EQ_INT(sluice_conn_send(c, "still here", 10, 0), SLUICE_ECLOSED);
        return;
    }
    if (!strcmp(sluice_conn_path(c), "/closer") && len == 3 && !memcmp(data, "bye", 3)) {
        sluice_conn_close(c, 4000, "bye");
        return;
    }
    sluice_conn_send(c, data, len, binary);
}

static void srv_close(void *ud, sluice_conn *c, int code, const char *reason)
{
    (void)reason;
    struct server_state *s = ud;
    s->closes++;
    s->last_close_code = code;
    if (s->last_conn == c)
        s->last_conn = NULL;
}

static int srv_accept(void *ud, const char *path)
{
    (void)ud;
    return !strcmp(path, "/echo") || !strcmp(path, "/closer");
}

static int srv_http_match(void *ud, const char *method, const char *path)
{
    (void)ud;
    return (!strcmp(method, "GET") && !strcmp(path, "/api/hello")) ||
           (!strcmp(method, "POST") && !strcmp(path, "/api/echo")) ||
           !strcmp(path, "/api/later");
}

static void srv_http_request(void *ud, sluice_http_req *r)
{
    struct server_state *s = ud;
    if (!strcmp(sluice_http_path(r), "/api/hello")) {
        static const char *const extra[] = { "x-sluice", "yes", NULL };
        char body[128];
        int n = snprintf(body, sizeof body, "hello world q=%s", sluice_http_query(r));
        sluice_http_respond(r, 200, "text/plain", body, (size_t)n, extra);
    } else if (!strcmp(sluice_http_path(r), "/api/echo")) {
        size_t len;
        const char *body = sluice_http_body(r, &len);
        sluice_http_respond(r, 201, "application/json", body, len, NULL);
    } else {
        s->later = r;              /* answered later, outside this callback */
    }
}

static void srv_http_abort(void *ud, sluice_http_req *r)
{
    struct server_state *s = ud;
    if (s->later == r)
        s->later = NULL;
    s->aborts++;
}

/* ---- client side -------------------------------------------------------------- */

struct client_state {
    int opened, closed, close_code, messages, last_binary;
    char close_reason[128];
    char *last;
    size_t last_len;
};

static void cli_open(void *ud, sluice_conn *c)
{
    (void)c;
    ((struct client_state *)ud)->opened++;
}

static void cli_message(void *ud, sluice_conn *c, const char *data, size_t len, int binary)
{
    (void)c;
    struct client_state *s = ud;
    s->messages++;
    free(s->last);
    s->last = malloc(len + 1);
    memcpy(s->last, data, len);
    s->last[len] = '\0';
    s->last_len = len;
    s->last_binary = binary;
}

static void cli_close(void *ud, sluice_conn *c, int code, const char *reason)
{
    (void)c;
    struct client_state *s = ud;
    s->closed++;
    s->close_code = code;
    snprintf(s->close_reason, sizeof s->close_reason, "%s", reason ? reason : "");
}

static const sluice_conn_handlers client_handlers = { cli_open, cli_message, cli_close };

static sluice_conn *connect_to(sluice_loop *loop, int port, const char *path,
                               struct client_state *cs)
{
    char url[128];
    snprintf(url, sizeof url, "ws://127.0.0.1:%d%s", port, path);
    memset(cs, 0, sizeof *cs);
    sluice_conn *c = NULL;
    char err[256] = "";
    int rc = sluice_client_connect(loop, url, NULL, &client_handlers, cs, &c, err, sizeof err);
    CHECK_EQ_INT(rc, SLUICE_OK);
    if (rc)
        fprintf(stderr, "connect %s: %s\n", url, err);
    return c;
}

/* ---- tests ----------------------------------------------------------------------- */

static void test_echo(sluice_loop *loop, int port, struct server_state *ss)
{
    struct client_state cs;
    sluice_conn *c = connect_to(loop, port, "/echo?x=1&y=2", &cs);
    CHECK(sluice_conn_is_client(c));
    CHECK(!sluice_conn_is_open(c));
    /* Queued before the handshake: sent once open. */
    CHECK_EQ_INT(sluice_conn_send(c, "early", 5, 0), SLUICE_OK);
    WAIT_UNTIL(loop, cs.opened && cs.messages, 3000);
    CHECK_EQ_INT(cs.opened, 1);
    CHECK(sluice_conn_is_open(c));
    CHECK_EQ_STR(ss->last_path, "/echo");
    CHECK_EQ_STR(ss->last_query, "x=1&y=2");
    char expect_host[64];
    snprintf(expect_host, sizeof expect_host, "127.0.0.1:%d", port);
    CHECK_EQ_STR(ss->host_header, expect_host);
    CHECK_EQ_STR(cs.last, "early");
    CHECK(ss->last_conn && sluice_conn_id(ss->last_conn) != sluice_conn_id(c));
    CHECK_EQ_STR(sluice_conn_peer(ss->last_conn), "127.0.0.1");

    cs.messages = 0;
    CHECK_EQ_INT(sluice_conn_send(c, "hello", 5, 0), SLUICE_OK);
    WAIT_UNTIL(loop, cs.messages == 1, 3000);
    CHECK_EQ_STR(cs.last, "hello");
    CHECK_EQ_INT(cs.last_binary, 0);

    const char bin[5] = { 0, 1, 2, 0, 3 };
    CHECK_EQ_INT(sluice_conn_send(c, bin, sizeof bin, 1), SLUICE_OK);
    WAIT_UNTIL(loop, cs.messages == 2, 3000);
    CHECK_EQ_INT(cs.last_len, 5);
    CHECK_EQ_INT(cs.last_binary, 1);
    CHECK(cs.last && !memcmp(cs.last, bin, 5));

    /* 300 KB: one message at the server, one back at the client. */
    size_t big = 300 * 1024;
    char *payload = malloc(big);
    for (size_t i = 0; i < big; i++)
        payload[i] = (char)('a' + i % 26);
    int server_msgs = ss->messages;
    CHECK_EQ_INT(sluice_conn_send(c, payload, big, 0), SLUICE_OK);
    WAIT_UNTIL(loop, cs.messages == 3, 5000);
    CHECK_EQ_INT(ss->messages - server_msgs, 1);
    CHECK_EQ_INT(ss->last_len, big);
    CHECK_EQ_INT(cs.messages, 3);
    CHECK_EQ_INT(cs.last_len, big);
    CHECK(cs.last && !memcmp(cs.last, payload, big));
    free(payload);

    CHECK_EQ_INT(sluice_conn_close(c, 0, NULL), SLUICE_OK);
    CHECK_EQ_INT(sluice_conn_send(c, "x", 1, 0), SLUICE_ECLOSED);
    int closes = ss->closes;
    WAIT_UNTIL(loop, cs.closed && ss->closes > closes, 3000);
    CHECK_EQ_INT(cs.closed, 1);
    CHECK_EQ_INT(cs.close_code, 1000);
    CHECK_EQ_INT(ss->last_close_code, 1000);
    free(cs.last);
}

static void on_route(void *ud, const sluice_route_stats *r)
{
    sluice_route_stats *out = ud;
    if (strcmp(r->path, "/echo") == 0) *out = *r;
    out[1].opened++;   /* routes seen */
}

/* test_echo's traffic, as the route's counters saw it. */
static void test_echo_counted(sluice_server *srv)
{
    sluice_route_stats r[2];
    memset(r, 0, sizeof r);
    sluice_server_routes(srv, on_route, r);
    CHECK_EQ_INT(r[1].opened, 1);
    CHECK_EQ_INT(r[0].connections, 0);
    CHECK_EQ_INT(r[0].opened, 1);
    CHECK_EQ_INT(r[0].messages_in, 4);
    CHECK_EQ_INT(r[0].bytes_in, 5 + 5 + 5 + 300 * 1024);
    CHECK_EQ_INT(r[0].messages_out, 4);
    CHECK_EQ_INT(r[0].bytes_out, 5 + 5 + 5 + 300 * 1024);
    CHECK_EQ_INT(r[0].queued_bytes, 0);
}

static void test_too_big(sluice_loop *loop, int port, struct server_state *ss)
{
    struct client_state cs;
    sluice_conn *c = connect_to(loop, port, "/echo", &cs);
    WAIT_UNTIL(loop, cs.opened, 3000);
    size_t len = 600 * 1024;          /* server max_message is 512 KiB */
    char *payload = calloc(1, len);
    int msgs = ss->messages;
    CHECK_EQ_INT(sluice_conn_send(c, payload, len, 1), SLUICE_OK);
    free(payload);
    WAIT_UNTIL(loop, cs.closed, 5000);
    CHECK_EQ_INT(cs.close_code, 1009);
    CHECK_EQ_STR(cs.close_reason, "message too big");
    CHECK_EQ_INT(ss->messages, msgs);
    WAIT_UNTIL(loop, ss->last_close_code == 1009, 2000);
    CHECK_EQ_INT(ss->last_close_code, 1009);
    free(cs.last);
}

static void test_invalid_utf8(sluice_loop *loop, int port)
{
    struct client_state cs;
    sluice_conn *c = connect_to(loop, port, "/echo", &cs);
    WAIT_UNTIL(loop, cs.opened, 3000);
    sluice_conn_send(c, "\xff\xfe bad", 6, 0);
    WAIT_UNTIL(loop, cs.closed, 3000);
    CHECK_EQ_INT(cs.messages, 0);
    CHECK_EQ_INT(cs.close_code, 1007);
}

static void test_server_close(sluice_loop *loop, int port)
{
    struct client_state cs;
    sluice_conn *c = connect_to(loop, port, "/closer", &cs);
    WAIT_UNTIL(loop, cs.opened, 3000);
    sluice_conn_send(c, "bye", 3, 0);
    WAIT_UNTIL(loop, cs.closed, 3000);
    CHECK_EQ_INT(cs.close_code, 4000);
    CHECK_EQ_STR(cs.close_reason, "bye");
}

static void test_refused(sluice_loop *loop, int port)
{
    struct client_state cs;
    connect_to(loop, port, "/nope", &cs);
    WAIT_UNTIL(loop, cs.closed, 3000);
    CHECK_EQ_INT(cs.opened, 0);
    CHECK_EQ_INT(cs.closed, 1);
    CHECK_EQ_INT(cs.close_code, 1006);
    CHECK(cs.close_reason[0] != '\0');

    /* Nobody listening at all. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, (struct sockaddr *)&sa, sizeof sa);
    socklen_t sl = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    int dead_port = ntohs(sa.sin_port);
    close(fd);
    char url[64];
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/x", dead_port);
    memset(&cs, 0, sizeof cs);
    sluice_conn *c = NULL;
    int rc = sluice_client_connect(loop, url, NULL, &client_handlers, &cs, &c, NULL, 0);
    if (rc == SLUICE_OK) {
        WAIT_UNTIL(loop, cs.closed, 3000);
        CHECK_EQ_INT(cs.closed, 1);
        CHECK_EQ_INT(cs.close_code, 1006);
    } else {
        CHECK_EQ_INT(rc, SLUICE_ECONNECT);
    }
    CHECK_EQ_INT(sluice_client_connect(loop, "http://x/", NULL, &client_handlers, &cs,
                                       &c, NULL, 0), SLUICE_EINVAL);
}

static void test_http(sluice_loop *loop, int port, struct server_state *ss)
{
    char buf[8192];
    http_exchange(loop, port, "GET /api/hello?a=1 HTTP/1.1\r\nHost: x\r\n\r\n", buf, sizeof buf);
    CHECK(!strncmp(buf, "HTTP/1.1 200", 12));
    CHECK(strstr(buf, "\r\n\r\nhello world q=a=1") != NULL);
    CHECK(strcasestr(buf, "x-sluice: yes") != NULL);
    CHECK(strcasestr(buf, "content-type: text/plain") != NULL);
    /* lws decodes the query; sluice hands it on re-encoded, unambiguous. */
    http_exchange(loop, port, "GET /api/hello?a=1%26b&c=x+y HTTP/1.1\r\nHost: x\r\n\r\n",
                  buf, sizeof buf);
    CHECK(strstr(buf, "\r\n\r\nhello world q=a=1%26b&c=x%20y") != NULL);

    http_exchange(loop, port,
                  "POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\n\r\n{\"rows\":[1,2]}",
                  buf, sizeof buf);
    CHECK(!strncmp(buf, "HTTP/1.1 201 Created\r\n", 22));
    CHECK(strstr(buf, "\r\n\r\n{\"rows\":[1,2]") != NULL);

    /* Body over max_body (64 KiB here): 413. */
    size_t big = 100 * 1024;
    char *req = malloc(big + 256);
    int n = snprintf(req, 256, "POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n", big);
    memset(req + n, 'x', big);
    req[n + big] = '\0';
    http_exchange(loop, port, req, buf, sizeof buf);
    CHECK(!strncmp(buf, "HTTP/1.1 413 Content Too Large\r\n", 32));
    CHECK(strcasestr(buf, "content-type: application/json\r\n") != NULL);
    CHECK(strstr(buf, "\r\n\r\n{\"status\":413,\"error\":\"request body larger than max_body\"}") != NULL);
    free(req);

    /* Answered later, from outside the request callback, after lws's own
     * 5 s content timeout would have struck. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    const char *get_later = "GET /api/later HTTP/1.1\r\nHost: x\r\n\r\n";
    CHECK(send(fd, get_later, strlen(get_later), 0) == (ssize_t)strlen(get_later));
    WAIT_UNTIL(loop, ss->later != NULL, 2000);
    CHECK(ss->later != NULL);
    uint64_t until = sluice_now_ms() + 5500;
    while (sluice_now_ms() < until)
        sluice_loop_run_once(loop, 100);
    CHECK(ss->later != NULL);
    CHECK_EQ_INT(ss->aborts, 0);
    if (ss->later) {
        sluice_http_respond(ss->later, 200, "text/plain", "later", 5, NULL);
        ss->later = NULL;
    }
    fcntl(fd, F_SETFL, O_NONBLOCK);
    size_t got = 0;
    buf[0] = '\0';
    uint64_t end = sluice_now_ms() + 2000;
    while (sluice_now_ms() < end && !strstr(buf, "\r\n\r\nlater")) {
        sluice_loop_run_once(loop, 10);
        ssize_t r = recv(fd, buf + got, sizeof buf - 1 - got, 0);
        if (r > 0) got += (size_t)r;
        buf[got] = '\0';
    }
    CHECK(strstr(buf, "\r\n\r\nlater") != NULL);
    close(fd);

    /* The client leaves before the answer; answering anyway is harmless
     * (lws only notices the departure when it writes). */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    CHECK(send(fd, get_later, strlen(get_later), 0) == (ssize_t)strlen(get_later));
    WAIT_UNTIL(loop, ss->later != NULL, 2000);
    close(fd);
    sluice_loop_run_once(loop, 50);
    if (ss->later) {
        sluice_http_respond(ss->later, 200, "text/plain", "nobody", 6, NULL);
        ss->later = NULL;
    }
    for (int i = 0; i < 5; i++)
        sluice_loop_run_once(loop, 20);
}

static void test_static(sluice_loop *loop, int port)
{
    char buf[8192];
    http_exchange(loop, port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", buf, sizeof buf);
    CHECK(!strncmp(buf, "HTTP/1.1 200", 12));
    CHECK(strstr(buf, "<h1>movies</h1>") != NULL);
    CHECK(strcasestr(buf, "content-type: text/html") != NULL);

    http_exchange(loop, port, "GET /app.js HTTP/1.1\r\nHost: x\r\n\r\n", buf, sizeof buf);
    CHECK(!strncmp(buf, "HTTP/1.1 200", 12));
    CHECK(strcasestr(buf, "content-type: application/javascript") != NULL);
    CHECK(strstr(buf, "console.log(1)") != NULL);

    http_exchange(loop, port, "GET /../secret.txt HTTP/1.1\r\nHost: x\r\n\r\n", buf, sizeof buf);
    CHECK(strncmp(buf, "HTTP/1.1 200", 12) != 0);
    CHECK(strstr(buf, "TOPSECRET") == NULL);
    http_exchange(loop, port, "GET /%2e%2e/secret.txt HTTP/1.1\r\nHost: x\r\n\r\n", buf, sizeof buf);
    CHECK(strstr(buf, "TOPSECRET") == NULL);

    http_exchange(loop, port, "GET /missing.html HTTP/1.1\r\nHost: x\r\n\r\n", buf, sizeof buf);
    CHECK(!strncmp(buf, "HTTP/1.1 404", 12));
}

static void test_port_in_use(sluice_loop *loop, int port)
{
    sluice_server_config cfg = { .port = port };
    sluice_server_handlers h = { 0 };
    sluice_server *s2 = NULL;
    char err[256] = "", expect[64];
    CHECK_EQ_INT(sluice_server_new(loop, &cfg, &h, NULL, &s2, err, sizeof err), SLUICE_EADDRINUSE);
    snprintf(expect, sizeof expect, "the HTTP and WebSocket port %d is in use", port);
    CHECK_EQ_STR(err, expect);
    CHECK(s2 == NULL);
}

static void test_idle(sluice_loop *loop)
{
    uint64_t start = sluice_now_ms();
    sluice_loop_run_once(loop, 200);
    uint64_t took = sluice_now_ms() - start;
    CHECK(took >= 190 && took < 400);
}

/* A client that stops reading: the server's bounded queue closes it 1008. */
static void test_slow_reader(sluice_loop *loop, int port, struct server_state *ss)
{
    struct client_state cs;
    sluice_conn *c = connect_to(loop, port, "/echo", &cs);
    WAIT_UNTIL(loop, cs.opened && ss->last_conn, 3000);
    sluice_conn *sc = ss->last_conn;
    CHECK(sc != NULL);
    if (!sc)
        return;
    sluice_conn_pause_reading(c, 1);
    char chunk[16 * 1024];
    memset(chunk, 'z', sizeof chunk);
    int rc = SLUICE_OK;
    for (int i = 0; i < 4000 && rc == SLUICE_OK; i++) {
        rc = sluice_conn_send(sc, chunk, sizeof chunk, 1);
        sluice_loop_run_once(loop, 0);
    }
    CHECK_EQ_INT(rc, SLUICE_EFULL);
    CHECK_EQ_INT(sluice_conn_send(sc, "x", 1, 0), SLUICE_ECLOSED);
    sluice_conn_pause_reading(c, 0);
    WAIT_UNTIL(loop, cs.closed, 8000);
    CHECK_EQ_INT(cs.close_code, 1008);
    CHECK_EQ_STR(cs.close_reason, "send queue full");
    free(cs.last);
}

static void test_close_all_and_free(sluice_loop *loop, sluice_server *srv,
                                    struct server_state *ss, int port)
{
    struct client_state a, b;
    connect_to(loop, port, "/echo", &a);
    connect_to(loop, port, "/echo", &b);
    WAIT_UNTIL(loop, a.opened && b.opened && sluice_server_conn_count(srv) == 2, 3000);
    CHECK_EQ_INT(sluice_server_conn_count(srv), 2);
    sluice_server_close_all(srv, 1001, "going away");
    WAIT_UNTIL(loop, a.closed && b.closed, 3000);
    CHECK_EQ_INT(a.close_code, 1001);
    CHECK_EQ_STR(b.close_reason, "going away");
    WAIT_UNTIL(loop, sluice_server_conn_count(srv) == 0, 2000);
    CHECK_EQ_INT(sluice_server_conn_count(srv), 0);

    /* Free with a connection open: its close handler runs before return. */
    connect_to(loop, port, "/echo", &a);
    WAIT_UNTIL(loop, a.opened && sluice_server_conn_count(srv) == 1, 3000);
    int closes = ss->closes;
    sluice_server_free(srv);
    CHECK_EQ_INT(ss->closes, closes + 1);
    CHECK_EQ_INT(ss->last_close_code, 1006);
    WAIT_UNTIL(loop, a.closed, 8000);
    CHECK_EQ_INT(a.closed, 1);
}

/* A second server on the loop, with its own (zeroed) state. */
static sluice_server *server_of(sluice_loop *loop, const sluice_server_config *cfg,
                                const sluice_server_handlers *h, struct server_state *ss)
{
    sluice_server *srv = NULL;
    memset(ss, 0, sizeof *ss);
    CHECK_EQ_INT(sluice_server_new(loop, cfg, h, ss, &srv, NULL, 0), SLUICE_OK);
    return srv;
}

/* max_connections, pausing a whole server, and freeing a server from
 * inside one of its own handlers. */
static void test_limits_and_self_free(sluice_loop *loop, const sluice_server_handlers *h)
{
    struct server_state ss;
    sluice_server_config cfg = { .host = "127.0.0.1", .max_connections = 1 };
    sluice_server *srv = server_of(loop, &cfg, h, &ss);
    if (!srv)
        return;
    int port = sluice_server_port(srv);
    struct client_state a, b;
    sluice_conn *ca = connect_to(loop, port, "/echo", &a);
    WAIT_UNTIL(loop, a.opened, 3000);
    connect_to(loop, port, "/echo", &b);
    WAIT_UNTIL(loop, b.closed, 3000);
    CHECK_EQ_INT(b.opened, 0);
    CHECK_EQ_INT(b.close_code, 1006);
    CHECK_EQ_INT(sluice_server_conn_count(srv), 1);

    /* Paused: nothing is read; resumed: the message arrives. */
    sluice_server_pause_reading(srv, 1);
    sluice_conn_send(ca, "p", 1, 0);
    for (int i = 0; i < 10; i++)
        sluice_loop_run_once(loop, 10);
    CHECK_EQ_INT(ss.messages, 0);
    sluice_server_pause_reading(srv, 0);
    WAIT_UNTIL(loop, a.messages == 1, 2000);
    CHECK_EQ_INT(ss.messages, 1);
    CHECK_EQ_STR(a.last, "p");

    /* stop_listening: new connections fail, existing ones keep working. */
    sluice_server_stop_listening(srv);
    struct client_state d;
    connect_to(loop, port, "/echo", &d);
    WAIT_UNTIL(loop, d.closed, 3000);
    CHECK_EQ_INT(d.close_code, 1006);

    ss.free_on_message = srv;
    sluice_conn_send(ca, "free", 4, 0);
    WAIT_UNTIL(loop, a.closed, 8000);
    CHECK_EQ_INT(ss.closes, 1);
    CHECK_EQ_INT(ss.last_close_code, 1006);
    CHECK_EQ_INT(a.closed, 1);
    free(a.last);
}

/* idle_timeout_s: a peer that answers pings stays; one that does not is
 * hung up on. */
static void test_idle_timeout(sluice_loop *loop, const sluice_server_handlers *h)
{
    struct server_state ss;
    sluice_server_config cfg = { .host = "127.0.0.1", .idle_timeout_s = 1 };
    sluice_server *srv = server_of(loop, &cfg, h, &ss);
    if (!srv)
        return;
    int port = sluice_server_port(srv);
    struct client_state good;
    connect_to(loop, port, "/echo", &good);

    /* A raw client: upgrades, then never reads or answers a ping. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    const char *upgrade = "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                          "Sec-WebSocket-Version: 13\r\n\r\n";
    CHECK(send(fd, upgrade, strlen(upgrade), 0) == (ssize_t)strlen(upgrade));
    WAIT_UNTIL(loop, ss.opens == 2, 3000);
    CHECK_EQ_INT(ss.opens, 2);
    uint64_t start = sluice_now_ms();
    WAIT_UNTIL(loop, ss.closes == 1, 6000);
    uint64_t took = sluice_now_ms() - start;
    CHECK_EQ_INT(ss.closes, 1);
    CHECK(took >= 900 && took < 5000);
    CHECK_EQ_INT(good.closed, 0);      /* pongs keep the lws client alive */
    close(fd);
    sluice_server_free(srv);
    WAIT_UNTIL(loop, good.closed, 3000);
    CHECK_EQ_INT(good.closed, 1);
}

/* ws_upgrade: what the door sees (custom headers, offered subprotocols)
 * and what it answers, over raw HTTP: a refusal with its status, reason
 * and headers; a selected subprotocol in the 101; an offer left without a
 * selection answered 400; the upgrade's id is the connection's. */
struct door_state {
    int calls, opens;
    uint64_t id, opened_id;
    char key[32], trace[32], host[64], protocols[128], query[64];
    int select_rc;
};

static int door_upgrade(void *ud, sluice_upgrade *u)
{
    struct door_state *d = ud;
    d->calls++;
    d->id = sluice_upgrade_id(u);
    char *key = sluice_upgrade_header(u, "X-Api-Key");   /* any case */
    char *trace = sluice_upgrade_header(u, "x-trace-id");
    char *host = sluice_upgrade_header(u, "host");
    snprintf(d->key, sizeof d->key, "%s", key ? key : "(none)");
    snprintf(d->trace, sizeof d->trace, "%s", trace ? trace : "(none)");
    snprintf(d->host, sizeof d->host, "%s", host ? host : "(none)");
    snprintf(d->query, sizeof d->query, "%s", sluice_upgrade_query(u));
    free(key);
    free(trace);
    free(host);
    d->protocols[0] = '\0';
    for (size_t i = 0; i < sluice_upgrade_protocol_count(u); i++)
        snprintf(d->protocols + strlen(d->protocols), sizeof d->protocols - strlen(d->protocols),
                 "%s%s", i ? "|" : "", sluice_upgrade_protocol(u, i));
    if (strcmp(d->key, "k1")) {
        static const char *const extra[] = { "www-authenticate", "Bearer realm=\"x\"", NULL };
        CHECK_EQ_INT(sluice_upgrade_refuse(u, "bad \"key\"", extra), SLUICE_OK);
        return 401;
    }
    d->select_rc = sluice_upgrade_select(u, "v2");
    return 0;
}

static void door_open(void *ud, sluice_conn *c)
{
    struct door_state *d = ud;
    d->opens++;
    d->opened_id = sluice_conn_id(c);
}

static void door_nop_close(void *ud, sluice_conn *c, int code, const char *reason)
{
    (void)ud; (void)c; (void)code; (void)reason;
}

static void test_upgrade_door(sluice_loop *loop)
{
    struct door_state d;
    memset(&d, 0, sizeof d);
    sluice_server_handlers h = { .ws = { door_open, NULL, door_nop_close }, .ws_upgrade = door_upgrade };
    sluice_server_config cfg = { .host = "127.0.0.1" };
    sluice_server *srv = NULL;
    CHECK_EQ_INT(sluice_server_new(loop, &cfg, &h, &d, &srv, NULL, 0), SLUICE_OK);
    if (!srv)
        return;
    int port = sluice_server_port(srv);
    char req[1024], out[4096];
    const char *head = "GET /door?a=1 HTTP/1.1\r\nHost: door.test\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                       "Sec-WebSocket-Version: 13\r\n";

    /* refused: the status, the reason (JSON-escaped) and the header */
    snprintf(req, sizeof req, "%sX-Trace-Id: t-1\r\n\r\n", head);
    http_exchange(loop, port, req, out, sizeof out);
    CHECK(strstr(out, "HTTP/1.1 401 Unauthorized\r\n") == out);
    CHECK(strstr(out, "www-authenticate: Bearer realm=\"x\"\r\n") != NULL);
    CHECK(strstr(out, "\r\n\r\n{\"status\":401,\"error\":\"bad \\\"key\\\"\"}") != NULL);
    CHECK_EQ_STR(d.key, "(none)");
    CHECK_EQ_STR(d.trace, "t-1");
    CHECK_EQ_STR(d.host, "door.test");
    CHECK_EQ_STR(d.query, "a=1");
    CHECK_EQ_INT(d.opens, 0);

    /* accepted with the subprotocol it selected among those offered */
    snprintf(req, sizeof req, "%sX-API-Key: k1\r\nSec-WebSocket-Protocol: v1, v2,v3\r\n\r\n", head);
    http_exchange(loop, port, req, out, sizeof out);
    CHECK(strstr(out, "HTTP/1.1 101 ") == out);
    CHECK(strcasestr(out, "\r\nSec-WebSocket-Protocol: v2\r\n") != NULL);
    CHECK_EQ_STR(d.protocols, "v1|v2|v3");
    CHECK_EQ_INT(d.select_rc, SLUICE_OK);
    WAIT_UNTIL(loop, d.opens == 1, 3000);
    CHECK_EQ_INT(d.opens, 1);
    CHECK(d.opened_id == d.id && d.id != 0);

    /* offered, none selected ("v2" not offered: select fails): 400 */
    snprintf(req, sizeof req, "%sX-API-Key: k1\r\nSec-WebSocket-Protocol: chat\r\n\r\n", head);
    http_exchange(loop, port, req, out, sizeof out);
    CHECK_EQ_INT(d.select_rc, SLUICE_EINVAL);
    CHECK(strstr(out, "HTTP/1.1 400 Bad Request\r\n") == out);
    CHECK(strstr(out, "{\"status\":400,\"error\":\"none of the offered subprotocols "
                      "(Sec-WebSocket-Protocol) is served at this path\"}") != NULL);

    /* an offer lws could not take: 400 before the door is asked */
    int calls = d.calls;
    snprintf(req, sizeof req, "%sX-API-Key: k1\r\nSec-WebSocket-Protocol: \"v2\"\r\n\r\n", head);
    http_exchange(loop, port, req, out, sizeof out);
    CHECK(strstr(out, "HTTP/1.1 400 Bad Request\r\n") == out);
    CHECK_EQ_INT(d.calls, calls);
    CHECK_EQ_INT(d.opens, 1);
    sluice_server_free(srv);
}

/* A TLS pair that is not there, or not a pair: the exact error, no server. */
static void test_tls_files(sluice_loop *loop, const char *dir)
{
    char cert[300], key[300], want[700], err[512] = "";
    snprintf(cert, sizeof cert, "%s/public/index.html", dir);
    snprintf(key, sizeof key, "%s/missing.key", dir);
    sluice_server_config cfg = { .host = "127.0.0.1", .tls_cert = cert, .tls_key = key };
    sluice_server_handlers h = { .ws = { door_open, NULL, door_nop_close } };
    sluice_server *srv = NULL;
    CHECK_EQ_INT(sluice_server_new(loop, &cfg, &h, NULL, &srv, err, sizeof err), SLUICE_EINVAL);
    snprintf(want, sizeof want, "TLS certificate %s: no PEM certificate in it", cert);
    CHECK_EQ_STR(err, want);
    CHECK(srv == NULL);
    cfg.tls_cert = NULL;
    CHECK_EQ_INT(sluice_server_new(loop, &cfg, &h, NULL, &srv, err, sizeof err), SLUICE_EINVAL);
    CHECK_EQ_STR(err, "TLS needs both a certificate and its key (the certificate is missing)");
}

int main(void)
{
    char dir[] = "/tmp/sluice-test-ws-XXXXXX";
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    char pub[256], path[300];
    snprintf(pub, sizeof pub, "%s/public", dir);
    mkdir(pub, 0755);
    snprintf(path, sizeof path, "%s/index.html", pub);
    write_file(path, "<h1>movies</h1>\n");
    snprintf(path, sizeof path, "%s/app.js", pub);
    write_file(path, "console.log(1)\n");
    snprintf(path, sizeof path, "%s/secret.txt", dir);
    write_file(path, "TOPSECRET\n");

    sluice_loop *loop = NULL;
    CHECK_EQ_INT(sluice_loop_new(NULL, &loop, NULL, 0), SLUICE_OK);
    struct server_state ss;
    memset(&ss, 0, sizeof ss);
    ss.loop = loop;
    sluice_server_handlers h = {
        .ws = { srv_open, srv_message, srv_close },
        .ws_accept = srv_accept,
        .http_match = srv_http_match,
        .http_request = srv_http_request,
        .http_abort = srv_http_abort,
    };
    sluice_server_config cfg = {
        .host = "127.0.0.1", .port = 0, .max_message = 512 * 1024,
        .max_body = 64 * 1024, .send_queue_max = 1024 * 1024, .static_dir = pub,
    };
    sluice_server *srv = NULL;
    char err[256] = "";
    CHECK_EQ_INT(sluice_server_new(loop, &cfg, &h, &ss, &srv, err, sizeof err), SLUICE_OK);
    if (!srv) {
        fprintf(stderr, "server: %s\n", err);
        return check_summary("test_ws");
    }
    int port = sluice_server_port(srv);
    CHECK(port > 0);

    test_echo(loop, port, &ss);
    test_echo_counted(srv);
    test_too_big(loop, port, &ss);
    test_server_close(loop, port);
    test_invalid_utf8(loop, port);
    test_refused(loop, port);
    test_http(loop, port, &ss);
    test_static(loop, port);
    test_port_in_use(loop, port);
    test_idle(loop);
    test_slow_reader(loop, port, &ss);
    test_close_all_and_free(loop, srv, &ss, port);
    test_limits_and_self_free(loop, &h);
    test_idle_timeout(loop, &h);
    test_upgrade_door(loop);
    test_tls_files(loop, dir);

    sluice_loop_free(loop);
    snprintf(path, sizeof path, "rm -rf %s", dir);
    if (system(path)) {}
    return check_summary("test_ws");
}
