/* JSON Web Tokens: verification of the compact form (its parts parsed in
 * jwt_parse.c, checked with keys from jwt_keys.c), the time, issuer and
 * audience claims, and HMAC signing. See sluice/jwt.h for what is accepted. */
#include "sluice/jwt.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/obj_mac.h>
#include <openssl/rsa.h>

#include "jwt_internal.h"

#define DEFAULT_MAX_LENGTH 8192

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

/* ---- algorithms ------------------------------------------------------------ */

const struct sluice_jwt_algorithm sluice_jwt_algs[] = {
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
const size_t sluice_jwt_nalgs = sizeof sluice_jwt_algs / sizeof *sluice_jwt_algs;

const struct sluice_jwt_algorithm *sluice_jwt_alg_named(const char *name, size_t len)
{
    for (size_t i = 0; i < sluice_jwt_nalgs; i++) {
        const struct sluice_jwt_algorithm *a = &sluice_jwt_algs[i];
        if (strlen(a->name) == len && memcmp(a->name, name, len) == 0)
            return a;
    }
    return NULL;
}

unsigned sluice_jwt_alg_bit(const char *name)
{
    const struct sluice_jwt_algorithm *a = name ? sluice_jwt_alg_named(name, strlen(name)) : NULL;
    return a ? a->bit : 0;
}

static const EVP_MD *digest(int bits)
{
    return bits == 256 ? EVP_sha256() : bits == 384 ? EVP_sha384() : EVP_sha512();
}

/* ---- signatures ------------------------------------------------------------------- */

static int verify_sig(const struct sluice_jwt_algorithm *a, const struct sluice_jwt_key *k,
                      const unsigned char *tbs, size_t tbs_len, const unsigned char *sig,
                      size_t sig_len)
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
    const struct sluice_jwt_algorithm *alg;
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
    if (sluice_jwt_is_name(name, nlen, "alg")) {
        if (v->kind != J_STR)
            return sluice_json_malformed(ps, "\"alg\" is not a string");
        h->has_alg = 1;
        h->alg = sluice_jwt_alg_named(s, v->len);
        h->alg_none = v->len == 4 && strncasecmp(s, "none", 4) == 0;
        size_t n = v->len < sizeof h->alg_text - 1 ? v->len : sizeof h->alg_text - 1;
        for (size_t i = 0; i < n; i++)
            h->alg_text[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
        h->alg_text[n] = '\0';
    } else if (sluice_jwt_is_name(name, nlen, "kid")) {
        if (v->kind != J_STR)
            return sluice_json_malformed(ps, "\"kid\" is not a string");
        h->has_kid = 1;
        h->kid_too_long = v->len >= sizeof h->kid;
        if (!h->kid_too_long) {
            memcpy(h->kid, s, v->len);
            h->kid[v->len] = '\0';
            h->kid_len = v->len;
        }
    } else if (sluice_jwt_is_name(name, nlen, "crit")) {
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
    if (sluice_jwt_is_name(name, nlen, "exp")) { num = &c->exp; has = &c->has_exp; }
    else if (sluice_jwt_is_name(name, nlen, "nbf")) { num = &c->nbf; has = &c->has_nbf; }
    else if (sluice_jwt_is_name(name, nlen, "iat")) { num = &c->iat; has = &c->has_iat; }
    if (num) {
        if (v->kind != J_NUM) {
            c->bad = c->bad ? c->bad : num == &c->exp ? "exp" : num == &c->nbf ? "nbf" : "iat";
            return SLUICE_OK;
        }
        *num = v->num;
        *has = 1;
    } else if (sluice_jwt_is_name(name, nlen, "iss")) {
        c->has_iss = 1;
        if (v->kind != J_STR)
            c->bad = c->bad ? c->bad : "iss";
        else if (c->o->issuer)
            c->iss_ok = strlen(c->o->issuer) == v->len &&
                        memcmp(c->o->issuer, ps->r->str + v->off, v->len) == 0;
    } else if (sluice_jwt_is_name(name, nlen, "aud")) {
        c->has_aud = 1;
        if (v->kind == J_STR)
            c->aud_ok = aud_matches(c, ps->r->str + v->off, v->len);
        else if (v->kind == J_ARRAY) {
            /* A scratch of its own: the caller's strings stay put. */
            sluice_schema_result inner;
            memset(&inner, 0, sizeof inner);
            int rc = sluice_jwt_each_element(&inner, v->begin, v->end, aud_element, c);
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
    long n = sluice_jwt_b64url_decode(b, (size_t)(e - b), (unsigned char *)*buf);
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
    int rc = sluice_jwt_each_member(scratch, b, b + r->claims_len, claims_member, &c);
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
    if ((n = sluice_jwt_b64url_decode(d2 + 1, sig_text, sig)) < 0)
        return fail(r, SLUICE_JWT_MALFORMED, "signature: invalid base64url");
    size_t sig_len = (size_t)n;

    struct header h;
    memset(&h, 0, sizeof h);
    const unsigned char *hb = (const unsigned char *)r->header;
    int rc = sluice_jwt_each_member(scratch, hb, hb + r->header_len, header_member, &h);
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
        const struct sluice_jwt_key *k = &keys->keys[i];
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
    const struct sluice_jwt_algorithm *a = NULL;
    for (size_t i = 0; i < sluice_jwt_nalgs; i++)
        if (sluice_jwt_algs[i].bit == alg && sluice_jwt_algs[i].sig == S_HMAC)
            a = &sluice_jwt_algs[i];
    if (!out || !a || !secret || secret_len < SLUICE_JWT_MIN_SECRET ||
        (size_t)a->bits / 8 > secret_len || !claims)
        return SLUICE_EINVAL;
    *out = NULL;
    sluice_schema_result scratch;
    memset(&scratch, 0, sizeof scratch);
    const unsigned char *cb = (const unsigned char *)claims;
    int rc = sluice_jwt_each_member(&scratch, cb, cb + claims_len, object_member_ok, NULL);
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
    size_t n = sluice_jwt_b64url_encode((const unsigned char *)header, hl, tok);
    free(header);
    tok[n++] = '.';
    n += sluice_jwt_b64url_encode((const unsigned char *)claims, claims_len, tok + n);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned mac_len = 0;
    if (!HMAC(digest(a->bits), secret, (int)secret_len, (const unsigned char *)tok, n, mac,
              &mac_len)) {
        free(tok);
        return SLUICE_ENOMEM;
    }
    tok[n++] = '.';
    n += sluice_jwt_b64url_encode(mac, mac_len, tok + n);
    tok[n] = '\0';
    *out = tok;
    return SLUICE_OK;
}
