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

    if (!lua_isnoneornil(L, 1)) luaL_checktype(L, 1, LUA_TTABLE);
    else { lua_newtable(L); lua_replace(L, 1); }
    lua_settop(L, 1);

    ctx = sluice_newuserdata(L, sizeof *ctx);      /* before the resource */
    memset(ctx, 0, sizeof *ctx);
    ctx->log_ref = LUA_NOREF;
    ctx->signal_ref = LUA_NOREF;
    ctx->L = L;
    luaL_getmetatable(L, SLUICE_LOOP_MT);
    lua_setmetatable(L, -2);

    lua_getfield(L, 1, "log_level");
    ctx->log_level = parse_level(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, 1, "log");
    if (!lua_isnil(L, -1)) {
        luaL_argcheck(L, lua_isfunction(L, -1), 1, "'log' must be a function");
        ctx->log_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    } else lua_pop(L, 1);

    /* Per-handler-call limits; absent, false or 0: no limit. */
    lua_getfield(L, 1, "handler_timeout");
    if (lua_toboolean(L, -1)) {
        lua_Number secs = luaL_checknumber(L, -1);
        luaL_argcheck(L, secs >= 0 && secs < 4e6, 1, "'handler_timeout' must be >= 0 seconds");
        ctx->limit_ms = (unsigned)(secs * 1000 + 0.5);
    }
    lua_pop(L, 1);
    lua_getfield(L, 1, "handler_instructions");
    if (lua_toboolean(L, -1)) {
        lua_Number n = luaL_checknumber(L, -1);
        luaL_argcheck(L, n >= 0, 1, "'handler_instructions' must be >= 0");
        ctx->limit_instructions = (unsigned long)n;
    }
    lua_pop(L, 1);

    memset(&cfg, 0, sizeof cfg);
    cfg.log = loop_log_hook;
    cfg.log_ud = ctx;
    cfg.log_level = ctx->log_level;
    rc = sluice_loop_new(&cfg, &ctx->loop, err, sizeof err);
    if (rc) {
        sluice_lua_unref(L, &ctx->log_ref);
        return sluice_lua_fail_core(L, rc, err);
    }
    return 1;
}

static sluice_lua_loop *check_open(lua_State *L)
{
    sluice_lua_loop *ctx = sluice_lua_checkloop(L, 1);
    ctx->L = L;
    return ctx;
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

/* loop:log(level, message) — the same sink the core logs to. */
static int loop_log(lua_State *L)
{
    sluice_lua_loop *ctx = check_open(L);
    int level = parse_level(L, 2);
    sluice_lua_log(ctx, level, luaL_checkstring(L, 3));
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
    if (!sluice_lua_pushref(L, ctx->signal_ref)) return;
    lua_pushstring(L, signal_name(signo));
    sluice_lua_call(ctx, 1, 0, "signal handler");
}

static void stop_signals(lua_State *L, sluice_lua_loop *ctx)
{
    if (ctx->signals) {
        sluice_signal_watch_free(ctx->signals);
        ctx->signals = NULL;
    }
    sluice_lua_unref(L, &ctx->signal_ref);
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
    lua_pushvalue(L, 2);
    ctx->signal_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    rc = sluice_signal_watch_new(ctx->loop, signals, 3, signal_arrived, ctx,
                                 (sluice_signal_watch **)&ctx->signals, err, sizeof err);
    if (rc) {
        sluice_lua_unref(L, &ctx->signal_ref);
        return sluice_lua_fail_core(L, rc, err);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* close, __gc and __close: one idempotent function. Objects attached to
 * the loop hold a reference to it, so by the time this runs from __gc they
 * have been closed (or are being finalized first, at state close). */
static int loop_close(lua_State *L)
{
    sluice_lua_loop *ctx = luaL_checkudata(L, 1, SLUICE_LOOP_MT);
    if (ctx->loop == NULL) return 0;
    stop_signals(L, ctx);
    sluice_loop_free(ctx->loop);
    ctx->loop = NULL;
    sluice_lua_unref(L, &ctx->log_ref);
    return 0;
}

static int loop_tostring(lua_State *L)
{
    sluice_lua_loop *ctx = luaL_checkudata(L, 1, SLUICE_LOOP_MT);
    lua_pushfstring(L, "%s (%s)", SLUICE_LOOP_MT, ctx->loop ? "open" : "closed");
    return 1;
}

void sluice_lua_open_loop(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "run_once", loop_run_once },
        { "run", loop_run },
        { "stop", loop_stop },
        { "now", loop_now },
        { "handler_errors", loop_handler_errors },
        { "log", loop_log },
        { "on_signals", loop_on_signals },
        { "close", loop_close },
        { NULL, NULL }
    };
    static const luaL_Reg meta[] = {
        { "__gc", loop_close },
        { "__close", loop_close },
        { "__tostring", loop_tostring },
        { NULL, NULL }
    };
    sluice_lua_newclass(L, SLUICE_LOOP_MT, methods, meta);
    lua_pushcfunction(L, loop_new);
    lua_setfield(L, -2, "loop");
}
