/* sluice.timer: a one-shot or repeating timer calling a Lua function. */
#include <string.h>

#include "sluice_lua.h"

typedef struct lua_timer {
    sluice_timer *timer;
    sluice_lua_owner owner;
    int fn_ref;
    int self_ref;     /* anchors the userdata until close */
} lua_timer;

static lua_timer *check_timer(lua_State *L)
{
    lua_timer *t = luaL_checkudata(L, 1, SLUICE_TIMER_MT);
    if (t->timer == NULL) luaL_error(L, "attempt to use a closed %s", SLUICE_TIMER_MT);
    t->owner.ctx->L = L;
    return t;
}

static void timer_fired(sluice_timer *timer, void *ud)
{
    lua_timer *t = ud;
    sluice_lua_loop *ctx = t->owner.ctx;
    lua_State *L = ctx->L;
    (void)timer;
    if (!sluice_lua_pushref(L, t->fn_ref)) return;
    sluice_lua_pushref(L, t->self_ref);
    sluice_lua_call(ctx, 1, 0, "timer callback");
}

/* loop:timer(fn) → timer (not started) */
static int timer_new(lua_State *L)
{
    lua_timer *t;
    sluice_lua_checkloop(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    t = sluice_newuserdata(L, sizeof *t);
    memset(t, 0, sizeof *t);
    t->fn_ref = t->self_ref = LUA_NOREF;
    luaL_getmetatable(L, SLUICE_TIMER_MT);
    lua_setmetatable(L, -2);
    sluice_lua_own(L, 1, &t->owner);
    t->timer = sluice_timer_new(t->owner.ctx->loop, timer_fired, t);
    if (t->timer == NULL) {
        sluice_lua_disown(L, &t->owner);
        return sluice_lua_fail(L, "NOMEM", "cannot create timer");
    }
    lua_pushvalue(L, 2);
    t->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, -1);
    t->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 1;
}

/* timer:start(delay_ms [, repeat_ms]) */
static int timer_start(lua_State *L)
{
    lua_timer *t = check_timer(L);
    lua_Number delay = luaL_checknumber(L, 2);
    lua_Number repeat = luaL_optnumber(L, 3, 0);
    luaL_argcheck(L, delay >= 0, 2, "delay must be >= 0");
    luaL_argcheck(L, repeat >= 0, 3, "repeat must be >= 0");
    sluice_timer_start(t->timer, (uint64_t)delay, (uint64_t)repeat);
    lua_settop(L, 1);
    return 1;
}

static int timer_stop(lua_State *L)
{
    lua_timer *t = check_timer(L);
    sluice_timer_stop(t->timer);
    lua_settop(L, 1);
    return 1;
}

static int timer_close(lua_State *L)
{
    lua_timer *t = luaL_checkudata(L, 1, SLUICE_TIMER_MT);
    if (t->timer == NULL) return 0;
    sluice_timer_free(t->timer);
    t->timer = NULL;
    sluice_lua_unref(L, &t->fn_ref);
    sluice_lua_unref(L, &t->self_ref);
    sluice_lua_disown(L, &t->owner);
    return 0;
}

static int timer_is_closed(lua_State *L)
{
    lua_timer *t = luaL_checkudata(L, 1, SLUICE_TIMER_MT);
    lua_pushboolean(L, t->timer == NULL);
    return 1;
}

void sluice_lua_open_timer(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "start", timer_start },
        { "stop", timer_stop },
        { "close", timer_close },
        { "is_closed", timer_is_closed },
        { NULL, NULL }
    };
    static const luaL_Reg meta[] = {
        { "__gc", timer_close },
        { "__close", timer_close },
        { NULL, NULL }
    };
    sluice_lua_newclass(L, SLUICE_TIMER_MT, methods, meta);
    lua_pushcfunction(L, timer_new);
    lua_setfield(L, -2, "timer");
}
