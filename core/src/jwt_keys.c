/* Key sets for sluice/jwt.h: HMAC secrets, PEM public keys and JWK Sets
 * (RFC 7517), each key bound to the algorithms of its type and checked
 * (RSA size, EC curve, the point on it) as it is loaded. */
#include "sluice/jwt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include "format_internal.h"
#include "jwt_internal.h"

#define MIN_RSA_BITS 2048

static const unsigned HMAC_ALGS = SLUICE_JWT_HS256 | SLUICE_JWT_HS384 | SLUICE_JWT_HS512;
static const unsigned RSA_ALGS = SLUICE_JWT_RS256 | SLUICE_JWT_RS384 | SLUICE_JWT_RS512 |
                                 SLUICE_JWT_PS256 | SLUICE_JWT_PS384 | SLUICE_JWT_PS512;

static void key_clear(struct sluice_jwt_key *k)
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


/* Which algorithms a public key can check: by type and curve. 0: none
 * (unsupported type or curve, or an RSA key too short). */
static unsigned pkey_algs(EVP_PKEY *pkey, enum sluice_jwt_kind *kind)
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
        for (size_t i = 0; i < sluice_jwt_nalgs; i++)
            if (sluice_jwt_algs[i].sig == S_ECDSA && sluice_jwt_algs[i].curve == nid)
                return sluice_jwt_algs[i].bit;
        return 0;
    }
    default:
        return 0;
    }
}

/* Appends the keys of `add` to k (all or nothing). */
static int keys_take(sluice_jwt_keys *k, struct sluice_jwt_key *add, size_t n)
{
    if (k->n + n > k->cap) {
        size_t cap = k->cap ? k->cap : 4;
        while (cap < k->n + n)
            cap *= 2;
        struct sluice_jwt_key *bigger = realloc(k->keys, cap * sizeof *bigger);
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
        return sluice_failf(err, errlen, SLUICE_EINVAL, "no key set or secret");
    if (len < SLUICE_JWT_MIN_SECRET)
        return sluice_failf(err, errlen, SLUICE_EINVAL,
                    "an HMAC secret needs at least %d bytes, got %zu", SLUICE_JWT_MIN_SECRET,
                    len);
    struct sluice_jwt_key key = { .kind = K_OCT, .algs = HMAC_ALGS, .secret_len = len };
    key.secret = OPENSSL_malloc(len);
    key.kid = kid ? dup_n(kid, strlen(kid)) : NULL;
    if (!key.secret || (kid && !key.kid) || keys_take(k, &key, 1)) {
        key_clear(&key);
        return sluice_failf(err, errlen, SLUICE_ENOMEM, "out of memory");
    }
    memcpy(k->keys[k->n - 1].secret, secret, len);
    return SLUICE_OK;
}

int sluice_jwt_keys_add_pem(sluice_jwt_keys *k, const char *kid, const char *pem,
                            size_t len, char *err, size_t errlen)
{
    if (!k || !pem || len > (size_t)1 << 20)
        return sluice_failf(err, errlen, SLUICE_EINVAL, "no key set or PEM text");
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *pkey = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    if (!pkey)
        return sluice_failf(err, errlen, SLUICE_EINVAL, "not a PEM public key (BEGIN PUBLIC KEY)");
    struct sluice_jwt_key key = { .pkey = pkey };
    key.algs = pkey_algs(pkey, &key.kind);
    if (!key.algs) {
        key_clear(&key);
        return sluice_failf(err, errlen, SLUICE_EINVAL,
                    "unsupported public key (RSA of %d bits or more, EC P-256/384/521, "
                    "Ed25519 or Ed448)", MIN_RSA_BITS);
    }
    key.kid = kid ? dup_n(kid, strlen(kid)) : NULL;
    if ((kid && !key.kid) || keys_take(k, &key, 1)) {
        key_clear(&key);
        return sluice_failf(err, errlen, SLUICE_ENOMEM, "out of memory");
    }
    return SLUICE_OK;
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
    if (sluice_jwt_is_name(name, nlen, #f)) {                                         \
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
    long n = out ? sluice_jwt_b64url_decode(r->str + v->off, v->len, out) : -1;
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
    struct sluice_jwt_key *keys;
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
    int rc = sluice_jwt_each_member(r, begin, end, jwk_member, &j);
    if (rc == SLUICE_EMALFORMED)
        return sluice_failf(l->err, l->errlen, SLUICE_EMALFORMED, "JWK: %s", r->error);
    if (rc)
        return rc;
    if (!j.has_kty)
        return sluice_failf(l->err, l->errlen, SLUICE_EINVAL, "a JWK without \"kty\"");
    /* Not for signatures, or for an algorithm sluice does not verify
     * (RSA-OAEP, ...): skipped, as a key of an unknown type is. */
    if ((j.has_use && !str_is(r, &j.use, "sig")) ||
        (j.has_alg && !sluice_jwt_alg_named(r->str + j.alg.off, j.alg.len))) {
        l->skipped++;
        return SLUICE_OK;
    }
    struct sluice_jwt_key key;
    memset(&key, 0, sizeof key);
    const char *what;
    if (str_is(r, &j.kty, "oct")) {
        what = "oct";
        key.kind = K_OCT;
        key.algs = HMAC_ALGS;
        size_t len = 0;
        unsigned char *k = j.has_k ? b64_member(r, &j.k, &len) : NULL;
        if (k && len >= SLUICE_JWT_MIN_SECRET) {
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
            return sluice_failf(l->err, l->errlen, SLUICE_EINVAL,
                        "an oct JWK needs \"k\": a base64url secret of at least %d bytes",
                        SLUICE_JWT_MIN_SECRET);
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
            return sluice_failf(l->err, l->errlen, SLUICE_EINVAL,
                        "a %s JWK that is not a valid public key (n/e, crv/x/y)", what);
        key.algs = pkey_algs(key.pkey, &key.kind);
        if (!key.algs) {
            key_clear(&key);
            return sluice_failf(l->err, l->errlen, SLUICE_EINVAL,
                        "an unsupported %s key (RSA needs %d bits or more; curves: P-256, "
                        "P-384, P-521, Ed25519, Ed448)", what, MIN_RSA_BITS);
        }
    }
    if (j.has_alg) {
        const struct sluice_jwt_algorithm *a = sluice_jwt_alg_named(r->str + j.alg.off, j.alg.len);
        if (!(a->bit & key.algs)) {
            key_clear(&key);
            return sluice_failf(l->err, l->errlen, SLUICE_EINVAL,
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
        struct sluice_jwt_key *bigger = realloc(l->keys, cap * sizeof *bigger);
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
    if (sluice_jwt_is_name(name, nlen, "keys")) {
        t->keys = *v;
        t->has_keys = 1;
    } else if (sluice_jwt_is_name(name, nlen, "kty")) {
        t->has_kty = 1;
    }
    return SLUICE_OK;
}

int sluice_jwt_keys_add_jwks(sluice_jwt_keys *k, const char *json, size_t len,
                             size_t *skipped, char *err, size_t errlen)
{
    if (!k || !json)
        return sluice_failf(err, errlen, SLUICE_EINVAL, "no key set or JWKS text");
    if (err && errlen)
        err[0] = '\0';
    sluice_schema_result r;
    memset(&r, 0, sizeof r);
    struct jwks_top top;
    memset(&top, 0, sizeof top);
    struct jwks_load l = { .r = &r, .err = err, .errlen = errlen };
    const unsigned char *b = (const unsigned char *)json, *e = b + len;
    int rc = sluice_jwt_each_member(&r, b, e, jwks_member, &top);
    if (rc == SLUICE_EMALFORMED)
        sluice_failf(err, errlen, rc, "%s", r.error);
    else if (!rc && top.has_keys && top.keys.kind == J_ARRAY) {
        /* each_element parses into a scratch of its own: the top level's
         * strings are done with. */
        sluice_schema_result inner;
        memset(&inner, 0, sizeof inner);
        l.r = &inner;
        rc = sluice_jwt_each_element(&inner, top.keys.begin, top.keys.end, jwks_element, &l);
        if (rc == SLUICE_EMALFORMED && inner.error[0] && (!err || !err[0]))
            sluice_failf(err, errlen, rc, "%s", inner.error);
        sluice_schema_result_free(&inner);
    } else if (!rc && top.has_kty) {
        rc = load_jwk(&l, b, e);        /* a single JWK */
    } else if (!rc) {
        rc = sluice_failf(err, errlen, SLUICE_EINVAL, "a JWK Set needs a \"keys\" array");
    }
    if (!rc && l.n == 0)
        rc = sluice_failf(err, errlen, SLUICE_EINVAL, "no signing key in this JWK Set (%zu skipped)",
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
