/* The server's listening socket and the sockets it accepts, up to their
 * first request head: max_pending and the handshake timer (slow-loris
 * defence) act here, before lws sees a byte. */
#include "server_internal.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define ACCEPTS_PER_WAKEUP 64

/* The request head is complete (or the socket is going): no longer pending. */
void sluice_slot_unpend(struct wsi_slot *slot)
{
    if (!slot->pending)
        return;
    slot->pending = 0;
    slot->server->npending--;
    lws_sul_cancel(&slot->handshake_sul);
}

/* Slow-loris defence: the request head did not arrive in time. */
static void handshake_expired(lws_sorted_usec_list_t *sul)
{
    struct wsi_slot *slot = lws_container_of(sul, struct wsi_slot, handshake_sul);
    sluice_server *s = slot->server;
    if (!slot->pending || !slot->wsi)
        return;
    sluice_slot_unpend(slot);
    sluice_loop_log(s->loop, SLUICE_LOG_DEBUG,
                    "port %d: no complete request within %d s, closing the socket",
                    s->port, s->handshake_timeout_s);
    if (!s->tls_cert)       /* plaintext on a TLS socket would be noise */
        sluice_http_raw_error(lws_get_socket_fd(slot->wsi), 408);
    lws_set_timeout(slot->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

/* ---- listening ------------------------------------------------------------- */

void sluice_server_on_listen(sluice_watch *w, void *ud)
{
    (void)w;
    sluice_server *s = ud;
    for (int i = 0; i < ACCEPTS_PER_WAKEUP && s->listen_fd >= 0; i++) {
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
                errno != ECONNABORTED)
                sluice_loop_log(s->loop, SLUICE_LOG_ERROR, "accept on port %d: %s",
                                s->port, strerror(errno));
            return;
        }
        if (s->max_pending > 0 && s->npending >= (size_t)s->max_pending) {
            /* Flood of sockets that have not sent a request: refuse
             * clearly rather than hold descriptors for them. */
            if (!s->tls_cert)
                sluice_http_raw_error(fd, 503);
            close(fd);
            uint64_t now = sluice_now_ms();
            if (now - s->last_refusal_log_ms >= 1000) {
                s->last_refusal_log_ms = now;
                sluice_loop_log(s->loop, SLUICE_LOG_WARN,
                                "port %d: %zu connections have not sent a request yet "
                                "(max_pending): refusing new ones with 503",
                                s->port, s->npending);
            }
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct wsi_slot *slot = calloc(1, sizeof *slot);
        if (!slot) {
            close(fd);
            continue;
        }
        struct lws *wsi = lws_adopt_socket_vhost(s->vh, fd);   /* closes fd on failure */
        if (!wsi) {
            free(slot);
            continue;
        }
        slot->server = s;
        slot->wsi = wsi;
        SLUICE_LIST_PUSH(s->slots, slot);
        lws_set_opaque_user_data(wsi, slot);
        slot->pending = 1;
        s->npending++;
        if (s->handshake_timeout_s > 0)
            lws_sul_schedule(s->loop->ctx, 0, &slot->handshake_sul, handshake_expired,
                             (lws_usec_t)s->handshake_timeout_s * LWS_US_PER_SEC);
    }
}

int sluice_listen_tcp(const char *host, int port, int reuseport, int *out_fd, int *out_port,
                      char *err, size_t errlen)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    hints.ai_family = host ? AF_UNSPEC : AF_INET6;   /* wildcard: dual-stack */
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    int gai = getaddrinfo(host, portstr, &hints, &res);
    if (gai && !host) {
        hints.ai_family = AF_INET;
        gai = getaddrinfo(host, portstr, &hints, &res);
    }
    if (gai) {
        sluice_errf(err, errlen, "cannot resolve %s: %s", host ? host : "*", gai_strerror(gai));
        return SLUICE_EINVAL;
    }
    int rc = SLUICE_EIO, saved = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        ai->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        int one = 1, zero = 0;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (reuseport)
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
        if (ai->ai_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, SOMAXCONN)) {
            saved = errno;
            close(fd);
            continue;
        }
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        getsockname(fd, (struct sockaddr *)&ss, &sl);
        *out_port = ntohs(ss.ss_family == AF_INET6
                              ? ((struct sockaddr_in6 *)&ss)->sin6_port
                              : ((struct sockaddr_in *)&ss)->sin_port);
        *out_fd = fd;
        rc = SLUICE_OK;
        break;
    }
    freeaddrinfo(res);
    if (rc == SLUICE_OK)
        return rc;
    if (saved == EADDRINUSE) {
        sluice_errf(err, errlen, "the HTTP and WebSocket port %d is in use", port);
        return SLUICE_EADDRINUSE;
    }
    sluice_errf(err, errlen, "cannot listen on port %d: %s", port, strerror(saved));
    return SLUICE_EIO;
}
