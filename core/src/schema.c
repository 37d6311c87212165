/* Row schemas: strict JSON object parsing, validation and canonical
 * encoding in one pass (see sluice/schema.h for the rules). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE   /* newlocale/uselocale */
#endif
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_internal.h"

/* Nesting allowed inside values that are skipped (unknown fields, values
 * of the wrong type): deep enough for any real document, bounded so that
 * the recursion is. */
#define SKIP_DEPTH 64

/* The type of a value that was given with a type its field refuses: the
 * check fails, but a second value for the field is still "given twice". */
#define GIVEN_WRONG 0x100u

struct schema_field {
    sluice_schema_field def;
    size_t name_len;
    char *key_json;         /* "name": as it is written out */
    size_t key_json_len;
};

struct sluice_schema {
    size_t refs;
    size_t n;
    struct schema_field *f;
    locale_t c_locale;      /* strtod/snprintf with '.' whatever the host set */
};

/* ---- schema --------------------------------------------------------------- */

static void free_fields(struct schema_field *f, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free((char *)f[i].def.name);
        free(f[i].key_json);
    }
    free(f);
}

int sluice_schema_new(sluice_schema **out, const sluice_schema_field *fields,
                      size_t nfields, char *err, size_t errlen)
{
    *out = NULL;
    if (nfields == 0) {
        snprintf(err, errlen, "a schema needs at least one field");
        return SLUICE_EINVAL;
    }
    for (size_t i = 0; i < nfields; i++) {
        const sluice_schema_field *d = &fields[i];
        if (!d->name || !*d->name) {
            snprintf(err, errlen, "field %zu has no name", i + 1);
            return SLUICE_EINVAL;
        }
        if (!(d->types & (SLUICE_JSON_STRING | SLUICE_JSON_NUMBER | SLUICE_JSON_BOOLEAN))) {
            snprintf(err, errlen, "field %s has no type", d->name);
            return SLUICE_EINVAL;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(fields[j].name, d->name) == 0) {
                snprintf(err, errlen, "field %s is named twice", d->name);
                return SLUICE_EINVAL;
            }
    }
    sluice_schema *s = calloc(1, sizeof *s);
    if (!s || !(s->f = calloc(nfields, sizeof *s->f)))
        goto nomem;
    s->refs = 1;
    s->n = nfields;
    for (size_t i = 0; i < nfields; i++) {
        struct schema_field *f = &s->f[i];
        f->def = fields[i];
        f->name_len = strlen(fields[i].name);
        f->def.name = strdup(fields[i].name);
        f->key_json = malloc(2 + 6 * f->name_len + 1);
        if (!f->def.name || !f->key_json)
            goto nomem;
        f->key_json_len = sluice_json_write_string(f->key_json, f->def.name, f->name_len);
        f->key_json[f->key_json_len++] = ':';
    }
    s->c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    if (s->c_locale == (locale_t)0)
        goto nomem;
    *out = s;
    return SLUICE_OK;
nomem:
    if (s) {
        free_fields(s->f, s->n);
        free(s);
    }
    snprintf(err, errlen, "out of memory");
    return SLUICE_ENOMEM;
}

sluice_schema *sluice_schema_retain(sluice_schema *s)
{
    s->refs++;
    return s;
}

void sluice_schema_free(sluice_schema *s)
{
    if (!s || --s->refs > 0)
        return;
    free_fields(s->f, s->n);
    freelocale(s->c_locale);
    free(s);
}

size_t sluice_schema_nfields(const sluice_schema *s)
{
    return s->n;
}

int sluice_schema_index(const sluice_schema *s, const char *name, size_t len)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->f[i].name_len == len && memcmp(s->f[i].def.name, name, len) == 0)
            return (int)i;
    return -1;
}

void sluice_schema_result_free(sluice_schema_result *r)
{
    free(r->out);
    free(r->str);
    free(r->values);
    memset(r, 0, sizeof *r);
}

/* ---- parsing (the lexical layer is json.c's) ------------------------------ */

/* Remembers the first rule broken; parsing goes on, since text that is not
 * JSON at all is reported as such. */
static void broken(parser *ps, const char *fmt, ...)
{
    if (ps->invalid)
        return;
    ps->invalid = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ps->r->error, sizeof ps->r->error, fmt, ap);
    va_end(ap);
}

static int parse_object(parser *ps, int depth, int known);

/* Any JSON value, checked and passed over (nothing kept). */
static int skip_value(parser *ps, int depth)
{
    int rc;
    sluice_json_skip_ws(ps);
    if (ps->p >= ps->end)
        return sluice_json_malformed(ps, "unexpected end of text");
    switch (*ps->p) {
    case '"': {
        size_t mark = ps->r->str_len;
        rc = sluice_json_string(ps);
        ps->r->str_len = mark;
        return rc;
    }
    case 't': return sluice_json_word(ps, "true", 4);
    case 'f': return sluice_json_word(ps, "false", 5);
    case 'n': return sluice_json_word(ps, "null", 4);
    case '{':
        if (depth >= SKIP_DEPTH)
            return sluice_json_malformed(ps, "nesting too deep");
        return parse_object(ps, depth + 1, 0);
    case '[':
        if (depth >= SKIP_DEPTH)
            return sluice_json_malformed(ps, "nesting too deep");
        ps->p++;
        sluice_json_skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ']') {
            ps->p++;
            return SLUICE_OK;
        }
        for (;;) {
            if ((rc = skip_value(ps, depth + 1)) != SLUICE_OK)
                return rc;
            if ((rc = sluice_json_after_item(ps, ']')) <= 0)
                return rc;
        }
    default: {
        double ignored;
        if (*ps->p != '-' && (*ps->p < '0' || *ps->p > '9'))
            return sluice_json_malformed(ps, "unexpected character");
        return sluice_json_number(ps, &ignored);
    }
    }
}

/* A field name for a message: printable ASCII, at most 40 bytes. */
static void printable(char *dst, size_t cap, const char *s, size_t len)
{
    size_t n = len < cap - 1 ? len : cap - 1;
    for (size_t i = 0; i < n; i++)
        dst[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    dst[n] = 0;
}

static const char *types_text(unsigned t)
{
    switch (t) {
    case SLUICE_JSON_STRING: return "a string";
    case SLUICE_JSON_NUMBER: return "a number";
    case SLUICE_JSON_BOOLEAN: return "a boolean";
    case SLUICE_JSON_STRING | SLUICE_JSON_NUMBER: return "a string or a number";
    case SLUICE_JSON_STRING | SLUICE_JSON_BOOLEAN: return "a string or a boolean";
    case SLUICE_JSON_NUMBER | SLUICE_JSON_BOOLEAN: return "a number or a boolean";
    default: return "a string, a number or a boolean";
    }
}

/* The value of a known field at ps->p, into its slot. */
static int parse_field(parser *ps, const struct schema_field *f, sluice_schema_value *v)
{
    const sluice_schema_field *d = &f->def;
    unsigned char c = *ps->p;
    unsigned type = c == '"' ? SLUICE_JSON_STRING
                  : (c == 't' || c == 'f') ? SLUICE_JSON_BOOLEAN
                  : (c == '-' || (c >= '0' && c <= '9')) ? SLUICE_JSON_NUMBER : 0;
    int rc;
    if (!(type & d->types)) {
        v->type = GIVEN_WRONG;   /* seen, for "given twice"; never encoded */
        if ((rc = skip_value(ps, 0)) != SLUICE_OK)
            return rc;
        if (d->types == SLUICE_JSON_STRING && d->nonempty)
            broken(ps, "%s must be a non-empty string", d->name);
        else
            broken(ps, "%s must be %s", d->name, types_text(d->types));
        return SLUICE_OK;
    }
    v->type = type;
    switch (type) {
    case SLUICE_JSON_STRING:
        v->str_off = ps->r->str_len;
        if ((rc = sluice_json_string(ps)) != SLUICE_OK)
            return rc;
        v->str_len = ps->r->str_len - v->str_off;
        if (d->nonempty && v->str_len == 0)
            broken(ps, "%s must be a non-empty string", d->name);
        return SLUICE_OK;
    case SLUICE_JSON_BOOLEAN:
        v->boolean = c == 't';
        return v->boolean ? sluice_json_word(ps, "true", 4) : sluice_json_word(ps, "false", 5);
    default:
        if ((rc = sluice_json_number(ps, &v->number)) != SLUICE_OK)
            return rc;
        if (!isfinite(v->number))
            broken(ps, "%s is out of range", d->name);
        else if (d->integer && v->number != floor(v->number))
            broken(ps, "%s must be an integer", d->name);
        else if (d->has_min && v->number < d->min)
            broken(ps, "%s must be at least %.17g", d->name, d->min);
        else if (d->has_max && v->number > d->max)
            broken(ps, "%s must be at most %.17g", d->name, d->max);
        return SLUICE_OK;
    }
}

/* The schema field named by the key just parsed into r->str at mark, or
 * -1 when the member is to be skipped: an unknown field, or one given
 * before (both break a rule). */
static int field_of_key(parser *ps, size_t mark)
{
    sluice_schema_result *r = ps->r;
    int i = sluice_schema_index(ps->s, r->str + mark, r->str_len - mark);
    if (i < 0) {
        char name[41];
        printable(name, sizeof name, r->str + mark, r->str_len - mark);
        broken(ps, "%s is not a known field", name);
    } else if (r->values[i].type) {
        if (!ps->twice)
            ps->twice = i + 1;
        i = -1;
    }
    return i;
}

/* The object at ps->p ('{'). Its members' values are checked at `depth`.
 * With `known` (the row itself) each member is looked up among the
 * schema's fields and kept; otherwise (inside a skipped value) members are
 * only checked. */
static int parse_object(parser *ps, int depth, int known)
{
    sluice_schema_result *r = ps->r;
    int rc;
    ps->p++;   /* '{' */
    sluice_json_skip_ws(ps);
    if (ps->p < ps->end && *ps->p == '}') {
        ps->p++;
        return SLUICE_OK;
    }
    for (;;) {
        sluice_json_skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != '"')
            return sluice_json_malformed(ps, "expected a string key");
        size_t mark = r->str_len;
        if ((rc = sluice_json_string(ps)) != SLUICE_OK)
            return rc;
        int i = known ? field_of_key(ps, mark) : -1;
        r->str_len = mark;
        sluice_json_skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != ':')
            return sluice_json_malformed(ps, "expected ':'");
        ps->p++;
        sluice_json_skip_ws(ps);
        if (ps->p >= ps->end)
            return sluice_json_malformed(ps, "unexpected end of text");
        if (i >= 0)
            rc = parse_field(ps, &ps->s->f[i], &r->values[i]);
        else
            rc = skip_value(ps, depth);
        if (rc != SLUICE_OK)
            return rc;
        if ((rc = sluice_json_after_item(ps, '}')) <= 0)
            return rc;
    }
}

static int encode(const sluice_schema *s, sluice_schema_result *r)
{
    size_t need = 2;
    for (size_t i = 0; i < s->n; i++) {
        const sluice_schema_value *v = &r->values[i];
        if (!v->type)
            continue;
        need += 1 + s->f[i].key_json_len;
        need += v->type == SLUICE_JSON_STRING ? 2 + 6 * v->str_len : 32;
    }
    if (!sluice_json_reserve(&r->out, &r->out_cap, need))
        return SLUICE_ENOMEM;
    char *o = r->out;
    *o++ = '{';
    int first = 1;
    for (size_t i = 0; i < s->n; i++) {
        const sluice_schema_value *v = &r->values[i];
        if (!v->type)
            continue;
        if (!first)
            *o++ = ',';
        first = 0;
        memcpy(o, s->f[i].key_json, s->f[i].key_json_len);
        o += s->f[i].key_json_len;
        if (v->type == SLUICE_JSON_STRING) {
            o += sluice_json_write_string(o, r->str + v->str_off, v->str_len);
        } else if (v->type == SLUICE_JSON_BOOLEAN) {
            memcpy(o, v->boolean ? "true" : "false", v->boolean ? 4 : 5);
            o += v->boolean ? 4 : 5;
        } else {
            o += sluice_json_write_number(o, v->number);
        }
    }
    *o++ = '}';
    r->out_len = (size_t)(o - r->out);
    return SLUICE_OK;
}

static int check(const sluice_schema *s, const char *text, size_t len, sluice_schema_result *r)
{
    parser ps = { s, (const unsigned char *)text, (const unsigned char *)text,
                  (const unsigned char *)text + len, r, 0, 0 };
    int rc;
    sluice_json_skip_ws(&ps);
    if (ps.p < ps.end && *ps.p == '{') {
        rc = parse_object(&ps, 0, 1);
    } else {
        rc = skip_value(&ps, 0);
        if (rc == SLUICE_OK)
            broken(&ps, "a row must be a JSON object");
    }
    if (rc != SLUICE_OK)
        return rc;
    sluice_json_skip_ws(&ps);
    if (ps.p != ps.end)
        return sluice_json_malformed(&ps, "unexpected text after the value");
    /* A field given twice is reported over any other broken rule: which
     * of the two values was meant is the first question. */
    if (ps.twice) {
        snprintf(r->error, sizeof r->error, "%s is given twice", s->f[ps.twice - 1].def.name);
        return SLUICE_EINVAL;
    }
    if (ps.invalid)
        return SLUICE_EINVAL;
    for (size_t i = 0; i < s->n; i++)
        if (!r->values[i].type && !s->f[i].def.optional) {
            snprintf(r->error, sizeof r->error, "%s is missing", s->f[i].def.name);
            return SLUICE_EINVAL;
        }
    return encode(s, r);
}

int sluice_schema_check(const sluice_schema *s, const char *text, size_t len,
                        sluice_schema_result *r)
{
    if (r->values_cap < s->n) {
        sluice_schema_value *v = realloc(r->values, s->n * sizeof *v);
        if (!v)
            return SLUICE_ENOMEM;
        r->values = v;
        r->values_cap = s->n;
    }
    memset(r->values, 0, s->n * sizeof *r->values);
    r->out_len = r->str_len = 0;
    r->error[0] = 0;
    locale_t old = uselocale(s->c_locale);
    int rc = check(s, text, len, r);
    uselocale(old);
    if (rc == SLUICE_ENOMEM)
        snprintf(r->error, sizeof r->error, "out of memory");
    return rc;
}
