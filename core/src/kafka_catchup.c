/* The catch-up reader (sluice_catchup_*): one topic's partitions read from
 * a subscriber's position onwards, outside any group. Its thread does
 * everything that blocks and hands its results to the loop thread as a
 * list of items behind an eventfd; the loop takes one item per wake-up, so
 * a catch-up never holds the loop for more than one batch, and the thread
 * waits while SLUICE_CATCHUP_AHEAD batches are not taken yet. The state
 * both sides use is freed by the last one to let go: the loop never waits
 * for the thread (closing a Kafka handle can take a while). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "kafka_internal.h"

/* Bound on the watermark and epoch-check requests. */
#define CATCHUP_REQUEST_MS 10000
#define CATCHUP_POLL_MS 200

enum { ITEM_START, ITEM_BATCH, ITEM_END, ITEM_ERROR };

typedef struct catchup_item {
    struct catchup_item *next;
    int kind;
    int recovered;                 /* ITEM_START */
    rd_kafka_message_t **msgs;     /* ITEM_BATCH */
    size_t n;
    int32_t partition;             /* ITEM_END */
    int64_t end;
    char text[320];                /* ITEM_START (not recovered), ITEM_ERROR */
} catchup_item;

typedef struct catchup_shared {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int refs;                      /* under mu: the loop side and the thread */
    int stop;                      /* under mu */
    catchup_item *head, *tail;     /* under mu */
    int batches;                   /* under mu: batches posted, not taken */
    int efd;
    rd_kafka_t *rk;
    char *topic;
    sluice_partition *from;        /* topic fields unused */
    int64_t *check_ts;
    size_t n;
} catchup_shared;

struct sluice_catchup {
    sluice_catchup_config cfg;
    catchup_shared *s;
    sluice_watch *watch;
    int busy;
    int done;      /* nothing more to deliver */
    int freed;     /* freed from inside a callback */
};

static void item_free(catchup_item *it) {
    for (size_t i = 0; i < it->n; i++) rd_kafka_message_destroy(it->msgs[i]);
    free(it->msgs);
    free(it);
}

static void shared_release(catchup_shared *s) {
    pthread_mutex_lock(&s->mu);
    int last = --s->refs == 0;
    pthread_mutex_unlock(&s->mu);
    if (!last) return;
    while (s->head) {
        catchup_item *it = s->head;
        s->head = it->next;
        item_free(it);
    }
    if (s->rk) rd_kafka_destroy(s->rk);
    if (s->efd >= 0) close(s->efd);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cond);
    free(s->topic);
    free(s->from);
    free(s->check_ts);
    free(s);
}

static int stopping(catchup_shared *s) {
    pthread_mutex_lock(&s->mu);
    int stop = s->stop;
    pthread_mutex_unlock(&s->mu);
    return stop;
}

/* Thread: hand an item to the loop (dropped once the loop let go). */
static void post(catchup_shared *s, catchup_item *it) {
    static const uint64_t one = 1;
    pthread_mutex_lock(&s->mu);
    if (s->stop) {
        pthread_mutex_unlock(&s->mu);
        item_free(it);
        return;
    }
    if (s->tail) s->tail->next = it;
    else s->head = it;
    s->tail = it;
    if (it->kind == ITEM_BATCH) s->batches++;
    pthread_mutex_unlock(&s->mu);
    while (write(s->efd, &one, sizeof one) < 0 && errno == EINTR) {}
}

static catchup_item *item_new(int kind) {
    catchup_item *it = calloc(1, sizeof *it);
    if (it) it->kind = kind;
    return it;
}

static void post_text(catchup_shared *s, int kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void post_text(catchup_shared *s, int kind, const char *fmt, ...) {
    catchup_item *it = item_new(kind);
    if (!it) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(it->text, sizeof it->text, fmt, ap);
    va_end(ap);
    post(s, it);
}

static int64_t message_ts(const rd_kafka_message_t *m) {
    rd_kafka_timestamp_type_t type;
    return rd_kafka_message_timestamp(m, &type);
}

/* Thread: is every position still in Kafka, and is it this topic's? 1 if
 * so; otherwise the START item saying why not is posted. */
static int check_positions(catchup_shared *s) {
    rd_kafka_topic_partition_list_t *verify = rd_kafka_topic_partition_list_new((int)s->n);
    int ok = 1;
    for (size_t i = 0; ok && i < s->n; i++) {
        int32_t p = s->from[i].partition;
        int64_t at = s->from[i].offset, lo = 0, hi = 0;
        rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(s->rk, s->topic, p, &lo, &hi,
                                                                 CATCHUP_REQUEST_MS);
        ok = 0;
        if (at < 0)
            ok = 1;   /* a logical offset (the beginning): nothing to check */
        else if (e)
            post_text(s, ITEM_START, "KAFKA: %s [%d]: watermarks: %s", s->topic, (int)p, rd_kafka_err2str(e));
        else if (at < lo)
            post_text(s, ITEM_START, "EXPIRED: %s [%d] starts at offset %lld now, after the position's %lld",
                      s->topic, (int)p, (long long)lo, (long long)at);
        else if (at > hi)
            post_text(s, ITEM_START, "EPOCH: %s [%d] ends at offset %lld, before the position's %lld "
                      "(the topic was re-created?)", s->topic, (int)p, (long long)hi, (long long)at);
        else
            ok = 1;
        if (ok && s->check_ts && s->check_ts[i] >= 0 && at - 1 >= lo)
            rd_kafka_topic_partition_list_add(verify, s->topic, p)->offset = at - 1;
    }
    if (ok && verify->cnt) {
        /* The epoch: the record before each position, read back. */
        rd_kafka_resp_err_t e = rd_kafka_assign(s->rk, verify);
        int left = verify->cnt;
        uint64_t deadline = sluice_now_ms() + CATCHUP_REQUEST_MS;
        while (!e && ok && left > 0 && !stopping(s) && sluice_now_ms() < deadline) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(s->rk, CATCHUP_POLL_MS);
            if (!m) continue;
            for (int i = 0; !m->err && i < verify->cnt; i++) {
                rd_kafka_topic_partition_t *tp = &verify->elems[i];
                if (tp->partition != m->partition || tp->err) continue;
                tp->err = RD_KAFKA_RESP_ERR__PARTITION_EOF;   /* checked */
                left--;
                size_t k = 0;
                while (s->from[k].partition != tp->partition) k++;
                if (m->offset != tp->offset || message_ts(m) != s->check_ts[k]) {
                    ok = 0;
                    post_text(s, ITEM_START, "EPOCH: %s [%d]: the record at offset %lld is not the "
                              "position's (timestamp %lld, not %lld): the topic was re-created?",
                              s->topic, (int)m->partition, (long long)tp->offset,
                              (long long)message_ts(m), (long long)s->check_ts[k]);
                }
            }
            if (m->err && m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                ok = 0;
                post_text(s, ITEM_START, "KAFKA: %s [%d]: %s", s->topic, (int)m->partition,
                          rd_kafka_message_errstr(m));
            }
            rd_kafka_message_destroy(m);
        }
        if (ok && (e || left > 0) && !stopping(s)) {
            ok = 0;
            post_text(s, ITEM_START, "KAFKA: %s: the records at the positions could not be read: %s",
                      s->topic, e ? rd_kafka_err2str(e) : "timed out");
        }
    }
    rd_kafka_topic_partition_list_destroy(verify);
    return ok;
}

/* Thread: fetch from the positions on, a batch at a time. */
static void read_on(catchup_shared *s) {
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new((int)s->n);
    for (size_t i = 0; i < s->n; i++)
        rd_kafka_topic_partition_list_add(list, s->topic, s->from[i].partition)->offset = s->from[i].offset;
    rd_kafka_resp_err_t e = rd_kafka_assign(s->rk, list);
    rd_kafka_topic_partition_list_destroy(list);
    if (e) {
        post_text(s, ITEM_ERROR, "KAFKA: %s: assign: %s", s->topic, rd_kafka_err2str(e));
        return;
    }
    rd_kafka_queue_t *q = rd_kafka_queue_get_consumer(s->rk);
    rd_kafka_message_t *buf[SLUICE_CATCHUP_BATCH];
    int failed = 0;
    while (!failed) {
        pthread_mutex_lock(&s->mu);
        while (!s->stop && s->batches >= SLUICE_CATCHUP_AHEAD) pthread_cond_wait(&s->cond, &s->mu);
        int stop = s->stop;
        pthread_mutex_unlock(&s->mu);
        if (stop) break;
        ssize_t got = rd_kafka_consume_batch_queue(q, CATCHUP_POLL_MS, buf, SLUICE_CATCHUP_BATCH);
        catchup_item *batch = NULL;
        for (ssize_t i = 0; i < got; i++) {
            rd_kafka_message_t *m = buf[i];
            if (!m->err) {
                if (!batch && (batch = item_new(ITEM_BATCH)) != NULL &&
                    !(batch->msgs = malloc((size_t)got * sizeof *batch->msgs))) {
                    free(batch);
                    batch = NULL;
                }
                if (batch) {
                    batch->msgs[batch->n++] = m;
                    continue;
                }
                failed = 1;   /* out of memory: not a gap */
                post_text(s, ITEM_ERROR, "NOMEM: out of memory");
            } else if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                if (batch) post(s, batch);
                batch = NULL;
                catchup_item *end = item_new(ITEM_END);
                if (end) {
                    end->partition = m->partition;
                    end->end = m->offset;
                    post(s, end);
                }
            } else if (m->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET ||
                       m->err == RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE) {
                /* Deleted while we read: going on would leave a gap. */
                failed = 1;
                post_text(s, ITEM_ERROR, "EXPIRED: %s [%d]: %s", s->topic, (int)m->partition,
                          rd_kafka_message_errstr(m));
            }
            /* Other errors (a broker away…) librdkafka retries by itself. */
            rd_kafka_message_destroy(m);
        }
        if (batch) post(s, batch);
    }
    rd_kafka_queue_destroy(q);
}

static void *catchup_main(void *arg) {
    catchup_shared *s = arg;
    if (check_positions(s)) {
        catchup_item *it = item_new(ITEM_START);
        if (it) {
            it->recovered = 1;
            post(s, it);
            read_on(s);
        }
    }
    rd_kafka_consumer_close(s->rk);
    shared_release(s);
    return NULL;
}

/* ---- loop thread ---------------------------------------------------------- */

static void catchup_destroy(sluice_catchup *c) {
    catchup_shared *s = c->s;
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->mu);
    if (c->watch) sluice_watch_free(c->watch);
    shared_release(s);
    free(c);
}

/* A batch's messages as records (headers included) for on_records. */
static void deliver_batch(sluice_catchup *c, catchup_item *it) {
    size_t nh = 0;
    for (size_t i = 0; i < it->n; i++) {
        rd_kafka_headers_t *h;
        if (!rd_kafka_message_headers(it->msgs[i], &h)) nh += rd_kafka_header_cnt(h);
    }
    sluice_record *recs = calloc(it->n, sizeof *recs);
    sluice_header *hdrs = calloc(nh ? nh : 1, sizeof *hdrs);
    if (!recs || !hdrs) {
        free(recs);
        free(hdrs);
        if (c->cfg.on_error) c->cfg.on_error(c->cfg.ud, "NOMEM: out of memory");
        return;
    }
    size_t at = 0;
    for (size_t i = 0; i < it->n; i++) {
        const rd_kafka_message_t *m = it->msgs[i];
        rd_kafka_headers_t *h;
        recs[i] = (sluice_record){
            .topic = c->s->topic, .partition = m->partition, .offset = m->offset,
            .key = m->key, .key_len = m->key ? m->key_len : 0,
            .value = m->payload, .value_len = m->payload ? m->len : 0,
            .timestamp_ms = message_ts(m), .headers = hdrs + at,
        };
        if (rd_kafka_message_headers(m, &h)) continue;
        const char *name;
        const void *value;
        size_t len;
        for (size_t k = 0; !rd_kafka_header_get_all(h, k, &name, &value, &len); k++) {
            hdrs[at++] = (sluice_header){ name, value, len };
            recs[i].header_count++;
        }
    }
    c->cfg.on_records(c->cfg.ud, recs, it->n);
    free(recs);
    free(hdrs);
}

static void catchup_on_ready(sluice_watch *w, void *ud) {
    (void)w;
    sluice_catchup *c = ud;
    catchup_shared *s = c->s;
    uint64_t count;
    static const uint64_t one = 1;
    while (read(s->efd, &count, sizeof count) < 0 && errno == EINTR) {}
    pthread_mutex_lock(&s->mu);
    catchup_item *it = s->head;
    if (it) {
        s->head = it->next;
        if (!s->head) s->tail = NULL;
        if (it->kind == ITEM_BATCH) {
            s->batches--;
            pthread_cond_signal(&s->cond);
        }
    }
    int more = s->head != NULL;
    pthread_mutex_unlock(&s->mu);
    /* One item per wake-up: the loop serves everything else in between. */
    if (more)
        while (write(s->efd, &one, sizeof one) < 0 && errno == EINTR) {}
    if (!it) return;
    c->busy = 1;
    switch (it->kind) {
    case ITEM_START:
        if (c->cfg.on_start) c->cfg.on_start(c->cfg.ud, it->recovered, it->recovered ? NULL : it->text);
        c->done |= !it->recovered;
        break;
    case ITEM_BATCH:
        if (c->cfg.on_records) deliver_batch(c, it);
        break;
    case ITEM_END:
        if (c->cfg.on_end) c->cfg.on_end(c->cfg.ud, it->partition, it->end);
        break;
    default:
        if (c->cfg.on_error) c->cfg.on_error(c->cfg.ud, it->text);
        c->done = 1;
        break;
    }
    c->busy = 0;
    item_free(it);
    /* Done or freed from a callback: deliver nothing more. */
    if (c->done || c->freed) {
        c->cfg.on_start = NULL;
        c->cfg.on_records = NULL;
        c->cfg.on_end = NULL;
        c->cfg.on_error = NULL;
    }
    if (c->freed) catchup_destroy(c);
}

static void catchup_log_drop(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    (void)rk; (void)level; (void)fac; (void)buf;
}

static int shared_new(catchup_shared **out, const sluice_catchup_config *cfg, char *err, size_t errlen) {
    catchup_shared *s = calloc(1, sizeof *s);
    if (!s) return SLUICE_ENOMEM;
    s->efd = -1;
    s->refs = 1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cond, NULL);
    *out = s;
    s->n = cfg->n;
    s->topic = strdup(cfg->topic);
    s->from = calloc(cfg->n ? cfg->n : 1, sizeof *s->from);
    s->check_ts = calloc(cfg->n ? cfg->n : 1, sizeof *s->check_ts);
    if (!s->topic || !s->from || !s->check_ts) return SLUICE_ENOMEM;
    for (size_t i = 0; i < cfg->n; i++) {
        s->from[i] = cfg->from[i];
        s->from[i].topic = NULL;
        s->check_ts[i] = cfg->check_ts ? cfg->check_ts[i] : -1;
    }
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* An assign()-only consumer needs a group name to poll; it never joins
     * it. A position gone meanwhile is an error, not a silent jump. */
    static const char *const fixed[] = {
        "group.id", "sluice.catchup", "enable.auto.commit", "false",
        "enable.partition.eof", "true", "auto.offset.reset", "error", NULL
    };
    /* No loop to log through from this thread: failures reach the owner
     * as items (on_start, on_error); librdkafka retries the rest. */
    rd_kafka_conf_set_log_cb(conf, catchup_log_drop);
    int rc = sluice_kafka_conf_apply(conf, cfg->props, err, errlen);
    if (!rc) rc = sluice_kafka_conf_apply(conf, fixed, err, errlen);
    if (!rc) {
        char why[512];
        s->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof why);
        if (!s->rk) {
            sluice_errf(err, errlen, "%s", why);
            rc = SLUICE_EKAFKA;
        } else {
            conf = NULL;
            rd_kafka_poll_set_consumer(s->rk);
        }
    }
    if (conf) rd_kafka_conf_destroy(conf);
    if (rc) return rc;
    s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->efd < 0) {
        sluice_errf(err, errlen, "eventfd: %s", strerror(errno));
        return SLUICE_EIO;
    }
    return 0;
}

int sluice_catchup_start(sluice_loop *loop, const sluice_catchup_config *cfg,
                         sluice_catchup **out, char *err, size_t errlen) {
    *out = NULL;
    if (!cfg->topic || (cfg->n && !cfg->from)) return SLUICE_EINVAL;
    sluice_catchup *c = calloc(1, sizeof *c);
    if (!c) return SLUICE_ENOMEM;
    c->cfg = *cfg;
    int rc = shared_new(&c->s, cfg, err, errlen);
    if (!rc) rc = sluice_watch_new(loop, c->s->efd, catchup_on_ready, c, &c->watch, err, errlen);
    if (rc) {
        if (rc == SLUICE_ENOMEM) sluice_errf(err, errlen, "catch-up: out of memory");
        if (c->s) catchup_destroy(c);
        else free(c);
        return rc;
    }
    pthread_t thread;
    sigset_t all, previous;
    /* Signals stay with the loop thread (signalfd). */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &previous);
    c->s->refs++;   /* the thread's */
    int created = pthread_create(&thread, NULL, catchup_main, c->s);
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    if (created) {
        c->s->refs--;
        sluice_errf(err, errlen, "catch-up: thread: %s", strerror(created));
        catchup_destroy(c);
        return SLUICE_EIO;
    }
    pthread_detach(thread);
    *out = c;
    return 0;
}

void sluice_catchup_free(sluice_catchup *c) {
    if (!c) return;
    if (c->busy) {
        c->freed = 1;   /* freed once the running callback returns */
        return;
    }
    catchup_destroy(c);
}
