-- expect: timeout
-- A weak-keyed table holding a chain in random order: one full collection converges the ephemerons in quadratic time inside liblua (only the watchdog's escape ends it).
function transformEvent(event)
  local K = 48000
  local t = setmetatable({}, {__mode = "k"})
  local objs = {}
  for i = 1, K + 1 do objs[i] = {} end
  for i = K + 1, 2, -1 do local j = math.random(1, i); objs[i], objs[j] = objs[j], objs[i] end
  for i = 1, K do t[objs[i]] = objs[i + 1] end
  local root = objs[1]
  objs = nil
  collectgarbage()
  return { ok = root ~= nil }
end
