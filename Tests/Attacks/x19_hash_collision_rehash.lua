-- expect: timeout
-- Integer keys 1 + k*(2^18-1) spread over 2^17 nodes all collide once the table grows: one insert rehashes 131072 keys into one chain, billions of steps inside one VM instruction (only the watchdog's escape ends it).
function transformEvent(event)
  local bits = 17
  local M = (1 << (bits + 1)) - 1
  local t = {}
  for k = 1, 1 << bits do t[1 + k * M] = true end
  for j = 1, 8 do t[-j] = true end
  return { n = #t }
end
