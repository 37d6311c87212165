/* sluice.timer: a one-shot or repeating timer calling a Lua function. */
#include "sluice_lua.h"

/* h.obj: the sluice_timer; h.refs[0]: the function. Anchored until closed. */

static void timer_fired(sluice_timer *timer, void *ud)
{
    sluice_lua_handle *h = ud;
    (void)timer;
    if (!sluice_lua_handle_callback(h, 0)) return;
    sluice_lua_pushref(h->ctx->L, h->self_ref);
    sluice_lua_call(h->ctx, 1, 0, "timer callback");
}

/* core.timer(loop, fn) → timer (not started) */
static int timer_new(lua_State *L)
{
    sluice_lua_handle *h;
    luaL_checktype(L, 2, LUA_TFUNCTION);
    h = sluice_lua_handle_new(L, &sluice_lua_timer_type, sizeof *h, 1);
    h->obj = sluice_timer_new(h->ctx->loop, timer_fired, h);
    if (h->obj == NULL) return sluice_lua_handle_fail(L, h, SLUICE_ENOMEM, "cannot create timer");
    sluice_lua_handle_set(L, h, 0, 2);
    sluice_lua_handle_anchor(L, h);
    return 1;
}

/* timer:start(delay_ms [, repeat_ms]) */
static int timer_start(lua_State *L)
{
    sluice_timer *t = sluice_lua_handle_obj(L, 1, &sluice_lua_timer_type);
    lua_Number delay = luaL_checknumber(L, 2);
    lua_Number repeat = luaL_optnumber(L, 3, 0);
    luaL_argcheck(L, delay >= 0, 2, "delay must be >= 0");
    luaL_argcheck(L, repeat >= 0, 3, "repeat must be >= 0");
    sluice_timer_start(t, (uint64_t)delay, (uint64_t)repeat);
    lua_settop(L, 1);
    return 1;
}

static int timer_stop(lua_State *L)
{
    sluice_timer_stop(sluice_lua_handle_obj(L, 1, &sluice_lua_timer_type));
    lua_settop(L, 1);
    return 1;
}

/* timer:armed() → true while it is scheduled to fire */
static int timer_armed(lua_State *L)
{
    lua_pushboolean(L, sluice_timer_armed(sluice_lua_handle_obj(L, 1, &sluice_lua_timer_type)));
    return 1;
}

static void timer_free(void *t) { sluice_timer_free(t); }

static const luaL_Reg methods[] = {
    { "start", timer_start }, { "stop", timer_stop }, { "armed", timer_armed },
    { NULL, NULL }
};
static const luaL_Reg functions[] = { { "timer", timer_new }, { NULL, NULL } };

const sluice_lua_type sluice_lua_timer_type = {
    .name = "sluice.timer", .free = timer_free, .closable = 1,
    .methods = methods, .functions = functions,
};
