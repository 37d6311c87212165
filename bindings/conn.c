/* sluice.ws.conn: one WebSocket, server or client side. Fields (id, path,
 * query_string, peer, headers, data, and whatever the Lua library adds)
 * live in the userdata's user value table; methods in the metatable. */
#include <string.h>

#include "sluice_lua.h"
#include "sluice/ws.h"

typedef struct lua_conn {
    sluice_lua_handle h;       /* anchored while open; a client connection
                                * also holds its loop and handlers here */
    sluice_conn *conn;         /* NULL once closed */
    sluice_lua_handle *owner;  /* whose handlers: the server's, or h */
    sluice_lua_route *route;   /* its path's declared route (server side) */
    sluice_ingest_peer *peer;  /* its row count, shared with rows in flight */
} lua_conn;

static const char handler_failed_frame[] = "{\"error\":\"handler failed\",\"code\":\"HANDLER\"}";

/* Only from __gc (a connection is not closed by its handle): the core
 * connection may outlive the userdata only at state close; detach so the
 * core never calls back into freed memory. */
static void conn_detach(lua_State *L, sluice_lua_handle *h)
{
    lua_conn *lc = (lua_conn *)h;
    (void)L;
    if (lc->conn == NULL) return;
    sluice_ingest_peer_detach(lc->peer);
    lc->peer = NULL;
    sluice_conn_set_userdata(lc->conn, NULL);
    sluice_conn_close(lc->conn, 1001, "going away");
    lc->conn = NULL;
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
    sluice_conn_headers(c, sluice_lua_add_header, L);
    lua_setfield(L, -2, "headers");
    lua_newtable(L);
    lua_setfield(L, -2, "data");
    sluice_setuservalue(L, -2);
    sluice_lua_handle_anchor(L, &lc->h);
    sluice_conn_set_userdata(c, lc);
}

static void conn_opened(void *ud, sluice_conn *c)
{
    sluice_lua_handle *o = ud;
    lua_State *L = o->ctx->L;
    lua_conn *lc = sluice_conn_userdata(c);

    if (o->from_gc) return;
    if (lc == NULL) {                   /* a server connection */
        lc = sluice_lua_handle_new(L, &sluice_lua_conn_type, sizeof *lc, 0);
        lc->owner = o;
        lc->route = sluice_lua_server_route(o, sluice_conn_path(c));
        attach(L, lc, c, NULL);
    } else lua_rawgeti(L, LUA_REGISTRYINDEX, lc->h.self_ref);
    if (!sluice_lua_handle_callback(o, SLUICE_LUA_CONN_OPEN)) { lua_pop(L, 1); return; }
    lua_insert(L, -2);
    sluice_lua_call(o->ctx, 1, 0, "open handler");
}

static void conn_message(void *ud, sluice_conn *c, const char *data, size_t len, int binary)
{
    sluice_lua_handle *o = ud;
    lua_State *L = o->ctx->L;
    lua_conn *lc = sluice_conn_userdata(c);

    if (lc == NULL || o->from_gc) return;
    /* A declared route takes what is its own without entering Lua. */
    if (!binary && lc->route && lc->route->decl &&
        sluice_lua_route_message(o->ctx, lc->route, lc->h.self_ref, c, &lc->peer, data, len))
        return;
    if (!sluice_lua_handle_callback(o, SLUICE_LUA_CONN_MESSAGE)) return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, lc->h.self_ref);
    lua_pushlstring(L, data, len);
    lua_pushboolean(L, binary);
    if (sluice_lua_call(o->ctx, 3, 0, "message handler") != 0 && lc->conn)
        /* Tell the sender; the connection stays open. */
        sluice_conn_send(lc->conn, handler_failed_frame, sizeof handler_failed_frame - 1, 0);
}

static void conn_closed(void *ud, sluice_conn *c, int code, const char *reason)
{
    sluice_lua_handle *o = ud;
    lua_State *L = o->ctx->L;
    lua_conn *lc = sluice_conn_userdata(c);

    if (lc == NULL) return;
    sluice_conn_set_userdata(c, NULL);
    lc->conn = NULL;
    lc->route = NULL;
    sluice_ingest_peer_detach(lc->peer);
    lc->peer = NULL;
    if (o->from_gc) return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, lc->h.self_ref);
    if (sluice_lua_handle_callback(o, SLUICE_LUA_CONN_CLOSE)) {
        lua_insert(L, -2);
        lua_pushinteger(L, code);
        lua_pushstring(L, reason ? reason : "");
        sluice_lua_call(o->ctx, 3, 0, "close handler");
    } else lua_pop(L, 1);
    sluice_lua_handle_release(L, &lc->h);
}

void sluice_lua_conn_handlers(sluice_conn_handlers *h)
{
    h->open = conn_opened;
    h->message = conn_message;
    h->close = conn_closed;
}

void sluice_lua_conn_refs(lua_State *L, sluice_lua_handle *o, int idx)
{
    sluice_lua_handle_ref(L, o, SLUICE_LUA_CONN_OPEN, idx, "open", 0);
    sluice_lua_handle_ref(L, o, SLUICE_LUA_CONN_MESSAGE, idx, "message", 0);
    sluice_lua_handle_ref(L, o, SLUICE_LUA_CONN_CLOSE, idx, "close", 0);
}

/* conn:send(data [, binary]) → true | nil, err, code */
static int conn_send(lua_State *L)
{
    lua_conn *lc = sluice_lua_handle_get(L, 1, &sluice_lua_conn_type);
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

struct sluice_conn *sluice_lua_conn_check(lua_State *L, int idx)
{
    return ((lua_conn *)sluice_lua_handle_get(L, idx, &sluice_lua_conn_type))->conn;
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
    luaL_getmetatable(L, sluice_lua_conn_type.name);      /* index 3 */
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
    lua_conn *lc = sluice_lua_handle_get(L, 1, &sluice_lua_conn_type);
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

/* conn:next_row() → n: numbers a row of this connection (1, 2, ...), in
 * the count its declared route numbers its rows with. */
static int conn_next_row(lua_State *L)
{
    lua_conn *lc = sluice_lua_handle_get(L, 1, &sluice_lua_conn_type);
    if (lc->conn == NULL) return sluice_lua_fail_core(L, SLUICE_ECLOSED, "connection is closed");
    if (!lc->peer && !(lc->peer = sluice_ingest_peer_new(lc->conn)))
        return sluice_lua_fail_core(L, SLUICE_ENOMEM, NULL);
    lua_pushinteger(L, (lua_Integer)sluice_ingest_peer_next_row(lc->peer));
    return 1;
}

static int conn_is_open(lua_State *L)
{
    lua_conn *lc = sluice_lua_handle_get(L, 1, &sluice_lua_conn_type);
    lua_pushboolean(L, lc->conn != NULL && sluice_conn_is_open(lc->conn));
    return 1;
}

static int conn_queued(lua_State *L)
{
    lua_conn *lc = sluice_lua_handle_get(L, 1, &sluice_lua_conn_type);
    lua_pushinteger(L, lc->conn ? (lua_Integer)sluice_conn_queued_bytes(lc->conn) : 0);
    return 1;
}

static int conn_pause(lua_State *L)
{
    lua_conn *lc = sluice_lua_handle_get(L, 1, &sluice_lua_conn_type);
    if (lc->conn) sluice_conn_pause_reading(lc->conn, lua_isnoneornil(L, 2) || lua_toboolean(L, 2));
    return 0;
}

static int conn_resume(lua_State *L)
{
    lua_conn *lc = sluice_lua_handle_get(L, 1, &sluice_lua_conn_type);
    if (lc->conn) sluice_conn_pause_reading(lc->conn, 0);
    return 0;
}

/* conn:rate_limit({ messages =, bytes =, burst =, burst_bytes =,
 * policy = "pause"|"close" } | nil): token buckets on what the peer sends
 * (sluice_conn_set_rate); nil removes them. */
static int conn_rate_limit(lua_State *L)
{
    lua_conn *lc = sluice_lua_handle_get(L, 1, &sluice_lua_conn_type);
    sluice_rate r;
    const char *policy;
    if (lua_isnoneornil(L, 2)) {
        if (lc->conn) sluice_conn_set_rate(lc->conn, NULL);
        return 0;
    }
    luaL_checktype(L, 2, LUA_TTABLE);
    memset(&r, 0, sizeof r);
    r.messages = sluice_lua_opt_number(L, 2, "messages", 0, 0, 1e15);
    r.bytes = sluice_lua_opt_number(L, 2, "bytes", 0, 0, 1e15);
    r.burst = sluice_lua_opt_number(L, 2, "burst", 0, 0, 1e15);
    r.burst_bytes = sluice_lua_opt_number(L, 2, "burst_bytes", 0, 0, 1e15);
    policy = sluice_lua_opt_string(L, 2, "policy", "pause");
    if (strcmp(policy, "pause") && strcmp(policy, "close"))
        return luaL_argerror(L, 2, "'policy' must be \"pause\" or \"close\"");
    r.close = policy[0] == 'c';
    if (lc->conn) sluice_conn_set_rate(lc->conn, &r);
    return 0;
}

static int conn_tostring(lua_State *L)
{
    lua_conn *lc = sluice_lua_handle_get(L, 1, &sluice_lua_conn_type);
    sluice_getuservalue(L, 1);
    lua_getfield(L, -1, "id");
    lua_getfield(L, -2, "path");
    lua_pushfstring(L, "%s %s %s (%s)", sluice_lua_conn_type.name, lua_tostring(L, -2),
                    lua_tostring(L, -1), lc->conn ? "open" : "closed");
    return 1;
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

    luaL_checktype(L, 3, LUA_TTABLE);
    sluice_lua_opt_table(L, 4);
    memset(&cfg, 0, sizeof cfg);
    cfg.max_message = sluice_lua_opt_size(L, 4, "max_message");
    cfg.send_queue_max = sluice_lua_opt_size(L, 4, "send_queue");
    cfg.protocol = sluice_lua_opt_string(L, 4, "protocol", NULL);
    lua_settop(L, 4);
    lua_getfield(L, 4, "headers");
    cfg.headers = sluice_lua_string_pairs(L, 5, "headers");
    /* The userdata exists before the connection, so nothing leaks if
     * creating it raises. */
    lc = sluice_lua_handle_new(L, &sluice_lua_conn_type, sizeof *lc, 1);
    lc->owner = &lc->h;
    sluice_lua_conn_refs(L, &lc->h, 3);
    sluice_lua_conn_handlers(&h);
    rc = sluice_client_connect(lc->h.ctx->loop, url, &cfg, &h, &lc->h, &c, err, sizeof err);
    if (rc) return sluice_lua_handle_fail(L, &lc->h, rc, err);
    attach(L, lc, c, url);
    return 1;
}

static const luaL_Reg methods[] = {
    { "send", conn_send }, { "close", conn_close }, { "is_open", conn_is_open },
    { "queued", conn_queued }, { "pause", conn_pause }, { "resume", conn_resume },
    { "rate_limit", conn_rate_limit }, { "next_row", conn_next_row }, { NULL, NULL }
};
static const luaL_Reg meta[] = { { "__tostring", conn_tostring }, { NULL, NULL } };
static const luaL_Reg functions[] = {
    { "connect", conn_connect }, { "broadcast", conn_broadcast }, { NULL, NULL }
};

const sluice_lua_type sluice_lua_conn_type = {
    .name = "sluice.ws.conn", .close = conn_detach, .fields = 1,
    .methods = methods, .meta = meta, .functions = functions,
};
