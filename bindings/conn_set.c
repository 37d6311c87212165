/* sluice.ws.conn_set: a set of WebSocket connections kept in C
 * (sluice_conn_set), so that a broadcast to them is one pass with no Lua
 * per connection. A connection that closes leaves every set by itself. */
#include "sluice_lua.h"
#include "sluice/ws.h"

/* h.obj: the sluice_conn_set. Not anchored: collected with its last
 * reference (its members then simply leave it). */

static sluice_conn_set *check_set(lua_State *L)
{
    return sluice_lua_handle_obj(L, 1, &sluice_lua_conn_set_type);
}

/* core.conn_set() → set */
static int set_new(lua_State *L)
{
    sluice_lua_handle *h = sluice_lua_handle_new(L, &sluice_lua_conn_set_type, sizeof *h, 0);
    h->obj = sluice_conn_set_new();
    if (h->obj == NULL) return sluice_lua_handle_fail(L, h, SLUICE_ENOMEM, NULL);
    return 1;
}

/* set:add(conn) → true (added) | false (a member already) |
 * nil, "CLOSED: connection is closed", "CLOSED" */
static int set_add(lua_State *L)
{
    sluice_conn_set *s = check_set(L);
    sluice_conn *c = sluice_lua_conn_check(L, 2);
    int had, rc;
    if (c == NULL) return sluice_lua_fail_core(L, SLUICE_ECLOSED, "connection is closed");
    had = sluice_conn_set_has(s, c);
    rc = sluice_conn_set_add(s, c);
    if (rc) return sluice_lua_fail_core(L, rc, rc == SLUICE_ECLOSED ? "connection is closed" : NULL);
    lua_pushboolean(L, !had);
    return 1;
}

/* set:remove(conn) → true if it was a member (a closed one is not) */
static int set_remove(lua_State *L)
{
    sluice_conn_set *s = check_set(L);
    sluice_conn *c = sluice_lua_conn_check(L, 2);
    lua_pushboolean(L, c != NULL && sluice_conn_set_remove(s, c));
    return 1;
}

static int set_has(lua_State *L)
{
    sluice_conn_set *s = check_set(L);
    sluice_conn *c = sluice_lua_conn_check(L, 2);
    lua_pushboolean(L, c != NULL && sluice_conn_set_has(s, c));
    return 1;
}

/* set:count(), #set */
static int set_count(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)sluice_conn_set_count(check_set(L)));
    return 1;
}

/* set:broadcast(data [, binary]) → number queued
 * One copy of data shared by every member's queue; a member whose queue
 * is full is closed with 1008 and not counted (as conn:send). */
static int set_broadcast(lua_State *L)
{
    sluice_conn_set *s = check_set(L);
    size_t len, n;
    const char *data = luaL_checklstring(L, 2, &len);
    int rc = sluice_conn_set_broadcast(s, data, len, lua_toboolean(L, 3), &n);
    if (rc) return sluice_lua_fail_core(L, rc, NULL);
    lua_pushinteger(L, (lua_Integer)n);
    return 1;
}

static int set_tostring(lua_State *L)
{
    sluice_lua_handle *h = sluice_lua_handle_get(L, 1, &sluice_lua_conn_set_type);
    if (h->obj == NULL) lua_pushfstring(L, "%s (closed)", sluice_lua_conn_set_type.name);
    else lua_pushfstring(L, "%s (%d)", sluice_lua_conn_set_type.name,
                         (int)sluice_conn_set_count(h->obj));
    return 1;
}

static void set_free(void *s) { sluice_conn_set_free(s); }

static const luaL_Reg methods[] = {
    { "add", set_add }, { "remove", set_remove }, { "has", set_has },
    { "count", set_count }, { "broadcast", set_broadcast }, { NULL, NULL }
};
static const luaL_Reg meta[] = { { "__len", set_count }, { "__tostring", set_tostring }, { NULL, NULL } };
static const luaL_Reg functions[] = { { "conn_set", set_new }, { NULL, NULL } };

const sluice_lua_type sluice_lua_conn_set_type = {
    .name = "sluice.ws.conn_set", .free = set_free, .closable = 1,
    .methods = methods, .meta = meta, .functions = functions,
};
