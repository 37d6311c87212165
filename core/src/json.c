/* The strict JSON layer under the row schemas: see json_internal.h. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_internal.h"

/* ---- buffers -------------------------------------------------------------- */

int sluice_json_reserve(char **buf, size_t *cap, size_t need)
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
size_t sluice_json_write_string(char *out, const char *s, size_t len)
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
size_t sluice_json_write_number(char *buf, double n)
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

int sluice_json_malformed(parser *ps, const char *what)
{
    snprintf(ps->r->error, sizeof ps->r->error, "%s at byte %zu", what,
             (size_t)(ps->p - ps->start) + 1);
    return SLUICE_EMALFORMED;
}

/* The same, with the position moved to `at` first. */
int sluice_json_malformed_at(parser *ps, const unsigned char *at, const char *what)
{
    ps->p = at;
    return sluice_json_malformed(ps, what);
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
int sluice_json_string(parser *ps)
{
    sluice_schema_result *r = ps->r;
    const unsigned char *p = ps->p + 1;
    if (!sluice_json_reserve(&r->str, &r->str_cap, r->str_len + (size_t)(ps->end - p) + 1))
        return SLUICE_ENOMEM;
    char *o = r->str + r->str_len;
    for (;;) {
        if (p >= ps->end)
            return sluice_json_malformed_at(ps, p, "unterminated string");
        unsigned c = *p;
        if (c == '"') {
            p++;
            break;
        }
        if (c < 0x20)
            return sluice_json_malformed_at(ps, p, "control character in string");
        if (c < 0x80 && c != '\\') {
            *o++ = (char)c;
            p++;
            continue;
        }
        if (c >= 0x80) {
            size_t n = utf8_len(p, ps->end);
            if (!n)
                return sluice_json_malformed_at(ps, p, "invalid UTF-8");
            memcpy(o, p, n);
            o += n;
            p += n;
            continue;
        }
        /* An escape. */
        if (ps->end - p < 2)
            return sluice_json_malformed_at(ps, p, "unterminated string");
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
            return sluice_json_malformed_at(ps, p, "invalid escape in string");
        }
        unsigned cp, lo;
        if (ps->end - p < 6 || !hex4(p + 2, &cp))
            return sluice_json_malformed_at(ps, p, "invalid \\u escape in string");
        if (cp >= 0xDC00 && cp <= 0xDFFF)
            return sluice_json_malformed_at(ps, p, "lone surrogate in string");
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (ps->end - p < 12 || p[6] != '\\' || p[7] != 'u' || !hex4(p + 8, &lo) ||
                lo < 0xDC00 || lo > 0xDFFF)
                return sluice_json_malformed_at(ps, p, "lone surrogate in string");
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
int sluice_json_number(parser *ps, double *out)
{
    const unsigned char *p = ps->p, *b = p;
    if (p < ps->end && *p == '-')
        p++;
    if (p >= ps->end || *p < '0' || *p > '9')
        return sluice_json_malformed(ps, "invalid number");
    if (*p == '0') {
        p++;
        if (p < ps->end && *p >= '0' && *p <= '9')
            return sluice_json_malformed(ps, "leading zero in number");
    } else {
        while (p < ps->end && *p >= '0' && *p <= '9') p++;
    }
    if (p < ps->end && *p == '.') {
        p++;
        if (p >= ps->end || *p < '0' || *p > '9')
            return sluice_json_malformed_at(ps, p, "invalid number");
        while (p < ps->end && *p >= '0' && *p <= '9') p++;
    }
    if (p < ps->end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < ps->end && (*p == '+' || *p == '-')) p++;
        if (p >= ps->end || *p < '0' || *p > '9')
            return sluice_json_malformed_at(ps, p, "invalid number");
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

int sluice_json_word(parser *ps, const char *w, size_t n)
{
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, w, n) != 0)
        return sluice_json_malformed(ps, "invalid literal");
    ps->p += n;
    return SLUICE_OK;
}


int sluice_json_after_item(parser *ps, char close)
{
    sluice_json_skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ',') {
        ps->p++;
        return 1;
    }
    if (ps->p < ps->end && *ps->p == (unsigned char)close) {
        ps->p++;
        return SLUICE_OK;
    }
    return sluice_json_malformed(ps, close == ']' ? "expected ',' or ']'" : "expected ',' or '}'");
}
