-- expect: timeout
-- Each '<' on two equal 6 MB strings is one VM instruction that compares 6 MB.
function transformEvent(event)
  local a = string.rep("x", 6 * 1024 * 1024)
  local b = string.rep("x", 6 * 1024 * 1024)
  local n = 0
  while true do if a < b then n = n + 1 end end
end
