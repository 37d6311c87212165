/* The movies app's row decoder (scripts/apps/movies/rows.lua) in an
 * embedded Lua 5.4: any text gives either "malformed JSON: …", or rows that
 * are rejected with "invalid row: …" or accepted, re-encoded, and decode
 * back to the same valid row. The app's row schema (core/src/schema.c,
 * rows.SCHEMA) must agree: what it accepts, rows.lua accepts and encodes to
 * the same text; a rule it says is broken, rows.lua refuses too (but for a
 * field given twice, where lua-cjson keeps the last). The app's declared
 * route (core/src/ingest.c, arrays on) must agree too: what it takes
 * decodes with rows.lua to as many rows, each valid, encoded to the same
 * text, with the same key (actorId) and ack id. A Lua error is a finding. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "sluice/error.h"
#include "sluice/ingest.h"
#include "sluice/schema.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#ifndef SLUICE_SOURCE_DIR
#define SLUICE_SOURCE_DIR "."
#endif

static const char property[] =
    "local rows = require 'apps.movies.rows'\n"
    "local cjson = require 'cjson.safe'\n"
    "return function(text, c_out, c_code, c_error, c_rows)\n"
    "  local kind, v = rows.decode(text)\n"
    "  if c_rows then\n"
    "    assert(kind == 'array' or kind == 'object', 'the route took a text that is not rows')\n"
    "    local list = kind == 'array' and v or { v }\n"
    "    assert(#list == #c_rows, 'the route took ' .. #c_rows .. ' rows, rows.lua has ' .. #list)\n"
    "    for i, row in ipairs(list) do\n"
    "      assert(rows.check(row) == nil, 'the route took an invalid row: ' .. tostring(rows.check(row)))\n"
    "      local c = c_rows[i]\n"
    "      assert(rows.encode(row) == c[1], 'route texts differ: ' .. c[1] .. ' vs ' .. rows.encode(row))\n"
    "      assert(row.actorId == c[2], 'route keys differ')\n"
    "      local id = rows.id(row)\n"
    "      assert((id ~= nil and rows.json(id) or nil) == c[3], 'route ids differ: ' .. tostring(c[3]))\n"
    "    end\n"
    "  end\n"
    "  if c_out then\n"
    "    assert(kind == 'object', 'schema accepted a text rows.lua does not decode to an object')\n"
    "    assert(rows.check(v) == nil, 'schema accepted an invalid row: ' .. tostring(rows.check(v)))\n"
    "    assert(rows.encode(v) == c_out, 'texts differ: ' .. c_out .. ' vs ' .. rows.encode(v))\n"
    "  elseif c_code == 'INVALID' and kind == 'object' and not c_error:find('given twice', 1, true) then\n"
    "    assert(rows.check(v) ~= nil, 'schema refused (' .. c_error .. '), rows.lua accepted')\n"
    "  end\n"
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
static sluice_schema *schema;
static sluice_schema_result result;
static sluice_ingest *route;
static sluice_ingest_batch batch;

/* rows.SCHEMA, as the app builds it through sluice.schema. */
static const sluice_schema_field movies_fields[] = {
    { .name = "id", .types = SLUICE_JSON_STRING | SLUICE_JSON_NUMBER, .optional = 1 },
    { .name = "actorName", .types = SLUICE_JSON_STRING, .nonempty = 1 },
    { .name = "actorId", .types = SLUICE_JSON_STRING, .nonempty = 1 },
    { .name = "movieId", .types = SLUICE_JSON_STRING, .nonempty = 1 },
    { .name = "movieName", .types = SLUICE_JSON_STRING, .nonempty = 1 },
    { .name = "movieMinutes", .types = SLUICE_JSON_NUMBER, .has_min = 1, .min = 0 },
};

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
    char err[200];
    if (sluice_schema_new(&schema, movies_fields, 6, err, sizeof err) != SLUICE_OK) {
        fprintf(stderr, "fuzz_movies_rows: %s\n", err);
        abort();
    }
    sluice_ingest_config rc = { schema, "movie-results", "actorId", "id", 1 };
    if (sluice_ingest_new(&rc, &route, err, sizeof err) != SLUICE_OK) {
        fprintf(stderr, "fuzz_movies_rows: %s\n", err);
        abort();
    }
}

/* The rows the route takes from data, as { {value, key, id}, ... }, or nil. */
static void push_route_rows(const uint8_t *data, size_t size)
{
    if (sluice_ingest_parse(route, (const char *)data, size, &batch) != SLUICE_OK) {
        lua_pushnil(L);
        return;
    }
    size_t n = sluice_ingest_count(&batch);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        sluice_ingest_row r;
        sluice_ingest_row_at(&batch, i, &r);
        lua_createtable(L, 3, 0);
        lua_pushlstring(L, r.value, r.value_len);
        lua_rawseti(L, -2, 1);
        if (r.key) lua_pushlstring(L, r.key, r.key_len); else lua_pushnil(L);
        lua_rawseti(L, -2, 2);
        if (r.id) lua_pushlstring(L, r.id, r.id_len); else lua_pushnil(L);
        lua_rawseti(L, -2, 3);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!L)
        setup();
    lua_getfield(L, LUA_REGISTRYINDEX, "sluice.fuzz.check");
    lua_pushlstring(L, (const char *)data, size);
    int rc = sluice_schema_check(schema, (const char *)data, size, &result);
    if (rc == SLUICE_OK) {
        lua_pushlstring(L, result.out, result.out_len);
        lua_pushnil(L);
        lua_pushnil(L);
    } else {
        lua_pushnil(L);
        lua_pushstring(L, rc == SLUICE_EINVAL ? "INVALID" : sluice_error_name(rc));
        lua_pushstring(L, result.error);
    }
    push_route_rows(data, size);
    if (lua_pcall(L, 5, 0, 0)) {
        fprintf(stderr, "fuzz_movies_rows: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_gc(L, LUA_GCSTEP, 0);
    return 0;
}
