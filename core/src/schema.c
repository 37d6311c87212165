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

#include "sluice/error.h"
#include "sluice/schema.h"

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
    size_t n;
    struct schema_field *f;
    locale_t c_locale;      /* strtod/snprintf with '.' whatever the host set */
};

/* ---- buffers -------------------------------------------------------------- */

static int reserve(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 1;
    size_t cap2 = *cap ? *cap : 256;
    while (cap2 < need)
        cap2 *= 2;
    char *b = realloc(*buf, cap2);
    if (!b)
        return 0;
    *buf = b;
    *cap = cap2;
    return 1;
}

/* ---- encoding ------------------------------------------------------------- */

/* lua-cjson's escapes, so that text written here and text written by
 * cjson.encode agree byte for byte. NULL: the byte is written as it is. */
static inline const char *escape_of(unsigned char c)
{
    if (c > '/' && c != '\\' && c != 127)
        return NULL;
    static const char *const control[32] = {
        "\\u0000", "\\u0001", "\\u0002", "\\u0003", "\\u0004", "\\u0005", "\\u0006", "\\u0007",
        "\\b", "\\t", "\\n", "\\u000b", "\\f", "\\r", "\\u000e", "\\u000f",
        "\\u0010", "\\u0011", "\\u0012", "\\u0013", "\\u0014", "\\u0015", "\\u0016", "\\u0017",
        "\\u0018", "\\u0019", "\\u001a", "\\u001b", "\\u001c", "\\u001d", "\\u001e", "\\u001f",
    };
    if (c < 32) return control[c];
    switch (c) {
    case '"':  return "\\\"";
    case '\\': return "\\\\";
    case '/':  return "\\/";
    case 127:  return "\\u007f";
    default:   return NULL;
    }
}

/* Appends the JSON string for s[0..len) to out (room already reserved:
 * 2 + 6 * len bytes). Runs of bytes that need no escape are copied whole. */
static size_t write_string(char *out, const char *s, size_t len)
{
    char *o = out;
    size_t run = 0;
    *o++ = '"';
    for (size_t i = 0; i < len; i++) {
        const char *e = escape_of((unsigned char)s[i]);
        if (!e)
            continue;
        memcpy(o, s + run, i - run);
        o += i - run;
        size_t el = strlen(e);
        memcpy(o, e, el);
        o += el;
        run = i + 1;
    }
    memcpy(o, s + run, len - run);
    o += len - run;
    *o++ = '"';
    return (size_t)(o - out);
}

/* A number as text that parses back to the same double (the caller's
 * locale is "C"). buf has room for 32 bytes. */
static size_t write_number(char *buf, double n)
{
    int len;
    if (n == floor(n) && n > -9007199254740992.0 && n < 9007199254740992.0) {
        /* What "%.0f" writes (-0 included), without printf's cost. */
        char digits[20];
        int64_t v = (int64_t)n;
        uint64_t u = v < 0 ? (uint64_t)-v : (uint64_t)v;
        size_t nd = 0, o = 0;
        do {
            digits[nd++] = (char)('0' + u % 10);
            u /= 10;
        } while (u);
        if (signbit(n))
            buf[o++] = '-';
        while (nd)
            buf[o++] = digits[--nd];
        buf[o] = 0;
        return o;
    }
    for (int digits = 15; ; digits++) {
        len = snprintf(buf, 32, "%.*g", digits, n);
        if (digits == 17 || strtod(buf, NULL) == n)
            break;
    }
    return (size_t)len;
}

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
    s->n = nfields;
    for (size_t i = 0; i < nfields; i++) {
        struct schema_field *f = &s->f[i];
        f->def = fields[i];
        f->name_len = strlen(fields[i].name);
        f->def.name = strdup(fields[i].name);
        f->key_json = malloc(2 + 6 * f->name_len + 1);
        if (!f->def.name || !f->key_json)
            goto nomem;
        f->key_json_len = write_string(f->key_json, f->def.name, f->name_len);
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

void sluice_schema_free(sluice_schema *s)
{
    if (!s)
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

/* ---- parsing -------------------------------------------------------------- */

typedef struct parser {
    const sluice_schema *s;
    const unsigned char *start, *p, *end;
    sluice_schema_result *r;
    int invalid;            /* a rule is broken; r->error says which (first) */
    int twice;              /* 1 + the first field given twice, else 0 */
} parser;

static int malformed(parser *ps, const char *what)
{
    snprintf(ps->r->error, sizeof ps->r->error, "%s at byte %zu", what,
             (size_t)(ps->p - ps->start) + 1);
    return SLUICE_EMALFORMED;
}

/* The same, with the position moved to `at` first. */
static int malformed_at(parser *ps, const unsigned char *at, const char *what)
{
    ps->p = at;
    return malformed(ps, what);
}

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

static void skip_ws(parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static int hex4(const unsigned char *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return 0;
        v = v << 4 | d;
    }
    *out = v;
    return 1;
}

/* Length of the valid UTF-8 sequence at p (0: invalid). */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0];
    size_t n;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) n = 2;
    else if (c == 0xE0) { n = 3; lo = 0xA0; }
    else if (c == 0xED) { n = 3; hi = 0x9F; }
    else if (c >= 0xE1 && c <= 0xEF) n = 3;
    else if (c == 0xF0) { n = 4; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) n = 4;
    else if (c == 0xF4) { n = 4; hi = 0x8F; }
    else return 0;
    if ((size_t)(end - p) < n)
        return 0;
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return n;
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Parses the string at ps->p (at its opening quote), appending the decoded
 * bytes to r->str. A decoded string is never longer than its text. */
static int parse_string(parser *ps)
{
    sluice_schema_result *r = ps->r;
    const unsigned char *p = ps->p + 1;
    if (!reserve(&r->str, &r->str_cap, r->str_len + (size_t)(ps->end - p) + 1))
        return SLUICE_ENOMEM;
    char *o = r->str + r->str_len;
    for (;;) {
        if (p >= ps->end)
            return malformed_at(ps, p, "unterminated string");
        unsigned c = *p;
        if (c == '"') {
            p++;
            break;
        }
        if (c < 0x20)
            return malformed_at(ps, p, "control character in string");
        if (c < 0x80 && c != '\\') {
            *o++ = (char)c;
            p++;
            continue;
        }
        if (c >= 0x80) {
            size_t n = utf8_len(p, ps->end);
            if (!n)
                return malformed_at(ps, p, "invalid UTF-8");
            memcpy(o, p, n);
            o += n;
            p += n;
            continue;
        }
        /* An escape. */
        if (ps->end - p < 2)
            return malformed_at(ps, p, "unterminated string");
        switch (p[1]) {
        case '"': *o++ = '"'; p += 2; continue;
        case '\\': *o++ = '\\'; p += 2; continue;
        case '/': *o++ = '/'; p += 2; continue;
        case 'b': *o++ = '\b'; p += 2; continue;
        case 'f': *o++ = '\f'; p += 2; continue;
        case 'n': *o++ = '\n'; p += 2; continue;
        case 'r': *o++ = '\r'; p += 2; continue;
        case 't': *o++ = '\t'; p += 2; continue;
        case 'u': break;
        default:
            return malformed_at(ps, p, "invalid escape in string");
        }
        unsigned cp, lo;
        if (ps->end - p < 6 || !hex4(p + 2, &cp))
            return malformed_at(ps, p, "invalid \\u escape in string");
        if (cp >= 0xDC00 && cp <= 0xDFFF)
            return malformed_at(ps, p, "lone surrogate in string");
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (ps->end - p < 12 || p[6] != '\\' || p[7] != 'u' || !hex4(p + 8, &lo) ||
                lo < 0xDC00 || lo > 0xDFFF)
                return malformed_at(ps, p, "lone surrogate in string");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            p += 6;
        }
        p += 6;
        o += put_utf8(o, cp);   /* at most 4 bytes for 6 or 12 of text */
    }
    r->str_len = (size_t)(o - r->str);
    ps->p = p;
    return SLUICE_OK;
}

/* Parses the number at ps->p into *out (strict JSON grammar). */
static int parse_number(parser *ps, double *out)
{
    const unsigned char *p = ps->p, *b = p;
    if (p < ps->end && *p == '-')
        p++;
    if (p >= ps->end || *p < '0' || *p > '9')
        return malformed(ps, "invalid number");
    if (*p == '0') {
        p++;
        if (p < ps->end && *p >= '0' && *p <= '9')
            return malformed(ps, "leading zero in number");
    } else {
        while (p < ps->end && *p >= '0' && *p <= '9') p++;
    }
    if (p < ps->end && *p == '.') {
        p++;
        if (p >= ps->end || *p < '0' || *p > '9')
            return malformed_at(ps, p, "invalid number");
        while (p < ps->end && *p >= '0' && *p <= '9') p++;
    }
    if (p < ps->end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < ps->end && (*p == '+' || *p == '-')) p++;
        if (p >= ps->end || *p < '0' || *p > '9')
            return malformed_at(ps, p, "invalid number");
        while (p < ps->end && *p >= '0' && *p <= '9') p++;
    }
    size_t len = (size_t)(p - b);
    int negative = *b == '-';
    if (len - (size_t)negative <= 15) {
        /* Up to 15 digits and nothing else: exact in a double. */
        const unsigned char *d = b + negative;
        int64_t v = 0;
        while (d < p && *d >= '0' && *d <= '9')
            v = v * 10 + (*d++ - '0');
        if (d == p) {
            *out = negative ? -(double)v : (double)v;
            ps->p = p;
            return SLUICE_OK;
        }
    }
    /* strtod needs a terminated copy: the text is not. */
    char small[64], *copy = small;
    if (len >= sizeof small && !(copy = malloc(len + 1)))
        return SLUICE_ENOMEM;
    memcpy(copy, b, len);
    copy[len] = 0;
    *out = strtod(copy, NULL);
    if (copy != small)
        free(copy);
    ps->p = p;
    return SLUICE_OK;
}

static int match_word(parser *ps, const char *w, size_t n)
{
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, w, n) != 0)
        return malformed(ps, "invalid literal");
    ps->p += n;
    return SLUICE_OK;
}

static int parse_object(parser *ps, int depth, int known);

/* Any JSON value, checked and passed over (nothing kept). */
static int skip_value(parser *ps, int depth)
{
    int rc;
    skip_ws(ps);
    if (ps->p >= ps->end)
        return malformed(ps, "unexpected end of text");
    switch (*ps->p) {
    case '"': {
        size_t mark = ps->r->str_len;
        rc = parse_string(ps);
        ps->r->str_len = mark;
        return rc;
    }
    case 't': return match_word(ps, "true", 4);
    case 'f': return match_word(ps, "false", 5);
    case 'n': return match_word(ps, "null", 4);
    case '{':
        if (depth >= SKIP_DEPTH)
            return malformed(ps, "nesting too deep");
        return parse_object(ps, depth + 1, 0);
    case '[':
        if (depth >= SKIP_DEPTH)
            return malformed(ps, "nesting too deep");
        ps->p++;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ']') {
            ps->p++;
            return SLUICE_OK;
        }
        for (;;) {
            if ((rc = skip_value(ps, depth + 1)) != SLUICE_OK)
                return rc;
            skip_ws(ps);
            if (ps->p < ps->end && *ps->p == ',') {
                ps->p++;
                continue;
            }
            if (ps->p < ps->end && *ps->p == ']') {
                ps->p++;
                return SLUICE_OK;
            }
            return malformed(ps, "expected ',' or ']'");
        }
    default: {
        double ignored;
        if (*ps->p != '-' && (*ps->p < '0' || *ps->p > '9'))
            return malformed(ps, "unexpected character");
        return parse_number(ps, &ignored);
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
        if ((rc = parse_string(ps)) != SLUICE_OK)
            return rc;
        v->str_len = ps->r->str_len - v->str_off;
        if (d->nonempty && v->str_len == 0)
            broken(ps, "%s must be a non-empty string", d->name);
        return SLUICE_OK;
    case SLUICE_JSON_BOOLEAN:
        v->boolean = c == 't';
        return v->boolean ? match_word(ps, "true", 4) : match_word(ps, "false", 5);
    default:
        if ((rc = parse_number(ps, &v->number)) != SLUICE_OK)
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
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == '}') {
        ps->p++;
        return SLUICE_OK;
    }
    for (;;) {
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != '"')
            return malformed(ps, "expected a string key");
        size_t mark = r->str_len;
        if ((rc = parse_string(ps)) != SLUICE_OK)
            return rc;
        int i = known ? field_of_key(ps, mark) : -1;
        r->str_len = mark;
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != ':')
            return malformed(ps, "expected ':'");
        ps->p++;
        skip_ws(ps);
        if (ps->p >= ps->end)
            return malformed(ps, "unexpected end of text");
        if (i >= 0)
            rc = parse_field(ps, &ps->s->f[i], &r->values[i]);
        else
            rc = skip_value(ps, depth);
        if (rc != SLUICE_OK)
            return rc;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == '}') {
            ps->p++;
            return SLUICE_OK;
        }
        return malformed(ps, "expected ',' or '}'");
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
    if (!reserve(&r->out, &r->out_cap, need))
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
            o += write_string(o, r->str + v->str_off, v->str_len);
        } else if (v->type == SLUICE_JSON_BOOLEAN) {
            memcpy(o, v->boolean ? "true" : "false", v->boolean ? 4 : 5);
            o += v->boolean ? 4 : 5;
        } else {
            o += write_number(o, v->number);
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
    skip_ws(&ps);
    if (ps.p < ps.end && *ps.p == '{') {
        rc = parse_object(&ps, 0, 1);
    } else {
        rc = skip_value(&ps, 0);
        if (rc == SLUICE_OK)
            broken(&ps, "a row must be a JSON object");
    }
    if (rc != SLUICE_OK)
        return rc;
    skip_ws(&ps);
    if (ps.p != ps.end)
        return malformed(&ps, "unexpected text after the value");
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
