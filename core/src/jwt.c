/* JSON Web Tokens: strict parsing of the compact form, key sets (JWKS, PEM,
 * secrets) and signature checks with OpenSSL 3, then the time, issuer and
 * audience claims. See sluice/jwt.h for what is accepted. */
#include "sluice/jwt.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/obj_mac.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "json_internal.h"

#define DEFAULT_MAX_LENGTH 8192
#define MAX_DEPTH 32
#define MIN_SECRET 32
#define MIN_RSA_BITS 2048

static const char *const ERROR_NAMES[] = {
    "OK", "MALFORMED", "TOOBIG", "ALGORITHM", "KEY", "SIGNATURE", "INVALID",
    "EXPIRED", "EARLY", "ISSUER", "AUDIENCE", "NOMEM",
};

const char *sluice_jwt_error_name(int code)
{
    if (code < 0 || (size_t)code >= sizeof ERROR_NAMES / sizeof *ERROR_NAMES)
        return "UNKNOWN";
    return ERROR_NAMES[code];
}

/* ---- algorithms and keys --------------------------------------------------- */

enum kind { K_OCT, K_RSA, K_EC, K_OKP };
enum sig { S_HMAC, S_RSA, S_PSS, S_ECDSA, S_EDDSA };

static const struct alg {
    const char *name;
    unsigned bit;
    enum sig sig;
    int bits;           /* digest size; for ECDSA also the curve's */
    int curve;          /* ECDSA: the key's curve */
} ALGS[] = {
    { "HS256", SLUICE_JWT_HS256, S_HMAC, 256, 0 },
    { "HS384", SLUICE_JWT_HS384, S_HMAC, 384, 0 },
    { "HS512", SLUICE_JWT_HS512, S_HMAC, 512, 0 },
    { "RS256", SLUICE_JWT_RS256, S_RSA, 256, 0 },
    { "RS384", SLUICE_JWT_RS384, S_RSA, 384, 0 },
    { "RS512", SLUICE_JWT_RS512, S_RSA, 512, 0 },
    { "PS256", SLUICE_JWT_PS256, S_PSS, 256, 0 },
    { "PS384", SLUICE_JWT_PS384, S_PSS, 384, 0 },
    { "PS512", SLUICE_JWT_PS512, S_PSS, 512, 0 },
    { "ES256", SLUICE_JWT_ES256, S_ECDSA, 256, NID_X9_62_prime256v1 },
    { "ES384", SLUICE_JWT_ES384, S_ECDSA, 384, NID_secp384r1 },
    { "ES512", SLUICE_JWT_ES512, S_ECDSA, 512, NID_secp521r1 },
    { "EdDSA", SLUICE_JWT_EDDSA, S_EDDSA, 0, 0 },
};
#define NALGS (sizeof ALGS / sizeof *ALGS)

static const struct alg *alg_named(const char *name, size_t len)
{
    for (size_t i = 0; i < NALGS; i++)
        if (strlen(ALGS[i].name) == len && memcmp(ALGS[i].name, name, len) == 0)
            return &ALGS[i];
    return NULL;
}

unsigned sluice_jwt_alg_bit(const char *name)
{
    const struct alg *a = name ? alg_named(name, strlen(name)) : NULL;
    return a ? a->bit : 0;
}

static const EVP_MD *digest(int bits)
{
    return bits == 256 ? EVP_sha256() : bits == 384 ? EVP_sha384() : EVP_sha512();
}

struct key {
    char *kid;                  /* NULL: none */
    enum kind kind;
    unsigned algs;              /* the algorithms it may check */
    EVP_PKEY *pkey;             /* RSA, EC, OKP */
    unsigned char *secret;      /* oct */
    size_t secret_len;
};

struct sluice_jwt_keys {
    struct key *keys;
    size_t n, cap;
};

static const unsigned HMAC_ALGS = SLUICE_JWT_HS256 | SLUICE_JWT_HS384 | SLUICE_JWT_HS512;
static const unsigned RSA_ALGS = SLUICE_JWT_RS256 | SLUICE_JWT_RS384 | SLUICE_JWT_RS512 |
                                 SLUICE_JWT_PS256 | SLUICE_JWT_PS384 | SLUICE_JWT_PS512;

static void key_clear(struct key *k)
{
    free(k->kid);
    EVP_PKEY_free(k->pkey);
    if (k->secret)
        OPENSSL_clear_free(k->secret, k->secret_len);
    memset(k, 0, sizeof *k);
}

int sluice_jwt_keys_new(sluice_jwt_keys **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? SLUICE_OK : SLUICE_ENOMEM;
}

void sluice_jwt_keys_free(sluice_jwt_keys *k)
{
    if (!k)
        return;
    for (size_t i = 0; i < k->n; i++)
        key_clear(&k->keys[i]);
    free(k->keys);
    free(k);
}

size_t sluice_jwt_keys_count(const sluice_jwt_keys *k) { return k ? k->n : 0; }

static int errf(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int errf(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* Which algorithms a public key can check: by type and curve. 0: none
 * (unsupported type or curve, or an RSA key too short). */
static unsigned pkey_algs(EVP_PKEY *pkey, enum kind *kind)
{
    switch (EVP_PKEY_get_base_id(pkey)) {
    case EVP_PKEY_RSA:
        *kind = K_RSA;
        return EVP_PKEY_get_bits(pkey) >= MIN_RSA_BITS ? RSA_ALGS : 0;
    case EVP_PKEY_ED25519:
    case EVP_PKEY_ED448:
        *kind = K_OKP;
        return SLUICE_JWT_EDDSA;
    case EVP_PKEY_EC: {
        char group[64];
        *kind = K_EC;
        if (!EVP_PKEY_get_group_name(pkey, group, sizeof group, NULL))
            return 0;
        int nid = OBJ_txt2nid(group);
        for (size_t i = 0; i < NALGS; i++)
            if (ALGS[i].sig == S_ECDSA && ALGS[i].curve == nid)
                return ALGS[i].bit;
        return 0;
    }
    default:
        return 0;
    }
}

/* Appends the keys of `add` to k (all or nothing). */
static int keys_take(sluice_jwt_keys *k, struct key *add, size_t n)
{
    if (k->n + n > k->cap) {
        size_t cap = k->cap ? k->cap : 4;
        while (cap < k->n + n)
            cap *= 2;
        struct key *bigger = realloc(k->keys, cap * sizeof *bigger);
        if (!bigger)
            return SLUICE_ENOMEM;
        k->keys = bigger;
        k->cap = cap;
    }
    memcpy(k->keys + k->n, add, n * sizeof *add);
    k->n += n;
    return SLUICE_OK;
}

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

int sluice_jwt_keys_add_secret(sluice_jwt_keys *k, const char *kid, const void *secret,
                               size_t len, char *err, size_t errlen)
{
    if (!k || (!secret && len))
        return errf(err, errlen, SLUICE_EINVAL, "no key set or secret");
    if (len < MIN_SECRET)
        return errf(err, errlen, SLUICE_EINVAL,
                    "an HMAC secret needs at least %d bytes, got %zu", MIN_SECRET, len);
    struct key key = { .kind = K_OCT, .algs = HMAC_ALGS, .secret_len = len };
    key.secret = OPENSSL_malloc(len);
    key.kid = kid ? dup_n(kid, strlen(kid)) : NULL;
    if (!key.secret || (kid && !key.kid) || keys_take(k, &key, 1)) {
        key_clear(&key);
        return errf(err, errlen, SLUICE_ENOMEM, "out of memory");
    }
    memcpy(k->keys[k->n - 1].secret, secret, len);
    return SLUICE_OK;
}

int sluice_jwt_keys_add_pem(sluice_jwt_keys *k, const char *kid, const char *pem,
                            size_t len, char *err, size_t errlen)
{
    if (!k || !pem || len > (size_t)1 << 20)
        return errf(err, errlen, SLUICE_EINVAL, "no key set or PEM text");
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *pkey = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    if (!pkey)
        return errf(err, errlen, SLUICE_EINVAL, "not a PEM public key (BEGIN PUBLIC KEY)");
    struct key key = { .pkey = pkey };
    key.algs = pkey_algs(pkey, &key.kind);
    if (!key.algs) {
        key_clear(&key);
        return errf(err, errlen, SLUICE_EINVAL,
                    "unsupported public key (RSA of %d bits or more, EC P-256/384/521, "
                    "Ed25519 or Ed448)", MIN_RSA_BITS);
    }
    key.kid = kid ? dup_n(kid, strlen(kid)) : NULL;
    if ((kid && !key.kid) || keys_take(k, &key, 1)) {
        key_clear(&key);
        return errf(err, errlen, SLUICE_ENOMEM, "out of memory");
    }
    return SLUICE_OK;
}

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

/* Decodes into out (room: 3 * len / 4 + 1); returns the length or -1. */
static long b64url_decode(const char *in, size_t len, unsigned char *out)
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

/* Encodes into out (room: 4 * len / 3 + 4); returns the length. */
static size_t b64url_encode(const unsigned char *in, size_t len, char *out)
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

enum jkind { J_STR, J_NUM, J_TRUE, J_FALSE, J_NULL, J_ARRAY, J_OBJECT };

typedef struct jval {
    enum jkind kind;
    double num;
    size_t off, len;                  /* a string: decoded, in ps->r->str */
    const unsigned char *begin, *end; /* an array or object: its text */
} jval;

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

typedef int (*member_fn)(void *ud, parser *ps, const char *name, size_t nlen, const jval *v);

/* Calls fn for each member of the object that is all of [begin, end)
 * (whitespace around it allowed). A member name given twice is
 * malformed: other parsers keep the first or the last. */
static int each_member(sluice_schema_result *r, const unsigned char *begin,
                       const unsigned char *end, member_fn fn, void *ud)
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

static int is_name(const char *name, size_t nlen, const char *want)
{
    return strlen(want) == nlen && memcmp(name, want, nlen) == 0;
}

/* Calls fn for each element of the array [begin, end), already validated. */
static int each_element(sluice_schema_result *r, const unsigned char *begin,
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

/* ---- JWK Sets -------------------------------------------------------------------- */

/* The members of one JWK that matter (offsets into the scratch strings). */
struct jwk {
    jval kty, kid, alg, use, crv, n, e, x, y, k;
    int has_kty, has_kid, has_alg, has_use, has_crv, has_n, has_e, has_x, has_y, has_k;
};

static int jwk_member(void *ud, parser *ps, const char *name, size_t nlen, const jval *v)
{
    struct jwk *j = ud;
    (void)ps;
#define JWK_FIELD(f)                                                                  \
    if (is_name(name, nlen, #f)) {                                                    \
        if (v->kind != J_STR)                                                         \
            return sluice_json_malformed(ps, "JWK member \"" #f "\" is not a string"); \
        j->f = *v;                                                                    \
        j->has_##f = 1;                                                               \
        return SLUICE_OK;                                                             \
    }
    JWK_FIELD(kty) JWK_FIELD(kid) JWK_FIELD(alg) JWK_FIELD(use) JWK_FIELD(crv)
    JWK_FIELD(n) JWK_FIELD(e) JWK_FIELD(x) JWK_FIELD(y) JWK_FIELD(k)
#undef JWK_FIELD
    return SLUICE_OK;
}

static int str_is(const sluice_schema_result *r, const jval *v, const char *want)
{
    return v->len == strlen(want) && memcmp(r->str + v->off, want, v->len) == 0;
}

/* The base64url member v decoded into a malloc'd buffer, or NULL. */
static unsigned char *b64_member(const sluice_schema_result *r, const jval *v, size_t *len)
{
    unsigned char *out = malloc(v->len * 3 / 4 + 1);
    long n = out ? b64url_decode(r->str + v->off, v->len, out) : -1;
    if (n <= 0) {
        free(out);
        return NULL;
    }
    *len = (size_t)n;
    return out;
}

/* An EVP_PKEY from parameters (RSA n/e, or an EC group and point). */
static EVP_PKEY *pkey_fromdata(const char *type, OSSL_PARAM_BLD *bld)
{
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    EVP_PKEY *pkey = NULL;
    if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    if (pkey) {
        /* The point is on its curve, the modulus is odd and so on. */
        EVP_PKEY_CTX *check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
        int ok = check && EVP_PKEY_public_check(check) == 1;
        EVP_PKEY_CTX_free(check);
        if (!ok) {
            EVP_PKEY_free(pkey);
            pkey = NULL;
        }
    }
    return pkey;
}

static EVP_PKEY *rsa_from_jwk(const sluice_schema_result *r, const struct jwk *j)
{
    size_t nl, el;
    unsigned char *n = j->has_n ? b64_member(r, &j->n, &nl) : NULL;
    unsigned char *e = j->has_e ? b64_member(r, &j->e, &el) : NULL;
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    BIGNUM *bn = n ? BN_bin2bn(n, (int)nl, NULL) : NULL, *be = e ? BN_bin2bn(e, (int)el, NULL) : NULL;
    if (bld && bn && be && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be))
        pkey = pkey_fromdata("RSA", bld);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    free(n);
    free(e);
    return pkey;
}

static EVP_PKEY *ec_from_jwk(const sluice_schema_result *r, const struct jwk *j)
{
    static const struct { const char *crv, *group; size_t size; } CURVES[] = {
        { "P-256", "prime256v1", 32 }, { "P-384", "secp384r1", 48 }, { "P-521", "secp521r1", 66 },
    };
    size_t c = 0, xl = 0, yl = 0;
    while (c < 3 && !str_is(r, &j->crv, CURVES[c].crv))
        c++;
    if (c == 3 || !j->has_x || !j->has_y)
        return NULL;
    unsigned char *x = b64_member(r, &j->x, &xl), *y = b64_member(r, &j->y, &yl);
    unsigned char point[1 + 2 * 66];
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    if (x && y && xl == CURVES[c].size && yl == CURVES[c].size && bld) {
        point[0] = 4;       /* uncompressed */
        memcpy(point + 1, x, xl);
        memcpy(point + 1 + xl, y, yl);
        if (OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, CURVES[c].group, 0) &&
            OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, 1 + xl + yl))
            pkey = pkey_fromdata("EC", bld);
    }
    OSSL_PARAM_BLD_free(bld);
    free(x);
    free(y);
    return pkey;
}

static EVP_PKEY *okp_from_jwk(const sluice_schema_result *r, const struct jwk *j)
{
    size_t xl = 0;
    int type = str_is(r, &j->crv, "Ed25519") ? EVP_PKEY_ED25519
             : str_is(r, &j->crv, "Ed448") ? EVP_PKEY_ED448 : 0;
    unsigned char *x = type && j->has_x ? b64_member(r, &j->x, &xl) : NULL;
    EVP_PKEY *pkey = x ? EVP_PKEY_new_raw_public_key(type, NULL, x, xl) : NULL;
    free(x);
    return pkey;
}

struct jwks_load {
    sluice_schema_result *r;
    struct key *keys;
    size_t n, cap, skipped;
    char *err;
    size_t errlen;
};

/* One JWK (the object [begin, end)) into l->keys, or skipped. */
static int load_jwk(struct jwks_load *l, const unsigned char *begin, const unsigned char *end)
{
    struct jwk j;
    memset(&j, 0, sizeof j);
    sluice_schema_result *r = l->r;
    int rc = each_member(r, begin, end, jwk_member, &j);
    if (rc == SLUICE_EMALFORMED)
        return errf(l->err, l->errlen, SLUICE_EMALFORMED, "JWK: %s", r->error);
    if (rc)
        return rc;
    if (!j.has_kty)
        return errf(l->err, l->errlen, SLUICE_EINVAL, "a JWK without \"kty\"");
    /* Not for signatures, or for an algorithm sluice does not verify
     * (RSA-OAEP, ...): skipped, as a key of an unknown type is. */
    if ((j.has_use && !str_is(r, &j.use, "sig")) ||
        (j.has_alg && !alg_named(r->str + j.alg.off, j.alg.len))) {
        l->skipped++;
        return SLUICE_OK;
    }
    struct key key;
    memset(&key, 0, sizeof key);
    const char *what;
    if (str_is(r, &j.kty, "oct")) {
        what = "oct";
        key.kind = K_OCT;
        key.algs = HMAC_ALGS;
        size_t len = 0;
        unsigned char *k = j.has_k ? b64_member(r, &j.k, &len) : NULL;
        if (k && len >= MIN_SECRET) {
            key.secret = OPENSSL_malloc(len);
            if (key.secret) {
                memcpy(key.secret, k, len);
                key.secret_len = len;
            }
        }
        if (k)
            OPENSSL_cleanse(k, len);
        free(k);
        if (!key.secret)
            return errf(l->err, l->errlen, SLUICE_EINVAL,
                        "an oct JWK needs \"k\": a base64url secret of at least %d bytes", MIN_SECRET);
    } else {
        if (str_is(r, &j.kty, "RSA")) {
            what = "RSA";
            key.pkey = rsa_from_jwk(r, &j);
        } else if (str_is(r, &j.kty, "EC")) {
            what = "EC";
            key.pkey = ec_from_jwk(r, &j);
        } else if (str_is(r, &j.kty, "OKP")) {
            what = "OKP";
            key.pkey = okp_from_jwk(r, &j);
        } else {
            l->skipped++;       /* a type we do not know (RFC 7517 5) */
            return SLUICE_OK;
        }
        if (!key.pkey)
            return errf(l->err, l->errlen, SLUICE_EINVAL,
                        "a %s JWK that is not a valid public key (n/e, crv/x/y)", what);
        key.algs = pkey_algs(key.pkey, &key.kind);
        if (!key.algs) {
            key_clear(&key);
            return errf(l->err, l->errlen, SLUICE_EINVAL,
                        "an unsupported %s key (RSA needs %d bits or more; curves: P-256, "
                        "P-384, P-521, Ed25519, Ed448)", what, MIN_RSA_BITS);
        }
    }
    if (j.has_alg) {
        const struct alg *a = alg_named(r->str + j.alg.off, j.alg.len);
        if (!(a->bit & key.algs)) {
            key_clear(&key);
            return errf(l->err, l->errlen, SLUICE_EINVAL,
                        "a %s JWK whose \"alg\" is not one of its type's", what);
        }
        key.algs = a->bit;
    }
    if (j.has_kid && !(key.kid = dup_n(r->str + j.kid.off, j.kid.len))) {
        key_clear(&key);
        return SLUICE_ENOMEM;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 4;
        struct key *bigger = realloc(l->keys, cap * sizeof *bigger);
        if (!bigger) {
            key_clear(&key);
            return SLUICE_ENOMEM;
        }
        l->keys = bigger;
        l->cap = cap;
    }
    l->keys[l->n++] = key;
    return SLUICE_OK;
}

static int jwks_element(void *ud, parser *ps, const jval *v)
{
    struct jwks_load *l = ud;
    if (v->kind != J_OBJECT)
        return sluice_json_malformed(ps, "\"keys\" holds something that is not a JWK object");
    /* load_jwk reuses the scratch strings: the array's own (none: its
     * elements are objects) are not needed. */
    return load_jwk(l, v->begin, v->end);
}

struct jwks_top {
    jval keys;
    int has_keys, has_kty;
};

static int jwks_member(void *ud, parser *ps, const char *name, size_t nlen, const jval *v)
{
    struct jwks_top *t = ud;
    (void)ps;
    if (is_name(name, nlen, "keys")) {
        t->keys = *v;
        t->has_keys = 1;
    } else if (is_name(name, nlen, "kty")) {
        t->has_kty = 1;
    }
    return SLUICE_OK;
}

int sluice_jwt_keys_add_jwks(sluice_jwt_keys *k, const char *json, size_t len,
                             size_t *skipped, char *err, size_t errlen)
{
    if (!k || !json)
        return errf(err, errlen, SLUICE_EINVAL, "no key set or JWKS text");
    if (err && errlen)
        err[0] = '\0';
    sluice_schema_result r;
    memset(&r, 0, sizeof r);
    struct jwks_top top;
    memset(&top, 0, sizeof top);
    struct jwks_load l = { .r = &r, .err = err, .errlen = errlen };
    const unsigned char *b = (const unsigned char *)json, *e = b + len;
    int rc = each_member(&r, b, e, jwks_member, &top);
    if (rc == SLUICE_EMALFORMED)
        errf(err, errlen, rc, "%s", r.error);
    else if (!rc && top.has_keys && top.keys.kind == J_ARRAY) {
        /* each_element parses into a scratch of its own: the top level's
         * strings are done with. */
        sluice_schema_result inner;
        memset(&inner, 0, sizeof inner);
        l.r = &inner;
        rc = each_element(&inner, top.keys.begin, top.keys.end, jwks_element, &l);
        if (rc == SLUICE_EMALFORMED && inner.error[0] && (!err || !err[0]))
            errf(err, errlen, rc, "%s", inner.error);
        sluice_schema_result_free(&inner);
    } else if (!rc && top.has_kty) {
        rc = load_jwk(&l, b, e);        /* a single JWK */
    } else if (!rc) {
        rc = errf(err, errlen, SLUICE_EINVAL, "a JWK Set needs a \"keys\" array");
    }
    if (!rc && l.n == 0)
        rc = errf(err, errlen, SLUICE_EINVAL, "no signing key in this JWK Set (%zu skipped)",
                  l.skipped);
    if (!rc)
        rc = keys_take(k, l.keys, l.n);
    if (rc)
        for (size_t i = 0; i < l.n; i++)
            key_clear(&l.keys[i]);
    else if (skipped)
        *skipped = l.skipped;
    free(l.keys);
    sluice_schema_result_free(&r);
    return rc;
}

/* ---- signatures ------------------------------------------------------------------- */

static int verify_sig(const struct alg *a, const struct key *k, const unsigned char *tbs,
                      size_t tbs_len, const unsigned char *sig, size_t sig_len)
{
    if (a->sig == S_HMAC) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned mac_len = 0;
        if ((int)k->secret_len < a->bits / 8)
            return 0;       /* RFC 7518 3.2: a key at least as long as the hash */
        if (!HMAC(digest(a->bits), k->secret, (int)k->secret_len, tbs, tbs_len, mac, &mac_len))
            return 0;
        return mac_len == sig_len && CRYPTO_memcmp(mac, sig, sig_len) == 0;
    }
    unsigned char der[16 + 2 * 66 + 8];
    const unsigned char *s = sig;
    size_t s_len = sig_len;
    if (a->sig == S_ECDSA) {
        /* JWS carries r || s, each the curve's size; OpenSSL wants DER. */
        size_t half = (size_t)(a->curve == NID_secp521r1 ? 66 : a->bits / 8);
        if (sig_len != 2 * half)
            return 0;
        ECDSA_SIG *es = ECDSA_SIG_new();
        BIGNUM *br = BN_bin2bn(sig, (int)half, NULL), *bs = BN_bin2bn(sig + half, (int)half, NULL);
        if (!es || !br || !bs || !ECDSA_SIG_set0(es, br, bs)) {
            ECDSA_SIG_free(es);
            BN_free(br);
            BN_free(bs);
            return 0;
        }
        unsigned char *p = der;
        int n = i2d_ECDSA_SIG(es, NULL);
        if (n <= 0 || (size_t)n > sizeof der || i2d_ECDSA_SIG(es, &p) != n) {
            ECDSA_SIG_free(es);
            return 0;
        }
        ECDSA_SIG_free(es);
        s = der;
        s_len = (size_t)n;
    }
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    int ok = md && EVP_DigestVerifyInit(md, &pctx, a->sig == S_EDDSA ? NULL : digest(a->bits),
                                        NULL, k->pkey) == 1;
    if (ok && a->sig == S_PSS)
        ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) > 0 &&
             EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) > 0;
    ok = ok && EVP_DigestVerify(md, s, s_len, tbs, tbs_len) == 1;
    EVP_MD_CTX_free(md);
    return ok;
}

/* ---- verification ------------------------------------------------------------------- */

static int fail(sluice_jwt_result *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(sluice_jwt_result *r, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->error, sizeof r->error, fmt, ap);
    va_end(ap);
    return code;
}

struct header {
    const struct alg *alg;
    int alg_none, has_alg, has_kid, crit;
    char alg_text[16];
    char kid[128];
    size_t kid_len;
    int kid_too_long;
};

static int header_member(void *ud, parser *ps, const char *name, size_t nlen, const jval *v)
{
    struct header *h = ud;
    const char *s = ps->r->str + v->off;
    if (is_name(name, nlen, "alg")) {
        if (v->kind != J_STR)
            return sluice_json_malformed(ps, "\"alg\" is not a string");
        h->has_alg = 1;
        h->alg = alg_named(s, v->len);
        h->alg_none = v->len == 4 && strncasecmp(s, "none", 4) == 0;
        size_t n = v->len < sizeof h->alg_text - 1 ? v->len : sizeof h->alg_text - 1;
        for (size_t i = 0; i < n; i++)
            h->alg_text[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
        h->alg_text[n] = '\0';
    } else if (is_name(name, nlen, "kid")) {
        if (v->kind != J_STR)
            return sluice_json_malformed(ps, "\"kid\" is not a string");
        h->has_kid = 1;
        h->kid_too_long = v->len >= sizeof h->kid;
        if (!h->kid_too_long) {
            memcpy(h->kid, s, v->len);
            h->kid[v->len] = '\0';
            h->kid_len = v->len;
        }
    } else if (is_name(name, nlen, "crit")) {
        h->crit = 1;
    }
    return SLUICE_OK;
}

struct claims {
    const sluice_jwt_options *o;
    double exp, nbf, iat;
    int has_exp, has_nbf, has_iat, has_iss, iss_ok, has_aud, aud_ok;
    const char *bad;        /* a claim of the wrong type */
};

static int aud_matches(const struct claims *c, const char *s, size_t len)
{
    for (size_t i = 0; i < c->o->naudiences; i++)
        if (strlen(c->o->audiences[i]) == len && memcmp(c->o->audiences[i], s, len) == 0)
            return 1;
    return 0;
}

static int aud_element(void *ud, parser *ps, const jval *v)
{
    struct claims *c = ud;
    if (v->kind != J_STR)
        c->bad = "aud";
    else if (aud_matches(c, ps->r->str + v->off, v->len))
        c->aud_ok = 1;
    return SLUICE_OK;
}

static int claims_member(void *ud, parser *ps, const char *name, size_t nlen, const jval *v)
{
    struct claims *c = ud;
    double *num = NULL;
    int *has = NULL;
    if (is_name(name, nlen, "exp")) { num = &c->exp; has = &c->has_exp; }
    else if (is_name(name, nlen, "nbf")) { num = &c->nbf; has = &c->has_nbf; }
    else if (is_name(name, nlen, "iat")) { num = &c->iat; has = &c->has_iat; }
    if (num) {
        if (v->kind != J_NUM) {
            c->bad = c->bad ? c->bad : num == &c->exp ? "exp" : num == &c->nbf ? "nbf" : "iat";
            return SLUICE_OK;
        }
        *num = v->num;
        *has = 1;
    } else if (is_name(name, nlen, "iss")) {
        c->has_iss = 1;
        if (v->kind != J_STR)
            c->bad = c->bad ? c->bad : "iss";
        else if (c->o->issuer)
            c->iss_ok = strlen(c->o->issuer) == v->len &&
                        memcmp(c->o->issuer, ps->r->str + v->off, v->len) == 0;
    } else if (is_name(name, nlen, "aud")) {
        c->has_aud = 1;
        if (v->kind == J_STR)
            c->aud_ok = aud_matches(c, ps->r->str + v->off, v->len);
        else if (v->kind == J_ARRAY) {
            /* A scratch of its own: the caller's strings stay put. */
            sluice_schema_result inner;
            memset(&inner, 0, sizeof inner);
            int rc = each_element(&inner, v->begin, v->end, aud_element, c);
            sluice_schema_result_free(&inner);
            if (rc == SLUICE_ENOMEM)
                return rc;
        } else {
            c->bad = c->bad ? c->bad : "aud";
        }
    }
    return SLUICE_OK;
}

/* Decodes part [b, e) of the token into *buf (NUL-terminated). */
static long decode_part(const char *b, const char *e, char **buf, size_t *cap)
{
    size_t need = (size_t)(e - b) * 3 / 4 + 2;
    if (!sluice_json_reserve(buf, cap, need))
        return -2;
    long n = b64url_decode(b, (size_t)(e - b), (unsigned char *)*buf);
    if (n >= 0)
        (*buf)[n] = '\0';
    return n;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int check_claims(const sluice_jwt_options *o, sluice_jwt_result *r,
                        sluice_schema_result *scratch)
{
    struct claims c;
    memset(&c, 0, sizeof c);
    c.o = o;
    const unsigned char *b = (const unsigned char *)r->claims;
    int rc = each_member(scratch, b, b + r->claims_len, claims_member, &c);
    if (rc == SLUICE_ENOMEM)
        return fail(r, SLUICE_JWT_NOMEM, "out of memory");
    if (rc)
        return fail(r, SLUICE_JWT_MALFORMED, "claims: %s", scratch->error);
    if (c.bad)
        return fail(r, SLUICE_JWT_INVALID, "%s has the wrong type", c.bad);
    double now = o->now > 0 ? o->now : now_s(), leeway = o->leeway > 0 ? o->leeway : 0;
    if (!c.has_exp && o->require_exp)
        return fail(r, SLUICE_JWT_INVALID, "no exp claim (the token would never expire)");
    if (c.has_exp && now >= c.exp + leeway)
        return fail(r, SLUICE_JWT_EXPIRED, "expired %.0f s ago", now - c.exp);
    if (c.has_nbf && now + leeway < c.nbf)
        return fail(r, SLUICE_JWT_EARLY, "not valid for another %.0f s (nbf)", c.nbf - now);
    if (c.has_iat && now + leeway < c.iat)
        return fail(r, SLUICE_JWT_EARLY, "issued %.0f s in the future (iat)", c.iat - now);
    if (o->issuer && !c.iss_ok)
        return fail(r, SLUICE_JWT_ISSUER, c.has_iss ? "iss is not the expected issuer"
                                                   : "no iss claim");
    if (o->naudiences && !c.aud_ok)
        return fail(r, SLUICE_JWT_AUDIENCE, c.has_aud ? "aud names none of the expected audiences"
                                                     : "no aud claim");
    return SLUICE_JWT_OK;
}

static int verify(const char *token, size_t len, const sluice_jwt_keys *keys,
                  const sluice_jwt_options *o, sluice_jwt_result *r, sluice_schema_result *scratch)
{
    size_t max = o->max_length ? o->max_length : DEFAULT_MAX_LENGTH;
    if (len > max)
        return fail(r, SLUICE_JWT_TOOBIG, "token of %zu bytes, more than %zu", len, max);
    const char *end = token + len;
    const char *d1 = memchr(token, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', (size_t)(end - d1 - 1)) : NULL;
    if (!d2 || memchr(d2 + 1, '.', (size_t)(end - d2 - 1)))
        return fail(r, SLUICE_JWT_MALFORMED, "not three dot-separated parts (JWS compact form)");
    long n = decode_part(token, d1, &r->header, &r->header_cap);
    if (n == -2)
        return fail(r, SLUICE_JWT_NOMEM, "out of memory");
    if (n < 0)
        return fail(r, SLUICE_JWT_MALFORMED, "header: invalid base64url");
    r->header_len = (size_t)n;
    if ((n = decode_part(d1 + 1, d2, &r->claims, &r->claims_cap)) == -2)
        return fail(r, SLUICE_JWT_NOMEM, "out of memory");
    if (n < 0)
        return fail(r, SLUICE_JWT_MALFORMED, "claims: invalid base64url");
    r->claims_len = (size_t)n;
    unsigned char sig[1056];      /* an RSA-8192 signature is 1024 bytes */
    size_t sig_text = (size_t)(end - d2 - 1);
    if (sig_text > 1400)
        return fail(r, SLUICE_JWT_MALFORMED, "signature: longer than any key makes");
    if ((n = b64url_decode(d2 + 1, sig_text, sig)) < 0)
        return fail(r, SLUICE_JWT_MALFORMED, "signature: invalid base64url");
    size_t sig_len = (size_t)n;

    struct header h;
    memset(&h, 0, sizeof h);
    const unsigned char *hb = (const unsigned char *)r->header;
    int rc = each_member(scratch, hb, hb + r->header_len, header_member, &h);
    if (rc == SLUICE_ENOMEM)
        return fail(r, SLUICE_JWT_NOMEM, "out of memory");
    if (rc)
        return fail(r, SLUICE_JWT_MALFORMED, "header: %s", scratch->error);
    if (!h.has_alg)
        return fail(r, SLUICE_JWT_MALFORMED, "header: no \"alg\"");
    if (h.alg_none)
        return fail(r, SLUICE_JWT_ALGORITHM, "alg \"none\" (an unsigned token) is never accepted");
    if (!h.alg)
        return fail(r, SLUICE_JWT_ALGORITHM, "alg \"%s\" is not supported", h.alg_text);
    if (o->algorithms && !(o->algorithms & h.alg->bit))
        return fail(r, SLUICE_JWT_ALGORITHM, "alg %s is not allowed here", h.alg->name);
    if (h.crit)
        return fail(r, SLUICE_JWT_ALGORITHM, "header: \"crit\" extensions are not supported");
    if (sig_len == 0)
        return fail(r, SLUICE_JWT_SIGNATURE, "no signature");

    /* The keys that may check it: the token's kid if it names one (unless
     * no key has a kid: then the set is "these keys", as a bare key is),
     * and always a key of the algorithm's type. */
    const unsigned char *tbs = (const unsigned char *)token;
    size_t tbs_len = (size_t)(d2 - token);
    int candidates = 0, kid_known = 0, by_kid = 0;
    for (size_t i = 0; h.has_kid && keys && i < keys->n; i++)
        by_kid |= keys->keys[i].kid != NULL;
    for (size_t i = 0; keys && i < keys->n; i++) {
        const struct key *k = &keys->keys[i];
        if (by_kid) {
            if (!k->kid || h.kid_too_long || strlen(k->kid) != h.kid_len ||
                memcmp(k->kid, h.kid, h.kid_len) != 0)
                continue;
            kid_known = 1;
        }
        if (!(k->algs & h.alg->bit))
            continue;
        candidates++;
        if (verify_sig(h.alg, k, tbs, tbs_len, sig, sig_len))
            return check_claims(o, r, scratch);
    }
    if (candidates)
        return fail(r, SLUICE_JWT_SIGNATURE, "signature does not verify");
    if (by_kid && !kid_known) {
        int printable = !h.kid_too_long;
        for (size_t i = 0; printable && i < h.kid_len; i++)
            printable = h.kid[i] >= 0x20 && h.kid[i] < 0x7f && h.kid[i] != '"';
        if (printable && h.kid_len <= 64)
            return fail(r, SLUICE_JWT_KEY, "no key with kid \"%s\"", h.kid);
        return fail(r, SLUICE_JWT_KEY, "no key with this token's kid");
    }
    return fail(r, SLUICE_JWT_KEY, "no %s key for alg %s%s",
                h.alg->sig == S_HMAC ? "secret" : h.alg->sig == S_ECDSA ? "EC"
                : h.alg->sig == S_EDDSA ? "OKP" : "RSA",
                h.alg->name, by_kid ? " with this kid" : "");
}

int sluice_jwt_verify(const char *token, size_t len, const sluice_jwt_keys *keys,
                      const sluice_jwt_options *o, sluice_jwt_result *r)
{
    static const sluice_jwt_options defaults = { .require_exp = 1 };
    if (!r)
        return SLUICE_JWT_MALFORMED;
    r->error[0] = '\0';
    r->header_len = r->claims_len = 0;
    if (!token)
        return fail(r, SLUICE_JWT_MALFORMED, "no token");
    if (!r->json && !(r->json = calloc(1, sizeof(sluice_schema_result))))
        return fail(r, SLUICE_JWT_NOMEM, "out of memory");
    int rc = verify(token, len, keys, o ? o : &defaults, r, r->json);
    if (rc) {
        r->header_len = r->claims_len = 0;
        if (r->header)
            r->header[0] = '\0';
        if (r->claims)
            r->claims[0] = '\0';
    }
    return rc;
}

void sluice_jwt_result_free(sluice_jwt_result *r)
{
    if (!r)
        return;
    free(r->header);
    free(r->claims);
    if (r->json) {
        sluice_schema_result_free(r->json);
        free(r->json);
    }
    memset(r, 0, sizeof *r);
}

/* ---- signing (HMAC) ----------------------------------------------------------------- */

static int object_member_ok(void *ud, parser *ps, const char *name, size_t nlen, const jval *v)
{
    (void)ud; (void)ps; (void)name; (void)nlen; (void)v;
    return SLUICE_OK;
}

int sluice_jwt_sign_hmac(unsigned alg, const char *kid, const void *secret, size_t secret_len,
                         const char *claims, size_t claims_len, char **out)
{
    const struct alg *a = NULL;
    for (size_t i = 0; i < NALGS; i++)
        if (ALGS[i].bit == alg && ALGS[i].sig == S_HMAC)
            a = &ALGS[i];
    if (!out || !a || !secret || secret_len < MIN_SECRET || (size_t)a->bits / 8 > secret_len ||
        !claims)
        return SLUICE_EINVAL;
    *out = NULL;
    sluice_schema_result scratch;
    memset(&scratch, 0, sizeof scratch);
    const unsigned char *cb = (const unsigned char *)claims;
    int rc = each_member(&scratch, cb, cb + claims_len, object_member_ok, NULL);
    sluice_schema_result_free(&scratch);
    if (rc)
        return rc == SLUICE_ENOMEM ? rc : SLUICE_EINVAL;

    size_t kid_len = kid ? strlen(kid) : 0;
    char *header = malloc(64 + 6 * kid_len);
    if (!header)
        return SLUICE_ENOMEM;
    size_t hl = (size_t)sprintf(header, "{\"alg\":\"%s\",\"typ\":\"JWT\"", a->name);
    if (kid) {
        hl += (size_t)sprintf(header + hl, ",\"kid\":");
        hl += sluice_json_write_string(header + hl, kid, kid_len);
    }
    header[hl++] = '}';
    size_t cap = (hl + claims_len) * 4 / 3 + 8 + 2 * 4 * EVP_MAX_MD_SIZE / 3 + 8;
    char *tok = malloc(cap);
    if (!tok) {
        free(header);
        return SLUICE_ENOMEM;
    }
    size_t n = b64url_encode((const unsigned char *)header, hl, tok);
    free(header);
    tok[n++] = '.';
    n += b64url_encode((const unsigned char *)claims, claims_len, tok + n);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned mac_len = 0;
    if (!HMAC(digest(a->bits), secret, (int)secret_len, (const unsigned char *)tok, n, mac,
              &mac_len)) {
        free(tok);
        return SLUICE_ENOMEM;
    }
    tok[n++] = '.';
    n += b64url_encode(mac, mac_len, tok + n);
    tok[n] = '\0';
    *out = tok;
    return SLUICE_OK;
}
