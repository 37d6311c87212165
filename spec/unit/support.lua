-- Helpers for the unit specs: an app on free ports with the embedded broker,
-- stepping its loop until something happens, an in-process WebSocket
-- client (app:connect), and a raw HTTP/1.1 client (luasocket, never
-- blocking the loop). Everything here drives the real C core.
local sluice = require "sluice"
local socket = require "socket"

local support = {}

support.now = socket.gettime

-- An app listening on a free port, with its own embedded broker on a free
-- port. Log lines are kept in app_logs[app] (printed when SLUICE_SPEC_LOG
-- is set) so that specs can assert on them.
local logs = setmetatable({}, { __mode = "k" })
function support.app(options)
  options = options or {}
  local lines = {}
  if options.listen == nil then options.listen = 0 end
  if options.embedded == nil then options.embedded = { port = 0 } end
  if options.log == nil then
    options.log = function(level, message)
      lines[#lines + 1] = level .. ": " .. message
      if os.getenv("SLUICE_SPEC_LOG") then io.stderr:write(level, ": ", message, "\n") end
    end
  end
  local app = sluice.app(options)
  logs[app] = lines
  return app
end

function support.logs(app)
  return logs[app] or {}
end

-- Step `app` until pred() returns a true value (returned), or fail after
-- `timeout` seconds (default 10) naming `what`.
function support.wait(app, pred, what, timeout)
  local deadline = socket.gettime() + (timeout or 10)
  while true do
    local v = pred()
    if v then return v end
    if socket.gettime() > deadline then
      error("timed out waiting for " .. (what or "a condition"), 2)
    end
    app:step(10)
  end
end

-- Step `app` for `seconds`, e.g. to see that something does NOT happen.
function support.settle(app, seconds)
  local deadline = socket.gettime() + seconds
  while socket.gettime() < deadline do app:step(10) end
end

-- A WebSocket client through app:connect that records what it sees:
-- c.opened, c.messages (list of {data, binary}), c.closed = {code, reason}.
function support.client(app, path)
  local c = { opened = false, messages = {} }
  local url = "ws://127.0.0.1:" .. app.port .. path
  local conn, err = app:connect(url, {
    open = function() c.opened = true end,
    message = function(_, data, binary) c.messages[#c.messages + 1] = { data, binary } end,
    close = function(_, code, reason) c.closed = { code = code, reason = reason } end,
  })
  assert(conn, err)
  c.conn = conn
  return c
end

function support.open_client(app, path)
  local c = support.client(app, path)
  support.wait(app, function() return c.opened or c.closed end, "client open on " .. path)
  assert(c.opened, "client on " .. path .. " was closed: " ..
    tostring(c.closed and c.closed.code) .. " " .. tostring(c.closed and c.closed.reason))
  return c
end

-- The n-th message the client received (waits for it): data, binary.
function support.message(app, c, n)
  support.wait(app, function() return c.messages[n] or c.closed end, "message #" .. n)
  local m = assert(c.messages[n], "connection closed before message #" .. n)
  return m[1], m[2]
end

-- A raw HTTP/1.1 request; the socket never blocks, the app is stepped
-- while waiting. Returns {status=, headers= (lower-case), body=}.
function support.http(app, method, path, body, headers)
  local tcp = assert(socket.tcp())
  assert(tcp:connect("127.0.0.1", app.port))  -- loopback: the kernel completes it
  tcp:settimeout(0)
  local lines = { method .. " " .. path .. " HTTP/1.1", "Host: 127.0.0.1:" .. app.port,
                  "Connection: close" }
  for k, v in pairs(headers or {}) do lines[#lines + 1] = k .. ": " .. v end
  if body then lines[#lines + 1] = "Content-Length: " .. #body end
  local request = table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or "")

  local sent = 0
  support.wait(app, function()
    local n, err, partial = tcp:send(request, sent + 1)
    sent = n or partial or sent
    if err and err ~= "timeout" then error("send: " .. err) end
    return sent >= #request
  end, "HTTP request sent")

  local buf, closed = "", false
  local res
  support.wait(app, function()
    local data, err, partial = tcp:receive(8192)
    buf = buf .. (data or partial or "")
    if err == "closed" then closed = true end
    if not res then
      local head_end = buf:find("\r\n\r\n", 1, true)
      if not head_end then return closed end
      res = { headers = {} }
      local head = buf:sub(1, head_end - 1)
      buf = buf:sub(head_end + 4)
      res.status = tonumber(head:match("^HTTP/1%.%d (%d%d%d)"))
      res.status_line = head:match("^[^\r\n]*")
      for k, v in head:gmatch("\r\n([^:\r\n]+):%s*([^\r\n]*)") do
        res.headers[k:lower()] = v
      end
    end
    local length = tonumber(res.headers["content-length"])
    if length then return #buf >= length end
    if (res.headers["transfer-encoding"] or ""):lower() == "chunked" then
      return buf:find("\r\n0\r\n\r\n", 1, true) or buf:find("^0\r\n\r\n") or closed
    end
    return closed
  end, method .. " " .. path .. " response")
  tcp:close()
  assert(res, "connection closed without a response")

  if (res.headers["transfer-encoding"] or ""):lower() == "chunked" then
    local out, pos = {}, 1
    while true do
      local size_hex, after = buf:match("^(%x+)[^\r\n]*\r\n()", pos)
      local size = tonumber(size_hex or "0", 16)
      if size == 0 then break end
      out[#out + 1] = buf:sub(after, after + size - 1)
      pos = after + size + 2
    end
    res.body = table.concat(out)
  else
    local length = tonumber(res.headers["content-length"])
    res.body = length and buf:sub(1, length) or buf
  end
  return res
end

return support
