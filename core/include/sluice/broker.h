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
void sluice_broker_free(sluice_broker *b);

#ifdef __cplusplus
}
#endif
#endif
