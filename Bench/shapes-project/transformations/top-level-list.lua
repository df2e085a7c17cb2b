-- top-level-list: a constant list of 6,000 addresses built at the top level (kept between events).
local LIST = {}
for i = 1, 6000 do LIST[i] = "user" .. i .. "@example.com" end
function transformEvent(event)
  event.first = LIST[7]
  return event
end
