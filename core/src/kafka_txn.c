/* The transactional calls of one producer (init, send offsets + commit,
 * abort) on a thread of its own: each blocks on the network for a round
 * trip or more (the commit also waits for every message of the
 * transaction to be acknowledged), which the loop must not. The loop
 * thread starts one operation at a time; the thread runs it, retrying
 * what librdkafka calls retriable until the operation's timeout, and
 * hands the result back through an eventfd watched by the loop. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "kafka_internal.h"

/* Pause between two attempts of a retriable call. */
#define TXN_RETRY_MS 100
/* Bound on waiting for an aborted transaction's messages (below). */
#define TXN_ABORT_FLUSH_MS 5000

struct sluice_txn {
    rd_kafka_t *rk;
    sluice_loop *loop;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    /* under mu */
    int stop;
    int queued;            /* an operation for the thread */
    int finished;          /* its result, for the loop */
    /* the operation: set by the loop before queued, read by the thread */
    sluice_txn_op op;
    rd_kafka_topic_partition_list_t *offsets;
    rd_kafka_consumer_group_metadata_t *group;
    int timeout_ms;
    int offsets_sent;      /* this commit's offsets are in the transaction */
    /* the result: written by the thread before finished */
    int error;
    const char *error_name;
    char error_text[512];
    int abortable, fatal, retriable;
    /* loop thread */
    int busy;              /* started, `done` not yet called */
    void (*done)(void *ud, const sluice_txn_result *r);
    void *ud;
    int efd;
    sluice_watch *watch;
};

static uint64_t ms_left(uint64_t deadline) {
    uint64_t now = sluice_now_ms();
    return deadline > now ? deadline - now : 0;
}

/* Sleeps ms unless stopped meanwhile; 1 if stopped. */
static int txn_pause(sluice_txn *t, int ms) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) { until.tv_sec++; until.tv_nsec -= 1000000000L; }
    pthread_mutex_lock(&t->mu);
    while (!t->stop && pthread_cond_timedwait(&t->cond, &t->mu, &until) != ETIMEDOUT) {}
    int stop = t->stop;
    pthread_mutex_unlock(&t->mu);
    return stop;
}

/* One attempt of the operation; a new transaction is begun after it. */
static rd_kafka_error_t *txn_attempt(sluice_txn *t, int left) {
    rd_kafka_error_t *e = NULL;
    switch (t->op) {
    case SLUICE_TXN_INIT:
        e = rd_kafka_init_transactions(t->rk, left);
        break;
    case SLUICE_TXN_COMMIT:
        if (!t->offsets_sent && t->offsets && t->offsets->cnt) {
            e = rd_kafka_send_offsets_to_transaction(t->rk, t->offsets, t->group, left);
            if (!e) t->offsets_sent = 1;
        }
        if (!e) e = rd_kafka_commit_transaction(t->rk, left);
        break;
    case SLUICE_TXN_ABORT:
        /* librdkafka may send EndTxn before the coordinator processed its
         * AddPartitionsToTxn (librdkafka issue #4849): aborting a
         * transaction the coordinator still sees empty fails, fatally
         * (INVALID_TXN_STATE). A message delivered proves its partition
         * was added, so the messages go first (the loop serves their
         * reports; in an abortable state they wait, hence the bound). */
        rd_kafka_flush(t->rk, left < TXN_ABORT_FLUSH_MS ? left : TXN_ABORT_FLUSH_MS);
        e = rd_kafka_abort_transaction(t->rk, left > TXN_ABORT_FLUSH_MS ? left - TXN_ABORT_FLUSH_MS : 1);
        break;
    }
    if (!e) e = rd_kafka_begin_transaction(t->rk);
    return e;
}

static void txn_run(sluice_txn *t) {
    uint64_t deadline = sluice_now_ms() + (uint64_t)t->timeout_ms;
    rd_kafka_error_t *e;
    for (;;) {
        uint64_t left = ms_left(deadline);
        e = txn_attempt(t, left ? (int)left : 1);
        if (!e || !rd_kafka_error_is_retriable(e) || rd_kafka_error_is_fatal(e) ||
            rd_kafka_error_txn_requires_abort(e) || ms_left(deadline) < TXN_RETRY_MS)
            break;
        rd_kafka_error_destroy(e);
        if (txn_pause(t, TXN_RETRY_MS)) {
            e = rd_kafka_error_new(RD_KAFKA_RESP_ERR__DESTROY, "the producer is closing");
            break;
        }
    }
    t->error = e ? (int)rd_kafka_error_code(e) : 0;
    t->error_name = e ? sluice_kafka_err_name(rd_kafka_error_code(e)) : NULL;
    snprintf(t->error_text, sizeof t->error_text, "%s", e ? rd_kafka_error_string(e) : "");
    t->fatal = e ? rd_kafka_error_is_fatal(e) : 0;
    t->abortable = e && !t->fatal ? rd_kafka_error_txn_requires_abort(e) : 0;
    t->retriable = e && !t->fatal && !t->abortable;
    if (e) rd_kafka_error_destroy(e);
}

static void *txn_main(void *arg) {
    static const uint64_t one = 1;
    sluice_txn *t = arg;
    pthread_mutex_lock(&t->mu);
    for (;;) {
        while (!t->stop && !t->queued) pthread_cond_wait(&t->cond, &t->mu);
        if (t->stop) break;
        t->queued = 0;
        pthread_mutex_unlock(&t->mu);
        txn_run(t);
        pthread_mutex_lock(&t->mu);
        t->finished = 1;
        while (write(t->efd, &one, sizeof one) < 0 && errno == EINTR) {}
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

static void txn_ready(sluice_watch *w, void *ud) {
    (void)w;
    sluice_txn *t = ud;
    uint64_t count;
    while (read(t->efd, &count, sizeof count) < 0 && errno == EINTR) {}
    sluice_txn_deliver(t);
}

sluice_txn *sluice_txn_new(struct sluice_producer *p, rd_kafka_t *rk, sluice_loop *loop,
                           char *err, size_t errlen) {
    (void)p;
    sluice_txn *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->rk = rk;
    t->loop = loop;
    t->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (t->efd < 0) { free(t); return NULL; }
    if (sluice_watch_new(loop, t->efd, txn_ready, t, &t->watch, err, errlen) != 0) {
        close(t->efd);
        free(t);
        return NULL;
    }
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cond, NULL);
    int rc = sluice_thread_start(&t->thread, txn_main, t);
    if (rc != 0) {
        sluice_watch_free(t->watch);
        close(t->efd);
        pthread_mutex_destroy(&t->mu);
        pthread_cond_destroy(&t->cond);
        free(t);
        return NULL;
    }
    return t;
}

int sluice_txn_busy(const sluice_txn *t) {
    return t && t->busy;
}

int sluice_txn_start(sluice_txn *t, sluice_txn_op op, rd_kafka_t *group_rk,
                     const sluice_partition *offsets, size_t n, int timeout_ms,
                     void (*done)(void *ud, const sluice_txn_result *r), void *ud,
                     char *err, size_t errlen) {
    if (t->busy) {
        sluice_errf(err, errlen, "a transaction operation is already running");
        return SLUICE_ESTATE;
    }
    rd_kafka_topic_partition_list_t *list = NULL;
    rd_kafka_consumer_group_metadata_t *group = NULL;
    if (op == SLUICE_TXN_COMMIT && n) {
        group = rd_kafka_consumer_group_metadata(group_rk);
        if (!group) {
            sluice_errf(err, errlen, "the consumer is in no group: its offsets cannot be committed");
            return SLUICE_EINVAL;
        }
        list = rd_kafka_topic_partition_list_new((int)n);
        for (size_t i = 0; i < n; i++)
            rd_kafka_topic_partition_list_add(list, offsets[i].topic, offsets[i].partition)->offset =
                offsets[i].offset;
    }
    /* A commit started again after a retriable failure keeps its offsets
     * (they may be in the transaction already). */
    int resume = op == SLUICE_TXN_COMMIT && t->op == SLUICE_TXN_COMMIT && t->retriable;
    pthread_mutex_lock(&t->mu);
    if (resume && t->offsets) {
        if (list) rd_kafka_topic_partition_list_destroy(list);
        if (group) rd_kafka_consumer_group_metadata_destroy(group);
    } else {
        if (t->offsets) rd_kafka_topic_partition_list_destroy(t->offsets);
        if (t->group) rd_kafka_consumer_group_metadata_destroy(t->group);
        t->offsets = list;
        t->group = group;
        t->offsets_sent = 0;
    }
    t->op = op;
    t->timeout_ms = timeout_ms > 0 ? timeout_ms : 1;
    t->retriable = 0;
    t->queued = 1;
    t->done = done;
    t->ud = ud;
    t->busy = 1;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->mu);
    return 0;
}

void sluice_txn_deliver(sluice_txn *t) {
    if (!t || !t->busy) return;
    pthread_mutex_lock(&t->mu);
    int finished = t->finished;
    t->finished = 0;
    pthread_mutex_unlock(&t->mu);
    if (!finished) return;
    sluice_txn_result r = {
        .op = t->op, .error = t->error, .error_name = t->error_name,
        .error_text = t->error ? t->error_text : NULL,
        .abortable = t->abortable, .fatal = t->fatal, .retriable = t->retriable,
    };
    void (*done)(void *, const sluice_txn_result *) = t->done;
    void *ud = t->ud;
    t->busy = 0;
    t->done = NULL;
    /* Last: it may start the next operation, or free the producer. */
    if (done) done(ud, &r);
}

void sluice_txn_free(sluice_txn *t) {
    if (!t) return;
    pthread_mutex_lock(&t->mu);
    t->stop = 1;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->mu);
    pthread_join(t->thread, NULL);
    sluice_watch_free(t->watch);
    close(t->efd);
    if (t->offsets) rd_kafka_topic_partition_list_destroy(t->offsets);
    if (t->group) rd_kafka_consumer_group_metadata_destroy(t->group);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cond);
    free(t);
}
