/* Reading partitions to their end, outside any group (sluice.stream's
 * state restore): a short-lived consumer assigned the partitions, read up
 * to the high watermarks seen at the start. */
#include <stdlib.h>
#include <string.h>

#include "sluice/kafka.h"
#include "kafka_internal.h"

static void read_log_drop(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    (void)rk; (void)level; (void)fac; (void)buf;
}

/* A consumer that reads without a group; `extra` pairs are applied last. */
static rd_kafka_t *read_consumer(const char *const *props, const char *const *extra,
                                 int *rcp, char *err, size_t errlen) {
    char why[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* An assign()-only consumer never joins the group named here; it needs
     * one to poll. Nothing is committed. */
    static const char *const defaults[] = {
        "group.id", "sluice.restore", "enable.auto.commit", "false",
        "enable.partition.eof", "true", NULL
    };
    int rc = sluice_kafka_conf_apply(conf, defaults, err, errlen);
    if (!rc) rc = sluice_kafka_conf_apply(conf, props, err, errlen);
    /* The caller's group.id/eof settings must not change how we read. */
    if (!rc) rc = sluice_kafka_conf_apply(conf, defaults, err, errlen);
    if (!rc) rc = sluice_kafka_conf_apply(conf, extra, err, errlen);
    *rcp = rc ? rc : SLUICE_EKAFKA;
    if (rc) { rd_kafka_conf_destroy(conf); return NULL; }
    /* No loop to log through: failures come back as the return code. */
    rd_kafka_conf_set_log_cb(conf, read_log_drop);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof why);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        sluice_errf(err, errlen, "%s", why);
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk);
    return rk;
}

int sluice_kafka_read_partitions(const char *const *props, const char *topic,
                                 const int32_t *partitions, size_t n,
                                 void (*on_record)(void *ud, const sluice_record *r),
                                 void *ud, int timeout_ms, char *err, size_t errlen) {
    if (!topic || (n && !partitions)) return SLUICE_EINVAL;
    if (n == 0) return 0;
    int rc;
    rd_kafka_t *rk = read_consumer(props, NULL, &rc, err, errlen);
    if (!rk) return rc;
    /* read_committed: the end of a partition is its high watermark, asked
     * read_uncommitted (read_committed it is the last stable offset, before
     * the first undecided transaction: one that committed a moment ago
     * would be missed). Reading to it waits for those transactions. */
    static const char *const uncommitted[] = { "isolation.level", "read_uncommitted", NULL };
    const char *isolation = sluice_kafka_prop(props, "isolation.level");
    rd_kafka_t *rk_hw = rk;
    if (isolation && strcmp(isolation, "read_committed") == 0) {
        rk_hw = read_consumer(props, uncommitted, &rc, err, errlen);
        if (!rk_hw) {
            rd_kafka_destroy(rk);
            return rc;
        }
    }
    uint64_t deadline = sluice_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new((int)n);
    int64_t *high = calloc(n, sizeof *high);
    size_t pending = 0;
    rc = high ? 0 : SLUICE_ENOMEM;
    for (size_t i = 0; !rc && i < n; i++) {
        int64_t lo = 0, hi = 0;
        int left = (int)(deadline > sluice_now_ms() ? deadline - sluice_now_ms() : 1);
        rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(rk_hw, topic, partitions[i], &lo, &hi, left);
        if (e == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART || e == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION ||
            e == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC)
            continue;   /* never written: empty */
        if (e) {
            sluice_errf(err, errlen, "%s [%d]: watermarks: %s", topic, (int)partitions[i],
                              rd_kafka_err2str(e));
            rc = SLUICE_EKAFKA;
            break;
        }
        if (hi <= lo) continue;
        rd_kafka_topic_partition_list_add(list, topic, partitions[i])->offset = lo;
        high[list->cnt - 1] = hi;
        pending++;
    }
    if (rk_hw != rk) rd_kafka_destroy(rk_hw);
    if (!rc && pending) {
        rd_kafka_resp_err_t e = rd_kafka_assign(rk, list);
        if (e) {
            sluice_errf(err, errlen, "assign: %s", rd_kafka_err2str(e));
            rc = SLUICE_EKAFKA;
        }
    }
    while (!rc && pending) {
        uint64_t now = sluice_now_ms();
        if (now >= deadline) {
            sluice_errf(err, errlen, "%s: timed out reading to the end (%zu partitions left)",
                              topic, pending);
            rc = SLUICE_EKAFKA;
            break;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, (int)(deadline - now < 100 ? deadline - now : 100));
        if (!m) continue;
        int idx = -1;
        for (int i = 0; i < list->cnt; i++)
            if (list->elems[i].partition == m->partition) idx = i;
        int64_t reached = -1;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            reached = m->offset;   /* the next offset: the end */
        } else if (m->err) {
            sluice_errf(err, errlen, "%s: %s", topic, rd_kafka_message_errstr(m));
            rc = SLUICE_EKAFKA;
        } else if (idx >= 0 && m->offset < high[idx]) {
            rd_kafka_timestamp_type_t tstype;
            sluice_record r = {
                .topic = topic, .partition = m->partition, .offset = m->offset,
                .key = m->key, .key_len = m->key ? m->key_len : 0,
                .value = m->payload, .value_len = m->payload ? m->len : 0,
                .timestamp_ms = rd_kafka_message_timestamp(m, &tstype),
            };
            if (on_record) on_record(ud, &r);
            reached = m->offset + 1;
        }
        /* Done with a partition at the high watermark seen at the start:
         * later writes are not part of the state being restored. */
        if (idx >= 0 && reached >= high[idx] && list->elems[idx].err == 0) {
            list->elems[idx].err = RD_KAFKA_RESP_ERR__PARTITION_EOF;
            pending--;
        }
        rd_kafka_message_destroy(m);
    }
    free(high);
    rd_kafka_topic_partition_list_destroy(list);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return rc;
}
