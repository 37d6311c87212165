/* sluice.consumer: a Kafka group consumer calling a Lua function per
 * record, or (batch = true) once per batch with a list of records. The
 * offsets are stored when the function returns. assign = true: no group,
 * every partition of the topics (see sluice_consumer_config.assign). */
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "sluice_lua.h"
#include "sluice/kafka.h"

enum { RECORD, REBALANCE, ERROR };   /* refs */

typedef struct lua_consumer {
    sluice_lua_handle h;         /* h.obj: the sluice_consumer; anchored
                                  * while open: it has callbacks */
    int close_timeout_ms;        /* for the next close; -1: the core's default */
    double consumed;
} lua_consumer;

/* Commit and leave the group (revocation reaches Lua unless collected),
 * giving up after close_timeout_ms. */
static void consumer_close_hook(lua_State *L, sluice_lua_handle *h)
{
    (void)L;
    if (h->obj) sluice_consumer_close(h->obj, ((lua_consumer *)h)->close_timeout_ms);
}

static void push_bytes_or_nil(lua_State *L, const void *p, size_t len)
{
    if (p) lua_pushlstring(L, p, len);
    else lua_pushnil(L);
}

/* A record as a table: topic, partition, offset, key, value, timestamp,
 * headers. */
void sluice_lua_push_record(lua_State *L, const sluice_record *r)
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

/* Appends the record to the list on top of the stack of ud (a list_ctx). */
typedef struct list_ctx { lua_State *L; int n; } list_ctx;

static void append_record(void *ud, const sluice_record *r)
{
    list_ctx *lc = ud;
    sluice_lua_push_record(lc->L, r);
    lua_rawseti(lc->L, -2, ++lc->n);
}

static void on_record(void *ud, sluice_consumer *sc, const sluice_record *r)
{
    lua_consumer *c = ud;
    (void)sc;
    c->consumed++;
    if (!sluice_lua_handle_callback(&c->h, RECORD)) return;
    sluice_lua_push_record(c->h.ctx->L, r);
    sluice_lua_call(c->h.ctx, 1, 0, "consume handler");
}

/* batch = true: one call with the list of records. */
static void on_records(void *ud, sluice_consumer *sc, const sluice_record *rs, size_t n)
{
    lua_consumer *c = ud;
    list_ctx list = { c->h.ctx->L, 0 };
    (void)sc;
    c->consumed += (double)n;
    if (!sluice_lua_handle_callback(&c->h, RECORD)) return;
    lua_createtable(list.L, (int)n, 0);
    for (size_t i = 0; i < n; i++) append_record(&list, &rs[i]);
    sluice_lua_call(c->h.ctx, 1, 0, "consume handler");
}

static void on_rebalance(void *ud, sluice_consumer *sc, int assigned,
                         const sluice_partition *parts, size_t n)
{
    lua_consumer *c = ud;
    lua_State *L = c->h.ctx->L;
    (void)sc;
    if (!sluice_lua_handle_callback(&c->h, REBALANCE)) return;
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
    sluice_lua_call(c->h.ctx, 2, 0, "rebalance handler");
}

static void on_error(void *ud, const char *name, const char *text, int fatal)
{
    sluice_lua_kafka_error(ud, ERROR, "consumer", name, text, fatal);
}

/* offsets = { [topic] = { [partition] = offset, ... }, ... } at idx, as a
 * list in a userdata (anchored on the stack); strings anchored by the table. */
sluice_partition *sluice_lua_read_offsets(lua_State *L, int idx, int arg, size_t *n)
{
    sluice_partition *list;
    size_t count = 0, at = 0;
    *n = 0;
    if (lua_isnil(L, idx)) return NULL;
    luaL_argcheck(L, lua_istable(L, idx), arg, "'offsets' must be a table of topic = { [partition] = offset }");
    for (int pass = 0; pass < 2; pass++) {
        list = pass ? lua_newuserdata(L, (count ? count : 1) * sizeof *list) : NULL;
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            if (lua_type(L, -2) != LUA_TSTRING || !lua_istable(L, -1))
                luaL_argerror(L, arg, "'offsets' must be a table of topic = { [partition] = offset }");
            lua_pushnil(L);
            while (lua_next(L, -2)) {
                lua_Number p = lua_type(L, -2) == LUA_TNUMBER ? lua_tonumber(L, -2) : -1;
                lua_Number o = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : -1;
                if (!(p >= 0 && p <= INT32_MAX && p == (lua_Integer)p && o >= 0 && o == (lua_Integer)o))
                    luaL_argerror(L, arg, "'offsets': partitions and offsets must be integers >= 0");
                if (pass) {
                    list[at].topic = lua_tostring(L, -4);
                    list[at].partition = (int32_t)p;
                    list[at++].offset = (int64_t)o;
                } else count++;
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
        }
    }
    *n = count;
    return list;
}

/* core.consumer(loop, { props = {...}, topics = {...}, start = n,
 *                       manual = bool, batch = bool, assign = bool,
 *                       start_time = ms, offsets = {...}, refresh = ms },
 *               { record = fn(rec) (batch: fn(list)), rebalance = fn(event, parts),
 *                 error = fn }) */
static int consumer_new(lua_State *L)
{
    sluice_consumer_config cfg;
    lua_consumer *c;
    sluice_consumer *consumer = NULL;
    const char **topics;
    size_t ntopics;
    char err[512] = "";
    int rc;

    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
    memset(&cfg, 0, sizeof cfg);
    cfg.assign = sluice_lua_opt_flag(L, 2, "assign", 0);
    cfg.start = (int64_t)sluice_lua_opt_int(L, 2, "start",
                                            cfg.assign ? SLUICE_FROM_LATEST : SLUICE_FROM_COMMITTED,
                                            SLUICE_FROM_EARLIEST, (lua_Integer)9007199254740992LL);
    cfg.start_time_ms = (int64_t)sluice_lua_opt_int(L, 2, "start_time", -1, 0,
                                                    (lua_Integer)9007199254740992LL);
    if (cfg.start_time_ms >= 0) cfg.start = SLUICE_FROM_TIME;
    cfg.refresh_ms = (int)sluice_lua_opt_int(L, 2, "refresh", 0, 1, INT_MAX);
    cfg.manual_store = sluice_lua_opt_flag(L, 2, "manual", 0);
    if (sluice_lua_opt_flag(L, 2, "batch", 0)) cfg.on_records = on_records;
    lua_getfield(L, 2, "props");                       /* 4 */
    cfg.props = sluice_lua_string_pairs(L, 4, "kafka properties");   /* 5 */
    lua_getfield(L, 2, "topics");                      /* 6 */
    luaL_argcheck(L, lua_istable(L, 6), 2, "'topics' must be a list of names");
    ntopics = sluice_rawlen(L, 6);
    luaL_argcheck(L, ntopics > 0, 2, "'topics' is empty");
    topics = lua_newuserdata(L, (ntopics + 1) * sizeof *topics);    /* 7 */
    for (size_t i = 0; i < ntopics; i++) {
        lua_rawgeti(L, 6, (int)i + 1);
        if (lua_type(L, -1) != LUA_TSTRING) luaL_argerror(L, 2, "topic names must be strings");
        topics[i] = lua_tostring(L, -1);               /* anchored by the list */
        lua_pop(L, 1);
    }
    topics[ntopics] = NULL;
    cfg.topics = topics;
    lua_getfield(L, 2, "offsets");                     /* 8 */
    cfg.start_offsets = sluice_lua_read_offsets(L, 8, 2, &cfg.start_offsets_n);   /* 9 if any */

    c = sluice_lua_handle_new(L, &sluice_lua_consumer_type, sizeof *c, 1);
    c->close_timeout_ms = -1;
    sluice_lua_handle_ref(L, &c->h, RECORD, 3, "record", 1);
    sluice_lua_handle_ref(L, &c->h, REBALANCE, 3, "rebalance", 0);
    sluice_lua_handle_ref(L, &c->h, ERROR, 3, "error", 0);
    cfg.on_record = on_record;
    cfg.on_rebalance = on_rebalance;
    cfg.on_error = on_error;
    cfg.ud = c;
    rc = sluice_consumer_new(c->h.ctx->loop, &cfg, &consumer, err, sizeof err);
    if (rc) return sluice_lua_handle_fail(L, &c->h, rc, err);
    c->h.obj = consumer;
    sluice_lua_handle_anchor(L, &c->h);
    return 1;
}

static int set_paused(lua_State *L, int paused)
{
    sluice_consumer *c = sluice_lua_handle_obj(L, 1, &sluice_lua_consumer_type);
    return sluice_lua_result(L, sluice_consumer_pause(c, paused), NULL);
}

static int consumer_pause(lua_State *L) { return set_paused(L, 1); }
static int consumer_resume(lua_State *L) { return set_paused(L, 0); }

static int consumer_commit(lua_State *L)
{
    sluice_consumer *c = sluice_lua_handle_obj(L, 1, &sluice_lua_consumer_type);
    char err[256] = "";
    return sluice_lua_result(L, sluice_consumer_commit(c, lua_toboolean(L, 2), err, sizeof err), err);
}

/* (topic, partition, offset) at 2..4, checked. */
static const char *check_position(lua_State *L, int32_t *partition, int64_t *offset)
{
    const char *topic = luaL_checkstring(L, 2);
    lua_Integer p = luaL_checkinteger(L, 3);
    lua_Integer o = luaL_checkinteger(L, 4);
    luaL_argcheck(L, p >= 0 && p <= INT32_MAX, 3, "invalid partition");
    luaL_argcheck(L, o >= 0, 4, "invalid offset");
    *partition = (int32_t)p;
    *offset = (int64_t)o;
    return topic;
}

/* consumer:store(topic, partition, offset): with `manual = true`, marks
 * the record at offset (and all before it) processed; committed next. */
static int consumer_store(lua_State *L)
{
    sluice_consumer *c = sluice_lua_handle_obj(L, 1, &sluice_lua_consumer_type);
    int32_t partition;
    int64_t offset;
    const char *topic = check_position(L, &partition, &offset);
    char err[256] = "";
    return sluice_lua_result(L, sluice_consumer_store(c, topic, partition, offset, err, sizeof err), err);
}

/* consumer:seek(topic, partition, offset): records handed out from now on
 * start at offset (an aborted transaction's input is read again). */
static int consumer_seek(lua_State *L)
{
    sluice_consumer *c = sluice_lua_handle_obj(L, 1, &sluice_lua_consumer_type);
    int32_t partition;
    int64_t offset;
    const char *topic = check_position(L, &partition, &offset);
    char err[256] = "";
    return sluice_lua_result(L, sluice_consumer_seek(c, topic, partition, offset, err, sizeof err), err);
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
    list_ctx list;

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
    list.L = L;
    list.n = 0;
    rc = sluice_kafka_read_partitions(props, topic, parts, n, append_record, &list, timeout, err, sizeof err);
    if (rc) return sluice_lua_fail_core(L, rc, err);
    return 1;
}

static int consumer_consumed(lua_State *L)
{
    lua_consumer *c = sluice_lua_handle_get(L, 1, &sluice_lua_consumer_type);
    lua_pushinteger(L, (lua_Integer)c->consumed);
    return 1;
}

static void push_lag(void *ud, const sluice_partition_lag *l)
{
    lua_State *L = ud;
    lua_createtable(L, 0, 4);
    lua_pushstring(L, l->topic);
    lua_setfield(L, -2, "topic");
    lua_pushinteger(L, l->partition);
    lua_setfield(L, -2, "partition");
    sluice_lua_setint(L, "position", (lua_Integer)l->position);
    sluice_lua_setint(L, "high", (lua_Integer)l->high);
    sluice_lua_append(L);
}

/* consumer:lag() → { { topic, partition, position, high }, ... } (-1:
 * not known yet), one per assigned partition; nothing is asked of Kafka */
static int consumer_lag(lua_State *L)
{
    sluice_consumer *c = sluice_lua_handle_obj(L, 1, &sluice_lua_consumer_type);
    lua_newtable(L);
    sluice_consumer_lag(c, push_lag, L);
    return 1;
}

/* consumer:close([timeout_ms]) (__close gets the pending error as its
 * second argument, not a timeout: it is the shared close). */
static int consumer_close(lua_State *L)
{
    lua_consumer *c = sluice_lua_handle_get(L, 1, &sluice_lua_consumer_type);
    lua_Integer ms = luaL_optinteger(L, 2, -1);
    c->close_timeout_ms = ms < 0 ? -1 : ms > INT_MAX ? INT_MAX : (int)ms;
    sluice_lua_handle_close(L, &c->h);
    return 0;
}

static const luaL_Reg methods[] = {
    { "pause", consumer_pause }, { "resume", consumer_resume }, { "commit", consumer_commit },
    { "consumed", consumer_consumed }, { "store", consumer_store }, { "close", consumer_close },
    { "lag", consumer_lag }, { "seek", consumer_seek },
    { NULL, NULL }
};
static const luaL_Reg functions[] = {
    { "consumer", consumer_new }, { "read_partitions", read_partitions }, { NULL, NULL }
};

const sluice_lua_type sluice_lua_consumer_type = {
    .name = "sluice.consumer", .close = consumer_close_hook, .closable = 1,
    .methods = methods, .functions = functions,
};
