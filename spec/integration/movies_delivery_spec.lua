-- The movies app's promise, on its own code (scripts/apps/movies/app.lua,
-- run by `sluice run`): a row is acked only once Kafka has stored it, and
-- a row Kafka refuses reaches its client as {"error":"CODE: message","id":…}
-- with no ack. Kafka is the embedded (mock) cluster in a process of its
-- own (bench/soak/broker.lua), broken from outside; the client is node
-- `ws` (probe.js), Kafka's content is read with kcat.
--
-- No timing is asserted. "Not before" is shown by order on one WebSocket:
-- the gateway handles a connection's messages in turn, so a reply the
-- gateway sends at once to a later message (here: an unknown subscription)
-- arrives after anything it sent while handling the row.
local H = require "integration.helper"
local json = H.json

local TOPIC = "movie-results"
-- A message the app answers at once, without Kafka (no dead letter either).
local MARKER = '{"subscribe":"other"}'
local MARKER_REPLY = '{"error":"unknown subscription: only movie-stats is offered"}'

local function row(id)
  return json.encode { id = id, actorName = "Tom Hanks", actorId = "nm0000158",
                       movieId = "tt0109830", movieName = "Forrest Gump", movieMinutes = 142 }
end

describe("movies app: acks and Kafka failures", function()
  local broker, gw

  setup(function()
    -- Every partition led by broker 1: stopping it holds every row.
    broker = H.start_fault_broker { brokers = 3, topic = TOPIC }
    gw = H.start { kafka = broker.bootstrap, env = "SLUICE_MOVIES_PROCESSING=0" }
    -- The producer's first row: connection, metadata and producer id are
    -- set up before the faults below.
    local r = H.client("probe.js", { "--url", gw.url .. "/", "--text", row("W1"),
                                     "--replies", "1", "--wait", "30" })
    assert.are.same({ '{"ack":"W1"}' }, r.replies)
  end)

  teardown(function() H.stop_all(gw, broker) end)

  -- Row ids in the topic → how many times each is there.
  local function ids_in_kafka(want)
    local count = {}
    for _, rec in ipairs(H.kcat_consume(broker.bootstrap, TOPIC, want, 30)) do
      local id = json.decode(rec.value).id
      count[id] = (count[id] or 0) + 1
    end
    return count
  end

  local function counters()
    local status, h = gw:healthz()
    assert.are.equal(200, status)
    return { produced = h.produced, delivered = h.delivered, delivery_failed = h.delivery_failed }
  end

  it("tells the client the reason when Kafka refuses a row, and does not ack it", function()
    local before = counters()
    -- The next produce request fails, not retriably. (Not an authorization
    -- error: librdkafka then refuses the whole topic at produce for a while.)
    broker:fault "/errors?api=Produce&codes=INVALID_RECORD"
    local r = H.client("probe.js", { "--url", gw.url .. "/",
      "--text", row("F1"), "--await", "1", "--text", MARKER, "--await", "2",
      "--text", row("F2"), "--replies", "3", "--wait", "60" })
    -- Anything the delivery callback sent for F1 arrives before the marker's reply.
    assert.are.same({
      '{"error":"INVALID_RECORD: Broker: Broker failed to validate record","id":"F1"}',
      MARKER_REPLY,
      '{"ack":"F2"}',
    }, r.replies)
    assert.are.same({ code = 1000, by = "client" }, { code = r.close.code, by = r.close.by })
    assert.are.same({ produced = before.produced + 2, delivered = before.delivered + 1,
                      delivery_failed = before.delivery_failed + 1 }, counters())
    assert.are.same({ W1 = 1, F2 = 1 }, ids_in_kafka(2))
  end)

  it("acks a row only once Kafka has it: nothing while the leader is down, the ack once it is back", function()
    local before = counters()
    local log = H.tmpdir() .. "/replies"
    broker:fault "/down?id=1"
    local h = H.client_bg("probe.js", { "--url", gw.url .. "/", "--log", log,
      "--text", row("H1"), "--text", MARKER, "--replies", "2", "--wait", "120" })
    -- The gateway has handled both messages: the marker's reply is here.
    assert.truthy(H.wait_for(30, function() return H.read(log) end, 0.05), "no reply to the marker")
    local held, seen = counters(), H.read(log)
    broker:fault "/up?id=1"
    -- While the row could not be stored, the client had the marker's reply only.
    assert.are.equal(json.encode(MARKER_REPLY) .. "\n", seen)
    assert.are.same({ produced = before.produced + 1, delivered = before.delivered,
                      delivery_failed = before.delivery_failed }, held)
    local r = h:result(120)
    assert.are.same({ MARKER_REPLY, '{"ack":"H1"}' }, r.replies)
    assert.are.same({ produced = before.produced + 1, delivered = before.delivered + 1,
                      delivery_failed = before.delivery_failed }, counters())
    assert.are.same({ W1 = 1, F2 = 1, H1 = 1 }, ids_in_kafka(3))
  end)
end)
