/* sluice.broker: the embedded (in-memory, mock) Kafka cluster. */
#include <string.h>

#include "sluice_lua.h"
#include "sluice/broker.h"

typedef struct lua_broker {
    sluice_broker *broker;   /* NULL once closed */
    sluice_lua_owner owner;
} lua_broker;

static lua_broker *check_broker(lua_State *L)
{
    lua_broker *b = luaL_checkudata(L, 1, SLUICE_BROKER_MT);
    if (b->broker == NULL) luaL_error(L, "attempt to use a closed %s", SLUICE_BROKER_MT);
    return b;
}

/* core.broker(loop, { port = 9092, partitions = 4, brokers = 1 }) */
static int broker_new(lua_State *L)
{
    sluice_broker_config cfg;
    lua_broker *b;
    char err[256] = "";
    int rc;

    sluice_lua_checkloop(L, 1);
    if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
    else { lua_newtable(L); lua_replace(L, 2); }
    memset(&cfg, 0, sizeof cfg);
    lua_getfield(L, 2, "port");
    cfg.port = (int)luaL_optinteger(L, -1, 9092);
    lua_getfield(L, 2, "partitions");
    cfg.partitions = (int)luaL_optinteger(L, -1, 0);
    lua_getfield(L, 2, "brokers");
    cfg.brokers = (int)luaL_optinteger(L, -1, 0);
    lua_pop(L, 3);

    b = sluice_newuserdata(L, sizeof *b);
    memset(b, 0, sizeof *b);
    b->owner.loop_ref = LUA_NOREF;
    luaL_getmetatable(L, SLUICE_BROKER_MT);
    lua_setmetatable(L, -2);
    sluice_lua_own(L, 1, &b->owner);
    b->owner.ctx->L = L;
    rc = sluice_broker_new(b->owner.ctx->loop, &cfg, &b->broker, err, sizeof err);
    if (rc) {
        sluice_lua_disown(L, &b->owner);
        return sluice_lua_fail_core(L, rc, err);
    }
    return 1;
}

static int broker_bootstrap(lua_State *L)
{
    lua_pushstring(L, sluice_broker_bootstrap(check_broker(L)->broker));
    return 1;
}

static int broker_direct_bootstrap(lua_State *L)
{
    lua_pushstring(L, sluice_broker_direct_bootstrap(check_broker(L)->broker));
    return 1;
}

/* broker:create_topic(name [, partitions]) → true | nil, err, code */
static int broker_create_topic(lua_State *L)
{
    lua_broker *b = check_broker(L);
    char err[256] = "";
    int rc = sluice_broker_create_topic(b->broker, luaL_checkstring(L, 2),
                                        (int)luaL_optinteger(L, 3, 0), err, sizeof err);
    if (rc) return sluice_lua_fail_core(L, rc, err);
    lua_pushboolean(L, 1);
    return 1;
}

static int broker_close(lua_State *L)
{
    lua_broker *b = luaL_checkudata(L, 1, SLUICE_BROKER_MT);
    if (b->broker == NULL) return 0;
    sluice_broker_free(b->broker);
    b->broker = NULL;
    sluice_lua_disown(L, &b->owner);
    return 0;
}

void sluice_lua_open_broker(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "bootstrap", broker_bootstrap },
        { "direct_bootstrap", broker_direct_bootstrap },
        { "create_topic", broker_create_topic },
        { "close", broker_close },
        { NULL, NULL }
    };
    static const luaL_Reg meta[] = {
        { "__gc", broker_close },
        { "__close", broker_close },
        { NULL, NULL }
    };
    sluice_lua_newclass(L, SLUICE_BROKER_MT, methods, meta);
    lua_pushcfunction(L, broker_new);
    lua_setfield(L, -2, "broker");
}
