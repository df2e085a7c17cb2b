-- expect: timeout
-- The same ephemeron chain without collectgarbage(): the next automatic major collection does the quadratic work.
function transformEvent(event)
  local K = 48000
  local t = setmetatable({}, {__mode = "k"})
  local objs = {}
  for i = 1, K + 1 do objs[i] = {} end
  for i = K + 1, 2, -1 do local j = math.random(1, i); objs[i], objs[j] = objs[j], objs[i] end
  for i = 1, K do t[objs[i]] = objs[i + 1] end
  local root = objs[1]
  objs = nil
  local keep = {}
  while true do keep[#keep + 1] = {} end
end
