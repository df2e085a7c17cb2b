-- expect: timeout
-- table.concat over 2^40 indices, each fetched through a C __index (table.concat itself) that returns "": no allocation, no Lua instruction.
function transformEvent(event)
  local t = setmetatable({}, {__index = table.concat})
  return table.concat(t, "", 1, 1 << 40)
end
