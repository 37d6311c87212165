-- sluice.admin's argument checking (misuse raises at the caller's line,
-- naming the argument) and its requests on the embedded broker, whose
-- metadata it describes (topics are created there with the broker's own
-- API: the mock answers no CreateTopics). Apache Kafka:
-- spec/integration/admin_spec.lua.
local sluice = require "sluice"
local support = require "unit.support"

local THIS = "admin_spec.lua:%d+: "

-- The error fn raises, which must name this file's line and say msg.
local function raises(msg, fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "did not raise")
  assert.truthy(tostring(err):find(THIS), "not reported at the caller's line: " .. tostring(err))
  assert.truthy(tostring(err):find(msg, 1, true), tostring(err))
end

describe("sluice.admin: misuse raises", function()
  local admin
  setup(function()
    -- nothing listens there: no request below is ever sent
    admin = assert(sluice.admin { kafka = { ["bootstrap.servers"] = "127.0.0.1:9" } })
  end)
  teardown(function() admin:close() end)

  it("checks what it is given to connect to", function()
    raises("bad argument #1 to 'admin' (app or options table expected, got number)", function() sluice.admin(42) end)
    raises("bad argument #1 to 'admin' (kafka['bootstrap.servers'] is required (or pass an app))",
      function() sluice.admin {} end)
    raises("unknown option 'brokers'", function() sluice.admin { brokers = "x" } end)
  end)

  it("checks topic names, options, configs and callbacks", function()
    raises("bad argument #1 to 'create_topic' (topic name expected, got nil)", function() admin:create_topic() end)
    raises("bad argument #1 to 'create_topic' (topic name expected, got an empty string)",
      function() admin:create_topic("") end)
    raises("bad argument #2 to 'create_topic' ('partitions' must be an integer from 1 to 1000000, got 0)",
      function() admin:create_topic("t", { partitions = 0 }) end)
    raises("'partitions' must be an integer from 1 to 1000000, got 1.5",
      function() admin:create_topic("t", { partitions = 1.5 }) end)
    raises("'replication' must be an integer from 1 to 32767, got three",
      function() admin:create_topic("t", { replication = "three" }) end)
    raises("bad argument #2 to 'create_topic' (unknown option 'partition'",
      function() admin:create_topic("t", { partition = 3 }) end)
    raises("config 'retention.ms' must be a string or number, got table",
      function() admin:create_topic("t", { config = { ["retention.ms"] = {} } }) end)
    raises("config 'cleanup.policy' must be a string or number, got boolean",
      function() admin:create_topic("t", { config = { ["cleanup.policy"] = false } }) end)
    raises("bad argument #2 to 'create_topic' (options table expected, got string)",
      function() admin:create_topic("t", "compact") end)
    raises("bad argument #3 to 'create_topic' (function expected, got number)",
      function() admin:create_topic("t", {}, 1) end)
    raises("'timeout' must be a number of ms from 1 to 3600000",
      function() admin:delete_topic("t", { timeout = -1 }) end)
    raises("bad argument #1 to 'create_topics' (a list of topics expected)", function() admin:create_topics({}) end)
    raises("unknown topic field 'partitons'",
      function() admin:create_topics({ { name = "a", partitons = 2 } }) end)
    raises("bad argument #1 to 'describe_topics' (topic #2 must be a string)",
      function() admin:describe_topics({ "a", 2 }) end)
    raises("bad argument #2 to 'alter_configs' (table of configs expected, got string)",
      function() admin:alter_configs("t", "retention.ms=1") end)
    raises("config 'retention.ms' must be a string or number (false: back to the default), got boolean",
      function() admin:alter_configs("t", { ["retention.ms"] = true }) end)
    assert.equal(0, admin:pending())   -- nothing was sent
  end)

  it("a closed client raises; close is idempotent", function()
    local a = assert(sluice.admin { kafka = { ["bootstrap.servers"] = "127.0.0.1:9" } })
    assert.is_false(a:is_closed())
    a:close()
    a:close()
    assert.is_true(a:is_closed())
    raises("attempt to use a closed sluice.admin (describe_topic)", function() a:describe_topic("t") end)
  end)
end)

describe("sluice.admin on the embedded broker", function()
  local app, admin
  setup(function()
    app = support.app { name = "unit-admin", listen = false, embedded = { port = 0, partitions = 3 } }
    admin = assert(sluice.admin(app))
    -- (3: topics the mock creates on first use always have 4)
    assert(app.broker:create_topic("unit-admin-topic", 3))
  end)
  teardown(function()
    admin:close()
    app:close()
  end)

  it("describes topics and brokers from the cluster's metadata", function()
    local info = assert(admin:describe_topic("unit-admin-topic"))
    assert.equal(3, #info.partitions)
    local brokers = assert(admin:brokers())
    assert.is_true(#brokers >= 1)
    local ids = {}
    for _, b in ipairs(brokers) do
      ids[b.id] = true
      assert.equal("127.0.0.1", b.host)
    end
    for i, p in ipairs(info.partitions) do
      assert.equal(i - 1, p.partition)
      assert.is_true(ids[p.leader], "leader " .. p.leader .. " is a broker")
      assert.same({ p.leader }, p.replicas)
    end
    local ok, err, code = admin:describe_topic("unit-admin-none")
    assert.is_nil(ok)
    assert.equal("UNKNOWN_TOPIC_OR_PART", code)
    assert.equal("UNKNOWN_TOPIC_OR_PART: Broker: Unknown topic or partition", err)
  end)

  it("creates topics with the broker's own API; refuses at once what the mock cannot do", function()
    assert.equal("created", admin:create_topic("unit-admin-new", { partitions = 2 }))
    assert.equal(2, #assert(admin:describe_topic("unit-admin-new")).partitions)
    local ok, err, code = admin:create_topic("unit-admin-new")
    assert.is_nil(ok)
    assert.equal("TOPIC_ALREADY_EXISTS", code)
    assert.equal("TOPIC_ALREADY_EXISTS: Broker: Topic already exists", err)
    assert.equal("exists", admin:create_topic("unit-admin-new", { exist_ok = true }))
    assert.same({ nil, "UNSUPPORTED: the embedded broker (librdkafka's mock) has no topic configs or " ..
      "replication beyond its brokers: use a Kafka cluster", "UNSUPPORTED" },
      { admin:create_topic("unit-admin-c", { config = { ["cleanup.policy"] = "compact" } }) })
    assert.same({ nil, "UNSUPPORTED: the embedded broker (librdkafka's mock) has no DeleteTopics: " ..
      "use a Kafka cluster", "UNSUPPORTED" }, { admin:delete_topic("unit-admin-new") })
    assert.equal("UNSUPPORTED", select(3, admin:describe_configs("unit-admin-new")))
    assert.equal("UNSUPPORTED", select(3, admin:alter_configs("unit-admin-new", { ["retention.ms"] = 1 })))
    -- with a callback: on the loop, not before the call returns
    local got
    assert.is_true(admin:create_topic("unit-admin-cb", function(...) got = { ... } end))
    assert.is_nil(got)
    support.wait(app, function() return got end, "the answer")
    assert.same({ "created" }, got)
  end)

  it("answers a callback once on the loop; waiting inside a handler raises", function()
    local answers, inside = {}, nil
    assert.is_true(admin:describe_topics({ "unit-admin-topic" }, function(topics, brokers)
      answers[#answers + 1] = { topics, brokers }
      inside = { pcall(admin.describe_topic, admin, "unit-admin-topic") }
    end))
    support.wait(app, function() return #answers > 0 end, "the answer")
    support.settle(app, 0.2)
    assert.equal(1, #answers)
    assert.equal(3, #answers[1][1]["unit-admin-topic"].partitions)
    assert.is_false(inside[1])
    assert.truthy(inside[2]:find("admin:describe_topic without a callback would wait on the loop " ..
      "from inside a handler: pass a callback", 1, true), inside[2])
  end)
end)
