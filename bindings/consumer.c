/* sluice.consumer: a Kafka group consumer calling a Lua function per
 * record, or (batch = true) once per batch with a list of records. The
 * offsets are stored when the function returns. */
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "sluice_lua.h"
#include "sluice/kafka.h"

typedef struct lua_consumer {
    sluice_consumer *consumer;   /* NULL once closed */
    sluice_lua_owner owner;
    int record_ref, rebalance_ref, error_ref;
    int self_ref;                /* anchored while open: it has callbacks */
    int closing_from_gc;
    double consumed;
} lua_consumer;

static lua_consumer *check_consumer(lua_State *L)
{
    lua_consumer *c = luaL_checkudata(L, 1, SLUICE_CONSUMER_MT);
    if (c->consumer == NULL) luaL_error(L, "attempt to use a closed %s", SLUICE_CONSUMER_MT);
    c->owner.ctx->L = L;
    return c;
}

static void push_bytes_or_nil(lua_State *L, const void *p, size_t len)
{
    if (p) lua_pushlstring(L, p, len);
    else lua_pushnil(L);
}

static void push_record(lua_State *L, const sluice_record *r)
{
    lua_createtable(L, 0, 7);
    lua_pushstring(L, r->topic);
    lua_setfield(L, -2, "topic");
    lua_pushinteger(L, r->partition);
    lua_setfield(L, -2, "partition");
    lua_pushinteger(L, (lua_Integer)r->offset);
    lua_setfield(L, -2, "offset");
    push_bytes_or_nil(L, r->key, r->key_len);
    lua_setfield(L, -2, "key");
    push_bytes_or_nil(L, r->value, r->value_len);
    lua_setfield(L, -2, "value");
    lua_pushinteger(L, (lua_Integer)r->timestamp_ms);
    lua_setfield(L, -2, "timestamp");
    lua_createtable(L, 0, (int)r->header_count);
    for (size_t i = 0; i < r->header_count; i++) {
        push_bytes_or_nil(L, r->headers[i].value, r->headers[i].value_len);
        lua_setfield(L, -2, r->headers[i].name);
    }
    lua_setfield(L, -2, "headers");
}

static void on_record(void *ud, sluice_consumer *sc, const sluice_record *r)
{
    lua_consumer *c = ud;
    sluice_lua_loop *ctx = c->owner.ctx;
    lua_State *L = ctx->L;
    (void)sc;
    c->consumed++;
    if (c->closing_from_gc || !sluice_lua_pushref(L, c->record_ref)) return;
    push_record(L, r);
    sluice_lua_call(ctx, 1, 0, "consume handler");
}

/* batch = true: one call with the list of records (.n = its length). */
static void on_records(void *ud, sluice_consumer *sc, const sluice_record *rs, size_t n)
{
    lua_consumer *c = ud;
    sluice_lua_loop *ctx = c->owner.ctx;
    lua_State *L = ctx->L;
    (void)sc;
    c->consumed += (double)n;
    if (c->closing_from_gc || !sluice_lua_pushref(L, c->record_ref)) return;
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        push_record(L, &rs[i]);
        lua_rawseti(L, -2, (int)i + 1);
    }
    sluice_lua_call(ctx, 1, 0, "consume handler");
}

static void on_rebalance(void *ud, sluice_consumer *sc, int assigned,
                         const sluice_partition *parts, size_t n)
{
    lua_consumer *c = ud;
    sluice_lua_loop *ctx = c->owner.ctx;
    lua_State *L = ctx->L;
    (void)sc;
    if (c->closing_from_gc || !sluice_lua_pushref(L, c->rebalance_ref)) return;
    lua_pushstring(L, assigned ? "assigned" : "revoked");
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_createtable(L, 0, 3);
        lua_pushstring(L, parts[i].topic);
        lua_setfield(L, -2, "topic");
        lua_pushinteger(L, parts[i].partition);
        lua_setfield(L, -2, "partition");
        lua_pushinteger(L, (lua_Integer)parts[i].offset);
        lua_setfield(L, -2, "offset");
        lua_rawseti(L, -2, (int)i + 1);
    }
    sluice_lua_call(ctx, 2, 0, "rebalance handler");
}

static void on_error(void *ud, const char *name, const char *text, int fatal)
{
    lua_consumer *c = ud;
    if (c->closing_from_gc) return;
    sluice_lua_kafka_error(c->owner.ctx, c->error_ref, "consumer", name, text, fatal);
}

static void release(lua_State *L, lua_consumer *c)
{
    sluice_lua_unref(L, &c->record_ref);
    sluice_lua_unref(L, &c->rebalance_ref);
    sluice_lua_unref(L, &c->error_ref);
    sluice_lua_unref(L, &c->self_ref);
    sluice_lua_disown(L, &c->owner);
}

/* core.consumer(loop, { props = {...}, topics = {...}, start = n,
 *                       manual = bool, batch = bool },
 *               { record = fn(rec) (batch: fn(list)), rebalance = fn(event, parts),
 *                 error = fn }) */
static int consumer_new(lua_State *L)
{
    sluice_consumer_config cfg;
    lua_consumer *c;
    const char **topics;
    size_t ntopics;
    char err[512] = "";
    int rc;

    sluice_lua_checkloop(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
    memset(&cfg, 0, sizeof cfg);
    lua_getfield(L, 2, "start");                       /* 4 */
    cfg.start = (int64_t)luaL_optnumber(L, 4, SLUICE_FROM_COMMITTED);
    lua_getfield(L, 2, "manual");
    cfg.manual_store = lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, 2, "batch");
    if (lua_toboolean(L, -1)) cfg.on_records = on_records;
    lua_pop(L, 1);
    lua_getfield(L, 2, "props");                       /* 5 */
    cfg.props = sluice_lua_string_pairs(L, 5, "kafka properties");   /* 6 */
    lua_getfield(L, 2, "topics");                      /* 7 */
    luaL_argcheck(L, lua_istable(L, 7), 2, "'topics' must be a list of names");
    ntopics = sluice_rawlen(L, 7);
    luaL_argcheck(L, ntopics > 0, 2, "'topics' is empty");
    topics = lua_newuserdata(L, (ntopics + 1) * sizeof *topics);    /* 8 */
    for (size_t i = 0; i < ntopics; i++) {
        lua_rawgeti(L, 7, (int)i + 1);
        if (lua_type(L, -1) != LUA_TSTRING) luaL_argerror(L, 2, "topic names must be strings");
        topics[i] = lua_tostring(L, -1);               /* anchored by the list */
        lua_pop(L, 1);
    }
    topics[ntopics] = NULL;
    cfg.topics = topics;

    c = sluice_newuserdata(L, sizeof *c);
    memset(c, 0, sizeof *c);
    c->record_ref = c->rebalance_ref = c->error_ref = c->self_ref = LUA_NOREF;
    c->owner.loop_ref = LUA_NOREF;
    luaL_getmetatable(L, SLUICE_CONSUMER_MT);
    lua_setmetatable(L, -2);
    sluice_lua_own(L, 1, &c->owner);
    c->owner.ctx->L = L;
    c->record_ref = sluice_lua_function_ref(L, 3, "record", 1);
    c->rebalance_ref = sluice_lua_function_ref(L, 3, "rebalance", 0);
    c->error_ref = sluice_lua_function_ref(L, 3, "error", 0);
    cfg.on_record = on_record;
    cfg.on_rebalance = on_rebalance;
    cfg.on_error = on_error;
    cfg.ud = c;
    rc = sluice_consumer_new(c->owner.ctx->loop, &cfg, &c->consumer, err, sizeof err);
    if (rc) {
        release(L, c);
        return sluice_lua_fail_core(L, rc, err);
    }
    lua_pushvalue(L, -1);
    c->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 1;
}

static int set_paused(lua_State *L, int paused)
{
    lua_consumer *c = check_consumer(L);
    int rc = sluice_consumer_pause(c->consumer, paused);
    if (rc) return sluice_lua_fail_core(L, rc, NULL);
    lua_pushboolean(L, 1);
    return 1;
}

static int consumer_pause(lua_State *L) { return set_paused(L, 1); }
static int consumer_resume(lua_State *L) { return set_paused(L, 0); }

static int consumer_commit(lua_State *L)
{
    lua_consumer *c = check_consumer(L);
    char err[256] = "";
    int rc = sluice_consumer_commit(c->consumer, lua_toboolean(L, 2), err, sizeof err);
    if (rc) return sluice_lua_fail_core(L, rc, err);
    lua_pushboolean(L, 1);
    return 1;
}

/* consumer:store(topic, partition, offset): with `manual = true`, marks
 * the record at offset (and all before it) processed; committed next. */
static int consumer_store(lua_State *L)
{
    lua_consumer *c = check_consumer(L);
    const char *topic = luaL_checkstring(L, 2);
    lua_Integer partition = luaL_checkinteger(L, 3);
    lua_Integer offset = luaL_checkinteger(L, 4);
    char err[256] = "";
    int rc;
    luaL_argcheck(L, partition >= 0 && partition <= INT32_MAX, 3, "invalid partition");
    luaL_argcheck(L, offset >= 0, 4, "invalid offset");
    rc = sluice_consumer_store(c->consumer, topic, (int32_t)partition, (int64_t)offset, err, sizeof err);
    if (rc) return sluice_lua_fail_core(L, rc, err);
    lua_pushboolean(L, 1);
    return 1;
}

/* Appends each record to the list on top of ctx's stack. */
typedef struct read_ctx { lua_State *L; int n; } read_ctx;

static void read_one(void *ud, const sluice_record *r)
{
    read_ctx *rc = ud;
    lua_State *L = rc->L;
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, r->partition);
    lua_setfield(L, -2, "partition");
    lua_pushinteger(L, (lua_Integer)r->offset);
    lua_setfield(L, -2, "offset");
    push_bytes_or_nil(L, r->key, r->key_len);
    lua_setfield(L, -2, "key");
    push_bytes_or_nil(L, r->value, r->value_len);
    lua_setfield(L, -2, "value");
    lua_pushinteger(L, (lua_Integer)r->timestamp_ms);
    lua_setfield(L, -2, "timestamp");
    lua_rawseti(L, -2, ++rc->n);
}

/* core.read_partitions(props, topic, {partition...} [, timeout_ms]) →
 * list of {partition, offset, key, value, timestamp} from each partition's
 * start to its end at the time of the call (blocking; no group joined). */
static int read_partitions(lua_State *L)
{
    const char **props;
    const char *topic;
    size_t n;
    int32_t *parts;
    int timeout, rc;
    char err[512] = "";
    read_ctx ctx;

    luaL_checktype(L, 1, LUA_TTABLE);
    topic = luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    timeout = (int)luaL_optinteger(L, 4, 30000);
    lua_settop(L, 4);
    props = sluice_lua_string_pairs(L, 1, "kafka properties");   /* 5 */
    n = sluice_rawlen(L, 3);
    parts = lua_newuserdata(L, (n ? n : 1) * sizeof *parts);     /* 6 */
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, 3, (int)i + 1);
        if (!lua_isnumber(L, -1)) luaL_argerror(L, 3, "partitions must be numbers");
        parts[i] = (int32_t)lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    lua_newtable(L);                                              /* 7 */
    ctx.L = L;
    ctx.n = 0;
    rc = sluice_kafka_read_partitions(props, topic, parts, n, read_one, &ctx, timeout, err, sizeof err);
    if (rc) return sluice_lua_fail_core(L, rc, err);
    return 1;
}

static int consumer_consumed(lua_State *L)
{
    lua_consumer *c = luaL_checkudata(L, 1, SLUICE_CONSUMER_MT);
    lua_pushinteger(L, (lua_Integer)c->consumed);
    return 1;
}

/* close/__close commit and leave the group (revocation reaches Lua),
 * giving up after timeout_ms (-1: the core's default); __gc does the same
 * without calling Lua. */
static int consumer_close_within(lua_State *L, int timeout_ms)
{
    lua_consumer *c = luaL_checkudata(L, 1, SLUICE_CONSUMER_MT);
    if (c->consumer == NULL) return 0;
    c->owner.ctx->L = L;
    sluice_consumer_close(c->consumer, timeout_ms);
    c->consumer = NULL;
    release(L, c);
    return 0;
}

/* consumer:close([timeout_ms]) */
static int consumer_close(lua_State *L)
{
    lua_Integer ms = luaL_optinteger(L, 2, -1);
    return consumer_close_within(L, ms < 0 ? -1 : ms > INT_MAX ? INT_MAX : (int)ms);
}

/* __close gets the pending error as its second argument, not a timeout. */
static int consumer_close_meta(lua_State *L)
{
    return consumer_close_within(L, -1);
}

static int consumer_gc(lua_State *L)
{
    lua_consumer *c = luaL_checkudata(L, 1, SLUICE_CONSUMER_MT);
    c->closing_from_gc = 1;
    return consumer_close_within(L, -1);
}

void sluice_lua_open_consumer(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "pause", consumer_pause },
        { "resume", consumer_resume },
        { "commit", consumer_commit },
        { "consumed", consumer_consumed },
        { "store", consumer_store },
        { "close", consumer_close },
        { NULL, NULL }
    };
    static const luaL_Reg meta[] = {
        { "__gc", consumer_gc },
        { "__close", consumer_close_meta },
        { NULL, NULL }
    };
    sluice_lua_newclass(L, SLUICE_CONSUMER_MT, methods, meta);
    lua_pushcfunction(L, consumer_new);
    lua_setfield(L, -2, "consumer");
    lua_pushcfunction(L, read_partitions);
    lua_setfield(L, -2, "read_partitions");
}
