/* A librdkafka queue wired to the loop through an eventfd, and the small
 * helpers the producer, consumer and embedded broker share. */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "kafka_internal.h"

int sluice_kafka_fail(rd_kafka_resp_err_t e, char *err, size_t errlen) {
    sluice_errf(err, errlen, "%s: %s", sluice_kafka_err_name(e), rd_kafka_err2str(e));
    return SLUICE_EKAFKA;
}

int sluice_thread_start(pthread_t *thread, void *(*fn)(void *), void *arg) {
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &previous);
    int created = pthread_create(thread, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    return created;
}

rd_kafka_t *sluice_kafka_open(rd_kafka_type_t type, rd_kafka_conf_t *conf,
                              sluice_kq *kq, sluice_loop *loop,
                              int (*serve)(void *ud, int budget), void *ud,
                              int *rc, char *err, size_t errlen) {
    char why[512];
    if (*rc) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    /* The log callback finds the loop through kq from rd_kafka_new on. */
    kq->loop = loop;
    kq->efd = -1;
    rd_kafka_conf_set_opaque(conf, ud);
    rd_kafka_t *rk = rd_kafka_new(type, conf, why, sizeof why);
    if (!rk) {   /* conf is still ours on failure */
        rd_kafka_conf_destroy(conf);
        sluice_errf(err, errlen, "%s", why);
        *rc = SLUICE_EKAFKA;
        return NULL;
    }
    int consumer = type == RD_KAFKA_CONSUMER;
    if (consumer) rd_kafka_poll_set_consumer(rk);
    sluice_kafka_log_to_main_queue(rk);
    rd_kafka_queue_t *q = consumer ? rd_kafka_queue_get_consumer(rk) : rd_kafka_queue_get_main(rk);
    *rc = sluice_kq_open(kq, loop, q, serve, ud, err, errlen);
    if (*rc) {
        kq->queue = NULL;
        rd_kafka_queue_destroy(q);
        rd_kafka_destroy(rk);
        return NULL;
    }
    return rk;
}

static void kq_on_ready(sluice_watch *w, void *ud) {
    (void)w;
    sluice_kq *kq = ud;
    uint64_t count;
    kq->wakeups++;
    /* Reset the eventfd before serving: librdkafka writes again only for an
     * event enqueued on an empty queue, so anything arriving while we serve
     * produces a fresh wake-up and none is lost. */
    while (read(kq->efd, &count, sizeof count) < 0 && errno == EINTR) {}
    if (kq->serve(kq->ud, SLUICE_KQ_BUDGET))
        sluice_kq_kick(kq);   /* budget ran out: come back after others */
}

int sluice_kq_open(sluice_kq *kq, sluice_loop *loop, rd_kafka_queue_t *queue,
                   int (*serve)(void *ud, int budget), void *ud,
                   char *err, size_t errlen) {
    kq->loop = loop;
    kq->queue = queue;
    kq->serve = serve;
    kq->ud = ud;
    kq->watch = NULL;
    kq->wakeups = 0;
    kq->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (kq->efd < 0) {
        sluice_errf(err, errlen, "eventfd: %s", strerror(errno));
        return SLUICE_EIO;
    }
    int rc = sluice_watch_new(loop, kq->efd, kq_on_ready, kq, &kq->watch, err, errlen);
    if (rc != 0) {
        close(kq->efd);
        kq->efd = -1;
        return rc;
    }
    /* An eventfd takes 8-byte writes only: the payload is a counter of 1. */
    static const uint64_t one = 1;
    rd_kafka_queue_io_event_enable(queue, kq->efd, &one, sizeof one);
    /* Events queued before the fd was attached raised no wake-up. */
    sluice_kq_kick(kq);
    return 0;
}

void sluice_kq_kick(sluice_kq *kq) {
    uint64_t one = 1;
    if (kq->efd >= 0)
        while (write(kq->efd, &one, sizeof one) < 0 && errno == EINTR) {}
}

void sluice_kq_close(sluice_kq *kq) {
    if (kq->queue && kq->efd >= 0)
        rd_kafka_queue_io_event_enable(kq->queue, -1, NULL, 0);
    if (kq->watch) sluice_watch_free(kq->watch);
    kq->watch = NULL;
    if (kq->efd >= 0) close(kq->efd);
    kq->efd = -1;
}

int sluice_kafka_conf_apply(rd_kafka_conf_t *conf, const char *const *props,
                            char *err, size_t errlen) {
    char why[512];
    for (size_t i = 0; props && props[i]; i += 2) {
        const char *value = props[i + 1];
        if (!value) {
            sluice_errf(err, errlen, "property \"%s\" has no value", props[i]);
            return SLUICE_EINVAL;
        }
        if (rd_kafka_conf_set(conf, props[i], value, why, sizeof why) != RD_KAFKA_CONF_OK) {
            sluice_errf(err, errlen, "%s", why);
            return SLUICE_EINVAL;
        }
    }
    return 0;
}

const char *sluice_kafka_prop(const char *const *props, const char *name) {
    const char *found = NULL;
    for (size_t i = 0; props && props[i] && props[i + 1]; i += 2)
        if (strcmp(props[i], name) == 0) found = props[i + 1];
    return found;
}

const char *sluice_kafka_err_name(rd_kafka_resp_err_t e) {
    const char *name = rd_kafka_err2name(e);
    return name[0] == '_' ? name + 1 : name;
}

void sluice_kafka_log_line(const rd_kafka_t *rk, int syslog_level,
                           const char *facility, const char *line) {
    const sluice_kq *kq = rd_kafka_opaque(rk);
    if (!kq || !kq->loop) return;
    int level = syslog_level <= 3 ? SLUICE_LOG_ERROR
              : syslog_level == 4 ? SLUICE_LOG_WARN
              : syslog_level <= 6 ? SLUICE_LOG_INFO : SLUICE_LOG_DEBUG;
    sluice_loop_log(kq->loop, level, "kafka %s: %s: %s", rd_kafka_name(rk), facility, line);
}

int sluice_kafka_conf_log(rd_kafka_conf_t *conf, char *err, size_t errlen) {
    char why[512];
    if (rd_kafka_conf_set(conf, "log.queue", "true", why, sizeof why) != RD_KAFKA_CONF_OK) {
        sluice_errf(err, errlen, "%s", why);
        return SLUICE_EINVAL;
    }
    rd_kafka_conf_set_log_cb(conf, sluice_kafka_log_line);
    return 0;
}

void sluice_kafka_log_to_main_queue(rd_kafka_t *rk) {
    rd_kafka_set_log_queue(rk, NULL);
}
