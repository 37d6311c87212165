/* Byte streams on the loop: Unix-domain stream sockets (a listener and
 * its connections, or an outgoing connection) and adopted descriptors
 * such as stdin. Used by `sluice attach`: the console socket of a running
 * gateway and the client that talks to it.
 *
 * Sending never blocks and never grows without bound: what the peer has
 * not read yet waits in a queue of at most `limit` bytes, and a send that
 * does not fit is refused whole (SLUICE_EFULL) so the caller can drop it
 * and count it. */
#ifndef SLUICE_UNIX_H
#define SLUICE_UNIX_H

#include <stddef.h>
#include "sluice/loop.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sluice_unix sluice_unix;

typedef struct sluice_unix_handlers {
    /* A listener accepted conn; it starts with the listener's handlers and
     * ud (change them with sluice_unix_set_handlers). */
    void (*accept)(sluice_unix *listener, sluice_unix *conn, void *ud);
    /* Bytes arrived (valid during the call only). */
    void (*data)(sluice_unix *c, const char *data, size_t len, void *ud);
    /* The peer will send nothing more (it may still read). */
    void (*eof)(sluice_unix *c, void *ud);
    /* c is gone (the peer closed, an error, or sluice_unix_end finished);
     * it must not be used after this returns. Not called after
     * sluice_unix_free. */
    void (*close)(sluice_unix *c, void *ud);
} sluice_unix_handlers;

/* Default bound of the send queue. */
#define SLUICE_UNIX_DEFAULT_LIMIT (1024 * 1024)

/* Listen on path, a socket readable and writable by its owner only
 * (0600). A stale socket left at path (nobody listening) is replaced;
 * a live one fails with SLUICE_EADDRINUSE. */
int sluice_unix_listen(sluice_loop *loop, const char *path, const sluice_unix_handlers *h,
                       void *ud, sluice_unix **out, char *err, size_t errlen);
/* Connect to the socket at path. */
int sluice_unix_connect(sluice_loop *loop, const char *path, const sluice_unix_handlers *h,
                        void *ud, sluice_unix **out, char *err, size_t errlen);
/* Read from fd (a pipe, a terminal: e.g. stdin) on the loop. fd is
 * duplicated; the caller keeps its own. */
int sluice_unix_adopt(sluice_loop *loop, int fd, const sluice_unix_handlers *h, void *ud,
                      sluice_unix **out, char *err, size_t errlen);

void sluice_unix_set_handlers(sluice_unix *c, const sluice_unix_handlers *h, void *ud);
void sluice_unix_set_limit(sluice_unix *c, size_t limit);
/* Queue data for the peer. SLUICE_EFULL: it would take the queue past its
 * limit (nothing queued); SLUICE_ECLOSED: the connection is ending. */
int sluice_unix_send(sluice_unix *c, const char *data, size_t len);
/* Bytes queued and not yet written. */
size_t sluice_unix_queued(const sluice_unix *c);
/* Tell the peer nothing more will be sent (shutdown for writing) once
 * the queue is written; reading goes on. */
void sluice_unix_shutdown(sluice_unix *c);
/* Close once the queue is written; the close handler runs then. */
void sluice_unix_end(sluice_unix *c);
/* Close now, dropping the queue; no close handler. A listener removes
 * its socket file. Safe inside the object's own handlers. */
void sluice_unix_free(sluice_unix *c);

/* Make dir a private directory: created with mode 0700 if missing;
 * refused (SLUICE_EIO, with the reason) unless it is a directory owned by
 * this user that no one else can enter. */
int sluice_unix_private_dir(const char *dir, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
