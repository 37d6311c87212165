/* sluice-cingest: the C-only ingest path, the ceiling sluice's Lua path is
 * measured against. The same core (sluice_core: libwebsockets server,
 * librdkafka producer, one loop) and the same movies protocol on the wire
 * (row in, {"ack":ID} out once Kafka stored it, same backpressure
 * thresholds as the Lua app), but no Lua: the row is not decoded or
 * validated, only scanned for its id and actorId (the key).
 *
 *   sluice-cingest --listen PORT --kafka BOOTSTRAP [--topic movie-results]
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/kafka.h"
#include "sluice/loop.h"
#include "sluice/signal.h"
#include "sluice/ws.h"

typedef struct pending {
    uint64_t conn_id;
    size_t id_len;
    char id[32];          /* the row's id as it appeared (a JSON value) */
} pending;

static struct {
    sluice_loop *loop;
    sluice_server *server;
    sluice_producer *producer;
    const char *topic;
    sluice_conn **conns;  /* by connection id: acks find their connection */
    size_t nconns;
    unsigned long long acked, failed, refused;
} g = { .topic = "movie-results" };

static void log_fn(void *ud, int level, const char *msg) {
    (void)ud;
    fprintf(stderr, "cingest %d: %s\n", level, msg);
}

static void track(uint64_t id, sluice_conn *c) {
    if (id >= g.nconns) {
        size_t n = g.nconns ? g.nconns : 1024;
        while (n <= id) n *= 2;
        g.conns = realloc(g.conns, n * sizeof *g.conns);
        memset(g.conns + g.nconns, 0, (n - g.nconns) * sizeof *g.conns);
        g.nconns = n;
    }
    g.conns[id] = c;
}

static void on_open(void *ud, sluice_conn *c) { (void)ud; track(sluice_conn_id(c), c); }

static void on_close(void *ud, sluice_conn *c, int code, const char *reason) {
    (void)ud; (void)code; (void)reason;
    uint64_t id = sluice_conn_id(c);
    if (id < g.nconns) g.conns[id] = NULL;
}

/* The JSON value following "name": (string with quotes, or a bare token). */
static const char *json_field(const char *data, size_t len, const char *name, size_t *vlen) {
    size_t nl = strlen(name);
    const char *end = data + len;
    for (const char *p = data; p + nl + 3 < end; p++) {
        if (p[0] != '"' || memcmp(p + 1, name, nl) != 0 || p[nl + 1] != '"') continue;
        const char *v = p + nl + 2;
        while (v < end && (*v == ':' || *v == ' ')) v++;
        const char *e = v;
        if (e < end && *e == '"') { e++; while (e < end && *e != '"') e++; if (e < end) e++; }
        else while (e < end && *e != ',' && *e != '}') e++;
        *vlen = (size_t)(e - v);
        return v;
    }
    return NULL;
}

static void send_reply(uint64_t conn_id, const char *kind, const char *id, size_t id_len) {
    sluice_conn *c = conn_id < g.nconns ? g.conns[conn_id] : NULL;
    if (!c) return;
    char buf[96];
    int n = snprintf(buf, sizeof buf, "{\"%s\":%.*s}", kind, (int)id_len, id);
    sluice_conn_send(c, buf, (size_t)n, 0);
}

static void on_message(void *ud, sluice_conn *c, const char *data, size_t len, int binary) {
    (void)ud; (void)binary;
    size_t id_len = 0, key_len = 0;
    const char *id = json_field(data, len, "id", &id_len);
    const char *key = json_field(data, len, "actorId", &key_len);
    if (key && key_len >= 2 && key[0] == '"') { key++; key_len -= 2; }
    pending *p = malloc(sizeof *p);
    p->conn_id = sluice_conn_id(c);
    if (!id || id_len > sizeof p->id) { id = "null"; id_len = 4; }
    memcpy(p->id, id, id_len);
    p->id_len = id_len;
    sluice_message m = { .topic = g.topic, .key = key, .key_len = key_len,
                         .value = data, .value_len = len, .partition = -1 };
    char err[256];
    if (sluice_producer_send(g.producer, &m, p, err, sizeof err) != 0) {
        g.refused++;
        send_reply(p->conn_id, "error", p->id, p->id_len);
        free(p);
    }
}

static void on_delivery(void *ud, void *opaque, const sluice_delivery *d) {
    (void)ud;
    pending *p = opaque;
    if (d->error) g.failed++; else g.acked++;
    send_reply(p->conn_id, d->error ? "error" : "ack", p->id, p->id_len);
    free(p);
}

static void on_pressure(void *ud, int high) {
    (void)ud;
    sluice_server_pause_reading(g.server, high);
}

static void on_signal(void *ud, int signo) { (void)ud; (void)signo; sluice_loop_stop(g.loop); }

int main(int argc, char **argv) {
    int port = 8080;
    const char *kafka = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--listen")) port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--kafka")) kafka = argv[i + 1];
        else if (!strcmp(argv[i], "--topic")) g.topic = argv[i + 1];
        else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
    }
    if (!kafka) { fprintf(stderr, "usage: sluice-cingest --listen PORT --kafka BOOTSTRAP [--topic T]\n"); return 2; }
    char err[512];
    sluice_loop_config lc = { .log = log_fn, .log_level = SLUICE_LOG_WARN };
    if (sluice_loop_new(&lc, &g.loop, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
    const char *props[] = { "bootstrap.servers", kafka, "client.id", "cingest", NULL };
    sluice_producer_config pc = { .props = props, .on_delivery = on_delivery,
        .on_pressure = on_pressure, .high_water = 10000, .low_water = 5000 };
    if (sluice_producer_new(g.loop, &pc, &g.producer, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
    sluice_server_config sc = { .port = port, .idle_timeout_s = -1 };
    sluice_server_handlers h = { .ws = { .open = on_open, .message = on_message, .close = on_close } };
    if (sluice_server_new(g.loop, &sc, &h, NULL, &g.server, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
    int sigs[] = { SIGINT, SIGTERM };
    sluice_signal_watch *sw;
    if (sluice_signal_watch_new(g.loop, sigs, 2, on_signal, NULL, &sw, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
    fprintf(stderr, "cingest: listening on %d, producing to %s at %s\n", sluice_server_port(g.server), g.topic, kafka);
    sluice_loop_run(g.loop);
    sluice_producer_flush(g.producer, 5000);
    fprintf(stderr, "cingest: acked %llu failed %llu refused %llu\n", g.acked, g.failed, g.refused);
    sluice_signal_watch_free(sw);
    sluice_server_free(g.server);
    sluice_producer_free(g.producer);
    sluice_loop_free(g.loop);
    free(g.conns);
    return 0;
}
