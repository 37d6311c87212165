-- sluice.metrics: the app's own metrics (app:metric) and the exposition
-- text, on every Lua. (integration/metrics_spec.lua parses a running
-- gateway's /metrics with prometheus_client.)
local sluice = require "sluice"
local metrics = require "sluice.metrics"

local function raises(text, fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected an error containing: " .. text)
  assert.matches(text, tostring(err), 1, true)
end

-- The lines of the app's own families in the exposition.
local function own_lines(reg)
  local out = {}
  reg:write(out)
  return out
end

describe("app:metric", function()
  it("writes counters, gauges and histograms in the text format, label values escaped", function()
    local app = sluice.app { listen = false }
    local c = app:metric("jobs_total", { help = "Jobs done.\nPer queue.", labels = { "queue" } })
    c:inc({ queue = 'a"b\\c\nd' })
    c:inc(2, { queue = "plain" })
    local g = app:metric("temperature_celsius", { type = "gauge" })
    g:set(21.5)
    g:dec(0.25)
    local h = app:metric("size_bytes", { type = "histogram", buckets = { 1, 10 } })
    for _, v in ipairs({ 0.5, 1, 3, 100 }) do h:observe(v) end
    assert.same({
      "# HELP jobs_total Jobs done.\\nPer queue.",
      "# TYPE jobs_total counter",
      'jobs_total{queue="a\\"b\\\\c\\nd"} 1',
      'jobs_total{queue="plain"} 2',
      "# HELP temperature_celsius temperature_celsius",
      "# TYPE temperature_celsius gauge",
      "temperature_celsius 21.25",
      "# HELP size_bytes size_bytes",
      "# TYPE size_bytes histogram",
      'size_bytes_bucket{le="1"} 2',
      'size_bytes_bucket{le="10"} 3',
      'size_bytes_bucket{le="+Inf"} 4',
      "size_bytes_sum 104.5",
      "size_bytes_count 4",
    }, own_lines(app.metrics))
    assert.equal(2, c:value({ queue = "plain" }))
    assert.is_nil(c:value({ queue = "other" }))
    app:close()
  end)

  it("gives new code the same metric after a reload, values kept; another shape is refused", function()
    local reg = metrics.registry()
    local a = reg:metric("hits_total", { labels = { "route" } })
    a:inc({ route = "/x" })
    local b = reg:metric("hits_total", { labels = { "route" }, help = "Hits." })
    assert.equal(a, b)
    assert.equal(1, b:value({ route = "/x" }))
    raises("'hits_total' is already declared as another label set or buckets", function()
      reg:metric("hits_total", { labels = { "path" } })
    end)
    raises("'hits_total' is already declared as another type (counter)", function()
      reg:metric("hits_total", { type = "gauge", labels = { "route" } })
    end)
  end)

  it("refuses misuse with the caller's line", function()
    local reg = metrics.registry()
    raises("bad argument #1 to 'metric' ('1abc' is not a Prometheus metric name", function() reg:metric("1abc") end)
    raises("the sluice_ and process_ prefixes are the gateway's", function() reg:metric("sluice_x") end)
    raises("type must be", function() reg:metric("x", { type = "summary" }) end)
    raises("bad label name 'le'", function() reg:metric("h", { type = "histogram", labels = { "le" } }) end)
    raises("buckets must be increasing numbers", function() reg:metric("h2", { type = "histogram", buckets = { 2, 1 } }) end)
    local c = reg:metric("c_total", { labels = { "k" } })
    raises("a counter only goes up", function() c:inc(-1, { k = "a" }) end)
    raises("label 'k' missing", function() c:inc({}) end)
    raises("labels table expected, got nil", function() c:inc(1) end)
    raises("cannot be set", function() c:set(1, { k = "a" }) end)
    local ok, err = pcall(function() c:inc({ other = 1 }) end)
    assert.is_false(ok)
    assert.matches("metrics_spec.lua:%d+: bad argument #2 to 'inc'", err)
  end)

  it("checks the metrics option", function()
    raises("unknown metrics option 'port'", function() sluice.app { metrics = { port = 1 } } end)
    raises("metrics.path must be a path starting with /", function() sluice.app { metrics = { path = "m" } } end)
    raises("metrics.kafka_statistics must be a number of seconds above 0", function()
      sluice.app { metrics = { kafka_statistics = 0 } }
    end)
    assert.same({ path = "/metrics" }, metrics.config(nil))
    assert.is_nil(metrics.config(false))
    assert.same({ path = "/m", listen = 9100 }, metrics.config({ path = "/m", listen = 9100 }))
  end)
end)
