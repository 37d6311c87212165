/* Kafka producer: librdkafka's delivery reports are served on the loop
 * thread when its main queue's wake-up fd becomes readable. */
#include <stdlib.h>
#include <string.h>

#include "sluice/kafka.h"
#include "kafka_internal.h"

/* Counters of one topic (sluice_producer_topics); a list in first-use order. */
struct ptopic {
    struct ptopic *next;
    sluice_topic_counts c;
    sluice_error_count *errors;
    size_t nerrors;
    char name[];
};

struct sluice_producer {
    sluice_kq kq;               /* first: the rd_kafka_t opaque points here */
    rd_kafka_t *rk;
    rd_kafka_queue_t *main_queue;
    sluice_producer_config cfg;
    size_t in_flight;           /* accepted, not yet reported */
    size_t high_water, low_water;
    int pressured;              /* on_pressure(1) was the last call */
    int dispatching;            /* inside producer_serve */
    int free_pending;           /* free was called from a callback */
    size_t reported;            /* on_delivery calls since the last on_delivery_end */
    struct ptopic *topics, *last_topic;   /* last_topic: the last one looked up */
    char *statistics;           /* librdkafka's last statistics JSON */
    /* Transactional (transactional.id set): delivery reports, errors, logs
     * and statistics are taken as events from the main queue, and the
     * transactional calls run on txn's thread. */
    int transactional;
    sluice_txn *txn;
};

/* The counters of topic, added on first use; NULL if out of memory. */
static struct ptopic *topic_of(sluice_producer *p, const char *topic) {
    if (p->last_topic && strcmp(p->last_topic->name, topic) == 0) return p->last_topic;
    struct ptopic **tail = &p->topics;
    for (; *tail; tail = &(*tail)->next)
        if (strcmp((*tail)->name, topic) == 0) return p->last_topic = *tail;
    size_t len = strlen(topic);
    struct ptopic *t = calloc(1, sizeof *t + len + 1);
    if (!t) return NULL;
    memcpy(t->name, topic, len + 1);
    t->c.topic = t->name;
    *tail = t;
    return p->last_topic = t;
}

/* Error names are librdkafka's static strings: compared by address. */
static void count_error(struct ptopic *t, const char *name, int refused) {
    for (size_t i = 0; i < t->nerrors; i++)
        if (t->errors[i].name == name && t->errors[i].refused == refused) {
            t->errors[i].count++;
            return;
        }
    sluice_error_count *grown = realloc(t->errors, (t->nerrors + 1) * sizeof *grown);
    if (!grown) return;
    t->errors = grown;
    t->errors[t->nerrors++] = (sluice_error_count){ name, refused, 1 };
}

void sluice_producer_topics(const sluice_producer *p,
                            void (*fn)(void *ud, const sluice_topic_counts *t), void *ud) {
    for (struct ptopic *t = p ? p->topics : NULL; t; t = t->next) {
        t->c.errors = t->errors;
        t->c.nerrors = t->nerrors;
        fn(ud, &t->c);
    }
}

const char *sluice_producer_statistics(const sluice_producer *p) {
    return p ? p->statistics : NULL;
}

/* Served on the loop thread by rd_kafka_poll; 0: librdkafka frees json. */
static int producer_stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque) {
    (void)rk;
    sluice_producer *p = opaque;
    char *copy = malloc(len + 1);
    if (copy) {
        memcpy(copy, json, len);
        copy[len] = '\0';
        free(p->statistics);
        p->statistics = copy;
    }
    return 0;
}

static void producer_destroy(sluice_producer *p);

static void producer_set_in_flight(sluice_producer *p, size_t n) {
    p->in_flight = n;
    if (!p->pressured && n > p->high_water) {
        p->pressured = 1;
        if (p->cfg.on_pressure) p->cfg.on_pressure(p->cfg.ud, 1);
    } else if (p->pressured && n <= p->low_water) {
        p->pressured = 0;
        if (p->cfg.on_pressure) p->cfg.on_pressure(p->cfg.ud, 0);
    }
}

static void producer_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    sluice_producer *p = opaque;
    sluice_delivery d;
    rd_kafka_timestamp_type_t tstype;
    d.error = m->err;
    d.error_name = m->err ? sluice_kafka_err_name(m->err) : NULL;
    d.error_text = m->err ? rd_kafka_err2str(m->err) : NULL;
    d.topic = rd_kafka_topic_name(m->rkt);
    d.partition = m->partition;
    d.offset = m->err ? -1 : m->offset;
    d.timestamp_ms = rd_kafka_message_timestamp(m, &tstype);
    struct ptopic *t = topic_of(p, d.topic);
    if (t) {
        if (m->err) {
            t->c.failed++;
            count_error(t, d.error_name, 0);
        } else {
            t->c.delivered++;
        }
    }
    if (p->in_flight > 0) producer_set_in_flight(p, p->in_flight - 1);
    p->reported++;
    if (p->cfg.on_delivery) p->cfg.on_delivery(p->cfg.ud, m->_private, &d);
}

/* Ends a run of delivery reports (see on_delivery_end). */
static void producer_delivery_end(sluice_producer *p) {
    if (!p->reported) return;
    p->reported = 0;
    if (p->cfg.on_delivery_end) p->cfg.on_delivery_end(p->cfg.ud);
}

static void producer_error_cb(rd_kafka_t *rk, int e, const char *reason, void *opaque) {
    sluice_producer *p = opaque;
    int fatal = 0;
    char fatal_reason[512];
    if (e == RD_KAFKA_RESP_ERR__FATAL) {
        fatal = 1;
        e = rd_kafka_fatal_error(rk, fatal_reason, sizeof fatal_reason);
        reason = fatal_reason;
    }
    if (p->cfg.on_error)
        p->cfg.on_error(p->cfg.ud, sluice_kafka_err_name(e), reason, fatal);
    else
        sluice_loop_log(p->kq.loop, fatal ? SLUICE_LOG_ERROR : SLUICE_LOG_WARN,
                        "kafka producer: %s: %s", sluice_kafka_err_name(e), reason);
}

/* One event of a transactional producer (see struct sluice_producer). */
static void producer_event(sluice_producer *p, rd_kafka_event_t *ev) {
    switch (rd_kafka_event_type(ev)) {
    case RD_KAFKA_EVENT_DR: {
        const rd_kafka_message_t *m;
        while ((m = rd_kafka_event_message_next(ev))) producer_dr_cb(p->rk, m, p);
        break;
    }
    case RD_KAFKA_EVENT_ERROR: {
        int fatal = rd_kafka_event_error_is_fatal(ev);
        const char *name = sluice_kafka_err_name(rd_kafka_event_error(ev));
        const char *text = rd_kafka_event_error_string(ev);
        if (p->cfg.on_error) p->cfg.on_error(p->cfg.ud, name, text, fatal);
        else sluice_loop_log(p->kq.loop, fatal ? SLUICE_LOG_ERROR : SLUICE_LOG_WARN,
                             "kafka producer: %s: %s", name, text);
        break;
    }
    case RD_KAFKA_EVENT_LOG: {
        const char *fac, *line;
        int level;
        if (rd_kafka_event_log(ev, &fac, &line, &level) == 0)
            sluice_kafka_log_line(p->rk, level, fac, line);
        break;
    }
    case RD_KAFKA_EVENT_STATS: {
        const char *json = rd_kafka_event_stats(ev);
        if (json) producer_stats_cb(p->rk, (char *)json, strlen(json), p);
        break;
    }
    default:
        break;
    }
}

/* Serves a transactional producer's queue: waits up to timeout_ms for the
 * first event, then takes what is there, at most SLUICE_KQ_BUDGET. */
void sluice_producer_serve_events(sluice_producer *p, int timeout_ms) {
    int was = p->dispatching;
    p->dispatching = 1;
    for (int i = 0; i < SLUICE_KQ_BUDGET; i++) {
        rd_kafka_event_t *ev = rd_kafka_queue_poll(p->main_queue, i ? 0 : timeout_ms);
        if (!ev) break;
        producer_event(p, ev);
        rd_kafka_event_destroy(ev);
    }
    producer_delivery_end(p);
    p->dispatching = was;
}

/* rd_kafka_poll serves what the queue holds when called, so one call is
 * bounded; events that arrive meanwhile raise a new wake-up. */
static int producer_serve(void *ud, int budget) {
    (void)budget;
    sluice_producer *p = ud;
    if (p->transactional) {
        sluice_producer_serve_events(p, 0);
    } else {
        p->dispatching = 1;
        rd_kafka_poll(p->rk, 0);
        producer_delivery_end(p);
        p->dispatching = 0;
    }
    if (p->free_pending) producer_destroy(p);
    return 0;
}

static int is_acks_all(const char *acks) {
    return strcmp(acks, "all") == 0 || strcmp(acks, "-1") == 0;
}

static int conf_default(rd_kafka_conf_t *conf, const sluice_producer_config *cfg,
                        const char *alias, const char *name, const char *value,
                        char *err, size_t errlen) {
    char why[512];
    if (sluice_kafka_prop(cfg->props, name) || (alias && sluice_kafka_prop(cfg->props, alias)))
        return 0;
    if (rd_kafka_conf_set(conf, name, value, why, sizeof why) != RD_KAFKA_CONF_OK) {
        sluice_errf(err, errlen, "%s", why);
        return SLUICE_EINVAL;
    }
    return 0;
}

static int producer_conf(const sluice_producer_config *cfg, rd_kafka_conf_t *conf,
                         char *err, size_t errlen) {
    const char *acks = sluice_kafka_prop(cfg->props, "acks");
    if (!acks) acks = sluice_kafka_prop(cfg->props, "request.required.acks");
    int rc = conf_default(conf, cfg, "request.required.acks", "acks", "all", err, errlen);
    /* Latency first: with linger 0 a lone row goes out at once (ack p50
     * 0.3 ms at 10k rows/s) and under load batches still form while the
     * in-flight requests are busy (BENCHMARKS.md measures the trade). */
    if (!rc) rc = conf_default(conf, cfg, "queue.buffering.max.ms", "linger.ms", "0", err, errlen);
    /* Idempotence requires acks=all: a user who chose other acks gets none. */
    if (!rc && (!acks || is_acks_all(acks)))
        rc = conf_default(conf, cfg, NULL, "enable.idempotence", "true", err, errlen);
    if (!rc) rc = sluice_kafka_conf_log(conf, err, errlen);
    if (!rc) rc = sluice_kafka_conf_apply(conf, cfg->props, err, errlen);
    return rc;
}

int sluice_producer_new(sluice_loop *loop, const sluice_producer_config *cfg,
                        sluice_producer **out, char *err, size_t errlen) {
    *out = NULL;
    if (!loop || !cfg) {
        sluice_errf(err, errlen, "producer: loop and config are required");
        return SLUICE_EINVAL;
    }
    sluice_producer *p = calloc(1, sizeof *p);
    if (!p) return SLUICE_ENOMEM;
    p->cfg = *cfg;
    p->high_water = cfg->high_water ? cfg->high_water : 100000;
    p->low_water = cfg->high_water || cfg->low_water ? cfg->low_water : 50000;
    if (p->low_water > p->high_water) p->low_water = p->high_water;

    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    int rc = producer_conf(cfg, conf, err, errlen);
    p->transactional = sluice_kafka_prop(cfg->props, "transactional.id") != NULL;
    if (p->transactional) rd_kafka_conf_set_events(conf, RD_KAFKA_EVENT_DR);
    else rd_kafka_conf_set_dr_msg_cb(conf, producer_dr_cb);
    rd_kafka_conf_set_error_cb(conf, producer_error_cb);
    rd_kafka_conf_set_stats_cb(conf, producer_stats_cb);
    p->rk = sluice_kafka_open(RD_KAFKA_PRODUCER, conf, &p->kq, loop, producer_serve, p,
                              &rc, err, errlen);
    if (p->rk) p->main_queue = p->kq.queue;
    if (p->rk && p->transactional) {
        p->txn = sluice_txn_new(p, p->rk, loop, err, errlen);
        if (!p->txn) {
            sluice_kq_close(&p->kq);
            rd_kafka_queue_destroy(p->kq.queue);
            rd_kafka_destroy(p->rk);
            p->rk = NULL;
            rc = SLUICE_ENOMEM;
        }
    }
    if (!p->rk) {
        free(p);
        return rc;
    }
    *out = p;
    return 0;
}

int sluice_producer_send(sluice_producer *p, const sluice_message *m,
                         void *msg_opaque, char *err, size_t errlen) {
    if (!p || !m || !m->topic) {
        sluice_errf(err, errlen, "send: producer, message and topic are required");
        return SLUICE_EINVAL;
    }
    if (p->free_pending) {
        sluice_errf(err, errlen, "producer is closed");
        return SLUICE_ECLOSED;
    }
    rd_kafka_headers_t *headers = NULL;
    if (m->header_count) {
        headers = rd_kafka_headers_new(m->header_count);
        for (size_t i = 0; i < m->header_count; i++)
            rd_kafka_header_add(headers, m->headers[i].name, -1,
                                m->headers[i].value,
                                m->headers[i].value ? (ssize_t)m->headers[i].value_len : 0);
    }
    rd_kafka_resp_err_t e = rd_kafka_producev(
        p->rk,
        RD_KAFKA_V_TOPIC(m->topic),
        RD_KAFKA_V_KEY(m->key, m->key ? m->key_len : 0),
        RD_KAFKA_V_VALUE((void *)m->value, m->value ? m->value_len : 0),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_PARTITION(m->partition < 0 ? RD_KAFKA_PARTITION_UA : m->partition),
        RD_KAFKA_V_TIMESTAMP(m->timestamp_ms > 0 ? m->timestamp_ms : 0),
        RD_KAFKA_V_OPAQUE(msg_opaque),
        RD_KAFKA_V_HEADERS(headers),
        RD_KAFKA_V_END);
    struct ptopic *t = topic_of(p, m->topic);
    if (e) {
        /* Headers are only adopted on success. */
        if (headers) rd_kafka_headers_destroy(headers);
        if (t) count_error(t, sluice_kafka_err_name(e), 1);
        sluice_errf(err, errlen, "%s: %s", sluice_kafka_err_name(e), rd_kafka_err2str(e));
        return e == RD_KAFKA_RESP_ERR__QUEUE_FULL ? SLUICE_EFULL : SLUICE_EKAFKA;
    }
    if (t) t->c.sent++;
    producer_set_in_flight(p, p->in_flight + 1);
    return 0;
}

size_t sluice_producer_in_flight(const sluice_producer *p) {
    return p ? p->in_flight : 0;
}

size_t sluice_producer_flush(sluice_producer *p, int timeout_ms) {
    if (!p) return 0;
    if (p->transactional) {   /* reports are events: served here */
        uint64_t deadline = sluice_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
        while (!p->dispatching && p->in_flight) {
            uint64_t now = sluice_now_ms();
            if (now >= deadline) break;
            sluice_producer_serve_events(p, deadline - now < 100 ? (int)(deadline - now) : 100);
        }
        return p->in_flight;
    }
    /* From inside a delivery callback librdkafka must not be re-entered. */
    if (!p->dispatching) {
        rd_kafka_flush(p->rk, timeout_ms);
        producer_delivery_end(p);
    }
    return p->in_flight;
}

int sluice_producer_conf_get(const sluice_producer *p, const char *name,
                             char *buf, size_t size, char *err, size_t errlen) {
    size_t len = size;
    if (!p || !name || !buf || !size) {
        sluice_errf(err, errlen, "conf_get: producer, name and buffer are required");
        return SLUICE_EINVAL;
    }
    if (rd_kafka_conf_get(rd_kafka_conf(p->rk), name, buf, &len) != RD_KAFKA_CONF_OK) {
        sluice_errf(err, errlen, "no such Kafka property: %s", name);
        return SLUICE_EINVAL;
    }
    if (len > size) {
        sluice_errf(err, errlen, "%s: value longer than %zu bytes", name, size - 1);
        return SLUICE_ETOOBIG;
    }
    return 0;
}

unsigned long sluice_producer_wakeups(const struct sluice_producer *p) {
    return p ? p->kq.wakeups : 0;
}

void sluice_producer_free(sluice_producer *p) {
    if (!p) return;
    if (p->dispatching) {   /* called from a callback: finish after it */
        p->free_pending = 1;
        return;
    }
    producer_destroy(p);
}

static void producer_destroy(sluice_producer *p) {
    p->free_pending = 1;   /* callbacks run below must not send more */
    sluice_kq_close(&p->kq);
    if (p->in_flight) {
        rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        /* Purged messages come back as failed delivery reports; serve them
         * here so each accepted message is reported exactly once. */
        uint64_t deadline = sluice_now_ms() + 5000;
        while (p->in_flight && sluice_now_ms() < deadline) {
            if (p->transactional) sluice_producer_serve_events(p, 50);
            else rd_kafka_poll(p->rk, 50);
        }
        producer_delivery_end(p);
    }
    /* Its call in progress (an abort or commit) ends within its timeout. */
    sluice_txn_free(p->txn);
    rd_kafka_queue_destroy(p->main_queue);
    rd_kafka_destroy(p->rk);
    while (p->topics) {
        struct ptopic *t = p->topics;
        p->topics = t->next;
        free(t->errors);
        free(t);
    }
    free(p->statistics);
    free(p);
}

int sluice_producer_txn(sluice_producer *p, sluice_txn_op op, sluice_consumer *group,
                        const sluice_partition *offsets, size_t n, int timeout_ms,
                        void (*done)(void *ud, const sluice_txn_result *r), void *ud,
                        char *err, size_t errlen) {
    if (!p || !p->transactional) {
        sluice_errf(err, errlen, "the producer is not transactional (no transactional.id)");
        return SLUICE_EINVAL;
    }
    if (p->free_pending) {
        sluice_errf(err, errlen, "producer is closed");
        return SLUICE_ECLOSED;
    }
    if (n && !group) {
        sluice_errf(err, errlen, "offsets need the group consumer they were read by");
        return SLUICE_EINVAL;
    }
    return sluice_txn_start(p->txn, op, group ? sluice_consumer_rk(group) : NULL, offsets, n,
                            timeout_ms, done, ud, err, errlen);
}

int sluice_producer_txn_wait(sluice_producer *p, int timeout_ms) {
    if (!p || !p->txn) return 1;
    uint64_t deadline = sluice_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        sluice_txn_deliver(p->txn);
        if (!sluice_txn_busy(p->txn)) return 1;
        uint64_t now = sluice_now_ms();
        if (now >= deadline || p->free_pending) return 0;
        /* The thread's commit waits for these reports to be taken. */
        sluice_producer_serve_events(p, deadline - now < 10 ? (int)(deadline - now) : 10);
    }
}
