-- Hot reload of a consumer group member: `sluice run --watch` consumes
-- topic cg-in in a group and writes each record, tagged with its code
-- version, to cg-out. Records are produced with kcat while the processing
-- module is rewritten three times. Afterwards: no rebalance happened
-- after the first assignment, every input record was handled exactly
-- once (none re-read, none skipped), versions only moved forward per key,
-- and the records produced after the last reload carry its marker.
local H = require "integration.helper"

local APP = [[
local sluice = require "sluice"
local proc = require "proc"
local app = sluice.app { name = "reload-cg" }
app:consume("cg-in", { group = "reload-cg-g", from = "earliest" }, function(rec) proc.handle(app, rec) end)
app:http("GET", "/healthz", function() return 200, { status = "ok" } end)
app:http("GET", "/stats", function() return 200, app:stats() end)
return app
]]

local function proc(marker)
  return ([[
local M = {}
function M.handle(app, rec)
  assert(app:produce("cg-out", { key = rec.key, value = %q .. " " .. rec.value }))
end
return M
]]):format(marker)
end

local function produce_batch(gw, first, last)
  local lines = {}
  for i = first, last do lines[#lines + 1] = ("k%d:r%d"):format(i % 5, i) end
  local file = H.tmpdir() .. "/batch"
  H.write(file, table.concat(lines, "\n") .. "\n")
  local code, _, err = H.run(("%s -P -b %s -t cg-in -K: -l %s"):format(H.q(H.kcat), gw.bootstrap, H.q(file)))
  assert.are.equal(0, code, err)
end

describe("hot reload of a consumer group member", function()
  local gw

  teardown(function()
    if gw then gw:stop() end
    H.cleanup()
  end)

  it("causes no rebalance and handles every record exactly once", function()
    local dir = H.tmpdir()
    H.write(dir .. "/app.lua", APP)
    H.write(dir .. "/proc.lua", proc "v1")
    gw = H.start { app = dir .. "/app.lua", args = { "--watch", "--watch-debounce", "50" } }
    local function stats()
      local status, s = H.http_json(gw.port, "/stats")
      assert.are.equal(200, status)
      return s
    end
    produce_batch(gw, 1, 100)
    assert(H.wait_for(40, function() return stats().consumed >= 100 end, 0.2),
      "the group member never consumed; stderr:\n" .. gw:stderr())
    local before = stats()
    assert.is_true(before.assigned > 0)

    for v = 2, 4 do
      produce_batch(gw, (v - 1) * 100 + 1, v * 100)
      local tmp = dir .. "/.proc.lua.new"
      H.write(tmp, proc("v" .. v))
      assert(os.rename(tmp, dir .. "/proc.lua"))
      assert(H.wait_for(10, function()
        local _, h = H.http_json(gw.port, "/_sluice/health")
        return h.generation == v
      end, 0.05), "no reload to v" .. v)
    end
    produce_batch(gw, 401, 500)
    assert(H.wait_for(30, function() return stats().consumed >= 500 end, 0.2), "not all consumed")
    H.sleep(1)
    local after = stats()
    assert.are.equal(500, after.consumed)                -- nothing re-read
    assert.are.equal(before.rebalances, after.rebalances) -- no rebalance
    assert.are.equal(before.assigned, after.assigned)

    local out = H.kcat_consume(gw.bootstrap, "cg-out", 500, 30)
    assert.are.equal(500, #out)
    local seen, last_version = {}, {}
    for _, rec in ipairs(out) do
      local v, r = rec.value:match("^v(%d+) r(%d+)$")
      assert(v, "unexpected output " .. rec.value)
      v, r = tonumber(v), tonumber(r)
      assert.is_nil(seen[r], "record r" .. r .. " handled twice")
      seen[r] = v
      assert.is_true(v >= (last_version[rec.key] or 1), "key " .. rec.key .. " went back to v" .. v)
      last_version[rec.key] = v
    end
    for r = 1, 500 do assert(seen[r], "record r" .. r .. " skipped") end
    for r = 401, 500 do assert.are.equal(4, seen[r]) end   -- after the last reload
    for r = 1, 100 do assert.are.equal(1, seen[r]) end     -- before the first
    assert.are.equal(0, (gw:stop()))
  end)
end)
