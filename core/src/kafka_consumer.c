/* Kafka group consumer: records, rebalances and errors are served on the
 * loop thread when the consumer queue's wake-up fd becomes readable. Each
 * record's offset is stored after its handler returns and committed by
 * auto-commit: at-least-once. */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/kafka.h"
#include "kafka_internal.h"

struct sluice_consumer {
    sluice_kq kq;               /* first: the rd_kafka_t opaque points here */
    rd_kafka_t *rk;
    rd_kafka_queue_t *queue;
    sluice_consumer_config cfg;
    int paused;
    int closing;                /* free has begun: no more records */
    int dispatching;            /* inside consumer_serve */
    int free_pending;           /* free was called from a callback */
    sluice_header *headers;     /* reused for each record's headers */
    size_t headers_cap;
    int close_timeout_ms;       /* bound on the commit + leave at free */
    /* on_records: messages polled, not yet delivered, and their records */
    rd_kafka_message_t **batch;
    sluice_record *records;
    size_t batch_n;
    sluice_timer *keepalive;    /* polls an idle consumer: see consumer_keepalive */
    sluice_assigner *assigner;  /* assign mode: finds partitions and their starts */
};

static void consumer_flush_batch(sluice_consumer *c);

static void consumer_report(sluice_consumer *c, rd_kafka_resp_err_t e,
                            const char *text, int fatal) {
    if (c->cfg.on_error)
        c->cfg.on_error(c->cfg.ud, sluice_kafka_err_name(e), text, fatal);
    else
        sluice_loop_log(c->kq.loop, fatal ? SLUICE_LOG_ERROR : SLUICE_LOG_WARN,
                        "kafka consumer: %s: %s", sluice_kafka_err_name(e), text);
}

static void consumer_error_cb(rd_kafka_t *rk, int e, const char *reason, void *opaque) {
    sluice_consumer *c = opaque;
    char fatal_reason[512];
    if (e == RD_KAFKA_RESP_ERR__FATAL) {
        e = rd_kafka_fatal_error(rk, fatal_reason, sizeof fatal_reason);
        consumer_report(c, e, fatal_reason, 1);
        return;
    }
    consumer_report(c, e, reason, 0);
}

/* Calls on_rebalance with a plain copy of librdkafka's list. */
static void consumer_tell_rebalance(sluice_consumer *c, int assigned,
                                    const rd_kafka_topic_partition_list_t *parts) {
    if (!c->cfg.on_rebalance) return;
    size_t n = parts ? (size_t)parts->cnt : 0;
    sluice_partition *list = calloc(n ? n : 1, sizeof *list);
    if (!list) return;
    for (size_t i = 0; i < n; i++) {
        list[i].topic = parts->elems[i].topic;
        list[i].partition = parts->elems[i].partition;
        list[i].offset = parts->elems[i].offset;
    }
    c->cfg.on_rebalance(c->cfg.ud, c, assigned, list, n);
    free(list);
}

static void consumer_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t e,
                                  rd_kafka_topic_partition_list_t *parts, void *opaque) {
    sluice_consumer *c = opaque;
    const char *protocol = rd_kafka_rebalance_protocol(rk);
    int cooperative = protocol && strcmp(protocol, "COOPERATIVE") == 0;
    rd_kafka_error_t *error = NULL;
    rd_kafka_resp_err_t assign_err = 0;

    /* Records fetched before the rebalance reach the owner before it. */
    consumer_flush_batch(c);
    if (e == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        if (c->cfg.start != SLUICE_FROM_COMMITTED)
            for (int i = 0; i < parts->cnt; i++)
                parts->elems[i].offset = c->cfg.start;
        consumer_tell_rebalance(c, 1, parts);
        if (cooperative) error = rd_kafka_incremental_assign(rk, parts);
        else assign_err = rd_kafka_assign(rk, parts);
        /* Partitions assigned while paused stay paused. */
        if (c->paused) rd_kafka_pause_partitions(rk, parts);
    } else if (e == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        consumer_tell_rebalance(c, 0, parts);
        if (cooperative) error = rd_kafka_incremental_unassign(rk, parts);
        else assign_err = rd_kafka_assign(rk, NULL);
    } else {
        consumer_report(c, e, rd_kafka_err2str(e), 0);
        assign_err = rd_kafka_assign(rk, NULL);
    }
    if (error) {
        consumer_report(c, rd_kafka_error_code(error), rd_kafka_error_string(error), 0);
        rd_kafka_error_destroy(error);
    } else if (assign_err) {
        consumer_report(c, assign_err, rd_kafka_err2str(assign_err), 0);
    }
}

/* Assign mode: partitions found by the assigner join the assignment. */
static void consumer_destroy(sluice_consumer *c);

static void consumer_on_found(void *ud, rd_kafka_topic_partition_list_t *parts,
                              const char *error) {
    sluice_consumer *c = ud;
    if (c->closing) return;
    c->dispatching = 1;
    if (error) consumer_report(c, RD_KAFKA_RESP_ERR__FAIL, error, 0);
    if (parts->cnt && !c->free_pending) consumer_tell_rebalance(c, 1, parts);
    c->dispatching = 0;
    if (c->free_pending) {   /* closed from a callback: see consumer_serve */
        c->cfg.on_rebalance = NULL;
        c->cfg.on_error = NULL;
        consumer_destroy(c);
        return;
    }
    if (!parts->cnt) return;
    rd_kafka_error_t *e = rd_kafka_incremental_assign(c->rk, parts);
    if (e) {
        consumer_report(c, rd_kafka_error_code(e), rd_kafka_error_string(e), 0);
        rd_kafka_error_destroy(e);
    } else if (c->paused) {
        rd_kafka_pause_partitions(c->rk, parts);
    }
}

static int consumer_assign_start(sluice_consumer *c, char *err, size_t errlen) {
    sluice_assigner_config acfg = {
        .rk = c->rk, .topics = c->cfg.topics, .start = c->cfg.start,
        .start_time_ms = c->cfg.start_time_ms, .offsets = c->cfg.start_offsets,
        .offsets_n = c->cfg.start_offsets_n, .refresh_ms = c->cfg.refresh_ms,
        .on_found = consumer_on_found, .ud = c,
    };
    return sluice_assigner_start(c->kq.loop, &acfg, &c->assigner, err, errlen);
}

/* Room for n headers in c->headers (records point into it until they
 * are delivered): n, or 0 when out of memory (the records go without). */
static size_t headers_room(sluice_consumer *c, size_t n) {
    if (n > c->headers_cap) {
        sluice_header *grown = realloc(c->headers, n * sizeof *grown);
        if (!grown) return 0;
        c->headers = grown;
        c->headers_cap = n;
    }
    return n;
}

static size_t header_count(const rd_kafka_message_t *m) {
    rd_kafka_headers_t *hdrs;
    if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR) return 0;
    return rd_kafka_header_cnt(hdrs);
}

/* The record of m; its headers (at most room of them) in headers[]. */
static void fill_record(sluice_record *r, const rd_kafka_message_t *m,
                        sluice_header *headers, size_t room) {
    rd_kafka_timestamp_type_t tstype;
    rd_kafka_headers_t *hdrs;
    r->topic = rd_kafka_topic_name(m->rkt);
    r->partition = m->partition;
    r->offset = m->offset;
    r->key = m->key;
    r->key_len = m->key ? m->key_len : 0;
    r->value = m->payload;
    r->value_len = m->payload ? m->len : 0;
    r->timestamp_ms = rd_kafka_message_timestamp(m, &tstype);
    r->headers = NULL;
    r->header_count = 0;
    if (!room || rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR) return;
    size_t n = rd_kafka_header_cnt(hdrs);
    for (size_t k = 0; k < n && k < room; k++) {
        const char *name;
        const void *value;
        size_t size;
        if (rd_kafka_header_get_all(hdrs, k, &name, &value, &size) != RD_KAFKA_RESP_ERR_NO_ERROR)
            break;
        headers[k] = (sluice_header){ name, value, value ? size : 0 };
        r->header_count = k + 1;
    }
    if (r->header_count) r->headers = headers;
}

static void consumer_handle_message(sluice_consumer *c, rd_kafka_message_t *m) {
    if (m->err) {
        if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            consumer_report(c, m->err, rd_kafka_message_errstr(m), 0);
        return;
    }
    sluice_record r;
    fill_record(&r, m, c->headers, headers_room(c, header_count(m)));
    if (c->cfg.on_record) c->cfg.on_record(c->cfg.ud, c, &r);
    /* Processed: its offset may now be committed. Fails harmlessly with
     * _STATE if the partition was revoked meanwhile. In manual mode the
     * owner stores it once the record's effects are durable. */
    if (!c->cfg.manual_store)
        rd_kafka_offset_store(m->rkt, m->partition, m->offset);
}

/* Fills records[] for the messages of the batch. Headers go in c->headers,
 * sized for the whole batch first (a realloc would move earlier ones). */
static void consumer_batch_records(sluice_consumer *c) {
    size_t total = 0, at = 0;
    for (size_t i = 0; i < c->batch_n; i++) total += header_count(c->batch[i]);
    total = headers_room(c, total);
    for (size_t i = 0; i < c->batch_n; i++) {
        fill_record(&c->records[i], c->batch[i], total ? c->headers + at : NULL, total - at);
        at += c->records[i].header_count;
    }
}

/* Delivers the collected records in one on_records call, then stores
 * their offsets (as consumer_handle_message does for one). */
static void consumer_flush_batch(sluice_consumer *c) {
    size_t n = c->batch_n;
    if (!n) return;
    if (!c->closing) {
        consumer_batch_records(c);
        c->cfg.on_records(c->cfg.ud, c, c->records, n);
        if (!c->cfg.manual_store)
            for (size_t i = 0; i < n; i++)
                rd_kafka_offset_store(c->batch[i]->rkt, c->batch[i]->partition, c->batch[i]->offset);
    }
    /* else closed meanwhile: no more records are delivered, none stored */
    for (size_t i = 0; i < n; i++) rd_kafka_message_destroy(c->batch[i]);
    c->batch_n = 0;
}

static void consumer_destroy(sluice_consumer *c);

static int consumer_serve(void *ud, int budget) {
    sluice_consumer *c = ud;
    int more = 1;
    c->dispatching = 1;
    if (c->batch && budget > SLUICE_CONSUMER_BATCH) budget = SLUICE_CONSUMER_BATCH;
    for (int i = 0; i < budget && !c->closing; i++) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, 0);
        if (!m) { more = 0; break; }
        if (c->batch && !m->err) {   /* delivered by consumer_flush_batch */
            c->batch[c->batch_n++] = m;
            continue;
        }
        consumer_handle_message(c, m);
        rd_kafka_message_destroy(m);
    }
    consumer_flush_batch(c);
    c->dispatching = 0;
    if (c->free_pending) {
        /* A handler freed the consumer: do it now that librdkafka is not
         * inside a poll call. Its callbacks are no longer wanted. */
        c->cfg.on_record = NULL;
        c->cfg.on_rebalance = NULL;
        c->cfg.on_error = NULL;
        consumer_destroy(c);
        return 0;
    }
    return more;
}

/* librdkafka counts a consumer that has not polled for max.poll.interval.ms
 * as stuck and takes it out of its group. Records wake the loop and are
 * polled at once, but an idle consumer is never polled: without this, an
 * idle gateway left its groups (and rebalanced) every 5 minutes. So a poll
 * at a third of the interval; the only wake-up of an idle gateway. */
static void consumer_keepalive(sluice_timer *t, void *ud) {
    (void)t;
    sluice_consumer *c = ud;
    if (!c->dispatching && !c->closing) consumer_serve(c, 64);
}

static uint64_t consumer_keepalive_ms(const sluice_consumer_config *cfg) {
    const char *v = sluice_kafka_prop(cfg->props, "max.poll.interval.ms");
    long long ms = v ? atoll(v) : 300000;   /* librdkafka's default */
    return ms >= 3 ? (uint64_t)ms / 3 : 1;
}

static int consumer_conf(const sluice_consumer_config *cfg, rd_kafka_conf_t *conf,
                         char *err, size_t errlen) {
    static const char *const defaults[] = {
        "enable.auto.commit", "true",
        "enable.auto.offset.store", "false",
        NULL
    };
    /* librdkafka polls a consumer only with a group.id; an assign-only
     * consumer never joins it and commits nothing, so nothing is created. */
    static const char *const assign_mode[] = {
        "group.id", "sluice.assign", "enable.auto.commit", "false", NULL
    };
    int rc = sluice_kafka_conf_apply(conf, defaults, err, errlen);
    if (!rc) rc = sluice_kafka_conf_log(conf, err, errlen);
    if (!rc) rc = sluice_kafka_conf_apply(conf, cfg->props, err, errlen);
    if (!rc && cfg->assign) rc = sluice_kafka_conf_apply(conf, assign_mode, err, errlen);
    return rc;
}

static int consumer_subscribe(sluice_consumer *c, char *err, size_t errlen) {
    size_t n = 0;
    while (c->cfg.topics[n]) n++;
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new((int)n);
    for (size_t i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(topics, c->cfg.topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(c->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (e) {
        sluice_errf(err, errlen, "subscribe: %s", rd_kafka_err2str(e));
        return SLUICE_EKAFKA;
    }
    return 0;
}

int sluice_consumer_new(sluice_loop *loop, const sluice_consumer_config *cfg,
                        sluice_consumer **out, char *err, size_t errlen) {
    *out = NULL;
    if (!loop || !cfg || !cfg->topics || !cfg->topics[0]) {
        sluice_errf(err, errlen, "consumer: loop, config and at least one topic are required");
        return SLUICE_EINVAL;
    }
    if (cfg->assign ? (cfg->start == SLUICE_FROM_COMMITTED || cfg->start < SLUICE_FROM_TIME)
                    : cfg->start == SLUICE_FROM_TIME) {
        sluice_errf(err, errlen, cfg->assign
                          ? "consumer: assign mode has no committed offsets to start from"
                          : "consumer: a start time needs assign mode");
        return SLUICE_EINVAL;
    }
    if (!cfg->assign && !sluice_kafka_prop(cfg->props, "group.id")) {
        sluice_errf(err, errlen, "consumer: group.id is required");
        return SLUICE_EINVAL;
    }
    sluice_consumer *c = calloc(1, sizeof *c);
    if (!c) return SLUICE_ENOMEM;
    c->cfg = *cfg;
    if (cfg->on_records) {
        c->batch = calloc(SLUICE_CONSUMER_BATCH, sizeof *c->batch);
        c->records = calloc(SLUICE_CONSUMER_BATCH, sizeof *c->records);
        if (!c->batch || !c->records) {
            free(c->batch);
            free(c->records);
            free(c);
            return SLUICE_ENOMEM;
        }
    }
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    int rc = consumer_conf(cfg, conf, err, errlen);
    if (!cfg->assign) rd_kafka_conf_set_rebalance_cb(conf, consumer_rebalance_cb);
    rd_kafka_conf_set_error_cb(conf, consumer_error_cb);
    /* Everything (logs, errors, rebalances, records) through one queue. */
    c->rk = sluice_kafka_open(RD_KAFKA_CONSUMER, conf, &c->kq, loop, consumer_serve, c,
                              &rc, err, errlen);
    if (!c->rk) {
        free(c->batch);
        free(c->records);
        free(c);
        return rc;
    }
    c->queue = c->kq.queue;
    if (cfg->assign) rc = consumer_assign_start(c, err, errlen);
    else rc = consumer_subscribe(c, err, errlen);
    /* An assign-only consumer is in no group: nothing to keep alive. */
    if (!rc && !cfg->assign) {
        c->keepalive = sluice_timer_new(loop, consumer_keepalive, c);
        if (!c->keepalive) rc = SLUICE_ENOMEM;
        else sluice_timer_start(c->keepalive, consumer_keepalive_ms(cfg), consumer_keepalive_ms(cfg));
    }
    if (rc) {
        sluice_assigner_stop(c->assigner);
        sluice_kq_close(&c->kq);
        rd_kafka_queue_destroy(c->queue);
        rd_kafka_consumer_close(c->rk);
        rd_kafka_destroy(c->rk);
        free(c->batch);
        free(c->records);
        free(c);
        return rc;
    }
    *out = c;
    return 0;
}

int sluice_consumer_pause(sluice_consumer *c, int paused) {
    if (!c) return SLUICE_EINVAL;
    if (c->closing) return SLUICE_ECLOSED;
    rd_kafka_topic_partition_list_t *parts = NULL;
    c->paused = paused ? 1 : 0;
    if (rd_kafka_assignment(c->rk, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return SLUICE_EKAFKA;
    if (parts->cnt) {
        if (c->paused) rd_kafka_pause_partitions(c->rk, parts);
        else rd_kafka_resume_partitions(c->rk, parts);
    }
    rd_kafka_topic_partition_list_destroy(parts);
    return 0;
}

int sluice_consumer_commit(sluice_consumer *c, int sync, char *err, size_t errlen) {
    if (!c) return SLUICE_EINVAL;
    if (c->closing) return SLUICE_ECLOSED;
    if (c->assigner) {
        sluice_errf(err, errlen, "a consumer in no group (assign mode) has nothing to commit");
        return SLUICE_ESTATE;
    }
    rd_kafka_resp_err_t e = rd_kafka_commit(c->rk, NULL, sync ? 0 : 1);
    /* Nothing stored since the last commit is not a failure. */
    if (e && e != RD_KAFKA_RESP_ERR__NO_OFFSET) {
        return sluice_kafka_fail(e, err, errlen);
    }
    return 0;
}

int sluice_consumer_store(sluice_consumer *c, const char *topic, int32_t partition,
                          int64_t offset, char *err, size_t errlen) {
    /* Allowed while closing: the revoke callback run by the close may
     * store what its final flush made durable; the close commits it. */
    if (!c || !topic || partition < 0 || offset < 0) return SLUICE_EINVAL;
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    /* Kafka commits the next offset to read. */
    rd_kafka_topic_partition_list_add(list, topic, partition)->offset = offset + 1;
    rd_kafka_resp_err_t e = rd_kafka_offsets_store(c->rk, list);
    if (!e) e = list->elems[0].err;
    rd_kafka_topic_partition_list_destroy(list);
    if (e == RD_KAFKA_RESP_ERR__STATE || e == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION) {
        sluice_errf(err, errlen, "%s [%d] is not assigned to this consumer", topic, (int)partition);
        return SLUICE_ESTATE;
    }
    if (e) {
        return sluice_kafka_fail(e, err, errlen);
    }
    return 0;
}

int sluice_consumer_seek(sluice_consumer *c, const char *topic, int32_t partition,
                         int64_t offset, char *err, size_t errlen) {
    if (!c || !topic || partition < 0 || offset < 0) return SLUICE_EINVAL;
    if (c->closing) return SLUICE_ECLOSED;
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, topic, partition)->offset = offset;
    /* timeout 0: asynchronous; fetched messages of the old position are
     * dropped from here on (librdkafka's version barrier). */
    rd_kafka_error_t *e = rd_kafka_seek_partitions(c->rk, list, 0);
    rd_kafka_resp_err_t perr = list->elems[0].err;
    rd_kafka_topic_partition_list_destroy(list);
    if (e) {
        sluice_errf(err, errlen, "seek: %s", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
        return SLUICE_EKAFKA;
    }
    if (perr == RD_KAFKA_RESP_ERR__IN_PROGRESS) return 0;   /* started */
    if (perr == RD_KAFKA_RESP_ERR__STATE || perr == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION) {
        sluice_errf(err, errlen, "%s [%d] is not assigned to this consumer", topic, (int)partition);
        return SLUICE_ESTATE;
    }
    if (perr) {
        sluice_errf(err, errlen, "seek: %s", rd_kafka_err2str(perr));
        return SLUICE_EKAFKA;
    }
    return 0;
}

rd_kafka_t *sluice_consumer_rk(sluice_consumer *c) {
    return c ? c->rk : NULL;
}

int sluice_consumer_lag(sluice_consumer *c,
                        void (*fn)(void *ud, const sluice_partition_lag *l), void *ud) {
    rd_kafka_topic_partition_list_t *parts = NULL;
    if (!c || c->closing || rd_kafka_assignment(c->rk, &parts)) return SLUICE_ESTATE;
    rd_kafka_position(c->rk, parts);
    for (int i = 0; i < parts->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &parts->elems[i];
        int64_t low, high;
        if (rd_kafka_get_watermark_offsets(c->rk, tp->topic, tp->partition, &low, &high) || high < 0)
            high = -1;
        sluice_partition_lag l = { tp->topic, tp->partition, tp->offset < 0 ? -1 : tp->offset, high };
        fn(ud, &l);
    }
    rd_kafka_topic_partition_list_destroy(parts);
    return 0;
}

unsigned long sluice_consumer_wakeups(const struct sluice_consumer *c) {
    return c ? c->kq.wakeups : 0;
}

void sluice_consumer_free(sluice_consumer *c) {
    sluice_consumer_close(c, -1);
}

void sluice_consumer_close(sluice_consumer *c, int timeout_ms) {
    if (!c) return;
    c->closing = 1;
    c->close_timeout_ms = timeout_ms < 0 ? SLUICE_CONSUMER_CLOSE_MS : timeout_ms;
    if (c->dispatching) {   /* called from a callback: finish after it */
        c->free_pending = 1;
        return;
    }
    consumer_destroy(c);
}

/* Commits stored offsets and leaves the group, within close_timeout_ms:
 * rd_kafka_consumer_close has no bound of its own (with every broker
 * down it waits session.timeout.ms, 45 s by default, for the
 * coordinator). The close runs on a queue of our own, served here until
 * librdkafka says the group is closed or the deadline passes; then the
 * instance is destroyed without the close, losing only the commit of
 * offsets stored since the last auto-commit (those records are consumed
 * again: at-least-once). 1: closed; 0: timed out; -1: refused. */
static int consumer_close_group(sluice_consumer *c) {
    rd_kafka_queue_t *q = rd_kafka_queue_new(c->rk);
    rd_kafka_error_t *error = rd_kafka_consumer_close_queue(c->rk, q);
    int closed = 0;
    if (error) {   /* e.g. a fatal error was raised: nothing to commit */
        sluice_loop_log(c->kq.loop, SLUICE_LOG_WARN, "kafka consumer: close: %s",
                        rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
        closed = -1;
    } else {
        uint64_t deadline = sluice_now_ms() + (uint64_t)c->close_timeout_ms;
        for (;;) {
            closed = rd_kafka_consumer_closed(c->rk);
            uint64_t now = sluice_now_ms();
            if (closed || now >= deadline) break;
            uint64_t left = deadline - now;
            /* Serves the revoke (our rebalance callback), errors and logs;
             * records fetched before the close come back and are dropped
             * unstored. */
            rd_kafka_message_t *m = rd_kafka_consume_queue(q, left < 100 ? (int)left : 100);
            if (m) rd_kafka_message_destroy(m);
        }
    }
    rd_kafka_queue_destroy(q);
    return closed;
}

static void consumer_release(sluice_consumer *c) {
    free(c->batch);
    free(c->records);
    free(c->headers);
    free(c);
}

/* Even without the close, rd_kafka_destroy joins librdkafka's threads:
 * its group thread holds the pending commit for session.timeout.ms, and
 * with the only broker down a broker thread never ends (librdkafka issue
 * #4519; measured: still blocked after 95 s). That wait is left to a
 * thread of its own, ended with the process; the struct, librdkafka's
 * opaque, lives until it is done. Nothing of ours is called meanwhile:
 * callbacks only run from queues we serve, and they are no longer served. */
static void *consumer_reap(void *arg) {
    sluice_consumer *c = arg;
    rd_kafka_destroy_flags(c->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    consumer_release(c);
    return NULL;
}

/* Assign mode: the thread ends, then the owner sees the assignment go. */
static void consumer_unassign(sluice_consumer *c) {
    rd_kafka_topic_partition_list_t *parts = NULL;
    sluice_assigner_stop(c->assigner);
    c->assigner = NULL;
    if (rd_kafka_assignment(c->rk, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR) return;
    if (parts->cnt) {
        consumer_tell_rebalance(c, 0, parts);
        rd_kafka_assign(c->rk, NULL);
    }
    rd_kafka_topic_partition_list_destroy(parts);
}

static void consumer_destroy(sluice_consumer *c) {
    sluice_timer_free(c->keepalive);
    c->keepalive = NULL;
    if (c->assigner) consumer_unassign(c);
    sluice_kq_close(&c->kq);
    /* The revoke reaches on_rebalance from inside this call. */
    int closed = consumer_close_group(c);
    rd_kafka_queue_destroy(c->queue);
    if (closed == 1) {
        rd_kafka_destroy(c->rk);
        consumer_release(c);
        return;
    }
    if (closed == 0)
        sluice_loop_log(c->kq.loop, SLUICE_LOG_WARN,
                        "kafka consumer: group close did not finish within %d ms "
                        "(brokers unreachable?): offsets stored since the last commit "
                        "are not committed; those records will be consumed again",
                        c->close_timeout_ms);
    c->kq.loop = NULL;
    pthread_t thread;
    sigset_t all, previous;
    /* Signals stay with the loop thread (signalfd). */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &previous);
    int created = pthread_create(&thread, NULL, consumer_reap, c);
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    /* No thread: leaked rather than waited for without bound. */
    if (created == 0) pthread_detach(thread);
}
