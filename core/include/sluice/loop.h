/* The event loop: one per process, owned by the core. It wraps a
 * libwebsockets context; servers, clients, timers, fd watches and Kafka
 * handles attach to it. Everything runs on the thread that drives the loop;
 * only sluice_loop_wake may be called from another thread. */
#ifndef SLUICE_LOOP_H
#define SLUICE_LOOP_H

#include <stddef.h>
#include <stdint.h>
#include "sluice/error.h"

#ifdef __cplusplus
extern "C" {
#endif

enum sluice_log_level {
    SLUICE_LOG_ERROR = 0,
    SLUICE_LOG_WARN = 1,
    SLUICE_LOG_INFO = 2,
    SLUICE_LOG_DEBUG = 3
};

/* The only way library code prints anything. msg has no trailing newline. */
typedef void (*sluice_log_fn)(void *ud, int level, const char *msg);

typedef struct sluice_loop sluice_loop;

typedef struct sluice_loop_config {
    sluice_log_fn log;   /* NULL: silent */
    void *log_ud;
    int log_level;       /* highest level passed to log (default ERROR if 0 and log NULL) */
} sluice_loop_config;

int sluice_loop_new(const sluice_loop_config *cfg, sluice_loop **out,
                    char *err, size_t errlen);
/* Frees the loop. Servers, clients, timers and watches must be freed first. */
void sluice_loop_free(sluice_loop *loop);

/* One iteration: wait at most timeout_ms for something to happen
 * (0: do not wait; <0: wait until something happens), then handle every
 * event that is ready. Returns 1 if sluice_loop_stop was called, else 0. */
int sluice_loop_run_once(sluice_loop *loop, int timeout_ms);
/* Iterate until sluice_loop_stop is called. The stop flag is cleared on
 * return so the loop can be run again. */
void sluice_loop_run(sluice_loop *loop);
/* Ask run/run_once to return after the current event. Loop thread only. */
void sluice_loop_stop(sluice_loop *loop);
/* Make a blocked run_once return soon. Any thread. */
void sluice_loop_wake(sluice_loop *loop);

/* Log through the configured hook (printf-style). */
void sluice_loop_log(sluice_loop *loop, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Change the highest level passed to the log hook. */
void sluice_loop_set_log_level(sluice_loop *loop, int level);

/* Milliseconds on a monotonic clock. */
uint64_t sluice_now_ms(void);

/* ---- timers ---------------------------------------------------------- */
typedef struct sluice_timer sluice_timer;
typedef void (*sluice_timer_fn)(sluice_timer *t, void *ud);

sluice_timer *sluice_timer_new(sluice_loop *loop, sluice_timer_fn fn, void *ud);
/* Fire after delay_ms, then every repeat_ms if repeat_ms > 0. Restarting a
 * running timer reschedules it. */
void sluice_timer_start(sluice_timer *t, uint64_t delay_ms, uint64_t repeat_ms);
void sluice_timer_stop(sluice_timer *t);
/* 1 while the timer is scheduled to fire (started, not stopped, and a
 * one-shot not fired yet), else 0. */
int sluice_timer_armed(const sluice_timer *t);
/* Stops and frees. Safe to call from inside the timer's own callback. */
void sluice_timer_free(sluice_timer *t);

/* ---- fd readiness ------------------------------------------------------
 * Watches a file descriptor the caller owns (e.g. an eventfd that
 * librdkafka writes to) and calls fn on the loop thread when it is
 * readable. fn must consume the readiness (read the fd). */
typedef struct sluice_watch sluice_watch;
typedef void (*sluice_watch_fn)(sluice_watch *w, void *ud);

int sluice_watch_new(sluice_loop *loop, int fd, sluice_watch_fn fn, void *ud,
                     sluice_watch **out, char *err, size_t errlen);
/* Stops watching; does not close the fd. */
void sluice_watch_free(sluice_watch *w);

#ifdef __cplusplus
}
#endif
#endif
