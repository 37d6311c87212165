/* sluice.fswatch: inotify file watching for hot reload, calling a Lua
 * function with the list of changed paths once a burst of changes is over.
 * Also core.clock(), a sub-millisecond monotonic clock for timing reloads. */
#include <string.h>
#include <time.h>

#include "sluice_lua.h"
#include "sluice/error.h"
#include "sluice/fswatch.h"

typedef struct lua_fswatch {
    sluice_fswatch *fw;
    sluice_lua_owner owner;
    int fn_ref;
    int self_ref;     /* anchors the userdata until close */
} lua_fswatch;

static lua_fswatch *check_fswatch(lua_State *L)
{
    lua_fswatch *w = luaL_checkudata(L, 1, SLUICE_FSWATCH_MT);
    if (w->fw == NULL) luaL_error(L, "attempt to use a closed %s", SLUICE_FSWATCH_MT);
    w->owner.ctx->L = L;
    return w;
}

static void fswatch_changed(sluice_fswatch *fw, const char *const *paths, size_t n, void *ud)
{
    lua_fswatch *w = ud;
    sluice_lua_loop *ctx = w->owner.ctx;
    lua_State *L = ctx->L;
    (void)fw;
    if (!sluice_lua_pushref(L, w->fn_ref)) return;
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushstring(L, paths[i]);
        lua_rawseti(L, -2, (int)i + 1);
    }
    sluice_lua_call(ctx, 1, 0, "file watch callback");
}

/* core.fswatch(loop, { debounce = ms }, fn(paths)) → watcher */
static int fswatch_new(lua_State *L)
{
    lua_fswatch *w;
    lua_Integer debounce = 0;
    char err[256] = "";
    int rc;

    sluice_lua_checkloop(L, 1);
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_getfield(L, 2, "debounce");
        if (!lua_isnil(L, -1)) {
            luaL_argcheck(L, lua_isnumber(L, -1), 2, "'debounce' must be a number of ms");
            debounce = (lua_Integer)lua_tonumber(L, -1);
            luaL_argcheck(L, debounce >= 0 && debounce <= 60000, 2,
                          "'debounce' must be between 0 and 60000 ms");
        }
        lua_pop(L, 1);
    }
    luaL_checktype(L, 3, LUA_TFUNCTION);
    w = sluice_newuserdata(L, sizeof *w);
    memset(w, 0, sizeof *w);
    w->fn_ref = w->self_ref = LUA_NOREF;
    luaL_getmetatable(L, SLUICE_FSWATCH_MT);
    lua_setmetatable(L, -2);
    rc = sluice_fswatch_new(sluice_lua_checkloop(L, 1)->loop, (unsigned)debounce,
                            fswatch_changed, w, &w->fw, err, sizeof err);
    if (rc) return sluice_lua_fail_core(L, rc, err);
    sluice_lua_own(L, 1, &w->owner);
    lua_pushvalue(L, 3);
    w->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, -1);
    w->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 1;
}

/* watcher:add(path) → true | nil, err, code */
static int fswatch_add(lua_State *L)
{
    lua_fswatch *w = check_fswatch(L);
    const char *path = luaL_checkstring(L, 2);
    char err[512] = "";
    int rc = sluice_fswatch_add(w->fw, path, err, sizeof err);
    if (rc) return sluice_lua_fail_core(L, rc, err);
    lua_pushboolean(L, 1);
    return 1;
}

/* watcher:add_dir(dir [, suffix]) → true | nil, err, code */
static int fswatch_add_dir(lua_State *L)
{
    lua_fswatch *w = check_fswatch(L);
    const char *dir = luaL_checkstring(L, 2);
    const char *suffix = luaL_optstring(L, 3, "");
    char err[512] = "";
    int rc = sluice_fswatch_add_dir(w->fw, dir, suffix, err, sizeof err);
    if (rc) return sluice_lua_fail_core(L, rc, err);
    lua_pushboolean(L, 1);
    return 1;
}

static int fswatch_count(lua_State *L)
{
    lua_fswatch *w = check_fswatch(L);
    lua_pushinteger(L, (lua_Integer)sluice_fswatch_count(w->fw));
    return 1;
}

static int fswatch_close(lua_State *L)
{
    lua_fswatch *w = luaL_checkudata(L, 1, SLUICE_FSWATCH_MT);
    if (w->fw == NULL) return 0;
    sluice_fswatch_free(w->fw);
    w->fw = NULL;
    sluice_lua_unref(L, &w->fn_ref);
    sluice_lua_unref(L, &w->self_ref);
    sluice_lua_disown(L, &w->owner);
    return 0;
}

static int fswatch_is_closed(lua_State *L)
{
    lua_fswatch *w = luaL_checkudata(L, 1, SLUICE_FSWATCH_MT);
    lua_pushboolean(L, w->fw == NULL);
    return 1;
}

/* core.clock() → seconds on a monotonic clock, as a float (µs resolution). */
static int clock_lua(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
    return 1;
}

void sluice_lua_open_fswatch(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "add", fswatch_add },
        { "add_dir", fswatch_add_dir },
        { "count", fswatch_count },
        { "close", fswatch_close },
        { "is_closed", fswatch_is_closed },
        { NULL, NULL }
    };
    static const luaL_Reg meta[] = {
        { "__gc", fswatch_close },
        { "__close", fswatch_close },
        { NULL, NULL }
    };
    sluice_lua_newclass(L, SLUICE_FSWATCH_MT, methods, meta);
    lua_pushcfunction(L, fswatch_new);
    lua_setfield(L, -2, "fswatch");
    lua_pushcfunction(L, clock_lua);
    lua_setfield(L, -2, "clock");
}
