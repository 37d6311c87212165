/* The handle every userdata type of sluice.core is built on (after luv's
 * lhandle.c): the loop it runs on, the registry refs it owns, and one
 * idempotent close shared by close, __close and __gc. */
#include <string.h>

#include "sluice_lua.h"

void *sluice_lua_handle_new(lua_State *L, const sluice_lua_type *t, size_t size, int loop_idx)
{
    sluice_lua_loop *ctx = loop_idx > 0 ? sluice_lua_handle_check(L, loop_idx, &sluice_lua_loop_type)
                                        : NULL;
    sluice_lua_handle *h = sluice_newuserdata(L, size);
    memset(h, 0, size);
    h->type = t;
    h->loop_ref = h->self_ref = LUA_NOREF;
    for (int i = 0; i < SLUICE_LUA_REFS; i++) h->refs[i] = LUA_NOREF;
    luaL_getmetatable(L, t->name);
    lua_setmetatable(L, -2);
    if (ctx) {
        h->ctx = ctx;
        lua_pushvalue(L, loop_idx);
        h->loop_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    return h;
}

void sluice_lua_handle_anchor(lua_State *L, sluice_lua_handle *h)
{
    lua_pushvalue(L, -1);
    h->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

void *sluice_lua_handle_obj(lua_State *L, int idx, const sluice_lua_type *t)
{
    return ((sluice_lua_handle *)sluice_lua_handle_check(L, idx, t))->obj;
}

void *sluice_lua_handle_get(lua_State *L, int idx, const sluice_lua_type *t)
{
    return luaL_checkudata(L, idx, t->name);
}

void *sluice_lua_handle_check(lua_State *L, int idx, const sluice_lua_type *t)
{
    sluice_lua_handle *h = luaL_checkudata(L, idx, t->name);
    if (h->state == SLUICE_LUA_CLOSED) luaL_error(L, "attempt to use a closed %s", t->name);
    if (h->ctx) h->ctx->L = L;
    return h;
}

void sluice_lua_handle_release(lua_State *L, sluice_lua_handle *h)
{
    for (int i = 0; i < SLUICE_LUA_REFS; i++) sluice_lua_unref(L, &h->refs[i]);
    sluice_lua_unref(L, &h->self_ref);
    sluice_lua_unref(L, &h->loop_ref);
    h->state = SLUICE_LUA_CLOSED;
}

/* The object stays usable while its C side closes: callbacks that run
 * then (a revocation, a delivery report, a close handler) may use it. */
void sluice_lua_handle_close(lua_State *L, sluice_lua_handle *h)
{
    if (h->state != SLUICE_LUA_OPEN) return;
    h->state = SLUICE_LUA_CLOSING;
    if (h->ctx && !h->from_gc) h->ctx->L = L;
    if (h->type->close) h->type->close(L, h);
    else if (h->obj) h->type->free(h->obj);
    h->obj = NULL;
    sluice_lua_handle_release(L, h);
}

int sluice_lua_handle_fail(lua_State *L, sluice_lua_handle *h, int code, const char *err)
{
    sluice_lua_handle_release(L, h);
    return sluice_lua_fail_core(L, code, err);
}

void sluice_lua_handle_ref(lua_State *L, sluice_lua_handle *h, int slot, int idx,
                           const char *field, int required)
{
    lua_getfield(L, idx, field);
    if (lua_isnil(L, -1) && !required) { lua_pop(L, 1); return; }
    if (!lua_isfunction(L, -1))
        luaL_error(L, "bad handler '%s' (function expected, got %s)", field, luaL_typename(L, -1));
    h->refs[slot] = luaL_ref(L, LUA_REGISTRYINDEX);
}

void sluice_lua_handle_set(lua_State *L, sluice_lua_handle *h, int slot, int idx)
{
    lua_pushvalue(L, idx);
    h->refs[slot] = luaL_ref(L, LUA_REGISTRYINDEX);
}

int sluice_lua_handle_callback(sluice_lua_handle *h, int slot)
{
    if (h->from_gc) return 0;
    return sluice_lua_pushref(h->ctx->L, h->refs[slot]);
}

static int handle_close(lua_State *L)
{
    const sluice_lua_type *t = lua_touserdata(L, lua_upvalueindex(1));
    sluice_lua_handle_close(L, luaL_checkudata(L, 1, t->name));
    return 0;
}

static int handle_is_closed(lua_State *L)
{
    const sluice_lua_type *t = lua_touserdata(L, lua_upvalueindex(1));
    sluice_lua_handle *h = luaL_checkudata(L, 1, t->name);
    lua_pushboolean(L, h->state != SLUICE_LUA_OPEN);
    return 1;
}

static int handle_gc(lua_State *L)
{
    const sluice_lua_type *t = lua_touserdata(L, lua_upvalueindex(1));
    sluice_lua_handle *h = luaL_checkudata(L, 1, t->name);
    h->from_gc = 1;
    sluice_lua_handle_close(L, h);
    if (t->collect) t->collect(L, h);
    return 0;
}

/* __index for field types: the methods (upvalue), then the user value. */
static int field_index(lua_State *L)
{
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    if (!lua_isnil(L, -1)) return 1;
    lua_pop(L, 1);
    sluice_getuservalue(L, 1);
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    return 1;
}

static int field_newindex(lua_State *L)
{
    sluice_getuservalue(L, 1);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    lua_rawset(L, -3);
    return 0;
}

static void set_closure(lua_State *L, const sluice_lua_type *t, lua_CFunction f, const char *name)
{
    lua_pushlightuserdata(L, (void *)t);
    lua_pushcclosure(L, f, 1);
    lua_setfield(L, -2, name);
}

void sluice_lua_handle_class(lua_State *L, const sluice_lua_type *t)
{
    luaL_newmetatable(L, t->name);
    set_closure(L, t, handle_gc, "__gc");
    if (t->closable) set_closure(L, t, handle_close, "__close");
    if (t->meta) sluice_setfuncs(L, t->meta);
    sluice_newlib(L, t->methods);
    if (t->closable) {
        int has_close;
        lua_getfield(L, -1, "close");
        has_close = !lua_isnil(L, -1);
        lua_pop(L, 1);
        if (!has_close) set_closure(L, t, handle_close, "close");
        set_closure(L, t, handle_is_closed, "is_closed");
    }
    if (t->fields) {
        lua_pushcclosure(L, field_index, 1);
        lua_pushcfunction(L, field_newindex);
        lua_setfield(L, -3, "__newindex");
    }
    lua_setfield(L, -2, "__index");
    lua_pushstring(L, t->name);
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
    if (t->functions) sluice_setfuncs(L, t->functions);
}
