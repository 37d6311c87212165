/* sluice.http.req: one HTTP request waiting for its response. Fields
 * (method, path, query_string, peer, headers, body) live in the user value
 * table; respond() sends the answer, once. */
#include <string.h>

#include "sluice_lua.h"
#include "sluice/ws.h"

typedef struct lua_http {
    sluice_lua_handle h;    /* anchored until answered or abandoned */
    sluice_http_req *req;   /* NULL from then on */
} lua_http;

/* Collected unanswered (at state close): answer for it. */
static void http_abandon(lua_State *L, sluice_lua_handle *hd)
{
    lua_http *h = (lua_http *)hd;
    sluice_http_req *r = h->req;
    (void)L;
    if (r == NULL) return;
    sluice_http_set_userdata(r, NULL);
    h->req = NULL;
    sluice_http_respond(r, 503, "text/plain", "shutting down\n", 14, NULL);
}


/* headers[name] for a header lws does not list (custom ones), while the
 * request is unanswered. */
static int http_header_lookup(lua_State *L)
{
    lua_http *h = lua_touserdata(L, lua_upvalueindex(1));
    if (h->req == NULL || lua_type(L, 2) != LUA_TSTRING) return 0;
    return sluice_lua_push_header(L, sluice_http_header(h->req, lua_tostring(L, 2)));
}

void sluice_lua_http_wrap(lua_State *L, sluice_http_req *r)
{
    size_t body_len = 0;
    const char *body = sluice_http_body(r, &body_len);
    lua_http *h = sluice_lua_handle_new(L, &sluice_lua_http_type, sizeof *h, 0);
    h->req = r;
    lua_createtable(L, 0, 6);
    lua_pushstring(L, sluice_http_method(r));
    lua_setfield(L, -2, "method");
    lua_pushstring(L, sluice_http_path(r));
    lua_setfield(L, -2, "path");
    lua_pushstring(L, sluice_http_query(r));
    lua_setfield(L, -2, "query_string");
    lua_pushstring(L, sluice_http_peer(r) ? sluice_http_peer(r) : "");
    lua_setfield(L, -2, "peer");
    lua_pushlstring(L, body ? body : "", body ? body_len : 0);
    lua_setfield(L, -2, "body");
    lua_newtable(L);
    sluice_http_headers(r, sluice_lua_add_header, L);
    lua_pushvalue(L, -3);
    sluice_lua_lazy_headers(L, http_header_lookup);
    lua_setfield(L, -2, "headers");
    sluice_setuservalue(L, -2);
    sluice_lua_handle_anchor(L, &h->h);
    sluice_http_set_userdata(r, h);
}

/* The request is gone (answered or the client left): drop the anchor. */
void sluice_lua_http_forget(sluice_http_req *r, lua_State *L)
{
    lua_http *h = sluice_http_userdata(r);
    if (h == NULL) return;
    sluice_http_set_userdata(r, NULL);
    h->req = NULL;
    if (L) sluice_lua_handle_release(L, &h->h);
}

/* The client left (or a stream ended): a stream's on_close runs, then the
 * request is forgotten. */
void sluice_lua_http_aborted(sluice_http_req *r, sluice_lua_loop *ctx, int from_gc)
{
    lua_http *h = sluice_http_userdata(r);
    lua_State *L = from_gc ? NULL : ctx->L;
    int call = h && L && h->h.refs[0] != LUA_NOREF;
    if (call) lua_rawgeti(L, LUA_REGISTRYINDEX, h->h.refs[0]);
    sluice_lua_http_forget(r, L);
    if (call) sluice_lua_call(ctx, 0, 0, "stream close handler");
}

/* req:stream(content_type [, headers [, on_close]]) → true | nil, err, code:
 * a 200 answer whose body follows in req:write() calls, until req:finish()
 * or the client leaves (then on_close() runs). */
static int http_stream(lua_State *L)
{
    lua_http *h = sluice_lua_handle_get(L, 1, &sluice_lua_http_type);
    const char *ctype = luaL_checkstring(L, 2);
    const char **extra;
    int rc;
    if (!lua_isnoneornil(L, 4)) luaL_checktype(L, 4, LUA_TFUNCTION);
    lua_settop(L, 4);
    extra = sluice_lua_string_pairs(L, 3, "headers");     /* 5 */
    if (h->req == NULL)
        return sluice_lua_fail(L, "CLOSED", "request already answered or client gone");
    rc = sluice_http_stream_open(h->req, ctype, extra);
    if (rc) return sluice_lua_fail_core(L, rc, NULL);
    if (!lua_isnil(L, 4)) sluice_lua_handle_set(L, &h->h, 0, 4);
    lua_pushboolean(L, 1);
    return 1;
}

/* req:write(data) → true | nil, err, code (CLOSED: the stream is over;
 * FULL: the client reads too slowly and the stream is ended) */
static int http_write(lua_State *L)
{
    lua_http *h = sluice_lua_handle_get(L, 1, &sluice_lua_http_type);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    if (h->req == NULL) return sluice_lua_fail(L, "CLOSED", "stream ended");
    int rc = sluice_http_stream_write(h->req, data, len);
    if (rc) return sluice_lua_fail_core(L, rc, rc == SLUICE_EFULL ? "stream queue full" : "stream ended");
    lua_pushboolean(L, 1);
    return 1;
}

/* req:finish(): ends a stream once what is queued is sent. */
static int http_finish(lua_State *L)
{
    lua_http *h = sluice_lua_handle_get(L, 1, &sluice_lua_http_type);
    sluice_http_req *r = h->req;
    if (r == NULL) return sluice_lua_fail(L, "CLOSED", "stream ended");
    sluice_lua_http_forget(r, L);
    int rc = sluice_http_stream_close(r);
    if (rc) return sluice_lua_fail_core(L, rc, NULL);
    lua_pushboolean(L, 1);
    return 1;
}

/* req:respond(status, content_type, body [, headers]) → true | nil, err, code */
static int http_respond(lua_State *L)
{
    lua_http *h = sluice_lua_handle_get(L, 1, &sluice_lua_http_type);
    int status = (int)luaL_checkinteger(L, 2);
    const char *ctype = luaL_optstring(L, 3, "text/plain; charset=utf-8");
    size_t len = 0;
    const char *body = luaL_optlstring(L, 4, "", &len);
    const char **extra;
    sluice_http_req *r;
    int rc;

    luaL_argcheck(L, status >= 100 && status <= 599, 2, "not an HTTP status");
    extra = sluice_lua_string_pairs(L, 5, "headers");
    if (h->req == NULL)
        return sluice_lua_fail(L, "CLOSED", "request already answered or client gone");
    r = h->req;
    sluice_lua_http_forget(r, L);
    rc = sluice_http_respond(r, status, ctype, body, len, extra);
    if (rc) return sluice_lua_fail_core(L, rc, NULL);
    lua_pushboolean(L, 1);
    return 1;
}

static int http_is_pending(lua_State *L)
{
    lua_http *h = sluice_lua_handle_get(L, 1, &sluice_lua_http_type);
    lua_pushboolean(L, h->req != NULL);
    return 1;
}

static const luaL_Reg methods[] = {
    { "respond", http_respond }, { "is_pending", http_is_pending },
    { "stream", http_stream }, { "write", http_write }, { "finish", http_finish }, { NULL, NULL }
};

const sluice_lua_type sluice_lua_http_type = {
    .name = "sluice.http.req", .close = http_abandon, .fields = 1, .methods = methods,
};
