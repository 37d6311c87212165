/* sluice.admin: a Kafka admin client (topics and their configs). Every
 * request takes a callback, held in a table of the client's under a ref
 * until its answer, and called once on the loop thread with the answer,
 * or with nil, "CODE: message", "CODE" when the request failed as a whole
 * (TIMED_OUT, TRANSPORT, DESTROY if the client was closed first). */
#include <stdlib.h>
#include <string.h>

#include "sluice_lua.h"
#include "sluice/kafka.h"

enum { ERROR };   /* refs */

typedef struct lua_admin {
    sluice_lua_handle h;   /* h.obj: the sluice_admin */
    int cbs_ref;           /* ref → the callbacks of the requests in flight */
} lua_admin;

/* What travels with one request through the core. */
struct pending { lua_admin *a; int ref; };

static void admin_collect(lua_State *L, sluice_lua_handle *h)
{
    sluice_lua_unref(L, &((lua_admin *)h)->cbs_ref);
}

static void on_error(void *ud, const char *name, const char *text, int fatal)
{
    sluice_lua_kafka_error(ud, ERROR, "admin", name, text, fatal);
}

/* ---- answers as Lua values ------------------------------------------------ */

static void set_error(lua_State *L, int error, const char *name, const char *text)
{
    if (!error) return;
    lua_pushfstring(L, "%s: %s", name, text ? text : "");
    lua_setfield(L, -2, "error");
    lua_pushstring(L, name);
    lua_setfield(L, -2, "code");
}

static void push_ids(lua_State *L, const int32_t *ids, size_t n)
{
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushinteger(L, ids[i]);
        lua_rawseti(L, -2, (int)i + 1);
    }
}

/* { name, error?, code?, partitions = { { partition, leader, replicas,
 * isr, error? }, ... } (describe) } */
static void push_topic(lua_State *L, const sluice_admin_topic *t, int with_partitions)
{
    lua_createtable(L, 0, 4);
    lua_pushstring(L, t->name);
    lua_setfield(L, -2, "name");
    set_error(L, t->error, t->error_name, t->error_text);
    if (!with_partitions || t->error) return;
    lua_createtable(L, (int)t->npartitions, 0);
    for (size_t i = 0; i < t->npartitions; i++) {
        const sluice_admin_partition *p = &t->partitions[i];
        lua_createtable(L, 0, 5);
        sluice_lua_setint(L, "partition", p->id);
        sluice_lua_setint(L, "leader", p->leader);
        push_ids(L, p->replicas, p->nreplicas);
        lua_setfield(L, -2, "replicas");
        push_ids(L, p->isr, p->nisr);
        lua_setfield(L, -2, "isr");
        set_error(L, p->error, p->error_name, p->error_name);
        lua_rawseti(L, -2, (int)i + 1);
    }
    lua_setfield(L, -2, "partitions");
}

static void push_brokers(lua_State *L, const sluice_admin_result *r)
{
    lua_createtable(L, (int)r->nbrokers, 0);
    for (size_t i = 0; i < r->nbrokers; i++) {
        lua_createtable(L, 0, 3);
        sluice_lua_setint(L, "id", r->brokers[i].id);
        lua_pushstring(L, r->brokers[i].host);
        lua_setfield(L, -2, "host");
        sluice_lua_setint(L, "port", r->brokers[i].port);
        lua_rawseti(L, -2, (int)i + 1);
    }
}

/* { [name] = { value, source, default, read_only, sensitive } } */
static void push_configs(lua_State *L, const sluice_admin_result *r)
{
    lua_createtable(L, 0, (int)r->nconfigs);
    for (size_t i = 0; i < r->nconfigs; i++) {
        const sluice_admin_config_entry *c = &r->configs[i];
        lua_createtable(L, 0, 5);
        if (c->value) {
            lua_pushstring(L, c->value);
            lua_setfield(L, -2, "value");
        }
        lua_pushstring(L, c->source);
        lua_setfield(L, -2, "source");
        lua_pushboolean(L, c->is_default);
        lua_setfield(L, -2, "default");
        lua_pushboolean(L, c->read_only);
        lua_setfield(L, -2, "read_only");
        lua_pushboolean(L, c->sensitive);
        lua_setfield(L, -2, "sensitive");
        lua_setfield(L, -2, c->name);
    }
}

enum answer { TOPICS, DESCRIBE, CONFIGS, DONE };

/* The callback of one request, with its answer. */
static void answer(const sluice_admin_result *r, struct pending *pd, enum answer kind)
{
    lua_admin *a = pd->a;
    int ref = pd->ref, nargs = 1;
    lua_State *L;
    free(pd);
    if (a->h.from_gc) return;
    L = a->h.ctx->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->cbs_ref);
    lua_rawgeti(L, -1, ref);
    luaL_unref(L, -2, ref);
    lua_remove(L, -2);
    if (r->error) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", r->error_name, r->error_text);
        lua_pushstring(L, r->error_name);
        nargs = 3;
    } else if (kind == TOPICS || kind == DESCRIBE) {
        lua_createtable(L, (int)r->ntopics, 1);
        for (size_t i = 0; i < r->ntopics; i++) {
            push_topic(L, &r->topics[i], kind == DESCRIBE);
            lua_rawseti(L, -2, (int)i + 1);
        }
        if (kind == DESCRIBE) {
            push_brokers(L, r);
            lua_setfield(L, -2, "brokers");
            if (r->cluster_id) {
                lua_pushstring(L, r->cluster_id);
                lua_setfield(L, -2, "cluster_id");
            }
        }
    } else if (kind == CONFIGS) {
        push_configs(L, r);
    } else {
        lua_pushboolean(L, 1);
    }
    sluice_lua_call(a->h.ctx, nargs, 0, "admin callback");
}

static void on_topics(void *ud, const sluice_admin_result *r) { answer(r, ud, TOPICS); }
static void on_describe(void *ud, const sluice_admin_result *r) { answer(r, ud, DESCRIBE); }
static void on_configs(void *ud, const sluice_admin_result *r) { answer(r, ud, CONFIGS); }
static void on_done(void *ud, const sluice_admin_result *r) { answer(r, ud, DONE); }

/* ---- requests ---------------------------------------------------------------- */

/* The callback at idx, held until the answer: the pending record the core
 * carries, or NULL (nothing held) when out of memory. */
static struct pending *hold(lua_State *L, lua_admin *a, int idx)
{
    struct pending *pd = malloc(sizeof *pd);
    if (!pd) return NULL;
    pd->a = a;
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->cbs_ref);
    lua_pushvalue(L, idx);
    pd->ref = luaL_ref(L, -2);
    lua_pop(L, 1);
    return pd;
}

/* After the core refused a request: let go of its callback. */
static int refused(lua_State *L, lua_admin *a, struct pending *pd, int rc, const char *err)
{
    if (pd) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, a->cbs_ref);
        luaL_unref(L, -1, pd->ref);
        lua_pop(L, 1);
        free(pd);
    }
    return sluice_lua_fail_core(L, rc, err);
}

static int check_timeout(lua_State *L, int idx)
{
    lua_Integer ms = luaL_optinteger(L, idx, 0);
    luaL_argcheck(L, ms >= 0 && ms <= 3600000, idx, "timeout must be 0 to 3600000 ms");
    return (int)ms;
}

/* A list of topic names at idx (anchored by the table), as a userdata
 * array pushed on top of the stack. */
static const char **check_names(lua_State *L, int idx, size_t *n)
{
    const char **names;
    luaL_checktype(L, idx, LUA_TTABLE);
    *n = (size_t)sluice_rawlen(L, idx);
    names = lua_newuserdata(L, (*n + 1) * sizeof *names);
    for (size_t i = 0; i < *n; i++) {
        lua_rawgeti(L, idx, (int)i + 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_argerror(L, idx, lua_pushfstring(L, "topic #%d must be a string", (int)i + 1));
        names[i] = lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    names[*n] = NULL;
    return names;
}

/* admin:create_topics({ { name =, partitions =, replication =, config = { k = v } }, ... },
 *                     timeout_ms, cb) → true | nil, err, code
 * cb({ { name, error?, code? }, ... }) or cb(nil, err, code) */
static int admin_create_topics(lua_State *L)
{
    lua_admin *a = sluice_lua_handle_check(L, 1, &sluice_lua_admin_type);
    sluice_new_topic *topics;
    struct pending *pd;
    size_t n;
    char err[512] = "";
    int rc, timeout = check_timeout(L, 3);

    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 4, LUA_TFUNCTION);
    lua_settop(L, 4);
    n = (size_t)sluice_rawlen(L, 2);
    luaL_argcheck(L, n > 0, 2, "no topics given");
    topics = lua_newuserdata(L, n * sizeof *topics);          /* index 5 */
    for (size_t i = 0; i < n; i++) {
        int t;
        luaL_checkstack(L, 6, "too many topics");
        lua_rawgeti(L, 2, (int)i + 1);                         /* anchored by the list */
        luaL_argcheck(L, lua_istable(L, -1), 2, "each topic must be a table");
        t = lua_gettop(L);
        topics[i].name = sluice_lua_opt_string(L, t, "name", NULL);
        luaL_argcheck(L, topics[i].name != NULL, 2, "each topic needs a name");
        topics[i].partitions = (int)sluice_lua_opt_int(L, t, "partitions", -1, -1, 1000000);
        topics[i].replication = (int)sluice_lua_opt_int(L, t, "replication", -1, -1, 32767);
        lua_getfield(L, t, "config");
        topics[i].configs = sluice_lua_string_pairs(L, lua_gettop(L), "config");
        /* list entry, config table, pairs: kept on the stack until the call */
    }
    pd = hold(L, a, 4);
    if (!pd) return luaL_error(L, "out of memory");
    rc = sluice_admin_create_topics(a->h.obj, topics, n, timeout, on_topics, pd, err, sizeof err);
    if (rc) return refused(L, a, pd, rc, err);
    lua_pushboolean(L, 1);
    return 1;
}

/* admin:delete_topics({ name, ... }, timeout_ms, cb) → true | nil, err, code
 * cb({ { name, error?, code? }, ... }) or cb(nil, err, code) */
static int admin_delete_topics(lua_State *L)
{
    lua_admin *a = sluice_lua_handle_check(L, 1, &sluice_lua_admin_type);
    const char **names;
    struct pending *pd;
    size_t n;
    char err[512] = "";
    int rc, timeout = check_timeout(L, 3);

    luaL_checktype(L, 4, LUA_TFUNCTION);
    lua_settop(L, 4);
    names = check_names(L, 2, &n);
    luaL_argcheck(L, n > 0, 2, "no topics given");
    pd = hold(L, a, 4);
    if (!pd) return luaL_error(L, "out of memory");
    rc = sluice_admin_delete_topics(a->h.obj, names, n, timeout, on_topics, pd, err, sizeof err);
    if (rc) return refused(L, a, pd, rc, err);
    lua_pushboolean(L, 1);
    return 1;
}

/* admin:describe_topics({ name, ... } | nil, timeout_ms, cb) → true | nil, err, code
 * cb({ { name, partitions = {...} | error, code }, ..., brokers = { { id, host, port } },
 *      cluster_id = id }) */
static int admin_describe_topics(lua_State *L)
{
    lua_admin *a = sluice_lua_handle_check(L, 1, &sluice_lua_admin_type);
    const char **names = NULL;
    struct pending *pd;
    size_t n = 0;
    char err[512] = "";
    int rc, timeout = check_timeout(L, 3);

    luaL_checktype(L, 4, LUA_TFUNCTION);
    lua_settop(L, 4);
    if (!lua_isnil(L, 2)) names = check_names(L, 2, &n);
    pd = hold(L, a, 4);
    if (!pd) return luaL_error(L, "out of memory");
    rc = sluice_admin_describe_topics(a->h.obj, names, n, timeout, on_describe, pd, err, sizeof err);
    if (rc) return refused(L, a, pd, rc, err);
    lua_pushboolean(L, 1);
    return 1;
}

/* admin:describe_configs(topic, timeout_ms, cb) → true | nil, err, code
 * cb({ [name] = { value, source, default, read_only, sensitive } })
 * admin:alter_configs(topic, { k = v }, timeout_ms, cb): sets exactly
 * these overrides; cb(true) */
static int topic_configs(lua_State *L, int alter)
{
    lua_admin *a = sluice_lua_handle_check(L, 1, &sluice_lua_admin_type);
    const char *topic = luaL_checkstring(L, 2);
    const char **pairs = NULL;
    struct pending *pd;
    char err[512] = "";
    int rc, timeout = check_timeout(L, 3 + alter), cb = 4 + alter;

    luaL_checktype(L, cb, LUA_TFUNCTION);
    lua_settop(L, cb);
    if (alter) pairs = sluice_lua_string_pairs(L, 3, "configs");
    pd = hold(L, a, cb);
    if (!pd) return luaL_error(L, "out of memory");
    rc = alter ? sluice_admin_alter_configs(a->h.obj, topic, pairs, timeout, on_done, pd, err, sizeof err)
               : sluice_admin_describe_configs(a->h.obj, topic, timeout, on_configs, pd, err, sizeof err);
    if (rc) return refused(L, a, pd, rc, err);
    lua_pushboolean(L, 1);
    return 1;
}

static int admin_describe_configs(lua_State *L) { return topic_configs(L, 0); }
static int admin_alter_configs(lua_State *L) { return topic_configs(L, 1); }

static int admin_pending(lua_State *L)
{
    lua_admin *a = sluice_lua_handle_check(L, 1, &sluice_lua_admin_type);
    lua_pushinteger(L, (lua_Integer)sluice_admin_pending(a->h.obj));
    return 1;
}

/* admin:in_handler() → true while a handler of its loop runs: a caller
 * that would run the loop to wait for an answer must not (the loop is
 * not re-entrant). */
static int admin_in_handler(lua_State *L)
{
    lua_admin *a = sluice_lua_handle_check(L, 1, &sluice_lua_admin_type);
    lua_pushboolean(L, a->h.ctx->call_depth > 0);
    return 1;
}

/* core.admin(loop, { props = {...} }, { error = fn(msg, fatal) }) */
static int admin_new(lua_State *L)
{
    sluice_admin_config cfg;
    sluice_admin *admin = NULL;
    lua_admin *a;
    char err[512] = "";
    int rc;

    luaL_checktype(L, 2, LUA_TTABLE);
    sluice_lua_opt_table(L, 3);
    lua_settop(L, 3);
    memset(&cfg, 0, sizeof cfg);
    lua_getfield(L, 2, "props");                      /* index 4 */
    cfg.props = sluice_lua_string_pairs(L, 4, "kafka properties");
    a = sluice_lua_handle_new(L, &sluice_lua_admin_type, sizeof *a, 1);
    a->cbs_ref = LUA_NOREF;
    sluice_lua_handle_ref(L, &a->h, ERROR, 3, "error", 0);
    lua_newtable(L);
    a->cbs_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    cfg.on_error = on_error;
    cfg.ud = a;
    rc = sluice_admin_new(a->h.ctx->loop, &cfg, &admin, err, sizeof err);
    if (rc) return sluice_lua_handle_fail(L, &a->h, rc, err);
    a->h.obj = admin;
    return 1;
}

/* close: requests in flight are answered DESTROY; __gc: without Lua. */
static void admin_free(void *obj) { sluice_admin_free(obj); }

static const luaL_Reg methods[] = {
    { "create_topics", admin_create_topics }, { "delete_topics", admin_delete_topics },
    { "describe_topics", admin_describe_topics }, { "describe_configs", admin_describe_configs },
    { "alter_configs", admin_alter_configs }, { "pending", admin_pending },
    { "in_handler", admin_in_handler }, { NULL, NULL }
};
static const luaL_Reg functions[] = { { "admin", admin_new }, { NULL, NULL } };

const sluice_lua_type sluice_lua_admin_type = {
    .name = "sluice.admin", .free = admin_free, .collect = admin_collect,
    .closable = 1, .methods = methods, .functions = functions,
};
