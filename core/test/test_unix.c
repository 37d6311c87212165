/* Unix sockets on the loop: a listener and a client exchange bytes both
 * ways, half-close, a bounded send queue refuses what does not fit, the
 * socket file is private and removed, a private directory is checked. */
#include "check.h"
#include "sluice/unix.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct side {
    char got[1 << 16];
    size_t n;
    int eof, closed;
    sluice_unix *conn;   /* the server side's accepted connection */
};

static void on_accept(sluice_unix *l, sluice_unix *c, void *ud)
{
    (void)l;
    ((struct side *)ud)->conn = c;
}

static void on_data(sluice_unix *c, const char *data, size_t len, void *ud)
{
    struct side *s = ud;
    (void)c;
    if (s->n + len <= sizeof s->got) memcpy(s->got + s->n, data, len);
    s->n += len;
}

static void on_eof(sluice_unix *c, void *ud) { (void)c; ((struct side *)ud)->eof = 1; }
static void on_close(sluice_unix *c, void *ud) { (void)c; ((struct side *)ud)->closed = 1; }

static const sluice_unix_handlers handlers = { on_accept, on_data, on_eof, on_close };

static void run_until(sluice_loop *loop, const int *flag, int deadline_ms)
{
    uint64_t end = sluice_now_ms() + (uint64_t)deadline_ms;
    while (!*flag && sluice_now_ms() < end) sluice_loop_run_once(loop, 20);
}

static void run_until_bytes(sluice_loop *loop, const struct side *s, size_t n, int deadline_ms)
{
    uint64_t end = sluice_now_ms() + (uint64_t)deadline_ms;
    while (s->n < n && sluice_now_ms() < end) sluice_loop_run_once(loop, 20);
}

int main(void)
{
    sluice_loop *loop;
    char err[256] = "", dir[] = "/tmp/sluice-unix-test.XXXXXX", path[128], priv[160];
    struct side server = { .n = 0 }, client = { .n = 0 };
    sluice_unix *l = NULL, *c = NULL;
    struct stat st;

    CHECK_EQ_INT(sluice_loop_new(NULL, &loop, err, sizeof err), SLUICE_OK);
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/s.sock", dir);

    CHECK_EQ_INT(sluice_unix_listen(loop, path, &handlers, &server, &l, err, sizeof err), SLUICE_OK);
    CHECK(stat(path, &st) == 0 && S_ISSOCK(st.st_mode) && (st.st_mode & 0777) == 0600);
    /* A second listener on a live socket is refused. */
    sluice_unix *l2 = NULL;
    CHECK_EQ_INT(sluice_unix_listen(loop, path, &handlers, &server, &l2, err, sizeof err), SLUICE_EADDRINUSE);

    CHECK_EQ_INT(sluice_unix_connect(loop, path, &handlers, &client, &c, err, sizeof err), SLUICE_OK);
    CHECK_EQ_INT(sluice_unix_send(c, "hello\n", 6), SLUICE_OK);
    run_until_bytes(loop, &server, 6, 5000);
    CHECK(server.conn != NULL);
    CHECK_EQ_INT(server.n, 6);
    CHECK(memcmp(server.got, "hello\n", 6) == 0);

    /* The client says it is done; the server still answers, then ends. */
    sluice_unix_shutdown(c);
    run_until(loop, &server.eof, 5000);
    CHECK(server.eof);
    CHECK_EQ_INT(sluice_unix_send(server.conn, "bye", 3), SLUICE_OK);
    sluice_unix_end(server.conn);
    CHECK_EQ_INT(sluice_unix_send(server.conn, "late", 4), SLUICE_ECLOSED);
    run_until(loop, &client.closed, 5000);
    CHECK_EQ_INT(client.n, 3);
    CHECK(memcmp(client.got, "bye", 3) == 0);
    CHECK(client.closed);
    CHECK(server.closed);

    /* A peer that does not read: the queue stops at its limit. */
    memset(&server, 0, sizeof server);
    memset(&client, 0, sizeof client);
    CHECK_EQ_INT(sluice_unix_connect(loop, path, &handlers, &client, &c, err, sizeof err), SLUICE_OK);
    while (!server.conn) sluice_loop_run_once(loop, 20);
    sluice_unix_set_limit(server.conn, 4096);
    static char block[1024];
    memset(block, 'x', sizeof block);
    int full = 0, sent = 0;
    for (int i = 0; i < 10000 && !full; i++) {
        int rc = sluice_unix_send(server.conn, block, sizeof block);
        if (rc == SLUICE_EFULL) full = 1; else sent++;
    }
    CHECK(full);
    CHECK(sluice_unix_queued(server.conn) <= 4096);
    CHECK(sluice_unix_queued(server.conn) > 4096 - sizeof block);
    /* Once the client reads, everything queued arrives. */
    run_until_bytes(loop, &client, (size_t)sent * sizeof block, 10000);
    CHECK_EQ_INT(client.n, (long long)sent * (long long)sizeof block);
    CHECK_EQ_INT(sluice_unix_queued(server.conn), 0);
    sluice_unix_free(c);
    run_until(loop, &server.closed, 5000);
    CHECK(server.closed);

    /* Freeing the listener removes its socket file. */
    sluice_unix_free(l);
    CHECK(stat(path, &st) != 0);

    /* Private directories. */
    snprintf(priv, sizeof priv, "%s/p", dir);
    CHECK_EQ_INT(sluice_unix_private_dir(priv, err, sizeof err), SLUICE_OK);
    CHECK(stat(priv, &st) == 0 && (st.st_mode & 0777) == 0700);
    chmod(priv, 0755);
    CHECK_EQ_INT(sluice_unix_private_dir(priv, err, sizeof err), SLUICE_EIO);
    CHECK(strstr(err, "can be entered by other users") != NULL);
    rmdir(priv);
    rmdir(dir);

    sluice_loop_free(loop);
    return check_summary("test_unix");
}
