/* Signals delivered through a signalfd watched by the loop. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "sluice/signal.h"

struct sluice_signal_watch {
    int fd;
    sigset_t previous_mask;
    sluice_watch *watch;
    sluice_signal_fn fn;
    void *ud;
};

static void signal_ready(sluice_watch *w, void *ud)
{
    sluice_signal_watch *sw = ud;
    struct signalfd_siginfo info;
    (void)w;
    /* Read one at a time: the handler may free this watch. */
    ssize_t n = read(sw->fd, &info, sizeof info);
    if (n == (ssize_t)sizeof info)
        sw->fn(sw->ud, (int)info.ssi_signo);
}

int sluice_signal_watch_new(sluice_loop *loop, const int *signals, size_t n,
                            sluice_signal_fn fn, void *ud,
                            sluice_signal_watch **out, char *err, size_t errlen)
{
    sluice_signal_watch *sw = calloc(1, sizeof *sw);
    sigset_t mask;
    int rc;

    *out = NULL;
    if (!sw) return SLUICE_ENOMEM;
    sigemptyset(&mask);
    for (size_t i = 0; i < n; i++) sigaddset(&mask, signals[i]);
    pthread_sigmask(SIG_BLOCK, &mask, &sw->previous_mask);
    sw->fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sw->fd < 0) {
        snprintf(err, errlen, "signalfd: %s", strerror(errno));
        pthread_sigmask(SIG_SETMASK, &sw->previous_mask, NULL);
        free(sw);
        return SLUICE_EIO;
    }
    sw->fn = fn;
    sw->ud = ud;
    rc = sluice_watch_new(loop, sw->fd, signal_ready, sw, &sw->watch, err, errlen);
    if (rc) {
        close(sw->fd);
        pthread_sigmask(SIG_SETMASK, &sw->previous_mask, NULL);
        free(sw);
        return rc;
    }
    *out = sw;
    return 0;
}

void sluice_signal_watch_free(sluice_signal_watch *sw)
{
    if (!sw) return;
    sluice_watch_free(sw->watch);
    close(sw->fd);
    pthread_sigmask(SIG_SETMASK, &sw->previous_mask, NULL);
    free(sw);
}
