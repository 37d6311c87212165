/* Closing Kafka clients is bounded when every broker is gone: a group
 * consumer's close gives up after its timeout (logging why) instead of
 * waiting minutes for the coordinator, and a producer's unconfirmed
 * records are each reported failed. With the brokers up the close still
 * commits what was consumed. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "sluice/broker.h"
#include "sluice/kafka.h"

#define TOPIC "close-test"
#define N_RECORDS 20

static sluice_loop *loop;
static sluice_broker *broker;
static int warnings_about_close;

static void test_log(void *ud, int level, const char *msg) {
    (void)ud;
    if (level <= SLUICE_LOG_WARN && strstr(msg, "group close did not finish")) {
        warnings_about_close++;
        fprintf(stderr, "log: %s\n", msg);
    }
}

typedef struct seen {
    int records, assigned, revoked;
    int delivered, failed, purged;
} seen;

static void pump_until(const int *counter, int want, int timeout_ms) {
    uint64_t deadline = sluice_now_ms() + (uint64_t)timeout_ms;
    while (*counter < want && sluice_now_ms() < deadline)
        sluice_loop_run_once(loop, 50);
}

static void on_delivery(void *ud, void *opaque, const sluice_delivery *d) {
    (void)opaque;
    seen *s = ud;
    if (!d->error) s->delivered++;
    else {
        s->failed++;
        if (strcmp(d->error_name, "PURGE_QUEUE") == 0 || strcmp(d->error_name, "PURGE_INFLIGHT") == 0)
            s->purged++;
    }
}

static void on_record(void *ud, sluice_consumer *c, const sluice_record *r) {
    (void)c; (void)r;
    ((seen *)ud)->records++;
}

static void on_rebalance(void *ud, sluice_consumer *c, int assigned,
                         const sluice_partition *parts, size_t n) {
    (void)c; (void)parts; (void)n;
    seen *s = ud;
    if (assigned) s->assigned++;
    else s->revoked++;
}

static void on_error(void *ud, const char *name, const char *text, int fatal) {
    (void)ud; (void)name; (void)text; (void)fatal;   /* brokers down: expected */
}

static sluice_consumer *start_consumer(seen *s, const char *group) {
    const char *props[] = {
        "bootstrap.servers", sluice_broker_direct_bootstrap(broker), "group.id", group,
        "session.timeout.ms", "6000", "heartbeat.interval.ms", "500",
        /* Long: only the close commits what was consumed. */
        "auto.commit.interval.ms", "60000", "fetch.wait.max.ms", "100",
        "auto.offset.reset", "earliest", NULL };
    static const char *topics[] = { TOPIC, NULL };
    sluice_consumer_config cfg = {
        .props = props, .topics = topics, .start = SLUICE_FROM_COMMITTED,
        .on_record = on_record, .on_rebalance = on_rebalance, .on_error = on_error, .ud = s,
    };
    char err[256] = "";
    sluice_consumer *c = NULL;
    CHECK_EQ_INT(sluice_consumer_new(loop, &cfg, &c, err, sizeof err), 0);
    if (!c) fprintf(stderr, "consumer: %s\n", err);
    return c;
}

static sluice_producer *start_producer(seen *s) {
    const char *props[] = { "bootstrap.servers", sluice_broker_direct_bootstrap(broker), NULL };
    sluice_producer_config cfg = { .props = props, .on_delivery = on_delivery, .ud = s };
    char err[256] = "";
    sluice_producer *p = NULL;
    CHECK_EQ_INT(sluice_producer_new(loop, &cfg, &p, err, sizeof err), 0);
    if (!p) fprintf(stderr, "producer: %s\n", err);
    return p;
}

static void produce(sluice_producer *p, int n) {
    char err[256];
    for (int i = 0; i < n; i++) {
        sluice_message m = { .topic = TOPIC, .value = "v", .value_len = 1, .partition = i % 2 };
        CHECK_EQ_INT(sluice_producer_send(p, &m, NULL, err, sizeof err), 0);
    }
}

static void set_all(int up) {
    char err[256];
    for (int id = 1; id <= sluice_broker_count(broker); id++)
        CHECK_EQ_INT(up ? sluice_broker_set_up(broker, id, err, sizeof err)
                        : sluice_broker_set_down(broker, id, err, sizeof err), 0);
}

/* Brokers up: the close commits, so the group's next member resumes after
 * what was consumed. */
static void test_close_commits(sluice_producer *p, seen *ps) {
    seen s = { 0 };
    sluice_consumer *c = start_consumer(&s, "close-up");
    if (!c) return;
    pump_until(&s.records, N_RECORDS, 15000);
    CHECK_EQ_INT(s.records, N_RECORDS);
    uint64_t t0 = sluice_now_ms();
    sluice_consumer_close(c, 3000);
    uint64_t took = sluice_now_ms() - t0;
    fprintf(stderr, "close with brokers up: %llu ms\n", (unsigned long long)took);
    CHECK(took < 3000);
    CHECK_EQ_INT(s.revoked, 1);
    CHECK_EQ_INT(warnings_about_close, 0);

    produce(p, 1);
    pump_until(&ps->delivered, N_RECORDS + 1, 10000);
    seen s2 = { 0 };
    c = start_consumer(&s2, "close-up");
    if (!c) return;
    pump_until(&s2.records, 1, 15000);
    sluice_loop_run_once(loop, 500);   /* anything older would come now */
    CHECK_EQ_INT(s2.records, 1);
    sluice_consumer_free(c);
}

/* Every broker down: the close returns within its timeout. */
static void test_close_brokers_down(void) {
    seen s = { 0 };
    sluice_consumer *c = start_consumer(&s, "close-down");
    if (!c) return;
    pump_until(&s.records, N_RECORDS + 1, 15000);
    CHECK_EQ_INT(s.records, N_RECORDS + 1);
    set_all(0);
    /* Let the consumer notice: connections drop, heartbeats fail. */
    uint64_t until = sluice_now_ms() + 1000;
    while (sluice_now_ms() < until) sluice_loop_run_once(loop, 50);
    uint64_t t0 = sluice_now_ms();
    sluice_consumer_close(c, 2000);
    uint64_t took = sluice_now_ms() - t0;
    fprintf(stderr, "close with every broker down (timeout 2000 ms): %llu ms\n",
            (unsigned long long)took);
    CHECK(took >= 1900);   /* it did try */
    CHECK(took < 3500);
    CHECK_EQ_INT(warnings_about_close, 1);
    set_all(1);
}

/* Every broker down: a producer's records cannot be confirmed; flush
 * gives up at its deadline and free reports each one failed. */
static void test_producer_brokers_down(void) {
    seen s = { 0 };
    sluice_producer *p = start_producer(&s);
    if (!p) return;
    produce(p, 1);
    pump_until(&s.delivered, 1, 10000);
    CHECK_EQ_INT(s.delivered, 1);
    set_all(0);
    produce(p, 50);
    uint64_t t0 = sluice_now_ms();
    size_t left = sluice_producer_flush(p, 1000);
    uint64_t flushed = sluice_now_ms() - t0;
    CHECK_EQ_INT(left, 50);
    CHECK(flushed < 2000);
    t0 = sluice_now_ms();
    sluice_producer_free(p);
    uint64_t freed = sluice_now_ms() - t0;
    fprintf(stderr, "producer with every broker down: flush %llu ms, free %llu ms\n",
            (unsigned long long)flushed, (unsigned long long)freed);
    CHECK(freed < 2000);
    CHECK_EQ_INT(s.failed, 50);
    CHECK_EQ_INT(s.purged, 50);
    CHECK_EQ_INT(s.delivered, 1);
    set_all(1);
}

int main(void) {
    char err[256];
    sluice_loop_config lcfg = { .log = test_log, .log_level = SLUICE_LOG_INFO };
    if (sluice_loop_new(&lcfg, &loop, err, sizeof err) != 0) return 1;
    sluice_broker_config bcfg = { .brokers = 2, .port = -1 };
    CHECK_EQ_INT(sluice_broker_new(loop, &bcfg, &broker, err, sizeof err), 0);
    if (!broker) return check_summary("test_kafka_close");
    CHECK_EQ_INT(sluice_broker_create_topic(broker, TOPIC, 2, err, sizeof err), 0);

    seen ps = { 0 };
    sluice_producer *p = start_producer(&ps);
    if (p) {
        produce(p, N_RECORDS);
        pump_until(&ps.delivered, N_RECORDS, 10000);
        CHECK_EQ_INT(ps.delivered, N_RECORDS);
        test_close_commits(p, &ps);
        sluice_producer_free(p);
    }
    test_close_brokers_down();
    test_producer_brokers_down();

    sluice_broker_free(broker);
    sluice_loop_free(loop);
    return check_summary("test_kafka_close");
}
