/* Signals as loop events: the signals are blocked for the calling thread
 * and read from a signalfd watched by the loop, so handlers run on the loop
 * thread between two events, never inside an async signal handler. */
#ifndef SLUICE_SIGNAL_H
#define SLUICE_SIGNAL_H

#include <stddef.h>
#include "sluice/loop.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sluice_signal_watch sluice_signal_watch;
typedef void (*sluice_signal_fn)(void *ud, int signo);

/* Watch signals[0..n-1] (e.g. SIGINT, SIGTERM, SIGHUP). */
int sluice_signal_watch_new(sluice_loop *loop, const int *signals, size_t n,
                            sluice_signal_fn fn, void *ud,
                            sluice_signal_watch **out, char *err, size_t errlen);
/* Stop watching and restore the thread's previous signal mask. */
void sluice_signal_watch_free(sluice_signal_watch *w);

#ifdef __cplusplus
}
#endif
#endif
