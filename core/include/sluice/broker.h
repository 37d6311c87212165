/* The embedded Kafka broker: librdkafka's in-process mock cluster, reached
 * over loopback TCP like any broker. In-memory: its data is gone when the
 * process exits. The mock binds ephemeral ports, so a stable bootstrap port
 * is offered by a TCP forwarder to the first mock broker; clients then
 * follow the advertised broker addresses. */
#ifndef SLUICE_BROKER_H
#define SLUICE_BROKER_H

#include <stddef.h>
#include "sluice/loop.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sluice_broker sluice_broker;

typedef struct sluice_broker_config {
    int brokers;        /* 0: 1 */
    int port;           /* stable bootstrap port on 127.0.0.1; 0: ephemeral; -1: none */
    /* Partitions of topics created with sluice_broker_create_topic(…, 0);
     * 0: 4. Topics created on first use always get 4: librdkafka 2.0.2's
     * mock fixes that count (a warning is logged when this differs). */
    int partitions;
} sluice_broker_config;

int sluice_broker_new(sluice_loop *loop, const sluice_broker_config *cfg,
                      sluice_broker **out, char *err, size_t errlen);
/* "127.0.0.1:PORT" of the stable port, or the mock's own list if port -1. */
const char *sluice_broker_bootstrap(const sluice_broker *b);
/* The mock's own bootstrap list (ephemeral ports). */
const char *sluice_broker_direct_bootstrap(const sluice_broker *b);
/* Create a topic now (otherwise topics are created on first use, with 4
 * partitions). partitions 0: the configured count. SLUICE_EKAFKA with
 * "TOPIC_ALREADY_EXISTS: …" if it exists. */
int sluice_broker_create_topic(sluice_broker *b, const char *topic, int partitions,
                               char *err, size_t errlen);
/* The rd_kafka_mock_cluster_t *, for fault injection in tests. */
void *sluice_broker_mock_cluster(sluice_broker *b);

/* ---- fault injection (librdkafka's mock cluster) -------------------------
 * For tests and the soak tool. Broker ids run from 1 to the configured
 * count. Each returns 0, or SLUICE_EINVAL / SLUICE_EKAFKA with err text. */
int sluice_broker_count(const sluice_broker *b);
/* Down: the broker drops its connections and refuses new ones until up
 * again. Partition leadership does not move by itself (as in the mock):
 * clients wait and retry, or follow sluice_broker_set_leader. */
int sluice_broker_set_down(sluice_broker *b, int broker_id, char *err, size_t errlen);
int sluice_broker_set_up(sluice_broker *b, int broker_id, char *err, size_t errlen);
/* Added round-trip time for every response of that broker; 0 removes it. */
int sluice_broker_set_rtt(sluice_broker *b, int broker_id, int rtt_ms,
                          char *err, size_t errlen);
/* The next n requests of Kafka API api_key (0 Produce, 1 Fetch, 3
 * Metadata, …), on any broker, fail with errors[0..n-1] (Kafka error
 * codes, e.g. 6 NOT_LEADER_FOR_PARTITION); n 0 clears the pending ones. */
int sluice_broker_push_errors(sluice_broker *b, int api_key, size_t n, const int *errors,
                              char *err, size_t errlen);
/* Move the leader of topic/partition to broker_id (-1: no leader). */
int sluice_broker_set_leader(sluice_broker *b, const char *topic, int partition,
                             int broker_id, char *err, size_t errlen);
/* Kafka error code by name ("NOT_LEADER_FOR_PARTITION"; librdkafka's
 * names, local ones with their leading "_"); 1 if found. */
int sluice_broker_error_code(const char *name, int *code);
void sluice_broker_free(sluice_broker *b);

#ifdef __cplusplus
}
#endif
#endif
