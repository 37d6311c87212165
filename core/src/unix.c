/* Unix-domain stream sockets and adopted descriptors on the loop (see
 * sluice/unix.h). Each descriptor is adopted by libwebsockets as a raw
 * file, which tells us when it is readable or writable; the reading and
 * writing are ours. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "loop_internal.h"
#include "sluice/unix.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

struct sluice_unix {
    sluice_loop *loop;
    struct lws *wsi;            /* NULL once lws closed it */
    int fd;                     /* owned by lws once adopted */
    const sluice_unix_handlers *h;
    void *ud;
    char *path;                 /* listener: the socket file, removed at the end */
    char *out;                  /* the send queue: out[off..len) */
    size_t off, len, cap, limit;
    unsigned listener : 1, socket : 1, firing : 1, free_pending : 1;
    unsigned ending : 1, shut_pending : 1, shut : 1, eof : 1, failed : 1;
};

static int fail(char *err, size_t errlen, int code, const char *fmt, const char *arg)
{
    if (err && errlen) {
        char msg[256];
        snprintf(msg, sizeof msg, fmt, arg ? arg : "");
        snprintf(err, errlen, "%s%s%s", msg, errno ? ": " : "", errno ? strerror(errno) : "");
    }
    return code;
}

static void destroy(sluice_unix *c)
{
    if (c->listener && c->path) unlink(c->path);
    free(c->path);
    free(c->out);
    free(c);
}

/* Ask lws to close the wsi from its own service (never inside ours). */
static void kill_async(sluice_unix *c)
{
    if (c->wsi) lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

/* Write what the queue holds. Returns -1 when the connection must close
 * (an error, or it was ending and everything is written). */
static int flush_out(sluice_unix *c)
{
    while (c->off < c->len) {
        ssize_t n = c->socket ? send(c->fd, c->out + c->off, c->len - c->off, MSG_NOSIGNAL)
                              : write(c->fd, c->out + c->off, c->len - c->off);
        if (n > 0) { c->off += (size_t)n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (c->wsi) lws_callback_on_writable(c->wsi);
            return 0;
        }
        c->failed = 1;
        return -1;
    }
    c->off = c->len = 0;
    if (c->shut_pending && !c->shut) {
        c->shut = 1;
        shutdown(c->fd, SHUT_WR);
    }
    return c->ending ? -1 : 0;
}

static sluice_unix *new_unix(sluice_loop *loop, int fd, const sluice_unix_handlers *h, void *ud)
{
    sluice_unix *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->loop = loop;
    c->fd = fd;
    c->h = h;
    c->ud = ud;
    c->limit = SLUICE_UNIX_DEFAULT_LIMIT;
    return c;
}

/* Adopt c->fd into the loop. On failure the fd is closed and c freed. */
static int adopt(sluice_unix *c, char *err, size_t errlen)
{
    lws_sock_file_fd_type desc;
    desc.filefd = c->fd;
    c->wsi = lws_adopt_descriptor_vhost(c->loop->internal_vh, LWS_ADOPT_RAW_FILE_DESC, desc,
                                        SLUICE_UNIX_PROTOCOL, NULL);
    if (!c->wsi) {
        close(c->fd);
        destroy(c);
        errno = 0;
        return fail(err, errlen, SLUICE_EIO, "cannot watch a descriptor%s", NULL);
    }
    lws_set_opaque_user_data(c->wsi, c);
    return SLUICE_OK;
}

/* Only this user's processes may talk to a console (root aside). */
static int peer_is_owner(int fd)
{
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return 0;
    return cred.uid == geteuid() || cred.uid == 0;
}

static void accept_all(sluice_unix *l)
{
    for (;;) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR) continue;
            return;   /* EAGAIN, or a failure that concerns that one client */
        }
        if (!peer_is_owner(fd)) { close(fd); continue; }
        sluice_unix *c = new_unix(l->loop, fd, l->h, l->ud);
        if (!c) { close(fd); continue; }
        c->socket = 1;
        if (adopt(c, NULL, 0) != SLUICE_OK) continue;
        if (l->h && l->h->accept) l->h->accept(l, c, l->ud);
        if (l->free_pending) return;
    }
}

static void read_some(sluice_unix *c)
{
    char buf[16384];
    ssize_t n = read(c->fd, buf, sizeof buf);
    if (n > 0) {
        if (c->h && c->h->data) c->h->data(c, buf, (size_t)n, c->ud);
        return;
    }
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n < 0) { c->failed = 1; return; }
    /* End of input: stop polling for it (it would stay readable). */
    c->eof = 1;
    if (c->wsi) lws_rx_flow_control(c->wsi, 0);
    if (c->h && c->h->eof) c->h->eof(c, c->ud);
}

int sluice_unix_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                         void *in, size_t len)
{
    (void)user; (void)in; (void)len;
    sluice_unix *c = lws_get_opaque_user_data(wsi);
    int close_it = 0;
    switch (reason) {
    case LWS_CALLBACK_RAW_RX_FILE:
    case LWS_CALLBACK_RAW_WRITEABLE_FILE:
        if (!c) return -1;   /* freed: let lws close the descriptor */
        sluice_loop_note_activity(c->loop);
        c->firing = 1;
        if (reason == LWS_CALLBACK_RAW_WRITEABLE_FILE) close_it = flush_out(c) < 0;
        else if (c->listener) accept_all(c);
        else if (!c->eof) read_some(c);
        c->firing = 0;
        if (c->free_pending) {
            lws_set_opaque_user_data(wsi, NULL);
            c->wsi = NULL;
            destroy(c);
            return -1;
        }
        return close_it || c->failed || (c->ending && c->off == c->len) ? -1 : 0;
    case LWS_CALLBACK_RAW_CLOSE_FILE:
        if (!c) return 0;
        lws_set_opaque_user_data(wsi, NULL);
        c->wsi = NULL;
        sluice_loop_note_activity(c->loop);
        c->firing = 1;
        if (c->h && c->h->close) c->h->close(c, c->ud);
        destroy(c);
        return 0;
    default:
        return 0;
    }
}

static int unix_address(const char *path, struct sockaddr_un *sa, char *err, size_t errlen)
{
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    errno = 0;
    if (!path || !*path || strlen(path) >= sizeof sa->sun_path)
        return fail(err, errlen, SLUICE_EINVAL, "socket path too long or empty: %s", path);
    memcpy(sa->sun_path, path, strlen(path) + 1);
    return SLUICE_OK;
}

int sluice_unix_connect(sluice_loop *loop, const char *path, const sluice_unix_handlers *h,
                        void *ud, sluice_unix **out, char *err, size_t errlen)
{
    struct sockaddr_un sa;
    int rc = unix_address(path, &sa, err, errlen);
    if (rc) return rc;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return fail(err, errlen, SLUICE_EIO, "socket%s", NULL);
    /* A local connect completes at once (or fails): made blocking, then
     * switched to non-blocking for the loop. */
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return fail(err, errlen, SLUICE_ECONNECT, "cannot connect to %s", path);
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    sluice_unix *c = new_unix(loop, fd, h, ud);
    if (!c) { close(fd); return SLUICE_ENOMEM; }
    c->socket = 1;
    rc = adopt(c, err, errlen);
    if (rc == SLUICE_OK) *out = c;
    return rc;
}

int sluice_unix_listen(sluice_loop *loop, const char *path, const sluice_unix_handlers *h,
                       void *ud, sluice_unix **out, char *err, size_t errlen)
{
    struct sockaddr_un sa;
    int rc = unix_address(path, &sa, err, errlen);
    if (rc) return rc;
    /* A socket file nobody answers on is a leftover of a process that died. */
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int alive = probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof sa) == 0;
        if (probe >= 0) close(probe);
        errno = 0;
        if (alive) return fail(err, errlen, SLUICE_EADDRINUSE, "%s: another process listens there", path);
        unlink(path);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return fail(err, errlen, SLUICE_EIO, "socket%s", NULL);
    /* Created 0600: the umask applies to bind (restored at once). */
    mode_t old = umask(0177);
    rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
    umask(old);
    if (rc != 0 || listen(fd, 16) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return fail(err, errlen, e == EADDRINUSE ? SLUICE_EADDRINUSE : SLUICE_EIO, "cannot listen on %s", path);
    }
    sluice_unix *l = new_unix(loop, fd, h, ud);
    char *copy = strdup(path);
    if (!l || !copy) {
        free(l);
        free(copy);
        close(fd);
        unlink(path);
        return SLUICE_ENOMEM;
    }
    l->listener = 1;
    l->path = copy;
    rc = adopt(l, err, errlen);   /* frees l (and removes the file) on failure */
    if (rc == SLUICE_OK) *out = l;
    return rc;
}

int sluice_unix_adopt(sluice_loop *loop, int fd, const sluice_unix_handlers *h, void *ud,
                      sluice_unix **out, char *err, size_t errlen)
{
    int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (own < 0) return fail(err, errlen, SLUICE_EIO, "dup%s", NULL);
    fcntl(own, F_SETFL, fcntl(own, F_GETFL) | O_NONBLOCK);
    sluice_unix *c = new_unix(loop, own, h, ud);
    if (!c) { close(own); return SLUICE_ENOMEM; }
    int rc = adopt(c, err, errlen);
    if (rc == SLUICE_OK) *out = c;
    return rc;
}

void sluice_unix_set_handlers(sluice_unix *c, const sluice_unix_handlers *h, void *ud)
{
    c->h = h;
    c->ud = ud;
}

void sluice_unix_set_limit(sluice_unix *c, size_t limit)
{
    c->limit = limit;
}

int sluice_unix_send(sluice_unix *c, const char *data, size_t len)
{
    if (c->ending || c->shut_pending || c->failed || !c->wsi) return SLUICE_ECLOSED;
    size_t queued = c->len - c->off;
    if (queued + len > c->limit) return SLUICE_EFULL;
    if (c->off && c->len + len > c->cap) {   /* compact before growing */
        memmove(c->out, c->out + c->off, queued);
        c->off = 0;
        c->len = queued;
    }
    if (c->len + len > c->cap) {
        size_t cap = c->cap ? c->cap : 4096;
        while (cap < c->len + len) cap *= 2;
        char *p = realloc(c->out, cap);
        if (!p) return SLUICE_ENOMEM;
        c->out = p;
        c->cap = cap;
    }
    memcpy(c->out + c->len, data, len);
    c->len += len;
    /* Written at once when the peer keeps up; the rest when it is writable. */
    if (queued == 0 && flush_out(c) < 0 && !c->firing) kill_async(c);   /* firing: its callback closes it */
    return SLUICE_OK;
}

size_t sluice_unix_queued(const sluice_unix *c)
{
    return c->len - c->off;
}

void sluice_unix_shutdown(sluice_unix *c)
{
    c->shut_pending = 1;
    if (c->off == c->len && !c->shut) {
        c->shut = 1;
        shutdown(c->fd, SHUT_WR);
    }
}

void sluice_unix_end(sluice_unix *c)
{
    if (c->ending) return;
    c->ending = 1;
    if (c->firing) return;   /* its callback closes it once written */
    if (c->off == c->len || c->failed) kill_async(c);
    else if (c->wsi) lws_callback_on_writable(c->wsi);
}

void sluice_unix_free(sluice_unix *c)
{
    if (!c) return;
    if (c->listener && c->path) {   /* the name goes now, even if lws closes later */
        unlink(c->path);
        free(c->path);
        c->path = NULL;
    }
    if (c->firing) {
        c->free_pending = 1;        /* the callback finishes it */
        c->h = NULL;
        return;
    }
    if (c->wsi) {
        lws_set_opaque_user_data(c->wsi, NULL);
        kill_async(c);
        c->wsi = NULL;
    }
    destroy(c);
}

int sluice_unix_private_dir(const char *dir, char *err, size_t errlen)
{
    struct stat st;
    errno = 0;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return fail(err, errlen, SLUICE_EIO, "cannot create %s", dir);
    errno = 0;
    if (lstat(dir, &st) != 0) return fail(err, errlen, SLUICE_EIO, "%s", dir);
    if (!S_ISDIR(st.st_mode)) return fail(err, errlen, SLUICE_EIO, "%s is not a directory", dir);
    if (st.st_uid != geteuid())
        return fail(err, errlen, SLUICE_EIO, "%s belongs to another user", dir);
    if (st.st_mode & 077) return fail(err, errlen, SLUICE_EIO, "%s can be entered by other users (chmod 700 it)", dir);
    return SLUICE_OK;
}
