-- TLS serving (core/src/tls.c, docs/security.md): https:// and wss:// on the
-- gateway's port, checked with clients sluice did not write — the openssl
-- command (protocol, certificate chain, client certificates) and npm `ws`
-- (door.js) trusting a CA this spec makes (spec/clients/testca.sh) — the
-- certificate reloaded without dropping connections, and every bad file a
-- one-line error at start.
local H = require "integration.helper"
local socket = require "socket"
local json = H.json

local APP = [[
local sluice = require "sluice"
local app = sluice.app { name = "tls" }
app:ws("/echo", {
  open = function(conn) conn:send("hello") end,
  message = function(conn, data) conn:send("echo: " .. data) end,
})
app:ws("/private", {
  auth = function(req)
    if req.headers["x-api-key"] == "k1" then return true, "ann" end
    return 401, "missing or unknown x-api-key"
  end,
  open = function(conn) conn:send("hello " .. conn.auth) end,
})
app:http("GET", "/hello", function() return 200, "hello over https" end)
return app
]]

local dir, app_file

local function sh(cmd)
  local code, out, err = H.run(cmd)
  assert(code == 0, cmd .. " failed: " .. tostring(err))
  return out
end

local function copy(from, to) sh("cp " .. H.q(from) .. " " .. H.q(to)) end

-- openssl s_client against the gateway: its whole output (stdout+stderr).
local function s_client(port, args)
  local _, out, err = H.run(("openssl s_client -connect 127.0.0.1:%d -servername localhost %s </dev/null")
    :format(port, args or ""))
  return (out or "") .. (err or "")
end

-- door.js against the gateway over TLS
local function door(port, path, ...)
  return H.client("door.js", { (path:match("^/hello") and "https" or "wss") .. "://localhost:" .. port .. path, ... })
end

local function start(args, extra)
  local a = { "--tls-cert", args.cert, "--tls-key", args.key }
  for _, x in ipairs(extra or {}) do a[#a + 1] = x end
  return H.start { app = app_file, args = a, ready = "log" }
end

setup(function()
  dir = H.tmpdir()
  app_file = dir .. "/app.lua"
  H.write(app_file, APP)
  sh("sh " .. H.q(H.root .. "/spec/clients/testca.sh") .. " " .. H.q(dir .. "/one") .. " one")
  sh("sh " .. H.q(H.root .. "/spec/clients/testca.sh") .. " " .. H.q(dir .. "/two") .. " two")
end)

describe("TLS", function()
  local gw
  local ONE, TWO

  setup(function()
    ONE = { cert = dir .. "/one/server.pem", key = dir .. "/one/server.key", ca = dir .. "/one/ca.pem" }
    TWO = { cert = dir .. "/two/server.pem", key = dir .. "/two/server.key", ca = dir .. "/two/ca.pem" }
    gw = start(ONE)
  end)

  teardown(function() if gw then gw:stop() end end)

  it("says it listens on https", function()
    assert.truthy(gw:stderr():find(("listening on https://0.0.0.0:%d/ (WebSocket and HTTP over TLS)\n")
      :format(gw.port), 1, true))
  end)

  it("openssl s_client: TLS 1.3 by default, 1.2 allowed, 1.1 refused; the chain verifies", function()
    local out = s_client(gw.port, "-CAfile " .. H.q(ONE.ca) .. " -verify_return_error -showcerts")
    assert.truthy(out:find("Verify return code: 0 (ok)", 1, true), out)
    assert.truthy(out:find("New, TLSv1.3, Cipher is", 1, true), out)
    -- the certificate and its CA after it (the chain in server.pem)
    assert.truthy(out:find(" 0 s:CN = localhost\n   i:CN = sluice test CA one\n", 1, true), out)
    assert.truthy(out:find(" 1 s:CN = sluice test CA one\n   i:CN = sluice test CA one\n", 1, true), out)
    out = s_client(gw.port, "-CAfile " .. H.q(ONE.ca) .. " -verify_return_error -tls1_2")
    assert.truthy(out:find("New, TLSv1.2, Cipher is", 1, true), out)
    out = s_client(gw.port, "-tls1_1 -cipher DEFAULT@SECLEVEL=0")
    assert.truthy(out:find("no protocols available", 1, true) or out:find("alert protocol version", 1, true), out)
    -- HTTP/1.1 is the only application protocol offered (no h2)
    out = s_client(gw.port, "-CAfile " .. H.q(ONE.ca) .. " -alpn h2,http/1.1")
    assert.truthy(out:find("ALPN protocol: http/1.1", 1, true), out)
  end)

  it("npm ws over wss:// and an https GET, trusting the test CA", function()
    local r = door(gw.port, "/echo", "--ca", ONE.ca, "--send", "over tls")
    assert.same({ opened = true, protocol = "", messages = { "hello", "echo: over tls" } }, r)
    r = door(gw.port, "/hello", "--ca", ONE.ca)
    assert.equal(200, r.status)
    assert.equal("hello over https", r.body)
    -- the door works the same over TLS
    r = door(gw.port, "/private", "--ca", ONE.ca)
    assert.equal(401, r.status)
    assert.same({ status = 401, error = "missing or unknown x-api-key" }, json.decode(r.body))
    r = door(gw.port, "/private", "--ca", ONE.ca, "--header", "X-Api-Key:k1")
    assert.same({ opened = true, protocol = "", messages = { "hello ann" } }, r)
  end)

  it("a client that does not trust the CA refuses the gateway; plaintext on the port gets no answer", function()
    local r = door(gw.port, "/echo")
    assert.same({ error = "SELF_SIGNED_CERT_IN_CHAIN" }, r)
    r = door(gw.port, "/echo", "--ca", TWO.ca)
    assert.same({ error = "SELF_SIGNED_CERT_IN_CHAIN" }, r)
    -- plain HTTP to the TLS port: closed, nothing served in clear
    local c = socket.tcp()
    c:settimeout(5)
    assert(c:connect("127.0.0.1", gw.port))
    c:send("GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
    local got, err, partial = c:receive "*a"
    c:close()
    got = got or partial or ""
    assert.is_nil(got:find("HTTP/1", 1, true), got)
    assert.is_nil(got:find("hello over", 1, true))
    assert.not_equal("timeout", err)
    -- and the gateway still serves
    r = door(gw.port, "/echo", "--ca", ONE.ca, "--send", "still")
    assert.same({ "hello", "echo: still" }, r.messages)
  end)
end)

describe("TLS reload", function()
  local gw, live

  setup(function()
    live = { cert = dir .. "/live.pem", key = dir .. "/live.key" }
    copy(dir .. "/one/server.pem", live.cert)
    copy(dir .. "/one/server.key", live.key)
  end)

  teardown(function() if gw then gw:stop() end end)

  local function issuer(port, ca)
    local out = s_client(port, "-CAfile " .. H.q(ca) .. " -verify_return_error")
    assert.truthy(out:find("Verify return code: 0 (ok)", 1, true), out)
    return out:match("issuer=CN = ([^\n]*)")
  end

  -- Replaces the served pair the way a renewal does: written beside, renamed over.
  local function renew(from)
    copy(from .. "/server.pem", live.cert .. ".new")
    copy(from .. "/server.key", live.key .. ".new")
    sh(("mv %s %s && mv %s %s"):format(H.q(live.cert .. ".new"), H.q(live.cert),
      H.q(live.key .. ".new"), H.q(live.key)))
  end

  local function count(text, what)
    local n = 0
    for _ in text:gmatch(what) do n = n + 1 end
    return n
  end

  it("--watch: a renewed certificate serves new connections; an open one keeps going", function()
    gw = start(live, { "--watch" })
    assert.equal("sluice test CA one", issuer(gw.port, dir .. "/one/ca.pem"))
    local hold = dir .. "/go"
    local held = H.client_bg("door.js", { "wss://localhost:" .. gw.port .. "/echo", "--ca", dir .. "/one/ca.pem",
      "--send", "after the reload", "--hold", hold })
    assert.truthy(H.wait_for(20, function() return H.read(hold .. ".open") end), "the held connection did not open")

    renew(dir .. "/two")
    assert.truthy(H.wait_for(10, function()
      return gw:stderr():find("TLS certificate and key reloaded", 1, true)
    end), gw:stderr())
    assert.equal("sluice test CA two", issuer(gw.port, dir .. "/two/ca.pem"))
    local r = door(gw.port, "/echo", "--ca", dir .. "/two/ca.pem", "--send", "new")
    assert.same({ "hello", "echo: new" }, r.messages)
    -- the connection made before the reload is still open and served
    H.write(hold, "")
    assert.same({ opened = true, protocol = "", messages = { "hello", "echo: after the reload" } }, held:result(20))

    -- a broken key: the reload fails, said once, and the pair before it serves on
    H.write(live.key, "not a key\n")
    assert.truthy(H.wait_for(10, function()
      return gw:stderr():find("TLS reload failed, the previous certificate still serves: TLS key " ..
        live.key .. ": no PEM private key in it (an encrypted key is not supported)", 1, true)
    end), gw:stderr())
    assert.equal("sluice test CA two", issuer(gw.port, dir .. "/two/ca.pem"))
    assert.equal(1, count(gw:stderr(), "TLS certificate and key reloaded"))
  end)

  it("SIGHUP reads the pair again", function()
    gw:stop()
    renew(dir .. "/one")
    gw = start(live)
    assert.equal("sluice test CA one", issuer(gw.port, dir .. "/one/ca.pem"))
    renew(dir .. "/two")
    gw:signal "HUP"
    assert.truthy(H.wait_for(10, function()
      return gw:stderr():find("TLS certificate and key reloaded", 1, true)
    end), gw:stderr())
    assert.equal("sluice test CA two", issuer(gw.port, dir .. "/two/ca.pem"))
  end)
end)

describe("TLS client certificates (--tls-ca)", function()
  local gw

  setup(function()
    gw = start({ cert = dir .. "/one/server.pem", key = dir .. "/one/server.key" },
      { "--tls-ca", dir .. "/one/ca.pem" })
  end)

  teardown(function() if gw then gw:stop() end end)

  it("lets in a client whose certificate the CA signed, and no other", function()
    assert.truthy(gw:stderr():find("over TLS, client certificates required)", 1, true))
    local ca = dir .. "/one/ca.pem"
    local r = door(gw.port, "/echo", "--ca", ca, "--cert", dir .. "/one/client.pem", "--key", dir .. "/one/client.key",
      "--send", "signed")
    assert.same({ "hello", "echo: signed" }, r.messages)
    -- no certificate: the handshake fails (TLS 1.3: after it, with an alert)
    local out = s_client(gw.port, "-CAfile " .. H.q(ca) .. " -ign_eof")
    assert.truthy(out:find("alert certificate required", 1, true), out)
    r = door(gw.port, "/echo", "--ca", ca)
    assert.is_nil(r.opened)
    assert.is_string(r.error)
    -- a certificate from another CA
    r = door(gw.port, "/echo", "--ca", ca, "--cert", dir .. "/two/client.pem", "--key", dir .. "/two/client.key")
    assert.is_nil(r.opened)
    assert.is_string(r.error)
    out = s_client(gw.port, "-CAfile " .. H.q(ca) .. " -ign_eof -cert " .. H.q(dir .. "/two/client.pem") ..
      " -key " .. H.q(dir .. "/two/client.key"))
    assert.truthy(out:find("alert unknown ca", 1, true), out)
  end)
end)

describe("TLS files at start", function()
  -- `sluice run` with these arguments: exit status and stderr.
  local function run(...)
    local args = { H.q(H.bin), "run", H.q(app_file), "--listen", H.free_port(), "--embedded-port", H.free_port() }
    for _, a in ipairs({ ... }) do args[#args + 1] = H.q(a) end
    local code, _, err = H.run(table.concat(args, " "))
    return code, err
  end

  it("a bad or missing file is one line naming it, and nothing starts", function()
    local one, two = dir .. "/one", dir .. "/two"
    H.write(dir .. "/garbage.pem", "-----BEGIN NOTHING-----\n")
    sh(("openssl ec -in %s -aes128 -passout pass:secret -out %s 2>/dev/null")
      :format(H.q(one .. "/server.key"), H.q(dir .. "/encrypted.key")))
    local cases = {
      { { "--tls-cert", one .. "/server.pem" },
        "sluice: INVAL: TLS needs both a certificate and its key (the key is missing)\n" },
      { { "--tls-key", one .. "/server.key" },
        "sluice: INVAL: TLS needs both a certificate and its key (the certificate is missing)\n" },
      { { "--tls-cert", dir .. "/nope.pem", "--tls-key", one .. "/server.key" },
        "sluice: INVAL: TLS certificate " .. dir .. "/nope.pem: cannot read it: No such file or directory\n" },
      { { "--tls-cert", one .. "/server.pem", "--tls-key", dir .. "/nope.key" },
        "sluice: INVAL: TLS key " .. dir .. "/nope.key: cannot read it: No such file or directory\n" },
      { { "--tls-cert", dir .. "/garbage.pem", "--tls-key", one .. "/server.key" },
        "sluice: INVAL: TLS certificate " .. dir .. "/garbage.pem: no PEM certificate in it\n" },
      { { "--tls-cert", one .. "/server.pem", "--tls-key", one .. "/server.pem" },
        "sluice: INVAL: TLS key " .. one .. "/server.pem: no PEM private key in it (an encrypted key is not supported)\n" },
      { { "--tls-cert", one .. "/server.pem", "--tls-key", dir .. "/encrypted.key" },
        "sluice: INVAL: TLS key " .. dir .. "/encrypted.key: no PEM private key in it (an encrypted key is not supported)\n" },
      { { "--tls-cert", one .. "/server.pem", "--tls-key", two .. "/server.key" },
        "sluice: INVAL: TLS key " .. two .. "/server.key does not belong to the certificate " .. one .. "/server.pem\n" },
      { { "--tls-cert", one .. "/server.pem", "--tls-key", one .. "/server.key", "--tls-ca", dir .. "/garbage.pem" },
        "sluice: INVAL: TLS CA " .. dir .. "/garbage.pem: no PEM certificate in it\n" },
      { { "--tls-cert" }, "sluice: --tls-cert needs a file name\n" },
    }
    for _, case in ipairs(cases) do
      local code, err = run(table.unpack(case[1]))
      assert.equal(1, code, table.concat(case[1], " "))
      assert.equal(case[2], err)
    end
  end)
end)
