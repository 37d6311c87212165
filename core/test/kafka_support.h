/* What the Kafka core tests share: a log that shows warnings and errors,
 * the loop pumped until a counter is reached, a loop with an embedded
 * broker, and a loopback port nobody listens on. */
#ifndef SLUICE_TEST_KAFKA_SUPPORT_H
#define SLUICE_TEST_KAFKA_SUPPORT_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sluice/broker.h"
#include "sluice/loop.h"

static inline void test_log(void *ud, int level, const char *msg) {
    (void)ud;
    if (level <= SLUICE_LOG_WARN) fprintf(stderr, "log %d: %s\n", level, msg);
}

/* Services loop until *counter reaches want or timeout_ms passes. */
static inline void pump_loop_until(sluice_loop *loop, const int *counter, int want, int timeout_ms) {
    uint64_t deadline = sluice_now_ms() + (uint64_t)timeout_ms;
    while (*counter < want && sluice_now_ms() < deadline)
        sluice_loop_run_once(loop, 50);
}

/* A loop logging through test_log and an embedded broker on it; 0, or 1
 * with the reason on stderr. */
static inline int start_loop_and_broker(sluice_loop **loop, sluice_broker **broker) {
    char err[256];
    sluice_loop_config lcfg = { .log = test_log, .log_level = SLUICE_LOG_WARN };
    if (sluice_loop_new(&lcfg, loop, err, sizeof err) != 0) {
        fprintf(stderr, "loop: %s\n", err);
        return 1;
    }
    sluice_broker_config bcfg = { 0, 0, 0 };
    if (sluice_broker_new(*loop, &bcfg, broker, err, sizeof err) != 0) {
        fprintf(stderr, "broker: %s\n", err);
        return 1;
    }
    return 0;
}

/* A loopback port nobody listens on right now. */
static inline int unused_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = { .sin_family = AF_INET };
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    bind(fd, (struct sockaddr *)&addr, sizeof addr);
    getsockname(fd, (struct sockaddr *)&addr, &len);
    close(fd);
    return ntohs(addr.sin_port);
}

#endif
