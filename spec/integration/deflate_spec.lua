-- permessage-deflate (RFC 7692, app option `deflate = true`) with Node `ws`
-- clients: compressed and uncompressed subscribers of one broadcast both
-- receive every record, byte for byte, the compressed one reading a
-- fraction of the bytes; a client that limits the server's window gets
-- messages it can inflate; big compressed messages from a client arrive
-- whole. Records are written by kcat to the gateway's embedded broker.
local H = require "integration.helper"

local APP = [[
local sluice = require "sluice"
local app = sluice.app { name = "deflate", deflate = true }
app:ws("/echo", { message = function(conn, data) conn:send(data) end })
app:ws("/all", {})
app:consume("stats", { broadcast = true }, function(rec)
  app:broadcast("/all", rec.value)   -- one payload, compressed once
end)
app:http("GET", "/assigned", function() return 200, { assigned = app:stats().assigned } end)
return app
]]

describe("permessage-deflate", function()
  local gw
  setup(function()
    local path = H.tmpdir() .. "/deflate.lua"
    H.write(path, APP)
    gw = H.start { app = path, ready = "http" }
    assert(H.wait_for(20, function()
      local _, body = H.http_json(gw.port, "/assigned")
      return body and body.assigned == 4
    end), "the broadcast consumer has no partitions")
  end)
  teardown(function()
    if gw then gw:stop() end
    H.cleanup()
  end)

  it("compressed and uncompressed subscribers of one broadcast both receive every record", function()
    local clients, ready = {}, {}
    for i, mode in ipairs({ { "on" }, { "off" }, { "on", "10" } }) do
      ready[i] = H.tmpdir() .. "/ready"
      local args = { "--url", gw.url .. "/all", "--deflate", mode[1], "--count", "300", "--ready-file", ready[i] }
      if mode[2] then args[#args + 1] = "--window"; args[#args + 1] = mode[2] end
      clients[i] = H.client_bg("deflate.js", args)
    end
    for i = 1, 3 do assert(H.wait_for(20, function() return H.read(ready[i]) end, 0.05), "client " .. i) end
    -- 300 records of a stats shape, some over 1 KB (past a 10-bit window)
    local lines = {}
    for i = 1, 300 do
      local top = {}
      for k = 1, (i % 3 == 0) and 12 or 2 do
        top[k] = ('{"actorId":"nm%07d","actorName":"Actor %d","minutes":%d,"movies":%d}'):format(k * 7, k, 100 + i, k)
      end
      lines[i] = ('{"n":%d,"window":{"start":%d,"end":%d},"top":[%s]}'):format(i, 1764745200000 + i, 1764745260000 + i,
        table.concat(top, ","))
    end
    local file = H.tmpdir() .. "/records"
    H.write(file, table.concat(lines, "\n") .. "\n")
    local code, _, err = H.run(("%s -P -b %s -t stats -p 0 -l %s"):format(H.q(H.kcat), gw.bootstrap, H.q(file)))
    assert(code == 0, "kcat: " .. tostring(err))

    local on, off, narrow = clients[1]:result(60), clients[2]:result(60), clients[3]:result(60)
    assert.are.equal("permessage-deflate", on.extensions)
    assert.are.equal("", off.extensions)
    assert.are.equal("permessage-deflate", narrow.extensions)
    for _, r in ipairs({ on, off, narrow }) do
      assert.is_nil(r.timed_out)
      assert.is_nil(r.error)
      assert.are.same(lines, r.messages)
    end
    -- the stats records compress: the compressed clients read far less
    assert(on.bytes_read * 2 < off.bytes_read, ("read %d compressed, %d plain"):format(on.bytes_read, off.bytes_read))
    assert(narrow.bytes_read < off.bytes_read)
  end)

  it("a big compressed message from a client arrives whole, and its echo too", function()
    for _, size in ipairs({ 70, 5000, 300000 }) do
      local r = H.client("deflate.js", { "--url", gw.url .. "/echo", "--deflate", "on", "--echo", tostring(size) })
      assert.are.equal("permessage-deflate", r.extensions)
      assert.are.equal("same", r.echo, "echo of " .. size .. " bytes")
    end
    local r = H.client("deflate.js", { "--url", gw.url .. "/echo", "--deflate", "on", "--echo", "300000" })
    assert(r.bytes_read < 30000, "300,000 bytes came back as " .. r.bytes_read)
  end)
end)
