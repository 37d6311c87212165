/* sluice.unix: Unix-domain stream sockets and adopted descriptors (stdin)
 * on the loop, for the console of a running app and `sluice attach`.
 * One type for a listener and a connection; a connection accepted by a
 * listener gets the listener's handlers. Also core.private_dir,
 * core.readdir and core.getuid, which finding a console needs, and the
 * few process calls a supervisor of worker processes needs (spawn,
 * waitpid, kill, cpu_count). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#include "sluice_lua.h"
#include "sluice/unix.h"

#define UNIX_MT "sluice.unix"
enum { REF_ACCEPT, REF_DATA, REF_EOF, REF_CLOSE };
static const char *const ref_names[] = { "accept", "data", "eof", "close" };

/* h.obj: the sluice_unix (NULL once closed). Anchored while open. */

static void on_accept(sluice_unix *l, sluice_unix *c, void *ud);
static void on_data(sluice_unix *c, const char *data, size_t len, void *ud);
static void on_eof(sluice_unix *c, void *ud);
static void on_close(sluice_unix *c, void *ud);
static const sluice_unix_handlers handlers = { on_accept, on_data, on_eof, on_close };

/* Call refs[slot](h, ...) with nargs more arguments pushed by the caller
 * after this returned 1. */
static int push_handler(sluice_lua_handle *h, int slot)
{
    if (!sluice_lua_handle_callback(h, slot)) return 0;
    lua_rawgeti(h->ctx->L, LUA_REGISTRYINDEX, h->self_ref);
    return 1;
}

static void on_accept(sluice_unix *l, sluice_unix *c, void *ud)
{
    sluice_lua_handle *lh = ud;
    lua_State *L = lh->ctx->L;
    sluice_lua_handle *h;
    (void)l;
    if (lh->from_gc) { sluice_unix_free(c); return; }
    h = sluice_lua_handle_new(L, lh->type, sizeof *h, 0);
    h->ctx = lh->ctx;
    sluice_lua_pushref(L, lh->loop_ref);
    h->loop_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    for (int i = REF_DATA; i <= REF_CLOSE; i++)
        if (sluice_lua_pushref(L, lh->refs[i])) h->refs[i] = luaL_ref(L, LUA_REGISTRYINDEX);
    h->obj = c;
    sluice_unix_set_handlers(c, &handlers, h);
    sluice_lua_handle_anchor(L, h);
    if (sluice_lua_pushref(L, lh->refs[REF_ACCEPT])) {
        lua_insert(L, -2);
        sluice_lua_call(h->ctx, 1, 0, "unix socket handler");
    } else {
        lua_pop(L, 1);
    }
}

static void on_data(sluice_unix *c, const char *data, size_t len, void *ud)
{
    sluice_lua_handle *h = ud;
    (void)c;
    if (!push_handler(h, REF_DATA)) return;
    lua_pushlstring(h->ctx->L, data, len);
    sluice_lua_call(h->ctx, 2, 0, "unix socket handler");
}

static void on_eof(sluice_unix *c, void *ud)
{
    sluice_lua_handle *h = ud;
    (void)c;
    if (!push_handler(h, REF_EOF)) return;
    sluice_lua_call(h->ctx, 1, 0, "unix socket handler");
}

/* The core frees c after this: the handle is closed without freeing it. */
static void on_close(sluice_unix *c, void *ud)
{
    sluice_lua_handle *h = ud;
    lua_State *L = h->ctx->L;
    (void)c;
    h->obj = NULL;
    if (!h->from_gc && push_handler(h, REF_CLOSE)) sluice_lua_call(h->ctx, 1, 0, "unix socket handler");
    if (h->state == SLUICE_LUA_OPEN) sluice_lua_handle_release(L, h);
}

static void read_handlers(lua_State *L, sluice_lua_handle *h, int idx, int first)
{
    for (int i = first; i <= REF_CLOSE; i++) sluice_lua_handle_ref(L, h, i, idx, ref_names[i], 0);
}

/* A new handle on the loop at 1 with the handlers of the table at 3. */
static sluice_lua_handle *new_handle(lua_State *L, int first_ref)
{
    sluice_lua_handle *h;
    luaL_checktype(L, 3, LUA_TTABLE);
    h = sluice_lua_handle_new(L, &sluice_lua_unix_type, sizeof *h, 1);
    read_handlers(L, h, 3, first_ref);
    return h;
}

/* The handle on top, holding u (rc 0), or the failure. */
static int opened(lua_State *L, sluice_lua_handle *h, int rc, sluice_unix *u, const char *err)
{
    if (rc) return sluice_lua_handle_fail(L, h, rc, err);
    h->obj = u;
    sluice_lua_handle_anchor(L, h);
    return 1;
}

/* core.unix_listen(loop, path, { accept = fn(conn), data = fn(conn, bytes),
 * eof = fn(conn), close = fn(conn) }) → listener (a socket file 0600) */
static int unix_listen(lua_State *L)
{
    const char *path = luaL_checkstring(L, 2);
    sluice_lua_handle *h = new_handle(L, REF_ACCEPT);
    sluice_unix *u = NULL;
    char err[512] = "";
    int rc = sluice_unix_listen(h->ctx->loop, path, &handlers, h, &u, err, sizeof err);
    return opened(L, h, rc, u, err);
}

/* core.unix_connect(loop, path, { data =, eof =, close = }) → conn */
static int unix_connect(lua_State *L)
{
    const char *path = luaL_checkstring(L, 2);
    sluice_lua_handle *h = new_handle(L, REF_DATA);
    sluice_unix *u = NULL;
    char err[512] = "";
    int rc = sluice_unix_connect(h->ctx->loop, path, &handlers, h, &u, err, sizeof err);
    return opened(L, h, rc, u, err);
}

/* core.unix_adopt(loop, fd, { data =, eof =, close = }) → conn reading fd */
static int unix_adopt(lua_State *L)
{
    int fd = (int)luaL_checkinteger(L, 2);
    sluice_lua_handle *h = new_handle(L, REF_DATA);
    sluice_unix *u = NULL;
    char err[512] = "";
    int rc = sluice_unix_adopt(h->ctx->loop, fd, &handlers, h, &u, err, sizeof err);
    return opened(L, h, rc, u, err);
}

/* conn:send(bytes) → true | nil, "FULL: …", "FULL" (the send queue is at
 * its limit: nothing was queued) | nil, "CLOSED: …", "CLOSED" */
static int unix_send(lua_State *L)
{
    sluice_unix *u = sluice_lua_handle_obj(L, 1, &sluice_lua_unix_type);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    return sluice_lua_result(L, sluice_unix_send(u, data, len), "");
}

static int unix_queued(lua_State *L)
{
    sluice_unix *u = sluice_lua_handle_obj(L, 1, &sluice_lua_unix_type);
    lua_pushinteger(L, (lua_Integer)sluice_unix_queued(u));
    return 1;
}

/* conn:set_limit(bytes): the bound of the send queue (default 1 MiB). */
static int unix_set_limit(lua_State *L)
{
    sluice_unix *u = sluice_lua_handle_obj(L, 1, &sluice_lua_unix_type);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n > 0, 2, "limit must be positive");
    sluice_unix_set_limit(u, (size_t)n);
    return 0;
}

/* conn:shutdown(): no more sending (the peer reads an end), once queued
 * bytes are written. */
static int unix_shutdown(lua_State *L)
{
    sluice_unix_shutdown(sluice_lua_handle_obj(L, 1, &sluice_lua_unix_type));
    return 0;
}

/* conn:finish(): close once queued bytes are written (then `close` runs). */
static int unix_finish(lua_State *L)
{
    sluice_unix_end(sluice_lua_handle_obj(L, 1, &sluice_lua_unix_type));
    return 0;
}

static void unix_free(void *u) { sluice_unix_free(u); }

/* core.private_dir(path) → true | nil, "IO: …", "IO" */
static int private_dir(lua_State *L)
{
    char err[512] = "";
    return sluice_lua_result(L, sluice_unix_private_dir(luaL_checkstring(L, 1), err, sizeof err), err);
}

/* core.readdir(path) → { names (no . and ..) } | nil, "IO: …", "IO" */
static int readdir_lua(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    DIR *d = opendir(path);
    struct dirent *e;
    if (!d) return sluice_lua_fail(L, "IO", "%s: %s", path, strerror(errno));
    lua_newtable(L);
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        lua_pushstring(L, e->d_name);
        sluice_lua_append(L);
    }
    closedir(d);
    return 1;
}

/* core.isatty(fd) → whether fd is a terminal */
static int isatty_lua(lua_State *L)
{
    lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
    return 1;
}

static int getuid_lua(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)geteuid());
    return 1;
}

/* ---- processes (the --workers supervisor) ------------------------------ */

static const struct { const char *name; int signo; } signals[] = {
    { "TERM", SIGTERM }, { "INT", SIGINT }, { "HUP", SIGHUP }, { "KILL", SIGKILL }, { "QUIT", SIGQUIT },
};

static int signal_number(lua_State *L, int idx)
{
    const char *name = luaL_checkstring(L, idx);
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++)
        if (strcmp(signals[i].name, name) == 0) return signals[i].signo;
    return luaL_argerror(L, idx, "TERM, INT, HUP, KILL or QUIT expected");
}

static const char *signal_label(int signo)
{
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++)
        if (signals[i].signo == signo) return signals[i].name;
    return NULL;
}

/* The strings of the list at idx as a NULL-terminated array (a userdata
 * pushed on the stack; the strings stay anchored by the table), followed
 * by those of base (the environment: getenv finds the first of two
 * entries with one name, so the list's win). */
static const char **string_list(lua_State *L, int idx, char **base)
{
    size_t n = sluice_rawlen(L, idx), nb = 0, k = 0;
    while (base && base[nb]) nb++;
    const char **v = lua_newuserdata(L, (nb + n + 1) * sizeof *v);
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, (int)i);
        v[k] = lua_tostring(L, -1);
        lua_pop(L, 1);
        if (!v[k]) luaL_argerror(L, idx, "strings expected");
        k++;
    }
    for (size_t i = 0; i < nb; i++) v[k++] = base[i];
    v[k] = NULL;
    return v;
}

/* core.spawn(argv, env) → pid, fd | nil, err, code. argv[1] is looked up
 * in PATH; env: "NAME=value" strings added to this process's environment.
 * The child starts with no signal blocked; its fd 3 is the write end of a
 * pipe whose read end `fd` the caller gets (and closes): the child tells
 * it things, and its end (EOF) says the child is gone. */
static int spawn_lua(lua_State *L)
{
    int p[2], r = -1, w = -1, rc;
    pid_t pid;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none, dflt;
    const char **argv, **envp;

    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TTABLE);
    argv = string_list(L, 1, NULL);
    envp = string_list(L, 2, environ);
    if (!argv[0]) return luaL_argerror(L, 1, "empty argv");
    if (pipe2(p, O_CLOEXEC) != 0) return sluice_lua_fail(L, "IO", "pipe: %s", strerror(errno));
    /* Above 3, so that dup2 onto 3 always makes a new descriptor. */
    r = fcntl(p[0], F_DUPFD_CLOEXEC, 10);
    w = fcntl(p[1], F_DUPFD_CLOEXEC, 10);
    close(p[0]);
    close(p[1]);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, w, 3);
    posix_spawnattr_init(&at);
    sigemptyset(&none);
    sigemptyset(&dflt);
    sigaddset(&dflt, SIGPIPE);
    sigaddset(&dflt, SIGINT);
    sigaddset(&dflt, SIGTERM);
    sigaddset(&dflt, SIGHUP);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &dflt);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    rc = posix_spawnp(&pid, argv[0], &fa, &at, (char *const *)argv, (char *const *)envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(w);
    if (rc != 0) {
        close(r);
        return sluice_lua_fail(L, "IO", "cannot start %s: %s", argv[0], strerror(rc));
    }
    lua_pushinteger(L, (lua_Integer)pid);
    lua_pushinteger(L, r);
    return 2;
}

/* core.exec(argv, env): replace this process with argv[1] (looked up in
 * PATH), env ("NAME=value") added to the environment. Returns only on
 * failure: nil, "IO: …", "IO". */
static int exec_lua(lua_State *L)
{
    const char **argv, **envp;
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TTABLE);
    argv = string_list(L, 1, NULL);
    envp = string_list(L, 2, environ);
    if (!argv[0]) return luaL_argerror(L, 1, "empty argv");
    execvpe(argv[0], (char *const *)argv, (char *const *)envp);
    return sluice_lua_fail(L, "IO", "cannot run %s: %s", argv[0], strerror(errno));
}

/* core.waitpid(pid [, block]) → "exited", status | "signaled", NAME |
 * nil (still running, when not blocking) */
static int waitpid_lua(lua_State *L)
{
    pid_t pid = (pid_t)luaL_checkinteger(L, 1);
    int status = 0, got;
    do got = waitpid(pid, &status, lua_toboolean(L, 2) ? 0 : WNOHANG);
    while (got < 0 && errno == EINTR);
    if (got < 0) return sluice_lua_fail(L, "IO", "waitpid %d: %s", (int)pid, strerror(errno));
    if (got == 0) { lua_pushnil(L); return 1; }
    if (WIFEXITED(status)) {
        lua_pushliteral(L, "exited");
        lua_pushinteger(L, WEXITSTATUS(status));
    } else {
        const char *name = signal_label(WTERMSIG(status));
        lua_pushliteral(L, "signaled");
        if (name) lua_pushstring(L, name); else lua_pushinteger(L, WTERMSIG(status));
    }
    return 2;
}

/* core.kill(pid, "TERM"|"INT"|"HUP"|"KILL"|"QUIT") → true | nil, err, code */
static int kill_lua(lua_State *L)
{
    pid_t pid = (pid_t)luaL_checkinteger(L, 1);
    if (kill(pid, signal_number(L, 2)) != 0) return sluice_lua_fail(L, "IO", "kill %d: %s", (int)pid, strerror(errno));
    lua_pushboolean(L, 1);
    return 1;
}

static int close_fd_lua(lua_State *L)
{
    close((int)luaL_checkinteger(L, 1));
    return 0;
}

static int cpu_count_lua(lua_State *L)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    lua_pushinteger(L, n > 0 ? n : 1);
    return 1;
}

static const luaL_Reg methods[] = {
    { "send", unix_send }, { "queued", unix_queued }, { "set_limit", unix_set_limit },
    { "shutdown", unix_shutdown }, { "finish", unix_finish }, { NULL, NULL }
};
static const luaL_Reg functions[] = {
    { "unix_listen", unix_listen }, { "unix_connect", unix_connect }, { "unix_adopt", unix_adopt },
    { "private_dir", private_dir }, { "readdir", readdir_lua }, { "getuid", getuid_lua },
    { "isatty", isatty_lua },
    { "spawn", spawn_lua }, { "exec", exec_lua }, { "waitpid", waitpid_lua }, { "kill", kill_lua },
    { "close_fd", close_fd_lua }, { "cpu_count", cpu_count_lua },
    { NULL, NULL }
};

const sluice_lua_type sluice_lua_unix_type = {
    .name = UNIX_MT, .free = unix_free, .closable = 1,
    .methods = methods, .functions = functions,
};
