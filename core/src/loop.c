/* The event loop: a libwebsockets context serviced on one thread, with
 * timers (lws_sul) and fd watches (raw-file adoption) on top. */
#include "loop_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- logging ----------------------------------------------------------- */

/* lws 4.1 logs through one process-wide hook with no user pointer, so its
 * (error-only) output cannot reach a particular loop's hook. */
static void lws_error_emit(int level, const char *line)
{
    (void)level;
    fprintf(stderr, "sluice: libwebsockets: %s", line);
}

void sluice_loop_log(sluice_loop *loop, int level, const char *fmt, ...)
{
    if (!loop || !loop->log || level > loop->log_level)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    loop->log(loop->log_ud, level, msg);
}

void sluice_loop_set_log_level(sluice_loop *loop, int level)
{
    loop->log_level = level;
}

uint64_t sluice_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- watches ----------------------------------------------------------- */

struct sluice_watch {
    sluice_loop *loop;
    struct lws *wsi;       /* NULL once lws closed it */
    sluice_watch_fn fn;
    void *ud;
    int firing;
    int free_pending;      /* freed inside its own callback */
};

static int raw_file_callback(struct lws *wsi, enum lws_callback_reasons reason,
                             void *user, void *in, size_t len)
{
    (void)user; (void)in; (void)len;
    sluice_watch *w = lws_get_opaque_user_data(wsi);
    switch (reason) {
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:    /* sluice_loop_wake */
        sluice_loop_note_activity(lws_context_user(lws_get_context(wsi)));
        return 0;
    case LWS_CALLBACK_RAW_RX_FILE:
        if (!w)
            return -1;      /* detached: let lws close our dup of the fd */
        sluice_loop_note_activity(w->loop);
        w->firing = 1;
        w->fn(w, w->ud);
        if (w->free_pending) {
            free(w);
            return -1;
        }
        w->firing = 0;
        return 0;
    case LWS_CALLBACK_RAW_CLOSE_FILE:
        if (w)
            w->wsi = NULL;
        return 0;
    default:
        return 0;
    }
}

/* Writes msg to err (if given) and returns code. */
static int fail(char *err, size_t errlen, int code, const char *msg)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
    return code;
}

int sluice_watch_new(sluice_loop *loop, int fd, sluice_watch_fn fn, void *ud,
                     sluice_watch **out, char *err, size_t errlen)
{
    if (!loop || fd < 0 || !fn || !out)
        return fail(err, errlen, SLUICE_EINVAL, "invalid watch arguments");
    sluice_watch *w = calloc(1, sizeof *w);
    if (!w)
        return fail(err, errlen, SLUICE_ENOMEM, "out of memory");
    /* lws closes the descriptors it adopts; the caller keeps theirs. */
    int own_fd = dup(fd);
    if (own_fd < 0) {
        if (err && errlen) snprintf(err, errlen, "dup(%d): %s", fd, strerror(errno));
        free(w);
        return SLUICE_EIO;
    }
    lws_sock_file_fd_type desc;
    desc.filefd = own_fd;
    struct lws *wsi = lws_adopt_descriptor_vhost(loop->internal_vh, LWS_ADOPT_RAW_FILE_DESC,
                                                 desc, "sluice-raw", NULL);
    if (!wsi) {
        if (err && errlen) snprintf(err, errlen, "cannot watch fd %d", fd);
        close(own_fd);
        free(w);
        return SLUICE_EIO;
    }
    w->loop = loop;
    w->wsi = wsi;
    w->fn = fn;
    w->ud = ud;
    lws_set_opaque_user_data(wsi, w);
    *out = w;
    return SLUICE_OK;
}

void sluice_watch_free(sluice_watch *w)
{
    if (!w)
        return;
    if (w->wsi) {
        lws_set_opaque_user_data(w->wsi, NULL);
        if (!w->firing)
            lws_set_timeout(w->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        w->wsi = NULL;
    }
    if (w->firing)
        w->free_pending = 1;   /* the callback frees it and closes the wsi */
    else
        free(w);
}

/* ---- timers ------------------------------------------------------------ */

struct sluice_timer {
    lws_sorted_usec_list_t sul;
    sluice_loop *loop;
    sluice_timer_fn fn;
    void *ud;
    uint64_t repeat_ms;
    int firing;
    int free_pending;      /* freed inside its own callback */
};

static void timer_fire(lws_sorted_usec_list_t *sul)
{
    sluice_timer *t = lws_container_of(sul, sluice_timer, sul);
    /* Re-arm first so the callback may stop or restart it. */
    if (t->repeat_ms)
        lws_sul_schedule(t->loop->ctx, 0, &t->sul, timer_fire,
                         (lws_usec_t)t->repeat_ms * LWS_US_PER_MS);
    sluice_loop *loop = t->loop;
    t->firing = 1;
    t->fn(t, t->ud);
    t->firing = 0;
    if (t->free_pending)
        free(t);
    sluice_loop_kick(loop);
}

sluice_timer *sluice_timer_new(sluice_loop *loop, sluice_timer_fn fn, void *ud)
{
    if (!loop || !fn)
        return NULL;
    sluice_timer *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->loop = loop;
    t->fn = fn;
    t->ud = ud;
    return t;
}

void sluice_timer_start(sluice_timer *t, uint64_t delay_ms, uint64_t repeat_ms)
{
    if (!t || t->free_pending)
        return;
    t->repeat_ms = repeat_ms;
    lws_sul_schedule(t->loop->ctx, 0, &t->sul, timer_fire,
                     (lws_usec_t)delay_ms * LWS_US_PER_MS);
}

void sluice_timer_stop(sluice_timer *t)
{
    if (!t)
        return;
    t->repeat_ms = 0;
    lws_sul_cancel(&t->sul);
}

int sluice_timer_armed(const sluice_timer *t)
{
    /* lws keeps a scheduled sul in its list, and takes it out to fire it. */
    return t && t->sul.list.owner != NULL;
}

void sluice_timer_free(sluice_timer *t)
{
    if (!t)
        return;
    sluice_timer_stop(t);
    if (t->firing)
        t->free_pending = 1;
    else
        free(t);
}

/* ---- the loop ---------------------------------------------------------- */

static const struct lws_protocols internal_protocols[] = {
    { .name = "sluice-raw", .callback = raw_file_callback },
    { .name = SLUICE_CLIENT_PROTOCOL, .callback = sluice_ws_client_callback },
    { .name = SLUICE_UNIX_PROTOCOL, .callback = sluice_unix_callback },
    { .name = NULL, .callback = NULL }
};

int sluice_loop_new(const sluice_loop_config *cfg, sluice_loop **out,
                    char *err, size_t errlen)
{
    if (!out)
        return fail(err, errlen, SLUICE_EINVAL, "out is NULL");
    sluice_loop *loop = calloc(1, sizeof *loop);
    if (!loop)
        return fail(err, errlen, SLUICE_ENOMEM, "out of memory");
    if (cfg) {
        loop->log = cfg->log;
        loop->log_ud = cfg->log_ud;
        loop->log_level = cfg->log_level;
    }
    lws_set_log_level(LLL_ERR, lws_error_emit);

    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS | LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT |
                   LWS_SERVER_OPTION_VALIDATE_UTF8;   /* invalid text closes 1007 */
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.user = loop;
    /* One read per wake-up takes in many small frames. */
    info.pt_serv_buf_size = 64 * 1024;
    loop->ctx = lws_create_context(&info);
    if (!loop->ctx) {
        free(loop);
        return fail(err, errlen, SLUICE_EIO, "cannot create libwebsockets context");
    }

    memset(&info, 0, sizeof info);
    info.vhost_name = "sluice-internal";
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = internal_protocols;
    /* SSL init here gives outgoing wss:// connections a client context. */
    info.options = LWS_SERVER_OPTION_VALIDATE_UTF8 | LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.user = loop;
    loop->internal_vh = lws_create_vhost(loop->ctx, &info);
    if (!loop->internal_vh) {
        lws_context_destroy(loop->ctx);
        free(loop);
        return fail(err, errlen, SLUICE_EIO, "cannot create internal vhost");
    }
    *out = loop;
    return SLUICE_OK;
}

struct sluice_kept {
    struct sluice_kept *next;
    void *block;
};

void sluice_loop_keep(sluice_loop *loop, void *block)
{
    struct sluice_kept *k = malloc(sizeof *k);
    if (!k)
        return;     /* leaked rather than freed under lws */
    k->block = block;
    k->next = loop->kept;
    loop->kept = k;
}

void sluice_loop_free(sluice_loop *loop)
{
    if (!loop)
        return;
    lws_sul_cancel(&loop->timeout_sul);
    lws_sul_cancel(&loop->kick_sul);
    lws_context_destroy(loop->ctx);
    sluice_loop_flush_free(loop);
    while (loop->kept) {
        struct sluice_kept *k = loop->kept;
        loop->kept = k->next;
        free(k->block);
        free(k);
    }
    free(loop);
}

void sluice_loop_note_activity(sluice_loop *loop)
{
    loop->activity = 1;
}

/* Nothing to do: being due is what ends lws_service's poll wait. */
static void kick_due(lws_sorted_usec_list_t *sul)
{
    (void)sul;
}

void sluice_loop_kick(sluice_loop *loop)
{
    loop->activity = 1;
    /* lws runs due timers, then polls with a wait bounded by the next
     * timer: one due in 1 us makes that wait zero. */
    lws_sul_schedule(loop->ctx, 0, &loop->kick_sul, kick_due, 1);
}

static void deadline_due(lws_sorted_usec_list_t *sul)
{
    sluice_loop *loop = lws_container_of(sul, sluice_loop, timeout_sul);
    loop->deadline_reached = 1;
    lws_sul_schedule(loop->ctx, 0, &loop->kick_sul, kick_due, 1);
}

int sluice_loop_run_once(sluice_loop *loop, int timeout_ms)
{
    loop->activity = 0;
    loop->deadline_reached = 0;
    if (loop->stop_requested || timeout_ms == 0) {
        lws_service(loop->ctx, -1);           /* handle what is ready, no wait */
        sluice_loop_flush_writes(loop);
    } else {
        if (timeout_ms > 0)
            lws_sul_schedule(loop->ctx, 0, &loop->timeout_sul, deadline_due,
                             (lws_usec_t)timeout_ms * LWS_US_PER_MS);
        /* lws_service(ctx, 0) waits for the next fd event or lws timer. */
        while (!loop->activity && !loop->deadline_reached && !loop->stop_requested) {
            lws_service(loop->ctx, 0);
            /* what this pass queued goes out before the next poll */
            sluice_loop_flush_writes(loop);
        }
        lws_sul_cancel(&loop->timeout_sul);
    }
    lws_sul_cancel(&loop->kick_sul);
    if (loop->stop_requested) {
        loop->stop_requested = 0;
        return 1;
    }
    return 0;
}

void sluice_loop_run(sluice_loop *loop)
{
    while (!sluice_loop_run_once(loop, -1))
        ;
}

void sluice_loop_stop(sluice_loop *loop)
{
    loop->stop_requested = 1;
}

void sluice_loop_wake(sluice_loop *loop)
{
    lws_cancel_service(loop->ctx);
}
