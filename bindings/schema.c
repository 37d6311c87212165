/* sluice.schema: a row schema (core/src/schema.c) for Lua. One call checks
 * a JSON text and returns its canonical encoding and the fields asked for,
 * with no Lua table built per row.
 *
 *   core.schema { { "id", "string|number", optional = true },
 *                 { "name", "string", nonempty = true },
 *                 { "minutes", "number", min = 0 } } → schema
 *   schema:check(text [, field, ...]) → canonical, value, ...
 *       or nil, "INVALID: <field> <rule>", "INVALID"
 *       or nil, "MALFORMED: <what> at byte N", "MALFORMED"
 */
#include <string.h>

#include "sluice_lua.h"
#include "sluice/error.h"
#include "sluice/schema.h"

typedef struct lua_schema {
    sluice_lua_handle h;           /* h.obj: the sluice_schema; no loop */
    sluice_schema_result result;   /* reused by every check */
} lua_schema;

static void schema_close(lua_State *L, sluice_lua_handle *h)
{
    (void)L;
    if (h->obj) sluice_schema_free(h->obj);
    sluice_schema_result_free(&((lua_schema *)h)->result);
}

/* "string|number" → SLUICE_JSON_* bits; "integer" is a number that must
 * be integral. Raises on an unknown name (misuse). */
static unsigned parse_types(lua_State *L, const char *spec, const char *field, int *integer)
{
    unsigned types = 0;
    const char *p = spec;
    while (*p) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == 6 && !memcmp(p, "string", 6)) types |= SLUICE_JSON_STRING;
        else if (n == 6 && !memcmp(p, "number", 6)) types |= SLUICE_JSON_NUMBER;
        else if (n == 7 && !memcmp(p, "integer", 7)) { types |= SLUICE_JSON_NUMBER; *integer = 1; }
        else if (n == 7 && !memcmp(p, "boolean", 7)) types |= SLUICE_JSON_BOOLEAN;
        else luaL_error(L, "schema field %s: unknown type '%s' (string, number, integer, boolean)",
                        field, spec);
        p += n;
        if (*p == '|') p++;
    }
    if (!types) luaL_error(L, "schema field %s: no type", field);
    return types;
}

static int opt_flag(lua_State *L, int idx, const char *key)
{
    int v;
    lua_getfield(L, idx, key);
    v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

static int opt_bound(lua_State *L, int idx, const char *key, const char *field, double *out)
{
    int present;
    lua_getfield(L, idx, key);
    present = !lua_isnil(L, -1);
    if (present) {
        if (lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "schema field %s: %s must be a number", field, key);
        *out = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    return present;
}

/* core.schema(fields) → schema */
static int schema_new(lua_State *L)
{
    size_t n, i;
    sluice_schema_field *fields;
    lua_schema *s;
    sluice_schema *schema = NULL;
    char err[200] = "";
    int rc;

    luaL_checktype(L, 1, LUA_TTABLE);
    n = sluice_rawlen(L, 1);
    if (n == 0) luaL_argerror(L, 1, "a schema needs at least one field");
    /* A Lua-owned scratch array: nothing to free if a check below raises.
     * The names stay anchored by the fields table. */
    fields = sluice_newuserdata(L, n * sizeof *fields);
    memset(fields, 0, n * sizeof *fields);
    for (i = 0; i < n; i++) {
        const char *name, *types;
        lua_rawgeti(L, 1, (int)i + 1);
        if (!lua_istable(L, -1)) luaL_error(L, "schema field %d: a table expected", (int)i + 1);
        lua_rawgeti(L, -1, 1);
        name = lua_tostring(L, -1);
        if (!name || lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "schema field %d: a name expected as its first item", (int)i + 1);
        lua_rawgeti(L, -2, 2);
        types = lua_tostring(L, -1);
        if (!types || lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "schema field %s: a type expected as its second item", name);
        fields[i].name = name;
        fields[i].types = parse_types(L, types, name, &fields[i].integer);
        lua_pop(L, 2);
        fields[i].optional = opt_flag(L, -1, "optional");
        fields[i].nonempty = opt_flag(L, -1, "nonempty");
        fields[i].has_min = opt_bound(L, -1, "min", name, &fields[i].min);
        fields[i].has_max = opt_bound(L, -1, "max", name, &fields[i].max);
        lua_pop(L, 1);
    }
    s = sluice_lua_handle_new(L, &sluice_lua_schema_type, sizeof *s, 0);
    rc = sluice_schema_new(&schema, fields, n, err, sizeof err);
    s->h.obj = schema;
    if (rc == SLUICE_ENOMEM) return sluice_lua_fail_core(L, rc, err);
    if (rc != SLUICE_OK) return luaL_error(L, "schema: %s", err);
    return 1;
}

static void push_value(lua_State *L, const sluice_schema_result *r, const sluice_schema_value *v)
{
    switch (v->type) {
    case SLUICE_JSON_STRING: lua_pushlstring(L, r->str + v->str_off, v->str_len); break;
    case SLUICE_JSON_NUMBER: lua_pushnumber(L, v->number); break;
    case SLUICE_JSON_BOOLEAN: lua_pushboolean(L, v->boolean); break;
    default: lua_pushnil(L); break;
    }
}

/* schema:check(text [, field, ...]) → canonical, values... */
static int schema_check(lua_State *L)
{
    lua_schema *s = sluice_lua_handle_check(L, 1, &sluice_lua_schema_type);
    size_t len;
    const char *text = luaL_checklstring(L, 2, &len);
    int top = lua_gettop(L), nnames = top - 2, i, rc;
    int few[8], *index = few;

    /* Field names first, each looked up once: a misspelt one is misuse,
     * whatever the text. More than a few: a Lua-owned array, so that
     * raising leaks nothing. */
    if (nnames > (int)(sizeof few / sizeof *few))
        index = lua_newuserdata(L, (size_t)nnames * sizeof *index);
    for (i = 0; i < nnames; i++) {
        size_t nlen;
        const char *name = luaL_checklstring(L, 3 + i, &nlen);
        index[i] = sluice_schema_index(((sluice_schema *)s->h.obj), name, nlen);
        if (index[i] < 0)
            return luaL_argerror(L, 3 + i, lua_pushfstring(L, "no field '%s' in this schema", name));
    }
    rc = sluice_schema_check(((sluice_schema *)s->h.obj), text, len, &s->result);
    if (rc != SLUICE_OK)
        return sluice_lua_fail(L, rc == SLUICE_EINVAL ? "INVALID" : sluice_error_name(rc),
                               "%s", s->result.error);
    luaL_checkstack(L, nnames + 1, "too many fields");
    lua_pushlstring(L, s->result.out, s->result.out_len);
    for (i = 0; i < nnames; i++)
        push_value(L, &s->result, &s->result.values[index[i]]);
    return 1 + nnames;
}

static int schema_tostring(lua_State *L)
{
    lua_schema *s = sluice_lua_handle_get(L, 1, &sluice_lua_schema_type);
    if (((sluice_schema *)s->h.obj))
        lua_pushfstring(L, "sluice.schema (%d field%s): %p", (int)sluice_schema_nfields(((sluice_schema *)s->h.obj)),
                        sluice_schema_nfields(((sluice_schema *)s->h.obj)) == 1 ? "" : "s", (void *)s);
    else
        lua_pushfstring(L, "sluice.schema (closed): %p", (void *)s);
    return 1;
}

static const luaL_Reg methods[] = { { "check", schema_check }, { NULL, NULL } };
static const luaL_Reg meta[] = { { "__tostring", schema_tostring }, { NULL, NULL } };
static const luaL_Reg functions[] = { { "schema", schema_new }, { NULL, NULL } };

const sluice_lua_type sluice_lua_schema_type = {
    .name = "sluice.schema", .close = schema_close, .closable = 1,
    .methods = methods, .meta = meta, .functions = functions,
};
