-- Window definitions for sluice.stream: which windows a timestamp falls in.
-- Windows are half-open, [start, end), in milliseconds of event time.
local M = {}

local function check_ms(v, what, fname)
  if type(v) ~= "number" or v <= 0 or v ~= math.floor(v) then
    error(("bad argument to '%s' (%s must be a positive whole number of ms)"):format(fname, what), 3)
  end
end

-- Fixed-size, non-overlapping windows aligned to the epoch.
function M.tumbling(size)
  check_ms(size, "size", "tumbling")
  return { kind = "tumbling", size = size, advance = size }
end

-- Fixed-size windows starting every `advance` ms (overlapping when
-- advance < size).
function M.hopping(size, advance)
  check_ms(size, "size", "hopping")
  check_ms(advance, "advance", "hopping")
  if advance > size then error("bad argument to 'hopping' (advance must not exceed size)", 2) end
  return { kind = "hopping", size = size, advance = advance }
end

-- Per key, records closer than `gap` ms belong to one session; a record
-- that bridges two sessions merges them.
function M.session(gap)
  check_ms(gap, "gap", "session")
  return { kind = "session", gap = gap }
end

-- The {start, end} pairs of a fixed window definition containing ts.
function M.windows_for(w, ts)
  local size, advance = w.size, w.advance
  local last_start = ts - ts % advance
  local out = {}
  local start = last_start
  while start > ts - size do
    out[#out + 1] = start
    start = start - advance
  end
  return out
end

function M.is(v)
  return type(v) == "table" and (v.kind == "tumbling" or v.kind == "hopping" or v.kind == "session")
end

return M
