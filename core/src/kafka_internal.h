/* Shared plumbing of the Kafka handles (producer, consumer, embedded
 * broker): a librdkafka queue whose wake-up fd is watched by the loop, and
 * property helpers. Not a public header. */
#ifndef SLUICE_KAFKA_INTERNAL_H
#define SLUICE_KAFKA_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <librdkafka/rdkafka.h>
#include "sluice/loop.h"
#include "sluice/kafka.h"
#include "format_internal.h"

/* Events drained per wake-up before the loop gets to serve others. */
#define SLUICE_KQ_BUDGET 1000

/* A librdkafka queue wired to the loop: librdkafka writes to an eventfd
 * when the queue turns non-empty; the loop calls `serve` on its thread. */
typedef struct sluice_kq {
    sluice_loop *loop;
    rd_kafka_queue_t *queue;   /* borrowed: the owner destroys it */
    int efd;
    sluice_watch *watch;
    /* Serve at most `budget` events; return 1 if events may remain. */
    int (*serve)(void *ud, int budget);
    void *ud;
    unsigned long wakeups;     /* watch callbacks so far (tests, metrics) */
} sluice_kq;

int sluice_kq_open(sluice_kq *kq, sluice_loop *loop, rd_kafka_queue_t *queue,
                   int (*serve)(void *ud, int budget), void *ud,
                   char *err, size_t errlen);
/* rd_kafka_new for a handle the loop serves through kq: librdkafka's
 * log lines and events come on its main queue (a consumer's on its
 * consumer queue, made the main one), which kq watches; kq->queue is
 * that queue, for the owner to destroy. ud, which serve gets, is also
 * the handle's opaque (it starts with kq). conf is consumed either way:
 * with *rc already set (its configuration failed) it is only destroyed.
 * NULL: *rc is the code and err says why. */
rd_kafka_t *sluice_kafka_open(rd_kafka_type_t type, rd_kafka_conf_t *conf,
                              sluice_kq *kq, sluice_loop *loop,
                              int (*serve)(void *ud, int budget), void *ud,
                              int *rc, char *err, size_t errlen);
/* pthread_create with every signal blocked in the new thread: process
 * signals (SIGTERM) are the loop thread's signalfd's, and on an unblocked
 * thread their default action would kill the process. 0 or an errno. */
int sluice_thread_start(pthread_t *thread, void *(*fn)(void *), void *arg);
/* Make the loop call serve again soon (e.g. when a budget ran out). */
void sluice_kq_kick(sluice_kq *kq);
/* Stops the wake-ups and the watch; does not destroy the queue. */
void sluice_kq_close(sluice_kq *kq);

/* Applies NULL-terminated name/value pairs with rd_kafka_conf_set.
 * Returns 0, or SLUICE_EINVAL with librdkafka's message in err. */
int sluice_kafka_conf_apply(rd_kafka_conf_t *conf, const char *const *props,
                            char *err, size_t errlen);
/* The value the pairs give to name (the last one wins), or NULL. */
const char *sluice_kafka_prop(const char *const *props, const char *name);
/* "NAME: librdkafka's text" of e into err; returns SLUICE_EKAFKA. */
int sluice_kafka_fail(rd_kafka_resp_err_t e, char *err, size_t errlen);
/* librdkafka's error name without its leading '_' (e.g. "MSG_TIMED_OUT"). */
const char *sluice_kafka_err_name(rd_kafka_resp_err_t e);
/* Routes librdkafka's log lines to the loop's log hook. Sets log.queue so
 * that lines are served on the loop thread through the main queue; call
 * sluice_kafka_log_to_main_queue after rd_kafka_new. The handle's opaque
 * (rd_kafka_conf_set_opaque) must point to its sluice_kq, so every handle
 * struct starts with one. */
int sluice_kafka_conf_log(rd_kafka_conf_t *conf, char *err, size_t errlen);
void sluice_kafka_log_to_main_queue(rd_kafka_t *rk);
/* The log callback sluice_kafka_conf_log sets (for log lines taken as
 * events, e.g. by a transactional producer). */
void sluice_kafka_log_line(const rd_kafka_t *rk, int syslog_level,
                           const char *facility, const char *line);

/* Assign mode of the consumer (kafka_assign.c): a thread finds the topics'
 * partitions and their start offsets (blocking requests, off the loop
 * thread) and hands each partition to on_found once, on the loop thread. */
typedef struct sluice_assigner sluice_assigner;
typedef struct sluice_assigner_config {
    rd_kafka_t *rk;
    const char *const *topics;             /* copied */
    int64_t start;                         /* as sluice_consumer_config.start */
    int64_t start_time_ms;                 /* SLUICE_FROM_TIME */
    const sluice_partition *offsets;       /* copied */
    size_t offsets_n;
    int refresh_ms;                        /* 0: SLUICE_CONSUMER_REFRESH_MS */
    /* parts (maybe empty): new partitions, offsets where to start; error:
     * a request failed (it is retried) or NULL. Valid during the call only;
     * the owner may stop the assigner from inside it. */
    void (*on_found)(void *ud, rd_kafka_topic_partition_list_t *parts, const char *error);
    void *ud;
} sluice_assigner_config;
int sluice_assigner_start(sluice_loop *loop, const sluice_assigner_config *cfg,
                          sluice_assigner **out, char *err, size_t errlen);
/* Ends the thread (waits for its request in flight, ASSIGNER_REQUEST_MS at most). */
void sluice_assigner_stop(sluice_assigner *a);

/* Transactions (kafka_txn.c): the thread running one producer's
 * transactional calls. The producer serves its events through
 * sluice_producer_serve_events while a caller waits on the loop thread. */
typedef struct sluice_txn sluice_txn;
sluice_txn *sluice_txn_new(struct sluice_producer *p, rd_kafka_t *rk, sluice_loop *loop,
                           char *err, size_t errlen);
int sluice_txn_start(sluice_txn *t, sluice_txn_op op, rd_kafka_t *group_rk,
                     const sluice_partition *offsets, size_t n, int timeout_ms,
                     void (*done)(void *ud, const sluice_txn_result *r), void *ud,
                     char *err, size_t errlen);
int sluice_txn_busy(const sluice_txn *t);
/* Reports a finished operation to its `done` (loop thread). */
void sluice_txn_deliver(sluice_txn *t);
/* Ends the thread once its call returns (bounded by the call's timeout). */
void sluice_txn_free(sluice_txn *t);
void sluice_producer_serve_events(struct sluice_producer *p, int timeout_ms);
rd_kafka_t *sluice_consumer_rk(struct sluice_consumer *c);

/* Watch callbacks so far for a producer/consumer: lets tests check that an
 * idle handle causes no wake-ups. */
struct sluice_producer;
struct sluice_consumer;
unsigned long sluice_producer_wakeups(const struct sluice_producer *p);
unsigned long sluice_consumer_wakeups(const struct sluice_consumer *c);

#endif
