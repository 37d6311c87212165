/* Event loop: timers, stop, fd watches, wake-ups and idle waits. */
#include "check.h"
#include "sluice/loop.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static int count_open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* Run the loop until *flag is set or deadline_ms passes. */
static void run_until(sluice_loop *loop, const int *flag, int deadline_ms)
{
    uint64_t end = sluice_now_ms() + (uint64_t)deadline_ms;
    while (!*flag && sluice_now_ms() < end)
        sluice_loop_run_once(loop, 20);
}

/* ---- timers fire in order ---- */
struct order { int seq[8]; int n; };
struct order_timer { struct order *o; int id; };

static void record_order(sluice_timer *t, void *ud)
{
    (void)t;
    struct order_timer *ot = ud;
    ot->o->seq[ot->o->n++] = ot->id;
}

static void test_timer_order(sluice_loop *loop)
{
    struct order o = { {0}, 0 };
    struct order_timer a = { &o, 1 }, b = { &o, 2 }, c = { &o, 3 };
    sluice_timer *ta = sluice_timer_new(loop, record_order, &a);
    sluice_timer *tb = sluice_timer_new(loop, record_order, &b);
    sluice_timer *tc = sluice_timer_new(loop, record_order, &c);
    sluice_timer_start(ta, 60, 0);
    sluice_timer_start(tb, 20, 0);
    sluice_timer_start(tc, 40, 0);
    uint64_t start = sluice_now_ms();
    while (o.n < 3 && sluice_now_ms() - start < 2000)
        sluice_loop_run_once(loop, -1);
    CHECK_EQ_INT(o.n, 3);
    CHECK_EQ_INT(o.seq[0], 2);
    CHECK_EQ_INT(o.seq[1], 3);
    CHECK_EQ_INT(o.seq[2], 1);
    CHECK(sluice_now_ms() - start >= 55);
    CHECK_EQ_INT(sluice_timer_armed(ta), 0);   /* one-shots, fired */
    /* A stopped timer does not fire. */
    sluice_timer_start(ta, 10, 0);
    CHECK_EQ_INT(sluice_timer_armed(ta), 1);
    sluice_timer_stop(ta);
    CHECK_EQ_INT(sluice_timer_armed(ta), 0);
    sluice_loop_run_once(loop, 50);
    CHECK_EQ_INT(o.n, 3);
    sluice_timer_free(ta);
    sluice_timer_free(tb);
    sluice_timer_free(tc);
}

/* ---- repeat, then free from inside the callback ---- */
struct repeat_state { int fired; int freed; };

static void repeat_then_free(sluice_timer *t, void *ud)
{
    struct repeat_state *s = ud;
    if (++s->fired == 3) {
        sluice_timer_free(t);
        s->freed = 1;
    }
}

static void test_timer_repeat_and_self_free(sluice_loop *loop)
{
    struct repeat_state s = { 0, 0 };
    sluice_timer *t = sluice_timer_new(loop, repeat_then_free, &s);
    uint64_t start = sluice_now_ms();
    sluice_timer_start(t, 10, 15);
    run_until(loop, &s.freed, 2000);
    CHECK_EQ_INT(s.fired, 3);
    CHECK(sluice_now_ms() - start >= 35);
    sluice_loop_run_once(loop, 60);
    CHECK_EQ_INT(s.fired, 3);      /* freed timers stay quiet */
}

/* ---- stop makes run return ---- */
static void stop_loop(sluice_timer *t, void *ud)
{
    (void)t;
    sluice_loop_stop(ud);
}

static void test_stop(sluice_loop *loop)
{
    sluice_timer *t = sluice_timer_new(loop, stop_loop, loop);
    uint64_t start = sluice_now_ms();
    sluice_timer_start(t, 30, 0);
    sluice_loop_run(loop);
    /* Not before the timer (an upper bound would measure the machine's
     * load; a loop that never stopped hangs the test instead). */
    CHECK(sluice_now_ms() - start >= 25);
    /* The stop flag was cleared: the loop waits again. */
    CHECK_EQ_INT(sluice_loop_run_once(loop, 10), 0);
    sluice_timer_free(t);
}

/* ---- idle wait ---- */
static void test_idle_wait(sluice_loop *loop)
{
    /* Waits its time with nothing to do, and no less; with 0 it returns
     * at once (a wait without end would hang the test). */
    uint64_t start = sluice_now_ms();
    CHECK_EQ_INT(sluice_loop_run_once(loop, 200), 0);
    CHECK(sluice_now_ms() - start >= 190);
    CHECK_EQ_INT(sluice_loop_run_once(loop, 0), 0);
}

/* ---- watched eventfd written from another thread ---- */
struct watch_state { int efd; int fired; uint64_t value; };

static void on_readable(sluice_watch *w, void *ud)
{
    (void)w;
    struct watch_state *s = ud;
    uint64_t v;
    if (read(s->efd, &v, sizeof v) == (ssize_t)sizeof v)
        s->value += v;
    s->fired++;
}

static void *write_later(void *arg)
{
    struct watch_state *s = arg;
    sleep_ms(100);
    uint64_t one = 7;
    if (write(s->efd, &one, sizeof one) != (ssize_t)sizeof one)
        abort();
    return NULL;
}

static void test_watch(sluice_loop *loop)
{
    int fds_before = count_open_fds();
    struct watch_state s = { eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC), 0, 0 };
    CHECK(s.efd >= 0);
    sluice_watch *w = NULL;
    char err[256] = "";
    CHECK_EQ_INT(sluice_watch_new(loop, s.efd, on_readable, &s, &w, err, sizeof err), SLUICE_OK);

    pthread_t th;
    pthread_create(&th, NULL, write_later, &s);
    uint64_t start = sluice_now_ms();
    /* Blocks with no timeout: only the eventfd can end the wait. */
    while (!s.fired && sluice_now_ms() - start < 3000)
        sluice_loop_run_once(loop, -1);
    uint64_t took = sluice_now_ms() - start;
    pthread_join(th, NULL);
    CHECK_EQ_INT(s.fired, 1);
    CHECK_EQ_INT(s.value, 7);
    CHECK(took >= 90 && took < 1000);

    /* Freeing the watch stops callbacks and leaves the caller's fd open. */
    sluice_watch_free(w);
    uint64_t one = 1;
    CHECK(write(s.efd, &one, sizeof one) == (ssize_t)sizeof one);
    sluice_loop_run_once(loop, 50);
    sluice_loop_run_once(loop, 0);
    CHECK_EQ_INT(s.fired, 1);
    CHECK(fcntl(s.efd, F_GETFD) >= 0);
    close(s.efd);
    CHECK_EQ_INT(count_open_fds(), fds_before);
}

/* ---- a watch freed from inside its own callback ---- */
struct self_free { int efd; int fired; };

static void free_self(sluice_watch *w, void *ud)
{
    struct self_free *s = ud;
    uint64_t v;
    if (read(s->efd, &v, sizeof v) < 0)
        return;
    s->fired++;
    sluice_watch_free(w);
}

static void test_watch_self_free(sluice_loop *loop)
{
    int fds_before = count_open_fds();
    struct self_free s = { eventfd(0, EFD_NONBLOCK), 0 };
    sluice_watch *w = NULL;
    CHECK_EQ_INT(sluice_watch_new(loop, s.efd, free_self, &s, &w, NULL, 0), SLUICE_OK);
    uint64_t one = 1;
    CHECK(write(s.efd, &one, sizeof one) == (ssize_t)sizeof one);
    sluice_loop_run_once(loop, 50);
    CHECK_EQ_INT(s.fired, 1);
    CHECK(write(s.efd, &one, sizeof one) == (ssize_t)sizeof one);
    sluice_loop_run_once(loop, 50);
    CHECK_EQ_INT(s.fired, 1);
    CHECK(fcntl(s.efd, F_GETFD) >= 0);
    close(s.efd);
    CHECK_EQ_INT(count_open_fds(), fds_before);
}

/* ---- sluice_loop_wake from another thread ---- */
static void *wake_later(void *arg)
{
    sleep_ms(100);
    sluice_loop_wake(arg);
    return NULL;
}

static void test_wake(sluice_loop *loop)
{
    pthread_t th;
    pthread_create(&th, NULL, wake_later, loop);
    uint64_t start = sluice_now_ms();
    sluice_loop_run_once(loop, 3000);
    uint64_t took = sluice_now_ms() - start;
    pthread_join(th, NULL);
    CHECK(took >= 90 && took < 1500);
}

/* ---- log hook and error names ---- */
struct log_capture { int level; char msg[64]; int calls; };

static void capture_log(void *ud, int level, const char *msg)
{
    struct log_capture *c = ud;
    c->level = level;
    snprintf(c->msg, sizeof c->msg, "%s", msg);
    c->calls++;
}

static void test_log_and_errors(void)
{
    struct log_capture cap = { -1, "", 0 };
    sluice_loop_config cfg = { capture_log, &cap, SLUICE_LOG_WARN };
    sluice_loop *loop = NULL;
    CHECK_EQ_INT(sluice_loop_new(&cfg, &loop, NULL, 0), SLUICE_OK);
    sluice_loop_log(loop, SLUICE_LOG_WARN, "answer %d", 42);
    CHECK_EQ_INT(cap.calls, 1);
    CHECK_EQ_INT(cap.level, SLUICE_LOG_WARN);
    CHECK_EQ_STR(cap.msg, "answer 42");
    sluice_loop_log(loop, SLUICE_LOG_DEBUG, "too chatty");
    CHECK_EQ_INT(cap.calls, 1);
    sluice_loop_free(loop);

    CHECK_EQ_STR(sluice_error_name(SLUICE_ECLOSED), "CLOSED");
    CHECK_EQ_STR(sluice_error_name(SLUICE_EADDRINUSE), "ADDRINUSE");
    CHECK_EQ_STR(sluice_error_text(SLUICE_ECLOSED), "connection is closed");
}

int main(void)
{
    sluice_loop *loop = NULL;
    char err[256] = "";
    CHECK_EQ_INT(sluice_loop_new(NULL, &loop, err, sizeof err), SLUICE_OK);
    if (!loop) {
        fprintf(stderr, "loop: %s\n", err);
        return 1;
    }
    test_timer_order(loop);
    test_timer_repeat_and_self_free(loop);
    test_stop(loop);
    test_idle_wait(loop);
    test_watch(loop);
    test_watch_self_free(loop);
    test_wake(loop);
    sluice_loop_free(loop);
    test_log_and_errors();
    return check_summary("test_loop");
}
