/* Every difference between Lua 5.1/LuaJIT and 5.2–5.4 that the bindings
 * touch lives here, so the other files are written once. */
#ifndef SLUICE_LUA_COMPAT_H
#define SLUICE_LUA_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM >= 504
/* One user value slot per userdata. */
#define sluice_newuserdata(L, size) lua_newuserdatauv((L), (size), 1)
#define sluice_setuservalue(L, idx) lua_setiuservalue((L), (idx), 1)
#define sluice_getuservalue(L, idx) ((void)lua_getiuservalue((L), (idx), 1))
#elif LUA_VERSION_NUM >= 502
#define sluice_newuserdata(L, size) lua_newuserdata((L), (size))
#define sluice_setuservalue(L, idx) lua_setuservalue((L), (idx))
#define sluice_getuservalue(L, idx) ((void)lua_getuservalue((L), (idx)))
#else
#define sluice_newuserdata(L, size) lua_newuserdata((L), (size))
#define sluice_setuservalue(L, idx) lua_setfenv((L), (idx))
#define sluice_getuservalue(L, idx) lua_getfenv((L), (idx))
#endif

#if LUA_VERSION_NUM >= 502
#define sluice_rawlen(L, idx) lua_rawlen((L), (idx))
#define sluice_setfuncs(L, l) luaL_setfuncs((L), (l), 0)
#define sluice_newlib(L, l) (lua_newtable(L), luaL_setfuncs((L), (l), 0))
#define sluice_traceback(L, L1, msg, level) luaL_traceback((L), (L1), (msg), (level))
#else
#define sluice_rawlen(L, idx) lua_objlen((L), (idx))
#define sluice_setfuncs(L, l) luaL_register((L), NULL, (l))
#define sluice_newlib(L, l) (lua_newtable(L), luaL_register((L), NULL, (l)))
/* 5.1 has no luaL_traceback: use debug.traceback. */
static inline void sluice_traceback(lua_State *L, lua_State *L1, const char *msg, int level) {
    (void)L1;
    lua_getglobal(L, "debug");
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "traceback");
        lua_remove(L, -2);
        if (lua_isfunction(L, -1)) {
            lua_pushstring(L, msg);
            lua_pushinteger(L, level);
            if (lua_pcall(L, 2, 1, 0) == 0) return;
        }
    }
    lua_pop(L, 1);
    lua_pushstring(L, msg);
}
#endif

/* luaL_checkudata that does not assume a particular error message. */
#if LUA_VERSION_NUM >= 502
#define sluice_testudata(L, idx, name) luaL_testudata((L), (idx), (name))
#else
static inline void *sluice_testudata(lua_State *L, int idx, const char *name) {
    void *p = lua_touserdata(L, idx);
    if (p == NULL || !lua_getmetatable(L, idx)) return NULL;
    luaL_getmetatable(L, name);
    if (!lua_rawequal(L, -1, -2)) p = NULL;
    lua_pop(L, 2);
    return p;
}
#endif

#endif
