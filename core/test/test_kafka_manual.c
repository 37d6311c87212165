/* Manual offset storing (sluice_consumer_store) and reading partitions to
 * their end (sluice_kafka_read_partitions), against the embedded broker. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "kafka_support.h"
#include "sluice/broker.h"
#include "sluice/kafka.h"

#define TOPIC "manual-offsets"
#define N 20
#define STORED_UPTO 9   /* records 0..9 are "processed" */

static sluice_loop *loop;
static const char *bootstrap;


static void pump_until(const int *counter, int want, int timeout_ms) { pump_loop_until(loop, counter, want, timeout_ms); }

static int delivered;
static void on_delivery(void *ud, void *opaque, const sluice_delivery *d) {
    (void)ud; (void)opaque;
    if (!d->error) delivered++;
}

static void produce_all(void) {
    const char *props[] = { "bootstrap.servers", bootstrap, NULL };
    sluice_producer_config cfg = { .props = props, .on_delivery = on_delivery };
    sluice_producer *p = NULL;
    char err[256];
    CHECK_EQ_INT(sluice_producer_new(loop, &cfg, &p, err, sizeof err), 0);
    for (int i = 0; i < N; i++) {
        char key[16], value[16];
        snprintf(key, sizeof key, "k%d", i);
        snprintf(value, sizeof value, "v%d", i);
        sluice_message m = { .topic = TOPIC, .key = key, .key_len = strlen(key),
                             .value = value, .value_len = strlen(value), .partition = 0 };
        CHECK_EQ_INT(sluice_producer_send(p, &m, NULL, err, sizeof err), 0);
    }
    pump_until(&delivered, N, 15000);
    CHECK_EQ_INT(delivered, N);
    sluice_producer_free(p);
}

/* ---- read_partitions ------------------------------------------------------ */

typedef struct seen { int n; int in_order; int64_t next; char first[16], last[16]; } seen;

static void on_read(void *ud, const sluice_record *r) {
    seen *s = ud;
    if (r->partition != 0 || r->offset != s->next) s->in_order = 0;
    s->next = r->offset + 1;
    if (s->n == 0) snprintf(s->first, sizeof s->first, "%.*s", (int)r->value_len, (const char *)r->value);
    snprintf(s->last, sizeof s->last, "%.*s", (int)r->value_len, (const char *)r->value);
    s->n++;
}

static void test_read_partitions(void) {
    const char *props[] = { "bootstrap.servers", bootstrap, NULL };
    int32_t parts[] = { 0, 1, 2, 3 };
    char err[256] = "";
    seen s = { .in_order = 1 };
    CHECK_EQ_INT(sluice_kafka_read_partitions(props, TOPIC, parts, 4, on_read, &s, 20000, err, sizeof err), 0);
    CHECK_EQ_INT(s.n, N);
    CHECK(s.in_order);
    CHECK_EQ_STR(s.first, "v0");
    CHECK_EQ_STR(s.last, "v19");

    /* A topic never written reads as empty (0, not the timeout's error). */
    seen none = { .in_order = 1 };
    CHECK_EQ_INT(sluice_kafka_read_partitions(props, "never-written", parts, 2, on_read, &none, 20000,
                                              err, sizeof err), 0);
    CHECK_EQ_INT(none.n, 0);
}

/* ---- manual store ---------------------------------------------------------- */

typedef struct consume_state {
    int records;
    int64_t first_offset;
    int assigned;
    int store_rc_unassigned;
} consume_state;

static void on_record(void *ud, sluice_consumer *c, const sluice_record *r) {
    consume_state *s = ud;
    char err[256];
    if (s->records == 0) s->first_offset = r->offset;
    if (getenv("DEBUG_MANUAL")) fprintf(stderr, "record p%d o%lld\n", (int)r->partition, (long long)r->offset);
    s->records++;
    /* Only the first records count as processed; the rest must come back. */
    if (r->offset == STORED_UPTO)
        CHECK_EQ_INT(sluice_consumer_store(c, r->topic, r->partition, r->offset, err, sizeof err), 0);
    if (s->records == 1)
        s->store_rc_unassigned = sluice_consumer_store(c, "not-subscribed", 0, 0, err, sizeof err);
}

static void on_rebalance(void *ud, sluice_consumer *c, int assigned,
                         const sluice_partition *parts, size_t n) {
    (void)c; (void)parts;
    consume_state *s = ud;
    if (assigned) s->assigned += (int)n;
    if (getenv("DEBUG_MANUAL")) for (size_t i = 0; i < n; i++) fprintf(stderr, "%s p%d o%lld\n", assigned ? "assign" : "revoke", (int)parts[i].partition, (long long)parts[i].offset);
}

static void consume_once(consume_state *s, int want) {
    const char *props[] = { "bootstrap.servers", bootstrap, "group.id", "manual-group",
                            "auto.offset.reset", "earliest",
                            /* the mock rebalances a left group after the session timeout */
                            "session.timeout.ms", "6000", "heartbeat.interval.ms", "500", NULL };
    const char *topics[] = { TOPIC, NULL };
    sluice_consumer_config cfg = { .props = props, .topics = topics, .start = SLUICE_FROM_COMMITTED,
                                   .on_record = on_record, .on_rebalance = on_rebalance,
                                   .ud = s, .manual_store = 1 };
    sluice_consumer *c = NULL;
    char err[256];
    CHECK_EQ_INT(sluice_consumer_new(loop, &cfg, &c, err, sizeof err), 0);
    if (!c) return;
    pump_until(&s->records, want, 30000);
    CHECK_EQ_INT(sluice_consumer_commit(c, 1, err, sizeof err), 0);
    sluice_consumer_free(c);
}

static void test_manual_store(void) {
    consume_state first = { 0 }, second = { 0 };
    consume_once(&first, N);
    CHECK_EQ_INT(first.records, N);
    CHECK_EQ_INT(first.first_offset, 0);
    CHECK(first.assigned > 0);
    /* Storing for a partition this consumer does not own is refused. */
    CHECK_EQ_INT(first.store_rc_unassigned, SLUICE_ESTATE);

    /* The same group again: only what was stored was committed, so the
     * records after STORED_UPTO are delivered again (at-least-once). */
    consume_once(&second, N - STORED_UPTO - 1);
    CHECK_EQ_INT(second.records, N - STORED_UPTO - 1);
    CHECK_EQ_INT(second.first_offset, STORED_UPTO + 1);
}

int main(void) {
    sluice_broker *broker = NULL;
    if (start_loop_and_broker(&loop, &broker)) return 1;
    bootstrap = sluice_broker_bootstrap(broker);
    produce_all();
    test_read_partitions();
    test_manual_store();
    sluice_broker_free(broker);
    sluice_loop_free(loop);
    return check_summary("test_kafka_manual");
}
