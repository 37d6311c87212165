/* Transactions of a producer (sluice_producer_txn): the calls run on the
 * producer's thread and report on the loop thread; delivery reports stay
 * on the loop thread; one operation at a time. Against the embedded
 * broker, which runs transactions (it does not commit offsets sent in
 * them: that is shown on Apache Kafka by integration.stream_eos). */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "kafka_support.h"
#include "sluice/broker.h"
#include "sluice/kafka.h"

#define TOPIC "txn-test"

static sluice_loop *loop;
static pthread_t loop_thread;
static int delivered, failed, reports_off_thread;

static void on_delivery(void *ud, void *opaque, const sluice_delivery *d) {
    (void)ud; (void)opaque;
    if (!pthread_equal(pthread_self(), loop_thread)) reports_off_thread++;
    if (d->error) failed++;
    else delivered++;
}

typedef struct done_rec {
    int calls, error, off_thread, delivered_then;
    sluice_txn_op op;
} done_rec;

static void on_done(void *ud, const sluice_txn_result *r) {
    done_rec *d = ud;
    d->calls++;
    d->error = r->error;
    d->op = r->op;
    d->delivered_then = delivered + failed;
    if (!pthread_equal(pthread_self(), loop_thread)) d->off_thread++;
}

/* Commits or aborts the transaction, waits for its result: no error. */
static void txn_ended(sluice_loop *loop, sluice_producer *p, sluice_txn_op op, done_rec *d) {
    char err[256] = "";
    CHECK_EQ_INT(sluice_producer_txn(p, op, NULL, NULL, 0, 20000, on_done, d, err, sizeof err), 0);
    pump_loop_until(loop, &d->calls, 1, 20000);
    CHECK_EQ_INT(d->calls, 1);
    CHECK_EQ_INT(d->error, 0);
}

static int send_n(sluice_producer *p, int n) {
    char err[256];
    int refused = 0;
    for (int i = 0; i < n; i++) {
        sluice_message m = { .topic = TOPIC, .value = "v", .value_len = 1, .partition = 0 };
        if (sluice_producer_send(p, &m, NULL, err, sizeof err) != 0) refused++;
    }
    return refused;
}

static void test_not_transactional(const char *bootstrap) {
    const char *props[] = { "bootstrap.servers", bootstrap, NULL };
    sluice_producer_config cfg = { .props = props, .on_delivery = on_delivery };
    sluice_producer *p = NULL;
    char err[256] = "";
    done_rec d = { 0 };
    CHECK_EQ_INT(sluice_producer_new(loop, &cfg, &p, err, sizeof err), 0);
    CHECK_EQ_INT(sluice_producer_txn(p, SLUICE_TXN_INIT, NULL, NULL, 0, 1000, on_done, &d, err, sizeof err),
                 SLUICE_EINVAL);
    CHECK_EQ_STR(err, "the producer is not transactional (no transactional.id)");
    CHECK_EQ_INT(sluice_producer_txn_wait(p, 10), 1);   /* nothing runs */
    sluice_producer_free(p);
}

static void test_transactions(const char *bootstrap) {
    const char *props[] = { "bootstrap.servers", bootstrap, "transactional.id", "sluice-test-txn", NULL };
    sluice_producer_config cfg = { .props = props, .on_delivery = on_delivery };
    sluice_producer *p = NULL;
    char err[256] = "";
    CHECK_EQ_INT(sluice_producer_new(loop, &cfg, &p, err, sizeof err), 0);

    /* No transaction open yet: sends are refused. */
    char serr[256] = "";
    sluice_message m = { .topic = TOPIC, .value = "v", .value_len = 1, .partition = 0 };
    CHECK_EQ_INT(sluice_producer_send(p, &m, NULL, serr, sizeof serr), SLUICE_EKAFKA);
    CHECK(strncmp(serr, "STATE: ", 7) == 0);

    /* init: one operation at a time; the result on the loop thread. */
    done_rec init = { 0 }, other = { 0 };
    CHECK_EQ_INT(sluice_producer_txn(p, SLUICE_TXN_INIT, NULL, NULL, 0, 20000, on_done, &init, err, sizeof err), 0);
    CHECK_EQ_INT(sluice_producer_txn(p, SLUICE_TXN_ABORT, NULL, NULL, 0, 20000, on_done, &other, err, sizeof err),
                 SLUICE_ESTATE);
    CHECK_EQ_STR(err, "a transaction operation is already running");
    pump_loop_until(loop, &init.calls, 1, 20000);
    CHECK_EQ_INT(init.calls, 1);
    CHECK_EQ_INT(init.error, 0);
    CHECK_EQ_INT(init.op, SLUICE_TXN_INIT);
    CHECK_EQ_INT(init.off_thread, 0);
    CHECK_EQ_INT(other.calls, 0);

    /* commit: every message of the transaction reported before its result. */
    CHECK_EQ_INT(send_n(p, 10), 0);
    done_rec commit = { 0 };
    txn_ended(loop, p, SLUICE_TXN_COMMIT, &commit);
    CHECK_EQ_INT(commit.delivered_then, 10);
    CHECK_EQ_INT(delivered, 10);

    /* abort: each message of it reported once (delivered, or purged). */
    CHECK_EQ_INT(send_n(p, 5), 0);
    done_rec abort_ = { 0 };
    txn_ended(loop, p, SLUICE_TXN_ABORT, &abort_);
    CHECK_EQ_INT(delivered + failed, 15);

    /* Waiting from the loop thread (as a rebalance callback does): the
     * delivery reports are served meanwhile, the result reported in it. */
    CHECK_EQ_INT(send_n(p, 3), 0);
    done_rec waited = { 0 };
    CHECK_EQ_INT(sluice_producer_txn(p, SLUICE_TXN_COMMIT, NULL, NULL, 0, 20000, on_done, &waited, err, sizeof err), 0);
    CHECK_EQ_INT(sluice_producer_txn_wait(p, 20000), 1);
    CHECK_EQ_INT(waited.calls, 1);
    CHECK_EQ_INT(waited.error, 0);
    CHECK_EQ_INT(waited.delivered_then, 18);

    /* Offsets need the consumer whose group they belong to. */
    sluice_partition off = { TOPIC, 0, 1 };
    CHECK_EQ_INT(sluice_producer_txn(p, SLUICE_TXN_COMMIT, NULL, &off, 1, 1000, on_done, &other, err, sizeof err),
                 SLUICE_EINVAL);
    CHECK_EQ_INT(reports_off_thread, 0);
    sluice_producer_free(p);
}

int main(void) {
    sluice_broker *broker = NULL;
    loop_thread = pthread_self();
    if (start_loop_and_broker(&loop, &broker)) return 1;
    const char *bootstrap = sluice_broker_bootstrap(broker);
    test_not_transactional(bootstrap);
    test_transactions(bootstrap);
    sluice_broker_free(broker);
    sluice_loop_free(loop);
    return check_summary("test_kafka_txn");
}
