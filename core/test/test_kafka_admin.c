/* The admin client on the embedded broker (librdkafka's mock): describe
 * from metadata (on the admin's thread, answered on the loop), what the
 * mock cannot do (CreateTopics) answered as an error, the answers'
 * order, and every pending request reported once when the client is
 * freed — also from inside a callback. Apache Kafka: the integration
 * spec admin_spec.lua. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "kafka_support.h"
#include "sluice/kafka.h"

struct seen {
    int calls;
    int error;
    char error_name[64];
    int ntopics, npartitions, nbrokers, topic_error;
    int32_t leader, replica0;
    char cluster_id[64];
    int order[8], norder;
    sluice_admin *free_me;     /* freed from inside its callback */
};

static void on_answer(void *ud, const sluice_admin_result *r) {
    struct seen *s = ud;
    s->calls++;
    s->error = r->error;
    snprintf(s->error_name, sizeof s->error_name, "%s", r->error ? r->error_name : "");
    if (r->error) return;
    s->ntopics = (int)r->ntopics;
    snprintf(s->cluster_id, sizeof s->cluster_id, "%s", r->cluster_id ? r->cluster_id : "");
    s->nbrokers = (int)r->nbrokers;
    if (r->ntopics) {
        s->topic_error = r->topics[0].error;
        s->npartitions = (int)r->topics[0].npartitions;
        if (r->topics[0].npartitions) {
            s->leader = r->topics[0].partitions[0].leader;
            s->replica0 = r->topics[0].partitions[0].nreplicas ? r->topics[0].partitions[0].replicas[0] : -1;
        }
    }
}

/* Several requests share one seen: each notes its number. */
struct tagged { struct seen *s; int tag; };
static void on_tagged(void *ud, const sluice_admin_result *r) {
    struct tagged *t = ud;
    on_answer(t->s, r);
    t->s->order[t->s->norder++] = t->tag;
    if (t->s->free_me) {
        sluice_admin_free(t->s->free_me);
        t->s->free_me = NULL;
    }
}

static sluice_admin *new_admin(sluice_loop *loop, const char *bootstrap) {
    const char *props[] = { "bootstrap.servers", bootstrap, NULL };
    sluice_admin_config cfg = { .props = props };
    sluice_admin *a = NULL;
    char err[256];
    int rc = sluice_admin_new(loop, &cfg, &a, err, sizeof err);
    if (rc) fprintf(stderr, "admin: %s\n", err);
    CHECK_EQ_INT(rc, 0);
    return a;
}

int main(void) {
    sluice_loop *loop;
    sluice_broker *broker;
    char err[256];
    if (start_loop_and_broker(&loop, &broker)) return 1;
    CHECK_EQ_INT(sluice_broker_create_topic(broker, "admin-t", 3, err, sizeof err), 0);
    const char *bootstrap = sluice_broker_direct_bootstrap(broker);

    /* describe: a topic that exists and one that does not */
    sluice_admin *a = new_admin(loop, bootstrap);
    struct seen s = { 0 };
    const char *names[] = { "admin-t" };
    CHECK_EQ_INT(sluice_admin_describe_topics(a, names, 1, 5000, on_answer, &s, err, sizeof err), 0);
    CHECK_EQ_INT(sluice_admin_pending(a), 1);
    pump_loop_until(loop, &s.calls, 1, 10000);
    CHECK_EQ_INT(s.calls, 1);
    CHECK_EQ_INT(s.error, 0);
    CHECK_EQ_INT(s.ntopics, 1);
    CHECK_EQ_INT(s.topic_error, 0);
    CHECK_EQ_INT(s.npartitions, 3);
    CHECK_EQ_INT(s.nbrokers, 1);
    CHECK_EQ_INT(s.leader, 1);
    CHECK_EQ_INT(s.replica0, 1);
    CHECK(strncmp(s.cluster_id, "mockCluster", 11) == 0);
    CHECK_EQ_INT(sluice_admin_pending(a), 0);

    memset(&s, 0, sizeof s);
    const char *missing[] = { "admin-none" };
    CHECK_EQ_INT(sluice_admin_describe_topics(a, missing, 1, 5000, on_answer, &s, err, sizeof err), 0);
    pump_loop_until(loop, &s.calls, 1, 10000);
    CHECK_EQ_INT(s.calls, 1);
    CHECK_EQ_INT(s.ntopics, 1);
    CHECK_EQ_INT(s.topic_error, 3);   /* UNKNOWN_TOPIC_OR_PART */
    CHECK_EQ_INT(s.npartitions, 0);

    /* The mock has no CreateTopics: it never answers, so the request
     * times out (TIMED_OUT), reported once. */
    memset(&s, 0, sizeof s);
    sluice_new_topic nt = { "admin-new", 2, 1, NULL };
    CHECK_EQ_INT(sluice_admin_create_topics(a, &nt, 1, 3000, on_answer, &s, err, sizeof err), 0);
    pump_loop_until(loop, &s.calls, 1, 10000);
    CHECK_EQ_INT(s.calls, 1);
    CHECK_EQ_STR(s.error_name, "TIMED_OUT");

    /* Refused before anything is sent: no callback. */
    memset(&s, 0, sizeof s);
    const char *bad_config[] = { "cleanup.policy", NULL };   /* a name without a value */
    sluice_new_topic bad = { "admin-bad", 1, 1, bad_config };
    CHECK_EQ_INT(sluice_admin_create_topics(a, &bad, 1, 0, on_answer, &s, err, sizeof err), SLUICE_EINVAL);
    CHECK_EQ_INT(sluice_admin_create_topics(a, &nt, 0, 0, on_answer, &s, err, sizeof err), SLUICE_EINVAL);
    CHECK_EQ_INT(sluice_admin_pending(a), 0);

    /* Three describes answered in the order asked. */
    memset(&s, 0, sizeof s);
    struct tagged t[3] = { { &s, 1 }, { &s, 2 }, { &s, 3 } };
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(sluice_admin_describe_topics(a, names, 1, 5000, on_tagged, &t[i], err, sizeof err), 0);
    pump_loop_until(loop, &s.calls, 3, 10000);
    CHECK_EQ_INT(s.calls, 3);
    CHECK_EQ_INT(s.order[0], 1);
    CHECK_EQ_INT(s.order[1], 2);
    CHECK_EQ_INT(s.order[2], 3);

    /* Freed with requests pending: each is reported DESTROY, once. */
    memset(&s, 0, sizeof s);
    struct tagged p[2] = { { &s, 1 }, { &s, 2 } };
    CHECK_EQ_INT(sluice_admin_describe_configs(a, "admin-t", 5000, on_tagged, &p[0], err, sizeof err), 0);
    CHECK_EQ_INT(sluice_admin_describe_topics(a, names, 1, 5000, on_tagged, &p[1], err, sizeof err), 0);
    sluice_admin_free(a);
    CHECK_EQ_INT(s.calls, 2);
    CHECK_EQ_STR(s.error_name, "DESTROY");

    /* Freed from inside the first answer: the free completes after that
     * callback returns; the second is answered (if its answer came with
     * the first) or reported DESTROY, once either way; nothing runs later. */
    a = new_admin(loop, bootstrap);
    memset(&s, 0, sizeof s);
    s.free_me = a;
    CHECK_EQ_INT(sluice_admin_describe_topics(a, names, 1, 5000, on_tagged, &p[0], err, sizeof err), 0);
    CHECK_EQ_INT(sluice_admin_describe_topics(a, names, 1, 5000, on_tagged, &p[1], err, sizeof err), 0);
    pump_loop_until(loop, &s.calls, 2, 10000);
    CHECK_EQ_INT(s.calls, 2);
    CHECK_EQ_INT(s.order[0], 1);
    CHECK_EQ_INT(s.order[1], 2);
    CHECK(s.error == 0 || strcmp(s.error_name, "DESTROY") == 0);
    int calls = s.calls;
    for (int i = 0; i < 10; i++) sluice_loop_run_once(loop, 10);
    CHECK_EQ_INT(s.calls, calls);

    sluice_broker_free(broker);
    sluice_loop_free(loop);
    return check_summary("test_kafka_admin");
}
