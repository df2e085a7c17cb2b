-- expect: timeout
-- A back-reference to a 4 MB capture: each '.-' step compares 4 MB.
function transformEvent(event)
  local m = 4 * 1024 * 1024
  local lit = string.rep("a", m)
  local s = string.rep("a", 2 * m + 4000)
  return { found = s:find("^(" .. lit .. ").-%1x") ~= nil }
end
