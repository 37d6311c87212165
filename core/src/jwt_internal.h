/* What the parts of sluice/jwt.h share: the algorithm table and the keys
 * (jwt.c verifies with them, jwt_keys.c loads them), and the strict
 * base64url and JSON object walk (jwt_parse.c) both parse tokens and JWKs
 * with. Not a public header. */
#ifndef SLUICE_JWT_INTERNAL_H
#define SLUICE_JWT_INTERNAL_H

#include <stddef.h>

#include <openssl/evp.h>

#include "json_internal.h"
#include "sluice/jwt.h"

/* The shortest HMAC secret taken: HS256's hash size (RFC 7518 3.2); the
 * longer hashes want longer secrets, checked where they are used. */
#define SLUICE_JWT_MIN_SECRET 32

/* ---- algorithms and keys (jwt.c, jwt_keys.c) ---- */

enum sluice_jwt_kind { K_OCT, K_RSA, K_EC, K_OKP };
enum sluice_jwt_sig { S_HMAC, S_RSA, S_PSS, S_ECDSA, S_EDDSA };

struct sluice_jwt_algorithm {
    const char *name;
    unsigned bit;
    enum sluice_jwt_sig sig;
    int bits;           /* digest size; for ECDSA also the curve's */
    int curve;          /* ECDSA: the key's curve */
};
extern const struct sluice_jwt_algorithm sluice_jwt_algs[];
extern const size_t sluice_jwt_nalgs;

/* The algorithm named name[0..len), or NULL. */
const struct sluice_jwt_algorithm *sluice_jwt_alg_named(const char *name, size_t len);

struct sluice_jwt_key {
    char *kid;                  /* NULL: none */
    enum sluice_jwt_kind kind;
    unsigned algs;              /* the algorithms it may check */
    EVP_PKEY *pkey;             /* RSA, EC, OKP */
    unsigned char *secret;      /* oct */
    size_t secret_len;
};

struct sluice_jwt_keys {
    struct sluice_jwt_key *keys;
    size_t n, cap;
};

/* ---- base64url and a strict JSON object walk (jwt_parse.c) ---- */

/* Decodes into out (room: 3 * len / 4 + 1); returns the length or -1. */
long sluice_jwt_b64url_decode(const char *in, size_t len, unsigned char *out);
/* Encodes into out (room: 4 * len / 3 + 4); returns the length. */
size_t sluice_jwt_b64url_encode(const unsigned char *in, size_t len, char *out);

enum sluice_jwt_jkind { J_STR, J_NUM, J_TRUE, J_FALSE, J_NULL, J_ARRAY, J_OBJECT };

typedef struct sluice_jwt_jval {
    enum sluice_jwt_jkind kind;
    double num;
    size_t off, len;                  /* a string: decoded, in ps->r->str */
    const unsigned char *begin, *end; /* an array or object: its text */
} jval;

typedef int (*sluice_jwt_member_fn)(void *ud, parser *ps, const char *name, size_t nlen,
                                    const jval *v);

/* Calls fn for each member of the object that is all of [begin, end)
 * (whitespace around it allowed). A member name given twice is
 * malformed: other parsers keep the first or the last. */
int sluice_jwt_each_member(sluice_schema_result *r, const unsigned char *begin,
                           const unsigned char *end, sluice_jwt_member_fn fn, void *ud);
/* Calls fn for each element of the array [begin, end), already validated. */
int sluice_jwt_each_element(sluice_schema_result *r, const unsigned char *begin,
                            const unsigned char *end,
                            int (*fn)(void *ud, parser *ps, const jval *v), void *ud);
/* Whether the member name name[0..nlen) is want. */
int sluice_jwt_is_name(const char *name, size_t nlen, const char *want);

#endif
