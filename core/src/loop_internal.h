/* Internal view of the loop shared by loop.c and the WebSocket files. */
#ifndef SLUICE_LOOP_INTERNAL_H
#define SLUICE_LOOP_INTERNAL_H

#include <libwebsockets.h>
#include "sluice/loop.h"

struct sluice_loop {
    struct lws_context *ctx;
    /* No listening port: adopted fds (watches) and outgoing clients. */
    struct lws_vhost *internal_vh;
    sluice_log_fn log;
    void *log_ud;
    int log_level;
    int stop_requested;
    /* Set when something user-visible happened during lws_service: lws
     * also returns for its own housekeeping, which must not end a
     * run_once early. */
    int activity;
    int deadline_reached;
    /* One-shot wake-up bounding a run_once(timeout_ms > 0). */
    lws_sorted_usec_list_t timeout_sul;
    /* Makes the current lws_service skip its poll wait (see kick). */
    lws_sorted_usec_list_t kick_sul;
    /* Server connections with messages queued during this pass, written
     * when it ends (ws_queue.c); freed ones are NULL. */
    struct sluice_conn **flush;
    size_t nflush, flush_cap;
    /* Blocks libwebsockets may still read, freed after its context. */
    struct sluice_kept *kept;
};

/* Frees block with the loop, after libwebsockets' context: for memory lws
 * may read until then (a destroyed vhost's names: ws_server.c). */
void sluice_loop_keep(sluice_loop *loop, void *block);

/* ws_queue.c: writes the connections listed in loop->flush; frees the
 * list (connections still listed are unlisted). */
void sluice_loop_flush_writes(sluice_loop *loop);
void sluice_loop_flush_free(sluice_loop *loop);

/* Record that an event reached user code, so run_once returns. */
void sluice_loop_note_activity(sluice_loop *loop);
/* Same, and make the current lws_service return without waiting: needed
 * when the event ran from lws's timer list, which is processed before
 * lws_service computes its poll wait. */
void sluice_loop_kick(sluice_loop *loop);

/* Protocol callback for outgoing WebSocket connections (ws_client.c). */
int sluice_ws_client_callback(struct lws *wsi, enum lws_callback_reasons reason,
                              void *user, void *in, size_t len);

/* Protocol callback for Unix sockets and adopted descriptors (unix.c). */
int sluice_unix_callback(struct lws *wsi, enum lws_callback_reasons reason,
                         void *user, void *in, size_t len);
#define SLUICE_UNIX_PROTOCOL "sluice-unix"

/* Name of the client protocol on the internal vhost. */
#define SLUICE_CLIENT_PROTOCOL "sluice-client"

#include "format_internal.h"

/* Run cb on the loop thread as soon as possible, outside any lws callback
 * of a connection (from lws_service's timer processing). */
static inline void sluice_loop_defer(sluice_loop *loop, lws_sorted_usec_list_t *sul,
                                     sul_cb_t cb)
{
    lws_sul_schedule(loop->ctx, 0, sul, cb, 1);
}

#endif
