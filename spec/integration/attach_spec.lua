-- The console of a running gateway, driven as an operator drives it: the
-- `sluice attach` command (--eval, and lines piped in), socat on the Unix
-- socket, and a client that stops reading while a tap floods it.
local H = require "integration.helper"
local socket = require "socket"
local unix = require "socket.unix"

local APP = [[
local sluice = require "sluice"
local app = sluice.app { name = "attach-app", handler_timeout = 1 }
app:ws("/echo", { message = function(conn, data)
  conn:send(data)
  app:produce(os.getenv "TOPIC", { key = "k", value = data })
end })
app:consume(os.getenv "TOPIC", { broadcast = true }, function() end)
-- Rows checked, produced and acked in C: no Lua runs per message.
app:ws("/rows", { route = {
  schema = sluice.schema { { "id", "string" }, { "name", "string" } },
  topic = os.getenv "TOPIC", ack = "id",
} })
return app
]]

describe("sluice attach", function()
  local gw, run_dir, topic, sock

  -- sluice attach ARGS, with the gateway's console directory.
  local function attach(args, stdin)
    local cmd = ("SLUICE_RUN_DIR=%s %s attach %s"):format(H.q(run_dir), H.q(H.bin), args)
    if stdin then cmd = ("printf %%s %s | %s"):format(H.q(stdin), cmd) end
    return H.run(cmd)
  end

  -- A WebSocket client sending each text, waiting for its echoes.
  local function send(texts)
    local args = { "--url", gw.url .. "/echo", "--replies", tostring(#texts), "--wait", "30" }
    for _, t in ipairs(texts) do args[#args + 1] = "--text"; args[#args + 1] = t end
    local r = H.client("probe.js", args)
    assert.same(texts, r.replies)
  end

  -- Runs `sluice attach --eval CHUNK` in the background; returns a handle
  -- with :result() → exit code, stdout.
  local function attach_bg(chunk)
    local dir = H.tmpdir()
    os.execute(("sh -c %s >/dev/null 2>&1 &"):format(H.q(("SLUICE_RUN_DIR=%s %s attach --eval %s >%s/out 2>%s/err </dev/null; echo $? >%s/exit")
      :format(H.q(run_dir), H.q(H.bin), H.q(chunk), dir, dir, dir))))
    return {
      out = function() return H.read(dir .. "/out") or "" end,
      result = function()
        local code = H.wait_for(60, function() return tonumber(H.read(dir .. "/exit") or "") end, 0.05)
        return code, H.read(dir .. "/out"), H.read(dir .. "/err")
      end,
    }
  end

  -- Waits until the console has n taps running.
  local function wait_tapping(n, t)
    local out, err
    assert.truthy(H.wait_for(20, function()
      _, out, err = attach("--eval '#taps()'")
      return out == n .. "\n"
    end, 0.05), ("the tap did not start: taps() %s %s; the tapping client: %s"):format(out, err, t and t.out() or ""))
  end

  setup(function()
    run_dir = H.tmpdir() .. "/run"
    topic = "attach-" .. os.time()
    local dir = H.tmpdir()
    H.write(dir .. "/app.lua", APP)
    gw = H.start { app = dir .. "/app.lua", env = ("SLUICE_RUN_DIR=%s TOPIC=%s"):format(H.q(run_dir), topic),
      ready = "http" }
    sock = run_dir .. "/" .. gw.pid .. ".sock"
    assert.truthy(H.wait_for(10, function() return H.read(gw.log):find("console on", 1, true) end, 0.05))
  end)

  teardown(function()
    if gw then gw:stop() end
    H.cleanup()
  end)

  it("listens on a socket only its owner can open, in a directory only its owner can enter", function()
    local _, out = H.run(("stat -c '%%a %%F %%u' %s %s"):format(H.q(run_dir), H.q(sock)))
    local uid = select(2, H.run("id -u")):gsub("%s+$", "")
    assert.same({ "700 directory " .. uid, "600 socket " .. uid }, H.lines(out))
    assert.truthy(H.read(gw.log):find("console on " .. sock .. " (sluice attach " .. gw.pid .. ")", 1, true))
  end)

  it("evaluates --eval in the running app and exits 0, or prints the error and exits 1", function()
    assert.same({ 0, "0\n", "" }, { attach(gw.pid .. " --eval 'stats().connections'") })
    -- With no pid: the one gateway whose console is there.
    assert.same({ 0, '"attach-app"\t1\n', "" }, { attach("--eval 'app.name, app.generation'") })
    local code, out = attach(gw.pid .. " --eval 'error(\"boom\", 0)'")
    assert.same({ 1, "error: boom\n" }, { code, out })
    code, out = attach(gw.pid .. " --eval 'x ='")
    assert.equal(1, code)
    assert.truthy(out:match("^error: console:1: unexpected symbol near '?<eof>'?\n$"), out)
  end)

  it("evaluates lines piped in, keeping globals between them and joining unfinished chunks", function()
    local code, out = attach(tostring(gw.pid), "x = 41\nx + 1\nfunction f(a)\n  return a * 2\nend\nf(x)\n")
    assert.same({ 0, "42\n82\n" }, { code, out })
  end)

  it("answers socat with a banner and prompts", function()
    local code, out = H.run(("printf 'stats().generation\\nconsumers()[1].group\\n' | socat -t 5 - UNIX-CONNECT:%s"):format(H.q(sock)))
    assert.equal(0, code)
    assert.equal(("sluice console: app attach-app, pid %d, generation 1; help() lists the helpers\n" ..
      "> 1\n> nil\n> "):format(gw.pid), out)
  end)

  it("stops an evaluation at the handler time limit and keeps serving", function()
    local code, out = attach("--eval 'while true do end'")
    assert.equal(1, code)
    assert.truthy(out:find("handler stopped: ran longer than 1000 ms (handler_timeout)", 1, true), out)
    send({ "still here" })
  end)

  it("changes the log level", function()
    assert.same({ 0, '"info"\n', "" }, { attach("--eval 'log_level()'") })
    assert.same({ 0, '"debug"\n', "" }, { attach("--eval 'log_level(\"debug\")'") })
    assert.truthy(H.read(gw.log):find("log level set to debug from the console", 1, true))
    assert.same({ 0, '"warn"\n', "" }, { attach("--eval 'log_level(\"warn\")'") })
    local code, out = attach("--eval 'log_level(\"loud\")'")
    assert.same({ 1, "error: log_level: error, warn, info or debug\n" }, { code, out })
  end)

  it("lists connections and consumers", function()
    local c = H.client_bg("probe.js", { "--url", gw.url .. "/echo", "--text", "hello", "--wait", "20" })
    assert.truthy(H.wait_for(20, function() return select(2, attach("--eval '#conns(\"/echo\")'")) == "1\n" end, 0.1))
    local _, out = attach("--eval 'local c = conns()[1]; return c.route, c.queued'")
    assert.equal('"/echo"\t0\n', out)
    _, out = attach("--eval 'local c = consumers()[1]; return c.topics, c.group, c.partitions > 0'")
    assert.equal(('"%s"\tnil\ttrue\n'):format(topic), out)
    os.execute("kill " .. c.pid)
  end)

  it("taps a route's messages, sampled, and ends after its limit with its counts", function()
    local t = attach_bg('tap("/echo", { every = 2, limit = 2 })')
    wait_tapping(1, t)
    send({ "m1", "m2", "m3", "m4", "m5" })
    local code, out = t.result()
    assert.equal(0, code)
    local lines = H.lines(out)
    assert.equal('"tapping /echo: 1 in 2, at most 100 lines/s, 2 lines; untap() stops"', lines[1])
    assert.truthy(lines[2]:match("^tap /echo conn %d+: m1$"), lines[2])
    assert.truthy(lines[3]:match("^tap /echo conn %d+: m3$"), lines[3])
    assert.equal("tap /echo ended: 2 shown, 1 skipped by sampling, 0 dropped (reader too slow)", lines[4])
    assert.equal(4, #lines)
  end)

  it("taps the messages a declared route carries in C, sampled before any Lua runs", function()
    local t = attach_bg('tap("/rows", { every = 2, limit = 2 })')
    wait_tapping(1, t)
    local args, acks = { "--url", gw.url .. "/rows", "--replies", "3", "--wait", "30" }, {}
    for i = 1, 3 do
      args[#args + 1] = "--text"
      args[#args + 1] = ('{"id":"r%d","name":"n%d"}'):format(i, i)
      acks[i] = ('{"ack":"r%d"}'):format(i)
    end
    local replies = H.client("probe.js", args).replies
    table.sort(replies)   -- acked as each row's partition answers
    assert.same(acks, replies)
    local code, out = t.result()
    assert.equal(0, code)
    local lines = H.lines(out)
    assert.equal('"tapping /rows: 1 in 2, at most 100 lines/s, 2 lines; untap() stops"', lines[1])
    assert.truthy(lines[2]:match('^tap /rows conn %d+: {"id":"r1","name":"n1"}$'), lines[2])
    assert.truthy(lines[3]:match('^tap /rows conn %d+: {"id":"r3","name":"n3"}$'), lines[3])
    assert.equal("tap /rows ended: 2 shown, 1 skipped by sampling, 0 dropped (reader too slow)", lines[4])
    -- The tap ended: the route no longer calls into Lua, and still carries rows.
    assert.same({ '{"ack":"r4"}' }, H.client("probe.js", { "--url", gw.url .. "/rows", "--replies", "1",
      "--wait", "30", "--text", '{"id":"r4","name":"n4"}' }).replies)
  end)

  it("taps a topic's records, produced and consumed", function()
    -- Every record produced so far consumed first (the tap would show them).
    assert.truthy(H.wait_for(30, function()
      return select(2, attach("--eval 'local s = stats(); return s.consumed == s.delivered and s.in_flight == 0'")) == "true\n"
    end, 0.1))
    local t = attach_bg(('tap(%q, { limit = 2 })'):format(topic))
    wait_tapping(1, t)
    send({ "r1" })
    local code, out = t.result()
    assert.equal(0, code)
    local lines = H.lines(out)
    assert.equal(("tap %s produce key=k: r1"):format(topic), lines[2])
    assert.truthy(lines[3]:match("^tap " .. topic:gsub("%-", "%%-") .. "%[%d+%]@%d+ consume key=k: r1$"), lines[3])
  end)

  it("drops and counts what a reader that stopped reading cannot take, and the gateway keeps serving", function()
    -- A client that asks for every message in full and then reads nothing.
    local slow = assert(unix.stream())
    assert(slow:connect(sock))
    assert(slow:send('tap("/echo", { rate = 1000000, bytes = 4000 })\n'))
    wait_tapping(1)
    local args = { "--url", gw.url .. "/echo", "--replies", "400", "--wait", "60" }
    for _ = 1, 400 do args[#args + 1] = "--size"; args[#args + 1] = "4000" end
    assert.equal(400, #H.client("probe.js", args).replies)
    local _, out = attach([[--eval 'local t = taps()[1]; return t.seen, t.shown + t.skipped + t.dropped, t.dropped > 0, t.skipped']])
    assert.equal("400\t400\ttrue\t0\n", out)
    -- What it holds for that reader stays within its bound (256 KiB).
    _, out = attach("--eval 'local n = 0; for c in pairs(app._console.sessions) do n = math.max(n, c:queued()) end; return n <= 256 * 1024'")
    assert.equal("true\n", out)
    slow:close()
    assert.truthy(H.wait_for(10, function() return select(2, attach("--eval '#taps()'")) == "0\n" end, 0.1))
  end)

  it("removes its socket when the gateway stops", function()
    assert.equal(0, (gw:stop()))
    assert.is_nil(io.open(sock, "r"))
    local code, _, err = attach(gw.pid .. " --eval 1")
    assert.equal(1, code)
    assert.equal(("sluice: process %d has no console (%s): is it a sluice run started with its console on?\n")
      :format(gw.pid, sock), err)
    gw = nil
  end)
end)
