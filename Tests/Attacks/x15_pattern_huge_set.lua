-- expect: timeout
-- One pattern step tests a character against a 4 MB set: steps are charged by the bytes they scan.
function transformEvent(event)
  local set = "[" .. string.rep("b", 4 * 1024 * 1024) .. "a]"
  local s = string.rep("a", 3000)
  return { found = s:find(set .. "+$") ~= nil }
end
