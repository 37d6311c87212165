/* sluice.server: a listening WebSocket + HTTP server. Routing is Lua's:
 * the server calls accept(path), open/message/close(conn, ...),
 * http_match(method, path) and http(req) functions given at creation. */
#include <string.h>

#include "sluice_lua.h"
#include "sluice/ws.h"

static const char internal_error_body[] = "{\"error\":\"handler failed\",\"code\":\"HANDLER\"}";

typedef struct lua_server {
    sluice_server *server;           /* NULL once closed */
    sluice_lua_conn_owner conns;     /* open/message/close refs + loop ref */
    int accept_ref, http_match_ref, http_ref;
    int self_ref;
} lua_server;

static lua_server *check_server(lua_State *L)
{
    lua_server *s = luaL_checkudata(L, 1, SLUICE_SERVER_MT);
    if (s->server == NULL) luaL_error(L, "attempt to use a closed %s", SLUICE_SERVER_MT);
    s->conns.owner.ctx->L = L;
    return s;
}

/* A Lua predicate; an error or a missing function counts as `dflt`. */
static int ask(lua_server *s, int ref, const char *a, const char *b, int dflt, const char *what)
{
    sluice_lua_loop *ctx = s->conns.owner.ctx;
    lua_State *L = ctx->L;
    int nargs = 1, answer;
    if (s->conns.closing_from_gc || !sluice_lua_pushref(L, ref)) return dflt;
    lua_pushstring(L, a);
    if (b) { lua_pushstring(L, b); nargs = 2; }
    if (sluice_lua_call(ctx, nargs, 1, what) != 0) return dflt;
    answer = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return answer;
}

static int server_ws_accept(void *ud, const char *path)
{
    lua_server *s = (lua_server *)((char *)ud - offsetof(lua_server, conns));
    return ask(s, s->accept_ref, path, NULL, 0, "route lookup");
}

static int server_http_match(void *ud, const char *method, const char *path)
{
    lua_server *s = (lua_server *)((char *)ud - offsetof(lua_server, conns));
    return ask(s, s->http_match_ref, method, path, 0, "route lookup");
}

static void server_http_request(void *ud, sluice_http_req *r)
{
    lua_server *s = (lua_server *)((char *)ud - offsetof(lua_server, conns));
    sluice_lua_loop *ctx = s->conns.owner.ctx;
    lua_State *L = ctx->L;

    if (s->conns.closing_from_gc || !sluice_lua_pushref(L, s->http_ref)) {
        sluice_http_respond(r, 404, "text/plain", "not found\n", 10, NULL);
        return;
    }
    sluice_lua_http_wrap(L, r);
    if (sluice_lua_call(ctx, 1, 0, "http handler") != 0 && sluice_http_userdata(r)) {
        sluice_lua_http_forget(r, L);
        sluice_http_respond(r, 500, "application/json", internal_error_body,
                            sizeof internal_error_body - 1, NULL);
    }
}

static void server_http_abort(void *ud, sluice_http_req *r)
{
    lua_server *s = (lua_server *)((char *)ud - offsetof(lua_server, conns));
    sluice_lua_http_forget(r, s->conns.closing_from_gc ? NULL : s->conns.owner.ctx->L);
}

static size_t opt_size(lua_State *L, int idx, const char *field)
{
    lua_Number n;
    lua_getfield(L, idx, field);
    n = luaL_optnumber(L, -1, 0);
    lua_pop(L, 1);
    if (n < 0) luaL_error(L, "bad option '%s' (must be >= 0)", field);
    return (size_t)n;
}

static void release_refs(lua_State *L, lua_server *s)
{
    sluice_lua_unref(L, &s->accept_ref);
    sluice_lua_unref(L, &s->http_match_ref);
    sluice_lua_unref(L, &s->http_ref);
    sluice_lua_unref(L, &s->self_ref);
    sluice_lua_conn_owner_release(L, &s->conns);
}

/* core.server(loop, options, handlers) → server | nil, err, code
 * options: host, port, max_message, max_body, idle_timeout, send_queue,
 *          max_connections, static
 * handlers: accept(path), open(conn), message(conn, data, binary),
 *           close(conn, code, reason), http_match(method, path), http(req) */
static int server_new(lua_State *L)
{
    sluice_server_config cfg;
    sluice_server_handlers h;
    lua_server *s;
    char err[256] = "";
    int rc;

    sluice_lua_checkloop(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    memset(&cfg, 0, sizeof cfg);
    lua_getfield(L, 2, "host");
    cfg.host = luaL_optstring(L, -1, NULL);
    lua_getfield(L, 2, "port");
    cfg.port = (int)luaL_optinteger(L, -1, 8080);
    lua_getfield(L, 2, "static");
    cfg.static_dir = luaL_optstring(L, -1, NULL);
    lua_getfield(L, 2, "idle_timeout");
    cfg.idle_timeout_s = (int)luaL_optinteger(L, -1, 0);
    /* The four values stay on the stack: they anchor the strings. */
    cfg.max_message = opt_size(L, 2, "max_message");
    cfg.max_body = opt_size(L, 2, "max_body");
    cfg.send_queue_max = opt_size(L, 2, "send_queue");
    cfg.max_connections = (int)opt_size(L, 2, "max_connections");
    cfg.max_pending = (int)opt_size(L, 2, "max_pending");
    lua_getfield(L, 2, "handshake_timeout");   /* seconds; false: off */
    if (lua_isboolean(L, -1)) cfg.handshake_timeout_s = lua_toboolean(L, -1) ? 0 : -1;
    else cfg.handshake_timeout_s = (int)luaL_optinteger(L, -1, 0);
    lua_pop(L, 1);

    s = sluice_newuserdata(L, sizeof *s);
    memset(s, 0, sizeof *s);
    s->accept_ref = s->http_match_ref = s->http_ref = s->self_ref = LUA_NOREF;
    s->conns.open_ref = s->conns.message_ref = s->conns.close_ref = LUA_NOREF;
    s->conns.owner.loop_ref = LUA_NOREF;
    luaL_getmetatable(L, SLUICE_SERVER_MT);
    lua_setmetatable(L, -2);
    sluice_lua_own(L, 1, &s->conns.owner);
    s->conns.owner.ctx->L = L;
    sluice_lua_conn_owner_init(L, 3, &s->conns);
    s->accept_ref = sluice_lua_function_ref(L, 3, "accept", 0);
    s->http_match_ref = sluice_lua_function_ref(L, 3, "http_match", 0);
    s->http_ref = sluice_lua_function_ref(L, 3, "http", 0);

    memset(&h, 0, sizeof h);
    sluice_lua_conn_handlers(&h.ws);
    h.ws_accept = server_ws_accept;
    h.http_match = server_http_match;
    h.http_request = server_http_request;
    h.http_abort = server_http_abort;
    rc = sluice_server_new(s->conns.owner.ctx->loop, &cfg, &h, &s->conns, &s->server,
                           err, sizeof err);
    if (rc) {
        release_refs(L, s);
        return sluice_lua_fail_core(L, rc, err);
    }
    lua_pushvalue(L, -1);
    s->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 1;
}

static int server_port(lua_State *L)
{
    lua_pushinteger(L, sluice_server_port(check_server(L)->server));
    return 1;
}

static int server_conn_count(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)sluice_server_conn_count(check_server(L)->server));
    return 1;
}

static int server_pause_reading(lua_State *L)
{
    lua_server *s = check_server(L);
    sluice_server_pause_reading(s->server, lua_isnoneornil(L, 2) || lua_toboolean(L, 2));
    return 0;
}

static int server_stop_listening(lua_State *L)
{
    sluice_server_stop_listening(check_server(L)->server);
    return 0;
}

static int server_close_all(lua_State *L)
{
    lua_server *s = check_server(L);
    sluice_server_close_all(s->server, (int)luaL_optinteger(L, 2, 1001),
                            luaL_optstring(L, 3, "going away"));
    return 0;
}

/* close, __gc, __close. From close(), connections still open get their
 * close handlers (1006); from __gc (state closing) no Lua is called. */
static int server_close(lua_State *L)
{
    lua_server *s = luaL_checkudata(L, 1, SLUICE_SERVER_MT);
    if (s->server == NULL) return 0;
    if (s->conns.owner.ctx) s->conns.owner.ctx->L = L;
    sluice_server_free(s->server);
    s->server = NULL;
    release_refs(L, s);
    return 0;
}

static int server_gc(lua_State *L)
{
    lua_server *s = luaL_checkudata(L, 1, SLUICE_SERVER_MT);
    s->conns.closing_from_gc = 1;
    return server_close(L);
}

void sluice_lua_open_server(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "port", server_port },
        { "conn_count", server_conn_count },
        { "pause_reading", server_pause_reading },
        { "stop_listening", server_stop_listening },
        { "close_all", server_close_all },
        { "close", server_close },
        { NULL, NULL }
    };
    static const luaL_Reg meta[] = {
        { "__gc", server_gc },
        { "__close", server_close },
        { NULL, NULL }
    };
    sluice_lua_newclass(L, SLUICE_SERVER_MT, methods, meta);
    lua_pushcfunction(L, server_new);
    lua_setfield(L, -2, "server");
}
