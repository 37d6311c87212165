-- Subscriptions of connections and SSE streams to topics (sluice.app.feed
-- does the reading; docs/api.md). Methods of App (sluice.app mixes them in).
local core = require "sluice.core"
local util = require "sluice.util"
local Feed = require "sluice.app.feed"

local M = {}


-- app:subscribe(conn, topic [, { since =, positions =, format =, recovered = }])
-- → true, or nil, err, code. Every record of topic from now on (or after
-- the position `since`, read back from Kafka first) goes to conn.
function M:subscribe(conn, topic, opts)
  if type(conn) ~= "userdata" and type(conn) ~= "table" then util.check(1, "subscribe", conn, "userdata") end
  -- (a WebSocket joins its feed's connection set, which takes no other userdata)
  if type(conn) == "userdata" and (getmetatable(conn) or {}).__name ~= "sluice.ws.conn" then
    util.argerror(1, "subscribe", "a WebSocket connection expected, got " .. tostring(conn))
  end
  util.check(2, "subscribe", topic, "string")
  util.check(3, "subscribe", opts, "table", true)
  opts = opts or {}
  if opts.since ~= nil and type(opts.since) ~= "string" then
    util.argerror(3, "subscribe", "since must be a position string")
  end
  for _, k in ipairs({ "format", "recovered" }) do
    if opts[k] ~= nil and type(opts[k]) ~= "function" then
      util.argerror(3, "subscribe", k .. " must be a function")
    end
  end
  local ok, err, code = self:_ensure_started()
  if not ok then return nil, err, code end
  local feed
  feed, err, code = self:_feed(topic, true)
  if not feed then return nil, err, code end
  return feed:subscribe(conn, opts)
end

-- The running feed of topic, started if need be (now: from the end as of
-- now, else as of the app's start).
function M:_feed(topic, now)
  self.feeds = self.feeds or {}
  local feed = self.feeds[topic]
  if feed then return feed end
  feed = Feed.new(self, topic)
  local ok, err, code = feed:start(now)
  if not ok then return nil, err, code end
  self.feeds[topic] = feed
  self:_guard_collection()
  return feed
end

-- app:feed(topic): subscriptions to topic are served from the app's start
-- (its consumer starts with the app, from the end as of then) rather than
-- from the first app:subscribe.
function M:feed(topic)
  util.check(1, "feed", topic, "string")
  self._feed_decls = self._feed_decls or {}
  self._feed_decls[topic] = true
  if self.started then
    local ok, err, code = self:_feed(topic, true)
    if not ok then return nil, err, code end
  end
  return self
end

-- An app:sse stream: what app:subscribe sends to (conn-like: send, close).
local Stream = {}
Stream.__index = Stream
function Stream:send(data) return self._raw:write(data) end
function Stream:close()
  self.closed = true
  self._app:_sse_forget(self)
  self._app:unsubscribe(self)
  return self._raw:finish()
end

-- app:sse(path, handler [, { retry = ms }]): GET path answers a
-- text/event-stream; handler(stream, req) subscribes the stream
-- (app:subscribe) — each event's id is its position, and a browser that
-- reconnects sends the last one back (Last-Event-ID): stream.last_event_id,
-- to pass as `since`. retry: the reconnect delay the browser is told.
function M:sse(path, handler, opts)
  util.check(1, "sse", path, "string")
  util.check(2, "sse", handler, "function")
  util.check(3, "sse", opts, "table", true)
  local retry = opts and opts.retry
  if retry ~= nil and (type(retry) ~= "number" or retry < 0) then
    util.argerror(3, "sse", "retry must be a number of milliseconds")
  end
  local first = retry and ("retry: %d\n\n"):format(retry) or ": sluice\n\n"
  local app = self
  return self:http("GET", path, function(req)
    local raw = req._raw
    req:defer()
    local last = req.headers["last-event-id"]
    if last == "" then last = nil end
    local stream = setmetatable({ _raw = raw, _app = app, sse = true, path = req.path, query = req.query,
      headers = req.headers, last_event_id = last or req.query.lastEventId }, Stream)
    local ok, err = raw:stream("text/event-stream; charset=utf-8",
      { ["cache-control"] = "no-store", ["x-accel-buffering"] = "no" },
      function()
        stream.closed = true
        app:_sse_forget(stream)
        app:unsubscribe(stream)
      end)
    if not ok then return nil, err end
    -- something first: the head and a first byte go out at once
    raw:write(first)
    app:_sse_keepalive(stream)
    handler(stream, req)
  end)
end

-- Every SSE_KEEPALIVE_S a comment goes to each stream: proxies keep it
-- open, and a client that left is noticed (docs/api.md). The timer runs
-- only while there are streams: an idle gateway has no wake-ups.
local SSE_KEEPALIVE_S = 15
function M:_sse_keepalive(stream)
  self._sse_streams = self._sse_streams or setmetatable({}, { __mode = "k" })
  local streams = self._sse_streams
  local first = next(streams) == nil
  streams[stream] = true
  if not self._sse_timer then
    -- the app's own timer, not the code's: a reload keeps it
    self._sse_timer = core.timer(self.loop, function()
      for s in pairs(streams) do
        if not s:send(":\n\n") then self:_sse_forget(s) end
      end
    end)
  elseif not first then
    return
  end
  self._sse_timer:start(SSE_KEEPALIVE_S * 1000, SSE_KEEPALIVE_S * 1000)
end

function M:_sse_forget(stream)
  local streams = self._sse_streams
  if not streams then return end
  streams[stream] = nil
  if next(streams) == nil and self._sse_timer then self._sse_timer:stop() end
end

-- app:unsubscribe(conn [, topic]): from topic, or from every topic.
-- true if it was subscribed.
function M:unsubscribe(conn, topic)
  local any = false
  for t, feed in pairs(self.feeds or {}) do
    if topic == nil or t == topic then any = feed:unsubscribe(conn) or any end
  end
  return any
end

-- app:position(topic) → the position of the live stream of topic now (the
-- one a record pushed now would carry), or nil if nobody subscribed to it.
function M:position(topic)
  local feed = self.feeds and self.feeds[topic]
  return feed and feed.ready and feed:position() or nil
end

return M
