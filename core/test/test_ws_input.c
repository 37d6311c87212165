/* Bad input at the socket level, from raw sockets (no WebSocket library):
 * handshake checks, the slow-loris timeout, the pending-socket limit. */
#include "check.h"
#include "sluice/ws.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
        perror("connect");
        exit(1);
    }
    fcntl(fd, F_SETFL, O_NONBLOCK);
    return fd;
}

/* Sends request (may be NULL), then reads until the server closes or
 * wait_ms pass. Returns bytes read into out; *closed tells which. */
static size_t exchange_fd(sluice_loop *loop, int fd, const char *request, char *out,
                          size_t cap, int wait_ms, int *closed)
{
    size_t got = 0;
    *closed = 0;
    if (request && send(fd, request, strlen(request), MSG_NOSIGNAL) < 0)
        return 0;
    uint64_t end = sluice_now_ms() + (uint64_t)wait_ms;
    while (sluice_now_ms() < end) {
        sluice_loop_run_once(loop, 10);
        ssize_t n = recv(fd, out + got, cap - 1 - got, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
            *closed = 1;
            break;
        }
        if (n > 0)
            got += (size_t)n;
    }
    out[got] = '\0';
    return got;
}

static int accept_all(void *ud, const char *path)
{
    (void)ud;
    return !strcmp(path, "/ws");
}

#define UPGRADE "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
#define KEY "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"

static void test_handshakes(sluice_loop *loop, int port)
{
    char out[2048];
    int closed, fd;

    fd = dial(port);
    exchange_fd(loop, fd, UPGRADE KEY "Sec-WebSocket-Version: 13\r\n\r\n", out, sizeof out, 500, &closed);
    CHECK(!strncmp(out, "HTTP/1.1 101", 12));
    close(fd);

    fd = dial(port);
    exchange_fd(loop, fd, UPGRADE "Sec-WebSocket-Version: 13\r\n\r\n", out, sizeof out, 500, &closed);
    CHECK(!strncmp(out, "HTTP/1.1 400 Bad Request\r\n", 26));
    CHECK(strstr(out, "\r\n\r\n{\"status\":400,\"error\":\"missing Sec-WebSocket-Key\"}") != NULL);
    close(fd);

    fd = dial(port);
    exchange_fd(loop, fd, UPGRADE KEY "Sec-WebSocket-Version: 8\r\n\r\n", out, sizeof out, 500, &closed);
    CHECK(!strncmp(out, "HTTP/1.1 426 Upgrade Required\r\n", 31));
    CHECK(strcasestr(out, "\r\nsec-websocket-version: 13\r\n") != NULL);
    close(fd);
}

static void test_slow_loris(sluice_loop *loop, int port)
{
    char out[1024];
    int closed;
    int fd = dial(port);
    uint64_t t0 = sluice_now_ms();
    exchange_fd(loop, fd, "GET /ws HTTP/1.1\r\nHost: x\r\n", out, sizeof out, 5000, &closed);
    uint64_t took = sluice_now_ms() - t0;
    CHECK(closed);
    CHECK(!strncmp(out, "HTTP/1.1 408 Request Timeout\r\n", 30));
    CHECK(strstr(out, "\r\n\r\n{\"status\":408,\"error\":\"Request Timeout\"}") != NULL);
    CHECK(took >= 900);   /* not before the 1 s handshake timeout */
    close(fd);
}

static void test_pending_limit(sluice_loop *loop, int port)
{
    char out[1024];
    int closed, idle[3];
    for (int i = 0; i < 3; i++)
        idle[i] = dial(port);
    exchange_fd(loop, idle[0], NULL, out, sizeof out, 200, &closed);   /* accept them */
    /* max_pending is 3: the fourth is refused at once */
    int fd = dial(port);
    exchange_fd(loop, fd, NULL, out, sizeof out, 1000, &closed);
    CHECK(closed);
    CHECK(!strncmp(out, "HTTP/1.1 503 Service Unavailable\r\n", 34));
    close(fd);
    for (int i = 0; i < 3; i++)
        close(idle[i]);
    for (int i = 0; i < 20; i++)            /* the server sees them go */
        sluice_loop_run_once(loop, 10);
    /* Once they are gone, sockets are served again. */
    fd = dial(port);
    exchange_fd(loop, fd, UPGRADE KEY "Sec-WebSocket-Version: 13\r\n\r\n", out, sizeof out, 500, &closed);
    CHECK(!strncmp(out, "HTTP/1.1 101", 12));
    close(fd);
}

int main(void)
{
    sluice_loop *loop;
    sluice_server *srv;
    char err[256];
    sluice_loop_config lc = { 0 };
    CHECK_EQ_INT(sluice_loop_new(&lc, &loop, err, sizeof err), SLUICE_OK);
    sluice_server_config cfg = { 0 };
    cfg.host = "127.0.0.1";
    cfg.handshake_timeout_s = 1;
    cfg.max_pending = 3;
    sluice_server_handlers h = { 0 };
    h.ws_accept = accept_all;
    CHECK_EQ_INT(sluice_server_new(loop, &cfg, &h, NULL, &srv, err, sizeof err), SLUICE_OK);
    int port = sluice_server_port(srv);

    test_handshakes(loop, port);
    test_slow_loris(loop, port);
    test_pending_limit(loop, port);

    sluice_server_free(srv);
    sluice_loop_free(loop);
    return check_summary("test_ws_input");
}
