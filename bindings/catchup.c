/* sluice.catchup: a subscriber's catch-up read of one topic from its
 * position onwards (sluice_catchup_*), reported to Lua: start(recovered,
 * why), records(list), end_of(partition, offset), error(text). Used by
 * sluice.app's subscriptions (scripts/sluice/app/feed.lua). */
#include <limits.h>
#include <string.h>

#include "sluice_lua.h"
#include "sluice/kafka.h"

enum { START, RECORDS, END, ERROR };   /* refs */

typedef struct lua_catchup {
    sluice_lua_handle h;       /* h.obj: the sluice_catchup; anchored while open */
} lua_catchup;

static void catchup_free(void *obj) { sluice_catchup_free(obj); }

static void on_start(void *ud, int recovered, const char *why)
{
    lua_catchup *c = ud;
    lua_State *L = c->h.ctx->L;
    if (!sluice_lua_handle_callback(&c->h, START)) return;
    lua_pushboolean(L, recovered);
    if (why) lua_pushstring(L, why);
    else lua_pushnil(L);
    sluice_lua_call(c->h.ctx, 2, 0, "catch-up handler");
}

static void on_records(void *ud, const sluice_record *r, size_t n)
{
    lua_catchup *c = ud;
    lua_State *L = c->h.ctx->L;
    if (!sluice_lua_handle_callback(&c->h, RECORDS)) return;
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        sluice_lua_push_record(L, &r[i]);
        lua_rawseti(L, -2, (int)i + 1);
    }
    sluice_lua_call(c->h.ctx, 1, 0, "catch-up handler");
}

static void on_end(void *ud, int32_t partition, int64_t end)
{
    lua_catchup *c = ud;
    lua_State *L = c->h.ctx->L;
    if (!sluice_lua_handle_callback(&c->h, END)) return;
    lua_pushinteger(L, partition);
    lua_pushinteger(L, (lua_Integer)end);
    sluice_lua_call(c->h.ctx, 2, 0, "catch-up handler");
}

static void on_error(void *ud, const char *text)
{
    lua_catchup *c = ud;
    lua_State *L = c->h.ctx->L;
    if (!sluice_lua_handle_callback(&c->h, ERROR)) return;
    lua_pushstring(L, text);
    sluice_lua_call(c->h.ctx, 1, 0, "catch-up handler");
}

/* core.catchup(loop, { props = {...}, topic = name,
 *                      from = { { partition = p, offset = o [, timestamp = ts] }, ... } },
 *              { start = fn(recovered, why), records = fn(list),
 *                end_of = fn(partition, offset), error = fn(text) }) */
static int catchup_new(lua_State *L)
{
    sluice_catchup_config cfg;
    sluice_catchup *sc = NULL;
    char err[512] = "";
    size_t n;

    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
    memset(&cfg, 0, sizeof cfg);
    lua_getfield(L, 2, "props");                               /* 4 */
    cfg.props = sluice_lua_string_pairs(L, 4, "kafka properties");   /* 5 */
    lua_getfield(L, 2, "topic");                               /* 6 */
    luaL_argcheck(L, lua_type(L, 6) == LUA_TSTRING, 2, "'topic' must be a string");
    cfg.topic = lua_tostring(L, 6);
    lua_getfield(L, 2, "from");                                /* 7 */
    luaL_argcheck(L, lua_istable(L, 7), 2, "'from' must be a list of { partition, offset [, timestamp] }");
    n = sluice_rawlen(L, 7);
    sluice_partition *from = lua_newuserdata(L, (n ? n : 1) * sizeof *from);     /* 8 */
    int64_t *ts = lua_newuserdata(L, (n ? n : 1) * sizeof *ts);                  /* 9 */
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, 7, (int)i + 1);
        luaL_argcheck(L, lua_istable(L, -1), 2, "'from' must be a list of { partition, offset [, timestamp] }");
        lua_getfield(L, -1, "partition");
        lua_getfield(L, -2, "offset");
        lua_getfield(L, -3, "timestamp");
        lua_Number p = lua_type(L, -3) == LUA_TNUMBER ? lua_tonumber(L, -3) : -1;
        lua_Number o = lua_type(L, -2) == LUA_TNUMBER ? lua_tonumber(L, -2) : -3;
        lua_Number t = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : -1;
        luaL_argcheck(L, p >= 0 && p <= INT32_MAX && p == (lua_Integer)p && (o >= 0 || o == -2) &&
                      o == (lua_Integer)o,
                      2, "'from': partitions and offsets must be integers >= 0 (offset -2: the beginning)");
        from[i].topic = cfg.topic;
        from[i].partition = (int32_t)p;
        from[i].offset = (int64_t)o;
        ts[i] = t >= 0 ? (int64_t)t : -1;
        lua_pop(L, 4);
    }
    cfg.from = from;
    cfg.check_ts = ts;
    cfg.n = n;

    lua_catchup *c = sluice_lua_handle_new(L, &sluice_lua_catchup_type, sizeof *c, 1);
    sluice_lua_handle_ref(L, &c->h, START, 3, "start", 1);
    sluice_lua_handle_ref(L, &c->h, RECORDS, 3, "records", 1);
    sluice_lua_handle_ref(L, &c->h, END, 3, "end_of", 0);
    sluice_lua_handle_ref(L, &c->h, ERROR, 3, "error", 0);
    cfg.on_start = on_start;
    cfg.on_records = on_records;
    cfg.on_end = on_end;
    cfg.on_error = on_error;
    cfg.ud = c;
    int rc = sluice_catchup_start(c->h.ctx->loop, &cfg, &sc, err, sizeof err);
    if (rc) return sluice_lua_handle_fail(L, &c->h, rc, err);
    c->h.obj = sc;
    sluice_lua_handle_anchor(L, &c->h);
    return 1;
}

static const luaL_Reg methods[] = { { NULL, NULL } };   /* close, is_closed: shared */
static const luaL_Reg functions[] = { { "catchup", catchup_new }, { NULL, NULL } };

const sluice_lua_type sluice_lua_catchup_type = {
    .name = "sluice.catchup", .free = catchup_free, .closable = 1,
    .methods = methods, .functions = functions,
};
