/* sluice.fswatch: inotify file watching for hot reload, calling a Lua
 * function with the list of changed paths once a burst of changes is over.
 * Also core.clock(), a sub-millisecond monotonic clock for timing reloads. */
#include <string.h>
#include <time.h>

#include "sluice_lua.h"
#include "sluice/fswatch.h"

/* h.obj: the sluice_fswatch; h.refs[0]: the function. Anchored until closed. */

static void fswatch_changed(sluice_fswatch *fw, const char *const *paths, size_t n, void *ud)
{
    sluice_lua_handle *h = ud;
    (void)fw;
    if (!sluice_lua_handle_callback(h, 0)) return;
    sluice_lua_push_strings(h->ctx->L, paths, n);
    sluice_lua_call(h->ctx, 1, 0, "file watch callback");
}

/* core.fswatch(loop, { debounce = ms }, fn(paths)) → watcher */
static int fswatch_new(lua_State *L)
{
    sluice_lua_handle *h;
    sluice_fswatch *fw = NULL;
    unsigned debounce;
    char err[256] = "";
    int rc;

    sluice_lua_opt_table(L, 2);
    debounce = (unsigned)sluice_lua_opt_int(L, 2, "debounce", 0, 0, 60000);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    h = sluice_lua_handle_new(L, &sluice_lua_fswatch_type, sizeof *h, 1);
    rc = sluice_fswatch_new(h->ctx->loop, debounce, fswatch_changed, h, &fw, err, sizeof err);
    if (rc) return sluice_lua_handle_fail(L, h, rc, err);
    h->obj = fw;
    sluice_lua_handle_set(L, h, 0, 3);
    sluice_lua_handle_anchor(L, h);
    return 1;
}

/* watcher:add(path) → true | nil, err, code */
static int fswatch_add(lua_State *L)
{
    sluice_fswatch *w = sluice_lua_handle_obj(L, 1, &sluice_lua_fswatch_type);
    const char *path = luaL_checkstring(L, 2);
    char err[512] = "";
    return sluice_lua_result(L, sluice_fswatch_add(w, path, err, sizeof err), err);
}

/* watcher:add_dir(dir [, suffix]) → true | nil, err, code */
static int fswatch_add_dir(lua_State *L)
{
    sluice_fswatch *w = sluice_lua_handle_obj(L, 1, &sluice_lua_fswatch_type);
    const char *dir = luaL_checkstring(L, 2);
    const char *suffix = luaL_optstring(L, 3, "");
    char err[512] = "";
    return sluice_lua_result(L, sluice_fswatch_add_dir(w, dir, suffix, err, sizeof err), err);
}

static int fswatch_count(lua_State *L)
{
    sluice_fswatch *w = sluice_lua_handle_obj(L, 1, &sluice_lua_fswatch_type);
    lua_pushinteger(L, (lua_Integer)sluice_fswatch_count(w));
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

static void fswatch_free(void *w) { sluice_fswatch_free(w); }

static const luaL_Reg methods[] = {
    { "add", fswatch_add }, { "add_dir", fswatch_add_dir }, { "count", fswatch_count },
    { NULL, NULL }
};
static const luaL_Reg functions[] = {
    { "fswatch", fswatch_new }, { "clock", clock_lua }, { NULL, NULL }
};

const sluice_lua_type sluice_lua_fswatch_type = {
    .name = "sluice.fswatch", .free = fswatch_free, .closable = 1,
    .methods = methods, .functions = functions,
};
