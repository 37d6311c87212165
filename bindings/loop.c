/* sluice.loop: the event loop, its logger and signal handling. */
#include <signal.h>
#include <string.h>

#include "sluice_lua.h"
#include "sluice/signal.h"

static void loop_log_hook(void *ud, int level, const char *msg)
{
    sluice_lua_log(ud, level, msg);
}

static int parse_level(lua_State *L, int idx)
{
    static const char *const names[] = { "error", "warn", "info", "debug", NULL };
    return luaL_checkoption(L, idx, "info", names);
}


/* core.loop{ log = function(level, msg), log_level = "info",
 *            handler_timeout = seconds, handler_instructions = n } */
static int loop_new(lua_State *L)
{
    sluice_lua_loop *ctx;
    sluice_loop_config cfg;
    char err[256] = "";
    int rc;

    sluice_lua_opt_table(L, 1);
    lua_settop(L, 1);
    ctx = sluice_lua_handle_new(L, &sluice_lua_loop_type, sizeof *ctx, 0);   /* before the resource */
    ctx->h.ctx = ctx;
    ctx->L = L;

    lua_getfield(L, 1, "log_level");
    ctx->log_level = parse_level(L, -1);
    lua_pop(L, 1);
    sluice_lua_handle_ref(L, &ctx->h, SLUICE_LUA_LOOP_LOG, 1, "log", 0);
    /* Per-handler-call limits; absent, false or 0: no limit. */
    if (sluice_lua_opt_flag(L, 1, "handler_timeout", 0))
        ctx->limit_ms = (unsigned)(sluice_lua_opt_number(L, 1, "handler_timeout", 0, 0, 4e6) * 1000 + 0.5);
    if (sluice_lua_opt_flag(L, 1, "handler_instructions", 0))
        ctx->limit_instructions = (unsigned long)sluice_lua_opt_number(L, 1, "handler_instructions",
                                                                       0, 0, 1e15);

    memset(&cfg, 0, sizeof cfg);
    cfg.log = loop_log_hook;
    cfg.log_ud = ctx;
    cfg.log_level = ctx->log_level;
    rc = sluice_loop_new(&cfg, &ctx->loop, err, sizeof err);
    if (rc) return sluice_lua_handle_fail(L, &ctx->h, rc, err);
    return 1;
}

static sluice_lua_loop *check_open(lua_State *L)
{
    return sluice_lua_handle_check(L, 1, &sluice_lua_loop_type);
}

/* loop:run_once([ms]) → true if stop was requested */
static int loop_run_once(lua_State *L)
{
    sluice_lua_loop *ctx = check_open(L);
    int ms = (int)luaL_optinteger(L, 2, 0);
    lua_pushboolean(L, sluice_loop_run_once(ctx->loop, ms));
    return 1;
}

static int loop_run(lua_State *L)
{
    sluice_lua_loop *ctx = check_open(L);
    sluice_loop_run(ctx->loop);
    return 0;
}

static int loop_stop(lua_State *L)
{
    sluice_lua_loop *ctx = check_open(L);
    sluice_loop_stop(ctx->loop);
    return 0;
}

static int loop_now(lua_State *L)
{
    (void)check_open(L);
    lua_pushinteger(L, (lua_Integer)sluice_now_ms());
    return 1;
}

static int loop_handler_errors(lua_State *L)
{
    sluice_lua_loop *ctx = check_open(L);
    lua_pushinteger(L, (lua_Integer)ctx->handler_errors);
    return 1;
}

/* loop:handler_times() → { [what] = { count, sum (seconds), errors,
 * buckets = { n per bucket, the last above every bound } } }, bounds (seconds) */
static int loop_handler_times(lua_State *L)
{
    sluice_lua_loop *ctx = check_open(L);
    lua_createtable(L, 0, ctx->ntimes);
    for (int i = 0; i < ctx->ntimes; i++) {
        const sluice_lua_handler_time *t = &ctx->times[i];
        lua_createtable(L, 0, 4);
        sluice_lua_setint(L, "count", (lua_Integer)t->count);
        lua_pushnumber(L, (lua_Number)t->sum_ns / 1e9);
        lua_setfield(L, -2, "sum");
        sluice_lua_setint(L, "errors", (lua_Integer)t->errors);
        lua_createtable(L, SLUICE_LUA_TIME_BUCKETS + 1, 0);
        for (int b = 0; b <= SLUICE_LUA_TIME_BUCKETS; b++) {
            lua_pushinteger(L, (lua_Integer)t->buckets[b]);
            lua_rawseti(L, -2, b + 1);
        }
        lua_setfield(L, -2, "buckets");
        lua_setfield(L, -2, t->what);
    }
    lua_createtable(L, SLUICE_LUA_TIME_BUCKETS, 0);
    for (int b = 0; b < SLUICE_LUA_TIME_BUCKETS; b++) {
        lua_pushnumber(L, (lua_Number)sluice_lua_time_bounds_ns[b] / 1e9);
        lua_rawseti(L, -2, b + 1);
    }
    return 2;
}

/* loop:log(level, message) — the same sink the core logs to. */
static int loop_log(lua_State *L)
{
    sluice_lua_loop *ctx = check_open(L);
    int level = parse_level(L, 2);
    sluice_lua_log(ctx, level, luaL_checkstring(L, 3));
    return 0;
}

/* loop:log_level() → "info"; loop:set_log_level(level): what is logged
 * from now on (the core's and Lua's lines alike). */
static int loop_log_level(lua_State *L)
{
    static const char *const names[] = { "error", "warn", "info", "debug" };
    sluice_lua_loop *ctx = check_open(L);
    lua_pushstring(L, names[ctx->log_level]);
    return 1;
}

static int loop_set_log_level(lua_State *L)
{
    sluice_lua_loop *ctx = check_open(L);
    ctx->log_level = parse_level(L, 2);
    sluice_loop_set_log_level(ctx->loop, ctx->log_level);
    return 0;
}

static const char *signal_name(int signo)
{
    switch (signo) {
    case SIGINT: return "INT";
    case SIGTERM: return "TERM";
    case SIGHUP: return "HUP";
    default: return "?";
    }
}

static void signal_arrived(void *ud, int signo)
{
    sluice_lua_loop *ctx = ud;
    lua_State *L = ctx->L;
    if (!sluice_lua_handle_callback(&ctx->h, SLUICE_LUA_LOOP_SIGNAL)) return;
    lua_pushstring(L, signal_name(signo));
    sluice_lua_call(ctx, 1, 0, "signal handler");
}

static void stop_signals(lua_State *L, sluice_lua_loop *ctx)
{
    if (ctx->signals) {
        sluice_signal_watch_free(ctx->signals);
        ctx->signals = NULL;
    }
    sluice_lua_unref(L, &ctx->h.refs[SLUICE_LUA_LOOP_SIGNAL]);
}

/* loop:on_signals(fn) — INT, TERM and HUP become fn("INT"|"TERM"|"HUP")
 * calls on the loop thread; loop:on_signals(nil) restores them. */
static int loop_on_signals(lua_State *L)
{
    static const int signals[] = { SIGINT, SIGTERM, SIGHUP };
    sluice_lua_loop *ctx = check_open(L);
    char err[256] = "";
    int rc;

    stop_signals(L, ctx);
    if (lua_isnoneornil(L, 2)) { lua_pushboolean(L, 1); return 1; }
    luaL_checktype(L, 2, LUA_TFUNCTION);
    sluice_lua_handle_set(L, &ctx->h, SLUICE_LUA_LOOP_SIGNAL, 2);
    rc = sluice_signal_watch_new(ctx->loop, signals, 3, signal_arrived, ctx,
                                 (sluice_signal_watch **)&ctx->signals, err, sizeof err);
    if (rc) stop_signals(L, ctx);
    return sluice_lua_result(L, rc, err);
}

/* Objects attached to the loop hold a reference to it, so by the time
 * this runs from __gc they have been closed (or are being finalized
 * first, at state close). */
static void loop_close(lua_State *L, sluice_lua_handle *h)
{
    sluice_lua_loop *ctx = (sluice_lua_loop *)h;
    stop_signals(L, ctx);
    sluice_loop_free(ctx->loop);
    ctx->loop = NULL;
}

static int loop_tostring(lua_State *L)
{
    sluice_lua_loop *ctx = sluice_lua_handle_get(L, 1, &sluice_lua_loop_type);
    lua_pushfstring(L, "%s (%s)", SLUICE_LOOP_MT, ctx->h.state == SLUICE_LUA_OPEN ? "open" : "closed");
    return 1;
}

static const luaL_Reg methods[] = {
    { "run_once", loop_run_once }, { "run", loop_run }, { "stop", loop_stop }, { "now", loop_now },
    { "handler_errors", loop_handler_errors }, { "handler_times", loop_handler_times },
    { "log", loop_log }, { "log_level", loop_log_level }, { "set_log_level", loop_set_log_level },
    { "on_signals", loop_on_signals }, { NULL, NULL }
};
static const luaL_Reg meta[] = { { "__tostring", loop_tostring }, { NULL, NULL } };
static const luaL_Reg functions[] = { { "loop", loop_new }, { NULL, NULL } };

const sluice_lua_type sluice_lua_loop_type = {
    .name = SLUICE_LOOP_MT, .close = loop_close, .closable = 1,
    .methods = methods, .meta = meta, .functions = functions,
};
