/* sluice-lwsrecv: libwebsockets alone receiving the load generator's
 * frames (nothing decoded, nothing sent back): the upper bound for any
 * gateway on libwebsockets on this machine. Same receive-side settings as
 * sluice's server (UTF-8 validation, 64 KiB service buffer).
 *
 *   sluice-lwsrecv --listen PORT --expect N
 * Exits after N whole messages (or SIGTERM) and prints one JSON line. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <libwebsockets.h>

static volatile sig_atomic_t stop;
static unsigned long long frames, expect;
static double t_first, t_last;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                    void *in, size_t len) {
    (void)user; (void)in; (void)len;
    if (reason == LWS_CALLBACK_RECEIVE && lws_is_final_fragment(wsi) &&
        !lws_remaining_packet_payload(wsi)) {
        /* The clock is read twice per run, not per frame. */
        if (!frames) t_first = now_s();
        if (++frames >= expect && expect) { t_last = now_s(); stop = 1; }
    }
    return 0;
}

static const struct lws_protocols protocols[] = {
    { "bench", callback, 0, 65536, 0, NULL, 0 },
    { NULL, NULL, 0, 0, 0, NULL, 0 }
};

static void on_sig(int s) { (void)s; stop = 1; }

int main(int argc, char **argv) {
    int port = 8080;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--listen")) port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--expect")) expect = strtoull(argv[i + 1], NULL, 10);
    }
    lws_set_log_level(LLL_ERR, NULL);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = port;
    info.protocols = protocols;
    info.options = LWS_SERVER_OPTION_VALIDATE_UTF8;
    info.pt_serv_buf_size = 64 * 1024;
    struct lws_context *ctx = lws_create_context(&info);
    if (!ctx) { fprintf(stderr, "lwsrecv: cannot listen on %d\n", port); return 1; }
    signal(SIGTERM, on_sig);
    signal(SIGINT, on_sig);
    fprintf(stderr, "lwsrecv: listening on %d\n", port);
    while (!stop) {
        lws_service(ctx, 0);
        /* Frames libwebsockets read but has not delivered yet (its rx
         * buffer was full) need a forced service, or they wait for the
         * next input on that socket. */
        while (!stop && lws_service_adjust_timeout(ctx, 1, 0) == 0)
            lws_service_tsi(ctx, -1, 0);
    }
    if (!t_last) t_last = now_s();
    double secs = t_last - t_first;
    printf("{\"tool\":\"sluice-lwsrecv\",\"frames\":%llu,\"seconds\":%.3f,\"rows_per_s\":%.0f}\n",
           frames, secs, secs > 0 ? (double)frames / secs : 0);
    fflush(stdout);
    lws_context_destroy(ctx);
    return 0;
}
