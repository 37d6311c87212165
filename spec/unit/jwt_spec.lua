-- sluice.jwt (scripts/sluice/jwt.lua, bindings/jwt.c, core/src/jwt.c):
-- tokens and keys made by an independent library (npm jose, through
-- spec/clients/jwt.mjs), one valid token per algorithm, and the attacks.
local sluice = require "sluice"
local cjson = require "cjson"
local jwt = sluice.jwt

local function fixtures()
  local node = os.getenv("SLUICE_NODE") or "node"
  local p = assert(io.popen(node .. " spec/clients/jwt.mjs"))
  local out = p:read("*a")
  p:close()
  assert(out ~= "", "spec/clients/jwt.mjs printed nothing (npm ci in spec/clients?)")
  return cjson.decode(out)
end

local F = fixtures()
local T = F.tokens
local KEYS = assert(jwt.keys { jwks = cjson.encode(F.jwks) })
local OPTS = { iss = "https://issuer.test", aud = "sluice" }

local function refused(token, keys, opts)
  return { jwt.verify(token, keys or KEYS, opts or OPTS) }
end

describe("sluice.jwt.verify", function()
  it("accepts a token of every algorithm, signed by jose, and returns its claims and header", function()
    -- 6 keys: the encryption key and the unknown type are skipped.
    assert.equal(6, KEYS:count())
    for _, alg in ipairs { "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384",
                           "PS512", "ES256", "ES384", "ES512", "EdDSA" } do
      local claims, header = jwt.verify(T[alg], KEYS, OPTS)
      assert.is_table(claims, alg)
      assert.equal("user-1", claims.sub)
      assert.same({ "reader", "writer" }, claims.roles)
      assert.equal(42, claims.n)
      assert.equal(F.now + 3600, claims.exp)
      assert.equal(alg, header.alg)
    end
    -- No kid: every key of the algorithm's type is tried.
    assert.equal("user-1", jwt.verify(T.no_kid, KEYS, OPTS).sub)
  end)

  it("takes a bare secret, a PEM key, a JWKS file, and several sources at once", function()
    assert.equal("Ada", jwt.verify(T.bare_secret, F.secret, OPTS).name)
    local pem = assert(jwt.keys { pem = F.pem, kid = "rsa" })
    assert.equal("Ada", jwt.verify(T.RS256, pem, OPTS).name)
    local ecpem = assert(jwt.keys { pem = F.ec_pem })
    assert.equal("Ada", jwt.verify(T.ES256_pem, ecpem, OPTS).name)
    local path = os.tmpname()
    local f = assert(io.open(path, "wb")); f:write(cjson.encode(F.jwks)); f:close()
    local both = assert(jwt.keys { { file = path }, { secret = F.secret, kid = "hs2" } })
    os.remove(path)
    assert.equal(7, both:count())
    assert.equal("Ada", jwt.verify(T.EdDSA, both, OPTS).name)
  end)

  it("refuses alg none, whatever the keys", function()
    assert.same({ nil, 'ALGORITHM: alg "none" (an unsigned token) is never accepted', "ALGORITHM" },
      refused(T.none))
    assert.same({ nil, 'ALGORITHM: alg "none" (an unsigned token) is never accepted', "ALGORITHM" },
      refused(T.none, F.secret))
  end)

  it("refuses HS256 made with an RSA public key as the secret (key confusion)", function()
    -- The RSA key never serves as a secret: with no kid only the set's
    -- secret is tried; naming the RSA key's kid finds no secret at all.
    assert.same({ nil, "SIGNATURE: signature does not verify", "SIGNATURE" }, refused(T.confusion_pem))
    assert.same({ nil, "KEY: no secret key for alg HS256 with this kid", "KEY" }, refused(T.confusion_kid))
    local pem = assert(jwt.keys { pem = F.pem })
    assert.same({ nil, "KEY: no secret key for alg HS256", "KEY" }, refused(T.confusion_pem, pem))
    assert.same({ nil, "KEY: no secret key for alg HS256", "KEY" }, refused(T.confusion_kid, pem))
    -- An EC token naming the RSA key's kid.
    assert.same({ nil, "KEY: no EC key for alg ES256 with this kid", "KEY" }, refused(T.es256_by_rsa_kid))
  end)

  it("refuses tampered claims and signatures, and another key's signature", function()
    for _, name in ipairs { "tampered_payload", "tampered_signature", "tampered_es256", "wrong_key" } do
      assert.same({ nil, "SIGNATURE: signature does not verify", "SIGNATURE" }, refused(T[name]), name)
    end
    -- Same bytes, another text: a signature whose last character carries
    -- stray bits is not the same signature.
    local h, p, s = T.HS256:match("^([^.]+)%.([^.]+)%.([^.]+)$")
    local last = s:sub(-1)
    local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    local i = alphabet:find(last, 1, true)
    local sibling = alphabet:sub(i + 1, i + 1)   -- HS256: 43 characters, 2 stray bits
    assert.same({ nil, "MALFORMED: signature: invalid base64url", "MALFORMED" },
      refused(h .. "." .. p .. "." .. s:sub(1, -2) .. sibling))
  end)

  it("checks exp, nbf and iat with leeway", function()
    local claims, err, code = jwt.verify(T.expired, KEYS, OPTS)
    assert.is_nil(claims)
    assert.equal("EXPIRED", code)
    assert.matches("^EXPIRED: expired 1[2-9]%d s ago$", err)
    assert.equal("EXPIRED", refused(T.expired_30s)[3])
    assert.equal("Ada", jwt.verify(T.expired_30s, KEYS, { iss = OPTS.iss, aud = "sluice", leeway = 60 }).name)
    assert.equal("EARLY", refused(T.not_yet)[3])
    assert.matches("^EARLY: not valid for another %d+ s %(nbf%)$", refused(T.not_yet)[2])
    assert.matches("^EARLY: issued %d+ s in the future %(iat%)$", refused(T.future_iat)[2])
    -- A clock of the caller's choice.
    assert.equal("Ada", jwt.verify(T.expired, KEYS, { now = F.now - 3600, iss = OPTS.iss, aud = "sluice" }).name)
    assert.same({ nil, "INVALID: no exp claim (the token would never expire)", "INVALID" }, refused(T.no_exp, KEYS, {}))
    assert.equal("Ada", jwt.verify(T.no_exp, KEYS, { require_exp = false }).name)
    assert.same({ nil, "INVALID: exp has the wrong type", "INVALID" }, refused(T.exp_string, KEYS, {}))
  end)

  it("checks iss and aud", function()
    assert.same({ nil, "AUDIENCE: aud names none of the expected audiences", "AUDIENCE" }, refused(T.wrong_aud))
    assert.same({ nil, "AUDIENCE: no aud claim", "AUDIENCE" }, refused(T.no_aud))
    assert.equal("Ada", jwt.verify(T.aud_list, KEYS, OPTS).name)
    assert.equal("Ada", jwt.verify(T.wrong_aud, KEYS, { aud = { "x", "someone-else" } }).name)
    assert.same({ nil, "ISSUER: iss is not the expected issuer", "ISSUER" }, refused(T.wrong_iss))
    -- Not asked: not checked.
    assert.equal("Ada", jwt.verify(T.wrong_iss, KEYS, {}).name)
  end)

  it("selects keys by kid; an unknown kid or a skipped key is refused", function()
    assert.same({ nil, 'KEY: no key with kid "nobody"', "KEY" }, refused(T.unknown_kid))
    assert.same({ nil, 'KEY: no key with kid "enc"', "KEY" }, refused(T.enc_kid))
    -- A JWKS of another key under the same kid.
    local wrong = assert(jwt.keys { jwks = cjson.encode(F.wrong_jwks) })
    assert.same({ nil, "SIGNATURE: signature does not verify", "SIGNATURE" }, refused(T.RS256, wrong))
    -- A JWK bound to ES256 by its "alg" checks nothing else.
    assert.equal("ES256", select(2, jwt.verify(T.ES256, KEYS, OPTS)).alg)
  end)

  it("allows only the algorithms asked for", function()
    assert.same({ nil, "ALGORITHM: alg HS256 is not allowed here", "ALGORITHM" },
      refused(T.HS256, KEYS, { algorithms = { "RS256", "EdDSA" } }))
    assert.equal("Ada", jwt.verify(T.EdDSA, KEYS, { algorithms = { "RS256", "EdDSA" } }).name)
    assert.same({ nil, "ALGORITHM: header: \"crit\" extensions are not supported", "ALGORITHM" },
      refused(T.crit, KEYS, {}))
  end)

  it("refuses oversize and malformed tokens precisely", function()
    local big = refused(T.oversize)
    assert.equal("TOOBIG", big[3])
    assert.equal(("TOOBIG: token of %d bytes, more than 8192"):format(#T.oversize), big[2])
    assert.equal("Ada", jwt.verify(T.oversize, KEYS, { max_length = 16384, iss = OPTS.iss, aud = "sluice" }).name)
    local h, p, s = T.HS256:match("^([^.]+)%.([^.]+)%.([^.]+)$")
    local function b64(text)   -- base64url of text, for hand-made headers
      local a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
      local out = {}
      for i = 1, #text, 3 do
        local b1, b2, b3 = text:byte(i, i + 2)
        local n = b1 * 65536 + (b2 or 0) * 256 + (b3 or 0)
        local c = { math.floor(n / 262144) % 64, math.floor(n / 4096) % 64, math.floor(n / 64) % 64, n % 64 }
        local k = b3 and 4 or b2 and 3 or 2
        for j = 1, k do out[#out + 1] = a:sub(c[j] + 1, c[j] + 1) end
      end
      return table.concat(out)
    end
    local cases = {
      { "", "MISSING: no token" },
      { "abc", "MALFORMED: not three dot-separated parts (JWS compact form)" },
      { h .. "." .. p, "MALFORMED: not three dot-separated parts (JWS compact form)" },
      { T.HS256 .. ".x", "MALFORMED: not three dot-separated parts (JWS compact form)" },
      { h .. "=." .. p .. "." .. s, "MALFORMED: header: invalid base64url" },
      { h .. "." .. p .. "!" .. "." .. s, "MALFORMED: claims: invalid base64url" },
      { h .. "." .. p .. ".", "SIGNATURE: no signature" },
      { b64("[1]") .. "." .. p .. "." .. s, "MALFORMED: header: expected '{' at byte 1" },
      { b64('{"alg":"HS256","alg":"none"}') .. "." .. p .. "." .. s, "MALFORMED: header: member given twice at byte 16" },
      { b64('{"typ":"JWT"}') .. "." .. p .. "." .. s, 'MALFORMED: header: no "alg"' },
      { b64('{"alg":"HS1"}') .. "." .. p .. "." .. s, 'ALGORITHM: alg "HS1" is not supported' },
      { b64('{"alg":"NONE"}') .. "." .. p .. "." .. s, 'ALGORITHM: alg "none" (an unsigned token) is never accepted' },
      { b64('{"alg":"HS256"} x') .. "." .. p .. "." .. s, "MALFORMED: header: text after the object at byte 17" },
      { b64('{"alg":"HS256","kid":7}') .. "." .. p .. "." .. s, 'MALFORMED: header: "kid" is not a string at byte 23' },
    }
    for _, c in ipairs(cases) do
      local r = refused(c[1])
      assert.same({ nil, c[2], c[2]:match("^(%u+):") }, r)
    end
    -- A claims part that is not an object, signed correctly.
    local token = jwt.sign({ a = 1 }, F.secret)
    local th, _, _ = token:match("^([^.]+)%.([^.]+)%.([^.]+)$")
    assert.same({ nil, "SIGNATURE: signature does not verify", "SIGNATURE" },
      refused(th .. "." .. b64("[1,2]") .. "." .. s, F.secret, {}))
  end)

  it("raises on misuse", function()
    assert.has_error(function() jwt.verify(T.HS256, KEYS, { audience = "x" }) end,
      "bad argument to 'verify' (unknown option 'audience' (algorithms, iss, aud, leeway, now, require_exp, max_length))")
    assert.has_error(function() jwt.verify(T.HS256, KEYS, { algorithms = { "HS257" } }) end)
    assert.has_error(function() jwt.verify(T.HS256, "short secret") end)
    assert.has_error(function() jwt.verify(42, KEYS) end)
    assert.has_error(function() jwt.verify(T.HS256, {}) end)
    assert.has_error(function() jwt.keys { secret = F.secret, file = "x" } end)
    assert.has_error(function() jwt.keys { sekret = F.secret } end)
  end)
end)

describe("sluice.jwt.keys", function()
  it("answers bad key material with INVALID or MALFORMED, and a missing file with IO", function()
    assert.same({ nil, "INVALID: an HMAC secret needs at least 32 bytes, got 5", "INVALID" },
      { jwt.keys { secret = "short" } })
    assert.same({ nil, "INVALID: a JWK Set needs a \"keys\" array", "INVALID" }, { jwt.keys { jwks = "{}" } })
    assert.same({ nil, "MALFORMED: expected '{' at byte 1", "MALFORMED" }, { jwt.keys { jwks = "[]" } })
    assert.same({ nil, "INVALID: no signing key in this JWK Set (1 skipped)", "INVALID" },
      { jwt.keys { jwks = '{"keys":[{"kty":"XYZ"}]}' } })
    assert.same({ nil, "INVALID: a EC JWK that is not a valid public key (n/e, crv/x/y)", "INVALID" },
      { jwt.keys { jwks = '{"keys":[{"kty":"EC","crv":"P-256","x":"AAAA","y":"AAAA"}]}' } })
    -- A point that is not on the curve.
    local k = F.jwks.keys[2]
    local bad = { kty = "EC", crv = "P-256", x = k.x, y = k.x }
    assert.same({ nil, "INVALID: a EC JWK that is not a valid public key (n/e, crv/x/y)", "INVALID" },
      { jwt.keys { jwks = cjson.encode({ keys = { bad } }) } })
    assert.same({ nil, "INVALID: a RSA JWK whose \"alg\" is not one of its type's", "INVALID" },
      { jwt.keys { jwks = cjson.encode({ keys = { { kty = "RSA", n = F.jwks.keys[1].n, e = "AQAB", alg = "HS256" } } }) } })
    -- A key for an algorithm sluice does not verify is skipped, like one
    -- for encryption.
    local rsa = F.jwks.keys[1]
    local skipping = assert(jwt.keys { jwks = cjson.encode({ keys = {
      { kty = "RSA", n = rsa.n, e = rsa.e, alg = "RSA-OAEP", kid = "x" },
      { kty = "RSA", n = rsa.n, e = rsa.e, kid = "rsa" } } }) })
    assert.equal(1, skipping:count())
    local r = { jwt.keys { file = "/nonexistent/jwks.json" } }
    assert.equal("IO", r[3])
    assert.matches("^IO: cannot read key file: /nonexistent/jwks.json", r[2])
  end)
end)

describe("sluice.jwt.sign", function()
  it("makes HS256/384/512 tokens that verify, with expires_in", function()
    local long = F.secret .. F.secret
    for _, alg in ipairs { "HS256", "HS384", "HS512" } do
      local token = jwt.sign({ sub = "u", room = "lobby" }, long, { alg = alg, kid = "k", expires_in = 60 })
      local claims, header = jwt.verify(token, long)
      assert.equal("lobby", claims.room)
      assert.equal(claims.iat + 60, claims.exp)
      assert.same({ alg = alg, typ = "JWT", kid = "k" }, header)
    end
    assert.has_error(function() jwt.sign({}, "short") end)
    assert.has_error(function() jwt.sign({}, F.secret, { alg = "RS256" }) end)
    assert.has_error(function() jwt.sign({}, F.secret:sub(1, 40), { alg = "HS512" }) end)   -- under 64 bytes
  end)

  it("makes tokens that jose verifies", function()
    local token = jwt.sign({ sub = "u", room = "lobby" }, F.secret, { kid = "k", expires_in = 60 })
    local node = os.getenv("SLUICE_NODE") or "node"
    local p = assert(io.popen(("%s spec/clients/jwt.mjs verify '%s' '%s'"):format(node, F.secret, token)))
    local out = cjson.decode(p:read("*a"))
    p:close()
    assert.equal("lobby", out.payload.room)
    assert.equal(out.payload.iat + 60, out.payload.exp)
    assert.same({ alg = "HS256", typ = "JWT", kid = "k" }, out.protectedHeader)
  end)

  it("reads the token from Authorization: Bearer or the query's token", function()
    assert.equal("abc", jwt.token { headers = { authorization = "Bearer abc" } })
    assert.equal("q", jwt.token { headers = {}, query = { token = "q" } })
    assert.is_nil(jwt.token { headers = { authorization = "Basic x" }, query = {} })
  end)
end)
