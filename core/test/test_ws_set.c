/* Connection sets (ws_set.c): members added and removed anywhere in the
 * array, a connection in several sets at once leaving them all when it
 * closes (checked from its close handler, and under ASan by
 * sanitize.core), and broadcasts to a set as its clients receive them:
 * every member once, in order, with the send queue's limit. The clients
 * are the core's own, in this process, on real sockets. */
#include "check.h"
#include "sluice/ws.h"

#include <stdlib.h>

#define WAIT_UNTIL(loop, cond, ms) do { \
    uint64_t wait_end_ = sluice_now_ms() + (ms); \
    while (!(cond) && sluice_now_ms() < wait_end_) \
        sluice_loop_run_once((loop), 10); \
} while (0)

#define NCONN 6

/* Server side: its connections in the order they opened, and what their
 * close handler saw of the sets. */
struct server_state {
    sluice_conn *conns[NCONN + 4];
    int nconns, closes;
    sluice_conn_set *watch[2];  /* sets the close handler checks */
    int still_member;           /* a closing connection still in a set */
    int add_on_close;           /* what adding it from its close handler gave */
};

static void srv_open(void *ud, sluice_conn *c)
{
    struct server_state *st = ud;
    if (st->nconns < NCONN + 4)
        st->conns[st->nconns++] = c;
}

static void srv_close(void *ud, sluice_conn *c, int code, const char *reason)
{
    struct server_state *st = ud;
    (void)code;
    (void)reason;
    st->closes++;
    for (int i = 0; i < 2; i++)
        if (st->watch[i]) {
            st->still_member += sluice_conn_set_has(st->watch[i], c);
            st->add_on_close = sluice_conn_set_add(st->watch[i], c);
        }
    for (int i = 0; i < st->nconns; i++)
        if (st->conns[i] == c)
            st->conns[i] = NULL;
}

/* Client side: every message received, joined with ';'. */
struct client {
    sluice_conn *conn;
    int opened, closed, close_code;
    char got[4096];
};

static void cli_open(void *ud, sluice_conn *c)
{
    (void)c;
    ((struct client *)ud)->opened = 1;
}

static void cli_message(void *ud, sluice_conn *c, const char *data, size_t len, int binary)
{
    struct client *cl = ud;
    (void)c;
    (void)binary;
    size_t have = strlen(cl->got);
    if (have + len + 2 < sizeof cl->got) {
        memcpy(cl->got + have, data, len);
        cl->got[have + len] = ';';
        cl->got[have + len + 1] = '\0';
    }
}

static void cli_close(void *ud, sluice_conn *c, int code, const char *reason)
{
    struct client *cl = ud;
    (void)c;
    (void)reason;
    cl->closed = 1;
    cl->close_code = code;
    cl->conn = NULL;
}

static const sluice_conn_handlers client_handlers = { cli_open, cli_message, cli_close };

/* n clients connected; the server's side of client i is st->conns[first + i]. */
static int connect_all(sluice_loop *loop, struct server_state *st, int port, struct client *cl, int n)
{
    char url[64];
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/set", port);
    for (int i = 0; i < n; i++) {
        int before = st->nconns;
        memset(&cl[i], 0, sizeof cl[i]);
        CHECK_EQ_INT(sluice_client_connect(loop, url, NULL, &client_handlers, &cl[i], &cl[i].conn,
                                           NULL, 0), SLUICE_OK);
        /* one at a time, so that the server's order is the clients' */
        WAIT_UNTIL(loop, cl[i].opened && st->nconns > before, 10000);
        if (!cl[i].opened || st->nconns == before)
            return 0;
    }
    return 1;
}

static size_t broadcast(sluice_conn_set *s, const char *text)
{
    size_t n = 99;
    CHECK_EQ_INT(sluice_conn_set_broadcast(s, text, strlen(text), 0, &n), SLUICE_OK);
    return n;
}

/* Steps the loop until client i has received want (or 10 s). */
static void expect_got(sluice_loop *loop, struct client *cl, const char *want)
{
    WAIT_UNTIL(loop, strlen(cl->got) >= strlen(want), 10000);
    CHECK_EQ_STR(cl->got, want);
}

static void test_members(sluice_loop *loop, struct server_state *st, int port)
{
    struct client cl[NCONN];
    sluice_conn **sc = st->conns;
    if (!connect_all(loop, st, port, cl, NCONN))
        return;
    sluice_conn_set *a = sluice_conn_set_new(), *b = sluice_conn_set_new();
    CHECK(a && b);
    CHECK_EQ_INT(sluice_conn_set_count(a), 0);
    CHECK_EQ_INT(broadcast(a, "nobody"), 0);
    for (int i = 0; i < NCONN; i++)
        CHECK_EQ_INT(sluice_conn_set_add(a, sc[i]), SLUICE_OK);
    CHECK_EQ_INT(sluice_conn_set_add(a, sc[3]), SLUICE_OK);    /* once per set */
    CHECK_EQ_INT(sluice_conn_set_count(a), NCONN);
    /* b: two server connections and a client one (a set takes either) */
    CHECK_EQ_INT(sluice_conn_set_add(b, sc[0]), SLUICE_OK);
    CHECK_EQ_INT(sluice_conn_set_add(b, sc[2]), SLUICE_OK);
    CHECK_EQ_INT(sluice_conn_set_add(b, cl[5].conn), SLUICE_OK);
    CHECK_EQ_INT(sluice_conn_set_count(b), 3);

    /* out of the middle of a (not of b) */
    CHECK_EQ_INT(sluice_conn_set_remove(a, sc[2]), 1);
    CHECK_EQ_INT(sluice_conn_set_remove(a, sc[2]), 0);
    CHECK_EQ_INT(sluice_conn_set_count(a), NCONN - 1);
    CHECK(!sluice_conn_set_has(a, sc[2]));
    CHECK(sluice_conn_set_has(b, sc[2]));
    for (int i = 0; i < NCONN; i++)
        CHECK_EQ_INT(sluice_conn_set_has(a, sc[i]), i != 2);
    CHECK_EQ_INT(broadcast(a, "a1"), NCONN - 1);
    CHECK_EQ_INT(broadcast(b, "b1"), 3);
    CHECK_EQ_INT(broadcast(a, "a2"), NCONN - 1);
    expect_got(loop, &cl[0], "a1;b1;a2;");
    expect_got(loop, &cl[1], "a1;a2;");
    expect_got(loop, &cl[2], "b1;");
    expect_got(loop, &cl[3], "a1;a2;");
    expect_got(loop, &cl[4], "a1;a2;");
    expect_got(loop, &cl[5], "a1;a2;");

    /* Connection 0 closes while it is in a and in b: its close handler
     * finds it in neither, and cannot join one. */
    st->watch[0] = a;
    st->watch[1] = b;
    st->still_member = 0;
    st->add_on_close = 1;
    int closes = st->closes;
    CHECK_EQ_INT(sluice_conn_close(cl[0].conn, 1000, "bye"), SLUICE_OK);
    WAIT_UNTIL(loop, st->closes > closes, 10000);
    CHECK_EQ_INT(st->closes, closes + 1);
    CHECK(st->conns[0] == NULL);
    CHECK_EQ_INT(st->still_member, 0);
    CHECK_EQ_INT(st->add_on_close, SLUICE_ECLOSED);
    st->watch[0] = st->watch[1] = NULL;
    CHECK_EQ_INT(sluice_conn_set_count(a), NCONN - 2);
    CHECK_EQ_INT(sluice_conn_set_count(b), 2);
    CHECK_EQ_INT(broadcast(a, "a3"), NCONN - 2);
    CHECK_EQ_INT(broadcast(b, "b2"), 2);
    expect_got(loop, &cl[2], "b1;b2;");
    expect_got(loop, &cl[5], "a1;a2;a3;");
    expect_got(loop, &cl[1], "a1;a2;a3;");

    /* A member whose close is under way stays in the set until it is
     * closed, but takes nothing more (not counted). */
    CHECK_EQ_INT(sluice_conn_close(sc[4], 4000, "leaving"), SLUICE_OK);
    CHECK_EQ_INT(sluice_conn_set_count(a), NCONN - 2);
    CHECK_EQ_INT(broadcast(a, "a4"), NCONN - 3);
    WAIT_UNTIL(loop, cl[4].closed, 10000);
    CHECK_EQ_INT(cl[4].close_code, 4000);
    CHECK_EQ_STR(cl[4].got, "a1;a2;a3;");
    WAIT_UNTIL(loop, sluice_conn_set_count(a) == NCONN - 3, 10000);
    CHECK_EQ_INT(sluice_conn_set_count(a), NCONN - 3);

    /* A client connection in b closes from its own side. */
    CHECK_EQ_INT(sluice_conn_close(cl[5].conn, 1000, "client"), SLUICE_OK);
    WAIT_UNTIL(loop, cl[5].closed, 10000);
    CHECK_EQ_INT(sluice_conn_set_count(b), 1);
    CHECK(sluice_conn_set_has(b, sc[2]));

    /* Freeing b leaves its member in a, with a's index still right. */
    sluice_conn_set_free(b);
    CHECK(sluice_conn_set_has(a, sc[1]));
    CHECK_EQ_INT(sluice_conn_set_remove(a, sc[1]), 1);
    CHECK_EQ_INT(broadcast(a, "a5"), sluice_conn_set_count(a));
    expect_got(loop, &cl[3], "a1;a2;a3;a4;a5;");
    /* a freed with members: they are in no set afterwards, and close */
    sluice_conn_set_free(a);
    for (int i = 1; i < NCONN; i++)
        if (cl[i].conn)
            sluice_conn_close(cl[i].conn, 1000, "done");
    int all_closed = 0;
    WAIT_UNTIL(loop, (all_closed = cl[0].closed && cl[1].closed && cl[2].closed && cl[3].closed &&
                                   cl[4].closed && cl[5].closed), 10000);
    CHECK(all_closed);
    WAIT_UNTIL(loop, st->closes >= closes + NCONN, 10000);
}

/* Adds and removes at random over three sets, against a model of who is
 * in which: the indexes on both sides stay right wherever a member
 * leaves from. */
static void test_churn(sluice_loop *loop, struct server_state *st, int port)
{
    enum { N = 5, S = 3, STEPS = 3000 };
    struct client cl[N];
    st->nconns = 0;
    if (!connect_all(loop, st, port, cl, N))
        return;
    sluice_conn_set *sets[S];
    int in[S][N];
    memset(in, 0, sizeof in);
    for (int s = 0; s < S; s++)
        sets[s] = sluice_conn_set_new();
    unsigned r = 12345;
    int bad = 0;
    for (int k = 0; k < STEPS; k++) {
        r = r * 1103515245u + 12345u;
        int s = (int)((r >> 8) % S), i = (int)((r >> 16) % N), add = (r >> 24) & 1;
        if (add) {
            bad += sluice_conn_set_add(sets[s], st->conns[i]) != SLUICE_OK;
            in[s][i] = 1;
        } else {
            bad += sluice_conn_set_remove(sets[s], st->conns[i]) != in[s][i];
            in[s][i] = 0;
        }
        for (int t = 0; t < S; t++) {
            size_t want = 0;
            for (int j = 0; j < N; j++) {
                want += (size_t)in[t][j];
                bad += sluice_conn_set_has(sets[t], st->conns[j]) != in[t][j];
            }
            bad += sluice_conn_set_count(sets[t]) != want;
        }
    }
    CHECK_EQ_INT(bad, 0);
    /* then each set's broadcast reaches its members, once each */
    char want[N][64];
    memset(want, 0, sizeof want);
    for (int s = 0; s < S; s++) {
        char text[8];
        snprintf(text, sizeof text, "s%d", s);
        size_t members = 0;
        for (int i = 0; i < N; i++)
            if (in[s][i]) {
                members++;
                strcat(want[i], text);
                strcat(want[i], ";");
            }
        CHECK_EQ_INT(broadcast(sets[s], text), members);
    }
    for (int i = 0; i < N; i++)
        expect_got(loop, &cl[i], want[i]);
    int closes = st->closes;
    for (int i = 0; i < N; i++)
        sluice_conn_close(cl[i].conn, 1000, "done");
    /* (the clients' close handlers too: cl is on this stack) */
    int open_clients = N;
    WAIT_UNTIL(loop, st->closes == closes + N &&
               !(open_clients = cl[0].conn || cl[1].conn || cl[2].conn || cl[3].conn || cl[4].conn), 10000);
    CHECK(!open_clients);
    for (int s = 0; s < S; s++) {
        CHECK_EQ_INT(sluice_conn_set_count(sets[s]), 0);
        sluice_conn_set_free(sets[s]);
    }
}

/* A member whose queue would pass send_queue is closed with 1008 and not
 * counted, as with conn_send. */
static void test_queue_limit(sluice_loop *loop, struct server_state *st, int port)
{
    struct client cl[2];
    st->nconns = 0;
    if (!connect_all(loop, st, port, cl, 2))
        return;
    sluice_conn_set *s = sluice_conn_set_new();
    sluice_conn_set_add(s, st->conns[0]);
    sluice_conn_set_add(s, st->conns[1]);
    size_t big = 80 * 1024;     /* over the server's 64 KiB send_queue */
    char *text = malloc(big + 1);
    memset(text, 'x', big);
    text[big] = '\0';
    CHECK_EQ_INT(broadcast(s, "small"), 2);
    expect_got(loop, &cl[0], "small;");
    expect_got(loop, &cl[1], "small;");
    CHECK_EQ_INT(broadcast(s, text), 0);
    WAIT_UNTIL(loop, cl[0].closed && cl[1].closed, 10000);
    CHECK_EQ_INT(cl[0].close_code, 1008);
    CHECK_EQ_INT(cl[1].close_code, 1008);
    WAIT_UNTIL(loop, sluice_conn_set_count(s) == 0, 10000);
    CHECK_EQ_INT(sluice_conn_set_count(s), 0);
    sluice_conn_set_free(s);
    free(text);
}

static int accept_all(void *ud, const char *path)
{
    (void)ud;
    (void)path;
    return 1;
}

int main(void)
{
    sluice_loop *loop = NULL;
    CHECK_EQ_INT(sluice_loop_new(NULL, &loop, NULL, 0), SLUICE_OK);
    struct server_state st;
    memset(&st, 0, sizeof st);
    sluice_server_handlers h = { .ws = { srv_open, NULL, srv_close }, .ws_accept = accept_all };
    sluice_server_config cfg = { .host = "127.0.0.1", .send_queue_max = 64 * 1024 };
    sluice_server *srv = NULL;
    char err[256] = "";
    CHECK_EQ_INT(sluice_server_new(loop, &cfg, &h, &st, &srv, err, sizeof err), SLUICE_OK);
    if (!srv) {
        fprintf(stderr, "server: %s\n", err);
        return check_summary("test_ws_set");
    }
    int port = sluice_server_port(srv);
    CHECK_EQ_INT(sluice_conn_set_add(NULL, NULL), SLUICE_EINVAL);
    CHECK_EQ_INT(sluice_conn_set_count(NULL), 0);

    test_members(loop, &st, port);
    test_churn(loop, &st, port);
    test_queue_limit(loop, &st, port);

    sluice_server_free(srv);
    sluice_loop_free(loop);
    return check_summary("test_ws_set");
}
