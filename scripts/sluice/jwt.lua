-- sluice.jwt: JSON Web Tokens checked in C (bindings/jwt.c over
-- core/src/jwt.c, OpenSSL). This file reads key files, checks option names
-- and turns the verified JSON texts into tables. docs/api.md, "JWT".
local core = require "sluice.core"
local cjson = require "cjson"

local json = cjson.new()

local M = {}

local function raise(level, fn, fmt, ...)
  error(("bad argument to '%s' (%s)"):format(fn, fmt:format(...)), level + 1)
end

local SOURCES = { file = true, jwks = true, secret = true, pem = true, kid = true }

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, "IO: cannot read key file: " .. err, "IO" end
  local text = f:read("*a")
  f:close()
  return text
end

-- Adds one source ({ file = }, { jwks = }, { secret =, kid = }, { pem =, kid = }).
local function add(keys, src)
  for k in pairs(src) do
    if not SOURCES[k] then raise(4, "keys", "unknown field '%s' (file, jwks, secret, pem, kid)", tostring(k)) end
  end
  local n = (src.file and 1 or 0) + (src.jwks and 1 or 0) + (src.secret and 1 or 0) + (src.pem and 1 or 0)
  if n ~= 1 then raise(4, "keys", "each key source needs exactly one of file, jwks, secret, pem") end
  for _, k in ipairs({ "file", "jwks", "secret", "pem", "kid" }) do
    if src[k] ~= nil and type(src[k]) ~= "string" then
      raise(4, "keys", "'%s' must be a string, got %s", k, type(src[k]))
    end
  end
  if src.secret then return keys:add_secret(src.secret, src.kid) end
  local text, err, code = src.pem or src.jwks, nil, nil
  if src.file then
    text, err, code = read_file(src.file)
    if not text then return nil, err, code end
  end
  -- A PEM file or text; otherwise a JWK Set (or one JWK).
  if src.pem or text:find("-----BEGIN", 1, true) then return keys:add_pem(text, src.kid) end
  if src.kid then raise(4, "keys", "'kid' goes with a secret or a PEM key (a JWK names its own)") end
  return keys:add_jwks(text)
end

-- sluice.jwt.keys(source | { source, ... }) → keys | nil, "CODE: …", "CODE"
-- A source: { file = "jwks.json" | "key.pem" }, { jwks = text },
-- { secret = "…" [, kid =] } or { pem = text [, kid =] }.
function M.keys(spec)
  if type(spec) ~= "table" then raise(2, "keys", "a table expected, got %s", type(spec)) end
  local list = spec[1] ~= nil and spec or { spec }
  local keys = core.jwt_keys()
  for i = 1, #list do
    if type(list[i]) ~= "table" then raise(2, "keys", "key source %d is not a table", i) end
    local ok, err, code = add(keys, list[i])
    if not ok then
      keys:close()
      return nil, err, code
    end
  end
  return keys
end

local OPTIONS = {
  algorithms = true, iss = true, aud = true, leeway = true, now = true,
  require_exp = true, max_length = true,
}

-- sluice.jwt.verify(token, keys|secret [, options]) → claims, header
-- or nil, "CODE: why", "CODE" (MISSING, MALFORMED, TOOBIG, ALGORITHM,
-- KEY, SIGNATURE, INVALID, EXPIRED, EARLY, ISSUER, AUDIENCE).
function M.verify(token, keys, options)
  if options ~= nil then
    if type(options) ~= "table" then raise(2, "verify", "options must be a table, got %s", type(options)) end
    for k in pairs(options) do
      if not OPTIONS[k] then
        raise(2, "verify", "unknown option '%s' (algorithms, iss, aud, leeway, now, require_exp, max_length)",
          tostring(k))
      end
    end
  end
  if token == nil or token == "" then return nil, "MISSING: no token", "MISSING" end
  if type(token) ~= "string" then raise(2, "verify", "token must be a string, got %s", type(token)) end
  local header, claims, code = core.jwt_verify(token, keys, options)
  if not header then return nil, claims, code end
  return json.decode(claims), json.decode(header)
end

-- sluice.jwt.sign(claims, secret [, { alg = "HS256", kid =, expires_in = s }])
-- → token, signed with an HMAC secret (at least 32 bytes). expires_in
-- sets iat (now) and exp (now + expires_in).
function M.sign(claims, secret, options)
  if type(claims) ~= "table" then raise(2, "sign", "claims must be a table, got %s", type(claims)) end
  if type(secret) ~= "string" then raise(2, "sign", "secret must be a string, got %s", type(secret)) end
  options = options or {}
  for k in pairs(options) do
    if k ~= "alg" and k ~= "kid" and k ~= "expires_in" then
      raise(2, "sign", "unknown option '%s' (alg, kid, expires_in)", tostring(k))
    end
  end
  if options.expires_in ~= nil then
    if type(options.expires_in) ~= "number" or options.expires_in <= 0 then
      raise(2, "sign", "expires_in must be a positive number of seconds")
    end
    local copy = {}
    for k, v in pairs(claims) do copy[k] = v end
    local now = os.time()
    copy.iat = now
    copy.exp = now + math.floor(options.expires_in)
    claims = copy
  end
  -- An empty table encodes as [], which is not a claims object.
  local text = next(claims) == nil and "{}" or json.encode(claims)
  return core.jwt_sign(text, secret, options.alg, options.kid)
end

-- The token a request carries: "Authorization: Bearer <token>", else the
-- query's token= (browsers cannot set headers on a WebSocket). nil if none.
-- Takes a conn (conn.headers, conn.query) or an HTTP request.
function M.token(r)
  local auth = r.headers and r.headers.authorization
  if type(auth) == "string" then
    local t = auth:match("^[Bb]earer%s+(%S+)%s*$")
    if t then return t end
  end
  local q = r.query
  if type(q) == "table" and type(q.token) == "string" and q.token ~= "" then return q.token end
  return nil
end

return M
