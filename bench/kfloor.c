/* sluice-kfloor: the floor of the push benchmark — a bare librdkafka
 * consumer of the topic, timed the way sluice-loadgen times a WebSocket
 * client: each value's "t" (CLOCK_MONOTONIC ns at produce time, from
 * sluice-kprod --stamp) against the time the record is in hand.
 *
 *   sluice-kfloor --kafka BOOTSTRAP --topic T --expect N [--wake poll|eventfd]
 *                 [--ready-file F] [--timeout S] [-X KEY=VALUE]...
 *   sluice-kfloor --kafka BOOTSTRAP --topic T --create PARTITIONS
 *   sluice-kfloor --kafka BOOTSTRAP --wait-group GROUP [--timeout S]
 *     (returns once consumer group GROUP is Stable with a member: a peer
 *     such as Centrifugo has joined and holds the partitions)
 *
 * Every partition is assigned directly (no group) at its high watermark,
 * read before the assignment: every record produced after F appears is
 * seen. --wake poll: rd_kafka_consumer_poll blocks for each record (the
 * plain librdkafka way). --wake eventfd: the consumer queue's wake-up fd
 * (rd_kafka_queue_io_event_enable), an epoll wait on it, then the queue
 * drained without blocking — sluice's own wiring, with no loop or Lua.
 * One JSON object on stdout, in sluice-loadgen's recv-mode shape. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <librdkafka/rdkafka.h>

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint32_t *lat;
static size_t n_lat, cap_lat;
static uint64_t received, t_first, t_last;

static void on_message(const rd_kafka_message_t *m) {
    uint64_t t = now_ns();
    if (m->err) {
        if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            fprintf(stderr, "kfloor: %s\n", rd_kafka_message_errstr(m));
        return;
    }
    const char *p = m->payload, *end = p ? p + m->len : NULL;
    const char *q = p ? memmem(p, m->len, "\"t\":", 4) : NULL;
    if (!q) return;   /* not a stamped record (sluice-kprod --warmup) */
    received++;
    if (!t_first) t_first = t;
    t_last = t;
    uint64_t sent = 0;
    for (q += 4; q < end && *q >= '0' && *q <= '9'; q++) sent = sent * 10 + (uint64_t)(*q - '0');
    if (!sent || sent > t) return;
    if (n_lat == cap_lat) {
        cap_lat = cap_lat ? cap_lat * 2 : 1 << 16;
        lat = realloc(lat, cap_lat * sizeof *lat);
    }
    lat[n_lat++] = (uint32_t)((t - sent) / 1000);
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static int assign_at_end(rd_kafka_t *rk, const char *topic) {
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, t, &md, 10000);
    rd_kafka_topic_destroy(t);
    if (e || md->topic_cnt != 1 || md->topics[0].err || !md->topics[0].partition_cnt) {
        fprintf(stderr, "kfloor: metadata of %s: %s\n", topic,
                rd_kafka_err2str(e ? e : md->topic_cnt ? md->topics[0].err : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC));
        if (md) rd_kafka_metadata_destroy(md);
        return -1;
    }
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
    for (int i = 0; i < md->topics[0].partition_cnt; i++) {
        int32_t p = md->topics[0].partitions[i].id;
        int64_t lo, hi;
        /* A topic just created may have no leader yet for a moment. */
        for (int tries = 0; tries < 100; tries++) {
            e = rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 10000);
            if (!e || (e != RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION &&
                       e != RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE &&
                       e != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)) break;
            usleep(100000);
        }
        if (e) { fprintf(stderr, "kfloor: watermarks: %s\n", rd_kafka_err2str(e)); return -1; }
        rd_kafka_topic_partition_list_add(list, topic, p)->offset = hi;
    }
    rd_kafka_metadata_destroy(md);
    e = rd_kafka_assign(rk, list);
    rd_kafka_topic_partition_list_destroy(list);
    if (e) { fprintf(stderr, "kfloor: assign: %s\n", rd_kafka_err2str(e)); return -1; }
    return 0;
}

/* Creates the topic (replication factor 1); an existing one is fine. */
static int create_topic(rd_kafka_t *rk, const char *topic, int partitions) {
    char err[256];
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(topic, partitions, 1, err, sizeof err);
    if (!nt) { fprintf(stderr, "kfloor: %s\n", err); return 1; }
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
    int rc = 1;
    const rd_kafka_CreateTopics_result_t *res = ev ? rd_kafka_event_CreateTopics_result(ev) : NULL;
    if (res) {
        size_t n;
        const rd_kafka_topic_result_t **tr = rd_kafka_CreateTopics_result_topics(res, &n);
        rd_kafka_resp_err_t e = n ? rd_kafka_topic_result_error(tr[0]) : rd_kafka_event_error(ev);
        rc = e && e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS;
        if (rc) fprintf(stderr, "kfloor: create %s: %s\n", topic, rd_kafka_err2str(e));
    } else {
        fprintf(stderr, "kfloor: create %s: no answer\n", topic);
    }
    if (ev) rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_NewTopic_destroy(nt);
    return rc;
}

static int wait_group(rd_kafka_t *rk, const char *group, double timeout) {
    uint64_t deadline = now_ns() + (uint64_t)(timeout * 1e9);
    while (now_ns() < deadline) {
        const struct rd_kafka_group_list *gl = NULL;
        int ok = 0;
        if (!rd_kafka_list_groups(rk, group, &gl, 5000) && gl->group_cnt == 1)
            ok = !strcmp(gl->groups[0].state, "Stable") && gl->groups[0].member_cnt > 0;
        if (gl) rd_kafka_group_list_destroy(gl);
        if (ok) return 0;
        usleep(100000);
    }
    fprintf(stderr, "kfloor: group %s not stable within %.0f s\n", group, timeout);
    return 1;
}

int main(int argc, char **argv) {
    const char *kafka = NULL, *topic = NULL, *ready = NULL, *wake = "poll", *group = NULL;
    unsigned long long expect = 0;
    int create = 0;
    double timeout = 60;
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) { fprintf(stderr, "kfloor: %s needs a value\n", argv[i]); return 2; }
        if (!strcmp(argv[i], "--kafka")) kafka = v;
        else if (!strcmp(argv[i], "--topic")) topic = v;
        else if (!strcmp(argv[i], "--expect")) expect = strtoull(v, NULL, 10);
        else if (!strcmp(argv[i], "--wake")) wake = v;
        else if (!strcmp(argv[i], "--create")) create = atoi(v);
        else if (!strcmp(argv[i], "--wait-group")) group = v;
        else if (!strcmp(argv[i], "--ready-file")) ready = v;
        else if (!strcmp(argv[i], "--timeout")) timeout = atof(v);
        else if (!strcmp(argv[i], "-X")) {
            char kv[512], *eq;
            snprintf(kv, sizeof kv, "%s", v);
            if (!(eq = strchr(kv, '='))) { fprintf(stderr, "kfloor: -X KEY=VALUE\n"); return 2; }
            *eq = 0;
            if (rd_kafka_conf_set(conf, kv, eq + 1, err, sizeof err)) { fprintf(stderr, "kfloor: %s\n", err); return 2; }
        } else { fprintf(stderr, "kfloor: unknown option %s\n", argv[i]); return 2; }
        i++;
    }
    int use_fd = !strcmp(wake, "eventfd");
    if (kafka && ((topic && create > 0) || group)) {
        rd_kafka_conf_set(conf, "bootstrap.servers", kafka, err, sizeof err);
        rd_kafka_t *admin = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
        if (!admin) { fprintf(stderr, "kfloor: %s\n", err); return 1; }
        int rc = group ? wait_group(admin, group, timeout) : create_topic(admin, topic, create);
        rd_kafka_destroy(admin);
        return rc;
    }
    if (!kafka || !topic || !expect || (!use_fd && strcmp(wake, "poll"))) {
        fprintf(stderr, "usage: sluice-kfloor --kafka BOOTSTRAP --topic T --expect N [--wake poll|eventfd] "
                        "[--ready-file F] [--timeout S] [-X KEY=VALUE]...\n");
        return 2;
    }
    rd_kafka_conf_set(conf, "bootstrap.servers", kafka, err, sizeof err);
    /* Never joined: librdkafka wants a group.id to poll a consumer. */
    rd_kafka_conf_set(conf, "group.id", "sluice-kfloor", err, sizeof err);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    if (!rk) { fprintf(stderr, "kfloor: %s\n", err); return 1; }
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_queue_t *q = rd_kafka_queue_get_consumer(rk);
    int efd = -1, ep = -1;
    if (use_fd) {
        static const uint64_t one = 1;
        efd = eventfd(0, EFD_NONBLOCK);
        ep = epoll_create1(0);
        struct epoll_event ev = { .events = EPOLLIN, .data.fd = efd };
        epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev);
        rd_kafka_queue_io_event_enable(q, efd, &one, sizeof one);
    }
    if (assign_at_end(rk, topic)) return 1;
    if (ready) { FILE *f = fopen(ready, "w"); if (f) fclose(f); }

    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    uint64_t deadline = now_ns() + (uint64_t)(timeout * 1e9);
    while (received < expect && now_ns() < deadline) {
        if (!use_fd) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
            if (m) { on_message(m); rd_kafka_message_destroy(m); }
            continue;
        }
        struct epoll_event ev;
        if (epoll_wait(ep, &ev, 1, 100) < 1) continue;
        uint64_t count;
        while (read(efd, &count, sizeof count) < 0 && errno == EINTR) {}
        rd_kafka_message_t *m;
        while ((m = rd_kafka_consumer_poll(rk, 0))) { on_message(m); rd_kafka_message_destroy(m); }
    }
    getrusage(RUSAGE_SELF, &ru1);
    double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec + ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec)
               + (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec + ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
    double secs = t_last > t_first ? (double)(t_last - t_first) / 1e9 : 0;
    printf("{\"tool\":\"sluice-kfloor\",\"wake\":\"%s\",\"conns\":1,\"expect\":%llu,\"received\":%llu,"
           "\"seconds\":%.3f,\"deliveries_per_s\":%.0f,\"cpu_s\":%.3f", wake, expect,
           (unsigned long long)received, secs, secs > 0 ? (double)received / secs : 0, cpu);
    if (n_lat) {
        qsort(lat, n_lat, sizeof *lat, cmp_u32);
        double sum = 0;
        for (size_t i = 0; i < n_lat; i++) sum += lat[i];
#define PCT(x) (lat[(size_t)((double)(n_lat - 1) * (x))] / 1000.0)
        printf(",\"fanout_latency\":{\"n\":%zu,\"mean_ms\":%.3f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,"
               "\"p999_ms\":%.3f,\"max_ms\":%.3f}", n_lat, sum / (double)n_lat / 1000.0,
               PCT(0.5), PCT(0.9), PCT(0.99), PCT(0.999), lat[n_lat - 1] / 1000.0);
#undef PCT
    } else {
        printf(",\"fanout_latency\":null");
    }
    printf("}\n");
    if (use_fd) rd_kafka_queue_io_event_enable(q, -1, NULL, 0);
    rd_kafka_queue_destroy(q);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return received >= expect ? 0 : 1;
}
