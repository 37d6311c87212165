/* Shared by the binding files of the `sluice.core` module. Each userdata
 * type lives in its own file; this header declares what they share: the
 * handle every type is built on, the loop context, the protected-call
 * helper, the option reader and the error conventions. */
#ifndef SLUICE_LUA_H
#define SLUICE_LUA_H

#include <stddef.h>
#include <stdint.h>

#include "compat.h"
#include "sluice/error.h"
#include "sluice/loop.h"

/* ---- handles (handle.c) --------------------------------------------------
 * Every userdata type starts with a sluice_lua_handle: the loop it runs on,
 * the refs it owns, and whether it is closed. close, __close and __gc are
 * one idempotent function; a type only says how its C object is freed. */
typedef struct sluice_lua_handle sluice_lua_handle;
typedef struct sluice_lua_loop sluice_lua_loop;

/* What is particular to one userdata type. */
typedef struct sluice_lua_type {
    const char *name;        /* registry name of the metatable */
    /* Frees the C object h->obj (never NULL when called). */
    void (*free)(void *obj);
    /* Instead of free, when closing takes more (NULL: free). With
     * h->from_gc the state is collecting it: call no Lua. */
    void (*close)(lua_State *L, sluice_lua_handle *h);
    /* At __gc, after close: release what had to outlive close. Optional. */
    void (*collect)(lua_State *L, sluice_lua_handle *h);
    /* The program closes it (close and __close methods). Otherwise its
     * peer ends it (a WebSocket, an HTTP request) and only __gc frees it. */
    int closable;
    /* Fields (id, path, ...) live in the userdata's user value table. */
    int fields;
    const luaL_Reg *methods, *meta;
    const luaL_Reg *functions;   /* constructors etc., in the module table */
} sluice_lua_type;

#define SLUICE_LUA_REFS 7

enum { SLUICE_LUA_OPEN, SLUICE_LUA_CLOSING, SLUICE_LUA_CLOSED };   /* handle states */

struct sluice_lua_handle {
    const sluice_lua_type *type;
    void *obj;                   /* the C object; NULL once closed */
    sluice_lua_loop *ctx;        /* the loop it runs on, or NULL */
    int loop_ref;                /* keeps that loop alive until closed */
    int self_ref;                /* anchors the userdata while open */
    int refs[SLUICE_LUA_REFS];   /* its callbacks, released on close */
    unsigned char state;         /* SLUICE_LUA_OPEN, _CLOSING, _CLOSED */
    unsigned char from_gc;       /* being collected: call no Lua */
};

/* A new userdata of `size` bytes (a struct starting with the handle) on
 * top of the stack, zeroed, refs empty. loop_idx > 0: it runs on the loop
 * argument there (checked, referenced). */
void *sluice_lua_handle_new(lua_State *L, const sluice_lua_type *t, size_t size, int loop_idx);
/* Anchor the userdata on top of the stack until it is closed. */
void sluice_lua_handle_anchor(lua_State *L, sluice_lua_handle *h);
/* The handle at idx; raises "attempt to use a closed <type>" once closed.
 * Makes L the thread its loop calls Lua on. */
void *sluice_lua_handle_check(lua_State *L, int idx, const sluice_lua_type *t);
/* The C object of the handle at idx (checked as above). */
void *sluice_lua_handle_obj(lua_State *L, int idx, const sluice_lua_type *t);
/* The handle at idx, open or closed. */
void *sluice_lua_handle_get(lua_State *L, int idx, const sluice_lua_type *t);
/* Close: the type's close, then every ref released. Idempotent. */
void sluice_lua_handle_close(lua_State *L, sluice_lua_handle *h);
/* Release the refs and mark it closed without the type's close (its C
 * object is gone already, or was never made). */
void sluice_lua_handle_release(lua_State *L, sluice_lua_handle *h);
/* Release, then return nil, "CODE: err", "CODE" for a core error. */
int sluice_lua_handle_fail(lua_State *L, sluice_lua_handle *h, int code, const char *err);
/* refs[slot] = the function in field of the table at idx (LUA_NOREF when
 * absent; raises if required, or if not a function). */
void sluice_lua_handle_ref(lua_State *L, sluice_lua_handle *h, int slot, int idx,
                           const char *field, int required);
/* refs[slot] = a ref to the value at idx. */
void sluice_lua_handle_set(lua_State *L, sluice_lua_handle *h, int slot, int idx);
/* Push callback refs[slot] on the loop's thread; 0 (nothing pushed) if
 * there is none or the handle is being collected. */
int sluice_lua_handle_callback(sluice_lua_handle *h, int slot);
/* Register the metatable (methods, meta and the shared close/__close/
 * __gc; closable types also get close and is_closed methods) and add
 * t->functions to the module table on top of the stack. */
void sluice_lua_handle_class(lua_State *L, const sluice_lua_type *t);

/* ---- the loop (loop.c) ---------------------------------------------------
 * Every other object keeps a registry ref to it, so the loop outlives
 * them. `L` is the Lua thread currently driving the loop: C→Lua callbacks
 * only happen inside calls made from Lua (run_once, run, flush, close),
 * which set it on entry (sluice_lua_handle_check). */
enum { SLUICE_LUA_LOOP_LOG, SLUICE_LUA_LOOP_SIGNAL };   /* its refs */

/* Time spent in handler calls of one kind (the `what` of sluice_lua_call,
 * a string literal, told apart by address): a histogram in nanoseconds. */
#define SLUICE_LUA_TIME_BUCKETS 14
extern const uint64_t sluice_lua_time_bounds_ns[SLUICE_LUA_TIME_BUCKETS];
typedef struct sluice_lua_handler_time {
    const char *what;
    uint64_t count, sum_ns, errors;
    uint64_t buckets[SLUICE_LUA_TIME_BUCKETS + 1];   /* the last: above every bound */
} sluice_lua_handler_time;
#define SLUICE_LUA_HANDLER_KINDS 16

struct sluice_lua_loop {
    sluice_lua_handle h;     /* h.ctx is the loop itself */
    sluice_loop *loop;
    lua_State *L;
    int log_level;
    unsigned long handler_errors;
    void *signals;           /* sluice_signal_watch * while watching */
    /* Per-handler-call limits (sluice_lua_call): 0 = off. */
    unsigned long limit_instructions;
    unsigned limit_ms;
    int call_depth;          /* nested sluice_lua_call on this loop */
    unsigned long used_instructions;
    uint64_t deadline_ms;
    sluice_lua_handler_time times[SLUICE_LUA_HANDLER_KINDS];
    int ntimes;
};

extern const sluice_lua_type sluice_lua_loop_type;
#define SLUICE_LOOP_MT "sluice.loop"

/* ---- options (options.c) -------------------------------------------------
 * Fields of an options table at idx (absent or nil: the default). A value
 * of the wrong type or out of range raises, naming the argument and the
 * option: bad argument #2 to 'server' ('port' must be an integer from 0
 * to 65535, got -1). */
lua_Integer sluice_lua_opt_int(lua_State *L, int idx, const char *name, lua_Integer dflt,
                               lua_Integer min, lua_Integer max);
/* A byte count or a count: an integer >= 0. */
size_t sluice_lua_opt_size(lua_State *L, int idx, const char *name);
lua_Number sluice_lua_opt_number(lua_State *L, int idx, const char *name, lua_Number dflt,
                                 lua_Number min, lua_Number max);
/* A string (anchored by the table), or dflt. */
const char *sluice_lua_opt_string(lua_State *L, int idx, const char *name, const char *dflt);
/* Any value: its truth; absent: dflt. */
int sluice_lua_opt_flag(lua_State *L, int idx, const char *name, int dflt);
/* An options argument: a table, or none/nil replaced by an empty table. */
void sluice_lua_opt_table(lua_State *L, int idx);

/* ---- module.c ------------------------------------------------------------ */
/* Call the function below nargs arguments on top of ctx->L in protected
 * mode with a traceback. On error: the traceback is logged with `what`,
 * handler_errors is incremented, nothing is left on the stack and the
 * result is nonzero. On success nresults are left on the stack. */
int sluice_lua_call(sluice_lua_loop *ctx, int nargs, int nresults, const char *what);
/* t[field] = v for the table on top of the stack. */
void sluice_lua_setint(lua_State *L, const char *field, lua_Integer v);
/* Append the value on top to the list just below it (pops it). */
void sluice_lua_append(lua_State *L);
/* Push the registry value ref onto L; 0 if there is none. */
int sluice_lua_pushref(lua_State *L, int ref);
void sluice_lua_unref(lua_State *L, int *ref);
/* Push nil, "CODE: message", "CODE" and return 3. */
int sluice_lua_fail(lua_State *L, const char *code, const char *fmt, ...);
/* The same for a core error code and its err text (may be empty). */
int sluice_lua_fail_core(lua_State *L, int code, const char *err);
/* Push true and return 1 if rc is 0, else the failure for rc and err. */
int sluice_lua_result(lua_State *L, int rc, const char *err);
/* Log through the loop's Lua logger (or stderr). */
void sluice_lua_log(sluice_lua_loop *ctx, int level, const char *msg);
/* Collect a Lua table of string→string pairs (librdkafka properties, HTTP
 * headers) at idx into a NULL-terminated array of name,value pointers.
 * The strings stay anchored by the table on the stack; the array is a
 * userdata pushed on top of the stack (pop it when done). Raises on a
 * non-string value naming the argument. */
const char **sluice_lua_string_pairs(lua_State *L, int idx, const char *argname);
/* Push a table with the strings s[0..n-1] as its list. */
void sluice_lua_push_strings(lua_State *L, const char *const *s, size_t n);
/* Report a Kafka client error to callback refs[slot] of h, or log it. */
void sluice_lua_kafka_error(sluice_lua_handle *h, int slot, const char *who,
                            const char *name, const char *text, int fatal);
/* Add header name = value to the table on top of the stack of ud (a lua_State). */
void sluice_lua_add_header(void *ud, const char *name, const char *value);
/* Give the headers table on top of the stack an __index that looks up any
 * other header (custom ones: lws cannot list them) with lookup, a C
 * function of (table, name) with the value on top of the stack as its
 * upvalue (popped). */
void sluice_lua_lazy_headers(lua_State *L, lua_CFunction lookup);
/* Push a malloc'd header value (or nil) and free it: a lookup's result. */
int sluice_lua_push_header(lua_State *L, char *value);

/* The types, each defined in its own file. */
extern const sluice_lua_type sluice_lua_timer_type, sluice_lua_server_type,
    sluice_lua_conn_type, sluice_lua_http_type, sluice_lua_producer_type,
    sluice_lua_consumer_type, sluice_lua_broker_type, sluice_lua_fswatch_type,
    sluice_lua_schema_type, sluice_lua_route_type, sluice_lua_catchup_type,
    sluice_lua_jwt_keys_type, sluice_lua_unix_type, sluice_lua_admin_type,
    sluice_lua_conn_set_type;

/* A Kafka record as a table: topic, partition, offset, key, value,
 * timestamp, headers (consumer.c; catchup.c's records too). */
struct sluice_record;
void sluice_lua_push_record(lua_State *L, const struct sluice_record *r);
/* offsets = { [topic] = { [partition] = offset, ... }, ... } at idx (nil:
 * none) as a list in a userdata pushed on the stack; strings anchored by
 * the table. Raises naming argument arg (consumer.c; producer.c too). */
struct sluice_partition;
struct sluice_partition *sluice_lua_read_offsets(lua_State *L, int idx, int arg, size_t *n);

/* ---- conn.c: shared by server.c and the client constructor --------------
 * The handle that owns a set of connections (a server, or a client
 * connection itself) holds their open/message/close functions in these
 * ref slots; the core calls the handlers with that handle as ud. */
enum { SLUICE_LUA_CONN_OPEN, SLUICE_LUA_CONN_MESSAGE, SLUICE_LUA_CONN_CLOSE };
struct sluice_conn;
struct sluice_conn_handlers;
void sluice_lua_conn_handlers(struct sluice_conn_handlers *h);
/* Read open/message/close functions from the table at idx into o's refs. */
void sluice_lua_conn_refs(lua_State *L, sluice_lua_handle *o, int idx);
/* The core connection of the conn userdata at idx (raises if it is not
 * one); NULL once it is closed. */
struct sluice_conn *sluice_lua_conn_check(lua_State *L, int idx);

/* ---- declared routes (route.c, server.c) --------------------------------
 * A server keeps, per path, what is declared there: the route (a core
 * sluice_ingest), the producer its rows go to and an optional Lua
 * transform. Its connections point to their path's slot and run each text
 * message through the route before (instead of) the message handler. */
#include "sluice/ingest.h"
typedef struct sluice_lua_route {
    struct sluice_lua_route *next;
    struct sluice_ingest *decl;      /* retained; NULL: nothing declared */
    sluice_lua_handle *producer;     /* anchored by producer_ref */
    int producer_ref, transform_ref; /* LUA_NOREF: none */
    int busy;                        /* a message is being run through it */
    /* A console's tap on the route (server:tap): fn(conn, text, n) for at
     * most 1 in tap_every of the messages it takes and tap_rate a second,
     * n counting the ones passed over since; declaring keeps it. */
    int tap_ref;
    unsigned tap_every, tap_rate, tap_window_count;
    unsigned long tap_seen, tap_passed;
    uint64_t tap_window_ms;
    int orphan;                      /* its server was collected meanwhile: freed when done */
    sluice_ingest_batch batch;
    char path[];
} sluice_lua_route;
/* The slot of path on server handle o, made on first use; NULL for a
 * handle that is not a server's, or when out of memory. */
sluice_lua_route *sluice_lua_server_route(sluice_lua_handle *o, const char *path);
/* Runs a text message through the slot's route: 1 when the route took it
 * (every row is in flight or refused to its client), 0 when it is the
 * message handler's. *peer is the connection's, made on first use. */
int sluice_lua_route_message(sluice_lua_loop *ctx, sluice_lua_route *r, int conn_ref,
                             struct sluice_conn *c, struct sluice_ingest_peer **peer,
                             const char *data, size_t len);
void sluice_lua_route_clear(lua_State *L, sluice_lua_route *r);
/* Clears and frees a slot; a busy one is freed when its message is done. */
void sluice_lua_route_free(lua_State *L, sluice_lua_route *r);
/* producer.c: the core producer of a producer handle (NULL once closed),
 * and the count of a record sent for it from C. */
struct sluice_producer *sluice_lua_producer_obj(sluice_lua_handle *h);
void sluice_lua_producer_count_sent(sluice_lua_handle *h);

/* http.c */
struct sluice_http_req;
void sluice_lua_http_wrap(lua_State *L, struct sluice_http_req *r);
void sluice_lua_http_forget(struct sluice_http_req *r, lua_State *L);
void sluice_lua_http_aborted(struct sluice_http_req *r, sluice_lua_loop *ctx, int from_gc);

#endif
