-- No module of the library or the movies app reads or writes a global it
-- did not mean to: a name left undeclared (a local removed by a change,
-- a typo) is nil at run time, silently. luac5.4's listing names every
-- global access (GETTABUP/SETTABUP on _ENV), whatever Lua runs the specs.
local ALLOWED = {}
for name in ([[_G _VERSION arg assert collectgarbage coroutine debug dofile error getfenv
  getmetatable io ipairs jit load loadfile loadstring math newproxy next os package pairs pcall
  print rawequal rawget rawlen rawset require select setfenv setmetatable string table tonumber
  tostring type unpack utf8 xpcall]]):gmatch("%S+") do ALLOWED[name] = true end

describe("the Lua sources", function()
  it("use no global but Lua's own", function()
    local list = assert(io.popen("find scripts/sluice scripts/apps scripts/bin -type f | sort"))
    local found, files = {}, 0
    for file in list:lines() do
      local f = io.open(file)
      local head = f and f:read("*l") or ""
      if f then f:close() end
      if file:match("%.lua$") or head:match("^#!.*lua") then
        files = files + 1
        local p = assert(io.popen("luac5.4 -l -l -p " .. file .. " 2>&1"))
        local out = p:read("*a")
        p:close()
        assert(not out:match("^luac"), out)
        for line, name in out:gmatch("%[(%d+)%]%s+[GS]ETTABUP[^\n]-_ENV \"([%w_]+)\"") do
          if not ALLOWED[name] then found[#found + 1] = ("%s:%s: %s"):format(file, line, name) end
        end
      end
    end
    list:close()
    assert.is_true(files > 20)
    assert.same({}, found)
  end)
end)
