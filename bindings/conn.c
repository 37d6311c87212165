/* sluice.ws.conn: one WebSocket, server or client side. Fields (id, path,
 * query_string, peer, headers, data, and whatever the Lua library adds)
 * live in the userdata's user value table; methods in the metatable. */
#include <string.h>

#include "sluice_lua.h"
#include "sluice/ws.h"

typedef struct lua_conn {
    sluice_conn *conn;               /* NULL once closed */
    sluice_lua_conn_owner *owner;    /* handler refs: the server's, or own_owner */
    sluice_lua_conn_owner own_owner; /* used by client connections */
    int self_ref;                    /* anchors the userdata while open */
} lua_conn;

static const char handler_failed_frame[] = "{\"error\":\"handler failed\",\"code\":\"HANDLER\"}";

static lua_conn *check_conn(lua_State *L)
{
    return luaL_checkudata(L, 1, SLUICE_CONN_MT);
}

static void add_header(void *ud, const char *name, const char *value)
{
    lua_State *L = ud;
    lua_pushstring(L, value);
    lua_setfield(L, -2, name);
}

/* Give the userdata on top of the stack its field table, anchor it while
 * the connection is open, and link it from the core connection. */
static void attach(lua_State *L, lua_conn *lc, sluice_conn *c, const char *url)
{
    const char *peer = sluice_conn_peer(c);
    lc->conn = c;
    lua_createtable(L, 0, 8);
    lua_pushinteger(L, (lua_Integer)sluice_conn_id(c));
    lua_setfield(L, -2, "id");
    lua_pushstring(L, sluice_conn_path(c));
    lua_setfield(L, -2, "path");
    lua_pushstring(L, sluice_conn_query(c));
    lua_setfield(L, -2, "query_string");
    lua_pushstring(L, peer ? peer : "");
    lua_setfield(L, -2, "peer");
    if (url) {
        lua_pushstring(L, url);
        lua_setfield(L, -2, "url");
    }
    lua_newtable(L);
    sluice_conn_headers(c, add_header, L);
    lua_setfield(L, -2, "headers");
    lua_newtable(L);
    lua_setfield(L, -2, "data");
    sluice_setuservalue(L, -2);
    lua_pushvalue(L, -1);
    lc->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    sluice_conn_set_userdata(c, lc);
}

/* Pushes a new userdata wrapping c, with its field table filled. */
static lua_conn *push_conn(lua_State *L, sluice_lua_conn_owner *o, sluice_conn *c)
{
    lua_conn *lc = sluice_newuserdata(L, sizeof *lc);
    memset(lc, 0, sizeof *lc);
    lc->owner = o;
    lc->self_ref = LUA_NOREF;
    luaL_getmetatable(L, SLUICE_CONN_MT);
    lua_setmetatable(L, -2);
    attach(L, lc, c, NULL);
    return lc;
}

void sluice_lua_conn_wrap(lua_State *L, sluice_lua_conn_owner *o, sluice_conn *c)
{
    push_conn(L, o, c);
}

static void conn_opened(void *ud, sluice_conn *c)
{
    sluice_lua_conn_owner *o = ud;
    sluice_lua_loop *ctx = o->owner.ctx;
    lua_State *L = ctx->L;
    lua_conn *lc = sluice_conn_userdata(c);

    if (o->closing_from_gc) return;
    if (lc == NULL) lc = push_conn(L, o, c);      /* a server connection */
    else lua_rawgeti(L, LUA_REGISTRYINDEX, lc->self_ref);
    if (!sluice_lua_pushref(L, o->open_ref)) { lua_pop(L, 1); return; }
    lua_insert(L, -2);
    sluice_lua_call(ctx, 1, 0, "open handler");
}

static void conn_message(void *ud, sluice_conn *c, const char *data, size_t len, int binary)
{
    sluice_lua_conn_owner *o = ud;
    sluice_lua_loop *ctx = o->owner.ctx;
    lua_State *L = ctx->L;
    lua_conn *lc = sluice_conn_userdata(c);

    if (lc == NULL || o->closing_from_gc) return;
    if (!sluice_lua_pushref(L, o->message_ref)) return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, lc->self_ref);
    lua_pushlstring(L, data, len);
    lua_pushboolean(L, binary);
    if (sluice_lua_call(ctx, 3, 0, "message handler") != 0 && lc->conn)
        /* Tell the sender; the connection stays open. */
        sluice_conn_send(lc->conn, handler_failed_frame, sizeof handler_failed_frame - 1, 0);
}

static void conn_closed(void *ud, sluice_conn *c, int code, const char *reason)
{
    sluice_lua_conn_owner *o = ud;
    sluice_lua_loop *ctx = o->owner.ctx;
    lua_State *L = ctx->L;
    lua_conn *lc = sluice_conn_userdata(c);

    if (lc == NULL) return;
    sluice_conn_set_userdata(c, NULL);
    lc->conn = NULL;
    if (!o->closing_from_gc) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, lc->self_ref);
        if (sluice_lua_pushref(L, o->close_ref)) {
            lua_insert(L, -2);
            lua_pushinteger(L, code);
            lua_pushstring(L, reason ? reason : "");
            sluice_lua_call(ctx, 3, 0, "close handler");
        } else lua_pop(L, 1);
        sluice_lua_unref(L, &lc->self_ref);
        if (lc->owner == &lc->own_owner)
            sluice_lua_conn_owner_release(L, &lc->own_owner);
    }
}

void sluice_lua_conn_handlers(sluice_conn_handlers *h)
{
    h->open = conn_opened;
    h->message = conn_message;
    h->close = conn_closed;
}

void sluice_lua_conn_owner_init(lua_State *L, int idx, sluice_lua_conn_owner *o)
{
    o->open_ref = sluice_lua_function_ref(L, idx, "open", 0);
    o->message_ref = sluice_lua_function_ref(L, idx, "message", 0);
    o->close_ref = sluice_lua_function_ref(L, idx, "close", 0);
}

void sluice_lua_conn_owner_release(lua_State *L, sluice_lua_conn_owner *o)
{
    sluice_lua_unref(L, &o->open_ref);
    sluice_lua_unref(L, &o->message_ref);
    sluice_lua_unref(L, &o->close_ref);
    sluice_lua_disown(L, &o->owner);
}

/* conn:send(data [, binary]) → true | nil, err, code */
static int conn_send(lua_State *L)
{
    lua_conn *lc = check_conn(L);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    int rc;
    if (lc->conn == NULL) return sluice_lua_fail_core(L, SLUICE_ECLOSED, "connection is closed");
    rc = sluice_conn_send(lc->conn, data, len, lua_toboolean(L, 3));
    if (rc) return sluice_lua_fail_core(L, rc,
        rc == SLUICE_EFULL ? "send queue full, connection closed with 1008" : NULL);
    lua_pushboolean(L, 1);
    return 1;
}

/* The core connection of the value at idx if it is a conn userdata (the
 * conn metatable is at mt_idx), else NULL; NULL once closed. */
static sluice_conn *conn_at(lua_State *L, int idx, int mt_idx)
{
    lua_conn *lc = lua_touserdata(L, idx);
    int is_conn;
    if (lc == NULL || !lua_getmetatable(L, idx)) return NULL;
    is_conn = lua_rawequal(L, -1, mt_idx);
    lua_pop(L, 1);
    return is_conn ? lc->conn : NULL;
}

/* core.broadcast(conns, data [, binary]) → number queued
 * Sends data to every connection that is a key or a value of the table
 * conns (a set {[conn] = true} or a map {[id] = conn}), with one copy of
 * data shared by their queues. Connections that are closed, or whose
 * queue is full (closed with 1008, as conn:send does), are not counted. */
static int conn_broadcast(lua_State *L)
{
    size_t len;
    const char *data;
    int binary, n = 0;
    sluice_payload *p;

    luaL_checktype(L, 1, LUA_TTABLE);
    data = luaL_checklstring(L, 2, &len);
    binary = lua_toboolean(L, 3);
    lua_settop(L, 2);
    luaL_getmetatable(L, SLUICE_CONN_MT);      /* index 3 */
    p = sluice_payload_new(data, len);
    if (p == NULL) return sluice_lua_fail_core(L, SLUICE_ENOMEM, NULL);
    /* Nothing below raises while p is held: lua_next on keys it gave. */
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        sluice_conn *c = conn_at(L, -2, 3);
        if (c == NULL) c = conn_at(L, -1, 3);
        if (c && sluice_conn_send_payload(c, p, binary) == SLUICE_OK) n++;
        lua_pop(L, 1);
    }
    sluice_payload_release(p);
    lua_pushinteger(L, n);
    return 1;
}

/* conn:close([code [, reason]]) → true | nil, err, code */
static int conn_close(lua_State *L)
{
    lua_conn *lc = check_conn(L);
    int code = (int)luaL_optinteger(L, 2, 1000);
    const char *reason = luaL_optstring(L, 3, "");
    int rc;
    luaL_argcheck(L, code == 1000 || (code >= 3000 && code <= 4999) ||
                     (code >= 1001 && code <= 1014 && code != 1004 && code != 1005 && code != 1006),
                  2, "not a close code a server may send");
    luaL_argcheck(L, strlen(reason) <= 123, 3, "reason longer than 123 bytes");
    if (lc->conn == NULL) return sluice_lua_fail_core(L, SLUICE_ECLOSED, "connection is closed");
    rc = sluice_conn_close(lc->conn, code, reason);
    if (rc) return sluice_lua_fail_core(L, rc, NULL);
    lua_pushboolean(L, 1);
    return 1;
}

static int conn_is_open(lua_State *L)
{
    lua_conn *lc = check_conn(L);
    lua_pushboolean(L, lc->conn != NULL && sluice_conn_is_open(lc->conn));
    return 1;
}

static int conn_queued(lua_State *L)
{
    lua_conn *lc = check_conn(L);
    lua_pushinteger(L, lc->conn ? (lua_Integer)sluice_conn_queued_bytes(lc->conn) : 0);
    return 1;
}

static int conn_pause(lua_State *L)
{
    lua_conn *lc = check_conn(L);
    if (lc->conn) sluice_conn_pause_reading(lc->conn, lua_isnoneornil(L, 2) || lua_toboolean(L, 2));
    return 0;
}

static int conn_resume(lua_State *L)
{
    lua_conn *lc = check_conn(L);
    if (lc->conn) sluice_conn_pause_reading(lc->conn, 0);
    return 0;
}

static int conn_tostring(lua_State *L)
{
    lua_conn *lc = check_conn(L);
    sluice_getuservalue(L, 1);
    lua_getfield(L, -1, "id");
    lua_getfield(L, -2, "path");
    lua_pushfstring(L, "%s %s %s (%s)", SLUICE_CONN_MT, lua_tostring(L, -2),
                    lua_tostring(L, -1), lc->conn ? "open" : "closed");
    return 1;
}

/* __gc: the core connection may outlive the userdata only at state close;
 * detach so the core never calls back into freed memory. */
static int conn_gc(lua_State *L)
{
    lua_conn *lc = check_conn(L);
    if (lc->conn) {
        sluice_conn_set_userdata(lc->conn, NULL);
        sluice_conn_close(lc->conn, 1001, "going away");
        lc->conn = NULL;
    }
    return 0;
}

/* core.connect(loop, url, handlers [, options]) → conn | nil, err, code */
static int conn_connect(lua_State *L)
{
    const char *url = luaL_checkstring(L, 2);
    sluice_client_config cfg;
    sluice_conn_handlers h;
    sluice_conn *c = NULL;
    lua_conn *lc;
    char err[256] = "";
    int rc;

    sluice_lua_checkloop(L, 1);
    luaL_checktype(L, 3, LUA_TTABLE);
    memset(&cfg, 0, sizeof cfg);
    if (!lua_isnoneornil(L, 4)) {
        luaL_checktype(L, 4, LUA_TTABLE);
        lua_getfield(L, 4, "max_message");
        cfg.max_message = (size_t)luaL_optnumber(L, -1, 0);
        lua_getfield(L, 4, "send_queue");
        cfg.send_queue_max = (size_t)luaL_optnumber(L, -1, 0);
        lua_getfield(L, 4, "protocol");
        cfg.protocol = luaL_optstring(L, -1, NULL);
        lua_getfield(L, 4, "headers");
        cfg.headers = sluice_lua_string_pairs(L, lua_gettop(L), "headers");
    }
    /* The userdata exists before the connection, so nothing leaks if
     * creating it raises. */
    lc = sluice_newuserdata(L, sizeof *lc);
    memset(lc, 0, sizeof *lc);
    lc->self_ref = LUA_NOREF;
    lc->owner = &lc->own_owner;
    lc->own_owner.open_ref = lc->own_owner.message_ref = lc->own_owner.close_ref = LUA_NOREF;
    lc->own_owner.owner.loop_ref = LUA_NOREF;
    luaL_getmetatable(L, SLUICE_CONN_MT);
    lua_setmetatable(L, -2);
    sluice_lua_conn_owner_init(L, 3, &lc->own_owner);
    sluice_lua_own(L, 1, &lc->own_owner.owner);
    lc->own_owner.owner.ctx->L = L;

    sluice_lua_conn_handlers(&h);
    rc = sluice_client_connect(lc->own_owner.owner.ctx->loop, url, &cfg, &h, &lc->own_owner,
                               &c, err, sizeof err);
    if (rc) {
        sluice_lua_conn_owner_release(L, &lc->own_owner);
        return sluice_lua_fail_core(L, rc, err);
    }
    attach(L, lc, c, url);
    return 1;
}

void sluice_lua_open_conn(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "send", conn_send },
        { "close", conn_close },
        { "is_open", conn_is_open },
        { "queued", conn_queued },
        { "pause", conn_pause },
        { "resume", conn_resume },
        { NULL, NULL }
    };
    static const luaL_Reg meta[] = {
        { "__tostring", conn_tostring },
        { "__gc", conn_gc },
        { NULL, NULL }
    };
    sluice_lua_newfieldclass(L, SLUICE_CONN_MT, methods, meta);
    lua_pushcfunction(L, conn_connect);
    lua_setfield(L, -2, "connect");
    lua_pushcfunction(L, conn_broadcast);
    lua_setfield(L, -2, "broadcast");
}
