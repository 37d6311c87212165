-- core.conn_set (bindings/conn_set.c): a set of WebSocket connections kept
-- in C, against real connections of an app in this process: membership,
-- broadcasts as the clients receive them, connections that close leaving
-- by themselves, and the binding's conventions (misuse raises, expected
-- failures return nil, "CODE: message", "CODE").
local core = require "sluice.core"
local support = require "unit.support"

local wait = support.wait

local function raises(pattern, f)
  local ok, err = pcall(f)
  assert.is_false(ok)
  assert.matches(pattern, tostring(err), 1, true)
end

describe("core.conn_set", function()
  local app
  local conns = {}     -- server side, in the order they opened

  setup(function()
    app = support.app { name = "unit-conn-set" }
    app:ws("/s", { open = function(conn) conns[#conns + 1] = conn end })
    assert(app:start())
  end)
  teardown(function() app:close() end)

  -- n clients on /s; returns them and their server-side connections.
  local function clients(n)
    local cs, ss = {}, {}
    for i = 1, n do
      local before = #conns
      cs[i] = support.open_client(app, "/s")
      wait(app, function() return #conns > before end, "the server's side")
      ss[i] = conns[#conns]
    end
    return cs, ss
  end

  local function received(c)
    local out = {}
    for i, m in ipairs(c.messages) do out[i] = m[1] end
    return out
  end

  it("adds once, removes from anywhere, and broadcasts to its members in order", function()
    local set = core.conn_set()
    assert.are.equal(0, set:count())
    assert.are.equal(0, #set)
    assert.are.equal("sluice.ws.conn_set (0)", tostring(set))
    assert.are.equal(0, set:broadcast("nobody"))
    local cs, ss = clients(4)
    for i = 1, 4 do assert.is_true(set:add(ss[i])) end
    assert.is_false(set:add(ss[2]))
    assert.are.equal(4, #set)
    assert.is_true(set:remove(ss[2]))
    assert.is_false(set:remove(ss[2]))
    assert.is_false(set:has(ss[2]))
    assert.is_true(set:has(ss[3]))
    assert.are.equal(3, set:count())
    assert.are.equal(3, set:broadcast("one"))
    assert.are.equal(3, set:broadcast("two", true))
    assert.are.equal(3, app:broadcast(set, "three"))
    wait(app, function() return #cs[4].messages >= 3 and #cs[1].messages >= 3 end, "three messages")
    support.settle(app, 0.1)
    for _, i in ipairs({ 1, 3, 4 }) do
      assert.are.same({ "one", "two", "three" }, received(cs[i]))
      assert.are.same({ false, true, false }, { cs[i].messages[1][2], cs[i].messages[2][2], cs[i].messages[3][2] })
    end
    assert.are.same({}, received(cs[2]))
    for i = 1, 4 do cs[i].conn:close() end
    wait(app, function() return set:count() == 0 end, "every member gone")
  end)

  it("loses a connection that closes, from every set it is in, and refuses it after", function()
    local a, b = core.conn_set(), core.conn_set()
    local cs, ss = clients(3)
    for i = 1, 3 do a:add(ss[i]) end
    b:add(ss[2])
    b:add(cs[1].conn)      -- a client-side connection is one too
    assert.are.equal(2, #b)
    cs[2].conn:close()
    wait(app, function() return a:count() == 2 end, "the closed one out of a")
    assert.are.equal(1, b:count())
    assert.is_false(a:has(ss[2]))
    assert.is_false(a:remove(ss[2]))
    assert.are.same({ nil, "CLOSED: connection is closed", "CLOSED" }, { a:add(ss[2]) })
    assert.are.equal(1, b:broadcast("to the client's peer"))
    assert.are.equal(2, a:broadcast("to both"))
    wait(app, function() return #cs[3].messages >= 1 and #cs[1].messages >= 1 end, "the broadcast")
    assert.are.equal("to both", cs[3].messages[1][1])
    -- a closed set: its members leave it, and it raises when used
    a:close()
    a:close()
    assert.is_true(a:is_closed())
    assert.are.equal("sluice.ws.conn_set (closed)", tostring(a))
    raises("attempt to use a closed sluice.ws.conn_set", function() return a:count() end)
    raises("attempt to use a closed sluice.ws.conn_set", function() return a:add(ss[1]) end)
    assert.is_true(b:has(cs[1].conn))
    cs[1].conn:close()
    cs[3].conn:close()
    wait(app, function() return b:count() == 0 end, "b empty")
  end)

  it("raises on misuse", function()
    local set = core.conn_set()
    raises("sluice.ws.conn expected", function() return set:add("conn") end)
    raises("sluice.ws.conn expected", function() return set:add(set) end)
    raises("sluice.ws.conn expected", function() return set:remove(nil) end)
    raises("sluice.ws.conn expected", function() return set:has({}) end)
    raises("string expected", function() return set:broadcast({}) end)
    raises("sluice.ws.conn_set expected", function() return set.count({}) end)
    raises("string expected", function() return app:broadcast(set, nil) end)
  end)
end)
