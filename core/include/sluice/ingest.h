/* Declared routes: the common path of a WebSocket route that stores rows,
 * run in C. A text message that is a valid row of the route's schema (or,
 * when the route takes arrays, a JSON array of valid rows) is re-encoded,
 * produced to the route's topic with the key field's value as the key, and
 * acknowledged to its connection when Kafka has it:
 *
 *   {"ack":ID}                          stored
 *   {"error":"CODE: message","id":ID}   refused now or failed later
 *
 * ID is the JSON text of the row's ack field, or, when the row has none,
 * the row's number on its connection (1, 2, ...; every row counts, the
 * ones handled elsewhere too: sluice_ingest_peer_next_row).
 *
 * Anything else (a row the schema refuses, an array with one, a binary
 * message) is not the route's: the caller hands it to its own handler.
 * Nothing here calls back into the caller per row, except that the owner
 * of the producer passes each delivery report of a row sent here to
 * sluice_ingest_delivered. */
#ifndef SLUICE_INGEST_H
#define SLUICE_INGEST_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/kafka.h"
#include "sluice/schema.h"
#include "sluice/ws.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sluice_ingest sluice_ingest;

typedef struct sluice_ingest_config {
    sluice_schema *schema;  /* retained by the route */
    const char *topic;      /* copied */
    const char *key;        /* field whose value is the record key; NULL: no key */
    const char *ack;        /* field whose value the ack carries; NULL: the row number */
    int arrays;             /* also take a JSON array of rows (all valid, else none) */
} sluice_ingest_config;

/* SLUICE_OK, SLUICE_EINVAL (no schema or topic, a key or ack field the
 * schema does not have; the reason in err) or SLUICE_ENOMEM. The route
 * has one reference. */
int sluice_ingest_new(const sluice_ingest_config *cfg, sluice_ingest **out,
                      char *err, size_t errlen);
/* A declaration is never changed once made: a new one replaces it, and
 * rows in flight keep what they need. */
sluice_ingest *sluice_ingest_retain(sluice_ingest *in);
void sluice_ingest_release(sluice_ingest *in);
const char *sluice_ingest_topic(const sluice_ingest *in);

/* One connection as the rows sent for it see it: its row count and, while
 * it is open, the connection. Reference counted: the connection's owner
 * holds one until the connection is gone (sluice_ingest_peer_detach),
 * each row in flight another. NULL if out of memory. */
typedef struct sluice_ingest_peer sluice_ingest_peer;
sluice_ingest_peer *sluice_ingest_peer_new(sluice_conn *c);
/* Numbers the next row on the connection: 1, 2, ... */
uint64_t sluice_ingest_peer_next_row(sluice_ingest_peer *peer);
/* The connection is gone: rows still in flight send nothing. Drops the
 * owner's reference. */
void sluice_ingest_peer_detach(sluice_ingest_peer *peer);
/* A reference for a while (e.g. across a call that may close the
 * connection). */
void sluice_ingest_peer_retain(sluice_ingest_peer *peer);
void sluice_ingest_peer_release(sluice_ingest_peer *peer);

/* One row of a message, its bytes valid until the next parse. */
typedef struct sluice_ingest_row {
    const char *value; size_t value_len;   /* canonical JSON */
    const char *key; size_t key_len;       /* key NULL: no key */
    const char *id; size_t id_len;         /* JSON of the ack field; NULL: none */
} sluice_ingest_row;

/* What a parse leaves: the rows of one message. Owned by the caller and
 * reused (zero it before the first use). */
typedef struct sluice_ingest_batch {
    sluice_schema_result result;
    char *buf; size_t len, cap;            /* every row's bytes */
    struct sluice_ingest_span *rows; size_t n, rows_cap;
} sluice_ingest_batch;
void sluice_ingest_batch_free(sluice_ingest_batch *b);

/* SLUICE_OK: the text is the route's, b holds its rows (at least one).
 * Otherwise it is not: SLUICE_EINVAL or SLUICE_EMALFORMED with the
 * schema's reason in b->result.error (for an array, the first bad row's),
 * or SLUICE_ENOMEM. */
int sluice_ingest_parse(const sluice_ingest *in, const char *text, size_t len,
                        sluice_ingest_batch *b);
size_t sluice_ingest_count(const sluice_ingest_batch *b);
void sluice_ingest_row_at(const sluice_ingest_batch *b, size_t i, sluice_ingest_row *out);

/* Numbers the row and produces it (p NULL: the producer is closed). 0: in
 * flight; its report goes to sluice_ingest_delivered. Otherwise the
 * connection was sent the error frame ("FULL: ..." from the producer) and
 * the code is returned. */
int sluice_ingest_send(const sluice_ingest *in, sluice_producer *p,
                       sluice_ingest_peer *peer, const sluice_ingest_row *row);
/* Numbers the row and sends its connection the error frame with text
 * (e.g. a transform refused the row). */
void sluice_ingest_refuse(sluice_ingest_peer *peer, const sluice_ingest_row *row,
                          const char *text, size_t len);
/* parse, then send each row: 1 if the message was the route's (every row
 * is in flight or refused), 0 if not (nothing was sent). */
int sluice_ingest_message(const sluice_ingest *in, sluice_producer *p,
                          sluice_ingest_peer *peer, const char *text, size_t len,
                          sluice_ingest_batch *b);

/* The delivery report of a row sent by sluice_ingest_send (msg_opaque):
 * its ack or error frame goes to its connection if still open, and the
 * row is freed. Opaques of these rows are aligned pointers (even). */
void sluice_ingest_delivered(void *msg_opaque, const sluice_delivery *d);

#ifdef __cplusplus
}
#endif
#endif
