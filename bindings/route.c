/* sluice.route: a declared route (core/src/ingest.c) for Lua, and what a
 * server's connections do with it: valid rows are produced and acked in
 * C; Lua runs only for a route's transform, and for the messages the
 * route does not take (the message handler's).
 *
 *   core.route(schema, { topic =, key =, ack =, arrays = }) → route
 *   route:parse(text) → { { value =, key =, id = }, ... }
 *       or nil, "INVALID: ...", "INVALID" / nil, "MALFORMED: ...", "MALFORMED"
 *   route:topic() → topic
 */
#include <stdlib.h>
#include <string.h>

#include "sluice_lua.h"
#include "sluice/ingest.h"

typedef struct lua_route {
    sluice_lua_handle h;           /* h.obj: the sluice_ingest; no loop */
    sluice_ingest_batch batch;     /* for parse */
} lua_route;

static void route_close(lua_State *L, sluice_lua_handle *h)
{
    (void)L;
    if (h->obj) sluice_ingest_release(h->obj);
    sluice_ingest_batch_free(&((lua_route *)h)->batch);
}

static const char *opt_field(lua_State *L, const char *key)
{
    const char *v;
    lua_getfield(L, 2, key);
    if (lua_isnil(L, -1)) { lua_pop(L, 1); return NULL; }
    if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "route: %s must be a field name (a string)", key);
    v = lua_tostring(L, -1);   /* anchored by the options table */
    lua_pop(L, 1);
    return v;
}

/* core.route(schema, options) → route */
static int route_new(lua_State *L)
{
    sluice_ingest_config cfg;
    sluice_ingest *in = NULL;
    lua_route *r;
    char err[200] = "";
    int rc;

    memset(&cfg, 0, sizeof cfg);
    cfg.schema = sluice_lua_handle_obj(L, 1, &sluice_lua_schema_type);
    luaL_checktype(L, 2, LUA_TTABLE);
    cfg.topic = sluice_lua_opt_string(L, 2, "topic", NULL);
    if (!cfg.topic || !*cfg.topic) luaL_error(L, "route: topic must be a non-empty string");
    cfg.key = opt_field(L, "key");
    cfg.ack = opt_field(L, "ack");
    cfg.arrays = sluice_lua_opt_flag(L, 2, "arrays", 0);
    r = sluice_lua_handle_new(L, &sluice_lua_route_type, sizeof *r, 0);
    rc = sluice_ingest_new(&cfg, &in, err, sizeof err);
    r->h.obj = in;
    if (rc == SLUICE_ENOMEM) return sluice_lua_fail_core(L, rc, err);
    if (rc != SLUICE_OK) return luaL_error(L, "route: %s", err);
    return 1;
}

static void push_bytes(lua_State *L, const char *s, size_t len, const char *field)
{
    if (!s) return;
    lua_pushlstring(L, s, len);
    lua_setfield(L, -2, field);
}

/* route:parse(text) → rows: what the route would send, without sending. */
static int route_parse(lua_State *L)
{
    lua_route *r = sluice_lua_handle_check(L, 1, &sluice_lua_route_type);
    size_t len, i, n;
    const char *text = luaL_checklstring(L, 2, &len);
    sluice_ingest_row row;
    int rc = sluice_ingest_parse(r->h.obj, text, len, &r->batch);
    if (rc != SLUICE_OK)
        return sluice_lua_fail(L, rc == SLUICE_EINVAL ? "INVALID" : sluice_error_name(rc),
                               "%s", r->batch.result.error);
    n = sluice_ingest_count(&r->batch);
    lua_createtable(L, (int)n, 0);
    for (i = 0; i < n; i++) {
        sluice_ingest_row_at(&r->batch, i, &row);
        lua_createtable(L, 0, 3);
        push_bytes(L, row.value, row.value_len, "value");
        push_bytes(L, row.key, row.key_len, "key");
        push_bytes(L, row.id, row.id_len, "id");
        lua_rawseti(L, -2, (int)i + 1);
    }
    return 1;
}

static int route_topic(lua_State *L)
{
    lua_pushstring(L, sluice_ingest_topic(sluice_lua_handle_obj(L, 1, &sluice_lua_route_type)));
    return 1;
}

/* ---- a server's slots ------------------------------------------------------ */

void sluice_lua_route_clear(lua_State *L, sluice_lua_route *r)
{
    if (r->decl) sluice_ingest_release(r->decl);
    r->decl = NULL;
    r->producer = NULL;
    if (L) {
        sluice_lua_unref(L, &r->producer_ref);
        sluice_lua_unref(L, &r->transform_ref);
    }
}

void sluice_lua_route_free(lua_State *L, sluice_lua_route *r)
{
    if (r->busy) {   /* a transform running: its message finishes first */
        r->orphan = 1;
        return;
    }
    sluice_lua_route_clear(L, r);
    if (L) sluice_lua_unref(L, &r->tap_ref);
    sluice_ingest_batch_free(&r->batch);
    free(r);
}

/* The row through the route's transform fn: fn(conn, value, key) →
 * value [, key] (key nil: unchanged, false: none) | nil [, reason].
 * 1: row holds what it returned, on the stack until the caller pops 2;
 * 0: refused, and its client told. */
static int transform(sluice_lua_loop *ctx, int fn_ref, int conn_ref,
                     sluice_ingest_peer *peer, sluice_ingest_row *row)
{
    static const char failed[] = "handler failed";
    lua_State *L = ctx->L;
    int kt;
    lua_rawgeti(L, LUA_REGISTRYINDEX, fn_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, conn_ref);
    lua_pushlstring(L, row->value, row->value_len);
    if (row->key) lua_pushlstring(L, row->key, row->key_len);
    else lua_pushnil(L);
    if (sluice_lua_call(ctx, 3, 2, "transform") != 0) {
        sluice_ingest_refuse(peer, row, failed, sizeof failed - 1);
        return 0;
    }
    if (lua_type(L, -2) != LUA_TSTRING) {
        size_t len = 0;
        const char *why = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
        if (!why) { why = "refused by the route's transform"; len = strlen(why); }
        sluice_ingest_refuse(peer, row, why, len);
        lua_pop(L, 2);
        return 0;
    }
    row->value = lua_tolstring(L, -2, &row->value_len);
    kt = lua_type(L, -1);
    if (kt == LUA_TSTRING || kt == LUA_TNUMBER) row->key = lua_tolstring(L, -1, &row->key_len);
    else if (kt == LUA_TBOOLEAN && !lua_toboolean(L, -1)) row->key = NULL;
    return 1;
}

/* A message the route took, offered to its tap: sampled here, so that a
 * tap costs the route one Lua call per shown line, not one per message. */
static void tap(sluice_lua_loop *ctx, sluice_lua_route *r, int conn_ref,
                const char *data, size_t len)
{
    lua_State *L = ctx->L;
    uint64_t now;
    if (r->tap_ref == LUA_NOREF) return;
    r->tap_passed++;
    if (r->tap_seen++ % r->tap_every != 0) return;
    now = sluice_now_ms();
    if (now - r->tap_window_ms >= 1000) { r->tap_window_ms = now; r->tap_window_count = 0; }
    if (r->tap_window_count >= r->tap_rate) return;
    r->tap_window_count++;
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->tap_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, conn_ref);
    lua_pushlstring(L, data, len);
    lua_pushnumber(L, (lua_Number)r->tap_passed);
    r->tap_passed = 0;
    sluice_lua_call(ctx, 3, 0, "tap");
}

int sluice_lua_route_message(sluice_lua_loop *ctx, sluice_lua_route *r, int conn_ref,
                             sluice_conn *c, sluice_ingest_peer **peer,
                             const char *data, size_t len)
{
    sluice_ingest *decl = r->decl;
    sluice_lua_handle *ph = r->producer;
    sluice_ingest_peer *p;
    sluice_ingest_row row;
    lua_State *L = ctx->L;
    size_t i, n;
    int tref, pref = LUA_NOREF;

    /* A transform stepping the loop: the batch is in use. */
    if (r->busy) return 0;
    if (!*peer && !(*peer = sluice_ingest_peer_new(c))) return 0;
    if (sluice_ingest_parse(decl, data, len, &r->batch) != SLUICE_OK) return 0;
    p = *peer;
    n = sluice_ingest_count(&r->batch);
    if (r->transform_ref == LUA_NOREF) {
        sluice_producer *producer = ph ? sluice_lua_producer_obj(ph) : NULL;
        for (i = 0; i < n; i++) {
            sluice_ingest_row_at(&r->batch, i, &row);
            if (sluice_ingest_send(decl, producer, p, &row) == SLUICE_OK)
                sluice_lua_producer_count_sent(ph);
        }
        tap(ctx, r, conn_ref, data, len);
        return 1;
    }
    /* Lua runs per row: it may redeclare the route or close the connection
     * meanwhile; the rows of this message finish as they began. */
    r->busy = 1;
    sluice_ingest_retain(decl);
    sluice_ingest_peer_retain(p);
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->transform_ref);
    tref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (ph) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, r->producer_ref);
        pref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    for (i = 0; i < n; i++) {
        sluice_ingest_row_at(&r->batch, i, &row);
        if (!transform(ctx, tref, conn_ref, p, &row)) continue;
        if (sluice_ingest_send(decl, ph ? sluice_lua_producer_obj(ph) : NULL, p, &row) == SLUICE_OK)
            sluice_lua_producer_count_sent(ph);
        lua_pop(L, 2);
    }
    luaL_unref(L, LUA_REGISTRYINDEX, tref);
    luaL_unref(L, LUA_REGISTRYINDEX, pref);
    tap(ctx, r, conn_ref, data, len);
    sluice_ingest_peer_release(p);
    sluice_ingest_release(decl);
    r->busy = 0;
    if (r->orphan) sluice_lua_route_free(L, r);
    return 1;
}

static const luaL_Reg methods[] = {
    { "parse", route_parse }, { "topic", route_topic }, { NULL, NULL }
};
static const luaL_Reg functions[] = { { "route", route_new }, { NULL, NULL } };

const sluice_lua_type sluice_lua_route_type = {
    .name = "sluice.route", .close = route_close, .closable = 1,
    .methods = methods, .functions = functions,
};
