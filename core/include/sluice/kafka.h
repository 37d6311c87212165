/* Kafka producer, consumer and admin client on librdkafka. librdkafka runs its own
 * threads; its events reach the loop through a queue wake-up fd
 * (rd_kafka_queue_io_event_enable) watched by the loop, so every callback
 * below runs on the loop thread and an idle handle costs no CPU. */
#ifndef SLUICE_KAFKA_H
#define SLUICE_KAFKA_H

#include <stddef.h>
#include <stdint.h>
#include "sluice/loop.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sluice_header {
    const char *name;
    const void *value;      /* NULL: null header value */
    size_t value_len;
} sluice_header;

/* ---- producer ---------------------------------------------------------- */
typedef struct sluice_producer sluice_producer;

typedef struct sluice_delivery {
    int error;               /* 0: stored in Kafka */
    const char *error_name;  /* librdkafka's name without leading '_', e.g. "MSG_TIMED_OUT"; NULL if error is 0 */
    const char *error_text;  /* human readable; NULL if error is 0 */
    const char *topic;
    int32_t partition;
    int64_t offset;          /* -1 if unknown */
    int64_t timestamp_ms;
} sluice_delivery;

typedef struct sluice_producer_config {
    /* librdkafka properties as NULL-terminated name, value pairs; passed
     * through unchanged. Defaults the core sets unless given: acks=all,
     * enable.idempotence=true (unless acks is not all), linger.ms=0. */
    const char *const *props;
    /* Delivery report for each message accepted by sluice_producer_send. */
    void (*on_delivery)(void *ud, void *msg_opaque, const sluice_delivery *d);
    /* Backpressure: called with 1 when messages in flight pass high_water,
     * with 0 when they fall back to low_water. 0 for both: 100000/50000. */
    void (*on_pressure)(void *ud, int high);
    size_t high_water, low_water;
    /* Errors not tied to one message (broker down…), for logging. */
    void (*on_error)(void *ud, const char *name, const char *text, int fatal);
    void *ud;
    /* May be NULL. Called after each run of on_delivery calls (one wake-up,
     * flush or close), so that an owner collecting the reports can hand
     * them on in one batch. Not called when the run was empty. */
    void (*on_delivery_end)(void *ud);
} sluice_producer_config;

typedef struct sluice_message {
    const char *topic;
    const void *key;   size_t key_len;     /* key NULL: no key */
    const void *value; size_t value_len;   /* value NULL: tombstone */
    const sluice_header *headers; size_t header_count;
    int32_t partition;                     /* -1: partitioner decides */
    int64_t timestamp_ms;                  /* 0: now */
} sluice_message;

int sluice_producer_new(sluice_loop *loop, const sluice_producer_config *cfg,
                        sluice_producer **out, char *err, size_t errlen);
/* Queue one message. 0: accepted, on_delivery will be called exactly once
 * with msg_opaque. Otherwise an error code (SLUICE_EFULL when librdkafka's
 * queue is full, SLUICE_EKAFKA with err text) and no delivery report. */
int sluice_producer_send(sluice_producer *p, const sluice_message *m,
                         void *msg_opaque, char *err, size_t errlen);
size_t sluice_producer_in_flight(const sluice_producer *p);
/* Wait up to timeout_ms for every in-flight message; delivery reports run
 * on this thread meanwhile. Returns the number still in flight. */
size_t sluice_producer_flush(sluice_producer *p, int timeout_ms);
/* The value the producer runs with for librdkafka property `name` (the
 * core's defaults and the user's settings applied), NUL-terminated in buf.
 * SLUICE_EINVAL for an unknown name, SLUICE_ETOOBIG if size is too small. */
int sluice_producer_conf_get(const sluice_producer *p, const char *name,
                             char *buf, size_t size, char *err, size_t errlen);
/* What a producer did per topic, since it was created. */
typedef struct sluice_error_count {
    const char *name;           /* error code name, e.g. "MSG_TIMED_OUT" */
    int refused;                /* 1: the send was refused; 0: delivery failed */
    uint64_t count;
} sluice_error_count;
typedef struct sluice_topic_counts {
    const char *topic;
    uint64_t sent;              /* accepted by sluice_producer_send */
    uint64_t delivered;         /* acknowledged by Kafka */
    uint64_t failed;            /* reported failed */
    const sluice_error_count *errors;   /* failures and refusals by code */
    size_t nerrors;
} sluice_topic_counts;
/* Calls fn once per topic, in the order topics were first used. */
void sluice_producer_topics(const sluice_producer *p,
                            void (*fn)(void *ud, const sluice_topic_counts *t), void *ud);
/* The last statistics librdkafka emitted (JSON), or NULL: emitted only
 * with statistics.interval.ms set, every that many ms, on the loop thread. */
const char *sluice_producer_statistics(const sluice_producer *p);
/* Messages still in flight are purged and reported failed (PURGE_QUEUE)
 * before this returns. Call sluice_producer_flush first to avoid that.
 * May be called from inside on_delivery: the free (and the purged
 * reports) then completes right after that callback returns. */
void sluice_producer_free(sluice_producer *p);

/* ---- consumer ---------------------------------------------------------- */
typedef struct sluice_consumer sluice_consumer;

typedef struct sluice_record {
    const char *topic;
    int32_t partition;
    int64_t offset;
    const void *key;   size_t key_len;     /* NULL if none */
    const void *value; size_t value_len;   /* NULL if tombstone */
    int64_t timestamp_ms;                  /* -1 if none */
    const sluice_header *headers; size_t header_count;
} sluice_record;

typedef struct sluice_partition {
    const char *topic;
    int32_t partition;
    int64_t offset;
} sluice_partition;

enum sluice_offset_start {
    SLUICE_FROM_COMMITTED = -1000,  /* committed offset, else auto.offset.reset */
    SLUICE_FROM_EARLIEST = -2,      /* same values as RD_KAFKA_OFFSET_* */
    SLUICE_FROM_LATEST = -1,
    /* Assign mode only: the first record stamped at or after start_time_ms
     * (Kafka's offsets for times); where there is none yet, the end as of
     * the lookup, so nothing written after start_time_ms is missed. */
    SLUICE_FROM_TIME = -1001
};

typedef struct sluice_consumer_config {
    const char *const *props;   /* NULL-terminated pairs; group.id required */
    const char *const *topics;  /* NULL-terminated */
    /* Where to start on each assigned partition: SLUICE_FROM_COMMITTED
     * (the committed offset, else auto.offset.reset), SLUICE_FROM_EARLIEST,
     * SLUICE_FROM_LATEST, or an absolute offset >= 0 applied on every
     * assignment. Always set it: 0 means offset 0. */
    int64_t start;
    /* Called for each record. When it returns, the record's offset is
     * stored and committed with the next auto-commit: at-least-once. */
    void (*on_record)(void *ud, sluice_consumer *c, const sluice_record *r);
    /* assigned 1: partitions were assigned (before any record of them);
     * 0: revoked (after the last record of them). May be NULL. */
    void (*on_rebalance)(void *ud, sluice_consumer *c, int assigned,
                         const sluice_partition *parts, size_t n);
    void (*on_error)(void *ud, const char *name, const char *text, int fatal);
    void *ud;
    /* 1: manual offsets. on_record returning does not store the record's
     * offset; the owner calls sluice_consumer_store once the record's
     * effects are durable (e.g. its outputs acknowledged). */
    int manual_store;
    /* May be NULL. When set, called instead of on_record with the records
     * one wake-up drains (at most SLUICE_CONSUMER_BATCH), in order. A
     * rebalance first delivers the records collected before it. When it
     * returns, the offsets of the whole batch are stored (unless
     * manual_store). The array is only valid during the call. */
    void (*on_records)(void *ud, sluice_consumer *c, const sluice_record *records, size_t n);
    /* 1: assign mode, no group: every partition of the topics is assigned
     * to this consumer directly (nothing joined, nothing committed, nothing
     * left on the cluster; group.id is not needed). The partitions are
     * found on a thread of the core's (metadata, offsets for the start),
     * so the loop never blocks; on_rebalance(assigned) reports each one
     * with its start offset (always an offset: a logical start is looked
     * up) before any of its records. Partitions that
     * exist when the consumer starts begin at `start` (or start_offsets);
     * a partition or topic that appears later (checked every refresh_ms)
     * is read from its beginning: it was written after the start. */
    int assign;
    int64_t start_time_ms;                  /* wall clock, for SLUICE_FROM_TIME */
    const sluice_partition *start_offsets;  /* assign mode: per-partition starts, override `start` */
    size_t start_offsets_n;
    int refresh_ms;                         /* assign mode: 0: SLUICE_CONSUMER_REFRESH_MS */
} sluice_consumer_config;
#define SLUICE_CONSUMER_BATCH 1000
#define SLUICE_CONSUMER_REFRESH_MS 5000

int sluice_consumer_new(sluice_loop *loop, const sluice_consumer_config *cfg,
                        sluice_consumer **out, char *err, size_t errlen);
/* Pause or resume fetching on every assigned partition (and on partitions
 * assigned later while paused). */
int sluice_consumer_pause(sluice_consumer *c, int paused);
/* Commit stored offsets now (async unless sync). SLUICE_ESTATE in assign
 * mode (no group to commit to). */
int sluice_consumer_commit(sluice_consumer *c, int sync, char *err, size_t errlen);
/* Manual offsets (manual_store): the record at `offset` of
 * topic/partition and every earlier one are processed; the next commit
 * (auto-commit, sluice_consumer_commit, or close) commits offset + 1.
 * SLUICE_ESTATE if the partition is not assigned to this consumer. */
int sluice_consumer_store(sluice_consumer *c, const char *topic, int32_t partition,
                          int64_t offset, char *err, size_t errlen);

/* Fetch topic/partition again from offset: records handed out after this
 * call start there (those fetched before it are dropped). For undoing an
 * aborted transaction's input. SLUICE_ESTATE if the partition is not
 * assigned. */
int sluice_consumer_seek(sluice_consumer *c, const char *topic, int32_t partition,
                         int64_t offset, char *err, size_t errlen);

/* Where the consumer stands on each assigned partition: position is the
 * next offset it hands to the app, high the partition's end as of the last
 * fetch (librdkafka's cached high watermark; nothing is asked of a broker).
 * Either is -1 while unknown. Calls fn once per assigned partition. */
typedef struct sluice_partition_lag {
    const char *topic;
    int32_t partition;
    int64_t position, high;
} sluice_partition_lag;
int sluice_consumer_lag(sluice_consumer *c,
                        void (*fn)(void *ud, const sluice_partition_lag *l), void *ud);

/* Reads partitions of one topic from their start to their end as of the
 * call (the high watermark), without joining a group, calling on_record
 * for each record; blocks up to timeout_ms. For restoring state from a
 * changelog before processing. A topic or partition that does not exist
 * reads as empty. With isolation.level=read_committed in props the end is
 * still the high watermark: records of transactions not yet decided are
 * waited for (then skipped if aborted), so what is read is everything
 * committed before the call. 0, or an error code (SLUICE_EKAFKA with err
 * text, e.g. on timeout). */
int sluice_kafka_read_partitions(const char *const *props, const char *topic,
                                 const int32_t *partitions, size_t n,
                                 void (*on_record)(void *ud, const sluice_record *r),
                                 void *ud, int timeout_ms, char *err, size_t errlen);

/* ---- transactions (exactly-once) ------------------------------------------
 * A producer whose props set transactional.id is transactional: its sends
 * belong to the open transaction and are refused (SLUICE_EKAFKA, "STATE")
 * while none is open. librdkafka's transactional calls block on the
 * network, so each operation below runs on a thread of the producer's own
 * and reports on the loop thread, through `done`; delivery reports stay
 * on the loop thread (the producer then takes them as events, so that a
 * commit waiting for them never runs a callback on the other thread). */
typedef enum sluice_txn_op {
    SLUICE_TXN_INIT,     /* init_transactions (fences older instances of the id), then begin */
    SLUICE_TXN_COMMIT,   /* send the offsets with the group's metadata, commit, begin the next */
    SLUICE_TXN_ABORT     /* abort (unsent messages are purged: reported failed), begin the next */
} sluice_txn_op;

typedef struct sluice_txn_result {
    sluice_txn_op op;
    int error;               /* 0: done, and a new transaction is open */
    const char *error_name;  /* as sluice_delivery's; NULL if error is 0 */
    const char *error_text;
    int abortable;           /* abort it (SLUICE_TXN_ABORT) and redo its work */
    int fatal;               /* the producer can do nothing more (e.g. fenced) */
    int retriable;           /* neither: the same operation may be started again */
} sluice_txn_result;

/* Starts op. COMMIT: offsets (offset = the next one to read, i.e. the last
 * processed + 1) are committed for the group of `group` (a group consumer)
 * within the transaction; n may be 0 (group then unused). Retriable
 * failures are retried on the thread until timeout_ms. 0, or
 * SLUICE_EINVAL (not transactional, bad arguments), SLUICE_ESTATE (an
 * operation is already running). `done` is called once, on the loop
 * thread, after which another operation may start (also from inside it). */
int sluice_producer_txn(sluice_producer *p, sluice_txn_op op, sluice_consumer *group,
                        const sluice_partition *offsets, size_t n, int timeout_ms,
                        void (*done)(void *ud, const sluice_txn_result *r), void *ud,
                        char *err, size_t errlen);
/* Waits up to timeout_ms for the running operation, serving the
 * producer's delivery reports meanwhile (e.g. from a rebalance callback,
 * where the loop cannot run). 1: none is running (any `done` was called). */
int sluice_producer_txn_wait(sluice_producer *p, int timeout_ms);

/* ---- catch-up reader ----------------------------------------------------
 * Reads one topic's partitions from given offsets onwards, outside any
 * group, for a subscriber that resumes from its position. A thread of its
 * own does the blocking work (watermarks, the epoch check, fetching); the
 * callbacks run on the loop thread, one batch per loop iteration, and the
 * thread fetches at most SLUICE_CATCHUP_AHEAD batches ahead of them. */
typedef struct sluice_catchup sluice_catchup;

typedef struct sluice_catchup_config {
    const char *const *props;     /* librdkafka properties (bootstrap…), pairs */
    const char *topic;
    /* Per partition (topic ignored): offset is the first one to deliver
     * (or SLUICE_FROM_EARLIEST);
     * check_ts >= 0: the record just before it must still carry this
     * timestamp (the position's epoch), else the position is not this
     * topic's any more (re-created). Copied. */
    const sluice_partition *from;
    const int64_t *check_ts;      /* NULL: none checked */
    size_t n;
    /* Once, before any record: recovered 1, or 0 with the reason
     * ("EXPIRED: …" the offsets are gone, "EPOCH: …" another topic stands
     * there now, "KAFKA: …" a request failed). After 0 nothing more is
     * called. */
    void (*on_start)(void *ud, int recovered, const char *why);
    /* Records in offset order per partition; valid during the call. */
    void (*on_records)(void *ud, const sluice_record *r, size_t n);
    /* Every record of partition before offset `end` has been delivered
     * (reported each time the reader reaches the partition's end). */
    void (*on_end)(void *ud, int32_t partition, int64_t end);
    /* Reading failed for good (e.g. the offsets were deleted meanwhile);
     * nothing more is called. */
    void (*on_error)(void *ud, const char *text);
    void *ud;
} sluice_catchup_config;
#define SLUICE_CATCHUP_BATCH 500
#define SLUICE_CATCHUP_AHEAD 4

int sluice_catchup_start(sluice_loop *loop, const sluice_catchup_config *cfg,
                         sluice_catchup **out, char *err, size_t errlen);
/* Stops delivering at once (callbacks included: it may be called from
 * inside one). The thread ends and frees its Kafka handle by itself, so
 * the loop does not wait for it. */
void sluice_catchup_free(sluice_catchup *c);

/* Commit stored offsets, leave the group, free (assign mode: on_rebalance
 * sees the whole assignment revoked, then the consumer is freed). Blocks until the group
 * is left, at most timeout_ms (-1: SLUICE_CONSUMER_CLOSE_MS); past it the
 * consumer is dropped without committing (a warning is logged; the
 * records since the last auto-commit are consumed again), so a close with
 * every broker gone still returns. on_rebalance sees the revoke from
 * inside this call. May be called from inside on_record or on_rebalance:
 * no further records are delivered and the close completes right after
 * that callback returns (the record being handled is committed). */
void sluice_consumer_close(sluice_consumer *c, int timeout_ms);
#define SLUICE_CONSUMER_CLOSE_MS 5000
/* sluice_consumer_close(c, -1). */
void sluice_consumer_free(sluice_consumer *c);


/* ---- admin ---------------------------------------------------------------
 * Topics and their configs (kafka_admin.c). Each request's callback runs
 * exactly once, on the loop thread: with the answer, or with an error for
 * the request as a whole (e.g. TIMED_OUT, TRANSPORT, DESTROY when the
 * client is freed first). */
typedef struct sluice_admin sluice_admin;

typedef struct sluice_admin_config {
    const char *const *props;   /* librdkafka properties, NULL-terminated pairs */
    /* Client errors (broker down…), for logging; NULL: logged. */
    void (*on_error)(void *ud, const char *name, const char *text, int fatal);
    void *ud;
} sluice_admin_config;

typedef struct sluice_new_topic {
    const char *name;
    int partitions;              /* -1: the broker's num.partitions */
    int replication;             /* -1: the broker's default.replication.factor */
    const char *const *configs;  /* NULL-terminated name, value pairs, or NULL */
} sluice_new_topic;

typedef struct sluice_admin_partition {
    int32_t id, leader;          /* leader -1: none */
    const int32_t *replicas; size_t nreplicas;
    const int32_t *isr; size_t nisr;
    int error; const char *error_name;
} sluice_admin_partition;

/* One topic's outcome: error 0, or librdkafka's code with its name
 * (e.g. "TOPIC_ALREADY_EXISTS") and the broker's text. */
typedef struct sluice_admin_topic {
    const char *name;
    int error; const char *error_name, *error_text;
    const sluice_admin_partition *partitions; size_t npartitions;   /* describe */
} sluice_admin_topic;

typedef struct sluice_admin_broker {
    int32_t id; const char *host; int port;
} sluice_admin_broker;

typedef struct sluice_admin_config_entry {
    const char *name, *value;   /* value NULL: unset or sensitive */
    const char *source;         /* e.g. "DYNAMIC_TOPIC_CONFIG", "DEFAULT_CONFIG" */
    int is_default, read_only, sensitive;
} sluice_admin_config_entry;

/* Valid during the callback only. error: the request failed as a whole
 * (nothing else is set); else per-topic outcomes (create, delete,
 * describe: in the order asked), brokers and the cluster's id (describe;
 * librdkafka's mock cluster, the embedded broker, has an id starting
 * "mockCluster"), configs (describe and alter configs). */
typedef struct sluice_admin_result {
    int error; const char *error_name, *error_text;
    const sluice_admin_topic *topics; size_t ntopics;
    const sluice_admin_broker *brokers; size_t nbrokers;
    const char *cluster_id;   /* NULL: unknown */
    const sluice_admin_config_entry *configs; size_t nconfigs;
} sluice_admin_result;
typedef void (*sluice_admin_cb)(void *ud, const sluice_admin_result *r);
#define SLUICE_ADMIN_TIMEOUT_MS 30000

int sluice_admin_new(sluice_loop *loop, const sluice_admin_config *cfg, sluice_admin **out,
                     char *err, size_t errlen);
/* Each returns 0 (cb will be called) or an error code with err text (cb
 * will not). timeout_ms <= 0: librdkafka's defaults (describe:
 * SLUICE_ADMIN_TIMEOUT_MS). Create and delete are answered once the
 * controller has done them (the operation timeout is timeout_ms). */
int sluice_admin_create_topics(sluice_admin *a, const sluice_new_topic *topics, size_t n, int timeout_ms,
                               sluice_admin_cb cb, void *ud, char *err, size_t errlen);
int sluice_admin_delete_topics(sluice_admin *a, const char *const *names, size_t n, int timeout_ms,
                               sluice_admin_cb cb, void *ud, char *err, size_t errlen);
/* Partitions, leaders, replicas and in-sync replicas of the named topics
 * (n 0: every topic), and the brokers, from a metadata request on a
 * thread of the admin's. A missing topic: UNKNOWN_TOPIC_OR_PART. */
int sluice_admin_describe_topics(sluice_admin *a, const char *const *names, size_t n, int timeout_ms,
                                 sluice_admin_cb cb, void *ud, char *err, size_t errlen);
/* Every config entry of a topic. */
int sluice_admin_describe_configs(sluice_admin *a, const char *topic, int timeout_ms,
                                  sluice_admin_cb cb, void *ud, char *err, size_t errlen);
/* Sets the topic's config overrides to exactly these pairs (Kafka's
 * AlterConfigs, which librdkafka 2.0.2 has instead of the incremental
 * one): an override not given returns to its default. */
int sluice_admin_alter_configs(sluice_admin *a, const char *topic, const char *const *pairs,
                               int timeout_ms, sluice_admin_cb cb, void *ud, char *err, size_t errlen);
/* Requests not yet reported. */
size_t sluice_admin_pending(const sluice_admin *a);
/* Pending requests are reported failed (DESTROY) before it returns; waits
 * for a metadata request in flight (its timeout at most). May be called
 * from inside a callback: it then completes right after it. */
void sluice_admin_free(sluice_admin *a);

#ifdef __cplusplus
}
#endif
#endif
