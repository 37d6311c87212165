/* sluice.server: a listening WebSocket + HTTP server. Routing is Lua's:
 * the server calls accept(path), open/message/close(conn, ...),
 * http_match(method, path) and http(req) functions given at creation. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "sluice_lua.h"
#include "sluice/ws.h"

static const char internal_error_body[] = "{\"error\":\"handler failed\",\"code\":\"HANDLER\"}";

/* refs: open/message/close of its connections (SLUICE_LUA_CONN_*), then
 * these; anchored until closed. */
enum { ACCEPT = 3, HTTP_MATCH, HTTP, UPGRADE };

/* h.obj: the sluice_server. h is the ud of every core callback. From
 * close(), connections still open get their close handlers (1006); from
 * __gc no Lua is called. routes: the declared routes by path (route.c),
 * freed at __gc, after every connection pointing to them is gone. */
typedef struct lua_server {
    sluice_lua_handle h;
    sluice_lua_route *routes;
} lua_server;

sluice_lua_route *sluice_lua_server_route(sluice_lua_handle *o, const char *path)
{
    lua_server *ls = (lua_server *)o;
    sluice_lua_route *r;
    size_t len;
    if (o->type != &sluice_lua_server_type) return NULL;
    for (r = ls->routes; r; r = r->next)
        if (strcmp(r->path, path) == 0) return r;
    len = strlen(path);
    r = calloc(1, sizeof *r + len + 1);
    if (!r) return NULL;
    memcpy(r->path, path, len + 1);
    r->producer_ref = r->transform_ref = r->tap_ref = LUA_NOREF;
    r->next = ls->routes;
    ls->routes = r;
    return r;
}

static void server_collect(lua_State *L, sluice_lua_handle *h)
{
    lua_server *ls = (lua_server *)h;
    while (ls->routes) {
        sluice_lua_route *r = ls->routes;
        ls->routes = r->next;
        sluice_lua_route_free(L, r);
    }
}

/* A Lua predicate; an error or a missing function counts as `dflt`. */
static int ask(sluice_lua_handle *h, int slot, const char *a, const char *b, int dflt)
{
    lua_State *L = h->ctx->L;
    int nargs = 1, answer;
    if (!sluice_lua_handle_callback(h, slot)) return dflt;
    lua_pushstring(L, a);
    if (b) { lua_pushstring(L, b); nargs = 2; }
    if (sluice_lua_call(h->ctx, nargs, 1, "route lookup") != 0) return dflt;
    answer = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return answer;
}

static int server_ws_accept(void *ud, const char *path)
{
    return ask(ud, ACCEPT, path, NULL, 0);
}

/* headers[name] for a header lws does not list, during the upgrade call
 * only (the upvalue is a box holding the request, emptied after). */
static int upgrade_header_lookup(lua_State *L)
{
    sluice_upgrade **box = lua_touserdata(L, lua_upvalueindex(1));
    if (*box == NULL || lua_type(L, 2) != LUA_TSTRING) return 0;
    return sluice_lua_push_header(L, sluice_upgrade_header(*box, lua_tostring(L, 2)));
}

static void push_upgrade(lua_State *L, sluice_upgrade *u)
{
    size_t i, n = sluice_upgrade_protocol_count(u);
    lua_createtable(L, 0, 8);
    lua_pushinteger(L, (lua_Integer)sluice_upgrade_id(u));
    lua_setfield(L, -2, "id");
    lua_pushliteral(L, "GET");
    lua_setfield(L, -2, "method");
    lua_pushstring(L, sluice_upgrade_path(u));
    lua_setfield(L, -2, "path");
    lua_pushstring(L, sluice_upgrade_query(u));
    lua_setfield(L, -2, "query_string");
    lua_pushstring(L, sluice_upgrade_peer(u));
    lua_setfield(L, -2, "peer");
    lua_createtable(L, (int)n, 0);
    for (i = 0; i < n; i++) {
        lua_pushstring(L, sluice_upgrade_protocol(u, i));
        lua_rawseti(L, -2, (int)i + 1);
    }
    lua_setfield(L, -2, "protocols");
    lua_newtable(L);
    sluice_upgrade_headers(u, sluice_lua_add_header, L);
    lua_setfield(L, -2, "headers");
}

/* A table of string → string only (raising here would unwind lws). */
static int all_strings(lua_State *L, int idx)
{
    int ok = 1;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING) ok = 0;
        lua_pop(L, 1);
    }
    return ok;
}

/* upgrade(req) → true [, protocol] | status [, reason [, headers]] */
static int server_ws_upgrade(void *ud, sluice_upgrade *u)
{
    sluice_lua_handle *h = ud;
    lua_State *L = h->ctx->L;
    sluice_upgrade **box;
    int top, status = 0;
    const char *fail = NULL;

    if (!sluice_lua_handle_callback(h, UPGRADE)) return 0;
    top = lua_gettop(L) - 1;
    box = lua_newuserdata(L, sizeof *box);
    *box = u;
    push_upgrade(L, u);                 /* fn, box, req */
    lua_getfield(L, -1, "headers");
    lua_pushvalue(L, -3);
    sluice_lua_lazy_headers(L, upgrade_header_lookup);
    lua_pop(L, 1);
    lua_remove(L, -2);                  /* fn, req */
    if (sluice_lua_call(h->ctx, 1, 3, "auth") != 0) {
        *box = NULL;
        sluice_upgrade_refuse(u, "the route's auth failed (see the gateway's log)", NULL);
        lua_settop(L, top);
        return 500;
    }
    *box = NULL;
    if (lua_toboolean(L, -3) && !lua_isnumber(L, -3)) {
        if (lua_type(L, -2) == LUA_TSTRING && sluice_upgrade_select(u, lua_tostring(L, -2)))
            fail = "the route selected a subprotocol the client did not offer";
    } else {
        status = lua_isnumber(L, -3) ? (int)lua_tointeger(L, -3) : 403;
        if (lua_istable(L, -1) && all_strings(L, lua_gettop(L))) {
            const char **extra = sluice_lua_string_pairs(L, lua_gettop(L), "headers");
            sluice_upgrade_refuse(u, lua_tostring(L, -3), extra);
        } else sluice_upgrade_refuse(u, lua_tostring(L, -2), NULL);
    }
    if (fail) {
        sluice_lua_log(h->ctx, SLUICE_LOG_ERROR, fail);
        sluice_upgrade_refuse(u, fail, NULL);
        status = 500;
    }
    lua_settop(L, top);
    return status;
}

static int server_http_match(void *ud, const char *method, const char *path)
{
    return ask(ud, HTTP_MATCH, method, path, 0);
}

static void server_http_request(void *ud, sluice_http_req *r)
{
    sluice_lua_handle *h = ud;
    lua_State *L = h->ctx->L;

    if (!sluice_lua_handle_callback(h, HTTP)) {
        sluice_http_respond(r, 404, "text/plain", "not found\n", 10, NULL);
        return;
    }
    sluice_lua_http_wrap(L, r);
    if (sluice_lua_call(h->ctx, 1, 0, "http handler") != 0 && sluice_http_userdata(r)) {
        sluice_lua_http_forget(r, L);
        sluice_http_respond(r, 500, "application/json", internal_error_body,
                            sizeof internal_error_body - 1, NULL);
    }
}

static void server_http_abort(void *ud, sluice_http_req *r)
{
    sluice_lua_handle *h = ud;
    sluice_lua_http_aborted(r, h->ctx, h->from_gc);
}

/* core.server(loop, options, handlers) → server | nil, err, code
 * options: host, port, max_message, max_body, idle_timeout, send_queue,
 *          max_connections, max_per_address, max_pending, handshake_timeout, static, deflate, reuseport,
 *          tls_cert, tls_key, tls_ca
 * handlers: accept(path), upgrade(req), open(conn), message(conn, data,
 *           binary), close(conn, code, reason), http_match(method, path),
 *           http(req) */
static int server_new(lua_State *L)
{
    sluice_server_config cfg;
    sluice_server_handlers hs;
    sluice_lua_handle *h;
    sluice_server *s = NULL;
    char err[256] = "";
    int rc;

    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    memset(&cfg, 0, sizeof cfg);
    cfg.host = sluice_lua_opt_string(L, 2, "host", NULL);
    cfg.port = (int)sluice_lua_opt_int(L, 2, "port", 8080, 0, 65535);
    cfg.static_dir = sluice_lua_opt_string(L, 2, "static", NULL);
    cfg.idle_timeout_s = (int)sluice_lua_opt_int(L, 2, "idle_timeout", 0, -1, INT_MAX);
    cfg.max_message = sluice_lua_opt_size(L, 2, "max_message");
    cfg.max_body = sluice_lua_opt_size(L, 2, "max_body");
    cfg.send_queue_max = sluice_lua_opt_size(L, 2, "send_queue");
    cfg.max_connections = (int)sluice_lua_opt_int(L, 2, "max_connections", 0, 0, INT_MAX);
    cfg.max_pending = (int)sluice_lua_opt_int(L, 2, "max_pending", 0, 0, INT_MAX);
    cfg.deflate = sluice_lua_opt_flag(L, 2, "deflate", 0);
    cfg.max_per_address = (int)sluice_lua_opt_int(L, 2, "max_per_address", 0, 0, INT_MAX);
    cfg.reuseport = sluice_lua_opt_flag(L, 2, "reuseport", 0);
    lua_getfield(L, 2, "handshake_timeout");   /* seconds; false: off */
    if (lua_isboolean(L, -1)) cfg.handshake_timeout_s = lua_toboolean(L, -1) ? 0 : -1;
    else cfg.handshake_timeout_s = (int)sluice_lua_opt_int(L, 2, "handshake_timeout", 0, 0, INT_MAX);
    lua_pop(L, 1);
    cfg.tls_cert = sluice_lua_opt_string(L, 2, "tls_cert", NULL);
    cfg.tls_key = sluice_lua_opt_string(L, 2, "tls_key", NULL);
    cfg.tls_ca = sluice_lua_opt_string(L, 2, "tls_ca", NULL);

    h = sluice_lua_handle_new(L, &sluice_lua_server_type, sizeof(lua_server), 1);
    sluice_lua_conn_refs(L, h, 3);
    sluice_lua_handle_ref(L, h, ACCEPT, 3, "accept", 0);
    sluice_lua_handle_ref(L, h, HTTP_MATCH, 3, "http_match", 0);
    sluice_lua_handle_ref(L, h, HTTP, 3, "http", 0);
    sluice_lua_handle_ref(L, h, UPGRADE, 3, "upgrade", 0);

    memset(&hs, 0, sizeof hs);
    sluice_lua_conn_handlers(&hs.ws);
    hs.ws_accept = server_ws_accept;
    hs.ws_upgrade = server_ws_upgrade;
    hs.http_match = server_http_match;
    hs.http_request = server_http_request;
    hs.http_abort = server_http_abort;
    rc = sluice_server_new(h->ctx->loop, &cfg, &hs, h, &s, err, sizeof err);
    if (rc) return sluice_lua_handle_fail(L, h, rc, err);
    h->obj = s;
    sluice_lua_handle_anchor(L, h);
    return 1;
}

static sluice_server *check_server(lua_State *L)
{
    return sluice_lua_handle_obj(L, 1, &sluice_lua_server_type);
}

static int server_port(lua_State *L)
{
    lua_pushinteger(L, sluice_server_port(check_server(L)));
    return 1;
}

static int server_tls(lua_State *L)
{
    lua_pushboolean(L, sluice_server_tls(check_server(L)));
    return 1;
}

/* server:reload_tls() → true | nil, err, code (the previous pair serves on) */
static int server_reload_tls(lua_State *L)
{
    char err[512] = "";
    return sluice_lua_result(L, sluice_server_reload_tls(check_server(L), err, sizeof err), err);
}

static int server_conn_count(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)sluice_server_conn_count(check_server(L)));
    return 1;
}

/* server:broadcast(path, data [, binary]) → number queued
 * data to every open WebSocket of route path, one copy shared by their
 * queues, in one pass in C (core.broadcast walks a Lua table instead).
 * Connections whose queue is full are closed with 1008, not counted. */
static int server_broadcast(lua_State *L)
{
    sluice_server *s = check_server(L);
    const char *path = luaL_checkstring(L, 2);
    size_t len, n;
    const char *data = luaL_checklstring(L, 3, &len);
    int rc = sluice_server_broadcast(s, path, data, len, lua_toboolean(L, 4), &n);
    if (rc) return sluice_lua_fail_core(L, rc, NULL);
    lua_pushinteger(L, (lua_Integer)n);
    return 1;
}

static void push_route(void *ud, const sluice_route_stats *r)
{
    lua_State *L = ud;
    lua_createtable(L, 0, 10);
    lua_pushstring(L, r->path);
    lua_setfield(L, -2, "path");
    sluice_lua_setint(L, "connections", (lua_Integer)r->connections);
    sluice_lua_setint(L, "opened", (lua_Integer)r->opened);
    sluice_lua_setint(L, "messages_in", (lua_Integer)r->messages_in);
    sluice_lua_setint(L, "bytes_in", (lua_Integer)r->bytes_in);
    sluice_lua_setint(L, "messages_out", (lua_Integer)r->messages_out);
    sluice_lua_setint(L, "bytes_out", (lua_Integer)r->bytes_out);
    sluice_lua_setint(L, "queued_bytes", (lua_Integer)r->queued_bytes);
    sluice_lua_setint(L, "rate_paused", (lua_Integer)r->rate_paused);
    sluice_lua_setint(L, "rate_closed", (lua_Integer)r->rate_closed);
    sluice_lua_append(L);
}

/* server:routes() → { { path, connections, opened, messages_in, bytes_in,
 * messages_out, bytes_out, queued_bytes, rate_paused, rate_closed }, ... } */
static int server_routes(lua_State *L)
{
    sluice_server *s = check_server(L);
    lua_newtable(L);
    sluice_server_routes(s, push_route, L);
    return 1;
}

static int server_pause_reading(lua_State *L)
{
    sluice_server_pause_reading(check_server(L), lua_isnoneornil(L, 2) || lua_toboolean(L, 2));
    return 0;
}

static int server_stop_listening(lua_State *L)
{
    sluice_server_stop_listening(check_server(L));
    return 0;
}

static int server_close_all(lua_State *L)
{
    sluice_server_close_all(check_server(L), (int)luaL_optinteger(L, 2, 1001),
                            luaL_optstring(L, 3, "going away"));
    return 0;
}

/* server:declare(path [, route, producer [, transform]]) — the declared
 * route of path from the next message on (no route: none). Rows already
 * in flight finish under the route that took them. */
static int server_declare(lua_State *L)
{
    sluice_lua_handle *h = sluice_lua_handle_check(L, 1, &sluice_lua_server_type);
    const char *path = luaL_checkstring(L, 2);
    sluice_lua_route *r;
    sluice_ingest *decl = NULL;
    if (!lua_isnoneornil(L, 3)) {
        decl = sluice_lua_handle_obj(L, 3, &sluice_lua_route_type);
        sluice_lua_handle_check(L, 4, &sluice_lua_producer_type);
        if (!lua_isnoneornil(L, 5)) luaL_checktype(L, 5, LUA_TFUNCTION);
    }
    r = sluice_lua_server_route(h, path);
    if (!r) return sluice_lua_fail_core(L, SLUICE_ENOMEM, NULL);
    sluice_lua_route_clear(L, r);
    if (!decl) return sluice_lua_result(L, 0, NULL);
    r->decl = sluice_ingest_retain(decl);
    r->producer = lua_touserdata(L, 4);
    lua_pushvalue(L, 4);
    r->producer_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (!lua_isnoneornil(L, 5)) {
        lua_pushvalue(L, 5);
        r->transform_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    return sluice_lua_result(L, 0, NULL);
}

/* server:tap(path, fn [, every, rate]) | server:tap(path) — fn(conn, text,
 * n) sees the messages path's declared route takes (which never reach the
 * message handler): 1 in every, at most rate a second, n the messages
 * since the last call. Without fn the tap ends. */
static int server_tap(lua_State *L)
{
    sluice_lua_handle *h = sluice_lua_handle_check(L, 1, &sluice_lua_server_type);
    const char *path = luaL_checkstring(L, 2);
    lua_Integer every = luaL_optinteger(L, 4, 1), rate = luaL_optinteger(L, 5, 100);
    sluice_lua_route *r;
    if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TFUNCTION);
    luaL_argcheck(L, every >= 1 && every <= 1000000000, 4, "every must be 1 or more");
    luaL_argcheck(L, rate >= 1 && rate <= 1000000000, 5, "rate must be 1 or more");
    r = sluice_lua_server_route(h, path);
    if (!r) return sluice_lua_fail_core(L, SLUICE_ENOMEM, NULL);
    sluice_lua_unref(L, &r->tap_ref);
    if (lua_isnoneornil(L, 3)) return sluice_lua_result(L, 0, NULL);
    lua_pushvalue(L, 3);
    r->tap_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    r->tap_every = (unsigned)every;
    r->tap_rate = (unsigned)rate;
    r->tap_seen = r->tap_passed = 0;
    r->tap_window_count = 0;
    return sluice_lua_result(L, 0, NULL);
}

static void server_free(void *s) { sluice_server_free(s); }

static const luaL_Reg methods[] = {
    { "port", server_port }, { "tls", server_tls }, { "reload_tls", server_reload_tls },
    { "conn_count", server_conn_count }, { "routes", server_routes },
    { "broadcast", server_broadcast },
    { "pause_reading", server_pause_reading }, { "stop_listening", server_stop_listening },
    { "close_all", server_close_all }, { "declare", server_declare },
    { "tap", server_tap }, { NULL, NULL }
};
static const luaL_Reg functions[] = { { "server", server_new }, { NULL, NULL } };

const sluice_lua_type sluice_lua_server_type = {
    .name = "sluice.server", .free = server_free, .collect = server_collect, .closable = 1,
    .methods = methods, .functions = functions,
};
