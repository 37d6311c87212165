/* Declared routes (core/src/ingest.c): what a route takes and how it
 * reads rows, then the whole path in this process: a sluice client sends
 * to a sluice server whose messages go through a route to a producer on
 * the embedded broker, and reads the acks and error frames back. */
#include "check.h"
#include "sluice/broker.h"
#include "sluice/ingest.h"

#include <stdlib.h>

#define WAIT_UNTIL(loop, cond, ms) do { \
    uint64_t wait_end_ = sluice_now_ms() + (ms); \
    while (!(cond) && sluice_now_ms() < wait_end_) \
        sluice_loop_run_once((loop), 20); \
} while (0)

static sluice_schema *schema;

static sluice_ingest *route(const char *key, const char *ack, int arrays)
{
    char err[200] = "";
    sluice_ingest *in = NULL;
    sluice_ingest_config cfg = { schema, "rows", key, ack, arrays };
    CHECK_EQ_INT(sluice_ingest_new(&cfg, &in, err, sizeof err), SLUICE_OK);
    return in;
}

/* Row i of the last parse as "value|key|id" ("-" for none). */
static const char *row_text(const sluice_ingest_batch *b, size_t i)
{
    static char buf[1024];
    sluice_ingest_row r;
    sluice_ingest_row_at(b, i, &r);
    snprintf(buf, sizeof buf, "%.*s|%.*s|%.*s", (int)r.value_len, r.value,
             r.key ? (int)r.key_len : 1, r.key ? r.key : "-",
             r.id ? (int)r.id_len : 1, r.id ? r.id : "-");
    return buf;
}

static int parse(const sluice_ingest *in, sluice_ingest_batch *b, const char *text)
{
    return sluice_ingest_parse(in, text, strlen(text), b);
}

static void test_declaration(void)
{
    char err[200] = "";
    sluice_ingest *in = NULL;
    sluice_ingest_config cfg = { schema, "rows", "nope", NULL, 0 };
    CHECK_EQ_INT(sluice_ingest_new(&cfg, &in, err, sizeof err), SLUICE_EINVAL);
    CHECK_EQ_STR(err, "key field 'nope' is not in the schema");
    cfg.key = NULL;
    cfg.ack = "nope";
    CHECK_EQ_INT(sluice_ingest_new(&cfg, &in, err, sizeof err), SLUICE_EINVAL);
    CHECK_EQ_STR(err, "ack field 'nope' is not in the schema");
    cfg.ack = NULL;
    cfg.topic = "";
    CHECK_EQ_INT(sluice_ingest_new(&cfg, &in, err, sizeof err), SLUICE_EINVAL);
    CHECK_EQ_STR(err, "a declared route needs a schema and a topic");
    CHECK(in == NULL);
}

static void test_rows(void)
{
    sluice_ingest_batch b;
    memset(&b, 0, sizeof b);
    sluice_ingest *in = route("actor", "id", 1);
    CHECK_EQ_INT(parse(in, &b, "{\"actor\":\"a\\u00e9\",\"id\":\"x/\\\"\",\"n\":2.50}"), SLUICE_OK);
    CHECK_EQ_INT(sluice_ingest_count(&b), 1);
    CHECK_EQ_STR(row_text(&b, 0), "{\"id\":\"x\\/\\\"\",\"actor\":\"a\xc3\xa9\",\"n\":2.5}|a\xc3\xa9|\"x\\/\\\"\"");
    /* a number id and key are their canonical JSON text */
    sluice_ingest *by_n = route("n", "n", 0);
    CHECK_EQ_INT(parse(by_n, &b, "{\"actor\":\"a\",\"n\":1e3}"), SLUICE_OK);
    CHECK_EQ_STR(row_text(&b, 0), "{\"actor\":\"a\",\"n\":1000}|1000|1000");
    /* an array: every row, or none */
    CHECK_EQ_INT(parse(in, &b, " [ {\"actor\":\"a\",\"n\":1} , {\"actor\":\"b\",\"n\":2,\"id\":7},"
                               "{\"actor\":\"[,]\\\"}\",\"n\":3} ] "), SLUICE_OK);
    CHECK_EQ_INT(sluice_ingest_count(&b), 3);
    CHECK_EQ_STR(row_text(&b, 0), "{\"actor\":\"a\",\"n\":1}|a|-");
    CHECK_EQ_STR(row_text(&b, 1), "{\"id\":7,\"actor\":\"b\",\"n\":2}|b|7");
    CHECK_EQ_STR(row_text(&b, 2), "{\"actor\":\"[,]\\\"}\",\"n\":3}|[,]\"}|-");
    CHECK_EQ_INT(parse(in, &b, "[{\"actor\":\"a\",\"n\":1},{\"n\":2}]"), SLUICE_EINVAL);
    CHECK_EQ_STR(b.result.error, "actor is missing");
    CHECK_EQ_INT(parse(in, &b, "[{\"actor\":\"a\",\"n\":1},]"), SLUICE_EMALFORMED);
    CHECK_EQ_INT(parse(in, &b, "[{\"actor\":\"a\",\"n\":1}"), SLUICE_EMALFORMED);
    CHECK_EQ_STR(b.result.error, "unterminated array");
    CHECK_EQ_INT(parse(in, &b, "[{\"actor\":\"a\",\"n\":1}] {}"), SLUICE_EMALFORMED);
    CHECK_EQ_STR(b.result.error, "unexpected text after the array");
    CHECK_EQ_INT(parse(in, &b, "[{\"actor\":\"a\",\"n\":1} {\"actor\":\"a\",\"n\":1}]"), SLUICE_EMALFORMED);
    CHECK_EQ_INT(parse(in, &b, "[{\"actor\":\"a\",\"n\":1]}]"), SLUICE_EMALFORMED);
    CHECK_EQ_INT(parse(in, &b, "[]"), SLUICE_EINVAL);
    CHECK_EQ_STR(b.result.error, "an empty array has no rows");
    /* no arrays unless declared */
    CHECK_EQ_INT(parse(by_n, &b, "[{\"actor\":\"a\",\"n\":1}]"), SLUICE_EINVAL);
    CHECK_EQ_STR(b.result.error, "a row must be a JSON object");
    sluice_ingest_release(by_n);
    sluice_ingest_release(in);
    sluice_ingest_batch_free(&b);
}

/* ---- the whole path ----------------------------------------------------------- */

static sluice_loop *loop;
static sluice_ingest *live;           /* the server's route */
static sluice_producer *producer;
static sluice_ingest_batch batch;
static int passed_on;                 /* messages the route did not take */

struct client {
    int open, closed;
    char frames[16][160];
    int n;
};

static void cli_open(void *ud, sluice_conn *c) { (void)c; ((struct client *)ud)->open = 1; }
static void cli_message(void *ud, sluice_conn *c, const char *data, size_t len, int binary)
{
    struct client *cl = ud;
    (void)c; (void)binary;
    if (cl->n < 16)
        snprintf(cl->frames[cl->n++], sizeof cl->frames[0], "%.*s", (int)len, data);
}
static void cli_close(void *ud, sluice_conn *c, int code, const char *reason)
{
    (void)c; (void)code; (void)reason;
    ((struct client *)ud)->closed = 1;
}

static void srv_open(void *ud, sluice_conn *c)
{
    (void)ud;
    sluice_conn_set_userdata(c, sluice_ingest_peer_new(c));
}
static void srv_message(void *ud, sluice_conn *c, const char *data, size_t len, int binary)
{
    (void)ud;
    if (binary || !sluice_ingest_message(live, producer, sluice_conn_userdata(c), data, len, &batch))
        passed_on++;
}
static void srv_close(void *ud, sluice_conn *c, int code, const char *reason)
{
    (void)ud; (void)code; (void)reason;
    sluice_ingest_peer_detach(sluice_conn_userdata(c));
}

static void on_delivery(void *ud, void *opaque, const sluice_delivery *d)
{
    (void)ud;
    sluice_ingest_delivered(opaque, d);
}

static int has_frame(const struct client *cl, const char *want)
{
    for (int i = 0; i < cl->n; i++)
        if (!strcmp(cl->frames[i], want))
            return 1;
    return 0;
}

static void test_path(void)
{
    char err[256] = "", url[64];
    sluice_broker *broker = NULL;
    sluice_broker_config bcfg = { 0, 0, 0 };
    CHECK_EQ_INT(sluice_broker_new(loop, &bcfg, &broker, err, sizeof err), 0);
    const char *props[] = { "bootstrap.servers", sluice_broker_direct_bootstrap(broker), NULL };
    sluice_producer_config pcfg = { .props = props, .on_delivery = on_delivery };
    CHECK_EQ_INT(sluice_producer_new(loop, &pcfg, &producer, err, sizeof err), 0);

    sluice_server *srv = NULL;
    sluice_server_config scfg;
    memset(&scfg, 0, sizeof scfg);
    sluice_server_handlers sh = { .ws = { srv_open, srv_message, srv_close } };
    CHECK_EQ_INT(sluice_server_new(loop, &scfg, &sh, NULL, &srv, err, sizeof err), 0);
    live = route("actor", "id", 1);

    struct client cl;
    memset(&cl, 0, sizeof cl);
    sluice_conn_handlers ch = { cli_open, cli_message, cli_close };
    sluice_conn *c = NULL;
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/", sluice_server_port(srv));
    CHECK_EQ_INT(sluice_client_connect(loop, url, NULL, &ch, &cl, &c, err, sizeof err), 0);
    WAIT_UNTIL(loop, cl.open, 5000);
    CHECK(cl.open);

    /* rows 1 and 2 acked (row 2 by its id), row 3 (no id) in an array, and
     * a message that is not the route's */
    const char *one = "{\"actor\":\"a\",\"n\":1}";
    sluice_conn_send(c, one, strlen(one), 0);
    const char *two = "[{\"actor\":\"b\",\"n\":2,\"id\":\"two\"},{\"actor\":\"a\",\"n\":3}]";
    sluice_conn_send(c, two, strlen(two), 0);
    sluice_conn_send(c, "{\"n\":4}", 7, 0);
    WAIT_UNTIL(loop, cl.n >= 3 && passed_on == 1, 10000);
    CHECK_EQ_INT(cl.n, 3);
    CHECK_EQ_INT(passed_on, 1);
    CHECK(has_frame(&cl, "{\"ack\":1}"));
    CHECK(has_frame(&cl, "{\"ack\":\"two\"}"));
    CHECK(has_frame(&cl, "{\"ack\":3}"));

    /* refused now: the producer is gone; the row's number goes on */
    sluice_producer *kept = producer;
    producer = NULL;
    sluice_conn_send(c, one, strlen(one), 0);
    WAIT_UNTIL(loop, cl.n >= 4, 5000);
    CHECK_EQ_INT(cl.n, 4);
    CHECK_EQ_STR(cl.frames[3], "{\"error\":\"CLOSED: the producer is closed\",\"id\":4}");
    producer = kept;

    /* rows purged by the producer's close: reported failed, to a
     * connection still open */
    sluice_broker_set_down(broker, 1, err, sizeof err);
    sluice_conn_send(c, one, strlen(one), 0);
    WAIT_UNTIL(loop, sluice_producer_in_flight(producer) == 1, 5000);
    CHECK_EQ_INT(sluice_producer_in_flight(producer), 1);
    sluice_producer_free(producer);
    producer = NULL;
    WAIT_UNTIL(loop, cl.n >= 5, 5000);
    CHECK_EQ_INT(cl.n, 5);
    CHECK(strncmp(cl.frames[4], "{\"error\":\"PURGE_QUEUE: ", 23) == 0 ||
          strncmp(cl.frames[4], "{\"error\":\"PURGE_INFLIGHT: ", 26) == 0);
    CHECK(strstr(cl.frames[4], ",\"id\":5}") != NULL);

    sluice_conn_close(c, 1000, "");
    WAIT_UNTIL(loop, cl.closed, 5000);
    sluice_server_free(srv);
    sluice_ingest_release(live);
    sluice_ingest_batch_free(&batch);
    sluice_broker_free(broker);
}

/* A row whose connection is gone when its report comes: nothing is sent,
 * the row and the peer are freed (ASan/valgrind see no leak). */
static void test_report_after_close(void)
{
    sluice_ingest_batch b;
    memset(&b, 0, sizeof b);
    sluice_ingest *in = route(NULL, NULL, 0);
    sluice_ingest_peer *peer = sluice_ingest_peer_new(NULL);
    CHECK_EQ_INT(sluice_ingest_peer_next_row(peer), 1);
    CHECK_EQ_INT(parse(in, &b, "{\"actor\":\"a\",\"n\":1}"), SLUICE_OK);
    sluice_ingest_row r;
    sluice_ingest_row_at(&b, 0, &r);
    CHECK_EQ_INT(sluice_ingest_send(in, NULL, peer, &r), SLUICE_ECLOSED);
    CHECK_EQ_INT(sluice_ingest_peer_next_row(peer), 3);
    sluice_ingest_peer_detach(peer);
    sluice_ingest_release(in);
    sluice_ingest_batch_free(&b);
}

int main(void)
{
    char err[256];
    sluice_schema_field fields[] = {
        { .name = "id", .types = SLUICE_JSON_STRING | SLUICE_JSON_NUMBER, .optional = 1 },
        { .name = "actor", .types = SLUICE_JSON_STRING, .nonempty = 1 },
        { .name = "n", .types = SLUICE_JSON_NUMBER },
    };
    if (sluice_schema_new(&schema, fields, 3, err, sizeof err) != SLUICE_OK) {
        fprintf(stderr, "schema: %s\n", err);
        return 1;
    }
    sluice_loop_config lcfg = { .log_level = SLUICE_LOG_ERROR };
    if (sluice_loop_new(&lcfg, &loop, err, sizeof err) != 0) {
        fprintf(stderr, "loop: %s\n", err);
        return 1;
    }
    test_declaration();
    test_rows();
    test_report_after_close();
    test_path();
    sluice_schema_free(schema);
    sluice_loop_free(loop);
    return check_summary("test_ingest");
}
