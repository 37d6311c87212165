/* sluice.producer: a librdkafka producer. Each send may carry a Lua
 * function (and one value passed back to it) called with the delivery
 * report. The function is held in a table of the producer under a ref
 * whose number travels through librdkafka as the message opaque.
 *
 * Reports are collected as they arrive and handed to Lua in one protected
 * call per batch (one wake-up of the producer), which calls each callback:
 * the protected call and its limits are paid once per batch. An error in
 * one callback is logged and counted like any handler's, and the batch
 * resumes after it: the other callbacks still run, each exactly once. */
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "sluice_lua.h"
#include "sluice/kafka.h"

enum { PRESSURE, ERROR, TXN };   /* refs (TXN: the running transaction operation's callback) */

typedef struct lua_producer {
    sluice_lua_handle h;         /* h.obj: the sluice_producer */
    double sent, delivered, failed;
    /* Registry refs to tables of this producer, kept until __gc: reports
     * purged by a close begun inside a callback still arrive after it. */
    int cbs_ref;      /* ref → callback of the records in flight */
    int args_ref;     /* ref → the value to pass it (when one was given) */
    int batch_ref;    /* reports collected: callback, err, report, arg per entry */
    lua_Integer batch_n;
    int in_dispatch;
} lua_producer;

static void producer_collect(lua_State *L, sluice_lua_handle *h)
{
    lua_producer *p = (lua_producer *)h;
    sluice_lua_unref(L, &p->cbs_ref);
    sluice_lua_unref(L, &p->args_ref);
    sluice_lua_unref(L, &p->batch_ref);
}


/* The opaque of a record sent from Lua is odd: ref * 4 + 1, + 2 when a
 * value for the callback was given. A declared route's rows (route.c)
 * carry an aligned pointer: even. */
#define OPAQUE_NONE ((intptr_t)-1)
#define OPAQUE_LUA(ref, has_arg) (((intptr_t)(ref) << 2) | ((has_arg) ? 2 : 0) | 1)

/* dispatch(batch, i, n): calls entries i..n of batch. batch[0] names the
 * entry being called, so that after an error the caller resumes past it.
 * Entries are cleared before their call: nothing is kept alive by a
 * finished batch and nothing is called twice. */
static int dispatch(lua_State *L)
{
    lua_Integer i = lua_tointeger(L, 2), n = lua_tointeger(L, 3);
    for (; i <= n; i++) {
        int j = (int)i * 4;
        lua_pushinteger(L, i);
        lua_rawseti(L, 1, 0);
        for (int k = 3; k >= 0; k--) {   /* f, err, report, arg */
            lua_rawgeti(L, 1, j - k);
            lua_pushnil(L);
            lua_rawseti(L, 1, j - k);
        }
        lua_call(L, 3, 0);
    }
    return 0;
}

/* Appends the report to the batch; on_delivery_end hands it to Lua. */
static void on_delivery(void *ud, void *opaque, const sluice_delivery *d)
{
    lua_producer *p = ud;
    lua_State *L = p->h.ctx->L;
    intptr_t op = (intptr_t)opaque;
    int ref = (int)(op >> 2), base;

    if (d->error) p->failed++; else p->delivered++;
    if (!(op & 1)) {   /* a declared route's row: acked in C */
        sluice_ingest_delivered(opaque, d);
        return;
    }
    if (op == OPAQUE_NONE || p->h.from_gc) return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->batch_ref);
    base = (int)(p->batch_n++ * 4);
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->cbs_ref);
    lua_rawgeti(L, -1, ref);
    lua_rawseti(L, -3, base + 1);
    luaL_unref(L, -1, ref);
    lua_pop(L, 1);
    if (op & 2) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, p->args_ref);
        lua_rawgeti(L, -1, ref);
        lua_rawseti(L, -3, base + 4);
        lua_pushnil(L);
        lua_rawseti(L, -2, ref);
        lua_pop(L, 1);
    }
    if (d->error) lua_pushfstring(L, "%s: %s", d->error_name, d->error_text);
    else lua_pushnil(L);
    lua_createtable(L, 0, 4);
    lua_pushstring(L, d->topic);
    lua_setfield(L, -2, "topic");
    lua_pushinteger(L, d->partition);
    lua_setfield(L, -2, "partition");
    lua_pushinteger(L, (lua_Integer)d->offset);
    lua_setfield(L, -2, "offset");
    lua_pushinteger(L, (lua_Integer)d->timestamp_ms);
    lua_setfield(L, -2, "timestamp");
    if (d->error) {
        lua_pushstring(L, d->error_name);
        lua_setfield(L, -2, "code");
    }
    lua_rawseti(L, -3, base + 3);
    lua_rawseti(L, -2, base + 2);
    lua_pop(L, 1);
}

/* One call into Lua for the batch; after a callback's error (logged and
 * counted by sluice_lua_call) the rest of the batch is called anew.
 * Reports arriving meanwhile (a callback flushing) join the batch. */
static void on_delivery_end(void *ud)
{
    lua_producer *p = ud;
    sluice_lua_loop *ctx = p->h.ctx;
    lua_State *L = ctx->L;
    lua_Integer done = 0;
    int failed_any = 0;

    if (p->h.from_gc || p->in_dispatch || p->batch_n == 0) return;
    p->in_dispatch = 1;
    while (done < p->batch_n) {
        lua_Integer n = p->batch_n;
        lua_pushcfunction(L, dispatch);
        lua_rawgeti(L, LUA_REGISTRYINDEX, p->batch_ref);
        lua_pushinteger(L, done + 1);
        lua_pushinteger(L, n);
        if (sluice_lua_call(ctx, 3, 0, "delivery callback") == 0) {
            done = n;
        } else {
            lua_Integer failed;
            failed_any = 1;
            lua_rawgeti(L, LUA_REGISTRYINDEX, p->batch_ref);
            lua_rawgeti(L, -1, 0);
            failed = lua_tointeger(L, -1);
            lua_pop(L, 2);
            done = failed > done ? failed : done + 1;
        }
    }
    if (failed_any) {   /* clear what an error may have left behind */
        lua_rawgeti(L, LUA_REGISTRYINDEX, p->batch_ref);
        for (lua_Integer i = 0; i <= done * 4; i++) {
            lua_pushnil(L);
            lua_rawseti(L, -2, (int)i);
        }
        lua_pop(L, 1);
    }
    p->batch_n = 0;
    p->in_dispatch = 0;
}

static void on_pressure(void *ud, int high)
{
    lua_producer *p = ud;
    if (!sluice_lua_handle_callback(&p->h, PRESSURE)) return;
    lua_pushboolean(p->h.ctx->L, high);
    sluice_lua_call(p->h.ctx, 1, 0, "pressure callback");
}

static void on_error(void *ud, const char *name, const char *text, int fatal)
{
    sluice_lua_kafka_error(ud, ERROR, "producer", name, text, fatal);
}

static int new_table_ref(lua_State *L, int narr)
{
    lua_createtable(L, narr, 0);
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

/* core.producer(loop, { props = {...}, high_water =, low_water = },
 *               { pressure = fn(high), error = fn(msg, fatal) }) */
static int producer_new(lua_State *L)
{
    sluice_producer_config cfg;
    lua_producer *p;
    sluice_producer *producer = NULL;
    char err[512] = "";
    int rc;

    luaL_checktype(L, 2, LUA_TTABLE);
    sluice_lua_opt_table(L, 3);
    lua_settop(L, 3);
    memset(&cfg, 0, sizeof cfg);
    cfg.high_water = sluice_lua_opt_size(L, 2, "high_water");
    cfg.low_water = sluice_lua_opt_size(L, 2, "low_water");
    lua_getfield(L, 2, "props");                      /* index 4 */
    cfg.props = sluice_lua_string_pairs(L, 4, "kafka properties");

    p = sluice_lua_handle_new(L, &sluice_lua_producer_type, sizeof *p, 1);
    p->cbs_ref = p->args_ref = p->batch_ref = LUA_NOREF;
    sluice_lua_handle_ref(L, &p->h, PRESSURE, 3, "pressure", 0);
    sluice_lua_handle_ref(L, &p->h, ERROR, 3, "error", 0);
    p->cbs_ref = new_table_ref(L, 0);
    p->args_ref = new_table_ref(L, 0);
    p->batch_ref = new_table_ref(L, 64);
    cfg.on_delivery = on_delivery;
    cfg.on_delivery_end = on_delivery_end;
    cfg.on_pressure = on_pressure;
    cfg.on_error = on_error;
    cfg.ud = p;
    rc = sluice_producer_new(p->h.ctx->loop, &cfg, &producer, err, sizeof err);
    if (rc) return sluice_lua_handle_fail(L, &p->h, rc, err);
    p->h.obj = producer;
    return 1;
}

/* Headers: { name = value } or { {name, value}, ... }. Pushes a userdata
 * holding the array (anchoring it) and returns it. */
static sluice_header *collect_headers(lua_State *L, int idx, size_t *count)
{
    size_t n = 0, i = 0;
    sluice_header *hs;
    *count = 0;
    if (lua_isnoneornil(L, idx)) return NULL;
    luaL_argcheck(L, lua_istable(L, idx), idx, "headers must be a table");
    lua_pushnil(L);
    while (lua_next(L, idx)) { n++; lua_pop(L, 1); }
    hs = lua_newuserdata(L, (n ? n : 1) * sizeof *hs);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING) {
            hs[i].name = lua_tostring(L, -2);
            hs[i].value = lua_tolstring(L, -1, &hs[i].value_len);
        } else if (lua_type(L, -1) == LUA_TTABLE) {
            /* {name, value}: both anchored by the inner table */
            lua_rawgeti(L, -1, 1);
            lua_rawgeti(L, -2, 2);
            if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
                luaL_argerror(L, idx, "each header pair must be {name, value} strings");
            hs[i].name = lua_tostring(L, -2);
            hs[i].value = lua_tolstring(L, -1, &hs[i].value_len);
            lua_pop(L, 2);
        } else {
            luaL_argerror(L, idx, "headers must map strings to strings");
        }
        i++;
        lua_pop(L, 1);
    }
    *count = i;
    return hs;
}

/* producer:send(topic, key, value, headers, partition, timestamp, callback
 *               [, arg]) → true | nil, err, code
 * callback(err, report, arg) runs once with the delivery report. */
static int producer_send(lua_State *L)
{
    lua_producer *p = sluice_lua_handle_check(L, 1, &sluice_lua_producer_type);
    sluice_message m;
    char err[512] = "";
    int rc, ref = LUA_NOREF, has_arg = 0;
    intptr_t opaque = OPAQUE_NONE;

    memset(&m, 0, sizeof m);
    m.topic = luaL_checkstring(L, 2);
    if (!lua_isnoneornil(L, 3)) m.key = luaL_checklstring(L, 3, &m.key_len);
    if (!lua_isnoneornil(L, 4)) m.value = luaL_checklstring(L, 4, &m.value_len);
    m.partition = (int32_t)luaL_optinteger(L, 6, -1);
    m.timestamp_ms = (int64_t)luaL_optnumber(L, 7, 0);
    if (!lua_isnoneornil(L, 8)) luaL_checktype(L, 8, LUA_TFUNCTION);
    has_arg = !lua_isnoneornil(L, 9);
    lua_settop(L, 9);
    m.headers = collect_headers(L, 5, &m.header_count);
    if (!lua_isnil(L, 8)) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, p->cbs_ref);
        lua_pushvalue(L, 8);
        ref = luaL_ref(L, -2);
        if (has_arg) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, p->args_ref);
            lua_pushvalue(L, 9);
            lua_rawseti(L, -2, ref);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
        opaque = OPAQUE_LUA(ref, has_arg);
    }
    rc = sluice_producer_send(p->h.obj, &m, (void *)opaque, err, sizeof err);
    if (rc) {
        if (ref != LUA_NOREF) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, p->cbs_ref);
            luaL_unref(L, -1, ref);
            if (has_arg) {
                lua_rawgeti(L, LUA_REGISTRYINDEX, p->args_ref);
                lua_pushnil(L);
                lua_rawseti(L, -2, ref);
            }
        }
        return sluice_lua_fail_core(L, rc, err);
    }
    p->sent++;
    lua_pushboolean(L, 1);
    return 1;
}

static int producer_in_flight(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)sluice_producer_in_flight(sluice_lua_handle_obj(L, 1, &sluice_lua_producer_type)));
    return 1;
}

/* producer:flush([timeout_ms]) → number still in flight */
static int producer_flush(lua_State *L)
{
    lua_producer *p = sluice_lua_handle_check(L, 1, &sluice_lua_producer_type);
    int ms = (int)luaL_optinteger(L, 2, 10000);
    lua_pushinteger(L, (lua_Integer)sluice_producer_flush(p->h.obj, ms));
    return 1;
}

static int producer_stats(lua_State *L)
{
    lua_producer *p = sluice_lua_handle_check(L, 1, &sluice_lua_producer_type);
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, (lua_Integer)p->sent);
    lua_setfield(L, -2, "produced");
    lua_pushinteger(L, (lua_Integer)p->delivered);
    lua_setfield(L, -2, "delivered");
    lua_pushinteger(L, (lua_Integer)p->failed);
    lua_setfield(L, -2, "delivery_failed");
    lua_pushinteger(L, (lua_Integer)sluice_producer_in_flight(p->h.obj));
    lua_setfield(L, -2, "in_flight");
    return 1;
}

static void push_topic(void *ud, const sluice_topic_counts *t)
{
    lua_State *L = ud;
    lua_createtable(L, 0, 5);
    lua_pushstring(L, t->topic);
    lua_setfield(L, -2, "topic");
    sluice_lua_setint(L, "produced", (lua_Integer)t->sent);
    sluice_lua_setint(L, "delivered", (lua_Integer)t->delivered);
    sluice_lua_setint(L, "delivery_failed", (lua_Integer)t->failed);
    lua_createtable(L, (int)t->nerrors, 0);
    for (size_t i = 0; i < t->nerrors; i++) {
        lua_createtable(L, 0, 3);
        lua_pushstring(L, t->errors[i].name);
        lua_setfield(L, -2, "code");
        lua_pushboolean(L, t->errors[i].refused);
        lua_setfield(L, -2, "refused");
        sluice_lua_setint(L, "count", (lua_Integer)t->errors[i].count);
        lua_rawseti(L, -2, (int)i + 1);
    }
    lua_setfield(L, -2, "errors");
    sluice_lua_append(L);
}

/* producer:topics() → { { topic, produced, delivered, delivery_failed,
 * errors = { { code, refused, count }, ... } }, ... } */
static int producer_topics(lua_State *L)
{
    lua_producer *p = sluice_lua_handle_check(L, 1, &sluice_lua_producer_type);
    lua_newtable(L);
    sluice_producer_topics(p->h.obj, push_topic, L);
    return 1;
}

/* producer:statistics() → librdkafka's last statistics (JSON) or nil */
static int producer_statistics(lua_State *L)
{
    lua_producer *p = sluice_lua_handle_check(L, 1, &sluice_lua_producer_type);
    const char *json = sluice_producer_statistics(p->h.obj);
    if (json) lua_pushstring(L, json);
    else lua_pushnil(L);
    return 1;
}

/* producer:config(name) → the value librdkafka runs with | nil, err, code */
static int producer_config(lua_State *L)
{
    lua_producer *p = sluice_lua_handle_check(L, 1, &sluice_lua_producer_type);
    char value[512], err[256] = "";
    int rc = sluice_producer_conf_get(p->h.obj, luaL_checkstring(L, 2), value, sizeof value,
                                      err, sizeof err);
    if (rc) return sluice_lua_fail_core(L, rc, err);
    lua_pushstring(L, value);
    return 1;
}

struct sluice_producer *sluice_lua_producer_obj(sluice_lua_handle *h)
{
    return h->obj;
}

void sluice_lua_producer_count_sent(sluice_lua_handle *h)
{
    ((lua_producer *)h)->sent++;
}

static const char *const txn_ops[] = { "init", "commit", "abort", NULL };

static void on_txn(void *ud, const sluice_txn_result *r)
{
    lua_producer *p = ud;
    lua_State *L;
    if (!sluice_lua_handle_callback(&p->h, TXN)) return;
    L = p->h.ctx->L;
    if (r->error) {
        lua_pushfstring(L, "%s: %s", r->error_name, r->error_text);
        lua_pushstring(L, r->error_name);
        lua_pushstring(L, r->fatal ? "fatal" : r->abortable ? "abortable" : "retriable");
    } else {
        lua_pushnil(L);
        lua_pushnil(L);
        lua_pushnil(L);
    }
    sluice_lua_call(p->h.ctx, 3, 0, "transaction callback");
}

/* producer:transaction(op, { consumer =, offsets =, timeout = ms }, callback)
 * → true | nil, err, code. A producer with transactional.id only. op:
 * "init", "commit" (offsets = { [topic] = { [partition] = next offset } }
 * read by `consumer`, committed in the transaction) or "abort"; each
 * begins the next transaction when it succeeds. callback(err, code, kind)
 * runs once on the loop when it is done: err nil, or kind "abortable",
 * "fatal" or "retriable". */
static int producer_transaction(lua_State *L)
{
    lua_producer *p = sluice_lua_handle_check(L, 1, &sluice_lua_producer_type);
    int op = luaL_checkoption(L, 2, NULL, txn_ops);
    sluice_consumer *group = NULL;
    sluice_partition *offsets;
    size_t n = 0;
    int timeout, rc;
    char err[512] = "";

    sluice_lua_opt_table(L, 3);
    luaL_checktype(L, 4, LUA_TFUNCTION);
    lua_settop(L, 4);
    timeout = (int)sluice_lua_opt_int(L, 3, "timeout", 30000, 1, INT_MAX);
    lua_getfield(L, 3, "consumer");                                /* 5 */
    if (!lua_isnil(L, 5)) group = sluice_lua_handle_obj(L, 5, &sluice_lua_consumer_type);
    lua_getfield(L, 3, "offsets");                                 /* 6 */
    offsets = sluice_lua_read_offsets(L, 6, 3, &n);
    rc = sluice_producer_txn(p->h.obj, (sluice_txn_op)op, group, offsets, n, timeout,
                             on_txn, p, err, sizeof err);
    if (rc == 0) {
        sluice_lua_unref(L, &p->h.refs[TXN]);
        sluice_lua_handle_set(L, &p->h, TXN, 4);
    }
    return sluice_lua_result(L, rc, err);
}

/* producer:transaction_wait([timeout_ms]) → true once no transaction
 * operation runs (its callback was called), false on timeout. Delivery
 * reports are served meanwhile: for a rebalance callback, where the loop
 * cannot run. */
static int producer_transaction_wait(lua_State *L)
{
    lua_producer *p = sluice_lua_handle_check(L, 1, &sluice_lua_producer_type);
    int ms = (int)luaL_optinteger(L, 2, 30000);
    lua_pushboolean(L, sluice_producer_txn_wait(p->h.obj, ms));
    return 1;
}

/* close/__close: messages still in flight are reported failed to their
 * callbacks (flush first to avoid that). __gc: the same without Lua. */
static void producer_free(void *p) { sluice_producer_free(p); }

static const luaL_Reg methods[] = {
    { "send", producer_send }, { "in_flight", producer_in_flight }, { "flush", producer_flush },
    { "stats", producer_stats }, { "config", producer_config }, { "topics", producer_topics },
    { "statistics", producer_statistics }, { "transaction", producer_transaction },
    { "transaction_wait", producer_transaction_wait }, { NULL, NULL }
};
static const luaL_Reg functions[] = { { "producer", producer_new }, { NULL, NULL } };

const sluice_lua_type sluice_lua_producer_type = {
    .name = "sluice.producer", .free = producer_free, .collect = producer_collect,
    .closable = 1, .methods = methods, .functions = functions,
};
