-- The console (sluice.console) on every Lua: an app with `console = PATH`,
-- a client on the same loop (core.unix_connect), lines in, text out.
local core = require "sluice.core"
local support = require "unit.support"

describe("sluice.console", function()
  local app, dir, path, client, got, closed

  local function send(line)
    assert(client:send(line .. "\n"))
  end

  -- Step until the console's output ends with `tail`; returns all of it.
  local function until_tail(tail)
    support.wait(app, function() return got:sub(-#tail) == tail end, ("console output ending %q (got %q)"):format(tail, got))
    local out = got
    got = ""
    return out
  end

  before_each(function()
    local p = io.popen("mktemp -d /tmp/sluice-console-spec.XXXXXX")
    dir = p:read("*l")
    p:close()
    path = dir .. "/run/c.sock"
    app = support.app { console = path, handler_timeout = 0.2 }
    assert(app:start())
    got, closed = "", false
    client = assert(core.unix_connect(app.loop, path, {
      data = function(_, bytes) got = got .. bytes end,
      close = function() closed = true end,
    }))
  end)

  after_each(function()
    if client and not client:is_closed() then client:close() end
    app:close()
    os.execute("rm -rf " .. dir)
  end)

  it("greets, evaluates expressions and statements, and keeps the session's globals", function()
    local banner = until_tail("> ")
    assert.equal(("sluice console: app sluice, pid %d, generation 1; help() lists the helpers\n> "):format(core.getpid()), banner)
    send("x = 20")
    assert.equal("> ", until_tail("> "))
    send("x * 2 + 2, 'two', { a = 1, [2] = true, 'l' }")
    assert.equal('42\t"two"\t{ "l", true, a = 1 }\n> ', until_tail("> "))
    send("function f(n)")
    assert.equal(">> ", until_tail(">> "))
    send("  return n + 1 end")
    assert.equal("> ", until_tail("> "))
    send("f(1)")
    assert.equal("2\n> ", until_tail("> "))
    assert.is_nil(rawget(_G, "x"), "the session's globals are its own")
  end)

  it("reports errors and stops a runaway evaluation at the handler time limit", function()
    until_tail("> ")
    send("error('no', 0)")
    assert.equal("error: no\n> ", until_tail("> "))
    send("while true do end")
    assert.equal("error: handler stopped: ran longer than 200 ms (handler_timeout)\n> ", until_tail("> "))
    send("stats().handler_errors")
    assert.equal("0\n> ", until_tail("> "))
  end)

  it("in quiet mode answers without prompts and ends with the failures once the client has sent everything", function()
    until_tail("> ")
    send("\\quiet")
    send("1 + 1")
    send("nope(")
    client:shutdown()
    support.wait(app, function() return closed end, "the console to close")
    assert.equal("2\nerror: console:1: unexpected symbol near <eof>\n\\end 1\n",
      (got:gsub("near '<eof>'", "near <eof>")))
  end)

  it("taps a route's messages through the same hook the server calls", function()
    until_tail("> ")
    send("tap('/r', { limit = 1 })")
    until_tail("> ")
    local console = require "sluice.console"
    console.tap_message(app, { path = "/r", id = 7 }, "hello\1")
    assert.equal("tap /r conn 7: hello.\ntap /r ended: 1 shown, 0 skipped by sampling, 0 dropped (reader too slow)\n",
      until_tail("reader too slow)\n"))
    assert.is_nil(app._taps)
  end)

  it("removes its socket when the app closes", function()
    until_tail("> ")
    app:close()
    assert.is_nil(io.open(path, "r"))
    assert.same({}, core.readdir(dir .. "/run"))
  end)
end)
