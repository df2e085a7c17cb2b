-- expect: timeout
-- table.sort of 400k strings with the default order: one long C call of string comparisons.
function transformEvent(event)
  local t = {}
  for i = 1, 400000 do t[i] = tostring((i * 7919) % 1000003) end
  while true do table.sort(t) end
end
