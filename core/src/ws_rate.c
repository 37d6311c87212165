/* Per-connection rate limits (sluice_conn_set_rate): two token buckets,
 * messages and bytes, refilled lazily when a message arrives. Only the
 * arithmetic: ws_conn.c acts on the verdict (close, or pause reading). */
#include "ws_internal.h"

static void rate_refill(sluice_conn *c)
{
    lws_usec_t now = lws_now_usecs();
    double dt = (double)(now - c->rate_at_us) / 1e6;
    c->rate_at_us = now;
    if (c->rate.messages > 0) {
        c->tok_messages += dt * c->rate.messages;
        if (c->tok_messages > c->rate.burst)
            c->tok_messages = c->rate.burst;
    }
    if (c->rate.bytes > 0) {
        c->tok_bytes += dt * c->rate.bytes;
        if (c->tok_bytes > c->rate.burst_bytes)
            c->tok_bytes = c->rate.burst_bytes;
    }
}

void sluice_rate_reset(sluice_conn *c, const sluice_rate *r)
{
    c->has_rate = r && (r->messages > 0 || r->bytes > 0);
    if (c->has_rate) {
        c->rate = *r;
        if (c->rate.burst <= 0)
            c->rate.burst = c->rate.messages > 1 ? c->rate.messages : 1;
        if (c->rate.burst_bytes <= 0)
            c->rate.burst_bytes = c->rate.bytes;
        c->tok_messages = c->rate.burst;
        c->tok_bytes = c->rate.burst_bytes;
        c->rate_at_us = lws_now_usecs();
    }
}

int sluice_rate_take(sluice_conn *c, size_t len, double *wait_s)
{
    rate_refill(c);
    *wait_s = 0;
    int over_m = c->rate.messages > 0 && c->tok_messages < 1;
    int over_b = c->rate.bytes > 0 && c->tok_bytes < (double)len;
    if (c->rate.close && (over_m || over_b))
        return over_m ? SLUICE_RATE_OVER_MESSAGES : SLUICE_RATE_OVER_BYTES;
    if (c->rate.messages > 0)
        c->tok_messages -= 1;
    if (c->rate.bytes > 0)
        c->tok_bytes -= (double)len;
    if (c->tok_messages < 0)
        *wait_s = -c->tok_messages / c->rate.messages;
    if (c->tok_bytes < 0 && -c->tok_bytes / c->rate.bytes > *wait_s)
        *wait_s = -c->tok_bytes / c->rate.bytes;
    return 0;
}
