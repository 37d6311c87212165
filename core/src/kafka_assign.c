/* Assign mode of the consumer (no group): which partitions the topics have
 * and where to start reading each. Metadata, watermark and offsets-for-times
 * requests block, so they run on a thread of their own; each partition
 * found is handed to the loop thread once, with its start offset, through
 * an eventfd. The thread asks again every refresh_ms to notice partitions
 * added later (and sooner while a topic is missing). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "kafka_internal.h"

/* Bound on each request of the thread: a close waits for at most one. */
#define ASSIGNER_REQUEST_MS 2000
/* Retry period while a topic is missing or a request failed. */
#define ASSIGNER_RETRY_MS 250

struct sluice_assigner {
    sluice_assigner_config cfg;    /* topics and offsets: our own copies */
    char **topics;
    size_t ntopics;
    sluice_partition *offsets;
    rd_kafka_topic_t **rkt;
    int32_t *known;                /* per topic: partitions 0..known-1 handed over */
    char *seen;                    /* per topic: a metadata answer was had */
    pthread_t thread;
    int thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int stop;                                  /* under mu */
    rd_kafka_topic_partition_list_t *pending;  /* under mu: found, not yet handed over */
    char error[256];                           /* under mu: last failure, not yet reported */
    int failing;                               /* thread only: a failure was reported */
    int efd;
    sluice_watch *watch;
    sluice_loop *loop;
};

static int assigner_stopping(sluice_assigner *a) {
    pthread_mutex_lock(&a->mu);
    int stop = a->stop;
    pthread_mutex_unlock(&a->mu);
    return stop;
}

static void assigner_post(sluice_assigner *a, rd_kafka_topic_partition_list_t *found,
                          const char *error) {
    static const uint64_t one = 1;
    pthread_mutex_lock(&a->mu);
    if (found)
        for (int i = 0; i < found->cnt; i++)
            rd_kafka_topic_partition_list_add(a->pending, found->elems[i].topic,
                                              found->elems[i].partition)->offset = found->elems[i].offset;
    if (error) snprintf(a->error, sizeof a->error, "%s", error);
    pthread_mutex_unlock(&a->mu);
    while (write(a->efd, &one, sizeof one) < 0 && errno == EINTR) {}
}

static void assigner_fail(sluice_assigner *a, const char *topic, const char *what,
                          rd_kafka_resp_err_t e) {
    char text[256];
    if (a->failing) return;   /* reported once until a round succeeds */
    a->failing = 1;
    snprintf(text, sizeof text, "%s: %s: %s: %s", topic, what, sluice_kafka_err_name(e),
             rd_kafka_err2str(e));
    assigner_post(a, NULL, text);
}

static int64_t assigner_explicit(const sluice_assigner *a, const char *topic, int32_t p) {
    for (size_t i = 0; i < a->cfg.offsets_n; i++)
        if (a->offsets[i].partition == p && strcmp(a->offsets[i].topic, topic) == 0)
            return a->offsets[i].offset;
    return -1000000;   /* none */
}

/* Start offsets by time: the first record stamped at or after the time.
 * Where none is (yet), the high watermark read before the lookup: every
 * record from there on was written after the lookup began, so none is
 * missed. 0, or the failing request's error. */
static rd_kafka_resp_err_t assigner_by_time(sluice_assigner *a, rd_kafka_topic_partition_list_t *list) {
    int64_t *high = calloc((size_t)list->cnt, sizeof *high);
    if (!high) return RD_KAFKA_RESP_ERR__FAIL;
    rd_kafka_resp_err_t e = 0;
    for (int i = 0; !e && i < list->cnt; i++) {
        int64_t lo;
        e = assigner_stopping(a) ? RD_KAFKA_RESP_ERR__DESTROY
            : rd_kafka_query_watermark_offsets(a->cfg.rk, list->elems[i].topic, list->elems[i].partition,
                                               &lo, &high[i], ASSIGNER_REQUEST_MS);
    }
    rd_kafka_topic_partition_list_t *times = e ? NULL : rd_kafka_topic_partition_list_copy(list);
    if (times) {
        for (int i = 0; i < times->cnt; i++) times->elems[i].offset = a->cfg.start_time_ms;
        e = rd_kafka_offsets_for_times(a->cfg.rk, times, ASSIGNER_REQUEST_MS);
        for (int i = 0; !e && i < times->cnt; i++) {
            int64_t at = times->elems[i].err ? -1 : times->elems[i].offset;
            list->elems[i].offset = at >= 0 ? at : high[i];
        }
        rd_kafka_topic_partition_list_destroy(times);
    }
    free(high);
    return e;
}

/* Logical starts (beginning, end) as offsets, from the watermarks: the
 * owner then knows where each partition starts before any of its records
 * (a resume's seam is placed by offsets, app/feed.lua). 0, or the failing
 * request's error. */
static rd_kafka_resp_err_t assigner_resolve(sluice_assigner *a, rd_kafka_topic_partition_list_t *list) {
    rd_kafka_resp_err_t e = 0;
    for (int i = 0; !e && i < list->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &list->elems[i];
        int64_t lo, hi;
        if (tp->offset != SLUICE_FROM_EARLIEST && tp->offset != SLUICE_FROM_LATEST) continue;
        e = assigner_stopping(a) ? RD_KAFKA_RESP_ERR__DESTROY
            : rd_kafka_query_watermark_offsets(a->cfg.rk, tp->topic, tp->partition, &lo, &hi,
                                               ASSIGNER_REQUEST_MS);
        if (!e) tp->offset = tp->offset == SLUICE_FROM_EARLIEST ? lo : hi;
    }
    return e;
}

/* One look at topic t: partitions not handed over yet, with their start.
 * Returns 1 if the topic is missing or a request failed (retry soon). */
static int assigner_topic(sluice_assigner *a, size_t t) {
    const rd_kafka_metadata_t *md = NULL;
    const char *topic = a->topics[t];
    if (!a->rkt[t]) a->rkt[t] = rd_kafka_topic_new(a->cfg.rk, topic, NULL);
    if (!a->rkt[t]) return 1;
    rd_kafka_resp_err_t e = rd_kafka_metadata(a->cfg.rk, 0, a->rkt[t], &md, ASSIGNER_REQUEST_MS);
    if (e) {
        assigner_fail(a, topic, "metadata", e);
        return 1;
    }
    const rd_kafka_metadata_topic_t *mt = md->topic_cnt ? &md->topics[0] : NULL;
    int missing = !mt || mt->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART || mt->partition_cnt == 0;
    if (mt && !missing && mt->err) {
        assigner_fail(a, topic, "metadata", mt->err);
        rd_kafka_metadata_destroy(md);
        return 1;
    }
    /* Partitions of the first answer exist since before the consumer:
     * they start where the owner said. Any found later (a topic created
     * or grown since) was written after it started: from its beginning. */
    int initial = !a->seen[t];
    a->seen[t] = 1;
    int32_t count = 0;
    for (int i = 0; !missing && i < mt->partition_cnt; i++)
        if (mt->partitions[i].id + 1 > count) count = mt->partitions[i].id + 1;
    rd_kafka_metadata_destroy(md);
    if (missing) return 1;
    if (count <= a->known[t]) return 0;

    rd_kafka_topic_partition_list_t *found = rd_kafka_topic_partition_list_new(count - a->known[t]);
    rd_kafka_topic_partition_list_t *by_time = rd_kafka_topic_partition_list_new(count - a->known[t]);
    for (int32_t p = a->known[t]; p < count; p++) {
        int64_t at = assigner_explicit(a, topic, p);
        if (at == -1000000) at = initial ? a->cfg.start : SLUICE_FROM_EARLIEST;
        if (at == SLUICE_FROM_TIME) rd_kafka_topic_partition_list_add(by_time, topic, p);
        else rd_kafka_topic_partition_list_add(found, topic, p)->offset = at;
    }
    e = by_time->cnt ? assigner_by_time(a, by_time) : 0;
    if (!e) e = assigner_resolve(a, found);
    if (e) {
        a->seen[t] = !initial;   /* the next round is the first answer again */
        assigner_fail(a, topic, "offsets for the start time", e);
    } else {
        for (int i = 0; i < by_time->cnt; i++)
            rd_kafka_topic_partition_list_add(found, topic, by_time->elems[i].partition)->offset =
                by_time->elems[i].offset;
        a->known[t] = count;
        assigner_post(a, found, NULL);
    }
    rd_kafka_topic_partition_list_destroy(by_time);
    rd_kafka_topic_partition_list_destroy(found);
    return e ? 1 : 0;
}

static void *assigner_main(void *arg) {
    sluice_assigner *a = arg;
    pthread_mutex_lock(&a->mu);
    while (!a->stop) {
        pthread_mutex_unlock(&a->mu);
        int retry = 0;
        for (size_t t = 0; t < a->ntopics && !assigner_stopping(a); t++) retry |= assigner_topic(a, t);
        if (!retry) a->failing = 0;
        int wait_ms = retry && a->cfg.refresh_ms > ASSIGNER_RETRY_MS ? ASSIGNER_RETRY_MS : a->cfg.refresh_ms;
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += wait_ms / 1000;
        until.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) { until.tv_sec++; until.tv_nsec -= 1000000000L; }
        pthread_mutex_lock(&a->mu);
        while (!a->stop && pthread_cond_timedwait(&a->cond, &a->mu, &until) != ETIMEDOUT) {}
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

/* Loop thread: hand the partitions found (and a failure) to the owner. */
static void assigner_on_ready(sluice_watch *w, void *ud) {
    (void)w;
    sluice_assigner *a = ud;
    uint64_t count;
    char error[256];
    while (read(a->efd, &count, sizeof count) < 0 && errno == EINTR) {}
    pthread_mutex_lock(&a->mu);
    rd_kafka_topic_partition_list_t *found = a->pending;
    a->pending = rd_kafka_topic_partition_list_new(0);
    snprintf(error, sizeof error, "%s", a->error);
    a->error[0] = 0;
    pthread_mutex_unlock(&a->mu);
    /* Last use of a: the owner may stop the assigner from inside. */
    if (found->cnt || error[0]) a->cfg.on_found(a->cfg.ud, found, error[0] ? error : NULL);
    rd_kafka_topic_partition_list_destroy(found);
}

static void assigner_release(sluice_assigner *a) {
    for (size_t t = 0; t < a->ntopics; t++) {
        if (a->rkt && a->rkt[t]) rd_kafka_topic_destroy(a->rkt[t]);
        if (a->topics) free(a->topics[t]);
    }
    for (size_t i = 0; a->offsets && i < a->cfg.offsets_n; i++) free((char *)a->offsets[i].topic);
    free(a->topics);
    free(a->rkt);
    free(a->known);
    free(a->seen);
    free(a->offsets);
    if (a->watch) sluice_watch_free(a->watch);
    if (a->efd >= 0) close(a->efd);
    if (a->pending) rd_kafka_topic_partition_list_destroy(a->pending);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cond);
    free(a);
}

static int assigner_copy(sluice_assigner *a, const sluice_assigner_config *cfg) {
    while (cfg->topics[a->ntopics]) a->ntopics++;
    a->topics = calloc(a->ntopics, sizeof *a->topics);
    a->rkt = calloc(a->ntopics, sizeof *a->rkt);
    a->known = calloc(a->ntopics, sizeof *a->known);
    a->seen = calloc(a->ntopics, 1);
    a->offsets = calloc(cfg->offsets_n ? cfg->offsets_n : 1, sizeof *a->offsets);
    if (!a->topics || !a->rkt || !a->known || !a->seen || !a->offsets) return SLUICE_ENOMEM;
    for (size_t t = 0; t < a->ntopics; t++)
        if (!(a->topics[t] = strdup(cfg->topics[t]))) return SLUICE_ENOMEM;
    for (size_t i = 0; i < cfg->offsets_n; i++) {
        a->offsets[i] = cfg->offsets[i];
        a->offsets[i].topic = NULL;
        if (!cfg->offsets[i].topic || !(a->offsets[i].topic = strdup(cfg->offsets[i].topic)))
            return cfg->offsets[i].topic ? SLUICE_ENOMEM : SLUICE_EINVAL;
    }
    return 0;
}

int sluice_assigner_start(sluice_loop *loop, const sluice_assigner_config *cfg,
                          sluice_assigner **out, char *err, size_t errlen) {
    *out = NULL;
    sluice_assigner *a = calloc(1, sizeof *a);
    if (!a) return SLUICE_ENOMEM;
    a->cfg = *cfg;
    if (a->cfg.refresh_ms <= 0) a->cfg.refresh_ms = SLUICE_CONSUMER_REFRESH_MS;
    a->loop = loop;
    a->efd = -1;
    pthread_mutex_init(&a->mu, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&a->cond, &attr);
    pthread_condattr_destroy(&attr);
    int rc = assigner_copy(a, cfg);
    if (rc) {
        sluice_errf(err, errlen, "consumer: %s", rc == SLUICE_EINVAL
                          ? "a start offset without a topic" : "out of memory");
        assigner_release(a);
        return rc;
    }
    a->pending = rd_kafka_topic_partition_list_new(0);
    a->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (a->efd < 0) {
        sluice_errf(err, errlen, "eventfd: %s", strerror(errno));
        assigner_release(a);
        return SLUICE_EIO;
    }
    rc = sluice_watch_new(loop, a->efd, assigner_on_ready, a, &a->watch, err, errlen);
    if (rc) {
        assigner_release(a);
        return rc;
    }
    int created = sluice_thread_start(&a->thread, assigner_main, a);
    if (created) {
        sluice_errf(err, errlen, "consumer: thread: %s", strerror(created));
        assigner_release(a);
        return SLUICE_EIO;
    }
    a->thread_started = 1;
    *out = a;
    return 0;
}

void sluice_assigner_stop(sluice_assigner *a) {
    if (!a) return;
    pthread_mutex_lock(&a->mu);
    a->stop = 1;
    pthread_cond_signal(&a->cond);
    pthread_mutex_unlock(&a->mu);
    if (a->thread_started) pthread_join(a->thread, NULL);
    assigner_release(a);
}
