/* The one reader of options tables: every constructor's options are read
 * here, with their types and ranges checked the same way. */
#include <math.h>
#include <stdio.h>

#include "sluice_lua.h"

/* Pushes the option's value; 0 (and nil pushed) when it is absent. */
static int get(lua_State *L, int idx, const char *name)
{
    lua_getfield(L, idx, name);
    return !lua_isnil(L, -1);
}

static int bad(lua_State *L, int idx, const char *name, const char *expected)
{
    const char *got = lua_type(L, -1) == LUA_TNUMBER || lua_type(L, -1) == LUA_TSTRING
        ? lua_tostring(L, -1) : luaL_typename(L, -1);
    return luaL_argerror(L, idx, lua_pushfstring(L, "'%s' must be %s, got %s", name, expected, got));
}

lua_Number sluice_lua_opt_number(lua_State *L, int idx, const char *name, lua_Number dflt,
                                 lua_Number min, lua_Number max)
{
    lua_Number n = dflt;
    if (get(L, idx, name)) {
        if (lua_type(L, -1) != LUA_TNUMBER) bad(L, idx, name, "a number");
        n = lua_tonumber(L, -1);
        if (!(n >= min && n <= max)) {
            char expected[96];
            snprintf(expected, sizeof expected, "a number from %.14g to %.14g", min, max);
            bad(L, idx, name, expected);
        }
    }
    lua_pop(L, 1);
    return n;
}

lua_Integer sluice_lua_opt_int(lua_State *L, int idx, const char *name, lua_Integer dflt,
                               lua_Integer min, lua_Integer max)
{
    lua_Integer v = dflt;
    if (get(L, idx, name)) {
        lua_Number n = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : NAN;
        if (!(n >= (lua_Number)min && n <= (lua_Number)max) || n != floor(n)) {
            char expected[96];
            snprintf(expected, sizeof expected, "an integer from %lld to %lld",
                     (long long)min, (long long)max);
            bad(L, idx, name, expected);
        }
        v = (lua_Integer)n;
    }
    lua_pop(L, 1);
    return v;
}

size_t sluice_lua_opt_size(lua_State *L, int idx, const char *name)
{
    /* 2^53: every integer up to it is exact in a double. */
    return (size_t)sluice_lua_opt_int(L, idx, name, 0, 0, (lua_Integer)9007199254740992LL);
}

const char *sluice_lua_opt_string(lua_State *L, int idx, const char *name, const char *dflt)
{
    const char *s = dflt;
    if (get(L, idx, name)) {
        if (lua_type(L, -1) != LUA_TSTRING) bad(L, idx, name, "a string");
        s = lua_tostring(L, -1);   /* anchored by the options table */
    }
    lua_pop(L, 1);
    return s;
}

int sluice_lua_opt_flag(lua_State *L, int idx, const char *name, int dflt)
{
    int v = get(L, idx, name) ? lua_toboolean(L, -1) : dflt;
    lua_pop(L, 1);
    return v;
}

void sluice_lua_opt_table(lua_State *L, int idx)
{
    if (lua_isnoneornil(L, idx)) {
        if (lua_gettop(L) < idx) lua_settop(L, idx);
        lua_newtable(L);
        lua_replace(L, idx);
    } else luaL_checktype(L, idx, LUA_TTABLE);
}
