/* JWT parsing and verification (core/src/jwt.c). The first byte picks:
 * even: the rest is a token, verified against a fixed key set (an HMAC
 * secret, an EC P-256 key, an Ed25519 key); an accepted token has a JSON
 * object for header and claims, and with any character of its signature
 * changed it is refused. odd: the rest is a JWK Set; an accepted set adds
 * at least one key, and a refused one adds none. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/error.h"
#include "sluice/jwt.h"

/* corpus/jwt/seed-* tokens are signed with this secret. */
#define SECRET "sluice-fuzz-secret-0123456789-abcdefghijklmnopqrstuv"
/* Public halves of the keys that signed corpus/jwt/seed-es256 and
 * seed-eddsa (made with node:crypto; the private halves were discarded). */
static const char JWKS[] =
    "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"ec\","
    "\"x\":\"PWMX2vpdVcrUIJ_jfSx38iPB5_WOTWUpsW0YvbXrSA8\","
    "\"y\":\"JpfVJNbP7n8_MfuG_lfnYwvaumcNj2sPzSCe2c6Lijk\"},"
    "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"ed\","
    "\"x\":\"kzSlz_kIwRbs4w5CXUBHTWq-_MmxuyzH7_KrjQ5-YZI\"}]}";

static sluice_jwt_keys *keys;

static void verify(const char *token, size_t len)
{
    sluice_jwt_options o = { .now = 1800000000, .require_exp = 0, .max_length = 4096 };
    sluice_jwt_result r;
    memset(&r, 0, sizeof r);
    int rc = sluice_jwt_verify(token, len, keys, &o, &r);
    if (rc < 0 || !sluice_jwt_error_name(rc) || (rc && !r.error[0]))
        abort();
    if (rc == SLUICE_JWT_OK) {
        if (!r.header_len || !r.claims_len || strlen(r.header) != r.header_len)
            abort();
        const char *sig = memrchr(token, '.', len);
        char *copy = malloc(len);
        if (!sig || !copy)
            abort();
        for (size_t i = (size_t)(sig - token) + 1; i < len; i++) {
            memcpy(copy, token, len);
            copy[i] = copy[i] == 'A' ? 'B' : 'A';
            sluice_jwt_result r2;
            memset(&r2, 0, sizeof r2);
            if (sluice_jwt_verify(copy, len, keys, &o, &r2) == SLUICE_JWT_OK)
                abort();
            sluice_jwt_result_free(&r2);
        }
        free(copy);
    }
    sluice_jwt_result_free(&r);
}

static void load(const char *text, size_t len)
{
    sluice_jwt_keys *k = NULL;
    char err[256] = "";
    if (sluice_jwt_keys_new(&k))
        abort();
    int rc = sluice_jwt_keys_add_jwks(k, text, len, NULL, err, sizeof err);
    if (rc == SLUICE_OK ? sluice_jwt_keys_count(k) == 0 : sluice_jwt_keys_count(k) != 0 || !err[0])
        abort();
    sluice_jwt_keys_free(k);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!keys) {
        char err[256];
        if (sluice_jwt_keys_new(&keys) ||
            sluice_jwt_keys_add_secret(keys, "hs", SECRET, strlen(SECRET), err, sizeof err) ||
            sluice_jwt_keys_add_jwks(keys, JWKS, strlen(JWKS), NULL, err, sizeof err))
            abort();
    }
    if (size < 1)
        return 0;
    if (data[0] & 1)
        load((const char *)data + 1, size - 1);
    else
        verify((const char *)data + 1, size - 1);
    return 0;
}
