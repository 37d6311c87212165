/* sluice.broker: the embedded (in-memory, mock) Kafka cluster. */
#include <limits.h>
#include <string.h>

#include "sluice_lua.h"
#include "sluice/broker.h"

/* h.obj: the sluice_broker. */

static sluice_broker *check_broker(lua_State *L)
{
    return sluice_lua_handle_obj(L, 1, &sluice_lua_broker_type);
}

/* core.broker(loop, { port = 9092, partitions = 4, brokers = 1 }) */
static int broker_new(lua_State *L)
{
    sluice_broker_config cfg;
    sluice_lua_handle *h;
    sluice_broker *b = NULL;
    char err[256] = "";
    int rc;

    sluice_lua_opt_table(L, 2);
    memset(&cfg, 0, sizeof cfg);
    cfg.port = (int)sluice_lua_opt_int(L, 2, "port", 9092, -1, 65535);
    cfg.partitions = (int)sluice_lua_opt_int(L, 2, "partitions", 0, 0, INT_MAX);
    cfg.brokers = (int)sluice_lua_opt_int(L, 2, "brokers", 0, 0, INT_MAX);
    h = sluice_lua_handle_new(L, &sluice_lua_broker_type, sizeof *h, 1);
    rc = sluice_broker_new(h->ctx->loop, &cfg, &b, err, sizeof err);
    if (rc) return sluice_lua_handle_fail(L, h, rc, err);
    h->obj = b;
    return 1;
}

static int broker_bootstrap(lua_State *L)
{
    lua_pushstring(L, sluice_broker_bootstrap(check_broker(L)));
    return 1;
}

static int broker_direct_bootstrap(lua_State *L)
{
    lua_pushstring(L, sluice_broker_direct_bootstrap(check_broker(L)));
    return 1;
}

/* broker:create_topic(name [, partitions]) → true | nil, err, code */
static int broker_create_topic(lua_State *L)
{
    sluice_broker *b = check_broker(L);
    char err[256] = "";
    return sluice_lua_result(L, sluice_broker_create_topic(b, luaL_checkstring(L, 2),
                                        (int)luaL_optinteger(L, 3, 0), err, sizeof err), err);
}

/* ---- fault injection: each → true | nil, err, code; misuse raises ---- */

/* broker:count() → number of brokers (ids 1..count) */
static int broker_count(lua_State *L)
{
    lua_pushinteger(L, sluice_broker_count(check_broker(L)));
    return 1;
}

static int broker_set_down(lua_State *L)
{
    sluice_broker *b = check_broker(L);
    char err[256] = "";
    return sluice_lua_result(L, sluice_broker_set_down(b, (int)luaL_checkinteger(L, 2),
                                                 err, sizeof err), err);
}

static int broker_set_up(lua_State *L)
{
    sluice_broker *b = check_broker(L);
    char err[256] = "";
    return sluice_lua_result(L, sluice_broker_set_up(b, (int)luaL_checkinteger(L, 2),
                                               err, sizeof err), err);
}

/* broker:set_rtt(id, ms) */
static int broker_set_rtt(lua_State *L)
{
    sluice_broker *b = check_broker(L);
    char err[256] = "";
    return sluice_lua_result(L, sluice_broker_set_rtt(b, (int)luaL_checkinteger(L, 2),
                                                (int)luaL_checkinteger(L, 3), err, sizeof err), err);
}

/* Kafka API keys by name, for push_errors. */
static const struct { const char *name; int key; } api_keys[] = {
    { "Produce", 0 }, { "Fetch", 1 }, { "ListOffsets", 2 }, { "Metadata", 3 },
    { "OffsetCommit", 8 }, { "OffsetFetch", 9 }, { "FindCoordinator", 10 },
    { "JoinGroup", 11 }, { "Heartbeat", 12 }, { "LeaveGroup", 13 },
    { "SyncGroup", 14 }, { "ApiVersions", 18 }, { "InitProducerId", 22 },
    { NULL, 0 }
};

static int check_api_key(lua_State *L, int idx)
{
    if (lua_type(L, idx) == LUA_TSTRING) {
        const char *name = lua_tostring(L, idx);
        for (int i = 0; api_keys[i].name; i++)
            if (strcmp(api_keys[i].name, name) == 0) return api_keys[i].key;
        return luaL_argerror(L, idx, lua_pushfstring(L, "unknown Kafka API '%s'", name));
    }
    return (int)luaL_checkinteger(L, idx);
}

/* A Kafka error code given as a number or a name ("NOT_LEADER_FOR_PARTITION"). */
static int check_error_code(lua_State *L, int idx, int argn)
{
    int code = 0;
    if (lua_type(L, idx) == LUA_TNUMBER) return (int)lua_tointeger(L, idx);
    if (lua_type(L, idx) == LUA_TSTRING) {
        if (sluice_broker_error_code(lua_tostring(L, idx), &code)) return code;
        return luaL_argerror(L, argn, lua_pushfstring(L, "unknown Kafka error '%s'", lua_tostring(L, idx)));
    }
    return luaL_argerror(L, argn, lua_pushfstring(L, "Kafka error code or name expected, got %s",
                                                  luaL_typename(L, idx)));
}

/* broker:push_errors(api, { code_or_name, … }): the next #codes requests
 * of that API fail with these errors, in order; {} clears them. */
static int broker_push_errors(lua_State *L)
{
    sluice_broker *b = check_broker(L);
    int api = check_api_key(L, 2);
    size_t n;
    int *codes;
    char err[256] = "";
    luaL_checktype(L, 3, LUA_TTABLE);
    n = (size_t)sluice_rawlen(L, 3);
    codes = lua_newuserdata(L, (n ? n : 1) * sizeof *codes);
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, 3, (lua_Integer)i + 1);
        codes[i] = check_error_code(L, -1, 3);
        lua_pop(L, 1);
    }
    return sluice_lua_result(L, sluice_broker_push_errors(b, api, n, codes, err, sizeof err), err);
}

/* broker:set_leader(topic, partition, id) */
static int broker_set_leader(lua_State *L)
{
    sluice_broker *b = check_broker(L);
    char err[256] = "";
    return sluice_lua_result(L, sluice_broker_set_leader(b, luaL_checkstring(L, 2),
                                                   (int)luaL_checkinteger(L, 3),
                                                   (int)luaL_checkinteger(L, 4), err, sizeof err), err);
}

static void broker_free(void *b) { sluice_broker_free(b); }

static const luaL_Reg methods[] = {
    { "bootstrap", broker_bootstrap }, { "direct_bootstrap", broker_direct_bootstrap },
    { "create_topic", broker_create_topic }, { "count", broker_count },
    { "set_down", broker_set_down }, { "set_up", broker_set_up }, { "set_rtt", broker_set_rtt },
    { "push_errors", broker_push_errors }, { "set_leader", broker_set_leader },
    { NULL, NULL }
};
static const luaL_Reg functions[] = { { "broker", broker_new }, { NULL, NULL } };

const sluice_lua_type sluice_lua_broker_type = {
    .name = "sluice.broker", .free = broker_free, .closable = 1,
    .methods = methods, .functions = functions,
};
