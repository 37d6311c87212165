/* WebSocket client (placeholder until the client lands). */
#include "loop_internal.h"

int sluice_ws_client_callback(struct lws *wsi, enum lws_callback_reasons reason,
                              void *user, void *in, size_t len)
{
    (void)wsi; (void)reason; (void)user; (void)in; (void)len;
    return 0;
}
