/* Kafka Admin API: create, delete and describe topics, describe and alter
 * their configs. CreateTopics, DeleteTopics, DescribeConfigs and
 * AlterConfigs are librdkafka admin operations whose results arrive on a
 * queue of their own, watched by the loop. librdkafka 2.0.2 has no
 * DescribeTopics: partitions, leaders and replicas come from a metadata
 * request, which blocks, so it runs on a thread of the admin's (started
 * on the first describe) that hands the answer to the loop thread through
 * an eventfd. Every request's callback runs once, on the loop thread. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "sluice/kafka.h"
#include "kafka_internal.h"

enum req_kind { REQ_CREATE, REQ_DELETE, REQ_DESCRIBE, REQ_CONFIGS, REQ_ALTER };

struct admin_req {
    struct admin_req *next, *prev;   /* the admin's pending list */
    struct admin_req *job_next;      /* describe: the thread's queue, then its answers */
    enum req_kind kind;
    sluice_admin_cb cb;
    void *ud;
    /* describe: what to ask, and the answer */
    char **topics;
    size_t ntopics;
    int timeout_ms;
    const struct rd_kafka_metadata *md;
    rd_kafka_resp_err_t md_err;
    char *cluster_id;                /* rd_kafka_mem_free */
};

struct sluice_admin {
    sluice_kq kq;                 /* first: the rd_kafka_t opaque points here (main queue) */
    sluice_kq results;            /* the admin operations' results */
    rd_kafka_t *rk;
    rd_kafka_queue_t *main_queue, *result_queue;
    sluice_admin_config cfg;
    struct admin_req *pending;    /* every request not yet reported */
    /* the describe thread */
    pthread_t thread;
    int thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int stop;                     /* under mu */
    struct admin_req *jobs, *answers;   /* under mu */
    int efd;
    sluice_watch *watch;
    int dispatching;              /* reporting results */
    int free_pending;             /* freed from inside a callback */
};

static void admin_destroy(sluice_admin *a);

/* ---- requests ------------------------------------------------------------ */

static struct admin_req *req_new(sluice_admin *a, enum req_kind kind, sluice_admin_cb cb, void *ud) {
    if (a->free_pending) return NULL;
    struct admin_req *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->kind = kind;
    r->cb = cb;
    r->ud = ud;
    r->next = a->pending;
    if (a->pending) a->pending->prev = r;
    a->pending = r;
    return r;
}

static void req_free(sluice_admin *a, struct admin_req *r) {
    if (r->prev) r->prev->next = r->next;
    else if (a->pending == r) a->pending = r->next;
    if (r->next) r->next->prev = r->prev;
    for (size_t i = 0; i < r->ntopics; i++) free(r->topics[i]);
    free(r->topics);
    if (r->md) rd_kafka_metadata_destroy(r->md);
    if (r->cluster_id) rd_kafka_mem_free(NULL, r->cluster_id);
    free(r);
}

/* Reports r (then frees it): the callback runs exactly once. */
static void req_done(sluice_admin *a, struct admin_req *r, const sluice_admin_result *res) {
    if (r->cb) r->cb(r->ud, res);
    req_free(a, r);
}

static void req_fail(sluice_admin *a, struct admin_req *r, rd_kafka_resp_err_t e, const char *text) {
    sluice_admin_result res = { .error = e, .error_name = sluice_kafka_err_name(e),
                                .error_text = text && *text ? text : rd_kafka_err2str(e) };
    req_done(a, r, &res);
}

/* ---- results of the admin operations ----------------------------------- */

static void topic_results(sluice_admin *a, struct admin_req *r, const rd_kafka_topic_result_t **tr,
                          size_t n) {
    sluice_admin_topic *topics = calloc(n ? n : 1, sizeof *topics);
    if (!topics) { req_fail(a, r, RD_KAFKA_RESP_ERR__FAIL, "out of memory"); return; }
    for (size_t i = 0; i < n; i++) {
        rd_kafka_resp_err_t e = rd_kafka_topic_result_error(tr[i]);
        topics[i].name = rd_kafka_topic_result_name(tr[i]);
        topics[i].error = e;
        if (e) {
            const char *s = rd_kafka_topic_result_error_string(tr[i]);
            topics[i].error_name = sluice_kafka_err_name(e);
            topics[i].error_text = s && *s ? s : rd_kafka_err2str(e);
        }
    }
    sluice_admin_result res = { .topics = topics, .ntopics = n };
    req_done(a, r, &res);
    free(topics);
}

/* One resource asked (a topic): its error is the request's. */
static void config_results(sluice_admin *a, struct admin_req *r, const rd_kafka_ConfigResource_t **rs,
                           size_t n) {
    if (n != 1) { req_fail(a, r, RD_KAFKA_RESP_ERR__BAD_MSG, "expected one resource in the answer"); return; }
    rd_kafka_resp_err_t e = rd_kafka_ConfigResource_error(rs[0]);
    if (e) { req_fail(a, r, e, rd_kafka_ConfigResource_error_string(rs[0])); return; }
    size_t nc = 0;
    const rd_kafka_ConfigEntry_t **ce = rd_kafka_ConfigResource_configs(rs[0], &nc);
    sluice_admin_config_entry *entries = calloc(nc ? nc : 1, sizeof *entries);
    if (!entries) { req_fail(a, r, RD_KAFKA_RESP_ERR__FAIL, "out of memory"); return; }
    for (size_t i = 0; i < nc; i++) {
        entries[i].name = rd_kafka_ConfigEntry_name(ce[i]);
        entries[i].value = rd_kafka_ConfigEntry_value(ce[i]);
        entries[i].source = rd_kafka_ConfigSource_name(rd_kafka_ConfigEntry_source(ce[i]));
        entries[i].is_default = rd_kafka_ConfigEntry_is_default(ce[i]);
        entries[i].read_only = rd_kafka_ConfigEntry_is_read_only(ce[i]);
        entries[i].sensitive = rd_kafka_ConfigEntry_is_sensitive(ce[i]);
    }
    sluice_admin_result res = { .configs = entries, .nconfigs = nc };
    req_done(a, r, &res);
    free(entries);
}

static void admin_event(sluice_admin *a, rd_kafka_event_t *ev) {
    struct admin_req *r = rd_kafka_event_opaque(ev);
    if (!r) return;
    rd_kafka_resp_err_t e = rd_kafka_event_error(ev);
    if (e) { req_fail(a, r, e, rd_kafka_event_error_string(ev)); return; }
    size_t n = 0;
    const rd_kafka_topic_result_t **topics = NULL;
    const rd_kafka_ConfigResource_t **configs = NULL;
    int is_config = 0;
    /* (n is set by these calls: never in the expression that uses it) */
    switch (rd_kafka_event_type(ev)) {
    case RD_KAFKA_EVENT_CREATETOPICS_RESULT:
        topics = rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
        break;
    case RD_KAFKA_EVENT_DELETETOPICS_RESULT:
        topics = rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(ev), &n);
        break;
    case RD_KAFKA_EVENT_DESCRIBECONFIGS_RESULT:
        configs = rd_kafka_DescribeConfigs_result_resources(rd_kafka_event_DescribeConfigs_result(ev), &n);
        is_config = 1;
        break;
    case RD_KAFKA_EVENT_ALTERCONFIGS_RESULT:
        configs = rd_kafka_AlterConfigs_result_resources(rd_kafka_event_AlterConfigs_result(ev), &n);
        is_config = 1;
        break;
    default:
        req_fail(a, r, RD_KAFKA_RESP_ERR__BAD_MSG, "unexpected admin result");
        return;
    }
    if (is_config) config_results(a, r, configs, n);
    else topic_results(a, r, topics, n);
}

static int results_serve(void *ud, int budget) {
    sluice_admin *a = ud;
    int more = 1;
    a->dispatching = 1;
    for (int i = 0; i < budget && more && !a->free_pending; i++) {
        rd_kafka_event_t *ev = rd_kafka_queue_poll(a->result_queue, 0);
        if (!ev) more = 0;
        else {
            admin_event(a, ev);
            rd_kafka_event_destroy(ev);
        }
    }
    a->dispatching = 0;
    if (a->free_pending) {
        admin_destroy(a);
        return 0;
    }
    return more;
}

/* Logs and client errors (the main queue). */
static int main_serve(void *ud, int budget) {
    (void)budget;
    rd_kafka_poll(((sluice_admin *)ud)->rk, 0);
    return 0;
}

static void admin_error_cb(rd_kafka_t *rk, int e, const char *reason, void *opaque) {
    (void)rk;
    sluice_admin *a = opaque;
    if (a->cfg.on_error) a->cfg.on_error(a->cfg.ud, sluice_kafka_err_name(e), reason, 0);
    else sluice_loop_log(a->kq.loop, SLUICE_LOG_WARN, "kafka admin: %s: %s", sluice_kafka_err_name(e), reason);
}

/* ---- describe: metadata on the admin's thread --------------------------- */

static void *describe_main(void *ud) {
    sluice_admin *a = ud;
    static const uint64_t one = 1;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->stop && !a->jobs) pthread_cond_wait(&a->cond, &a->mu);
        if (a->stop) break;
        struct admin_req *r = a->jobs;
        a->jobs = r->job_next;
        pthread_mutex_unlock(&a->mu);
        /* Every topic (asking for named ones may create them on a broker
         * that auto-creates topics); the loop thread picks the named ones. */
        r->md_err = rd_kafka_metadata(a->rk, 1, NULL, &r->md, r->timeout_ms);
        if (!r->md_err) r->cluster_id = rd_kafka_clusterid(a->rk, 0);   /* known from that answer */
        pthread_mutex_lock(&a->mu);
        r->job_next = a->answers;
        a->answers = r;
        while (write(a->efd, &one, sizeof one) < 0 && errno == EINTR) {}
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

static const rd_kafka_metadata_topic_t *md_topic(const struct rd_kafka_metadata *md, const char *name) {
    for (int i = 0; i < md->topic_cnt; i++)
        if (strcmp(md->topics[i].topic, name) == 0) return &md->topics[i];
    return NULL;
}

/* Maps one metadata topic onto sluice_admin_topic (partitions in *parts). */
static void describe_topic(sluice_admin_topic *t, const char *name, const rd_kafka_metadata_topic_t *mt,
                           sluice_admin_partition **parts) {
    t->name = name;
    rd_kafka_resp_err_t e = mt ? mt->err : RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
    if (e) {
        t->error = e;
        t->error_name = sluice_kafka_err_name(e);
        t->error_text = rd_kafka_err2str(e);
        return;
    }
    sluice_admin_partition *p = *parts;
    for (int i = 0; i < mt->partition_cnt; i++) {
        const rd_kafka_metadata_partition_t *mp = &mt->partitions[i];
        p[i].id = mp->id;
        p[i].leader = mp->leader;
        p[i].replicas = mp->replicas;
        p[i].nreplicas = (size_t)mp->replica_cnt;
        p[i].isr = mp->isrs;
        p[i].nisr = (size_t)mp->isr_cnt;
        p[i].error = mp->err;
        p[i].error_name = mp->err ? sluice_kafka_err_name(mp->err) : NULL;
    }
    t->partitions = p;
    t->npartitions = (size_t)mt->partition_cnt;
    *parts += mt->partition_cnt;
}

static void describe_answer(sluice_admin *a, struct admin_req *r) {
    if (r->md_err) { req_fail(a, r, r->md_err, NULL); return; }
    const struct rd_kafka_metadata *md = r->md;
    size_t nt = r->ntopics ? r->ntopics : (size_t)md->topic_cnt, np = 0;
    for (int i = 0; i < md->topic_cnt; i++) np += (size_t)md->topics[i].partition_cnt;
    sluice_admin_topic *topics = calloc(nt ? nt : 1, sizeof *topics);
    sluice_admin_partition *parts = calloc(np ? np : 1, sizeof *parts), *next = parts;
    sluice_admin_broker *brokers = calloc(md->broker_cnt ? (size_t)md->broker_cnt : 1, sizeof *brokers);
    if (!topics || !parts || !brokers) {
        req_fail(a, r, RD_KAFKA_RESP_ERR__FAIL, "out of memory");
    } else {
        for (size_t i = 0; i < nt; i++) {
            const char *name = r->ntopics ? r->topics[i] : md->topics[i].topic;
            describe_topic(&topics[i], name, r->ntopics ? md_topic(md, name) : &md->topics[i], &next);
        }
        for (int i = 0; i < md->broker_cnt; i++)
            brokers[i] = (sluice_admin_broker){ md->brokers[i].id, md->brokers[i].host, md->brokers[i].port };
        sluice_admin_result res = { .topics = topics, .ntopics = nt, .brokers = brokers,
                                    .nbrokers = (size_t)md->broker_cnt, .cluster_id = r->cluster_id };
        req_done(a, r, &res);
    }
    free(topics);
    free(parts);
    free(brokers);
}

static void answers_ready(sluice_watch *w, void *ud) {
    (void)w;
    sluice_admin *a = ud;
    uint64_t count;
    while (read(a->efd, &count, sizeof count) < 0 && errno == EINTR) {}
    pthread_mutex_lock(&a->mu);
    struct admin_req *list = a->answers, *in_order = NULL;
    a->answers = NULL;
    pthread_mutex_unlock(&a->mu);
    while (list) {   /* answered newest first: report oldest first */
        struct admin_req *r = list;
        list = r->job_next;
        r->job_next = in_order;
        in_order = r;
    }
    a->dispatching = 1;
    while (in_order) {
        struct admin_req *r = in_order;
        in_order = r->job_next;
        describe_answer(a, r);
    }
    a->dispatching = 0;
    if (a->free_pending) admin_destroy(a);
}

static int thread_start(sluice_admin *a, char *err, size_t errlen) {
    if (a->thread_started) return 0;
    a->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (a->efd < 0) {
        sluice_errf(err, errlen, "eventfd: %s", strerror(errno));
        return SLUICE_EIO;
    }
    int rc = sluice_watch_new(a->kq.loop, a->efd, answers_ready, a, &a->watch, err, errlen);
    if (rc) {
        close(a->efd);
        a->efd = -1;
        return rc;
    }
    int created = sluice_thread_start(&a->thread, describe_main, a);
    if (created != 0) {
        sluice_errf(err, errlen, "pthread_create: %s", strerror(created));
        return SLUICE_EIO;
    }
    a->thread_started = 1;
    return 0;
}

/* ---- the handle ------------------------------------------------------------ */

int sluice_admin_new(sluice_loop *loop, const sluice_admin_config *cfg, sluice_admin **out,
                     char *err, size_t errlen) {
    *out = NULL;
    if (!loop || !cfg) {
        sluice_errf(err, errlen, "admin: loop and config are required");
        return SLUICE_EINVAL;
    }
    sluice_admin *a = calloc(1, sizeof *a);
    if (!a) return SLUICE_ENOMEM;
    a->cfg = *cfg;
    a->kq.efd = a->results.efd = a->efd = -1;
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cond, NULL);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    int rc = sluice_kafka_conf_log(conf, err, errlen);
    if (!rc) rc = sluice_kafka_conf_apply(conf, cfg->props, err, errlen);
    rd_kafka_conf_set_error_cb(conf, admin_error_cb);
    a->rk = sluice_kafka_open(RD_KAFKA_PRODUCER, conf, &a->kq, loop, main_serve, a,
                              &rc, err, errlen);
    /* Requests answer on a queue of their own. */
    if (a->rk) {
        a->main_queue = a->kq.queue;
        a->result_queue = rd_kafka_queue_new(a->rk);
        rc = sluice_kq_open(&a->results, loop, a->result_queue, results_serve, a, err, errlen);
    }
    if (rc) {
        sluice_admin_free(a);
        return rc;
    }
    *out = a;
    return 0;
}

static rd_kafka_AdminOptions_t *admin_options(sluice_admin *a, rd_kafka_admin_op_t op,
                                              struct admin_req *r, int timeout_ms, int wait_op) {
    char why[256];
    rd_kafka_AdminOptions_t *o = rd_kafka_AdminOptions_new(a->rk, op);
    if (timeout_ms > 0) {
        rd_kafka_AdminOptions_set_request_timeout(o, timeout_ms, why, sizeof why);
        /* Create and delete: the broker answers once the change is done. */
        if (wait_op) rd_kafka_AdminOptions_set_operation_timeout(o, timeout_ms, why, sizeof why);
    }
    rd_kafka_AdminOptions_set_opaque(o, r);
    return o;
}

static int check_admin(sluice_admin *a, const void *arg, size_t n, char *err, size_t errlen) {
    if (!a || (n && !arg)) {
        sluice_errf(err, errlen, "admin: a client and the topics are required");
        return SLUICE_EINVAL;
    }
    if (a->free_pending) {
        sluice_errf(err, errlen, "the admin client is closed");
        return SLUICE_ECLOSED;
    }
    return 0;
}

int sluice_admin_create_topics(sluice_admin *a, const sluice_new_topic *topics, size_t n, int timeout_ms,
                               sluice_admin_cb cb, void *ud, char *err, size_t errlen) {
    char why[512];
    int rc = check_admin(a, topics, n, err, errlen);
    if (rc) return rc;
    if (!n) return SLUICE_EINVAL;
    rd_kafka_NewTopic_t **nt = calloc(n, sizeof *nt);
    if (!nt) return SLUICE_ENOMEM;
    for (size_t i = 0; i < n && !rc; i++) {
        nt[i] = rd_kafka_NewTopic_new(topics[i].name, topics[i].partitions, topics[i].replication,
                                      why, sizeof why);
        if (!nt[i]) {
            sluice_errf(err, errlen, "%s: %s", topics[i].name, why);
            rc = SLUICE_EINVAL;
        }
        for (size_t j = 0; !rc && topics[i].configs && topics[i].configs[j]; j += 2) {
            const char *value = topics[i].configs[j + 1];
            rd_kafka_resp_err_t e = value ? rd_kafka_NewTopic_set_config(nt[i], topics[i].configs[j], value)
                                          : RD_KAFKA_RESP_ERR__INVALID_ARG;
            if (e) {
                sluice_errf(err, errlen, "%s: config %s: %s", topics[i].name, topics[i].configs[j],
                                  rd_kafka_err2str(e));
                rc = SLUICE_EINVAL;
            }
        }
    }
    struct admin_req *r = rc ? NULL : req_new(a, REQ_CREATE, cb, ud);
    if (!rc && !r) rc = SLUICE_ENOMEM;
    if (!rc) {
        rd_kafka_AdminOptions_t *o = admin_options(a, RD_KAFKA_ADMIN_OP_CREATETOPICS, r, timeout_ms, 1);
        rd_kafka_CreateTopics(a->rk, nt, n, o, a->result_queue);
        rd_kafka_AdminOptions_destroy(o);
    }
    for (size_t i = 0; i < n; i++)
        if (nt[i]) rd_kafka_NewTopic_destroy(nt[i]);
    free(nt);
    return rc;
}

int sluice_admin_delete_topics(sluice_admin *a, const char *const *names, size_t n, int timeout_ms,
                               sluice_admin_cb cb, void *ud, char *err, size_t errlen) {
    int rc = check_admin(a, names, n, err, errlen);
    if (rc) return rc;
    if (!n) return SLUICE_EINVAL;
    rd_kafka_DeleteTopic_t **dt = calloc(n, sizeof *dt);
    struct admin_req *r = dt ? req_new(a, REQ_DELETE, cb, ud) : NULL;
    if (!r) {
        free(dt);
        return SLUICE_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) dt[i] = rd_kafka_DeleteTopic_new(names[i]);
    rd_kafka_AdminOptions_t *o = admin_options(a, RD_KAFKA_ADMIN_OP_DELETETOPICS, r, timeout_ms, 1);
    rd_kafka_DeleteTopics(a->rk, dt, n, o, a->result_queue);
    rd_kafka_AdminOptions_destroy(o);
    rd_kafka_DeleteTopic_destroy_array(dt, n);
    free(dt);
    return 0;
}

int sluice_admin_describe_topics(sluice_admin *a, const char *const *names, size_t n, int timeout_ms,
                                 sluice_admin_cb cb, void *ud, char *err, size_t errlen) {
    int rc = check_admin(a, names, n, err, errlen);
    if (!rc) rc = thread_start(a, err, errlen);
    if (rc) return rc;
    struct admin_req *r = req_new(a, REQ_DESCRIBE, cb, ud);
    if (!r) return SLUICE_ENOMEM;
    r->timeout_ms = timeout_ms > 0 ? timeout_ms : SLUICE_ADMIN_TIMEOUT_MS;
    r->topics = calloc(n ? n : 1, sizeof *r->topics);
    for (size_t i = 0; r->topics && i < n; i++) {
        if (!(r->topics[r->ntopics] = strdup(names[i]))) break;
        r->ntopics++;
    }
    if (r->ntopics != n) {
        req_free(a, r);
        return SLUICE_ENOMEM;
    }
    pthread_mutex_lock(&a->mu);
    struct admin_req **tail = &a->jobs;
    while (*tail) tail = &(*tail)->job_next;
    *tail = r;
    pthread_cond_signal(&a->cond);
    pthread_mutex_unlock(&a->mu);
    return 0;
}

/* Configs of one topic: describe (pairs NULL) or alter (set exactly these). */
static int topic_configs(sluice_admin *a, const char *topic, const char *const *pairs, int alter,
                         int timeout_ms, sluice_admin_cb cb, void *ud, char *err, size_t errlen) {
    int rc = check_admin(a, topic, 1, err, errlen);
    if (rc) return rc;
    rd_kafka_ConfigResource_t *res = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic);
    for (size_t i = 0; pairs && pairs[i]; i += 2) {
        rd_kafka_resp_err_t e = rd_kafka_ConfigResource_set_config(res, pairs[i], pairs[i + 1]);
        if (e) {
            sluice_errf(err, errlen, "config %s: %s", pairs[i], rd_kafka_err2str(e));
            rd_kafka_ConfigResource_destroy(res);
            return SLUICE_EINVAL;
        }
    }
    struct admin_req *r = req_new(a, alter ? REQ_ALTER : REQ_CONFIGS, cb, ud);
    if (!r) {
        rd_kafka_ConfigResource_destroy(res);
        return SLUICE_ENOMEM;
    }
    rd_kafka_AdminOptions_t *o = admin_options(a, alter ? RD_KAFKA_ADMIN_OP_ALTERCONFIGS
                                                        : RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS, r, timeout_ms, 0);
    if (alter) rd_kafka_AlterConfigs(a->rk, &res, 1, o, a->result_queue);
    else rd_kafka_DescribeConfigs(a->rk, &res, 1, o, a->result_queue);
    rd_kafka_AdminOptions_destroy(o);
    rd_kafka_ConfigResource_destroy(res);
    return 0;
}

int sluice_admin_describe_configs(sluice_admin *a, const char *topic, int timeout_ms,
                                  sluice_admin_cb cb, void *ud, char *err, size_t errlen) {
    return topic_configs(a, topic, NULL, 0, timeout_ms, cb, ud, err, errlen);
}

int sluice_admin_alter_configs(sluice_admin *a, const char *topic, const char *const *pairs,
                               int timeout_ms, sluice_admin_cb cb, void *ud, char *err, size_t errlen) {
    return topic_configs(a, topic, pairs, 1, timeout_ms, cb, ud, err, errlen);
}

size_t sluice_admin_pending(const sluice_admin *a) {
    size_t n = 0;
    for (const struct admin_req *r = a ? a->pending : NULL; r; r = r->next) n++;
    return n;
}

void sluice_admin_free(sluice_admin *a) {
    if (!a) return;
    if (a->dispatching) {   /* from a callback: finish after it */
        a->free_pending = 1;
        return;
    }
    admin_destroy(a);
}

static void admin_destroy(sluice_admin *a) {
    a->free_pending = 1;   /* callbacks run below start no requests */
    if (a->thread_started) {   /* waits for a metadata request in flight */
        pthread_mutex_lock(&a->mu);
        a->stop = 1;
        pthread_cond_signal(&a->cond);
        pthread_mutex_unlock(&a->mu);
        pthread_join(a->thread, NULL);
    }
    if (a->watch) sluice_watch_free(a->watch);
    if (a->efd >= 0) close(a->efd);
    sluice_kq_close(&a->results);
    sluice_kq_close(&a->kq);
    /* Every request still pending is reported, once. */
    while (a->pending) req_fail(a, a->pending, RD_KAFKA_RESP_ERR__DESTROY, "the admin client was closed");
    if (a->result_queue) rd_kafka_queue_destroy(a->result_queue);
    if (a->main_queue) rd_kafka_queue_destroy(a->main_queue);
    if (a->rk) rd_kafka_destroy(a->rk);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cond);
    free(a);
}
