-- expect: timeout
-- The issue's own example: a 40-byte subject against ("a*"):rep(12) .. "b" backtracks for minutes inside string.find.
function transformEvent(event)
  local s = string.rep("a", 40)
  return { found = s:find(string.rep("a*", 12) .. "b") }
end
