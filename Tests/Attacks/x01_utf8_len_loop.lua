-- expect: timeout
-- Each utf8.len call walks 6 MB in C: a thousand of them run between two count-hook checks.
function transformEvent(event)
  local s = string.rep("a", 6 * 1024 * 1024)
  local n = 0
  while true do n = n + utf8.len(s) end
end
