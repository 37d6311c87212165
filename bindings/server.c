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
enum { ACCEPT = 3, HTTP_MATCH, HTTP };

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
    r->producer_ref = r->transform_ref = LUA_NOREF;
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
        sluice_lua_route_clear(L, r);
        sluice_ingest_batch_free(&r->batch);
        free(r);
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
    sluice_lua_http_forget(r, h->from_gc ? NULL : h->ctx->L);
}

/* core.server(loop, options, handlers) → server | nil, err, code
 * options: host, port, max_message, max_body, idle_timeout, send_queue,
 *          max_connections, max_pending, handshake_timeout, static, reuseport
 * handlers: accept(path), open(conn), message(conn, data, binary),
 *           close(conn, code, reason), http_match(method, path), http(req) */
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
    cfg.reuseport = sluice_lua_opt_flag(L, 2, "reuseport", 0);
    lua_getfield(L, 2, "handshake_timeout");   /* seconds; false: off */
    if (lua_isboolean(L, -1)) cfg.handshake_timeout_s = lua_toboolean(L, -1) ? 0 : -1;
    else cfg.handshake_timeout_s = (int)sluice_lua_opt_int(L, 2, "handshake_timeout", 0, 0, INT_MAX);
    lua_pop(L, 1);

    h = sluice_lua_handle_new(L, &sluice_lua_server_type, sizeof(lua_server), 1);
    sluice_lua_conn_refs(L, h, 3);
    sluice_lua_handle_ref(L, h, ACCEPT, 3, "accept", 0);
    sluice_lua_handle_ref(L, h, HTTP_MATCH, 3, "http_match", 0);
    sluice_lua_handle_ref(L, h, HTTP, 3, "http", 0);

    memset(&hs, 0, sizeof hs);
    sluice_lua_conn_handlers(&hs.ws);
    hs.ws_accept = server_ws_accept;
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

static int server_conn_count(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)sluice_server_conn_count(check_server(L)));
    return 1;
}

static void push_route(void *ud, const sluice_route_stats *r)
{
    lua_State *L = ud;
    lua_createtable(L, 0, 8);
    lua_pushstring(L, r->path);
    lua_setfield(L, -2, "path");
    sluice_lua_setint(L, "connections", (lua_Integer)r->connections);
    sluice_lua_setint(L, "opened", (lua_Integer)r->opened);
    sluice_lua_setint(L, "messages_in", (lua_Integer)r->messages_in);
    sluice_lua_setint(L, "bytes_in", (lua_Integer)r->bytes_in);
    sluice_lua_setint(L, "messages_out", (lua_Integer)r->messages_out);
    sluice_lua_setint(L, "bytes_out", (lua_Integer)r->bytes_out);
    sluice_lua_setint(L, "queued_bytes", (lua_Integer)r->queued_bytes);
    sluice_lua_append(L);
}

/* server:routes() → { { path, connections, opened, messages_in, bytes_in,
 * messages_out, bytes_out, queued_bytes }, ... } */
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

static void server_free(void *s) { sluice_server_free(s); }

static const luaL_Reg methods[] = {
    { "port", server_port }, { "conn_count", server_conn_count }, { "routes", server_routes },
    { "pause_reading", server_pause_reading }, { "stop_listening", server_stop_listening },
    { "close_all", server_close_all }, { "declare", server_declare }, { NULL, NULL }
};
static const luaL_Reg functions[] = { { "server", server_new }, { NULL, NULL } };

const sluice_lua_type sluice_lua_server_type = {
    .name = "sluice.server", .free = server_free, .collect = server_collect, .closable = 1,
    .methods = methods, .functions = functions,
};
