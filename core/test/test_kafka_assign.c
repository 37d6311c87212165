/* Assign mode (no group), against the embedded broker: every partition is
 * assigned directly, from the start the owner chose; a topic created after
 * the start is noticed and read from its beginning; nothing is committed.
 * (The mock cluster answers offsets-for-times with "none": starts by time
 * are checked against Apache Kafka by spec/integration/broadcast_spec.lua.) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "kafka_support.h"
#include "sluice/broker.h"
#include "sluice/kafka.h"
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define TOPIC "assign-me"
#define PARTS 4
#define PER_PART 5

static sluice_loop *loop;
static sluice_broker *broker;
static const char *bootstrap;
static sluice_producer *producer;


static void pump_until(const int *counter, int want, int timeout_ms) { pump_loop_until(loop, counter, want, timeout_ms); }

static int delivered;
static void on_delivery(void *ud, void *opaque, const sluice_delivery *d) {
    (void)ud; (void)opaque;
    if (!d->error) delivered++;
}

/* `per` records to each partition of topic, values "<tag><partition>.<i>". */
static void produce(const char *topic, const char *tag, int per) {
    char err[256];
    int want = delivered + PARTS * per;
    for (int p = 0; p < PARTS; p++)
        for (int i = 0; i < per; i++) {
            char value[32];
            snprintf(value, sizeof value, "%s%d.%d", tag, p, i);
            sluice_message m = { .topic = topic, .value = value, .value_len = strlen(value),
                                 .partition = p };
            CHECK_EQ_INT(sluice_producer_send(producer, &m, NULL, err, sizeof err), 0);
        }
    pump_until(&delivered, want, 15000);
    CHECK_EQ_INT(delivered, want);
}

typedef struct state {
    int records, assigned, revoked;
    int bad_order;                  /* a record before its partition's assignment */
    int64_t next[PARTS];            /* per partition: offset of the next record */
    int64_t start[PARTS];           /* offsets reported by on_rebalance */
    int has_part[PARTS];
    char first[PARTS][32];
} state;

static void on_record(void *ud, sluice_consumer *c, const sluice_record *r) {
    (void)c;
    state *s = ud;
    if (r->partition < 0 || r->partition >= PARTS || !s->has_part[r->partition]) {
        s->bad_order++;
        return;
    }
    if (!s->first[r->partition][0])
        snprintf(s->first[r->partition], sizeof s->first[0], "%.*s", (int)r->value_len, (const char *)r->value);
    /* In order, none twice, none skipped. */
    if (s->next[r->partition] >= 0 && r->offset != s->next[r->partition]) s->bad_order++;
    s->next[r->partition] = r->offset + 1;
    s->records++;
}

static void on_rebalance(void *ud, sluice_consumer *c, int assigned,
                         const sluice_partition *parts, size_t n) {
    (void)c;
    state *s = ud;
    for (size_t i = 0; i < n; i++) {
        if (parts[i].partition < 0 || parts[i].partition >= PARTS) continue;
        if (assigned) {
            s->has_part[parts[i].partition] = 1;
            s->start[parts[i].partition] = parts[i].offset;
        }
    }
    if (assigned) s->assigned += (int)n;
    else s->revoked += (int)n;
}

static sluice_consumer *start(state *s, const char *topic, int64_t from,
                              const sluice_partition *offsets, size_t noffsets) {
    const char *props[] = { "bootstrap.servers", bootstrap, "allow.auto.create.topics", "false", NULL };
    const char *topics[] = { topic, NULL };
    memset(s, 0, sizeof *s);
    for (int p = 0; p < PARTS; p++) s->next[p] = -1;
    sluice_consumer_config cfg = {
        .props = props, .topics = topics, .start = from, .assign = 1,
        .start_offsets = offsets, .start_offsets_n = noffsets, .refresh_ms = 200,
        .on_record = on_record, .on_rebalance = on_rebalance, .ud = s,
    };
    sluice_consumer *c = NULL;
    char err[256];
    CHECK_EQ_INT(sluice_consumer_new(loop, &cfg, &c, err, sizeof err), 0);
    return c;
}

/* From the beginning: every record of every partition, each partition
 * reported before its records. Commit is refused (no group); closing
 * revokes all. */
static void test_beginning(void) {
    state s;
    char err[256];
    sluice_consumer *c = start(&s, TOPIC, SLUICE_FROM_EARLIEST, NULL, 0);
    if (!c) return;
    pump_until(&s.records, PARTS * PER_PART, 20000);
    CHECK_EQ_INT(s.records, PARTS * PER_PART);
    CHECK_EQ_INT(s.assigned, PARTS);
    CHECK_EQ_INT(s.bad_order, 0);
    for (int p = 0; p < PARTS; p++) {
        char want[32];
        snprintf(want, sizeof want, "old%d.0", p);
        CHECK_EQ_STR(s.first[p], want);
        CHECK_EQ_INT(s.start[p], 0);   /* the beginning, looked up: an offset */
    }
    CHECK_EQ_INT(sluice_consumer_commit(c, 1, err, sizeof err), SLUICE_ESTATE);
    sluice_consumer_close(c, -1);
    CHECK_EQ_INT(s.revoked, PARTS);
}

/* Explicit offsets for two partitions, the rest by a start time that no
 * record reaches (the mock answers every time lookup so): exactly the
 * records after those offsets, the others from the end as of the lookup,
 * then new records on every partition. */
static void test_offsets_and_time(void) {
    state s;
    sluice_partition offsets[] = { { TOPIC, 0, 3 }, { TOPIC, 2, 1 } };
    sluice_consumer *c = start(&s, TOPIC, SLUICE_FROM_TIME, offsets, 2);
    if (!c) return;
    int want = (PER_PART - 3) + (PER_PART - 1);
    pump_until(&s.assigned, PARTS, 20000);
    CHECK_EQ_INT(s.assigned, PARTS);
    CHECK_EQ_INT(s.start[0], 3);
    CHECK_EQ_INT(s.start[1], PER_PART);
    CHECK_EQ_INT(s.start[2], 1);
    CHECK_EQ_INT(s.start[3], PER_PART);
    produce(TOPIC, "new", 1);
    pump_until(&s.records, want + PARTS, 20000);
    CHECK_EQ_INT(s.records, want + PARTS);
    CHECK_EQ_STR(s.first[0], "old0.3");
    CHECK_EQ_STR(s.first[1], "new1.0");
    CHECK_EQ_STR(s.first[2], "old2.1");
    CHECK_EQ_STR(s.first[3], "new3.0");
    CHECK_EQ_INT(s.bad_order, 0);
    sluice_consumer_close(c, -1);
}

/* A topic that does not exist at the start: noticed once created, and read
 * from its beginning even with the start at the end (it was written after
 * the consumer started). */
static void test_new_topic(void) {
    state s;
    /* The mock creates a topic on any request for it: it is made to answer
     * "unknown topic" until the test "creates" it. */
    rd_kafka_mock_cluster_t *mc = sluice_broker_mock_cluster(broker);
    rd_kafka_mock_topic_set_error(mc, "appears-later", RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART);
    sluice_consumer *c = start(&s, "appears-later", SLUICE_FROM_LATEST, NULL, 0);
    if (!c) return;
    uint64_t settle = sluice_now_ms() + 500;   /* a few missing-topic rounds */
    while (sluice_now_ms() < settle) sluice_loop_run_once(loop, 50);
    CHECK_EQ_INT(s.assigned, 0);
    rd_kafka_mock_topic_set_error(mc, "appears-later", RD_KAFKA_RESP_ERR_NO_ERROR);
    produce("appears-later", "fresh", 2);
    pump_until(&s.records, PARTS * 2, 20000);
    CHECK_EQ_INT(s.records, PARTS * 2);
    CHECK_EQ_INT(s.assigned, PARTS);
    for (int p = 0; p < PARTS; p++) {
        char want[32];
        snprintf(want, sizeof want, "fresh%d.0", p);
        CHECK_EQ_STR(s.first[p], want);
        CHECK_EQ_INT(s.start[p], 0);   /* the beginning, looked up: an offset */
    }
    CHECK_EQ_INT(s.bad_order, 0);
    sluice_consumer_close(c, -1);
}

static void test_refused(void) {
    const char *props[] = { "bootstrap.servers", bootstrap, NULL };
    const char *topics[] = { TOPIC, NULL };
    sluice_consumer_config cfg = { .props = props, .topics = topics, .assign = 1,
                                   .start = SLUICE_FROM_COMMITTED, .on_record = on_record };
    sluice_consumer *c = NULL;
    char err[256];
    CHECK_EQ_INT(sluice_consumer_new(loop, &cfg, &c, err, sizeof err), SLUICE_EINVAL);
    CHECK_EQ_STR(err, "consumer: assign mode has no committed offsets to start from");
    cfg.assign = 0;
    cfg.start = SLUICE_FROM_TIME;
    const char *group[] = { "bootstrap.servers", bootstrap, "group.id", "g", NULL };
    cfg.props = group;
    CHECK_EQ_INT(sluice_consumer_new(loop, &cfg, &c, err, sizeof err), SLUICE_EINVAL);
    CHECK_EQ_STR(err, "consumer: a start time needs assign mode");
}

int main(void) {
    char err[256];
    if (start_loop_and_broker(&loop, &broker)) return 1;
    bootstrap = sluice_broker_bootstrap(broker);
    const char *props[] = { "bootstrap.servers", bootstrap, NULL };
    sluice_producer_config pcfg = { .props = props, .on_delivery = on_delivery };
    CHECK_EQ_INT(sluice_broker_create_topic(broker, TOPIC, PARTS, err, sizeof err), 0);
    CHECK_EQ_INT(sluice_producer_new(loop, &pcfg, &producer, err, sizeof err), 0);
    produce(TOPIC, "old", PER_PART);
    test_refused();
    test_beginning();
    test_offsets_and_time();
    test_new_topic();
    sluice_producer_free(producer);
    sluice_broker_free(broker);
    sluice_loop_free(loop);
    return check_summary("test_kafka_assign");
}
