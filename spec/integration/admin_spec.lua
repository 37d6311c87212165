-- sluice.admin against Apache Kafka (the suite's shared broker, one node):
-- topics created, described, re-configured and deleted by sluice, each
-- result also read by clients that share no code with it (kcat's metadata
-- listing, kafka-python's admin client), and every failure a user can
-- cause answered nil, "CODE: message", "CODE".
local H = require "integration.helper"
local sluice = require "sluice"

-- kafka-python's view of topics.
local function py_describe(kafka, ...) return H.describe_topics(kafka, { ... }) end

-- The partition count kcat's metadata listing shows, or nil.
local function kcat_partitions(kafka, topic)
  local code, out = H.run(("%s -L -b %s -t %s"):format(H.q(H.kcat), H.q(kafka), H.q(topic)))
  if code ~= 0 then return nil end
  return tonumber((out or ""):match('topic "[^"]+" with (%d+) partitions'))
end

describe("sluice.admin on Apache Kafka", function()
  local kafka, admin, P

  setup(function()
    kafka = H.kafka()
    P = H.prefix "admin"
    admin = assert(sluice.admin { kafka = { ["bootstrap.servers"] = kafka } })
  end)

  teardown(function()
    if admin then admin:close() end
    H.cleanup()
  end)

  it("creates a topic with partitions, replication and configs, as other clients see it", function()
    local name = P .. "orders"
    assert.equal("created", admin:create_topic(name, { partitions = 3, replication = 1,
      config = { ["cleanup.policy"] = "compact", ["retention.ms"] = 3600000 } }))

    local info = assert(admin:describe_topic(name))
    assert.equal(name, info.name)
    assert.equal(3, #info.partitions)
    assert.equal(1, info.replication)
    local brokers = assert(admin:brokers())
    assert.equal(1, #brokers)
    local id = brokers[1].id
    for i, p in ipairs(info.partitions) do
      assert.same({ partition = i - 1, leader = id, replicas = { id }, isr = { id } }, p)
    end
    assert.equal(kafka, ("%s:%d"):format(brokers[1].host, brokers[1].port))

    local configs = assert(admin:describe_configs(name))
    assert.equal("compact", configs["cleanup.policy"].value)
    assert.equal("DYNAMIC_TOPIC_CONFIG", configs["cleanup.policy"].source)
    assert.is_false(configs["cleanup.policy"].default)
    assert.equal("3600000", configs["retention.ms"].value)
    assert.equal("DEFAULT_CONFIG", configs["segment.bytes"].source)

    assert.equal(3, kcat_partitions(kafka, name))
    local py = py_describe(kafka, name)[name]
    assert.equal(0, py.error)
    assert.equal(3, #py.partitions)
    assert.same({ id }, py.partitions[1].replicas)
    assert.equal("compact", py.configs["cleanup.policy"].value)
    assert.equal("3600000", py.configs["retention.ms"].value)
  end)

  it("alters only the configs named, and false puts one back to its default", function()
    local name = P .. "altered"
    assert.equal("created", admin:create_topic(name, { partitions = 1,
      config = { ["cleanup.policy"] = "compact" } }))
    assert.is_true(admin:alter_configs(name, { ["retention.ms"] = 120000 }))
    local py = py_describe(kafka, name)[name].configs
    assert.equal("120000", py["retention.ms"].value)
    assert.equal("compact", py["cleanup.policy"].value)   -- kept

    assert.is_true(admin:alter_configs(name, { ["cleanup.policy"] = false }))
    local configs = assert(admin:describe_configs(name))
    assert.equal("delete", configs["cleanup.policy"].value)
    assert.equal("DEFAULT_CONFIG", configs["cleanup.policy"].source)
    assert.equal("120000", configs["retention.ms"].value)
    py = py_describe(kafka, name)[name].configs
    assert.equal("delete", py["cleanup.policy"].value)
  end)

  it("deletes a topic: gone for sluice and for kafka-python", function()
    local name = P .. "gone"
    assert.equal("created", admin:create_topic(name, { partitions = 2 }))
    assert.is_true(admin:delete_topic(name))
    local ok, err, code = admin:describe_topic(name)
    assert.is_nil(ok)
    assert.equal("UNKNOWN_TOPIC_OR_PART", code)
    assert.equal("UNKNOWN_TOPIC_OR_PART: ", err:sub(1, 23))
    assert.equal(3, py_describe(kafka, name)[name].error)   -- UNKNOWN_TOPIC_OR_PARTITION
  end)

  it("answers with callbacks on the loop, each once", function()
    local name = P .. "async"
    local got = {}
    assert.is_true(admin:create_topic(name, { partitions = 2 }, function(...) got.create = { ... } end))
    assert.is_true(admin:describe_topics({ name, P .. "nothing" }, function(...) got.describe = { ... } end))
    while not (got.create and got.describe) do admin.loop:run_once(100) end
    assert.same({ "created" }, got.create)
    -- (asked together: described before or after the create landed)
    local missing = got.describe[1][P .. "nothing"]
    assert.equal("UNKNOWN_TOPIC_OR_PART", missing.code)
    assert.equal(0, admin:pending())
  end)

  -- Each call: what it returns, exactly as a user sees it.
  local function refused(want_code, ...)
    local n = select("#", ...)
    local ok, err, code = ...
    assert.equal(3, n)
    assert.is_nil(ok)
    assert.equal(want_code, code)
    assert.equal(want_code .. ": ", err:sub(1, #want_code + 2))
    assert.is_true(#err > #want_code + 2, "no message after the code")
    return err
  end

  it("refuses what Kafka refuses, with Kafka's code", function()
    local name = P .. "exists"
    assert.equal("created", admin:create_topic(name, { partitions = 1 }))
    local err = refused("TOPIC_ALREADY_EXISTS", admin:create_topic(name, { partitions = 1 }))
    assert.truthy(err:find(name, 1, true), err)
    assert.equal("exists", admin:create_topic(name, { partitions = 5, exist_ok = true }))
    -- one broker: a replication factor of 3 cannot be had
    refused("INVALID_REPLICATION_FACTOR", admin:create_topic(P .. "rf3", { partitions = 1, replication = 3 }))
    refused("INVALID_CONFIG", admin:create_topic(P .. "badcfg", { config = { ["cleanup.policy"] = "sometimes" } }))
    refused("INVALID_CONFIG", admin:create_topic(P .. "nosuch", { config = { ["no.such.config"] = "1" } }))
    refused("TOPIC_EXCEPTION", admin:create_topic(P .. "bad name!"))
    refused("UNKNOWN_TOPIC_OR_PART", admin:delete_topic(P .. "never"))
    refused("UNKNOWN_TOPIC_OR_PART", admin:describe_topic(P .. "never"))
    refused("UNKNOWN_TOPIC_OR_PART", admin:describe_configs(P .. "never"))
    refused("UNKNOWN_TOPIC_OR_PART", admin:alter_configs(P .. "never", { ["retention.ms"] = 1000 }))
    refused("INVALID_CONFIG", admin:alter_configs(name, { ["retention.ms"] = "soon" }))
    -- none of the refused topics exists (3: UNKNOWN_TOPIC_OR_PARTITION)
    local py = py_describe(kafka, P .. "rf3", P .. "badcfg", P .. "nosuch")
    for _, t in ipairs { "rf3", "badcfg", "nosuch" } do assert.equal(3, py[P .. t].error) end
  end)

  it("a cluster that does not answer: TRANSPORT or TIMED_OUT after the timeout, and a closed client says DESTROY", function()
    local dead = assert(sluice.admin { kafka = { ["bootstrap.servers"] = "127.0.0.1:" .. H.free_port() } })
    local ok, err, code = dead:describe_topic("x", { timeout = 1000 })
    assert.is_nil(ok)
    assert.truthy(code == "TRANSPORT" or code == "TIMED_OUT", err)
    refused("TIMED_OUT", dead:create_topic("x", { timeout = 1000 }))
    local answer
    assert.is_true(dead:create_topic("y", { timeout = 60000 }, function(...) answer = { ... } end))
    assert.equal(1, dead:pending())
    dead:close()
    assert.same({ nil, "DESTROY: the admin client was closed", "DESTROY" }, answer)
    assert.has_error(function() dead:describe_topic("x") end)
  end)
end)
