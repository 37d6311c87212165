/* The strict JSON layer under the row schemas (schema.c): buffers, the
 * canonical encoding of strings and numbers, and the lexing of strings,
 * numbers and literals (RFC 8259, see sluice/schema.h for the rules). */
#ifndef SLUICE_JSON_INTERNAL_H
#define SLUICE_JSON_INTERNAL_H

#include <stddef.h>

#include "sluice/error.h"
#include "sluice/schema.h"

/* The schema parser's state: the text and where it is, the result the
 * decoded strings and the error go to. */
typedef struct sluice_json_parser {
    const sluice_schema *s;
    const unsigned char *start, *p, *end;
    sluice_schema_result *r;
    int invalid;            /* a rule is broken; r->error says which (first) */
    int twice;              /* 1 + the first field given twice, else 0 */
} sluice_json_parser;
typedef sluice_json_parser parser;

/* Grow *buf to at least need bytes (doubling); 0 if out of memory. */
int sluice_json_reserve(char **buf, size_t *cap, size_t need);
/* The JSON string for s[0..len) written to out (room: 2 + 6 * len bytes),
 * escaped as lua-cjson does; returns the bytes written. */
size_t sluice_json_write_string(char *out, const char *s, size_t len);
/* A number as text that parses back to the same double (locale "C");
 * buf has room for 32 bytes. */
size_t sluice_json_write_number(char *buf, double n);

/* SLUICE_EMALFORMED with "<what> at byte N" in the result's error (the
 * position moved to `at` first for _at). */
int sluice_json_malformed(parser *ps, const char *what);
int sluice_json_malformed_at(parser *ps, const unsigned char *at, const char *what);
/* The string at ps->p (at its opening quote), decoded and appended to the
 * result's str. */
int sluice_json_string(parser *ps);
/* The number at ps->p into *out (strict grammar). */
int sluice_json_number(parser *ps, double *out);
/* The literal w (n bytes) at ps->p. */
int sluice_json_word(parser *ps, const char *w, size_t n);
/* After an element or member: ',' (1: another follows) or the closing
 * bracket (SLUICE_OK: done), else malformed. */
int sluice_json_after_item(parser *ps, char close);

static inline void sluice_json_skip_ws(sluice_json_parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

#endif
