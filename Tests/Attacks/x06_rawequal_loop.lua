-- expect: timeout
-- rawequal on two distinct equal 6 MB strings compares them byte by byte, in C.
function transformEvent(event)
  local a = string.rep("x", 6 * 1024 * 1024)
  local b = string.rep("x", 6 * 1024 * 1024)
  while true do rawequal(a, b) end
end
