/* sluice.producer: a librdkafka producer. Each send may carry a Lua
 * function (and one value passed back to it) called with the delivery
 * report. The function is held in a table of the producer under a ref
 * whose number travels through librdkafka as the message opaque.
 *
 * Reports are collected as they arrive and handed to Lua in one call per
 * batch (one wake-up of the producer): a small Lua loop calls each
 * callback. The C->Lua crossing, the protected call and its limits are
 * paid once per batch, and the loop can be JIT-compiled; an error in one
 * callback is reported like before and the loop resumes after it. */
#include <stdint.h>
#include <string.h>

#include "sluice_lua.h"
#include "sluice/kafka.h"

typedef struct lua_producer {
    sluice_producer *producer;   /* NULL once closed */
    sluice_lua_owner owner;
    int pressure_ref, error_ref;
    int closing_from_gc;
    double sent, delivered, failed;
    /* Registry refs to tables of this producer, kept until __gc: reports
     * purged by a close begun inside a callback still arrive after it. */
    int cbs_ref;      /* ref → callback of the records in flight */
    int args_ref;     /* ref → the value to pass it (when one was given) */
    int batch_ref;    /* reports collected: callback, err, report, arg per entry */
    int dispatch_ref; /* the Lua loop calling a batch's callbacks */
    lua_Integer batch_n;
    int in_dispatch;
} lua_producer;

/* The opaque: ref * 2, + 1 when a value for the callback was given. */
#define OPAQUE_NONE ((intptr_t)-1)

/* dispatch(batch, i, n): calls entries i..n of batch. batch[0] names the
 * entry being called, so that after an error the caller resumes past it.
 * Entries are cleared before their call: nothing is kept alive by a
 * finished batch and nothing is called twice. */
static const char dispatch_source[] =
    "return function(batch, i, n)\n"
    "  while i <= n do\n"
    "    batch[0] = i\n"
    "    local j = i * 4\n"
    "    local f, err, report, arg = batch[j - 3], batch[j - 2], batch[j - 1], batch[j]\n"
    "    batch[j - 3], batch[j - 2], batch[j - 1], batch[j] = nil, nil, nil, nil\n"
    "    f(err, report, arg)\n"
    "    i = i + 1\n"
    "  end\n"
    "end\n";

static lua_producer *check_producer(lua_State *L)
{
    lua_producer *p = luaL_checkudata(L, 1, SLUICE_PRODUCER_MT);
    if (p->producer == NULL) luaL_error(L, "attempt to use a closed %s", SLUICE_PRODUCER_MT);
    p->owner.ctx->L = L;
    return p;
}

/* Appends the report to the batch; on_delivery_end hands it to Lua. */
static void on_delivery(void *ud, void *opaque, const sluice_delivery *d)
{
    lua_producer *p = ud;
    sluice_lua_loop *ctx = p->owner.ctx;
    lua_State *L = ctx->L;
    intptr_t op = (intptr_t)opaque;
    int ref = (int)(op >> 1), base;

    if (d->error) p->failed++; else p->delivered++;
    if (op == OPAQUE_NONE || p->closing_from_gc) return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->batch_ref);
    base = (int)(p->batch_n++ * 4);
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->cbs_ref);
    lua_rawgeti(L, -1, ref);
    lua_rawseti(L, -3, base + 1);
    luaL_unref(L, -1, ref);
    lua_pop(L, 1);
    if (op & 1) {
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
    sluice_lua_loop *ctx = p->owner.ctx;
    lua_State *L = ctx->L;
    lua_Integer done = 0;
    int failed_any = 0;

    if (p->closing_from_gc || p->in_dispatch || p->batch_n == 0) return;
    p->in_dispatch = 1;
    while (done < p->batch_n) {
        lua_Integer n = p->batch_n;
        lua_rawgeti(L, LUA_REGISTRYINDEX, p->dispatch_ref);
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
    sluice_lua_loop *ctx = p->owner.ctx;
    if (p->closing_from_gc || !sluice_lua_pushref(ctx->L, p->pressure_ref)) return;
    lua_pushboolean(ctx->L, high);
    sluice_lua_call(ctx, 1, 0, "pressure callback");
}

static void on_error(void *ud, const char *name, const char *text, int fatal)
{
    lua_producer *p = ud;
    if (p->closing_from_gc) return;
    sluice_lua_kafka_error(p->owner.ctx, p->error_ref, "producer", name, text, fatal);
}

/* core.producer(loop, { props = {...}, high_water =, low_water = },
 *               { pressure = fn(high), error = fn(msg, fatal) }) */
static int producer_new(lua_State *L)
{
    sluice_producer_config cfg;
    lua_producer *p;
    char err[512] = "";
    int rc;

    sluice_lua_checkloop(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
    if (lua_isnil(L, 3)) { lua_newtable(L); lua_replace(L, 3); }
    memset(&cfg, 0, sizeof cfg);
    lua_getfield(L, 2, "high_water");
    cfg.high_water = (size_t)luaL_optnumber(L, -1, 0);
    lua_getfield(L, 2, "low_water");
    cfg.low_water = (size_t)luaL_optnumber(L, -1, 0);
    lua_getfield(L, 2, "props");                      /* index 6 */
    cfg.props = sluice_lua_string_pairs(L, 6, "kafka properties");

    p = sluice_newuserdata(L, sizeof *p);
    memset(p, 0, sizeof *p);
    p->pressure_ref = p->error_ref = LUA_NOREF;
    p->cbs_ref = p->args_ref = p->batch_ref = p->dispatch_ref = LUA_NOREF;
    p->owner.loop_ref = LUA_NOREF;
    luaL_getmetatable(L, SLUICE_PRODUCER_MT);
    lua_setmetatable(L, -2);
    sluice_lua_own(L, 1, &p->owner);
    p->owner.ctx->L = L;
    p->pressure_ref = sluice_lua_function_ref(L, 3, "pressure", 0);
    p->error_ref = sluice_lua_function_ref(L, 3, "error", 0);
    lua_newtable(L);
    p->cbs_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_newtable(L);
    p->args_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_createtable(L, 64, 0);
    p->batch_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (luaL_loadbuffer(L, dispatch_source, sizeof dispatch_source - 1, "=sluice.producer.dispatch") != 0)
        return lua_error(L);   /* cannot happen: the source is ours */
    lua_call(L, 0, 1);
    p->dispatch_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    cfg.on_delivery = on_delivery;
    cfg.on_delivery_end = on_delivery_end;
    cfg.on_pressure = on_pressure;
    cfg.on_error = on_error;
    cfg.ud = p;
    rc = sluice_producer_new(p->owner.ctx->loop, &cfg, &p->producer, err, sizeof err);
    if (rc) {
        sluice_lua_unref(L, &p->pressure_ref);
        sluice_lua_unref(L, &p->error_ref);
        sluice_lua_disown(L, &p->owner);
        return sluice_lua_fail_core(L, rc, err);
    }
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
    lua_producer *p = check_producer(L);
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
        opaque = ((intptr_t)ref << 1) | has_arg;
    }
    rc = sluice_producer_send(p->producer, &m, (void *)opaque, err, sizeof err);
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
    lua_pushinteger(L, (lua_Integer)sluice_producer_in_flight(check_producer(L)->producer));
    return 1;
}

/* producer:flush([timeout_ms]) → number still in flight */
static int producer_flush(lua_State *L)
{
    lua_producer *p = check_producer(L);
    int ms = (int)luaL_optinteger(L, 2, 10000);
    lua_pushinteger(L, (lua_Integer)sluice_producer_flush(p->producer, ms));
    return 1;
}

static int producer_stats(lua_State *L)
{
    lua_producer *p = check_producer(L);
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, (lua_Integer)p->sent);
    lua_setfield(L, -2, "produced");
    lua_pushinteger(L, (lua_Integer)p->delivered);
    lua_setfield(L, -2, "delivered");
    lua_pushinteger(L, (lua_Integer)p->failed);
    lua_setfield(L, -2, "delivery_failed");
    lua_pushinteger(L, (lua_Integer)sluice_producer_in_flight(p->producer));
    lua_setfield(L, -2, "in_flight");
    return 1;
}

/* producer:config(name) → the value librdkafka runs with | nil, err, code */
static int producer_config(lua_State *L)
{
    lua_producer *p = check_producer(L);
    char value[512], err[256] = "";
    int rc = sluice_producer_conf_get(p->producer, luaL_checkstring(L, 2), value, sizeof value,
                                      err, sizeof err);
    if (rc) return sluice_lua_fail_core(L, rc, err);
    lua_pushstring(L, value);
    return 1;
}

/* close/__close: messages still in flight are reported failed to their
 * callbacks (flush first to avoid that). __gc: the same without Lua. */
static int producer_close(lua_State *L)
{
    lua_producer *p = luaL_checkudata(L, 1, SLUICE_PRODUCER_MT);
    if (p->producer == NULL) return 0;
    p->owner.ctx->L = L;
    sluice_producer_free(p->producer);
    p->producer = NULL;
    sluice_lua_unref(L, &p->pressure_ref);
    sluice_lua_unref(L, &p->error_ref);
    sluice_lua_disown(L, &p->owner);
    return 0;
}

static int producer_gc(lua_State *L)
{
    lua_producer *p = luaL_checkudata(L, 1, SLUICE_PRODUCER_MT);
    p->closing_from_gc = 1;
    producer_close(L);
    sluice_lua_unref(L, &p->cbs_ref);
    sluice_lua_unref(L, &p->args_ref);
    sluice_lua_unref(L, &p->batch_ref);
    sluice_lua_unref(L, &p->dispatch_ref);
    return 0;
}

void sluice_lua_open_producer(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "send", producer_send },
        { "in_flight", producer_in_flight },
        { "flush", producer_flush },
        { "stats", producer_stats },
        { "config", producer_config },
        { "close", producer_close },
        { NULL, NULL }
    };
    static const luaL_Reg meta[] = {
        { "__gc", producer_gc },
        { "__close", producer_close },
        { NULL, NULL }
    };
    sluice_lua_newclass(L, SLUICE_PRODUCER_MT, methods, meta);
    lua_pushcfunction(L, producer_new);
    lua_setfield(L, -2, "producer");
}
