-- expect: timeout
-- tonumber skips 6 MB of spaces in C before failing, and allocates nothing.
function transformEvent(event)
  local s = string.rep(" ", 6 * 1024 * 1024)
  while true do tonumber(s) end
end
