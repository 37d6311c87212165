-- The movies app with SLUICE_MOVIES_SECRET: GET /api/token hands out a
-- short-lived HS256 token (checked here by npm jose), and its WebSockets
-- demand one (?token=). Tokens made by jose — with another secret, expired,
-- for another audience — and no token at all are refused with 4401 and
-- the reason; the page's path (token, then a row acked by Kafka) works.
local H = require "integration.helper"
local json = H.json

local SECRET = "movies-spec-secret-0123456789abcdefghijklmnop"

local function jose(...)
  local args = { "jwt.mjs", ... }
  local cmd = { H.q(H.node), H.q(H.clients .. "/" .. args[1]) }
  for i = 2, #args do cmd[#cmd + 1] = H.q(args[i]) end
  local code, out, err = H.run(table.concat(cmd, " "))
  assert(code == 0, "jwt.mjs failed: " .. tostring(err))
  return out
end

local ROW = json.encode { id = "r1", actorName = "Brad Pitt", actorId = "nm0000093",
                          movieId = "tt0137523", movieName = "Fight Club", movieMinutes = 139 }

describe("movies app with a token", function()
  local gw

  setup(function()
    gw = H.start { env = "SLUICE_MOVIES_PROCESSING=0 SLUICE_MOVIES_SECRET=" .. SECRET }
  end)
  teardown(function()
    if gw then gw:stop() end
    H.cleanup()
  end)

  local function stream(query)
    return H.client("probe.js", { "--url", gw.url .. "/stream" .. query, "--text", ROW,
      "--replies", "1", "--wait", "10" })
  end

  it("hands out a 5-minute token that jose verifies, and the stream accepts it", function()
    local status, body = H.http_json(gw.port, "/api/token")
    assert.equal(200, status)
    assert.equal(300, body.expires_in)
    local v = json.decode(jose("verify", SECRET, body.token))
    assert.equal("sluice-movies", v.payload.iss)
    assert.equal("movies", v.payload.aud)
    assert.equal("page", v.payload.sub)
    assert.equal(300, v.payload.exp - v.payload.iat)
    assert.equal("HS256", v.protectedHeader.alg)
    local r = stream("?token=" .. body.token)
    assert.same({ '{"ack":"r1"}' }, r.replies)
    assert.same({ code = 1000, reason = "", by = "client" }, r.close)
  end)

  it("refuses a missing, foreign, expired or misdirected token with 4401 and the reason", function()
    local now = os.time()
    local function token(secret, claims) return jose("sign", secret, json.encode(claims)) end
    local good = { iss = "sluice-movies", aud = "movies", sub = "x", iat = now, exp = now + 60 }
    local cases = {
      { "", "MISSING: no token" },
      { "?token=" .. token(SECRET:reverse(), good), "SIGNATURE: signature does not verify" },
      { "?token=" .. token(SECRET, { iss = "sluice-movies", aud = "movies", iat = now - 600, exp = now - 300 }),
        "^EXPIRED: expired 3%d%d s ago$" },
      { "?token=" .. token(SECRET, { iss = "sluice-movies", aud = "shop", exp = now + 60 }),
        "AUDIENCE: aud names none of the expected audiences" },
      { "?token=" .. token(SECRET, { iss = "sluice-movies", aud = "movies" }),
        "INVALID: no exp claim (the token would never expire)" },
      { "?token=not.a.token", "MALFORMED: header: invalid base64url" },
    }
    for _, c in ipairs(cases) do
      local r = stream(c[1])
      assert.same({}, r.replies, c[2])
      assert.equal(4401, r.close.code, c[2])
      assert.equal("server", r.close.by)
      if c[2]:sub(1, 1) == "^" then assert.matches(c[2], r.close.reason)
      else assert.equal(c[2], r.close.reason) end
    end
    -- The live panel's route too, and the gateway still serves.
    local r = H.client("probe.js", { "--url", gw.url .. "/stats", "--wait", "10" })
    assert.same({ code = 4401, reason = "MISSING: no token", by = "server" }, r.close)
    local _, body = H.http_json(gw.port, "/api/token")
    assert.same({ '{"ack":"r1"}' }, stream("?token=" .. body.token).replies)
  end)
end)
