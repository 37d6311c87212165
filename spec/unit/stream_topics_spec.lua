-- Which internal topics a topology needs and with how many partitions
-- (sluice.stream.topics; creating them on Apache Kafka:
-- spec/integration/stream_topics_spec.lua).
local stream = require "sluice.stream"
local topics = require "sluice.stream.topics"

local function names(list)
  local out = {}
  for i, t in ipairs(list) do out[i] = t.name .. (t.compact and " (compact)" or "") end
  return out
end

describe("sluice.stream's internal topics", function()
  it("a changelog per store (not a table's), a repartition topic after key_by", function()
    local t = stream.topology { name = "shop" }
    t:from("orders", { value = "json" }):count { store = "per-order" }
    t:from("clicks"):key_by(function(v) return v end):count { store = "per-page" }
    local users = t:table("users", { value = "json" })
    t:from("visits"):join(users, function(v, u) return u end):to("out")
    local sources, internal = topics.plan(t)
    assert.same({ "clicks", "orders", "users", "visits" }, names(sources))
    assert.same({ "shop.per-order.changelog (compact)", "shop.per-page.changelog (compact)",
                  "shop.per-page.repartition" }, names(internal))
  end)

  it("changelogs get their tasks' partition count, repartition topics the widest source's", function()
    local t = stream.topology { name = "shop" }
    t:from("orders"):count { store = "per-order" }
    t:from("clicks"):key_by(function(v) return v end):count { store = "per-page" }
    local sources, internal = topics.plan(t)
    assert.same({
      ["shop.per-order.changelog"] = 2,     -- its task reads orders (2)
      ["shop.per-page.repartition"] = 6,    -- the widest source (clicks: 6)
      ["shop.per-page.changelog"] = 6,      -- its task reads the repartition topic
    }, topics.partitions(sources, internal, { orders = 2, clicks = 6 }))
  end)
end)
