/* inotify-based file watching with debounce (see sluice/fswatch.h). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "sluice/fswatch.h"

#define FSWATCH_DEFAULT_DEBOUNCE 100
/* How many debounce periods a file still open for writing is waited for. */
#define FSWATCH_MAX_WAITS 20
/* Directory events that can mean "the file at this path changed". */
#define FSWATCH_MASK (IN_CLOSE_WRITE | IN_MODIFY | IN_CREATE | IN_DELETE | \
                      IN_MOVED_TO | IN_MOVED_FROM | IN_ATTRIB)

struct fw_dir {
    int wd;               /* -1 once the directory is gone */
    char *path;
};

struct fw_entry {
    int wd;
    char *name;           /* file name in the directory; NULL: a pattern */
    char *suffix;         /* pattern: names ending with this ("" any) */
    char *path;           /* file: the path as added; pattern: the dir */
};

struct fw_pending {
    char *path;
    int writing;          /* modified/created, not yet closed */
};

struct sluice_fswatch {
    sluice_loop *loop;
    int fd;
    sluice_watch *watch;
    sluice_timer *timer;
    unsigned debounce_ms;
    sluice_fswatch_fn fn;
    void *ud;
    struct fw_dir *dirs;
    size_t ndirs, capdirs;
    struct fw_entry *entries;
    size_t nentries, capentries;
    struct fw_pending *pending;
    size_t npending, cappending;
    int waits;
    int in_callback;
    int free_requested;
};

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static int grow(void **arr, size_t *cap, size_t n, size_t size)
{
    if (n < *cap) return 0;
    size_t ncap = *cap ? *cap * 2 : 8;
    void *p = realloc(*arr, ncap * size);
    if (!p) return -1;
    *arr = p;
    *cap = ncap;
    return 0;
}

static int add_pending(sluice_fswatch *fw, const char *path, int writing)
{
    for (size_t i = 0; i < fw->npending; i++) {
        if (strcmp(fw->pending[i].path, path) == 0) {
            fw->pending[i].writing = writing;
            return 0;
        }
    }
    if (grow((void **)&fw->pending, &fw->cappending, fw->npending, sizeof *fw->pending))
        return -1;
    char *p = dup_str(path);
    if (!p) return -1;
    fw->pending[fw->npending].path = p;
    fw->pending[fw->npending].writing = writing;
    fw->npending++;
    return 0;
}

static void clear_pending(sluice_fswatch *fw)
{
    for (size_t i = 0; i < fw->npending; i++) free(fw->pending[i].path);
    fw->npending = 0;
}

static void destroy(sluice_fswatch *fw)
{
    if (fw->watch) sluice_watch_free(fw->watch);
    if (fw->fd >= 0) close(fw->fd);
    if (fw->timer) sluice_timer_free(fw->timer);
    for (size_t i = 0; i < fw->ndirs; i++) free(fw->dirs[i].path);
    for (size_t i = 0; i < fw->nentries; i++) {
        free(fw->entries[i].name);
        free(fw->entries[i].suffix);
        free(fw->entries[i].path);
    }
    clear_pending(fw);
    free(fw->dirs);
    free(fw->entries);
    free(fw->pending);
    free(fw);
}

static void deliver(sluice_timer *t, void *ud)
{
    sluice_fswatch *fw = ud;
    (void)t;
    if (fw->npending == 0) return;
    /* An editor may still be writing: give it time, but not forever. */
    for (size_t i = 0; i < fw->npending; i++) {
        if (fw->pending[i].writing && fw->waits < FSWATCH_MAX_WAITS) {
            fw->waits++;
            sluice_timer_start(fw->timer, fw->debounce_ms, 0);
            return;
        }
    }
    fw->waits = 0;
    /* Hand over the batch; changes during the callback start a new one. */
    struct fw_pending *batch = fw->pending;
    size_t n = fw->npending;
    const char **paths = malloc((n ? n : 1) * sizeof *paths);
    fw->pending = NULL;
    fw->npending = fw->cappending = 0;
    if (paths) {
        for (size_t i = 0; i < n; i++) paths[i] = batch[i].path;
        fw->in_callback = 1;
        fw->fn(fw, paths, n, fw->ud);
        fw->in_callback = 0;
        free(paths);
    }
    for (size_t i = 0; i < n; i++) free(batch[i].path);
    free(batch);
    if (fw->free_requested) destroy(fw);
}

static const struct fw_dir *find_dir(const sluice_fswatch *fw, int wd)
{
    for (size_t i = 0; i < fw->ndirs; i++)
        if (fw->dirs[i].wd == wd) return &fw->dirs[i];
    return NULL;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && memcmp(s + a - b, suffix, b) == 0;
}

/* One inotify event: note every watched path it concerns. */
static int note_event(sluice_fswatch *fw, const struct inotify_event *ev)
{
    int matched = 0;
    int writing = (ev->mask & (IN_MODIFY | IN_CREATE)) && !(ev->mask & IN_ISDIR);
    if (ev->mask & IN_Q_OVERFLOW) {
        /* Events were lost: report every watched file. */
        for (size_t i = 0; i < fw->nentries; i++)
            if (fw->entries[i].name && add_pending(fw, fw->entries[i].path, 0) == 0)
                matched = 1;
        return matched;
    }
    if (ev->mask & IN_IGNORED) {
        for (size_t i = 0; i < fw->ndirs; i++)
            if (fw->dirs[i].wd == ev->wd) fw->dirs[i].wd = -1;
        return 0;
    }
    if (ev->len == 0 || (ev->mask & IN_ISDIR)) return 0;
    const struct fw_dir *dir = find_dir(fw, ev->wd);
    if (!dir) return 0;
    for (size_t i = 0; i < fw->nentries; i++) {
        const struct fw_entry *e = &fw->entries[i];
        if (e->wd != ev->wd) continue;
        if (e->name) {
            if (strcmp(e->name, ev->name) == 0 && add_pending(fw, e->path, writing) == 0)
                matched = 1;
        } else if (ends_with(ev->name, e->suffix) && ev->name[0] != '.') {
            /* Skip hidden names: editors' swap and temp files (".x.swp"). */
            char full[PATH_MAX];
            snprintf(full, sizeof full, "%s/%s", e->path, ev->name);
            if (add_pending(fw, full, writing) == 0) matched = 1;
        }
    }
    return matched;
}

static void inotify_ready(sluice_watch *w, void *ud)
{
    sluice_fswatch *fw = ud;
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    int matched = 0;
    (void)w;
    for (;;) {
        ssize_t n = read(fw->fd, buf, sizeof buf);
        if (n <= 0) break;        /* EAGAIN: drained */
        for (char *p = buf; p < buf + n; ) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            matched |= note_event(fw, ev);
            p += sizeof *ev + ev->len;
        }
    }
    /* Restart the quiet period on every relevant event. */
    if (matched) {
        fw->waits = 0;
        sluice_timer_start(fw->timer, fw->debounce_ms, 0);
    }
}

int sluice_fswatch_new(sluice_loop *loop, unsigned debounce_ms, sluice_fswatch_fn fn,
                       void *ud, sluice_fswatch **out, char *err, size_t errlen)
{
    sluice_fswatch *fw;
    int rc;
    *out = NULL;
    if (!loop || !fn) {
        snprintf(err, errlen, "invalid fswatch arguments");
        return SLUICE_EINVAL;
    }
    fw = calloc(1, sizeof *fw);
    if (!fw) {
        snprintf(err, errlen, "out of memory");
        return SLUICE_ENOMEM;
    }
    fw->loop = loop;
    fw->fn = fn;
    fw->ud = ud;
    fw->debounce_ms = debounce_ms ? debounce_ms : FSWATCH_DEFAULT_DEBOUNCE;
    fw->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fw->fd < 0) {
        snprintf(err, errlen, "inotify_init1: %s", strerror(errno));
        free(fw);
        return SLUICE_EIO;
    }
    fw->timer = sluice_timer_new(loop, deliver, fw);
    if (!fw->timer) {
        snprintf(err, errlen, "out of memory");
        destroy(fw);
        return SLUICE_ENOMEM;
    }
    rc = sluice_watch_new(loop, fw->fd, inotify_ready, fw, &fw->watch, err, errlen);
    if (rc) {
        fw->watch = NULL;
        destroy(fw);
        return rc;
    }
    *out = fw;
    return SLUICE_OK;
}

/* The watch descriptor of dir, adding the directory if needed. */
static int watch_dir(sluice_fswatch *fw, const char *dir, char *err, size_t errlen)
{
    int wd = inotify_add_watch(fw->fd, dir, FSWATCH_MASK | IN_ONLYDIR);
    if (wd < 0) {
        snprintf(err, errlen, "cannot watch %s: %s", dir, strerror(errno));
        return errno == ENOMEM || errno == ENOSPC ? SLUICE_ENOMEM : SLUICE_EIO;
    }
    /* inotify returns the same wd for the same directory. */
    for (size_t i = 0; i < fw->ndirs; i++)
        if (fw->dirs[i].wd == wd) return wd;
    if (grow((void **)&fw->dirs, &fw->capdirs, fw->ndirs, sizeof *fw->dirs)) goto nomem;
    fw->dirs[fw->ndirs].path = dup_str(dir);
    if (!fw->dirs[fw->ndirs].path) goto nomem;
    fw->dirs[fw->ndirs].wd = wd;
    fw->ndirs++;
    return wd;
nomem:
    snprintf(err, errlen, "out of memory");
    return SLUICE_ENOMEM;
}

static int add_entry(sluice_fswatch *fw, int wd, const char *name, const char *suffix,
                     const char *path, char *err, size_t errlen)
{
    for (size_t i = 0; i < fw->nentries; i++) {
        const struct fw_entry *e = &fw->entries[i];
        if (e->wd == wd && strcmp(e->path, path) == 0 && !e->name == !name &&
            (name ? strcmp(e->name, name) == 0 : strcmp(e->suffix, suffix) == 0))
            return SLUICE_OK;
    }
    if (grow((void **)&fw->entries, &fw->capentries, fw->nentries, sizeof *fw->entries))
        goto nomem;
    struct fw_entry *e = &fw->entries[fw->nentries];
    memset(e, 0, sizeof *e);
    e->wd = wd;
    e->path = dup_str(path);
    e->name = name ? dup_str(name) : NULL;
    e->suffix = dup_str(suffix ? suffix : "");
    if (!e->path || !e->suffix || (name && !e->name)) {
        free(e->path); free(e->name); free(e->suffix);
        goto nomem;
    }
    fw->nentries++;
    return SLUICE_OK;
nomem:
    snprintf(err, errlen, "out of memory");
    return SLUICE_ENOMEM;
}

int sluice_fswatch_add(sluice_fswatch *fw, const char *path, char *err, size_t errlen)
{
    char dir[PATH_MAX];
    const char *slash, *name;
    if (!fw || !path || !*path) {
        snprintf(err, errlen, "invalid path");
        return SLUICE_EINVAL;
    }
    slash = strrchr(path, '/');
    if (slash) {
        size_t n = (size_t)(slash - path);
        if (n == 0) n = 1;                   /* "/file": the root */
        if (n >= sizeof dir) {
            snprintf(err, errlen, "path too long: %s", path);
            return SLUICE_EINVAL;
        }
        memcpy(dir, path, n);
        dir[n] = '\0';
        name = slash + 1;
    } else {
        strcpy(dir, ".");
        name = path;
    }
    if (!*name) {
        snprintf(err, errlen, "not a file path: %s", path);
        return SLUICE_EINVAL;
    }
    int wd = watch_dir(fw, dir, err, errlen);
    if (wd < 0) return wd;
    return add_entry(fw, wd, name, NULL, path, err, errlen);
}

int sluice_fswatch_add_dir(sluice_fswatch *fw, const char *dir, const char *suffix,
                           char *err, size_t errlen)
{
    if (!fw || !dir || !*dir) {
        snprintf(err, errlen, "invalid directory");
        return SLUICE_EINVAL;
    }
    int wd = watch_dir(fw, dir, err, errlen);
    if (wd < 0) return wd;
    return add_entry(fw, wd, NULL, suffix, dir, err, errlen);
}

size_t sluice_fswatch_count(const sluice_fswatch *fw)
{
    return fw ? fw->nentries : 0;
}

void sluice_fswatch_free(sluice_fswatch *fw)
{
    if (!fw) return;
    if (fw->in_callback) {
        fw->free_requested = 1;   /* deliver() frees it after the callback */
        return;
    }
    destroy(fw);
}
