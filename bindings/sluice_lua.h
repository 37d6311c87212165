/* Shared by the binding files of the `sluice.core` module. Each userdata
 * type lives in its own file; this header declares what they share: the
 * loop context, the protected-call helper and the error conventions. */
#ifndef SLUICE_LUA_H
#define SLUICE_LUA_H

#include "compat.h"
#include "sluice/loop.h"

#define SLUICE_LOOP_MT     "sluice.loop"
#define SLUICE_TIMER_MT    "sluice.timer"
#define SLUICE_SERVER_MT   "sluice.server"
#define SLUICE_CONN_MT     "sluice.ws.conn"
#define SLUICE_HTTP_MT     "sluice.http.req"
#define SLUICE_PRODUCER_MT "sluice.producer"
#define SLUICE_CONSUMER_MT "sluice.consumer"
#define SLUICE_BROKER_MT   "sluice.broker"
#define SLUICE_FSWATCH_MT  "sluice.fswatch"

/* The loop userdata. Every other object keeps a registry ref to it, so the
 * loop outlives them. `L` is the Lua thread currently driving the loop:
 * C→Lua callbacks only happen inside calls made from Lua (run_once, run,
 * flush, close), which set it on entry. */
typedef struct sluice_lua_loop {
    sluice_loop *loop;
    lua_State *L;
    int log_ref;             /* Lua log function, or LUA_NOREF: stderr */
    int log_level;
    unsigned long handler_errors;
    int signal_ref;          /* Lua function for signals, or LUA_NOREF */
    void *signals;           /* sluice_signal_watch * while watching */
    /* Per-handler-call limits (sluice_lua_call): 0 = off. */
    unsigned long limit_instructions;
    unsigned limit_ms;
    int call_depth;          /* nested sluice_lua_call on this loop */
    unsigned long used_instructions;
    uint64_t deadline_ms;
} sluice_lua_loop;

/* A reference from an object to its loop. */
typedef struct sluice_lua_owner {
    sluice_lua_loop *ctx;
    int loop_ref;
} sluice_lua_owner;

/* module.c ---------------------------------------------------------------- */
/* Call the function below nargs arguments on top of ctx->L in protected
 * mode with a traceback. On error: the traceback is logged with `what`,
 * handler_errors is incremented, nothing is left on the stack and the
 * result is nonzero. On success nresults are left on the stack. */
int sluice_lua_call(sluice_lua_loop *ctx, int nargs, int nresults, const char *what);
/* Push the registry value ref onto ctx->L; 0 if there is none. */
int sluice_lua_pushref(lua_State *L, int ref);
void sluice_lua_unref(lua_State *L, int *ref);
/* Push nil, "CODE: message", "CODE" and return 3. */
int sluice_lua_fail(lua_State *L, const char *code, const char *fmt, ...);
/* The same for a core error code and its err text (may be empty). */
int sluice_lua_fail_core(lua_State *L, int code, const char *err);
/* Log through the loop's Lua logger (or stderr). */
void sluice_lua_log(sluice_lua_loop *ctx, int level, const char *msg);
/* Create a metatable with methods as __index (if index is NULL) and the
 * given metamethods. Leaves nothing on the stack. */
void sluice_lua_newclass(lua_State *L, const char *name, const luaL_Reg *methods,
                         const luaL_Reg *meta);
/* Collect a Lua table of string→string pairs (librdkafka properties, HTTP
 * headers) at idx into a NULL-terminated array of name,value pointers.
 * The strings stay anchored by the table on the stack; the array is a
 * userdata pushed on top of the stack (pop it when done). Raises on a
 * non-string value naming the argument. */
const char **sluice_lua_string_pairs(lua_State *L, int idx, const char *argname);
/* A registry ref to the function in field of the table at idx, or
 * LUA_NOREF when absent (raises if required, or if not a function). */
int sluice_lua_function_ref(lua_State *L, int idx, const char *field, int required);
/* Report a Kafka client error to the Lua function ref, or log it. */
void sluice_lua_kafka_error(sluice_lua_loop *ctx, int ref, const char *who,
                            const char *name, const char *text, int fatal);
/* Metatable setup for userdata whose fields live in their user value
 * table: __index looks in methods first, then the fields. */
void sluice_lua_newfieldclass(lua_State *L, const char *name, const luaL_Reg *methods,
                              const luaL_Reg *meta);

/* Take ownership info from the loop argument at idx. */
sluice_lua_loop *sluice_lua_checkloop(lua_State *L, int idx);
void sluice_lua_own(lua_State *L, int loop_idx, sluice_lua_owner *owner);
void sluice_lua_disown(lua_State *L, sluice_lua_owner *owner);

/* Per-type openers: each registers its metatable and adds its
 * constructors to the module table on top of the stack. */
void sluice_lua_open_loop(lua_State *L);
void sluice_lua_open_timer(lua_State *L);
void sluice_lua_open_server(lua_State *L);
void sluice_lua_open_conn(lua_State *L);
void sluice_lua_open_http(lua_State *L);
void sluice_lua_open_producer(lua_State *L);
void sluice_lua_open_consumer(lua_State *L);
void sluice_lua_open_broker(lua_State *L);
void sluice_lua_open_fswatch(lua_State *L);
void sluice_lua_open_schema(lua_State *L);

/* conn.c: shared by server.c and the client constructor. */
struct sluice_conn;
struct sluice_conn_handlers;
typedef struct sluice_lua_conn_owner sluice_lua_conn_owner;
/* Handler refs shared by every connection of one server (or one client). */
struct sluice_lua_conn_owner {
    sluice_lua_owner owner;
    int open_ref, message_ref, close_ref;
    int closing_from_gc;     /* free without calling Lua */
};
void sluice_lua_conn_handlers(struct sluice_conn_handlers *h);
/* Read open/message/close functions from the table at idx into refs. */
void sluice_lua_conn_owner_init(lua_State *L, int idx, sluice_lua_conn_owner *o);
void sluice_lua_conn_owner_release(lua_State *L, sluice_lua_conn_owner *o);
/* Wrap a core connection in a new sluice.ws.conn userdata (pushed). */
void sluice_lua_conn_wrap(lua_State *L, sluice_lua_conn_owner *o, struct sluice_conn *c);
/* http.c */
struct sluice_http_req;
void sluice_lua_http_wrap(lua_State *L, struct sluice_http_req *r);
void sluice_lua_http_forget(struct sluice_http_req *r, lua_State *L);

#endif
