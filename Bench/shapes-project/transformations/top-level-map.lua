-- top-level-map: the same 6,000 addresses as a map.
local MAP = {}
for i = 1, 6000 do MAP["k" .. i] = "user" .. i .. "@example.com" end
function transformEvent(event)
  event.first = MAP.k7
  return event
end
