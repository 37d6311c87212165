/* Fault injection on the embedded broker, seen by a real sluice producer:
 * a broker that is down stores nothing until it is up again; injected
 * produce errors reach the delivery report; bad ids are refused. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "sluice/broker.h"
#include "sluice/kafka.h"

typedef struct seen {
    int delivered, failed;
    char last_error[64];
} seen;

static void test_log(void *ud, int level, const char *msg) {
    (void)ud;
    (void)level;
    (void)msg;
}

static void on_delivery(void *ud, void *opaque, const sluice_delivery *d) {
    (void)opaque;
    seen *s = ud;
    if (d->error) {
        s->failed++;
        snprintf(s->last_error, sizeof s->last_error, "%s", d->error_name);
    } else {
        s->delivered++;
    }
}

static void run_until(sluice_loop *loop, seen *s, int want, int ms) {
    uint64_t deadline = sluice_now_ms() + (uint64_t)ms;
    while (s->delivered + s->failed < want && sluice_now_ms() < deadline)
        sluice_loop_run_once(loop, 50);
}

static void send_one(sluice_producer *p, const char *topic) {
    char err[256];
    sluice_message m = { .topic = topic, .value = "v", .value_len = 1, .partition = 0 };
    int rc = sluice_producer_send(p, &m, NULL, err, sizeof err);
    if (rc) fprintf(stderr, "send: %s\n", err);
    CHECK_EQ_INT(rc, 0);
}

int main(void) {
    sluice_loop *loop = NULL;
    sluice_broker *b = NULL;
    sluice_producer *p = NULL;
    char err[256];
    seen s = { 0, 0, "" };
    sluice_loop_config lcfg = { .log = test_log, .log_level = SLUICE_LOG_INFO };
    if (sluice_loop_new(&lcfg, &loop, err, sizeof err) != 0) return 1;
    sluice_broker_config bcfg = { .brokers = 3, .port = -1 };
    CHECK_EQ_INT(sluice_broker_new(loop, &bcfg, &b, err, sizeof err), 0);
    if (!b) return check_summary("test_broker_faults");
    CHECK_EQ_INT(sluice_broker_count(b), 3);

    /* Misuse is refused with a reason. */
    CHECK_EQ_INT(sluice_broker_set_down(b, 0, err, sizeof err), SLUICE_EINVAL);
    CHECK(strstr(err, "no broker 0") != NULL);
    CHECK_EQ_INT(sluice_broker_set_rtt(b, 1, -5, err, sizeof err), SLUICE_EINVAL);
    CHECK_EQ_INT(sluice_broker_set_leader(b, "t", 0, 4, err, sizeof err), SLUICE_EINVAL);
    int code = 0;
    CHECK(sluice_broker_error_code("NOT_LEADER_FOR_PARTITION", &code));
    CHECK_EQ_INT(code, 6);
    CHECK(sluice_broker_error_code("MSG_TIMED_OUT", &code));
    CHECK_EQ_INT(code, -192);
    CHECK(!sluice_broker_error_code("NO_SUCH_ERROR", &code));

    CHECK_EQ_INT(sluice_broker_create_topic(b, "faults", 1, err, sizeof err), 0);
    CHECK_EQ_INT(sluice_broker_set_leader(b, "faults", 0, 2, err, sizeof err), 0);
    const char *props[] = { "bootstrap.servers", sluice_broker_direct_bootstrap(b), NULL };
    sluice_producer_config pcfg = { .props = props, .on_delivery = on_delivery, .ud = &s };
    CHECK_EQ_INT(sluice_producer_new(loop, &pcfg, &p, err, sizeof err), 0);
    if (!p) return check_summary("test_broker_faults");
    send_one(p, "faults");
    run_until(loop, &s, 1, 10000);
    CHECK_EQ_INT(s.delivered, 1);

    /* The leader down: nothing is stored meanwhile; up: it is. */
    CHECK_EQ_INT(sluice_broker_set_down(b, 2, err, sizeof err), 0);
    send_one(p, "faults");
    run_until(loop, &s, 2, 1500);
    CHECK_EQ_INT(s.delivered + s.failed, 1);
    CHECK_EQ_INT(sluice_broker_set_up(b, 2, err, sizeof err), 0);
    run_until(loop, &s, 2, 15000);
    CHECK_EQ_INT(s.delivered, 2);

    /* A permanent produce error reaches the delivery report. */
    int errors[] = { 29 /* TOPIC_AUTHORIZATION_FAILED */ };
    CHECK_EQ_INT(sluice_broker_push_errors(b, 0, 1, errors, err, sizeof err), 0);
    send_one(p, "faults");
    run_until(loop, &s, 3, 10000);
    CHECK_EQ_INT(s.failed, 1);
    CHECK_EQ_STR(s.last_error, "TOPIC_AUTHORIZATION_FAILED");
    /* (librdkafka then refuses that topic at once until its metadata is
     * refreshed: not tested here.) */

    sluice_producer_free(p);
    sluice_broker_free(b);
    sluice_loop_free(loop);
    return check_summary("test_broker_faults");
}
