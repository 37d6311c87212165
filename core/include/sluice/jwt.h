/* JSON Web Tokens (RFC 7519) in the compact JWS form (RFC 7515), verified
 * with OpenSSL: HS256/384/512, RS256/384/512, PS256/384/512, ES256/384/512
 * and EdDSA (Ed25519, Ed448). Keys come from a JWK Set (RFC 7517), PEM
 * public keys or HMAC secrets.
 *
 * A key is only ever used with the algorithms of its type (an RSA key never
 * checks an HS256 MAC: no key confusion), and with its JWK "alg" when it
 * has one. "none" is never accepted. Parsing is strict: base64url without
 * padding or stray bits, header and claims objects in strict JSON (see
 * sluice/schema.h) with no member given twice, no "crit" header. */
#ifndef SLUICE_JWT_H
#define SLUICE_JWT_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Why a token was refused (0: it was not). */
enum sluice_jwt_error {
    SLUICE_JWT_OK = 0,
    SLUICE_JWT_MALFORMED,   /* not three base64url parts of JSON objects */
    SLUICE_JWT_TOOBIG,      /* longer than the options allow */
    SLUICE_JWT_ALGORITHM,   /* "none", unknown, not allowed, or crit */
    SLUICE_JWT_KEY,         /* no key for its kid / algorithm */
    SLUICE_JWT_SIGNATURE,   /* the signature does not verify */
    SLUICE_JWT_INVALID,     /* a claim of the wrong type, a required one absent */
    SLUICE_JWT_EXPIRED,     /* exp is past */
    SLUICE_JWT_EARLY,       /* nbf or iat is in the future */
    SLUICE_JWT_ISSUER,      /* iss is not the expected one */
    SLUICE_JWT_AUDIENCE,    /* aud names none of the expected audiences */
    SLUICE_JWT_NOMEM
};
/* "MALFORMED", "EXPIRED", … for the `nil, "CODE: message", "CODE"` style. */
const char *sluice_jwt_error_name(int code);

/* Algorithm bits, for sluice_jwt_options.algorithms. */
enum sluice_jwt_alg {
    SLUICE_JWT_HS256 = 1 << 0, SLUICE_JWT_HS384 = 1 << 1, SLUICE_JWT_HS512 = 1 << 2,
    SLUICE_JWT_RS256 = 1 << 3, SLUICE_JWT_RS384 = 1 << 4, SLUICE_JWT_RS512 = 1 << 5,
    SLUICE_JWT_PS256 = 1 << 6, SLUICE_JWT_PS384 = 1 << 7, SLUICE_JWT_PS512 = 1 << 8,
    SLUICE_JWT_ES256 = 1 << 9, SLUICE_JWT_ES384 = 1 << 10, SLUICE_JWT_ES512 = 1 << 11,
    SLUICE_JWT_EDDSA = 1 << 12
};
/* The bit of an algorithm name ("RS256"), or 0 if unsupported. */
unsigned sluice_jwt_alg_bit(const char *name);

typedef struct sluice_jwt_keys sluice_jwt_keys;

int sluice_jwt_keys_new(sluice_jwt_keys **out);
void sluice_jwt_keys_free(sluice_jwt_keys *k);
size_t sluice_jwt_keys_count(const sluice_jwt_keys *k);
/* Adds every signing key of a JWK Set ({"keys": [...]}) or of a single JWK.
 * Keys of a type sluice does not know, with "use" other than "sig" or an
 * "alg" it does not verify, are skipped (RFC 7517 5); *skipped (if not NULL) counts them. SLUICE_OK,
 * SLUICE_EMALFORMED (not JSON) or SLUICE_EINVAL (a key that cannot be
 * used: a bad modulus, a point not on its curve, an RSA key under 2048
 * bits, a secret under 32 bytes…), the reason in err. Nothing is added
 * unless the whole set is good. */
int sluice_jwt_keys_add_jwks(sluice_jwt_keys *k, const char *json, size_t len,
                             size_t *skipped, char *err, size_t errlen);
/* An HMAC secret (at least 32 bytes), for HS* tokens. kid may be NULL. */
int sluice_jwt_keys_add_secret(sluice_jwt_keys *k, const char *kid, const void *secret,
                               size_t len, char *err, size_t errlen);
/* A PEM public key ("-----BEGIN PUBLIC KEY-----": RSA, EC or Ed25519/448). */
int sluice_jwt_keys_add_pem(sluice_jwt_keys *k, const char *kid, const char *pem,
                            size_t len, char *err, size_t errlen);

typedef struct sluice_jwt_options {
    unsigned algorithms;       /* SLUICE_JWT_* bits allowed; 0: all */
    const char *issuer;        /* NULL: any (or none) */
    const char *const *audiences;  /* naudiences accepted; 0: aud not checked */
    size_t naudiences;
    double leeway;             /* seconds of clock skew allowed for exp/nbf/iat */
    double now;                /* Unix time to check against; 0: the clock */
    int require_exp;           /* a token without exp is INVALID */
    size_t max_length;         /* longest token accepted; 0: 8 KiB */
} sluice_jwt_options;

/* What a verification produces; reused from call to call (buffers grow as
 * needed), released with sluice_jwt_result_free. */
typedef struct sluice_jwt_result {
    char *header, *claims;     /* the decoded JSON texts (NUL-terminated) */
    size_t header_len, claims_len;
    size_t header_cap, claims_cap;
    void *json;                /* the parser's scratch (internal) */
    char error[200];           /* why it was refused */
} sluice_jwt_result;

/* SLUICE_JWT_OK: the token is authentic and its claims are valid now;
 * result holds its header and claims as JSON text. Otherwise a
 * SLUICE_JWT_* code with the reason in result->error. */
int sluice_jwt_verify(const char *token, size_t len, const sluice_jwt_keys *keys,
                      const sluice_jwt_options *o, sluice_jwt_result *result);
void sluice_jwt_result_free(sluice_jwt_result *result);

/* A token for claims (a JSON object's text, taken as it is) signed with an
 * HMAC secret: alg is SLUICE_JWT_HS256, _HS384 or _HS512; kid may be NULL.
 * Writes a malloc'd NUL-terminated token to *out. SLUICE_OK, SLUICE_EINVAL
 * (another alg, a secret under 32 bytes, claims not an object) or
 * SLUICE_ENOMEM. */
int sluice_jwt_sign_hmac(unsigned alg, const char *kid, const void *secret, size_t secret_len,
                         const char *claims, size_t claims_len, char **out);

#ifdef __cplusplus
}
#endif
#endif
