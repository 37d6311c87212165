/* sluice-kprod: librdkafka alone producing movie rows to a broker at full
 * speed (or a fixed rate), with the same producer settings sluice uses
 * (acks=all, idempotence, linger.ms=0) — the Kafka-side limit. With
 * --stamp each value carries "t": CLOCK_MONOTONIC ns at produce time,
 * which the load generator's recv mode turns into a fan-out latency.
 *
 * --centrifugo CHANNEL wraps the stamped value in Centrifugo's API command
 * form, {"method":"publish","payload":{"channel":CHANNEL,"data":{…}}}, so
 * that Centrifugo's Kafka consumer and sluice read the same records.
 * --warmup N first produces N values without "t" and waits for their
 * acknowledgement: the producer id and connections are in place before
 * the first stamped record (they are not counted as deliveries).
 *
 *   sluice-kprod --kafka BOOTSTRAP --topic T --rows N [--rate R] [--stamp]
 *                [--centrifugo CHANNEL] [--warmup N]
 * Prints one JSON line once every row is acknowledged. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <librdkafka/rdkafka.h>

static unsigned long long delivered, failed;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static unsigned long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}

static void dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk; (void)opaque;
    if (m->err) { if (!failed++) fprintf(stderr, "kprod: %s\n", rd_kafka_err2str(m->err)); }
    else delivered++;
}

int main(int argc, char **argv) {
    const char *kafka = NULL, *topic = "bench";
    unsigned long long rows = 100000;
    double rate = 0;
    int stamp = 0;
    const char *channel = NULL;
    unsigned long long warmup = 0;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(argv[i], "--kafka")) kafka = argv[++i];
        else if (!strcmp(argv[i], "--topic")) topic = argv[++i];
        else if (!strcmp(argv[i], "--rows")) { rows = strtoull(v, NULL, 10); i++; }
        else if (!strcmp(argv[i], "--rate")) { rate = atof(v); i++; }
        else if (!strcmp(argv[i], "--stamp")) stamp = 1;
        else if (!strcmp(argv[i], "--centrifugo")) { channel = argv[++i]; stamp = 1; }
        else if (!strcmp(argv[i], "--warmup")) { warmup = strtoull(v, NULL, 10); i++; }
        else { fprintf(stderr, "kprod: unknown option %s\n", argv[i]); return 2; }
    }
    if (!kafka) { fprintf(stderr, "usage: sluice-kprod --kafka BOOTSTRAP --topic T --rows N [--rate R] [--stamp]\n"); return 2; }
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *props[] = { "bootstrap.servers", kafka, "acks", "all", "enable.idempotence", "true",
                            "linger.ms", "0", "client.id", "sluice-kprod", NULL };
    for (int i = 0; props[i]; i += 2)
        if (rd_kafka_conf_set(conf, props[i], props[i + 1], err, sizeof err)) { fprintf(stderr, "%s\n", err); return 2; }
    rd_kafka_conf_set_dr_msg_cb(conf, dr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk) { fprintf(stderr, "kprod: %s\n", err); return 1; }

    char value[384], key[16];
    for (unsigned long long i = 1; i <= warmup; i++) {
        static const char w[] = "{\"warmup\":true}";
        rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                          RD_KAFKA_V_VALUE((void *)w, sizeof w - 1), RD_KAFKA_V_END);
    }
    double w0 = now_s();
    while (delivered + failed < warmup && now_s() - w0 < 60) rd_kafka_poll(rk, 10);
    if (failed) return 1;
    delivered = 0;
    double t0 = now_s();
    for (unsigned long long i = 1; i <= rows; i++) {
        if (rate > 0) {
            double due = t0 + (double)(i - 1) / rate;
            while (now_s() < due) { rd_kafka_poll(rk, 0); usleep(200); }
        }
        int n = channel
            ? snprintf(value, sizeof value, "{\"method\":\"publish\",\"payload\":{\"channel\":\"%s\",\"data\":"
                       "{\"t\":%llu,\"seq\":%llu,\"movieId\":\"tt0133093\",\"views\":%llu}}}", channel, now_ns(), i, i)
            : stamp
            ? snprintf(value, sizeof value, "{\"t\":%llu,\"seq\":%llu,\"movieId\":\"tt0133093\",\"views\":%llu}",
                       now_ns(), i, i)
            : snprintf(value, sizeof value,
                       "{\"id\":\"%010llu\",\"actorName\":\"Keanu Reeves\",\"actorId\":\"nm0000%03llu\","
                       "\"movieId\":\"tt0133093\",\"movieName\":\"The Matrix\",\"movieMinutes\":136}", i, i % 1000);
        int kn = snprintf(key, sizeof key, "nm0000%03llu", i % 1000);
        for (;;) {
            rd_kafka_resp_err_t e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(key, (size_t)kn),
                RD_KAFKA_V_VALUE(value, (size_t)n), RD_KAFKA_V_END);
            if (!e) break;
            if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) { fprintf(stderr, "kprod: %s\n", rd_kafka_err2str(e)); return 1; }
            rd_kafka_poll(rk, 1);
        }
        if ((i & 1023) == 0) rd_kafka_poll(rk, 0);
    }
    while (delivered + failed < rows && now_s() - t0 < 120) rd_kafka_poll(rk, 50);
    double secs = now_s() - t0;
    printf("{\"tool\":\"sluice-kprod\",\"rows\":%llu,\"delivered\":%llu,\"failed\":%llu,\"seconds\":%.3f,\"rows_per_s\":%.0f}\n",
           rows, delivered, failed, secs, secs > 0 ? (double)delivered / secs : 0);
    rd_kafka_destroy(rk);
    return failed ? 1 : 0;
}
