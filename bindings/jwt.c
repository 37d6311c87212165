/* sluice.jwt: JSON Web Token verification (core/src/jwt.c) for Lua. The
 * Lua library (scripts/sluice/jwt.lua) reads files, checks option names
 * and decodes the JSON texts returned here.
 *
 *   core.jwt_keys() → keys (empty)
 *   keys:add_jwks(text) → number added | nil, "INVALID: …" / "MALFORMED: …"
 *   keys:add_secret(secret [, kid]) / keys:add_pem(text [, kid]) → true | nil, err, code
 *   keys:count() → n
 *   core.jwt_verify(token, keys|secret, options) → header_json, claims_json
 *       or nil, "EXPIRED: expired 12 s ago", "EXPIRED" (and the other codes)
 *   core.jwt_sign(claims_json, secret, alg, kid) → token
 */
#include <stdlib.h>
#include <string.h>

#include "sluice_lua.h"
#include "sluice/error.h"
#include "sluice/jwt.h"

typedef struct lua_jwt_keys {
    sluice_lua_handle h;       /* h.obj: the sluice_jwt_keys; no loop */
} lua_jwt_keys;

static void keys_free(void *obj) { sluice_jwt_keys_free(obj); }

static sluice_jwt_keys *check_keys(lua_State *L, int idx)
{
    return sluice_lua_handle_obj(L, idx, &sluice_lua_jwt_keys_type);
}

/* core.jwt_keys() → keys */
static int keys_new(lua_State *L)
{
    lua_jwt_keys *k = sluice_lua_handle_new(L, &sluice_lua_jwt_keys_type, sizeof *k, 0);
    sluice_jwt_keys *keys = NULL;
    if (sluice_jwt_keys_new(&keys) != SLUICE_OK) return sluice_lua_fail_core(L, SLUICE_ENOMEM, NULL);
    k->h.obj = keys;
    return 1;
}

/* A failure to load keys: bad key material is INVALID, text that is not
 * JSON MALFORMED. */
static int keys_result(lua_State *L, int rc, const char *err)
{
    if (rc == SLUICE_EINVAL) return sluice_lua_fail(L, "INVALID", "%s", err);
    return sluice_lua_result(L, rc, err);
}

static int keys_add_jwks(lua_State *L)
{
    sluice_jwt_keys *keys = check_keys(L, 1);
    size_t len, before = sluice_jwt_keys_count(keys);
    const char *text = luaL_checklstring(L, 2, &len);
    char err[256] = "";
    int rc = sluice_jwt_keys_add_jwks(keys, text, len, NULL, err, sizeof err);
    if (rc) return keys_result(L, rc, err);
    lua_pushinteger(L, (lua_Integer)(sluice_jwt_keys_count(keys) - before));
    return 1;
}

typedef int (*add_fn)(sluice_jwt_keys *k, const char *kid, const char *text, size_t len,
                      char *err, size_t errlen);

/* keys:add_secret(secret [, kid]) and keys:add_pem(text [, kid]) */
static int keys_add(lua_State *L, add_fn add)
{
    sluice_jwt_keys *keys = check_keys(L, 1);
    size_t len;
    const char *text = luaL_checklstring(L, 2, &len);
    const char *kid = luaL_optstring(L, 3, NULL);
    char err[256] = "";
    return keys_result(L, add(keys, kid, text, len, err, sizeof err), err);
}

static int add_secret(sluice_jwt_keys *k, const char *kid, const char *text, size_t len,
                      char *err, size_t errlen)
{
    return sluice_jwt_keys_add_secret(k, kid, text, len, err, errlen);
}

static int keys_add_secret(lua_State *L) { return keys_add(L, add_secret); }
static int keys_add_pem(lua_State *L) { return keys_add(L, sluice_jwt_keys_add_pem); }

static int keys_count(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)sluice_jwt_keys_count(check_keys(L, 1)));
    return 1;
}

static int keys_tostring(lua_State *L)
{
    lua_jwt_keys *k = sluice_lua_handle_get(L, 1, &sluice_lua_jwt_keys_type);
    if (k->h.obj)
        lua_pushfstring(L, "sluice.jwt.keys (%d): %p", (int)sluice_jwt_keys_count(k->h.obj), (void *)k);
    else
        lua_pushfstring(L, "sluice.jwt.keys (closed): %p", (void *)k);
    return 1;
}

/* The algorithms list of options at idx: names → bits; an unknown name
 * raises (misuse), as does an empty list. */
static unsigned opt_algorithms(lua_State *L, int idx)
{
    unsigned bits = 0;
    size_t i, n;
    lua_getfield(L, idx, "algorithms");
    if (lua_isnil(L, -1)) { lua_pop(L, 1); return 0; }
    if (!lua_istable(L, -1) || (n = sluice_rawlen(L, -1)) == 0)
        luaL_argerror(L, idx, "'algorithms' must be a non-empty list of names");
    for (i = 1; i <= n; i++) {
        const char *name;
        unsigned bit;
        lua_rawgeti(L, -1, (int)i);
        name = lua_tostring(L, -1);
        bit = lua_type(L, -1) == LUA_TSTRING ? sluice_jwt_alg_bit(name) : 0;
        if (!bit)
            luaL_argerror(L, idx, lua_pushfstring(L, "'algorithms': unknown algorithm '%s' "
                "(HS256/384/512, RS256/384/512, PS256/384/512, ES256/384/512, EdDSA)",
                name ? name : luaL_typename(L, -1)));
        bits |= bit;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return bits;
}

/* The aud option at idx: a string or a list of strings, into a Lua-owned
 * array (anchored on the stack until the call returns). */
static const char **opt_audiences(lua_State *L, int idx, size_t *n)
{
    const char **aud;
    size_t i;
    lua_getfield(L, idx, "aud");
    if (lua_isnil(L, -1)) { lua_pop(L, 1); *n = 0; return NULL; }
    if (lua_type(L, -1) == LUA_TSTRING) {
        aud = sluice_newuserdata(L, sizeof *aud);
        aud[0] = lua_tostring(L, -2);
        *n = 1;
        return aud;         /* the string and the array stay on the stack */
    }
    if (!lua_istable(L, -1) || (*n = sluice_rawlen(L, -1)) == 0)
        luaL_argerror(L, idx, "'aud' must be a string or a non-empty list of strings");
    aud = sluice_newuserdata(L, *n * sizeof *aud);
    for (i = 0; i < *n; i++) {
        lua_rawgeti(L, -2, (int)i + 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_argerror(L, idx, "'aud' must be a string or a non-empty list of strings");
        aud[i] = lua_tostring(L, -1);   /* anchored by the list */
        lua_pop(L, 1);
    }
    return aud;
}

/* core.jwt_verify(token, keys|secret, options) → header_json, claims_json */
static int jwt_verify(lua_State *L)
{
    size_t len;
    const char *token = luaL_checklstring(L, 1, &len);
    const sluice_jwt_keys *keys;
    sluice_jwt_keys *own = NULL;
    sluice_jwt_options o;
    sluice_jwt_result r;
    int rc;

    sluice_lua_opt_table(L, 3);
    memset(&o, 0, sizeof o);
    o.algorithms = opt_algorithms(L, 3);
    o.issuer = sluice_lua_opt_string(L, 3, "iss", NULL);
    o.leeway = sluice_lua_opt_number(L, 3, "leeway", 0, 0, 1e9);
    o.now = sluice_lua_opt_number(L, 3, "now", 0, 0, 1e12);
    o.require_exp = sluice_lua_opt_flag(L, 3, "require_exp", 1);
    o.max_length = (size_t)sluice_lua_opt_int(L, 3, "max_length", 8192, 16, 1 << 20);
    o.audiences = opt_audiences(L, 3, &o.naudiences);
    if (lua_type(L, 2) == LUA_TSTRING) {
        /* A bare secret: a key set of one for this call. */
        size_t slen;
        const char *secret = lua_tolstring(L, 2, &slen);
        char err[256] = "";
        if (sluice_jwt_keys_new(&own) != SLUICE_OK) return sluice_lua_fail_core(L, SLUICE_ENOMEM, NULL);
        if (sluice_jwt_keys_add_secret(own, NULL, secret, slen, err, sizeof err) != SLUICE_OK) {
            sluice_jwt_keys_free(own);
            return luaL_argerror(L, 2, err);
        }
        keys = own;
    } else keys = check_keys(L, 2);
    memset(&r, 0, sizeof r);
    rc = sluice_jwt_verify(token, len, keys, &o, &r);
    sluice_jwt_keys_free(own);
    if (rc != SLUICE_JWT_OK) {
        char error[sizeof r.error];
        memcpy(error, r.error, sizeof error);
        sluice_jwt_result_free(&r);
        return sluice_lua_fail(L, sluice_jwt_error_name(rc), "%s", error);
    }
    lua_pushlstring(L, r.header, r.header_len);
    lua_pushlstring(L, r.claims, r.claims_len);
    sluice_jwt_result_free(&r);
    return 2;
}

/* core.jwt_sign(claims_json, secret, alg, kid) → token */
static int jwt_sign(lua_State *L)
{
    size_t clen, slen;
    const char *claims = luaL_checklstring(L, 1, &clen);
    const char *secret = luaL_checklstring(L, 2, &slen);
    const char *alg = luaL_optstring(L, 3, "HS256");
    const char *kid = luaL_optstring(L, 4, NULL);
    unsigned bit = sluice_jwt_alg_bit(alg);
    char *token = NULL;
    int rc;
    if (!(bit & (SLUICE_JWT_HS256 | SLUICE_JWT_HS384 | SLUICE_JWT_HS512)))
        return luaL_argerror(L, 3, "HS256, HS384 or HS512 expected");
    if (slen < 32 || (bit == SLUICE_JWT_HS384 && slen < 48) || (bit == SLUICE_JWT_HS512 && slen < 64))
        return luaL_argerror(L, 2, lua_pushfstring(L, "a secret of at least %d bytes for %s",
            bit == SLUICE_JWT_HS256 ? 32 : bit == SLUICE_JWT_HS384 ? 48 : 64, alg));
    rc = sluice_jwt_sign_hmac(bit, kid, secret, slen, claims, clen, &token);
    if (rc == SLUICE_EINVAL) return luaL_argerror(L, 1, "claims must be a JSON object");
    if (rc) return sluice_lua_fail_core(L, rc, NULL);
    lua_pushstring(L, token);
    free(token);
    return 1;
}

static const luaL_Reg methods[] = {
    { "add_jwks", keys_add_jwks }, { "add_secret", keys_add_secret },
    { "add_pem", keys_add_pem }, { "count", keys_count }, { NULL, NULL }
};
static const luaL_Reg meta[] = { { "__tostring", keys_tostring }, { NULL, NULL } };
static const luaL_Reg functions[] = {
    { "jwt_keys", keys_new }, { "jwt_verify", jwt_verify }, { "jwt_sign", jwt_sign },
    { NULL, NULL }
};

const sluice_lua_type sluice_lua_jwt_keys_type = {
    .name = "sluice.jwt.keys", .free = keys_free, .closable = 1,
    .methods = methods, .meta = meta, .functions = functions,
};
