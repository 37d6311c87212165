/* The movies app's row decoder (scripts/apps/movies/rows.lua) in an
 * embedded Lua 5.4: any text gives either "malformed JSON: …", or rows that
 * are rejected with "invalid row: …" or accepted, re-encoded, and decode
 * back to the same valid row. A Lua error is a finding. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#ifndef SLUICE_SOURCE_DIR
#define SLUICE_SOURCE_DIR "."
#endif

static const char property[] =
    "local rows = require 'apps.movies.rows'\n"
    "local cjson = require 'cjson.safe'\n"
    "return function(text)\n"
    "  local kind, v = rows.decode(text)\n"
    "  if not kind then\n"
    "    assert(type(v) == 'string' and v:find('^malformed JSON: '), tostring(v))\n"
    "    return\n"
    "  end\n"
    "  local list = kind == 'array' and v or { v }\n"
    "  for _, row in ipairs(list) do\n"
    "    rows.id(row)\n"
    "    local err = rows.check(row)\n"
    "    if err then\n"
    "      assert(type(err) == 'string' and err:find('^invalid row: '), tostring(err))\n"
    "    else\n"
    "      local text2 = rows.encode(row)\n"
    "      local back = assert(cjson.decode(text2))\n"
    "      assert(rows.check(back) == nil, 'encoded row is invalid: ' .. text2)\n"
    "      assert(rows.encode(back) == text2, 'encoding is not stable: ' .. text2)\n"
    "    end\n"
    "  end\n"
    "end\n";

static lua_State *L;

static void setup(void)
{
    L = luaL_newstate();
    luaL_openlibs(L);
    const char *root = getenv("SLUICE_ROOT");
    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/scripts/?.lua;%s", root ? root : SLUICE_SOURCE_DIR,
                    "/usr/share/lua/5.4/?.lua");
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
    if (luaL_loadstring(L, property) || lua_pcall(L, 0, 1, 0)) {
        fprintf(stderr, "fuzz_movies_rows: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_setfield(L, LUA_REGISTRYINDEX, "sluice.fuzz.check");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!L)
        setup();
    lua_getfield(L, LUA_REGISTRYINDEX, "sluice.fuzz.check");
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, 0)) {
        fprintf(stderr, "fuzz_movies_rows: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_gc(L, LUA_GCSTEP, 0);
    return 0;
}
