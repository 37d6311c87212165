-- Helpers for the integration specs: start a real `sluice run` process on
-- free ports, talk to it over HTTP, and run the independent clients (the
-- node scripts in spec/clients, and kcat) and parse what they print.
--
-- Environment (set by spec/tests.cmake):
--   SLUICE_BIN      the command to test (build/bin/sluice-lua5.4)
--   SLUICE_ROOT     the source tree
--   SLUICE_CLIENTS  spec/clients (with node_modules installed)
local socket = require "socket"
local json = require "cjson"

local M = {}

M.root = os.getenv "SLUICE_ROOT" or "."
M.bin = os.getenv "SLUICE_BIN" or (M.root .. "/build/bin/sluice")
M.clients = os.getenv "SLUICE_CLIENTS" or (M.root .. "/spec/clients")
M.node = os.getenv "SLUICE_NODE" or "node"
M.kcat = os.getenv "SLUICE_KCAT" or "kcat"
M.movies = M.root .. "/scripts/apps/movies/app.lua"

-- ---- small utilities -----------------------------------------------------

function M.sleep(s) socket.sleep(s) end
M.now = socket.gettime

-- Quotes a string for /bin/sh.
function M.q(s)
  return "'" .. tostring(s):gsub("'", [['\'']]) .. "'"
end

function M.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read "a"
  f:close()
  return s
end

function M.write(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

function M.lines(s)
  local t = {}
  for l in (s or ""):gmatch "[^\n]+" do t[#t + 1] = l end
  return t
end

-- Runs a shell command; returns exit code, stdout, stderr.
function M.run(cmd)
  local dir = M.tmpdir()
  local ok, how, code = os.execute("(" .. cmd .. ") >" .. dir .. "/out 2>" .. dir .. "/err </dev/null")
  local out, err = M.read(dir .. "/out"), M.read(dir .. "/err")
  os.execute("rm -rf " .. dir)
  if how == "signal" then code = 128 + code end
  return code, out, err
end

local tmpdirs = {}
function M.tmpdir()
  local p = io.popen "mktemp -d /tmp/sluice-spec.XXXXXX"
  local d = p:read "l"
  p:close()
  tmpdirs[#tmpdirs + 1] = d
  return d
end

-- Polls fn() every `step` seconds until it returns a truthy value or
-- `timeout` seconds pass; returns that value (or nil).
function M.wait_for(timeout, fn, step)
  local deadline = M.now() + timeout
  repeat
    local v = fn()
    if v then return v end
    M.sleep(step or 0.1)
  until M.now() > deadline
  return fn()
end

-- A port nobody listens on right now.
function M.free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

-- n consecutive ports free now, below the kernel's ephemeral range (where
-- free_port's and every outgoing connection's ports come from, so that
-- none of them takes one of these meanwhile): for a base port the app
-- adds to, like metrics' listen port with --workers.
function M.free_ports(n)
  math.randomseed(os.time() + M.self_pid())
  for _ = 1, 200 do
    local base, ok = math.random(20000, 32000 - n), true
    for p = base, base + n - 1 do
      local s = socket.bind("127.0.0.1", p)
      if s then s:close() else ok = false; break end
    end
    if ok then return base end
  end
  error("no " .. n .. " consecutive free ports")
end

-- The pid of this Lua process.
function M.self_pid()
  return tonumber(M.read("/proc/self/stat"):match "^(%d+)")
end

function M.alive(pid)
  return os.execute("kill -0 " .. pid .. " 2>/dev/null") == true
end

-- CPU time (user + system) of a process in seconds, from /proc/PID/stat.
local clk_tck
-- How many times the process's main thread (the event loop) has blocked
-- and been woken since it started: its voluntary context switches. Unlike
-- CPU time this does not grow with the machine's load, only with events.
function M.loop_wakeups(pid)
  local status = assert(M.read("/proc/" .. pid .. "/task/" .. pid .. "/status"), "no such process " .. pid)
  return tonumber(status:match "\nvoluntary_ctxt_switches:%s*(%d+)")
end

-- Waits (up to `timeout` s) until the process's loop has not been woken
-- for `quiet` seconds in a row; true if it got there.
function M.wait_quiet(pid, quiet, timeout)
  local last, quiet_from = M.loop_wakeups(pid), M.now()
  return M.wait_for(timeout, function()
    local now = M.loop_wakeups(pid)
    if now ~= last then last, quiet_from = now, M.now() end
    return M.now() - quiet_from >= quiet
  end, 0.25)
end

function M.cpu_seconds(pid)
  if not clk_tck then
    local p = io.popen "getconf CLK_TCK"
    clk_tck = tonumber(p:read "l") or 100
    p:close()
  end
  local stat = assert(M.read("/proc/" .. pid .. "/stat"), "no such process " .. pid)
  -- fields after the ")" that closes the command name: state is field 3
  local rest = stat:match "%) (.*)$"
  local f = {}
  for w in rest:gmatch "%S+" do f[#f + 1] = w end
  return (tonumber(f[12]) + tonumber(f[13])) / clk_tck   -- utime, stime (fields 14, 15)
end

-- ---- HTTP ------------------------------------------------------------------

-- A minimal HTTP/1.1 GET: returns status, body (or nil, error).
function M.http(port, path, method)
  local c = socket.tcp()
  c:settimeout(5)
  local ok, err = c:connect("127.0.0.1", port)
  if not ok then c:close() return nil, err end
  c:send((method or "GET") .. " " .. path .. " HTTP/1.1\r\nHost: 127.0.0.1:" .. port ..
         "\r\nConnection: close\r\n\r\n")
  local status_line, e = c:receive "*l"
  if not status_line then c:close() return nil, e end
  local status = tonumber(status_line:match "^HTTP/1%.%d (%d%d%d)")
  local length, chunked
  while true do
    local h = c:receive "*l"
    if not h or h == "" then break end
    local name, value = h:match "^([^:]+):%s*(.-)%s*$"
    if name then
      name = name:lower()
      if name == "content-length" then length = tonumber(value) end
      if name == "transfer-encoding" and value:lower():find "chunked" then chunked = true end
    end
  end
  local body
  if chunked then
    local parts = {}
    while true do
      local size = tonumber((c:receive "*l" or "0"):match "%x+", 16) or 0
      if size == 0 then break end
      parts[#parts + 1] = c:receive(size)
      c:receive "*l"
    end
    body = table.concat(parts)
  elseif length then
    body = c:receive(length)
  else
    local data, _, partial = c:receive "*a"
    body = data or partial
  end
  c:close()
  return status, body
end

-- GET path, expecting JSON; returns status, decoded body.
function M.http_json(port, path)
  local status, body = M.http(port, path)
  if not status then return nil, body end
  local ok, v = pcall(json.decode, body or "")
  return status, ok and v or body
end

-- ---- the gateway process -----------------------------------------------------

local Gateway = {}
Gateway.__index = Gateway

-- Starts `sluice run APP --listen P --embedded-port Q [extra args]` in the
-- background with stdout/stderr captured in a temp dir; waits for the port
-- to answer (GET /healthz → 200 when `ready` is "healthz", the default; any
-- HTTP answer when "http"). Returns the gateway object.
-- opts: app, args (list), kafka (bootstrap: no embedded broker), env
-- (string of VAR=value prefixes), ready ("log": its "listening on" line,
-- for TLS), timeout
function M.start(opts)
  opts = opts or {}
  local self = setmetatable({}, Gateway)
  self.dir = M.tmpdir()
  self.port = opts.port or M.free_port()
  local listen = opts.host and M.q(opts.host .. ":" .. self.port) or self.port
  local args = { M.q(opts.app or M.movies), "--listen", listen }
  if opts.kafka then          -- an external broker (e.g. another gateway's)
    self.bootstrap = opts.kafka
    args[#args + 1] = "--kafka " .. M.q(opts.kafka)
  else
    self.kafka_port = opts.embedded_port or M.free_port()
    self.bootstrap = "127.0.0.1:" .. self.kafka_port
    args[#args + 1] = "--embedded-port " .. self.kafka_port
  end
  self.log = self.dir .. "/stderr.log"
  self.out = self.dir .. "/stdout.log"
  self.url = "ws://127.0.0.1:" .. self.port
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = M.q(a) end
  -- A monitor shell records the pid and, when it ends, the exit status; a
  -- watchdog stops the gateway if this busted process dies without teardown.
  local inner = string.format("%s %s run %s >%s 2>%s </dev/null & pid=$!; echo $pid >%s/pid; " ..
    "(while kill -0 %d && kill -0 $pid; do sleep 1; done 2>/dev/null; " ..
    "kill -0 $pid 2>/dev/null && kill -TERM $pid && sleep 5 && kill -0 $pid 2>/dev/null && kill -KILL $pid) " ..
    ">/dev/null 2>&1 & wait $pid; echo $? >%s/exit",
    opts.env or "", M.q(M.bin), table.concat(args, " "), M.q(self.out), M.q(self.log), self.dir,
    M.self_pid(), self.dir)
  os.execute("sh -c " .. M.q(inner) .. " >/dev/null 2>&1 &")
  self.pid = M.wait_for(5, function()
    return tonumber(M.read(self.dir .. "/pid") or "")
  end, 0.02)
  assert(self.pid, "sluice did not start")
  local ready = M.wait_for(opts.timeout or 20, function()
    if self:exit_code() then return "exited" end
    -- a TLS gateway: its last start-up line (plain HTTP would not do)
    if opts.ready == "log" then return (M.read(self.log) or ""):find("listening on", 1, true) and "up" end
    local status = M.http(self.port, "/healthz")
    if opts.ready == "http" then return status and "up" end
    return status == 200 and "up"
  end, 0.1)
  if ready ~= "up" then
    local log = M.read(self.log) or ""
    self:stop()
    error(("sluice did not become ready (%s); its stderr:\n%s"):format(ready or "timeout", log), 2)
  end
  return self
end

-- Exit status once the process has ended, else nil.
function Gateway:exit_code()
  return tonumber(M.read(self.dir .. "/exit") or "")
end

function Gateway:stderr() return M.read(self.log) or "" end

function Gateway:signal(sig)
  os.execute("kill -" .. sig .. " " .. self.pid .. " 2>/dev/null")
end

-- Waits up to `timeout` seconds for the process to end; returns its status.
function Gateway:wait(timeout)
  return M.wait_for(timeout or 10, function() return self:exit_code() end, 0.05)
end

-- SIGTERM, then SIGKILL after `grace` seconds. Returns the exit status and
-- whether it had to be killed.
function Gateway:stop(grace)
  if self:exit_code() then return self:exit_code(), false end
  self:signal "TERM"
  local code = self:wait(grace or 10)
  if code then return code, false end
  self:signal "KILL"
  return self:wait(5), true
end

function Gateway:healthz()
  return M.http_json(self.port, "/healthz")
end

-- The /healthz body as a table ({} while it does not answer 200 with JSON).
function Gateway:health()
  local status, body = self:healthz()
  if status == 200 and type(body) == "table" then return body end
  return {}
end

-- ---- independent clients -------------------------------------------------------

local function node_cmd(script, args)
  local parts = { M.q(M.node), M.q(M.clients .. "/" .. script) }
  for _, a in ipairs(args) do parts[#parts + 1] = M.q(a) end
  return table.concat(parts, " ")
end

local function decode_last_line(out, what)
  local lines = M.lines(out)
  local last = lines[#lines]
  local ok, v = pcall(json.decode, last or "")
  if not ok then error(what .. " printed no JSON result: " .. tostring(out), 3) end
  return v
end

-- Runs a node client to completion; returns its decoded JSON result.
function M.client(script, args)
  local code, out, err = M.run(node_cmd(script, args))
  if code ~= 0 then error(("%s failed (%s): %s"):format(script, code, err), 2) end
  return decode_last_line(out, script)
end

-- Starts a node client in the background; returns a handle whose
-- :result(timeout) waits for and decodes its output.
function M.client_bg(script, args)
  local dir = M.tmpdir()
  local h = { dir = dir, script = script }
  os.execute(string.format("sh -c %s >/dev/null 2>&1 &", M.q(string.format(
    "%s >%s/out 2>%s/err </dev/null & echo $! >%s/pid; wait $!; echo $? >%s/exit",
    node_cmd(script, args), dir, dir, dir, dir))))
  h.pid = M.wait_for(5, function() return tonumber(M.read(dir .. "/pid") or "") end, 0.02)
  function h:done() return tonumber(M.read(dir .. "/exit") or "") end
  function h:result(timeout)
    local code = M.wait_for(timeout or 30, function() return self:done() end, 0.05)
    if not code then
      os.execute("kill " .. self.pid .. " 2>/dev/null")
      error(script .. " did not finish in time", 2)
    end
    return decode_last_line(M.read(dir .. "/out"), script)
  end
  function h:kill() os.execute("kill " .. self.pid .. " 2>/dev/null") end
  return h
end

-- ---- kcat ----------------------------------------------------------------------

-- Reads a topic from the beginning to its end: returns a list of
-- { key=, value=, headers= } (headers as kcat prints them: "k=v,k=v").
-- Polls until at least `want` records are there or `timeout` seconds pass.
function M.kcat_consume(bootstrap, topic, want, timeout)
  local records = {}
  local deadline = M.now() + (timeout or 30)
  while true do
    local code, out = M.run(string.format("%s -C -b %s -t %s -o beginning -e -q -m 10 -f %s",
      M.q(M.kcat), bootstrap, M.q(topic), M.q("%k\\t%h\\t%s\\n")))
    records = {}
    if code == 0 then
      for line in (out or ""):gmatch "([^\n]*)\n" do
        local k, h, v = line:match "^(.-)\t(.-)\t(.*)$"
        if k then records[#records + 1] = { key = k, headers = h, value = v } end
      end
    end
    if #records >= (want or 1) or M.now() > deadline then break end
    M.sleep(0.5)
  end
  return records
end

-- Produces one record with kcat. Returns true on success.
function M.kcat_produce(bootstrap, topic, value, key)
  local cmd = string.format("printf '%%s\\n' %s | %s -P -b %s -t %s %s",
    M.q(value), M.q(M.kcat), bootstrap, M.q(topic), key and ("-k " .. M.q(key)) or "")
  local code, _, err = M.run(cmd)
  return code == 0, err
end

-- ---- fault injection and resources (faults, backpressure, shutdown specs) ----

-- Resident memory of a process in kB (VmRSS from /proc/PID/status).
function M.rss_kb(pid)
  local s = M.read("/proc/" .. pid .. "/status")
  return s and tonumber(s:match "VmRSS:%s*(%d+)")
end

-- Starts bench/soak/broker.lua: an embedded Kafka of `opts.brokers` (3)
-- brokers in a process of its own, with an HTTP control port. Returns the
-- process object; .bootstrap is its broker list (give it to gateways as
-- --kafka and to kcat) and :fault(path) calls a control endpoint
-- ("/down?id=1", …), raising unless it answers 200. opts.topic: create
-- it with 4 partitions, every one led by broker 1 ("the leader").
function M.start_fault_broker(opts)
  opts = opts or {}
  local b = M.start { app = M.root .. "/bench/soak/broker.lua", kafka = "127.0.0.1:9",
                      env = "SLUICE_FAULT_BROKERS=" .. (opts.brokers or 3) }
  local _, h = b:healthz()
  b.bootstrap = h.bootstrap
  function b.fault(self, path)
    local status, body = M.http(self.port, path)
    if status ~= 200 then error(("fault %s: %s %s"):format(path, tostring(status), tostring(body)), 2) end
    return json.decode(body)
  end
  if opts.topic then
    b:fault("/topic?name=" .. opts.topic .. "&partitions=4")
    for p = 0, 3 do b:fault(("/leader?topic=%s&partition=%d&id=1"):format(opts.topic, p)) end
  end
  return b
end

-- Stops the given processes (nil ones skipped), saying which needed SIGKILL,
-- and removes the temp dirs.
function M.stop_all(...)
  for i = 1, select("#", ...) do
    local p = select(i, ...)
    if p then
      local _, killed = p:stop()
      if killed then print("# needed SIGKILL; stderr:\n" .. p:stderr()) end
    end
  end
  M.cleanup()
end

-- ---- Apache Kafka (tools/kafka.sh) -------------------------------------------

-- The suite's shared Apache Kafka: started once by the ctest fixture
-- kafka.start, its bootstrap servers in the file SLUICE_KAFKA_FILE. Specs
-- sharing it keep to topics and groups of their own (M.prefix) and never
-- stop it; a spec that takes brokers down starts its own (M.start_kafka).
function M.kafka()
  local file = os.getenv "SLUICE_KAFKA_FILE"
  local bootstrap = file and M.read(file)
  assert(bootstrap and bootstrap:match "%d", "no Apache Kafka for this spec: run it through ctest " ..
    "(fixture kafka.start) or set SLUICE_KAFKA_FILE to a file with the bootstrap servers")
  return (bootstrap:gsub("%s+$", ""))
end

-- A prefix for topic and group names that no other run of any spec uses.
function M.prefix(name)
  return ("%s-%d-%d."):format(name, M.self_pid(), os.time())
end

local kafka_sh = M.root .. "/tools/kafka.sh"

-- Starts a cluster of its own (tools/kafka.sh: `brokers` 1 or 3) under a
-- dir of its own. Returns an object: .bootstrap, :signal(node, SIG[, after]),
-- :restart(node), :stop().
function M.start_kafka(opts)
  opts = opts or {}
  -- Under the build tree beside the shared broker, when there is one.
  local base = os.getenv "SLUICE_KAFKA_FILE"
  base = base and base:match "^(.*)/[^/]*$" or "/tmp"
  local p = io.popen("mktemp -d " .. M.q(base .. "/private.XXXXXX"))
  local k = { dir = p:read "l" }
  p:close()
  tmpdirs[#tmpdirs + 1] = k.dir
  local code, out, err = M.run(("%s start --brokers %d --dir %s"):format(
    M.q(kafka_sh), opts.brokers or 1, M.q(k.dir)))
  if code ~= 0 then error("tools/kafka.sh start failed: " .. tostring(err), 2) end
  k.bootstrap = M.lines(out)[1]
  -- A watchdog stops the cluster if this busted process dies without
  -- teardown (e.g. killed by ctest's timeout); it ends with the cluster.
  os.execute(("sh -c %s >/dev/null 2>&1 &"):format(M.q(
    ("while kill -0 %d && [ -e %s/bootstrap ]; do sleep 1; done 2>/dev/null; %s stop --dir %s"):format(
      M.self_pid(), M.q(k.dir), M.q(kafka_sh), M.q(k.dir)))))
  -- (`after` seconds: in the background, later)
  function k.signal(self, node, sig, after)
    local cmd = ("%s signal --dir %s %d %s"):format(M.q(kafka_sh), M.q(self.dir), node, sig)
    if after then
      os.execute(("(sleep %s; %s) >/dev/null 2>&1 &"):format(after, cmd))
    else
      assert(M.run(cmd) == 0, "kafka.sh signal failed")
    end
  end
  function k.restart(self, node)
    local c, _, e = M.run(("%s restart-node --dir %s %d"):format(M.q(kafka_sh), M.q(self.dir), node))
    if c ~= 0 then error("restart of node " .. node .. " failed: " .. tostring(e), 2) end
  end
  function k.stop(self)
    M.run(("%s stop --dir %s"):format(M.q(kafka_sh), M.q(self.dir)))
  end
  return k
end

-- Creates topics (a name or a list) with `partitions` partitions
-- (kafkajs' admin client); opts: replicas, compact.
function M.create_topic(bootstrap, topics, partitions, opts)
  opts = opts or {}
  local args = { "--brokers", bootstrap, "--topic", type(topics) == "table" and table.concat(topics, ",") or topics,
    "--create", tostring(partitions), "--replicas", tostring(opts.replicas or 1) }
  if opts.compact then args[#args + 1] = "--compact" end
  return M.client("kafkajs.js", args)
end

-- Topics as kafka-python's admin client sees them (spec/clients/kafka_admin.py):
-- { [topic] = { error = Kafka's code (0, or 3: no such topic), partitions =
-- { { partition, leader, replicas, isr } }, configs = { [name] = { value, source } } } }.
function M.describe_topics(bootstrap, topics)
  local args = {}
  for _, t in ipairs(topics) do args[#args + 1] = "--topic " .. M.q(t) end
  local code, out, err = M.run(("%s %s --brokers %s %s"):format(M.q(os.getenv "SLUICE_PYTHON" or "python3"),
    M.q(M.clients .. "/kafka_admin.py"), M.q(bootstrap), table.concat(args, " ")))
  if code ~= 0 then error("kafka_admin.py failed: " .. tostring(err), 2) end
  return decode_last_line(out, "kafka_admin.py")
end

-- Removes every temp dir this helper created.
function M.cleanup()
  for _, d in ipairs(tmpdirs) do os.execute("rm -rf " .. M.q(d)) end
  tmpdirs = {}
end

M.json = json
return M
