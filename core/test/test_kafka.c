/* Producer and consumer against the embedded broker over loopback TCP,
 * driven by the real loop. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "kafka_support.h"
#include "sluice/broker.h"
#include "sluice/kafka.h"
#include "../src/kafka_internal.h"

#define N_MESSAGES 10000
#define N_MORE 100
#define TOPIC "movie-results"
#define BASE_TS 1700000000000LL

static sluice_loop *loop;
static const char *bootstrap;


static void pump_until(const int *counter, int want, int timeout_ms) { pump_loop_until(loop, counter, want, timeout_ms); }

static void pump_for(int ms) {
    uint64_t deadline = sluice_now_ms() + (uint64_t)ms;
    while (sluice_now_ms() < deadline)
        sluice_loop_run_once(loop, (int)(deadline - sluice_now_ms()) + 1);
}


/* ---- producing ---------------------------------------------------------- */

typedef struct produce_state {
    int reports;                 /* delivery reports so far */
    int failed;
    int per_message[N_MESSAGES + N_MORE];
    int64_t last_offset[64];     /* per partition */
    int out_of_order;
    int pressure_on, pressure_off;
    char last_error_name[64];
} produce_state;

static void on_delivery(void *ud, void *msg_opaque, const sluice_delivery *d) {
    produce_state *s = ud;
    size_t index = (size_t)(uintptr_t)msg_opaque;
    s->reports++;
    if (index < N_MESSAGES + N_MORE) s->per_message[index]++;
    if (d->error) {
        s->failed++;
        snprintf(s->last_error_name, sizeof s->last_error_name, "%s", d->error_name);
        return;
    }
    if (d->partition >= 0 && d->partition < 64) {
        if (d->offset <= s->last_offset[d->partition]) s->out_of_order++;
        s->last_offset[d->partition] = d->offset;
    }
}

static void on_pressure(void *ud, int high) {
    produce_state *s = ud;
    if (high) s->pressure_on++;
    else s->pressure_off++;
}

static int send_numbered(sluice_producer *p, size_t i) {
    char key[32], value[64], seq[32];
    snprintf(key, sizeof key, "actor-%zu", i % 97);
    snprintf(value, sizeof value, "{\"row\":%zu}", i);
    snprintf(seq, sizeof seq, "%zu", i);
    sluice_header headers[2] = {
        { "seq", seq, strlen(seq) },
        { "empty", NULL, 0 },
    };
    sluice_message m = {
        .topic = TOPIC,
        .key = key, .key_len = strlen(key),
        .value = value, .value_len = strlen(value),
        .headers = headers, .header_count = 2,
        .partition = -1,
        .timestamp_ms = BASE_TS + (int64_t)i,
    };
    char err[256];
    return sluice_producer_send(p, &m, (void *)(uintptr_t)i, err, sizeof err);
}

static void test_bad_property(void) {
    char err[256] = "";
    sluice_producer *p = NULL;
    const char *props[] = { "bootstrap.servers", bootstrap, "no.such.property", "1", NULL };
    sluice_producer_config cfg = { .props = props };
    CHECK_EQ_INT(sluice_producer_new(loop, &cfg, &p, err, sizeof err), SLUICE_EINVAL);
    CHECK(p == NULL);
    CHECK(strstr(err, "No such configuration property") && strstr(err, "no.such.property"));

    const char *bad_value[] = { "acks", "most", NULL };
    cfg.props = bad_value;
    CHECK_EQ_INT(sluice_producer_new(loop, &cfg, &p, err, sizeof err), SLUICE_EINVAL);
    CHECK(strstr(err, "acks") != NULL);

    /* A user's acks=1 must not collide with the idempotence default. */
    const char *acks_one[] = { "bootstrap.servers", bootstrap, "acks", "1", NULL };
    cfg.props = acks_one;
    CHECK_EQ_INT(sluice_producer_new(loop, &cfg, &p, err, sizeof err), 0);
    sluice_producer_free(p);

    sluice_consumer *c = NULL;
    const char *no_group[] = { "bootstrap.servers", bootstrap, NULL };
    const char *topics[] = { TOPIC, NULL };
    sluice_consumer_config ccfg = { .props = no_group, .topics = topics };
    CHECK_EQ_INT(sluice_consumer_new(loop, &ccfg, &c, err, sizeof err), SLUICE_EINVAL);
    CHECK(strstr(err, "group.id") != NULL);
}

/* What sluice_producer_topics reported. */
typedef struct topics_seen {
    int n;
    sluice_topic_counts last;
    sluice_error_count error;   /* the first error count */
} topics_seen;

static void on_topic(void *ud, const sluice_topic_counts *t) {
    topics_seen *ts = ud;
    ts->n++;
    ts->last = *t;
    if (t->nerrors) ts->error = t->errors[0];
}

static void test_produce(produce_state *s) {
    char err[256] = "";
    sluice_producer *p = NULL;
    const char *props[] = { "bootstrap.servers", bootstrap, NULL };
    sluice_producer_config cfg = {
        .props = props, .on_delivery = on_delivery, .on_pressure = on_pressure,
        .high_water = 5000, .low_water = 1000, .ud = s,
    };
    CHECK_EQ_INT(sluice_producer_new(loop, &cfg, &p, err, sizeof err), 0);
    if (!p) return;
    for (int i = 0; i < 64; i++) s->last_offset[i] = -1;

    uint64_t t0 = sluice_now_ms();
    int refused = 0;
    for (size_t i = 0; i < N_MESSAGES; i++)
        if (send_numbered(p, i) != 0) refused++;
    CHECK_EQ_INT(refused, 0);
    CHECK_EQ_INT(sluice_producer_in_flight(p), N_MESSAGES - s->reports);
    pump_until(&s->reports, N_MESSAGES, 20000);
    fprintf(stderr, "produced %d messages in %llu ms\n", N_MESSAGES,
            (unsigned long long)(sluice_now_ms() - t0));
    CHECK_EQ_INT(s->reports, N_MESSAGES);
    CHECK_EQ_INT(s->failed, 0);
    CHECK_EQ_INT(s->out_of_order, 0);
    int once = 0;
    for (size_t i = 0; i < N_MESSAGES; i++) once += s->per_message[i] == 1;
    CHECK_EQ_INT(once, N_MESSAGES);
    CHECK_EQ_INT(sluice_producer_in_flight(p), 0);
    CHECK_EQ_INT(s->pressure_on, 1);
    CHECK_EQ_INT(s->pressure_off, 1);
    int partitions_used = 0;
    for (int i = 0; i < 64; i++) partitions_used += s->last_offset[i] >= 0;
    CHECK_EQ_INT(partitions_used, 4);

    /* Counted per topic; a record over message.max.bytes is refused and
     * counted by its code. */
    topics_seen ts;
    memset(&ts, 0, sizeof ts);
    sluice_producer_topics(p, on_topic, &ts);
    CHECK_EQ_INT(ts.n, 1);
    CHECK(strcmp(ts.last.topic, TOPIC) == 0);
    CHECK_EQ_INT(ts.last.sent, N_MESSAGES);
    CHECK_EQ_INT(ts.last.delivered, N_MESSAGES);
    CHECK_EQ_INT(ts.last.failed, 0);
    CHECK_EQ_INT(ts.last.nerrors, 0);
    static char big[2000000];
    sluice_message m = { .topic = TOPIC, .value = big, .value_len = sizeof big, .partition = -1 };
    CHECK_EQ_INT(sluice_producer_send(p, &m, NULL, err, sizeof err), SLUICE_EKAFKA);
    memset(&ts, 0, sizeof ts);
    sluice_producer_topics(p, on_topic, &ts);
    CHECK_EQ_INT(ts.last.sent, N_MESSAGES);
    CHECK_EQ_INT(ts.last.nerrors, 1);
    CHECK(ts.error.name && strcmp(ts.error.name, "MSG_SIZE_TOO_LARGE") == 0);
    CHECK_EQ_INT(ts.error.refused, 1);
    CHECK_EQ_INT(ts.error.count, 1);

    /* Idle: no wake-ups at all. */
    unsigned long before = sluice_producer_wakeups(p);
    pump_for(1000);
    CHECK_EQ_INT(sluice_producer_wakeups(p) - before, 0);

    CHECK_EQ_INT(sluice_producer_flush(p, 1000), 0);
    sluice_producer_free(p);
    CHECK_EQ_INT(s->reports, N_MESSAGES);
}

/* ---- consuming ---------------------------------------------------------- */

typedef struct consume_state {
    int records;
    int seen[N_MESSAGES + N_MORE];
    int bad;                     /* records whose fields did not match */
    int assigned_events, revoked_events;
    int assigned_partitions;
    int record_before_assign;
    int pause_at;                /* pause when records reaches this; 0: never */
    int paused;
    int records_while_paused;
    uint64_t first_assign_ms;
} consume_state;

static int record_matches(const sluice_record *r, size_t *index) {
    if (r->header_count != 2) return 0;
    if (strcmp(r->headers[0].name, "seq") != 0 || !r->headers[0].value) return 0;
    if (strcmp(r->headers[1].name, "empty") != 0 || r->headers[1].value != NULL) return 0;
    char seq[32];
    size_t n = r->headers[0].value_len < sizeof seq - 1 ? r->headers[0].value_len : sizeof seq - 1;
    memcpy(seq, r->headers[0].value, n);
    seq[n] = '\0';
    size_t i = strtoul(seq, NULL, 10);
    *index = i;
    char key[32], value[64];
    snprintf(key, sizeof key, "actor-%zu", i % 97);
    snprintf(value, sizeof value, "{\"row\":%zu}", i);
    return r->key_len == strlen(key) && memcmp(r->key, key, r->key_len) == 0 &&
           r->value_len == strlen(value) && memcmp(r->value, value, r->value_len) == 0 &&
           r->timestamp_ms == BASE_TS + (int64_t)i && strcmp(r->topic, TOPIC) == 0 &&
           r->offset >= 0;
}

static void on_record(void *ud, sluice_consumer *c, const sluice_record *r) {
    consume_state *s = ud;
    size_t index = 0;
    s->records++;
    if (!s->assigned_events) s->record_before_assign++;
    if (s->paused) s->records_while_paused++;
    if (!record_matches(r, &index) || index >= N_MESSAGES + N_MORE) s->bad++;
    else s->seen[index]++;
    if (s->pause_at && s->records == s->pause_at) {
        CHECK_EQ_INT(sluice_consumer_pause(c, 1), 0);
        s->paused = 1;
    }
}

static void on_rebalance(void *ud, sluice_consumer *c, int assigned,
                         const sluice_partition *parts, size_t n) {
    (void)c; (void)parts;
    consume_state *s = ud;
    if (assigned) {
        if (!s->assigned_events) s->first_assign_ms = sluice_now_ms();
        s->assigned_events++;
        s->assigned_partitions += (int)n;
    } else {
        s->revoked_events++;
    }
}

static int consumer_errors;
static void on_consumer_error(void *ud, const char *name, const char *text, int fatal) {
    (void)ud;
    consumer_errors++;
    fprintf(stderr, "consumer error %s: %s (fatal %d)\n", name, text, fatal);
}

static sluice_consumer *start_consumer_in(consume_state *s, int64_t start, const char *group,
                                          const char *strategy,
                                          void (*record_fn)(void *, sluice_consumer *,
                                                            const sluice_record *)) {
    const char *props[] = {
        "bootstrap.servers", bootstrap, "group.id", group,
        "session.timeout.ms", "6000", "heartbeat.interval.ms", "500",
        "auto.commit.interval.ms", "500", "fetch.wait.max.ms", "100",
        "partition.assignment.strategy", strategy,
        NULL };
    static const char *topics[] = { TOPIC, NULL };
    sluice_consumer_config cfg = {
        .props = props, .topics = topics, .start = start,
        .on_record = record_fn, .on_rebalance = on_rebalance,
        .on_error = on_consumer_error, .ud = s,
    };
    char err[256] = "";
    sluice_consumer *c = NULL;
    CHECK_EQ_INT(sluice_consumer_new(loop, &cfg, &c, err, sizeof err), 0);
    if (!c) fprintf(stderr, "consumer: %s\n", err);
    return c;
}

static sluice_consumer *start_consumer(consume_state *s, int64_t start) {
    return start_consumer_in(s, start, "sluice-test", "range,roundrobin", on_record);
}

typedef struct lag_seen { int n; int64_t position_sum; } lag_seen;

static void on_lag(void *ud, const sluice_partition_lag *l) {
    lag_seen *ls = ud;
    ls->n++;
    if (l->position > 0) ls->position_sum += l->position;
}

static void test_consume(void) {
    static consume_state s;
    memset(&s, 0, sizeof s);
    s.pause_at = 2000;
    uint64_t t0 = sluice_now_ms();
    sluice_consumer *c = start_consumer(&s, SLUICE_FROM_EARLIEST);
    if (!c) return;

    pump_until(&s.records, s.pause_at, 30000);
    CHECK(s.assigned_events >= 1);
    CHECK_EQ_INT(s.record_before_assign, 0);
    CHECK_EQ_INT(s.assigned_partitions, 4);
    if (s.first_assign_ms)
        fprintf(stderr, "first assignment after %llu ms\n",
                (unsigned long long)(s.first_assign_ms - t0));
    CHECK_EQ_INT(s.records, s.pause_at);

    /* Paused: nothing more arrives. */
    pump_for(1500);
    CHECK_EQ_INT(s.records_while_paused, 0);
    CHECK_EQ_INT(s.records, s.pause_at);

    /* Positions: the next offsets the app gets add up to what it got. */
    lag_seen ls;
    memset(&ls, 0, sizeof ls);
    CHECK_EQ_INT(sluice_consumer_lag(c, on_lag, &ls), 0);
    CHECK_EQ_INT(ls.n, 4);
    CHECK_EQ_INT(ls.position_sum, s.pause_at);

    /* Idle (paused) consumer: no wake-ups. */
    unsigned long before = sluice_consumer_wakeups(c);
    pump_for(1000);
    fprintf(stderr, "paused consumer wake-ups in 1 s: %lu\n", sluice_consumer_wakeups(c) - before);
    CHECK(sluice_consumer_wakeups(c) - before <= 2);

    s.paused = 0;
    CHECK_EQ_INT(sluice_consumer_pause(c, 0), 0);
    pump_until(&s.records, N_MESSAGES, 30000);
    CHECK_EQ_INT(s.records, N_MESSAGES);
    CHECK_EQ_INT(s.bad, 0);
    int once = 0;
    for (size_t i = 0; i < N_MESSAGES; i++) once += s.seen[i] == 1;
    CHECK_EQ_INT(once, N_MESSAGES);

    before = sluice_consumer_wakeups(c);
    pump_for(1000);
    fprintf(stderr, "idle consumer wake-ups in 1 s: %lu\n", sluice_consumer_wakeups(c) - before);
    CHECK(sluice_consumer_wakeups(c) - before <= 2);

    char err[256];
    CHECK_EQ_INT(sluice_consumer_commit(c, 1, err, sizeof err), 0);
    int revoked_before = s.revoked_events;
    sluice_consumer_free(c);
    CHECK_EQ_INT(s.revoked_events, revoked_before + 1);
}

/* on_records: every record once, in batches, none before its assignment;
 * on_delivery_end closes each run of delivery reports. */
static int batch_calls, batch_max;
static void on_records(void *ud, sluice_consumer *c, const sluice_record *rs, size_t n) {
    for (size_t i = 0; i < n; i++) on_record(ud, c, &rs[i]);
    batch_calls++;
    if ((int)n > batch_max) batch_max = (int)n;
}

typedef struct end_state { int reports, ends, reports_at_last_end; } end_state;
static void on_delivery_counted(void *ud, void *msg_opaque, const sluice_delivery *d) {
    (void)msg_opaque; (void)d;
    ((end_state *)ud)->reports++;
}
static void on_delivery_end_counted(void *ud) {
    end_state *e = ud;
    e->ends++;
    e->reports_at_last_end = e->reports;
}

static void test_consume_batches(void) {
    static consume_state s;
    memset(&s, 0, sizeof s);
    const char *props[] = {
        "bootstrap.servers", bootstrap, "group.id", "sluice-batch",
        "session.timeout.ms", "6000", "heartbeat.interval.ms", "500", NULL };
    static const char *topics[] = { TOPIC, NULL };
    sluice_consumer_config cfg = {
        .props = props, .topics = topics, .start = SLUICE_FROM_EARLIEST,
        .on_records = on_records, .on_rebalance = on_rebalance,
        .on_error = on_consumer_error, .ud = &s,
    };
    char err[256] = "";
    sluice_consumer *c = NULL;
    CHECK_EQ_INT(sluice_consumer_new(loop, &cfg, &c, err, sizeof err), 0);
    if (!c) return;
    pump_until(&s.records, N_MESSAGES, 30000);
    CHECK(s.records >= N_MESSAGES);
    CHECK_EQ_INT(s.bad, 0);
    CHECK_EQ_INT(s.record_before_assign, 0);
    int once = 0;
    for (size_t i = 0; i < N_MESSAGES; i++) once += s.seen[i] == 1;
    CHECK_EQ_INT(once, N_MESSAGES);
    fprintf(stderr, "batches: %d calls for %d records, largest %d\n", batch_calls, s.records, batch_max);
    CHECK(batch_calls > 0 && batch_calls < s.records);
    CHECK(batch_max <= SLUICE_CONSUMER_BATCH);
    sluice_consumer_free(c);

    end_state e = { 0, 0, 0 };
    sluice_producer *p = NULL;
    const char *pprops[] = { "bootstrap.servers", bootstrap, NULL };
    sluice_producer_config pcfg = { .props = pprops, .on_delivery = on_delivery_counted,
                                    .on_delivery_end = on_delivery_end_counted, .ud = &e };
    CHECK_EQ_INT(sluice_producer_new(loop, &pcfg, &p, err, sizeof err), 0);
    if (!p) return;
    sluice_message m = { .topic = "delivery-runs", .value = "v", .value_len = 1, .partition = -1 };
    for (size_t i = 0; i < 500; i++) CHECK_EQ_INT(sluice_producer_send(p, &m, NULL, err, sizeof err), 0);
    pump_until(&e.reports, 500, 20000);
    CHECK_EQ_INT(e.reports, 500);
    /* Every report was followed by an end, in fewer runs than reports. */
    CHECK_EQ_INT(e.reports_at_last_end, 500);
    CHECK(e.ends >= 1 && e.ends < 500);
    sluice_producer_free(p);
}

/* After a clean close, a new member of the group starts at the committed
 * offsets: only records produced since are delivered. */
static void test_resume_from_committed(produce_state *ps) {
    char err[256] = "";
    sluice_producer *p = NULL;
    const char *props[] = { "bootstrap.servers", bootstrap, NULL };
    sluice_producer_config cfg = { .props = props, .on_delivery = on_delivery, .ud = ps };
    CHECK_EQ_INT(sluice_producer_new(loop, &cfg, &p, err, sizeof err), 0);
    if (!p) return;
    for (size_t i = N_MESSAGES; i < N_MESSAGES + N_MORE; i++)
        CHECK_EQ_INT(send_numbered(p, i), 0);
    CHECK_EQ_INT(sluice_producer_flush(p, 10000), 0);
    sluice_producer_free(p);

    static consume_state s;
    memset(&s, 0, sizeof s);
    sluice_consumer *c = start_consumer(&s, SLUICE_FROM_COMMITTED);
    if (!c) return;
    pump_until(&s.records, N_MORE, 30000);
    pump_for(500);   /* anything re-delivered would show up now */
    CHECK_EQ_INT(s.records, N_MORE);
    CHECK_EQ_INT(s.bad, 0);
    int redelivered = 0, fresh = 0;
    for (size_t i = 0; i < N_MESSAGES; i++) redelivered += s.seen[i];
    for (size_t i = N_MESSAGES; i < N_MESSAGES + N_MORE; i++) fresh += s.seen[i] == 1;
    CHECK_EQ_INT(redelivered, 0);
    CHECK_EQ_INT(fresh, N_MORE);
    sluice_consumer_free(c);
}

/* An absolute start offset applies to every assigned partition; the
 * cooperative protocol goes through incremental assign. */
static void test_absolute_start(const produce_state *ps) {
    static consume_state s;
    memset(&s, 0, sizeof s);
    const int64_t start = 2000;
    int expected = 0;
    for (int i = 0; i < 64; i++)
        if (ps->last_offset[i] + 1 > start) expected += (int)(ps->last_offset[i] + 1 - start);
    CHECK(expected > 0);
    sluice_consumer *c = start_consumer_in(&s, start, "sluice-abs", "cooperative-sticky", on_record);
    if (!c) return;
    /* Paused before any assignment: assigned partitions start paused. */
    CHECK_EQ_INT(sluice_consumer_pause(c, 1), 0);
    pump_until(&s.assigned_events, 1, 30000);
    pump_for(1000);
    CHECK_EQ_INT(s.assigned_partitions, 4);
    CHECK_EQ_INT(s.records, 0);
    CHECK_EQ_INT(sluice_consumer_pause(c, 0), 0);
    pump_until(&s.records, expected, 30000);
    pump_for(300);
    CHECK_EQ_INT(s.records, expected);
    CHECK_EQ_INT(s.bad, 0);
    CHECK_EQ_INT(s.assigned_partitions, 4);
    sluice_consumer_free(c);
    CHECK(s.revoked_events >= 1);
}

/* A handler may free its own consumer: nothing more is delivered. */
static sluice_consumer *self_closing;

static void on_record_then_close(void *ud, sluice_consumer *c, const sluice_record *r) {
    consume_state *s = ud;
    (void)r;
    s->records++;
    CHECK(c == self_closing);
    if (s->records == 10) {
        sluice_consumer_free(c);
        self_closing = NULL;
    }
}

static void test_free_from_handler(void) {
    static consume_state s;
    memset(&s, 0, sizeof s);
    self_closing = start_consumer_in(&s, SLUICE_FROM_EARLIEST, "sluice-self", "range", on_record_then_close);
    if (!self_closing) return;
    pump_until(&s.records, 10, 30000);
    pump_for(500);
    CHECK_EQ_INT(s.records, 10);
    CHECK(self_closing == NULL);
}

typedef struct self_free_producer {
    sluice_producer *p;
    int reports;
    int send_after_free;   /* what a send right after the free returned */
} self_free_producer;

static void on_delivery_then_free(void *ud, void *msg_opaque, const sluice_delivery *d) {
    (void)msg_opaque; (void)d;
    self_free_producer *s = ud;
    s->reports++;
    if (s->p) {
        sluice_producer *p = s->p;
        sluice_producer_free(p);
        s->p = NULL;
        /* Freed from its own callback: it still exists until the callback
         * returns, and refuses more (nothing would report it). */
        s->send_after_free = send_numbered(p, 99);
    }
}

static void test_producer_free_from_handler(void) {
    static self_free_producer s;
    char err[256];
    const char *props[] = { "bootstrap.servers", bootstrap, NULL };
    sluice_producer_config cfg = { .props = props, .on_delivery = on_delivery_then_free, .ud = &s };
    CHECK_EQ_INT(sluice_producer_new(loop, &cfg, &s.p, err, sizeof err), 0);
    if (!s.p) return;
    for (size_t i = 0; i < 5; i++) CHECK_EQ_INT(send_numbered(s.p, i), 0);
    pump_until(&s.reports, 5, 10000);
    pump_for(200);
    /* Each accepted message is still reported exactly once. */
    CHECK_EQ_INT(s.reports, 5);
    CHECK(s.p == NULL);
    CHECK_EQ_INT(s.send_after_free, SLUICE_ECLOSED);
}

/* A record purged by a free outside any callback: its report must not
 * be able to queue another (the producer is going away). */
static int send_from_purged_report = 1;
static void on_delivery_send_again(void *ud, void *msg_opaque, const sluice_delivery *d) {
    (void)msg_opaque; (void)d;
    send_from_purged_report = send_numbered(*(sluice_producer **)ud, 98);
}

static void test_no_send_from_purged_report(void) {
    static sluice_producer *p;
    char err[256] = "", dead[64];
    snprintf(dead, sizeof dead, "127.0.0.1:%d", unused_port());
    const char *props[] = { "bootstrap.servers", dead, NULL };
    sluice_producer_config cfg = { .props = props, .on_delivery = on_delivery_send_again, .ud = &p };
    CHECK_EQ_INT(sluice_producer_new(loop, &cfg, &p, err, sizeof err), 0);
    if (!p) return;
    CHECK_EQ_INT(send_numbered(p, 0), 0);
    sluice_producer_free(p);
    CHECK_EQ_INT(send_from_purged_report, SLUICE_ECLOSED);
}

/* The settings the producer runs with, and the misuse of the call. */
static void test_conf_get(void) {
    char err[256] = "", value[64], tiny[2];
    const char *props[] = { "bootstrap.servers", bootstrap, "client.id", "sluice-conf-test", NULL };
    sluice_producer_config cfg = { .props = props };
    sluice_producer *p = NULL;
    CHECK_EQ_INT(sluice_producer_new(loop, &cfg, &p, err, sizeof err), 0);
    if (!p) return;
    CHECK_EQ_INT(sluice_producer_conf_get(p, "enable.idempotence", value, sizeof value, err, sizeof err), 0);
    CHECK_EQ_STR(value, "true");
    CHECK_EQ_INT(sluice_producer_conf_get(p, "client.id", value, sizeof value, err, sizeof err), 0);
    CHECK_EQ_STR(value, "sluice-conf-test");
    CHECK_EQ_INT(sluice_producer_conf_get(p, "client.id", tiny, sizeof tiny, err, sizeof err), SLUICE_ETOOBIG);
    CHECK_EQ_STR(err, "client.id: value longer than 1 bytes");
    CHECK_EQ_INT(sluice_producer_conf_get(p, "no.such", value, sizeof value, err, sizeof err), SLUICE_EINVAL);
    CHECK_EQ_STR(err, "no such Kafka property: no.such");
    CHECK_EQ_INT(sluice_producer_conf_get(NULL, "acks", value, sizeof value, err, sizeof err), SLUICE_EINVAL);
    CHECK_EQ_STR(err, "conf_get: producer, name and buffer are required");
    sluice_producer_free(p);
}

/* ---- failures ----------------------------------------------------------- */

static void test_unreachable(void) {
    char err[256] = "", dead[64];
    snprintf(dead, sizeof dead, "127.0.0.1:%d", unused_port());

    /* Timed out: reported through the loop with librdkafka's name. */
    static produce_state s;
    memset(&s, 0, sizeof s);
    const char *timeout_props[] = { "bootstrap.servers", dead, "message.timeout.ms", "300", NULL };
    sluice_producer_config cfg = { .props = timeout_props, .on_delivery = on_delivery, .ud = &s };
    sluice_producer *p = NULL;
    CHECK_EQ_INT(sluice_producer_new(loop, &cfg, &p, err, sizeof err), 0);
    if (!p) return;
    CHECK_EQ_INT(send_numbered(p, 0), 0);
    pump_until(&s.reports, 1, 5000);
    CHECK_EQ_INT(s.reports, 1);
    CHECK_EQ_INT(s.failed, 1);
    CHECK_EQ_STR(s.last_error_name, "MSG_TIMED_OUT");
    sluice_producer_free(p);

    /* A full queue refuses with EFULL; free reports every accepted one once. */
    memset(&s, 0, sizeof s);
    const char *small_props[] = { "bootstrap.servers", dead,
                                  "queue.buffering.max.messages", "10", NULL };
    cfg.props = small_props;
    p = NULL;
    CHECK_EQ_INT(sluice_producer_new(loop, &cfg, &p, err, sizeof err), 0);
    if (!p) return;
    int accepted = 0, full = 0;
    for (size_t i = 0; i < 15; i++) {
        int rc = send_numbered(p, i);
        if (rc == 0) accepted++;
        else if (rc == SLUICE_EFULL) full++;
    }
    CHECK_EQ_INT(accepted, 10);
    CHECK_EQ_INT(full, 5);
    pump_for(200);
    CHECK_EQ_INT(s.reports, 0);
    sluice_producer_free(p);
    CHECK_EQ_INT(s.reports, 10);
    CHECK_EQ_INT(s.failed, 10);
    int once = 0;
    for (size_t i = 0; i < 10; i++) once += s.per_message[i] == 1;
    CHECK_EQ_INT(once, 10);
    CHECK_EQ_STR(s.last_error_name, "PURGE_QUEUE");
}

/* An idle consumer stays in its group past max.poll.interval.ms: nothing
 * to poll for is not "stuck" (librdkafka would otherwise leave the group,
 * revoke and rejoin, logging MAX_POLL_EXCEEDED). */
static void test_idle_keeps_membership(void) {
    static consume_state s;
    const char *props[] = {
        "bootstrap.servers", bootstrap, "group.id", "sluice-idle",
        "session.timeout.ms", "3000", "heartbeat.interval.ms", "300",
        "max.poll.interval.ms", "4000", NULL };
    static const char *topics[] = { "idle-topic", NULL };
    sluice_consumer_config cfg = {
        .props = props, .topics = topics, .on_record = on_record,
        .on_rebalance = on_rebalance, .on_error = on_consumer_error, .ud = &s,
    };
    char err[256] = "";
    sluice_consumer *c = NULL;
    CHECK_EQ_INT(sluice_consumer_new(loop, &cfg, &c, err, sizeof err), 0);
    pump_until(&s.assigned_events, 1, 30000);
    CHECK_EQ_INT(s.assigned_events, 1);
    int errors_before = consumer_errors;
    pump_for(2 * 4000);              /* two poll intervals with nothing to read */
    CHECK_EQ_INT(s.revoked_events, 0);
    CHECK_EQ_INT(s.assigned_events, 1);
    CHECK_EQ_INT(consumer_errors - errors_before, 0);
    sluice_consumer_free(c);
}

int main(void) {
    sluice_broker *broker = NULL;
    if (start_loop_and_broker(&loop, &broker)) return 1;
    bootstrap = sluice_broker_bootstrap(broker);

    static produce_state produced;
    test_bad_property();
    test_produce(&produced);
    test_consume();
    test_consume_batches();
    test_resume_from_committed(&produced);
    test_absolute_start(&produced);
    test_free_from_handler();
    test_producer_free_from_handler();
    test_unreachable();
    test_no_send_from_purged_report();
    test_conf_get();
    test_idle_keeps_membership();

    sluice_broker_free(broker);
    sluice_loop_free(loop);
    return check_summary("test_kafka");
}
