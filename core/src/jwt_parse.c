/* Token parsing for the JWT parts: strict base64url and a strict JSON walk
 * over one object (header, claims, a JWK or a JWK Set). See jwt_internal.h. */
#include <string.h>

#include "jwt_internal.h"

#define MAX_DEPTH 32

/* ---- base64url (RFC 4648 5, no padding, no stray bits) ----------------------- */

static int b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

long sluice_jwt_b64url_decode(const char *in, size_t len, unsigned char *out)
{
    if (len % 4 == 1)
        return -1;
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64val((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc)        /* the unused low bits must be zero: one text per value */
        return -1;
    return (long)o;
}

static const char B64URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t sluice_jwt_b64url_encode(const unsigned char *in, size_t len, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 2 < len; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[o++] = B64URL[v >> 18];
        out[o++] = B64URL[v >> 12 & 63];
        out[o++] = B64URL[v >> 6 & 63];
        out[o++] = B64URL[v & 63];
    }
    if (i < len) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < len ? (unsigned)in[i + 1] << 8 : 0);
        out[o++] = B64URL[v >> 18];
        out[o++] = B64URL[v >> 12 & 63];
        if (i + 1 < len)
            out[o++] = B64URL[v >> 6 & 63];
    }
    return o;
}

/* ---- a strict JSON walk over one object (json.c lexes) ------------------------- */

static int parse_value(parser *ps, jval *v, int depth);

/* Validates the array or object at ps->p (its text is kept, not its values). */
static int skip_container(parser *ps, int depth)
{
    char close = *ps->p == '[' ? ']' : '}';
    if (depth > MAX_DEPTH)
        return sluice_json_malformed(ps, "nested too deeply");
    ps->p++;
    sluice_json_skip_ws(ps);
    if (ps->p < ps->end && *ps->p == (unsigned char)close) {
        ps->p++;
        return SLUICE_OK;
    }
    size_t mark = ps->r->str_len;
    for (;;) {
        jval v;
        int rc;
        if (close == '}') {
            sluice_json_skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != '"')
                return sluice_json_malformed(ps, "expected a member name");
            if ((rc = sluice_json_string(ps)))
                return rc;
            sluice_json_skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':')
                return sluice_json_malformed(ps, "expected ':'");
            ps->p++;
        }
        if ((rc = parse_value(ps, &v, depth + 1)))
            return rc;
        ps->r->str_len = mark;      /* nothing of it is kept */
        rc = sluice_json_after_item(ps, close);
        if (rc == SLUICE_OK)
            return SLUICE_OK;
        if (rc != 1)
            return rc;
    }
}

static int parse_value(parser *ps, jval *v, int depth)
{
    sluice_json_skip_ws(ps);
    if (ps->p >= ps->end)
        return sluice_json_malformed(ps, "unexpected end of text");
    switch (*ps->p) {
    case '"': {
        v->kind = J_STR;
        v->off = ps->r->str_len;
        int rc = sluice_json_string(ps);
        v->len = ps->r->str_len - v->off;
        return rc;
    }
    case '[':
    case '{':
        v->kind = *ps->p == '[' ? J_ARRAY : J_OBJECT;
        v->begin = ps->p;
        {
            int rc = skip_container(ps, depth);
            v->end = ps->p;
            return rc;
        }
    case 't': v->kind = J_TRUE; return sluice_json_word(ps, "true", 4);
    case 'f': v->kind = J_FALSE; return sluice_json_word(ps, "false", 5);
    case 'n': v->kind = J_NULL; return sluice_json_word(ps, "null", 4);
    default:
        v->kind = J_NUM;
        return sluice_json_number(ps, &v->num);
    }
}

int sluice_jwt_each_member(sluice_schema_result *r, const unsigned char *begin,
                           const unsigned char *end, sluice_jwt_member_fn fn, void *ud)
{
    parser ps = { .start = begin, .p = begin, .end = end, .r = r };
    size_t names[64][2], nnames = 0;
    r->str_len = 0;
    sluice_json_skip_ws(&ps);
    if (ps.p >= ps.end || *ps.p != '{')
        return sluice_json_malformed(&ps, "expected '{'");
    ps.p++;
    sluice_json_skip_ws(&ps);
    if (ps.p < ps.end && *ps.p == '}') {
        ps.p++;
    } else {
        for (;;) {
            int rc;
            sluice_json_skip_ws(&ps);
            if (ps.p >= ps.end || *ps.p != '"')
                return sluice_json_malformed(&ps, "expected a member name");
            const unsigned char *at = ps.p;
            size_t noff = r->str_len;
            if ((rc = sluice_json_string(&ps)))
                return rc;
            size_t nlen = r->str_len - noff;
            for (size_t i = 0; i < nnames; i++)
                if (names[i][1] == nlen && memcmp(r->str + names[i][0], r->str + noff, nlen) == 0)
                    return sluice_json_malformed_at(&ps, at, "member given twice");
            if (nnames == sizeof names / sizeof *names)
                return sluice_json_malformed_at(&ps, at, "more than 64 members");
            names[nnames][0] = noff;
            names[nnames][1] = nlen;
            nnames++;
            sluice_json_skip_ws(&ps);
            if (ps.p >= ps.end || *ps.p != ':')
                return sluice_json_malformed(&ps, "expected ':'");
            ps.p++;
            jval v;
            if ((rc = parse_value(&ps, &v, 1)))
                return rc;
            if ((rc = fn(ud, &ps, r->str + noff, nlen, &v)))
                return rc;
            rc = sluice_json_after_item(&ps, '}');
            if (rc == SLUICE_OK)
                break;
            if (rc != 1)
                return rc;
        }
    }
    sluice_json_skip_ws(&ps);
    if (ps.p != ps.end)
        return sluice_json_malformed(&ps, "text after the object");
    return SLUICE_OK;
}

int sluice_jwt_is_name(const char *name, size_t nlen, const char *want)
{
    return strlen(want) == nlen && memcmp(name, want, nlen) == 0;
}

int sluice_jwt_each_element(sluice_schema_result *r, const unsigned char *begin,
                            const unsigned char *end,
                        int (*fn)(void *ud, parser *ps, const jval *v), void *ud)
{
    parser ps = { .start = begin, .p = begin + 1, .end = end, .r = r };
    sluice_json_skip_ws(&ps);
    if (ps.p < ps.end && *ps.p == ']')
        return SLUICE_OK;
    for (;;) {
        jval v;
        int rc;
        if ((rc = parse_value(&ps, &v, 1)) || (rc = fn(ud, &ps, &v)))
            return rc;
        rc = sluice_json_after_item(&ps, ']');
        if (rc != 1)
            return rc;
    }
}
