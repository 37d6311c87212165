/* Declared routes (sluice/ingest.h): rows checked by a schema, produced
 * and acknowledged without leaving C. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_internal.h"
#include "sluice/ingest.h"

struct sluice_ingest {
    size_t refs;
    sluice_schema *schema;
    int key, ack;           /* field indexes; -1: none */
    int arrays;
    char topic[];
};

struct sluice_ingest_peer {
    sluice_conn *conn;      /* NULL once gone */
    uint64_t rows;
    size_t refs;
};

/* Where one row's bytes lie in the batch's buffer. */
struct sluice_ingest_span {
    size_t value, value_len, key, key_len, id, id_len;
    int has_key, has_id;
};

/* A row in flight: what its report needs. */
struct ingest_row {
    sluice_ingest_peer *peer;
    size_t id_len;
    char id[];
};

/* ---- the declaration ----------------------------------------------------- */

static int field_index(const sluice_schema *s, const char *name, const char *what,
                       char *err, size_t errlen)
{
    if (!name)
        return -1;
    int i = sluice_schema_index(s, name, strlen(name));
    if (i < 0)
        snprintf(err, errlen, "%s field '%s' is not in the schema", what, name);
    return i;
}

int sluice_ingest_new(const sluice_ingest_config *cfg, sluice_ingest **out,
                      char *err, size_t errlen)
{
    *out = NULL;
    if (!cfg->schema || !cfg->topic || !*cfg->topic) {
        snprintf(err, errlen, "a declared route needs a schema and a topic");
        return SLUICE_EINVAL;
    }
    int key = field_index(cfg->schema, cfg->key, "key", err, errlen);
    int ack = field_index(cfg->schema, cfg->ack, "ack", err, errlen);
    if ((cfg->key && key < 0) || (cfg->ack && ack < 0))
        return SLUICE_EINVAL;
    size_t len = strlen(cfg->topic);
    sluice_ingest *in = malloc(sizeof *in + len + 1);
    if (!in) {
        snprintf(err, errlen, "out of memory");
        return SLUICE_ENOMEM;
    }
    in->refs = 1;
    in->schema = sluice_schema_retain(cfg->schema);
    in->key = key;
    in->ack = ack;
    in->arrays = cfg->arrays != 0;
    memcpy(in->topic, cfg->topic, len + 1);
    *out = in;
    return SLUICE_OK;
}

sluice_ingest *sluice_ingest_retain(sluice_ingest *in)
{
    in->refs++;
    return in;
}

void sluice_ingest_release(sluice_ingest *in)
{
    if (!in || --in->refs > 0)
        return;
    sluice_schema_free(in->schema);
    free(in);
}

const char *sluice_ingest_topic(const sluice_ingest *in)
{
    return in->topic;
}

/* ---- connections ----------------------------------------------------------- */

sluice_ingest_peer *sluice_ingest_peer_new(sluice_conn *c)
{
    sluice_ingest_peer *peer = calloc(1, sizeof *peer);
    if (peer) {
        peer->conn = c;
        peer->refs = 1;
    }
    return peer;
}

uint64_t sluice_ingest_peer_next_row(sluice_ingest_peer *peer)
{
    return ++peer->rows;
}

void sluice_ingest_peer_retain(sluice_ingest_peer *peer)
{
    peer->refs++;
}

void sluice_ingest_peer_release(sluice_ingest_peer *peer)
{
    if (--peer->refs == 0)
        free(peer);
}

void sluice_ingest_peer_detach(sluice_ingest_peer *peer)
{
    if (!peer)
        return;
    peer->conn = NULL;
    sluice_ingest_peer_release(peer);
}

/* ---- parsing ------------------------------------------------------------------ */

void sluice_ingest_batch_free(sluice_ingest_batch *b)
{
    sluice_schema_result_free(&b->result);
    free(b->buf);
    free(b->rows);
    memset(b, 0, sizeof *b);
}

/* A field's value as JSON text (the ack id) or as key bytes (a string's
 * own bytes) at o; returns the bytes written. */
static size_t write_value(char *o, const sluice_schema_result *r,
                          const sluice_schema_value *v, int as_json)
{
    switch (v->type) {
    case SLUICE_JSON_STRING:
        if (as_json)
            return sluice_json_write_string(o, r->str + v->str_off, v->str_len);
        memcpy(o, r->str + v->str_off, v->str_len);
        return v->str_len;
    case SLUICE_JSON_BOOLEAN:
        memcpy(o, v->boolean ? "true" : "false", v->boolean ? 4 : 5);
        return v->boolean ? 4 : 5;
    default:
        return sluice_json_write_number(o, v->number);
    }
}

/* Checks one row's text and appends its bytes to the batch. */
static int add_row(const sluice_ingest *in, const char *text, size_t len, sluice_ingest_batch *b)
{
    sluice_schema_result *r = &b->result;
    int rc = sluice_schema_check(in->schema, text, len, r);
    if (rc != SLUICE_OK)
        return rc;
    if (b->n == b->rows_cap) {
        size_t cap = b->rows_cap ? 2 * b->rows_cap : 8;
        struct sluice_ingest_span *rows = realloc(b->rows, cap * sizeof *rows);
        if (!rows)
            return SLUICE_ENOMEM;
        b->rows = rows;
        b->rows_cap = cap;
    }
    /* room for the text, and for a key and an id of any type */
    size_t need = b->len + r->out_len + 2 * (2 + 6 * r->str_len + 32);
    if (!sluice_json_reserve(&b->buf, &b->cap, need))
        return SLUICE_ENOMEM;
    struct sluice_ingest_span *sp = &b->rows[b->n++];
    memset(sp, 0, sizeof *sp);
    sp->value = b->len;
    sp->value_len = r->out_len;
    memcpy(b->buf + b->len, r->out, r->out_len);
    b->len += r->out_len;
    if (in->key >= 0 && r->values[in->key].type) {
        sp->has_key = 1;
        sp->key = b->len;
        sp->key_len = write_value(b->buf + b->len, r, &r->values[in->key], 0);
        b->len += sp->key_len;
    }
    if (in->ack >= 0 && r->values[in->ack].type) {
        sp->has_id = 1;
        sp->id = b->len;
        sp->id_len = write_value(b->buf + b->len, r, &r->values[in->ack], 1);
        b->len += sp->id_len;
    }
    return SLUICE_OK;
}

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* The end of the element that starts at p: brackets counted outside
 * strings. Only a boundary: each element is then checked strictly, so a
 * text this misreads is refused there. */
static const char *element_end(const char *p, const char *end)
{
    int depth = 0, in_string = 0;
    for (; p < end; p++) {
        char c = *p;
        if (in_string) {
            if (c == '\\')
                p++;
            else if (c == '"')
                in_string = 0;
            continue;
        }
        if (c == '"')
            in_string = 1;
        else if (c == '{' || c == '[')
            depth++;
        else if (c == '}' || c == ']') {
            if (depth == 0)
                return p;          /* the array's own ']' */
            depth--;
        } else if (c == ',' && depth == 0)
            return p;
    }
    return end;
}

/* A JSON array of rows: every element a valid row, else none. */
static int parse_array(const sluice_ingest *in, const char *p, const char *end,
                       sluice_ingest_batch *b)
{
    const char *e;
    int rc;
    p = skip_ws(p + 1, end);   /* past '[' */
    if (p < end && *p == ']') {
        snprintf(b->result.error, sizeof b->result.error, "an empty array has no rows");
        return SLUICE_EINVAL;
    }
    for (;; p = e + 1) {
        e = element_end(p, end);
        if ((rc = add_row(in, p, (size_t)(e - p), b)) != SLUICE_OK)
            return rc;
        if (e < end && *e == ']')
            break;
        if (e >= end) {
            snprintf(b->result.error, sizeof b->result.error, "unterminated array");
            return SLUICE_EMALFORMED;
        }
    }
    if (skip_ws(e + 1, end) != end) {
        snprintf(b->result.error, sizeof b->result.error, "unexpected text after the array");
        return SLUICE_EMALFORMED;
    }
    return SLUICE_OK;
}

int sluice_ingest_parse(const sluice_ingest *in, const char *text, size_t len,
                        sluice_ingest_batch *b)
{
    const char *end = text + len;
    const char *p = skip_ws(text, end);
    b->n = b->len = 0;
    if (in->arrays && p < end && *p == '[')
        return parse_array(in, p, end, b);
    return add_row(in, text, len, b);
}

size_t sluice_ingest_count(const sluice_ingest_batch *b)
{
    return b->n;
}

void sluice_ingest_row_at(const sluice_ingest_batch *b, size_t i, sluice_ingest_row *out)
{
    const struct sluice_ingest_span *sp = &b->rows[i];
    out->value = b->buf + sp->value;
    out->value_len = sp->value_len;
    out->key = sp->has_key ? b->buf + sp->key : NULL;
    out->key_len = sp->key_len;
    out->id = sp->has_id ? b->buf + sp->id : NULL;
    out->id_len = sp->id_len;
}

/* ---- sending and acknowledging ------------------------------------------------ */

/* The row's id (its ack field's JSON, else its number), in a new row in
 * flight for peer; NULL if out of memory. */
static struct ingest_row *row_new(sluice_ingest_peer *peer, const sluice_ingest_row *row)
{
    char num[24];
    uint64_t n = sluice_ingest_peer_next_row(peer);
    const char *id = row->id;
    size_t id_len = row->id_len;
    if (!id) {
        id_len = (size_t)snprintf(num, sizeof num, "%llu", (unsigned long long)n);
        id = num;
    }
    struct ingest_row *r = malloc(sizeof *r + id_len);
    if (!r)
        return NULL;
    r->peer = peer;
    sluice_ingest_peer_retain(peer);
    r->id_len = id_len;
    memcpy(r->id, id, id_len);
    return r;
}

static void row_free(struct ingest_row *r)
{
    sluice_ingest_peer_release(r->peer);
    free(r);
}

/* {"error":"<a><b>","id":ID} (b may be NULL) or {"ack":ID} (a NULL) to
 * the row's connection, if it is still there. */
static void reply(const struct ingest_row *r, const char *a, size_t alen,
                  const char *b, size_t blen)
{
    sluice_conn *c = r->peer->conn;
    char small[512], *buf = small, *o;
    if (!c)
        return;
    size_t need = 32 + r->id_len + 6 * (alen + blen);
    if (need > sizeof small && !(buf = malloc(need)))
        return;
    o = buf;
    if (a) {
        char *text = malloc(alen + blen + 1);
        if (!text) {
            if (buf != small)
                free(buf);
            return;
        }
        memcpy(text, a, alen);
        if (b)
            memcpy(text + alen, b, blen);
        memcpy(o, "{\"error\":", 9);
        o += 9;
        o += sluice_json_write_string(o, text, alen + (b ? blen : 0));
        free(text);
        memcpy(o, ",\"id\":", 6);
        o += 6;
    } else {
        memcpy(o, "{\"ack\":", 7);
        o += 7;
    }
    memcpy(o, r->id, r->id_len);
    o += r->id_len;
    *o++ = '}';
    sluice_conn_send(c, buf, (size_t)(o - buf), 0);
    if (buf != small)
        free(buf);
}

void sluice_ingest_refuse(sluice_ingest_peer *peer, const sluice_ingest_row *row,
                          const char *text, size_t len)
{
    struct ingest_row *r = row_new(peer, row);
    if (!r)
        return;
    reply(r, text, len, NULL, 0);
    row_free(r);
}

int sluice_ingest_send(const sluice_ingest *in, sluice_producer *p,
                       sluice_ingest_peer *peer, const sluice_ingest_row *row)
{
    char err[256] = "";
    int rc;
    struct ingest_row *r = row_new(peer, row);
    if (!r)
        return SLUICE_ENOMEM;
    if (!p) {
        rc = SLUICE_ECLOSED;
        snprintf(err, sizeof err, "the producer is closed");
    } else {
        sluice_message m;
        memset(&m, 0, sizeof m);
        m.topic = in->topic;
        m.key = row->key;
        m.key_len = row->key_len;
        m.value = row->value;
        m.value_len = row->value_len;
        m.partition = -1;
        rc = sluice_producer_send(p, &m, r, err, sizeof err);
        if (rc == SLUICE_OK)
            return SLUICE_OK;
    }
    /* What a Lua handler's produce would have said: "CODE: reason". */
    const char *name = sluice_error_name(rc);
    char head[40];
    int hn = snprintf(head, sizeof head, "%s: ", name);
    reply(r, head, (size_t)hn, err, strlen(err));
    row_free(r);
    return rc;
}

int sluice_ingest_message(const sluice_ingest *in, sluice_producer *p,
                          sluice_ingest_peer *peer, const char *text, size_t len,
                          sluice_ingest_batch *b)
{
    if (sluice_ingest_parse(in, text, len, b) != SLUICE_OK)
        return 0;
    sluice_ingest_row row;
    for (size_t i = 0; i < b->n; i++) {
        sluice_ingest_row_at(b, i, &row);
        sluice_ingest_send(in, p, peer, &row);
    }
    return 1;
}

void sluice_ingest_delivered(void *msg_opaque, const sluice_delivery *d)
{
    struct ingest_row *r = msg_opaque;
    if (d->error) {
        char head[80];
        int hn = snprintf(head, sizeof head, "%s: ", d->error_name);
        reply(r, head, (size_t)hn, d->error_text, strlen(d->error_text));
    } else {
        reply(r, NULL, 0, NULL, 0);
    }
    row_free(r);
}
