/* luaopen_sluice_core and the helpers every binding file shares: the one
 * protected-call helper through which every C→Lua call passes, error
 * returns in the `nil, "CODE: message", "CODE"` convention, and logging. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "sluice_lua.h"
#include "sluice/error.h"
#include "sluice/version.h"


static const char *const level_names[] = { "error", "warn", "info", "debug" };

void sluice_lua_log(sluice_lua_loop *ctx, int level, const char *msg)
{
    lua_State *L = ctx->L;
    if (level > ctx->log_level) return;
    if (level < 0) level = 0;
    if (level > 3) level = 3;
    if (L && ctx->h.refs[SLUICE_LUA_LOOP_LOG] != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->h.refs[SLUICE_LUA_LOOP_LOG]);
        lua_pushstring(L, level_names[level]);
        lua_pushstring(L, msg);
        /* A failing logger must not recurse into logging. */
        if (lua_pcall(L, 2, 0, 0) == 0) return;
        fprintf(stderr, "sluice: log function failed: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    {
        char stamp[32];
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &tm);
        fprintf(stderr, "%s sluice %s: %s\n", stamp, level_names[level], msg);
    }
}

static int traceback_handler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    sluice_traceback(L, L, msg, 1);
    return 1;
}

/* Handler limits: a count hook, run every LIMIT_STEP VM instructions
 * while a handler runs, raises once the call has used up its instruction
 * budget or its time. Hooks take no user pointer, so the loop being served
 * is found under this key in the registry (set only during a call). Under
 * LuaJIT, JIT-compiled code runs no hooks: there the limit only catches
 * interpreted code (docs/limits.md). */
#define LIMIT_STEP 1000
static const char limit_key = 'L';

static void limit_hook(lua_State *L, lua_Debug *ar)
{
    sluice_lua_loop *ctx;
    (void)ar;
    lua_pushlightuserdata(L, (void *)&limit_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    ctx = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (ctx == NULL || ctx->call_depth == 0) return;
    ctx->used_instructions += LIMIT_STEP;
    if (ctx->limit_instructions && ctx->used_instructions > ctx->limit_instructions) {
        char msg[128];   /* lua_pushfstring has no %lu */
        snprintf(msg, sizeof msg, "over its limit of %lu instructions", ctx->limit_instructions);
        luaL_error(L, "handler stopped: %s (handler_instructions)", msg);
    }
    if (ctx->deadline_ms && sluice_now_ms() > ctx->deadline_ms)
        luaL_error(L, "handler stopped: ran longer than %d ms (handler_timeout)", (int)ctx->limit_ms);
}

/* Arms the limits for an outermost call; nested calls share its budget.
 * A hook the user set (a debugger) is left alone. Returns 1 if armed. */
static int limit_begin(sluice_lua_loop *ctx, lua_State *L)
{
    if (ctx->call_depth++ > 0) return 0;
    if (!ctx->limit_instructions && !ctx->limit_ms) return 0;
    if (lua_gethook(L) != NULL && lua_gethook(L) != limit_hook) return 0;
    ctx->used_instructions = 0;
    ctx->deadline_ms = ctx->limit_ms ? sluice_now_ms() + ctx->limit_ms : 0;
    lua_pushlightuserdata(L, (void *)&limit_key);
    lua_pushlightuserdata(L, ctx);
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_sethook(L, limit_hook, LUA_MASKCOUNT, LIMIT_STEP);
    return 1;
}

static void limit_end(sluice_lua_loop *ctx, lua_State *L, int armed)
{
    ctx->call_depth--;
    if (!armed) return;
    lua_sethook(L, NULL, 0, 0);
    /* Coroutines created meanwhile keep the hook: they must find no loop. */
    lua_pushlightuserdata(L, (void *)&limit_key);
    lua_pushnil(L);
    lua_rawset(L, LUA_REGISTRYINDEX);
}

/* Upper bounds of the handler-time buckets: 10 µs to 1 s. */
const uint64_t sluice_lua_time_bounds_ns[SLUICE_LUA_TIME_BUCKETS] = {
    10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000,
    10000000, 25000000, 100000000, 250000000, 1000000000,
};

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The histogram of `what`; the kinds are the few literals of the bindings,
 * so the table never fills (if it did, the time goes uncounted). */
static sluice_lua_handler_time *handler_time(sluice_lua_loop *ctx, const char *what)
{
    for (int i = 0; i < ctx->ntimes; i++)
        if (ctx->times[i].what == what) return &ctx->times[i];
    if (ctx->ntimes == SLUICE_LUA_HANDLER_KINDS) return NULL;
    ctx->times[ctx->ntimes].what = what;
    return &ctx->times[ctx->ntimes++];
}

static void handler_timed(sluice_lua_loop *ctx, const char *what, uint64_t ns, int failed)
{
    sluice_lua_handler_time *t = handler_time(ctx, what);
    int b = 0;
    if (!t) return;
    while (b < SLUICE_LUA_TIME_BUCKETS && ns > sluice_lua_time_bounds_ns[b]) b++;
    t->buckets[b]++;
    t->count++;
    t->sum_ns += ns;
    if (failed) t->errors++;
}

int sluice_lua_call(sluice_lua_loop *ctx, int nargs, int nresults, const char *what)
{
    lua_State *L = ctx->L;
    int base = lua_gettop(L) - nargs;   /* index of the function */
    int rc, armed;
    /* Only outermost calls are timed: a nested call's time is its caller's. */
    int outer = ctx->call_depth == 0;
    uint64_t start = outer ? mono_ns() : 0;

    lua_pushcfunction(L, traceback_handler);
    lua_insert(L, base);
    armed = limit_begin(ctx, L);
    rc = lua_pcall(L, nargs, nresults, base);
    limit_end(ctx, L, armed);
    lua_remove(L, base);
    if (outer) handler_timed(ctx, what, mono_ns() - start, rc != 0);
    if (rc != 0) {
        const char *msg = lua_tostring(L, -1);
        char line[4096];
        ctx->handler_errors++;
        snprintf(line, sizeof line, "%s failed: %s", what, msg ? msg : "(no message)");
        lua_pop(L, 1);
        sluice_lua_log(ctx, SLUICE_LOG_ERROR, line);
    }
    return rc;
}

void sluice_lua_setint(lua_State *L, const char *field, lua_Integer v)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, field);
}

void sluice_lua_append(lua_State *L)
{
    lua_rawseti(L, -2, (int)sluice_rawlen(L, -2) + 1);
}

int sluice_lua_pushref(lua_State *L, int ref)
{
    if (ref == LUA_NOREF || ref == LUA_REFNIL) return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    return 1;
}

void sluice_lua_unref(lua_State *L, int *ref)
{
    if (*ref != LUA_NOREF && *ref != LUA_REFNIL)
        luaL_unref(L, LUA_REGISTRYINDEX, *ref);
    *ref = LUA_NOREF;
}

int sluice_lua_fail(lua_State *L, const char *code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", code, msg);
    lua_pushstring(L, code);
    return 3;
}

int sluice_lua_fail_core(lua_State *L, int code, const char *err)
{
    return sluice_lua_fail(L, sluice_error_name(code), "%s",
                           err && *err ? err : sluice_error_text(code));
}

int sluice_lua_result(lua_State *L, int rc, const char *err)
{
    if (rc) return sluice_lua_fail_core(L, rc, err);
    lua_pushboolean(L, 1);
    return 1;
}

const char **sluice_lua_string_pairs(lua_State *L, int idx, const char *argname)
{
    size_t count = 0, i = 0;
    const char **pairs;

    if (lua_isnoneornil(L, idx)) {
        pairs = lua_newuserdata(L, sizeof *pairs);
        pairs[0] = NULL;
        return pairs;
    }
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, idx)) { count++; lua_pop(L, 1); }
    pairs = lua_newuserdata(L, (2 * count + 1) * sizeof *pairs);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        /* Only strings are anchored by the table: converting a number
         * would make a new string that nothing holds. */
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "bad %s: keys must be strings", argname);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "bad %s: value of '%s' must be a string (got %s)", argname,
                       lua_tostring(L, -2), luaL_typename(L, -1));
        pairs[i++] = lua_tostring(L, -2);
        pairs[i++] = lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    pairs[i] = NULL;
    return pairs;
}

void sluice_lua_kafka_error(sluice_lua_handle *h, int slot, const char *who,
                            const char *name, const char *text, int fatal)
{
    lua_State *L = h->ctx->L;
    if (h->from_gc) return;
    if (!sluice_lua_pushref(L, h->refs[slot])) {
        char line[512];
        snprintf(line, sizeof line, "kafka %s: %s: %s", who, name, text);
        sluice_lua_log(h->ctx, fatal ? SLUICE_LOG_ERROR : SLUICE_LOG_WARN, line);
        return;
    }
    lua_pushfstring(L, "%s: %s", name, text);
    lua_pushboolean(L, fatal);
    sluice_lua_call(h->ctx, 2, 0, "kafka error callback");
}

void sluice_lua_push_strings(lua_State *L, const char *const *s, size_t n)
{
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushstring(L, s[i]);
        lua_rawseti(L, -2, (int)i + 1);
    }
}

void sluice_lua_add_header(void *ud, const char *name, const char *value)
{
    lua_State *L = ud;
    lua_pushstring(L, value);
    lua_setfield(L, -2, name);
}

void sluice_lua_lazy_headers(lua_State *L, lua_CFunction lookup)
{
    lua_createtable(L, 0, 1);        /* table, upvalue, mt */
    lua_insert(L, -2);               /* table, mt, upvalue */
    lua_pushcclosure(L, lookup, 1);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
}

int sluice_lua_push_header(lua_State *L, char *value)
{
    if (value) lua_pushstring(L, value);
    else lua_pushnil(L);
    free(value);
    return 1;
}

static int getpid_lua(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)getpid());
    return 1;
}

static int hostname_lua(lua_State *L)
{
    char name[256] = "";
    gethostname(name, sizeof name - 1);
    lua_pushstring(L, name);
    return 1;
}

static int read_proc_number(const char *path, int field, long long *out)
{
    FILE *f = fopen(path, "r");
    int ok = 0;
    if (!f) return 0;
    for (int i = 0; i <= field; i++)
        if (fscanf(f, "%lld", out) != 1) break;
        else if (i == field) ok = 1;
    fclose(f);
    return ok;
}

/* core.process() → { cpu_seconds, resident_bytes, virtual_bytes, open_fds,
 * max_fds }: this process now (what Prometheus calls process_*). */
static int process_lua(lua_State *L)
{
    struct rusage ru;
    struct rlimit rl;
    long long pages;
    long page = sysconf(_SC_PAGESIZE);
    int fds = 0;
    DIR *d;

    lua_createtable(L, 0, 5);
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        lua_pushnumber(L, (lua_Number)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
                          (lua_Number)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
        lua_setfield(L, -2, "cpu_seconds");
    }
    if (read_proc_number("/proc/self/statm", 0, &pages)) {
        lua_pushnumber(L, (lua_Number)pages * page);
        lua_setfield(L, -2, "virtual_bytes");
    }
    if (read_proc_number("/proc/self/statm", 1, &pages)) {
        lua_pushnumber(L, (lua_Number)pages * page);
        lua_setfield(L, -2, "resident_bytes");
    }
    if ((d = opendir("/proc/self/fd"))) {
        struct dirent *e;
        while ((e = readdir(d)))
            if (e->d_name[0] != '.') fds++;
        closedir(d);
        lua_pushinteger(L, fds - 1);   /* not the one reading the directory */
        lua_setfield(L, -2, "open_fds");
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        lua_pushnumber(L, (lua_Number)rl.rlim_cur);
        lua_setfield(L, -2, "max_fds");
    }
    return 1;
}

/* core.time() → wall-clock seconds since the epoch, with fractions (log
 * timestamps). */
static int time_lua(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + ts.tv_nsec / 1e9);
    return 1;
}

/* core.time_ms(): wall clock, ms since the epoch (Kafka's timestamps). */
static int time_ms(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushinteger(L, (lua_Integer)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    return 1;
}

static int error_name(lua_State *L)
{
    lua_pushstring(L, sluice_error_name((int)luaL_checkinteger(L, 1)));
    return 1;
}

int luaopen_sluice_core(lua_State *L)
{
    static const luaL_Reg functions[] = {
        { "error_name", error_name },
        { "getpid", getpid_lua },
        { "hostname", hostname_lua },
        { "process", process_lua },
        { "time", time_lua },
        { "time_ms", time_ms },
        { NULL, NULL }
    };
    static const sluice_lua_type *const types[] = {
        &sluice_lua_loop_type, &sluice_lua_timer_type, &sluice_lua_conn_type,
        &sluice_lua_http_type, &sluice_lua_server_type, &sluice_lua_producer_type,
        &sluice_lua_consumer_type, &sluice_lua_broker_type, &sluice_lua_fswatch_type,
        &sluice_lua_schema_type, &sluice_lua_route_type,
        &sluice_lua_catchup_type, &sluice_lua_jwt_keys_type, &sluice_lua_unix_type,
        &sluice_lua_admin_type, &sluice_lua_conn_set_type,
    };
    sluice_newlib(L, functions);
    lua_pushstring(L, SLUICE_VERSION);
    lua_setfield(L, -2, "version");
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        sluice_lua_handle_class(L, types[i]);
    return 1;
}
