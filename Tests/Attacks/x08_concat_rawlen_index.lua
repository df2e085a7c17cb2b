-- expect: timeout
-- table.concat over 2^40 indices fetched through a C __index (rawlen) that returns 0: one byte per element.
-- also-ok: memory
function transformEvent(event)
  local t = setmetatable({}, {__index = rawlen})
  return table.concat(t, "", 1, 1 << 40)
end
